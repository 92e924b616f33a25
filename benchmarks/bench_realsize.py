"""Benchmark of coco_unified.py on real-size images, each figure beside its limit measured in the same round.

Prints the table of issue 12, on a COCO-shaped copy with real-size JPEGs (640x427, ~160 KB,
deflated like the official zips; `coco-unified sample DIR --scale 0.026 --image-size 640x427`
writes the 3,205 images used here, and is run into a temporary folder when --data-dir is omitted):

- PIL decoding the images' bytes, already in memory, one process: the limit of streaming; and
  in 2 processes side by side: what the cores give a DataLoader's workers at most;
- streaming decoded images/s from a loopback mirror, one process, under datasets 3.6 (this
  interpreter; as built, and through `.map(features=...)`) and under the newest datasets
  (--newest-python), against that limit;
- a PyTorch DataLoader with 2 workers over the stream, batches of 32, Pillow keeping 32 freed
  image blocks (PILLOW_BLOCKS_MAX, README Streaming), against the one-process rate (goal 1.5x)
  and against its bound: 2 cores spending one process's CPU time per image;
- `default` preparation (doc2vec=False), MB of image zips per second, against plain `zipfile`
  extraction (inflate + write) of the same zips; peak RSS of each.

    python benchmarks/bench_realsize.py [--data-dir DIR] [--newest-python PYTHON] [--rounds N]

Each measurement runs in a fresh interpreter so that its peak RSS is its own. The whole set is
measured --rounds times over; each ratio is taken within a round, and the table shows the median
round's with every round's ratio beside it.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

if not __package__:  # run by path: `python benchmarks/bench_realsize.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.bench_loading import run
from tools import cli
from tools.fakes.http_mirror import serve_mirror
from tools.fakes.sample_coco import RealSizeImages, generate

logger = logging.getLogger(__name__)

IMAGE_ZIPS = ("train2017.zip", "val2017.zip")
# 3,205 images: the setting of ~3,200.
REAL_SIZE_SCALE = 0.026
REAL_SIZE = RealSizeImages(640, 427, 90)
LOADER_WORKERS = 2
LOADER_BATCH_SIZE = 32
# The streams measured, as (name, under the newest datasets (--newest-python), mapped): under
# datasets 3.6 as built, and through `.map(features=...)`, where 3.6 takes the rows of the stream's
# tables ten at a time instead of cutting one-row tables (README, Streaming); then under the newest
# datasets as built.
STREAMS = (
    ("datasets 3.6", False, False),
    ("datasets 3.6, through .map(features=...)", False, True),
    ("newest datasets", True, False),
)

# Goals of issue 12: each figure over its limit measured in the same round.
STREAM_GOAL = 0.8
LOADER_GOAL = 1.5
PREPARE_GOAL = 0.8

# The bytes of every image entry are read first; only the decoding is timed, as datasets.Image
# decodes (open, then load). With `processes` > 1, forked processes decode equal parts side by
# side (the bytes inherited, not sent: sending them took longer than decoding).
DECODE = """
import io, multiprocessing, zipfile
from PIL import Image
contents = []
for path in params["zips"]:
    with zipfile.ZipFile(path) as archive:
        contents += [archive.read(info) for info in archive.infolist() if not info.is_dir()]

def decode(part):
    cpu_start = time.process_time()
    for content in contents[part::params["processes"]]:
        Image.open(io.BytesIO(content)).load()
    return time.process_time() - cpu_start

with multiprocessing.get_context("fork").Pool(params["processes"]) as pool:
    start = time.perf_counter()
    cpu_seconds = sum(pool.map(decode, range(params["processes"]), chunksize=1))
    seconds = time.perf_counter() - start
report(seconds=seconds, images=len(contents), images_per_second=len(contents) / seconds, images_per_cpu_second=len(contents) / cpu_seconds)
"""

# Rows/s after the first row: the stream's setup (annotations, central directories) is excluded.
# Images per CPU second (all threads of the process) say the same on a machine shared with other
# work, where wall-clock rates vary by tens of percent between runs.
STREAM = """
from coco_unified import CocoUnified
start = time.perf_counter()
dataset = CocoUnified(config_name="default", base_url=params["base_url"], doc2vec=False).as_streaming_dataset("train")
if params["mapped"]:
    dataset = dataset.map(features=dataset.features)
