"""What the Doc2Vec tools share about the pool: reading its annotations, where the sidecar goes."""

import argparse
import os

import coco_unified
from coco_unified import (
    ANNOTATIONS,
    DOC2VEC_SIDECAR,
    CocoError,
    ImageRecord,
    build_annotation_index,
    locate_parts,
    require_parts,
)

# Where the dataset script looks for the Doc2Vec sidecar when not told otherwise.
DEFAULT_SIDECAR = os.path.join(os.path.dirname(os.path.abspath(coco_unified.__file__)), DOC2VEC_SIDECAR)


def read_pool(data_dir: str | None = None, base_url: str | None = None) -> list[ImageRecord]:
    """Every image of the pool in index order; only the annotations are read.

    Every image needs a caption: the vector of an empty document would be random.
    """
    parts = locate_parts(data_dir, base_url)
    require_parts(parts, [ANNOTATIONS])
    records = build_annotation_index(parts[ANNOTATIONS])
    uncaptioned = [record.image_id for record in records if not record.captions]
    if uncaptioned:
        raise CocoError(
            f"{parts[ANNOTATIONS].location}: {len(uncaptioned)} images have no caption (e.g. ids {uncaptioned[:5]}); "
            "COCO 2017 captions every image, so the captions files are incomplete. Use the official annotations."
        )
    return records


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--data-dir / --base-url, as the dataset script's data_dir / base_url."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data-dir",
        metavar="DIR",
        help="a local COCO 2017 copy: the official zips, or the folders extracted from them, side by side "
        "(only the parts this tool needs are read)",
    )
    source.add_argument(
        "--base-url",
        metavar="URL",
        help="a mirror with the official layout ({URL}/annotations/annotations_trainval2017.zip). "
        "Without --data-dir and --base-url the official host is used",
    )
