"""Regenerate dataset_infos.json from the builder: features, split sizes and checksums per config.

    coco-unified dataset-infos [--check]

The real COCO 2017 facts live once, in coco_unified.py; dataset_infos.json is their copy in the
format the Hugging Face Hub and `datasets` read. Run this after changing the builder's features or
facts; CI runs it with --check.
"""

import argparse
import logging
import os
import sys

if not __package__:  # run by path: `python tools/dataset_infos.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from coco_unified import CocoError, CocoUnified
from tools import cli
from tools.lib.dataset_infos import INFOS_PATH, infos_up_to_date, write_infos

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help=f"write nothing; fail if {INFOS_PATH.name} is out of date")


def run(args: argparse.Namespace) -> None:
    if args.check:
        if not infos_up_to_date():
            raise CocoError(f"{INFOS_PATH} is out of date with coco_unified.py; run `coco-unified dataset-infos`.")
        logger.info("%s is up to date", INFOS_PATH)
        return
    path = write_infos()
    logger.info("wrote %s (configs: %s)", path, ", ".join(CocoUnified.builder_configs))


if __name__ == "__main__":
    cli.main_for(__file__)