rows, first = 0, None
for row in dataset:
    if first is None:
        first, cpu_first = time.perf_counter(), time.process_time()
    rows += 1
    assert row["image"].size == tuple(params["size"])
seconds, cpu_seconds = time.perf_counter() - first, time.process_time() - cpu_first
report(
    rows=rows,
    seconds=seconds,
    images_per_second=(rows - 1) / seconds,
    images_per_cpu_second=(rows - 1) / cpu_seconds,
    first_example_seconds=first - start,
)
"""

# The workers decode (datasets.Image); each batch's images are checked and counted in the worker,
# so that the figure is the workers' throughput, not the cost of sending pixels between processes.
# Rows/s after the first batch of every worker, as the one-process rate is after its first row: a
# worker's start (imports, annotations unpickled, first requests) overlaps the other's streaming
# and took ~2 s of a ~7 s run here. CPU is that window's, the workers' read from /proc when it opens.
# Pillow keeps a batch's image memory for the next batch, as the README advises (Streaming):
# otherwise each batch's images, freed together, went back to the OS and came back as page faults.
LOADER = """
import os
os.environ["PILLOW_BLOCKS_MAX"] = str(params["batch_size"])  # read when PIL is first imported
import torch.utils.data
from coco_unified import CocoUnified

class CountDecoded:
    def __init__(self, size):
        self.size = tuple(size)
    def __call__(self, batch):
        assert all(row["image"].size == self.size for row in batch)
        return len(batch)

def live_children_cpu():
    seconds = 0.0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as children:
            for pid in children.read().split():
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return seconds

dataset = CocoUnified(config_name="default", base_url=params["base_url"], doc2vec=False).as_streaming_dataset("train")
if params["mapped"]:
    dataset = dataset.map(features=dataset.features)
loader = torch.utils.data.DataLoader(
    dataset,
    batch_size=params["batch_size"],
    num_workers=params["workers"],
    collate_fn=CountDecoded(params["size"]),
)
rows, batches, first = 0, 0, None
for count in loader:
    rows += count
    batches += 1
    if batches == params["workers"]:
        first, first_rows = time.perf_counter(), rows
        cpu_first = sum(os.times()[:4]) + live_children_cpu()
# The workers have exited (and been waited for) once the loader is exhausted: their CPU time is
# the children's.
seconds, cpu_seconds = time.perf_counter() - first, sum(os.times()[:4]) - cpu_first
report(
    rows=rows,
    seconds=seconds,
    images_per_second=(rows - first_rows) / seconds,
    images_per_cpu_second=(rows - first_rows) / cpu_seconds,
)
"""

PREPARE = """
from coco_unified import CocoUnified
start, cpu_start = time.perf_counter(), time.process_time()
builder = CocoUnified(config_name="default", data_dir=params["data_dir"], doc2vec=False, cache_dir=params["cache_dir"])
builder.download_and_prepare()
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
megabytes = params["zip_bytes"] / 1e6
report(
    seconds=seconds,
    rows=builder.info.splits["train"].num_examples,
    mb_per_second=megabytes / seconds,
    mb_per_cpu_second=megabytes / cpu_seconds,
)
"""

EXTRACT = """
import os, shutil, zipfile
start, cpu_start = time.perf_counter(), time.process_time()
for path in params["zips"]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            target = os.path.join(params["out_dir"], info.filename)
            if info.is_dir():
                os.makedirs(target, exist_ok=True)
                continue
            with archive.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
