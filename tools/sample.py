"""Write a small synthetic COCO 2017: the three official zips, shaped like the real downloads.

    coco-unified sample OUT_DIR [--scale F] [--seed S] [--image-size WxH [--jpeg-quality Q]]

OUT_DIR receives train2017.zip, val2017.zip and annotations_trainval2017.zip under the official
names and layout, with synthetic images and annotations (tools/fakes/sample_coco.py): the same
JSON schema, Zip64 records and data descriptors as the real files, and every corner case of the
real data (unlabeled images, 6 and 7 captions, greyscale and PNG-behind-.jpg images, files no
annotation lists). Every count is the real one times --scale, raised where a corner case needs
it; equal arguments give byte-identical files. The default scale gives 247 images in seconds:
enough to run every command end to end (`--data-dir OUT_DIR`) without downloading COCO.
Images are tiny (16-40 px) unless --image-size asks for real-size ones (640x427: ~160 KB each,
deflated like the official zips), for benchmarks of image throughput
(benchmarks/bench_realsize.py; 3,200 images: --scale 0.026).
"""

import argparse
import os
import sys
from pathlib import Path

if not __package__:  # run by path: `python tools/sample.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from coco_unified import ConfigError
from tools import cli
from tools.fakes.sample_coco import MAX_IMAGE_ID, MAX_SCALE, RealSizeImages, generate, log_summary

DEFAULT_SCALE = 0.002


def scale(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, {MAX_SCALE}]: COCO image ids stop at {MAX_IMAGE_ID:,}")
    return value


def image_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT in pixels, e.g. 640x427")
    return int(width), int(height)


def jpeg_quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 95:
        raise argparse.ArgumentTypeError(f"{value} is not a JPEG quality in 1..95")
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
    parser.add_argument(
        "--image-size",
        type=image_size,
        metavar="WxH",
        help="real-size images of this many pixels (e.g. 640x427, ~160 KB at quality 90, the average COCO "
        "image), all entries deflated like the official zips; without it, tiny 16-40 px images",
    )
    parser.add_argument(
        "--jpeg-quality",
        type=jpeg_quality,
        metavar="Q",
        help="JPEG quality of the real-size images, 1..95 (default: 90); only with --image-size",
    )


def run(args: argparse.Namespace) -> None:
    if args.image_size is None and args.jpeg_quality is not None:
        raise ConfigError("--jpeg-quality sets the quality of real-size images: pass --image-size WxH too.")
    real_size = None
    if args.image_size is not None:
        real_size = RealSizeImages(
            *args.image_size, **({} if args.jpeg_quality is None else {"quality": args.jpeg_quality})
        )
    log_summary(generate(args.out_dir, args.scale, args.seed, real_size))


if __name__ == "__main__":
    cli.main_for(__file__)
