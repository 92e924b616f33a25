"""Write a small synthetic COCO 2017: the three official zips, shaped like the real downloads.

    coco-unified sample OUT_DIR [--scale F] [--seed S]

OUT_DIR receives train2017.zip, val2017.zip and annotations_trainval2017.zip under the official
names and layout, with synthetic images and annotations (tools/fakes/sample_coco.py): the same
JSON schema, Zip64 records and data descriptors as the real files, and every corner case of the
real data (unlabeled images, 6 and 7 captions, greyscale and PNG-behind-.jpg images, files no
annotation lists). Every count is the real one times --scale, raised where a corner case needs
it; equal arguments give byte-identical files. The default scale gives 247 images in seconds:
enough to run every command end to end (`--data-dir OUT_DIR`) without downloading COCO.
"""

import argparse
import os
import sys
from pathlib import Path

if not __package__:  # run by path: `python tools/sample.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import cli
from tools.fakes.sample_coco import MAX_IMAGE_ID, MAX_SCALE, generate, log_summary

DEFAULT_SCALE = 0.002


def scale(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, {MAX_SCALE}]: COCO image ids stop at {MAX_IMAGE_ID:,}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out_dir",
        metavar="OUT_DIR",
        type=Path,
        help="folder for the three archives (created if missing; files of the same names are replaced)",
    )
    parser.add_argument(
        "--scale",
        type=scale,
        default=DEFAULT_SCALE,
        metavar="F",
        help="fraction of COCO 2017's counts, each rounded and raised to the minimum its corner cases need; "
        "1.0 gives the real counts (123,287 images) (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of every random choice; equal arguments give byte-identical files (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> None:
    log_summary(generate(args.out_dir, args.scale, args.seed))


if __name__ == "__main__":
    cli.main_for(__file__)
