"""Peak RSS of preparing from archives whose directory lies about an entry, beside a clean run of the same sample.

The hostile archives are those of tools/fakes/hostile_zip.py (an entry declared as 1 GiB or 1 TiB,
a 400 MB deflate bomb declared as 1,000 bytes), each the sample's annotations zip with one entry
made hostile. Each preparation (`no_images`, no Doc2Vec) runs in a fresh interpreter, so its peak
RSS (getrusage) is its own; a hostile one is expected to fail with an ArchiveError naming the entry.

    python benchmarks/bench_hostile_archives.py [--scale 0.05] [--script-dir DIR]

`--script-dir` measures the coco_unified.py of another folder (e.g. a checkout of an older commit).
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

if not __package__:  # run by path: `python benchmarks/bench_hostile_archives.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import cli
from tools.fakes.hostile_zip import CASES, make_hostile_copy
from tools.fakes.sample_coco import generate

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)

# Prints one JSON object: the outcome (rows, or the error's kind and first words) and the peak RSS.
PREPARE = textwrap.dedent(
    """
    import json, resource, sys
    script_dir, data_dir, cache_dir = sys.argv[1:]
    sys.path.insert(0, script_dir)
    import coco_unified
    try:
        builder = coco_unified.CocoUnified(config_name="no_images", data_dir=data_dir, cache_dir=cache_dir, doc2vec=False)
        builder.download_and_prepare()
        outcome = f"{builder.as_dataset('train').num_rows:,} rows"
    except Exception as error:
        error = error.__cause__ or error
        outcome = f"{type(error).__name__}: {str(error).replace(data_dir, 'DIR')[:160]}"
    print(json.dumps({"outcome": outcome, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def prepare_in_child(script_dir: Path, data_dir: Path, cache_dir: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PREPARE, str(script_dir), str(data_dir), str(cache_dir)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        # A MemoryError or a kill by the kernel's OOM killer is an outcome too.
        return {"outcome": f"crashed (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.05, help="scale of the generated sample (default 0.05)")
    parser.add_argument(
        "--script-dir", type=Path, default=REPO, help="folder of the coco_unified.py to measure (default: this repo)"
    )
    args = parser.parse_args(argv)
    cli.configure_logging(False)
    with tempfile.TemporaryDirectory(prefix="bench_hostile_") as work:
        work = Path(work)
        logger.info(f"generating a {args.scale} sample")
        generate(work / "clean", args.scale, seed=0)
        figures = {"clean": prepare_in_child(args.script_dir, work / "clean", work / "cache-clean")}
        for case in CASES:
            make_hostile_copy(work / "clean", work / case, case)
            figures[case] = prepare_in_child(args.script_dir, work / case, work / f"cache-{case}")
    print_table(figures)


def print_table(figures: dict) -> None:
    clean = figures["clean"]["peak_rss_mb"]
    print("| archive | outcome | peak RSS | x clean |")
    print("|---|---|---|---|")
    for case, figure in figures.items():
        rss = figure.get("peak_rss_mb")
        measured = f"{rss:,.0f} MB | {rss / clean:.2f}" if rss is not None else "- | -"
        print(f"| {case} | {figure['outcome']} | {measured} |")


if __name__ == "__main__":
    main()
