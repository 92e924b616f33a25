"""Benchmark of `coco-unified push`'s Parquet export and of streaming its output, on a full-scale COCO-shaped sample.

For the configs `default` (doc2vec=False) and `no_images`: the Parquet export's throughput (MB of
Parquet written per second) and peak RSS, with the builder's preparation timed apart; then, in
the same run, streaming examples/s from the exported Parquet beside the script builder streaming
the same local zips (images left undecoded on both sides, so the figure is the data path's).

    python benchmarks/bench_export.py --data-dir /tmp/full [--work-dir DIR]

Each measurement runs in a fresh interpreter so that its peak RSS is its own.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

if not __package__:  # run by path: `python benchmarks/bench_export.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.bench_loading import run
from tools import cli

logger = logging.getLogger(__name__)
CONFIGS = ("default", "no_images")

# The export's options for one config, as `coco-unified push --no-doc2vec --configs CONFIG` sets them.
OPTIONS = """
from tools.lib.publish import PublishOptions
options = PublishOptions(
    output=params["folder"], data_dir=params["data_dir"], configs=(params["config"],), doc2vec=False, cache_dir=params["cache_dir"]
)
"""

PREPARE = (
    OPTIONS
    + """
from tools.lib.publish import build_config
start = time.perf_counter()
build_config(options, params["config"])
report(seconds=time.perf_counter() - start)
"""
)

# Runs on a prepared cache, so the time and peak RSS are the Parquet writing's.
EXPORT = (
    OPTIONS
    + """
import os
from tools.lib.publish import export_config
start = time.perf_counter()
exported = export_config(options, params["config"], params["folder"])
seconds = time.perf_counter() - start
written = sum(os.path.getsize(path) for path in exported.shards)
report(seconds=seconds, megabytes=written / 1e6, mb_per_second=written / 1e6 / seconds, shards=len(exported.shards))
"""
)

STREAM = """
import datasets
from coco_unified import CocoUnified
if params["parquet"]:
    # This run wrote each config's shards without the card, so name the config's files directly.
    shards = {"train": f"{params['parquet']}/data/{params['config']}/train-*.parquet"}
    pool = datasets.load_dataset("parquet", data_files=shards, split="train", streaming=True, cache_dir=params["cache_dir"])
else:
    pool = CocoUnified(config_name=params["config"], data_dir=params["data_dir"], doc2vec=False, cache_dir=params["cache_dir"]).as_streaming_dataset("train")
pool = pool.decode(False)
start = time.perf_counter()
rows = sum(1 for _ in pool)
seconds = time.perf_counter() - start
report(seconds=seconds, rows=rows, examples_per_second=rows / seconds, n_shards=pool.n_shards)
"""


def measure(data_dir: Path, work_dir: Path) -> dict:
    figures = {}
    for config in CONFIGS:
        common = dict(
            config=config, data_dir=str(data_dir), cache_dir=str(work_dir / "cache"), folder=str(work_dir / "folder")
        )
        logger.info("preparing %s", config)
        figures[f"prepare {config}"] = run(PREPARE, **common)
        logger.info("exporting %s", config)
        figures[f"export {config}"] = run(EXPORT, **common)
        logger.info("%s: prepare %s, export %s", config, figures[f"prepare {config}"], figures[f"export {config}"])
    for config in CONFIGS:
        common = dict(config=config, data_dir=str(data_dir), cache_dir=str(work_dir / "stream-cache"))
        logger.info("streaming %s from the Parquet export, then from the script", config)
        figures[f"stream {config} (parquet)"] = run(STREAM, parquet=str(work_dir / "folder"), **common)
        figures[f"stream {config} (script)"] = run(STREAM, parquet=None, **common)
        logger.info(
            "%s: parquet %s, script %s",
            config,
            figures[f"stream {config} (parquet)"],
            figures[f"stream {config} (script)"],
        )
    return figures


def print_table(figures: dict) -> None:
    print(
        f"\n{'config':<10}  {'prepare s':>9}  {'export s':>8}  {'Parquet MB':>10}  {'MB/s':>6}  {'export peak RSS MB':>18}  {'stream ex/s parquet':>19}  {'stream ex/s script':>18}"
    )
    for config in CONFIGS:
        prepare, export = figures[f"prepare {config}"], figures[f"export {config}"]
        parquet, script = figures[f"stream {config} (parquet)"], figures[f"stream {config} (script)"]
        print(
            f"{config:<10}  {prepare['seconds']:>9.1f}  {export['seconds']:>8.1f}  {export['megabytes']:>10.0f}  {export['mb_per_second']:>6.0f}  "
            f"{export['peak_rss_mb']:>18.0f}  {parquet['examples_per_second']:>19.0f}  {script['examples_per_second']:>18.0f}"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        help="a full-scale sample (`coco-unified sample DIR --scale 1.0`)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where the cache and the exported folder go (default: a temporary folder)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)
    with tempfile.TemporaryDirectory() as scratch:
        figures = measure(args.data_dir, args.work_dir or Path(scratch))
    print(json.dumps(figures, indent=2))
    print_table(figures)


if __name__ == "__main__":
    # Run the copy imported under the package's name, so that its logger is named for it.
    from benchmarks.bench_export import main as main_in_package

    main_in_package()
