"""Benchmark of streamed rows with vector columns: tables and example dicts under datasets 3.6.

Under datasets 3.x the builder streams tables it builds with the features' schema
(`coco_unified.STREAMS_TABLES`); a generator's example dicts, which 3.6 would turn into one-row
tables and cast to the features one by one, are the baseline. This prints rows/s of the
`no_images` stream for rows of several widths (multi_hot's 80 elements, doc2vec's 300, feature
sidecars of 128, 512 and 4096 dimensions), both ways under datasets 3.6 (this interpreter), and
as built under the newest datasets (--newest-python), all in one run:

    python benchmarks/bench_stream_vectors.py [--newest-python PYTHON] [--passes N]

The data is the 247-image sample (`coco-unified sample DIR`), generated into a temporary folder
with random sidecars; each stream runs in a fresh interpreter.
"""

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

if not __package__:  # run by path: `python benchmarks/bench_stream_vectors.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

import coco_unified
from benchmarks.bench_loading import run
from tools import cli
from tools.fakes.sample_coco import generate
from tools.lib.pool import read_pool
from tools.sample import DEFAULT_SCALE

logger = logging.getLogger(__name__)

# (name, doc2vec, feature sidecar dimension or 0): rows from multi_hot's 80 elements up to a VGG
# fc7 feature.
ROWS = (
    ("multi_hot (80)", False, 0),
    ("multi_hot + 128-d feature (208)", False, 128),
    ("multi_hot + doc2vec (380)", True, 0),
    ("multi_hot + doc2vec + 512-d feature (892)", True, 512),
    ("multi_hot + doc2vec + 4096-d feature (4,476)", True, 4096),
)
# The ways datasets 3.6 gets a stream's rows: STREAMS_TABLES values that force each.
FORMS = {"tables (as built)": True, "example dicts": False}

# Rows/s over whole passes of the stream, after its first row (the setup reads the annotations).
STREAM = """
import coco_unified
if params["tables"] is not None:
    coco_unified.STREAMS_TABLES = params["tables"]
sidecars = {"feature": params["feature"]} if params["feature"] else None
builder = coco_unified.CocoUnified(
    config_name="no_images", data_dir=params["data_dir"], cache_dir=params["cache_dir"],
    doc2vec=params["doc2vec"], doc2vec_path=params["doc2vec_path"], feature_sidecars=sidecars,
)
dataset = builder.as_streaming_dataset("train")
rows, first = 0, None
for _ in range(params["passes"]):
    for row in dataset:
        if first is None:
            first = time.perf_counter()
        rows += 1
report(rows=rows, rows_per_second=(rows - 1) / (time.perf_counter() - first))
"""


def write_sidecars(data_dir: Path, folder: Path) -> tuple[str, dict[int, str]]:
    """The doc2vec sidecar and one feature sidecar per dimension of ROWS, of random vectors."""
    image_ids = [record.image_id for record in read_pool(str(data_dir))]
    rng = np.random.default_rng(0)
    doc2vec = str(folder / "doc2vec.parquet")
    vectors = rng.standard_normal((len(image_ids), coco_unified.DOC2VEC_DIM), dtype=np.float32)
    coco_unified.write_doc2vec_sidecar(doc2vec, image_ids, vectors, {"model": "random, for the benchmark"})
    features = {}
    for dim in sorted({dim for _, _, dim in ROWS if dim}):
        features[dim] = str(folder / f"feature{dim}.parquet")
        matrix = rng.standard_normal((len(image_ids), dim), dtype=np.float32)
        coco_unified.write_feature_sidecar(features[dim], image_ids, {"feature": matrix}, {"model": "random"})
    return doc2vec, features


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--newest-python",
        help="an interpreter with the newest datasets (e.g. .venv-newest/bin/python): also streams each row with it",
    )
    parser.add_argument(
        "--passes", type=int, default=4, help="passes over the 247-row stream a figure (default: %(default)s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)

    print(f"\n{os.cpu_count()} cores; 1-minute load average {os.getloadavg()[0]:.1f} before")
    header = ["row (fixed-size list elements)", *(f"3.6, {form}" for form in FORMS)]
    if args.newest_python:
        header.append("newest datasets")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" + "---:|" * (len(header) - 1))
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "coco"
        generate(data_dir, DEFAULT_SCALE, 0)
        doc2vec, features = write_sidecars(data_dir, Path(scratch))
        common = dict(data_dir=str(data_dir), cache_dir=str(Path(scratch) / "cache"), doc2vec_path=doc2vec)
        common["passes"] = args.passes
        for name, with_doc2vec, dim in ROWS:
            params = dict(common, doc2vec=with_doc2vec, feature=features.get(dim))
            logger.info("streaming %s", name)
            rates = [run(STREAM, tables=tables, **params)["rows_per_second"] for tables in FORMS.values()]
            cells = [name, *(f"{rate:,.0f}" for rate in rates)]
            if args.newest_python:
                cells.append(f"{run(STREAM, python=args.newest_python, tables=None, **params)['rows_per_second']:,.0f}")
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n1-minute load average {os.getloadavg()[0]:.1f} after; rows/s over {args.passes} passes of the stream")


if __name__ == "__main__":
    # Run the copy imported under the package's name, so that its logger is named for it.
    from benchmarks.bench_stream_vectors import main as main_in_package

    main_in_package()
