"""Benchmark of tools/push.py and of streaming its output, on a full-scale COCO-shaped sample.

For the configs `default` (doc2vec=False) and `no_images`: the Parquet export's throughput (MB of
Parquet written per second) and peak RSS, with the builder's preparation timed apart; then, in
the same run, streaming examples/s from the exported Parquet beside the script builder streaming
the same local zips (images left undecoded on both sides, so the figure is the data path's).

    python -m benchmarks.bench_export --data-dir /tmp/full [--work-dir DIR]

Each measurement runs in a fresh interpreter so that its peak RSS is its own.
"""

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_loading import run  # noqa: E402

logger = logging.getLogger("bench_export")
CONFIGS = ("default", "no_images")

PREPARE = """
from tools import push as push_to_hub
args = push_to_hub.parse_args(params["argv"])
start = time.perf_counter()
push_to_hub.build_config(args, params["config"])
report(seconds=time.perf_counter() - start)
"""

# Runs on a prepared cache, so the time and peak RSS are the Parquet writing's.
EXPORT = """
import os
from tools import push as push_to_hub
args = push_to_hub.parse_args(params["argv"])
start = time.perf_counter()
exported = push_to_hub.export_config(args, params["config"])
seconds = time.perf_counter() - start
written = sum(os.path.getsize(path) for path in exported.shards)
report(seconds=seconds, megabytes=written / 1e6, mb_per_second=written / 1e6 / seconds, shards=len(exported.shards))
"""

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


def export_argv(data_dir: Path, work_dir: Path, config: str) -> list:
    return [
        "--data-dir",
        str(data_dir),
        "--no-doc2vec",
        "--configs",
        config,
        "--cache-dir",
        str(work_dir / "cache"),
        "--output",
        str(work_dir / "folder"),
        "--dry-run",
    ]


def measure(data_dir: Path, work_dir: Path) -> dict:
    figures = {}
    for config in CONFIGS:
        argv = export_argv(data_dir, work_dir, config)
        logger.info("preparing %s", config)
        figures[f"prepare {config}"] = run(PREPARE, argv=argv, config=config)
        logger.info("exporting %s", config)
        figures[f"export {config}"] = run(EXPORT, argv=argv, config=config)
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
        help="a full-scale sample (python -m tools.fakes.sample_coco --scale 1.0)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where the cache and the exported folder go (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as scratch:
        figures = measure(args.data_dir, args.work_dir or Path(scratch))
    print(json.dumps(figures, indent=2))
    print_table(figures)


if __name__ == "__main__":
    main()
