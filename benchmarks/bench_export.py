"""Benchmarks of `coco-unified push`'s Parquet export (default) and of `coco-unified export --format` (--formats),
on a full-scale COCO-shaped sample.

For the configs `default` (doc2vec=False) and `no_images`: the Parquet export's throughput (MB of
Parquet written per second) and peak RSS, with the builder's preparation timed apart; then, in
the same run, streaming examples/s from the exported Parquet beside the script builder streaming
the same local zips (images left undecoded on both sides, so the figure is the data path's).

    python benchmarks/bench_export.py --data-dir /tmp/full [--work-dir DIR]

With --formats FORMAT ...: synthetic sidecars for the whole pool (Doc2Vec 300-d; vgg19_fc7 and
cnnf_fc7 4096-d, stored as float16, exported as float32, and CNN-F's mean image; reused from a
--work-dir that holds them), then each
format exported alone (`export --format FORMAT --feature vgg19_fc7=... --feature cnnf_fc7=...`):
its time, peak RSS and bytes written, beside the size of one 123,287 x 4096 float32 matrix and,
measured in the same run, the peak RSS of reading one such column whole (read_feature_sidecar, as
the export did before it streamed row groups).

    python benchmarks/bench_export.py --data-dir /tmp/full --formats reference ucch dchn dsph arrays

Each measurement runs in a fresh interpreter so that its peak RSS is its own.
"""

import argparse
import json
import logging
import os
import shutil
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


# Synthetic sidecars for every pool image: written 8,192 rows at a time into a float16 matrix (1 GB
# for 4096-d), so that making them does not need the float32 matrix the export must avoid.
SIDECARS = """
import numpy as np
import coco_unified
from tools.lib.pool import read_pool
from tools.lib.image_features.mean_image import mean_image_sha256, write_mean_image
image_ids = [record.image_id for record in read_pool(params["data_dir"])]
rng = np.random.default_rng(0)
folder = params["folder"]
doc2vec = rng.standard_normal((len(image_ids), coco_unified.DOC2VEC_DIM), dtype=np.float32)
coco_unified.write_doc2vec_sidecar(f"{folder}/doc2vec.parquet", image_ids, doc2vec, {"model": "random, for the benchmark"})
del doc2vec
mean_image = rng.uniform(0, 255, (224, 224, 3))
write_mean_image(mean_image, f"{folder}/cnnf_fc7.meanpix")
for column in ("vgg19_fc7", "cnnf_fc7"):
    matrix = np.empty((len(image_ids), params["dim"]), dtype=np.float16)
    for start in range(0, len(image_ids), 8192):
        block = rng.standard_normal((min(8192, len(image_ids) - start), params["dim"]), dtype=np.float32)
        matrix[start : start + len(block)] = np.abs(block)  # fc7 follows a ReLU
    provenance = {"model": "random, for the benchmark", "mean_image_sha256": mean_image_sha256(mean_image)}
    coco_unified.write_feature_sidecar(f"{folder}/{column}.parquet", image_ids, {column: matrix}, provenance, "float16")
    del matrix
report(images=len(image_ids))
"""

FORMAT = """
import os
from tools.lib.exports import ExportOptions, export_pool
folder = params["folder"]
options = ExportOptions(
    output_dir=params["output_dir"], data_dir=params["data_dir"], cache_dir=params["cache_dir"],
    doc2vec_path=f"{folder}/doc2vec.parquet", formats=(params["format"],),
    feature_sidecars={column: f"{folder}/{column}.parquet" for column in ("vgg19_fc7", "cnnf_fc7")},
)
start = time.perf_counter()
manifest = export_pool(options)
seconds = time.perf_counter() - start
written = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(params["output_dir"]) for name in names)
report(seconds=seconds, megabytes=written / 1e6, rows=manifest["formats"][params["format"]]["rows"])
"""

# The baseline: one 4096-d column read whole, in pool order, as the export did before.
WHOLE_COLUMN = """
import coco_unified
from tools.lib.pool import read_pool
image_ids = [record.image_id for record in read_pool(params["data_dir"])]
start = time.perf_counter()
matrix, _ = coco_unified.read_feature_sidecar(f"{params['folder']}/vgg19_fc7.parquet", "vgg19_fc7", image_ids)
report(seconds=time.perf_counter() - start, megabytes=matrix.nbytes / 1e6)
"""

# The pool's annotations alone, read as every paper format reads them first: the floor of their peak RSS.
ANNOTATIONS_ONLY = """
from tools.lib.pool import read_pool
start = time.perf_counter()
records = read_pool(params["data_dir"])
report(seconds=time.perf_counter() - start, images=len(records))
"""

FEATURE_DIM = 4096
# What SIDECARS writes, last file last: a --work-dir holding them all is reused.
SIDECAR_FILES = ("doc2vec.parquet", "cnnf_fc7.meanpix.npy", "vgg19_fc7.parquet", "cnnf_fc7.parquet")


def measure_formats(data_dir: Path, work_dir: Path, formats: list[str]) -> dict:
    folder = work_dir / "sidecars"
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(data_dir=str(data_dir), folder=str(folder))
    figures = {}
    if all((folder / name).exists() for name in SIDECAR_FILES):
        logger.info("reusing the synthetic sidecars in %s", folder)
    else:
        logger.info("writing synthetic sidecars into %s", folder)
        run(SIDECARS, dim=FEATURE_DIM, **common)
    figures["annotations only"] = run(ANNOTATIONS_ONLY, **common)
    figures["one column read whole"] = run(WHOLE_COLUMN, **common)
    for name in formats:
        output_dir = work_dir / f"export-{name}"
        logger.info("exporting %s", name)
        figures[f"format {name}"] = run(
            FORMAT, format=name, output_dir=str(output_dir), cache_dir=str(work_dir / "cache"), **common
        )
        logger.info("%s: %s", name, figures[f"format {name}"])
        shutil.rmtree(output_dir)
    return figures


def print_format_table(figures: dict, images: int) -> None:
    matrix_mb = images * FEATURE_DIM * 4 / 1e6
    print(f"\none {images:,} x {FEATURE_DIM} float32 matrix: {matrix_mb:,.0f} MB")
    print(f"{'step':<28}  {'seconds':>8}  {'peak RSS MB':>11}  {'written MB':>10}")
    for step, values in figures.items():
        print(
            f"{step:<28}  {values['seconds']:>8.1f}  {values['peak_rss_mb']:>11.0f}  {values.get('megabytes', 0):>10.0f}"
        )


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
    parser.add_argument(
        "--formats",
        nargs="+",
        metavar="FORMAT",
        help="benchmark `coco-unified export --format` instead, for each of these formats (e.g. reference ucch "
        "dchn dsph arrays), with synthetic 4096-d image features",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = args.work_dir or Path(scratch)
        if args.formats:
            figures = measure_formats(args.data_dir, work_dir, args.formats)
        else:
            figures = measure(args.data_dir, work_dir)
    print(json.dumps(figures, indent=2))
    if args.formats:
        print_format_table(figures, figures["annotations only"]["images"])
    else:
        print_table(figures)


if __name__ == "__main__":
    # Run the copy imported under the package's name, so that its logger is named for it.
    from benchmarks.bench_export import main as main_in_package

    main_in_package()