megabytes = params["zip_bytes"] / 1e6
report(seconds=seconds, mb_per_second=megabytes / seconds, mb_per_cpu_second=megabytes / cpu_seconds)
"""


def measure(data_dir: Path, scratch: Path, newest_python: str | None) -> dict:
    """One round: every figure and its limit."""
    zips = [str(data_dir / name) for name in IMAGE_ZIPS]
    zip_bytes = sum(Path(path).stat().st_size for path in zips)
    size = [REAL_SIZE.width, REAL_SIZE.height]
    figures = {"load average before": os.getloadavg()}
    logger.info("decoding the images' bytes with PIL")
    figures["decode"] = run(DECODE, zips=zips, processes=1)
    logger.info("decoding them with PIL in %d processes side by side", LOADER_WORKERS)
    figures["decode, loader workers"] = run(DECODE, zips=zips, processes=LOADER_WORKERS)
    with serve_mirror(data_dir, layout="coco") as mirror:
        for version, newest, mapped in STREAMS:
            if newest and not newest_python:
                continue
            python = newest_python if newest else sys.executable
            logger.info("streaming from %s under %s", mirror.base_url, version)
            figures[f"stream, {version}"] = run(
                STREAM, python=python, base_url=mirror.base_url, size=size, mapped=mapped
            )
            logger.info("streaming through a DataLoader with %d workers under %s", LOADER_WORKERS, version)
            figures[f"loader, {version}"] = run(
                LOADER,
                python=python,
                base_url=mirror.base_url,
                size=size,
                workers=LOADER_WORKERS,
                batch_size=LOADER_BATCH_SIZE,
                mapped=mapped,
            )
    logger.info("preparing default")
    with tempfile.TemporaryDirectory(dir=scratch) as cache_dir:
        figures["prepare"] = run(PREPARE, data_dir=str(data_dir), cache_dir=cache_dir, zip_bytes=zip_bytes)
    logger.info("extracting the image zips with zipfile")
    with tempfile.TemporaryDirectory(dir=scratch) as out_dir:
        figures["extract"] = run(EXTRACT, zips=zips, out_dir=out_dir, zip_bytes=zip_bytes)
    figures["load average after"] = os.getloadavg()
    return figures


class Shown(NamedTuple):
    """A measured figure and how the table shows it."""

    value: float
    text: str


def round_lines(figures: dict) -> list[tuple[str, Shown, Shown, float | None]]:
    """(figure, measured, its limit in the same round, goal) per line of the table."""
    decode = figures["decode"]["images_per_second"]
    decode_cpu = figures["decode"]["images_per_cpu_second"]
    decode_side_by_side = figures["decode, loader workers"]["images_per_second"]
    lines = [
        (
            f"PIL decoding in {LOADER_WORKERS} processes side by side",
            Shown(decode_side_by_side, f"{decode_side_by_side:.0f} img/s"),
            Shown(decode, f"in one process: {decode:.0f}/s"),
            None,
        )
    ]
    for version, _, _ in STREAMS:
        if f"stream, {version}" not in figures:
            continue
        stream = figures[f"stream, {version}"]["images_per_second"]
        loader = figures[f"loader, {version}"]["images_per_second"]
        stream_cpu = figures[f"stream, {version}"]["images_per_cpu_second"]
        loader_cpu = figures[f"loader, {version}"]["images_per_cpu_second"]
        lines += [
            (
                f"streaming, images decoded, {version}",
                Shown(stream, f"{stream:.0f} img/s"),
                Shown(decode, f"PIL decoding the same bytes: {decode:.0f}/s"),
                STREAM_GOAL,
            ),
            (
                "  the same, per CPU second (all threads)",
                Shown(stream_cpu, f"{stream_cpu:.0f} img/s"),
                Shown(decode_cpu, f"{decode_cpu:.0f}/s"),
                None,
            ),
            (
                f"  DataLoader, {LOADER_WORKERS} workers, PILLOW_BLOCKS_MAX={LOADER_BATCH_SIZE}, {version}",
                Shown(loader, f"{loader:.0f} img/s"),
                Shown(stream, f"one process streaming: {stream:.0f}/s"),
                LOADER_GOAL,
            ),
            (
                f"    the same against {LOADER_WORKERS} cores at one process's CPU per image",
                Shown(loader, f"{loader:.0f} img/s"),
                Shown(
                    LOADER_WORKERS * stream_cpu,
                    f"{LOADER_WORKERS} x {stream_cpu:.0f}/s = {LOADER_WORKERS * stream_cpu:.0f}/s",
                ),
                None,
            ),
            (
                "    the same, per CPU second (workers and main)",
                Shown(loader_cpu, f"{loader_cpu:.0f} img/s"),
                Shown(stream_cpu, f"{stream_cpu:.0f}/s"),
                None,
            ),
        ]
    prepare, extract = figures["prepare"], figures["extract"]
    lines += [
        (
            "`default` preparation, doc2vec=False",
            Shown(
                prepare["mb_per_second"], f"{prepare['mb_per_second']:.0f} MB/s, {prepare['peak_rss_mb']:.0f} MB RSS"
            ),
            Shown(
                extract["mb_per_second"],
                f"zipfile extraction: {extract['mb_per_second']:.0f} MB/s, {extract['peak_rss_mb']:.0f} MB RSS",
            ),
            PREPARE_GOAL,
        ),
        (
            "  the same, per CPU second (all threads)",
            Shown(prepare["mb_per_cpu_second"], f"{prepare['mb_per_cpu_second']:.0f} MB/s"),
            Shown(extract["mb_per_cpu_second"], f"{extract['mb_per_cpu_second']:.0f} MB/s"),
            None,
        ),
    ]
    return lines


def table_rows(rounds: list[dict]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, limit in the same round, ratio / goal) per line: the round of the median ratio.

    Each ratio is taken within one round, its figure and limit measured minutes apart at most, and
    the median over the rounds is shown with every round's: on a shared machine, wall-clock rates
    drift by tens of percent between minutes, more than between the two sides of one round.
    """
    rows = []
    for lines in zip(*(round_lines(figures) for figures in rounds)):
        ratios = [measured.value / limit.value for _, measured, limit, _ in lines]
        median_round = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
        label, measured, limit, goal = lines[median_round]
        ratio = f"{ratios[median_round]:.2f}x"
        if len(ratios) > 1:
            ratio += f" (rounds: {', '.join(f'{each:.2f}' for each in ratios)})"
        if goal is not None:
            ratio += f" (goal >= {goal})"
        rows.append((label, measured.text, limit.text, ratio))
    return rows


