"""Benchmark of coco_unified.py on a full-scale COCO-shaped sample, beside the naive approach.

Prints the figures of issue 2's table, each measured in this run on this machine:
preparation time and peak RSS (default without doc2vec, no_images) beside a bare `json.load` of
instances_train2017.json; and streaming from a loopback mirror (bytes fetched per byte of the
image zips, images/s in one process, n_shards, time to the first example) beside the naive
`download_and_extract` + `zip://` route, which is measured on a few images and extrapolated.

    python benchmarks/bench_loading.py [--data-dir DIR] [--newest-python PYTHON] [--naive-images N]

Each measurement runs in a fresh interpreter so that its peak RSS is its own.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

if not __package__:  # run by path: `python benchmarks/bench_loading.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import cli
from tools.fakes.http_mirror import serve_mirror
from tools.fakes.sample_coco import generate

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)

# Each snippet prints one JSON object on its last line; argv[1] is a JSON dict of parameters.
PRELUDE = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.path.insert(0, %r)
    params = json.loads(sys.argv[1])
    def report(**figures):
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(figures))
    """
) % str(REPO)

JSON_LOAD = """
import zipfile
start = time.perf_counter()
with zipfile.ZipFile(params["annotations"]) as archive:
    document = json.loads(archive.read("annotations/instances_train2017.json"))
report(seconds=time.perf_counter() - start, annotations=len(document["annotations"]))
"""

PREPARE = """
from coco_unified import CocoUnified
start = time.perf_counter()
builder = CocoUnified(config_name=params["config"], data_dir=params["data_dir"], doc2vec=False, cache_dir=params["cache_dir"])
builder.download_and_prepare()
report(seconds=time.perf_counter() - start, rows=builder.info.splits["train"].num_examples)
"""

STREAM = """
import datasets
from coco_unified import CocoUnified
start = time.perf_counter()
dataset = CocoUnified(config_name="default", base_url=params["base_url"], doc2vec=False).as_streaming_dataset("train")
if params["raw_bytes"]:  # the stream without decoding
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
if params["mapped"]:  # datasets 3.6 then takes the tables' rows ten at a time, not as one-row tables
    dataset = dataset.map(features=dataset.features)
rows, first = 0, None
for row in dataset:
    if first is None:
        first = time.perf_counter() - start
    rows += 1
    assert row["image"] is not None
seconds = time.perf_counter() - start
report(seconds=seconds, first_example_seconds=first, rows=rows, images_per_second=rows / (seconds - first), n_shards=dataset.n_shards)
"""

NAIVE = """
from datasets.utils.file_utils import xopen
import zipfile
names = params["names"]
start = time.perf_counter()
for name in names:
    with xopen(f"zip://train2017/{name}::" + params["url"], "rb") as image:
        image.read()
seconds = time.perf_counter() - start
report(seconds=seconds, images=len(names), images_per_second=len(names) / seconds)
"""


