"""Regenerate dataset_infos.json from the builder: features, split sizes and checksums per config.

The real COCO 2017 facts live once, in coco_unified.py; this file is their copy in the format the
Hugging Face Hub and `datasets` read. Run it after changing the builder's features or facts:

    python -m tools.dataset_infos [--check]
"""

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import datasets

import coco_unified

logger = logging.getLogger("write_dataset_infos")
INFOS_PATH = Path(coco_unified.__file__).with_name("dataset_infos.json")


def official_infos() -> dict:
    """Each named config as built from the official URLs."""
    infos = {}
    official = coco_unified.locate_parts()
    for config in coco_unified.CocoUnified.BUILDER_CONFIGS:
        builder = coco_unified.CocoUnified(config_name=config.name)
        info = builder.info
        info.splits = datasets.SplitDict(dataset_name=builder.dataset_name)
        for name, num_rows in config.real_split_sizes().items():
            info.splits.add(datasets.SplitInfo(name=name, num_examples=num_rows))
        info.download_checksums = coco_unified.official_checksums(
            {name: official[name].location for name in config.needed_parts()}
        )
        info.download_size = sum(coco_unified.ARCHIVES[name].num_bytes for name in config.needed_parts())
        infos[config.name] = dataclasses.asdict(info)
    return infos


def render(infos: dict) -> str:
    return json.dumps(infos, indent=2, sort_keys=True) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if dataset_infos.json is out of date"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    wanted = render(official_infos())
    if args.check:
        current = INFOS_PATH.read_text() if INFOS_PATH.exists() else ""
        if current != wanted:
            logger.error("%s is out of date: run python -m tools.dataset_infos", INFOS_PATH)
            return 1
        logger.info("%s is up to date", INFOS_PATH)
        return 0
    INFOS_PATH.write_text(wanted)
    logger.info("wrote %s (%s)", INFOS_PATH, ", ".join(coco_unified.CocoUnified.builder_configs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
