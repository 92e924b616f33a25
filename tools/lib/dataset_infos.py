"""dataset_infos.json: features, split sizes and checksums per config, generated from the builder.

The real COCO 2017 facts live once, in coco_unified.py; dataset_infos.json is their copy in the
format the Hugging Face Hub and `datasets` read, kept beside the loading script.
"""

import dataclasses
import json
from pathlib import Path

import datasets

import coco_unified
from coco_unified import CocoError

INFOS_PATH = Path(coco_unified.__file__).with_name("dataset_infos.json")


# The last datasets major version that runs loading scripts, the readers of dataset_infos.json.
# (datasets 5.2's own writer of the file, like `dataclasses.asdict` here, fails on its `List` feature.)
LAST_SCRIPT_MAJOR = 3


def official_infos() -> dict:
    """Each named config as built from the official URLs."""
    if int(datasets.__version__.split(".")[0]) > LAST_SCRIPT_MAJOR:
        raise CocoError(
            f"{INFOS_PATH.name} is read by datasets < 4, which runs loading scripts; datasets {datasets.__version__} "
            "cannot write it. Run this with the datasets of requirements.txt (the .venv of scripts/setup_env.sh)."
        )
    infos = {}
    official = coco_unified.locate_sources()
    for config in coco_unified.CocoUnified.BUILDER_CONFIGS:
        builder = coco_unified.CocoUnified(config_name=config.name)
        info = builder.info
        info.splits = datasets.SplitDict(dataset_name=builder.dataset_name)
        for name, num_rows in config.real_split_sizes().items():
            info.splits.add(datasets.SplitInfo(name=name, num_examples=num_rows))
        info.download_checksums = coco_unified.official_checksums([official[name] for name in config.needed_parts()])
        info.download_size = sum(coco_unified.ARCHIVES[name].num_bytes for name in config.needed_parts())
        infos[config.name] = dataclasses.asdict(info)
    return infos


def render(infos: dict) -> str:
    return json.dumps(infos, indent=2, sort_keys=True) + "\n"


def infos_up_to_date(path: Path = INFOS_PATH) -> bool:
    """Whether `path` holds exactly what the builder generates now."""
    return path.exists() and path.read_text() == render(official_infos())


def write_infos(path: Path = INFOS_PATH) -> Path:
    path.write_text(render(official_infos()))
    return path