def run(snippet: str, python: str = sys.executable, **params) -> dict:
    # Without PYTHONDONTWRITEBYTECODE each fresh interpreter reuses the bytecode compiled before:
    # with it set, every step compiled again the modules datasets imports while a builder is made
    # (scipy's among them), 0.4 s of a 3.5 s real-size preparation (measured here).
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        [python, "-c", PRELUDE + textwrap.dedent(snippet), json.dumps(params)],
        capture_output=True,
        text=True,
        env=dict(env, NO_PROXY="127.0.0.1,localhost"),
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def first_train_images(data_dir: Path, count: int) -> list:
    import zipfile

    with zipfile.ZipFile(data_dir / "train2017.zip") as archive:
        return [Path(info.filename).name for info in archive.infolist() if not info.is_dir()][:count]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="a full-scale sample (`coco-unified sample DIR --scale 1.0`); generated into a temporary folder when omitted",
    )
    parser.add_argument(
        "--newest-python",
        help="an interpreter with the newest datasets (e.g. .venv-newest/bin/python): also streams the pool with it, "
        "since datasets 3.6 spends most of a streamed row's time in its own per-row schema work",
    )
    parser.add_argument(
        "--naive-images",
        type=int,
        default=20,
        help="images the naive zip:// route reads (it costs a central directory per image) (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(scratch) / "coco"
            logger.info("generating a full-scale sample into %s", data_dir)
            generate(data_dir, 1.0, 0)
        image_zip_bytes = sum((data_dir / name).stat().st_size for name in ("train2017.zip", "val2017.zip"))
        figures = {
            "json.load instances_train2017.json": run(
                JSON_LOAD, annotations=str(data_dir / "annotations_trainval2017.zip")
            )
        }
        for config in ("default", "no_images"):
            logger.info("preparing %s", config)
            figures[f"prepare {config}"] = run(
                PREPARE, config=config, data_dir=str(data_dir), cache_dir=str(Path(scratch) / config)
            )
        with serve_mirror(data_dir, layout="coco") as mirror:
            logger.info("streaming the pool from %s", mirror.base_url)
            streamed = run(STREAM, base_url=mirror.base_url, raw_bytes=False, mapped=False)
            traffic = mirror.traffic(reset=True)
            logger.info("streaming the pool again, images as raw bytes")
            streamed["images_per_second_raw_bytes"] = run(
                STREAM, base_url=mirror.base_url, raw_bytes=True, mapped=False
            )["images_per_second"]
            logger.info("streaming the pool again, through .map(features=...)")
            streamed["images_per_second_mapped"] = run(STREAM, base_url=mirror.base_url, raw_bytes=False, mapped=True)[
                "images_per_second"
            ]
            mirror.traffic(reset=True)
            streamed["fetched_per_image_zip_byte"] = (
                sum(traffic.for_path(f"zips/{n}").body_bytes for n in ("train2017.zip", "val2017.zip"))
                / image_zip_bytes
            )
            streamed["annotation_bytes_per_zip_byte"] = (
                traffic.for_path("annotations/annotations_trainval2017.zip").body_bytes
                / (data_dir / "annotations_trainval2017.zip").stat().st_size
            )
            if args.newest_python:
                logger.info("streaming the pool again with %s", args.newest_python)
                newest = run(STREAM, python=args.newest_python, base_url=mirror.base_url, raw_bytes=False, mapped=False)
                streamed["images_per_second_newest_datasets"] = newest["images_per_second"]
                mirror.traffic(reset=True)
            figures["stream (coco_unified)"] = streamed
            logger.info("the naive zip:// route on %d images", args.naive_images)
            naive = run(
                NAIVE, url=mirror.url("zips/train2017.zip"), names=first_train_images(data_dir, args.naive_images)
            )
            naive_bytes = mirror.traffic().body_bytes
            naive["fetched_per_image_zip_byte (extrapolated to the pool)"] = (
                naive_bytes / naive["images"] * streamed["rows"] / image_zip_bytes
            )
            naive["bytes_per_image"] = naive_bytes / naive["images"]
            figures["stream (naive zip://)"] = naive
    print(json.dumps(figures, indent=2))
    print_table(figures)


def print_table(figures: dict) -> None:
    stream, naive = figures["stream (coco_unified)"], figures["stream (naive zip://)"]
    rows = [
        (
            "default preparation, doc2vec=False",
            "<= 45 s, <= 1 GB",
            f"{figures['prepare default']['seconds']:.1f} s, {figures['prepare default']['peak_rss_mb']:.0f} MB",
        ),
        (
            "no_images preparation",
            "<= 25 s",
            f"{figures['prepare no_images']['seconds']:.1f} s, {figures['prepare no_images']['peak_rss_mb']:.0f} MB",
        ),
        (
            "  baseline: json.load of instances_train2017.json",
            "",
            f"{figures['json.load instances_train2017.json']['seconds']:.1f} s, {figures['json.load instances_train2017.json']['peak_rss_mb']:.0f} MB",
        ),
        (
            "streaming bytes fetched / image zip bytes",
            "<= 1.05",
            f"{stream['fetched_per_image_zip_byte']:.3f} (naive: {naive['fetched_per_image_zip_byte (extrapolated to the pool)']:.0f})",
        ),
        ("annotation bytes fetched / annotations zip", "<= 1", f"{stream['annotation_bytes_per_zip_byte']:.3f}"),
        (
            "streaming images/s, one process, loopback",
            ">= 500",
            f"{stream['images_per_second']:.0f} (naive: {naive['images_per_second']:.2f})",
        ),
        ("  the same, images cast to raw bytes", "", f"{stream['images_per_second_raw_bytes']:.0f}"),
        ("  the same, decoded, through .map(features=...)", "", f"{stream['images_per_second_mapped']:.0f}"),
        (
            "  the same, decoded, newest datasets",
            "",
            f"{stream.get('images_per_second_newest_datasets', float('nan')):.0f}",
        ),
        ("n_shards of the streaming pool", ">= 16", f"{stream['n_shards']} (naive: 1)"),
        ("time to first streamed example", "<= 30 s", f"{stream['first_example_seconds']:.1f} s"),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"\n{'figure':<{width}}  {'goal':<18}  measured")
    for name, goal, measured in rows:
        print(f"{name:<{width}}  {goal:<18}  {measured}")


if __name__ == "__main__":
    # Run the copy imported under the package's name, so that its logger is named for it.
    from benchmarks.bench_loading import main as main_in_package

    main_in_package()
