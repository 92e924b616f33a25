"""The pool's annotations as the Doc2Vec tools need them, read through coco_unified."""

import argparse
from typing import List, Optional

from coco_unified import ANNOTATIONS, CocoError, ImageRecord, build_annotation_index, locate_parts, require_parts


def read_pool(data_dir: Optional[str] = None, base_url: Optional[str] = None) -> List[ImageRecord]:
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
        help="a local COCO 2017 copy: annotations_trainval2017.zip, or its extracted annotations/ folder "
        "(the image zips may sit beside it; they are not read)",
    )
    source.add_argument(
        "--base-url",
        metavar="URL",
        help="a mirror with the official layout ({URL}/annotations/annotations_trainval2017.zip). "
        "Without --data-dir and --base-url the official host is used",
    )
