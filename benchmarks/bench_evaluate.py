"""What `coco-unified evaluate` costs on a full-scale pool: wall time, CPU time, peak RSS, per stage.

    python benchmarks/bench_evaluate.py --data-dir DIR --doc2vec-path doc2vec.parquet --bow bow.parquet
        [--image FILE ...] [--workers N] [--output-dir DIR]

Runs `python -m tools.evaluate` with these arguments in a child process (its own peak RSS and CPU
time, from os.wait4) and prints its stages as the evaluation recorded them (evaluation.json).
Beside it, measured in the same run: reading the annotations alone in another child (the part
no evaluation can skip), and this machine's numpy throughput on one thread for the two operations
ranking is made of (a float32 matrix product and the sort of one query's keys), with the floor
they give: every ranking's sorts plus the feature products, at the evaluation's sizes. The goal
is 60 s of wall time. Other jobs on the machine show as wall time above CPU time / cores, so the
load average is printed too.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if not __package__:  # run by path: `python benchmarks/bench_evaluate.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from threadpoolctl import threadpool_limits

GOAL_SECONDS = 60
READ_ANNOTATIONS = "import sys; from tools.lib.pool import read_pool; read_pool(sys.argv[1])"
# The protocol's sizes on the full pool (tools/lib/evaluation_report.py): the floor is computed for them.
QUERIES, DATABASE = 5_000, 117_218
# Rows of the timed product: a block of queries as evaluate scores them.
BLOCK_ROWS = 256


def run_child(command: list[str]) -> dict:
    """Wall seconds, CPU seconds and peak RSS (MB) of one child process, its own (os.wait4)."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    error = child.stderr.read()  # until the child closes it; then reap the child here, not by Popen
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    child.stderr.close()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{error[-4000:]}")
    return {"wall": seconds, "cpu": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def numpy_throughput(dimensions: int) -> dict:
    """One thread: GFLOP/s of a float32 product (a block of queries against the database) and
    milliseconds per sort of one query's uint64 keys."""
    rng = np.random.default_rng(0)
    database = rng.standard_normal((DATABASE, dimensions), dtype=np.float32)
    queries = rng.standard_normal((BLOCK_ROWS, dimensions), dtype=np.float32)
    keys = rng.integers(0, 2**50, (20, DATABASE), dtype=np.uint64)
    with threadpool_limits(1, user_api="blas"):
        start = time.thread_time()
        queries @ database.T
        product_seconds = time.thread_time() - start
    start = time.thread_time()
    for row in keys:
        np.sort(row)
    sort_seconds = (time.thread_time() - start) / len(keys)
    return {"gflops": 2 * BLOCK_ROWS * DATABASE * dimensions / product_seconds / 1e9, "sort_ms": sort_seconds * 1e3}


def floor_seconds(evaluation: dict, throughput: dict, dimensions: int) -> float:
    """CPU seconds of the arithmetic no ranking avoids: one sort per query per ranking, and the
    products of the real-valued rankings (taken as `dimensions` wide)."""
    queries, database = evaluation["protocol"]["queries"], evaluation["protocol"]["database"]
    rankings = len(evaluation["tasks"])
    real_valued = sum(1 for task in evaluation["tasks"] if task["result"]["pr_curve"] is None)
    sorts = rankings * queries * throughput["sort_ms"] / 1e3 * database / DATABASE
    products = real_valued * 2 * queries * database * dimensions / (throughput["gflops"] * 1e9)
    return sorts + products


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="a full-scale pool (`coco-unified sample DIR --scale 1.0`)")
    parser.add_argument("--doc2vec-path", required=True, help="its Doc2Vec sidecar (`coco-unified doc2vec`)")
    parser.add_argument("--bow", help="its BoW sidecar (`coco-unified bow`)")
    parser.add_argument("--image", action="append", default=[], help="image features, as evaluate's --image")
    parser.add_argument("--workers", type=int, help="evaluate's --workers (default: its own, all cores)")
    parser.add_argument("--output-dir", help="keep evaluate's outputs here (default: a temporary folder)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        output_dir = args.output_dir or scratch
        command = [sys.executable, "-m", "tools.evaluate", "--data-dir", args.data_dir]
        command += ["--doc2vec-path", args.doc2vec_path, "--output-dir", output_dir]
        command += ["--bow", args.bow] if args.bow else []
        command += [argument for path in args.image for argument in ("--image", path)]
        command += ["--workers", str(args.workers)] if args.workers else []
        load_before = os.getloadavg()[0]
        evaluate = run_child(command)
        load_after = os.getloadavg()[0]
        with open(os.path.join(output_dir, "evaluation.json")) as file:
            evaluation = json.load(file)
    annotations = run_child([sys.executable, "-c", READ_ANNOTATIONS, args.data_dir])
    dimensions = 300  # Doc2Vec's: the widest real-valued features of the README's command
    throughput = numpy_throughput(dimensions)

    print(f"cores: {os.cpu_count()}; load average (1 min) {load_before:.1f} before, {load_after:.1f} after")
    print(f"{'':<58}{'wall s':>8}{'CPU s':>8}{'peak RSS MB':>13}")
    print(f"{'coco-unified evaluate':<58}{evaluate['wall']:8.1f}{evaluate['cpu']:8.1f}{evaluate['peak_rss_mb']:13.0f}")
    for stage, spent in evaluation["stages"].items():
        print(f"  {stage:<56}{spent['wall']:8.1f}{spent['cpu']:8.1f}")
    print(f"{'baseline: reading the annotations alone':<58}", end="")
    print(f"{annotations['wall']:8.1f}{annotations['cpu']:8.1f}{annotations['peak_rss_mb']:13.0f}")
    floor = floor_seconds(evaluation, throughput, dimensions)
    print(
        f"baseline: numpy on one thread here: {throughput['gflops']:.0f} GFLOP/s float32 product, "
        f"{throughput['sort_ms']:.2f} ms per sort of {DATABASE:,} uint64 keys; bare, the "
        f"{len(evaluation['tasks'])} rankings' sorts and products would take {floor:.1f} s CPU"
    )
    verdict = "within" if evaluate["wall"] <= GOAL_SECONDS else "over"
    print(
        f"goal: {GOAL_SECONDS} s wall; measured {evaluate['wall']:.1f} s ({verdict}), "
        f"{evaluate['cpu'] / os.cpu_count():.1f} s of CPU per core"
    )


if __name__ == "__main__":
    main()
