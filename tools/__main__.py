"""`python -m tools COMMAND ...` is `coco-unified COMMAND ...`."""

from tools.cli import main

raise SystemExit(main())