def print_table(rows: list[tuple[str, str, str, str]], rounds: list[dict]) -> None:
    # Wall-clock rates are only comparable on a machine with cores to spare: say how busy it was.
    loads = ", ".join(f"{figures['load average before'][0]:.1f}" for figures in rounds)
    print(
        f"\n{os.cpu_count()} cores; 1-minute load average before each round: {loads}; "
        f"after the last: {rounds[-1]['load average after'][0]:.1f}"
    )
    print("\n| figure | measured | limit in the same round | ratio |\n|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="a real-size sample (`coco-unified sample DIR --scale 0.026 --image-size 640x427`); "
        "generated into a temporary folder when omitted",
    )
    parser.add_argument(
        "--newest-python",
        help="an interpreter with the newest datasets (e.g. .venv-newest/bin/python): also streams with it",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="times every figure and its limit are measured, one after the other; the table shows each "
        "ratio's median and every round's (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    cli.configure_logging(args.verbose)

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(scratch) / "coco"
            logger.info("generating a real-size sample into %s", data_dir)
            generate(data_dir, REAL_SIZE_SCALE, 0, REAL_SIZE)
        rounds = []
        for number in range(1, args.rounds + 1):
            logger.info("round %d of %d", number, args.rounds)
            rounds.append(measure(data_dir, Path(scratch), args.newest_python))
    print(json.dumps(rounds, indent=2))
    print_table(table_rows(rounds), rounds)


if __name__ == "__main__":
    # Run the copy imported under the package's name, so that its logger is named for it.
    from benchmarks.bench_realsize import main as main_in_package

    main_in_package()
