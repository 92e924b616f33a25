#!/usr/bin/env bash
# Set up both environments and run the whole test suite: datasets 3.6 (the loading-script path),
# then the builder class under the newest datasets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh .venv requirements.txt
bash scripts/setup_env.sh .venv-newest requirements.txt requirements-newest.txt
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
.venv/bin/python -m pytest tests "$@"
.venv-newest/bin/python -m pytest tests/test_builder.py tests/test_loading_script.py tests/test_hub_export.py tests/test_train_stream.py "$@"
