"""What the Doc2Vec sidecar costs: tokenising, training, and inference per core and on all cores.

    python benchmarks/bench_doc2vec.py [--data-dir /tmp/coco_full] [--workers N] [--epochs N]

Runs on the --scale 1.0 sample of tools/fakes/sample_coco.py (123,287 images; generated into
--data-dir when missing). Inference is timed on a subset of the documents and extrapolated to the
pool; "all cores" runs tools.lib.doc2vec_inference's worker processes, whose start-up (interpreter,
imports, model loading) is measured apart and reported once.

The sample's captions come from templates over a small vocabulary, so every word is frequent and
sample=1e-5 skips most tokens; the share kept is printed because training cost follows it.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

if not __package__:  # run by path: `python benchmarks/bench_doc2vec.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

from tools import cli
from tools.lib.doc2vec_inference import InferenceSettings, default_workers, infer_document, infer_in_new_processes
from tools.lib.doc2vec_model import TrainingSettings, train_model
from tools.lib.doc2vec_presets import DEFAULT_PRESET, INFER_MIN_ALPHA, PRESETS
from tools.lib.pool import read_pool
from tools.lib.text import join_captions, tokenize_captions

DEFAULT = PRESETS[DEFAULT_PRESET]
DEFAULT_DATA_DIR = "/tmp/coco_full"
# Documents timed per inference setting, on one core and on all: runs of tens of seconds, so
# that the worker start-up is small beside them. At 10 epochs all cores infer the whole pool.
ONE_CORE_SUBSET = {10: 5_000, 1000: 200}
ALL_CORES_SUBSET = {10: None, 1000: 2_000}
# Small tasks keep every worker busy until the end of a subset.
TASKS_PER_WORKER = 16


def timed(action: Callable):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def ensure_sample(data_dir: str) -> None:
    if not os.path.exists(os.path.join(data_dir, "annotations_trainval2017.zip")):
        sample_command = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "sample.py")
        subprocess.run([sys.executable, sample_command, data_dir, "--scale", "1.0"], check=True)


def kept_token_share(model) -> float:
    """The share of training tokens that subsampling keeps on average (sample_int / 2**32 each)."""
    counts = model.wv.expandos["count"].astype(np.float64)
    keep = np.minimum(model.wv.expandos["sample_int"].astype(np.float64) / 2**32, 1.0)
    return float((counts * keep).sum() / counts.sum())


def one_core_rate(model, documents: Sequence[list[str]], settings: InferenceSettings) -> float:
    _, seconds = timed(lambda: [infer_document(model, words, settings) for words in documents])
    return len(documents) / seconds


def all_cores_rate(
    model_path: str, documents: Sequence[list[str]], settings: InferenceSettings, workers: int, start_up: float
) -> float:
    per_task = max(1, len(documents) // (workers * TASKS_PER_WORKER))
    _, seconds = timed(
        lambda: infer_in_new_processes(model_path, documents, settings, workers, f"{settings.epochs} epochs", per_task)
    )
    return len(documents) / (seconds - start_up)


def measure_start_up(model_path: str, documents: Sequence[list[str]], workers: int) -> float:
    """Seconds to start `workers` processes and load the model, with next to no inference."""
    single_epoch = InferenceSettings(epochs=1, alpha=DEFAULT.infer_alpha, min_alpha=INFER_MIN_ALPHA, seed=0)
    _, seconds = timed(
        lambda: infer_in_new_processes(
            model_path, documents[:workers], single_epoch, workers, "start-up", documents_per_task=1
        )
    )
    return seconds


def report(line: str) -> None:
    print(line, flush=True)


def bench_tokenising(captions: Sequence[Sequence[str]], workers: int) -> list[list[str]]:
    for processes in sorted({1, workers}):
        tokenized, seconds = timed(lambda processes=processes: tokenize_captions(captions, processes))
        report(f"tokenising: {seconds:.1f} s with {processes} process(es)")
    documents = [join_captions(image) for image in tokenized]
    report(f"documents: {np.mean([len(words) for words in documents]):.1f} tokens on average")
    return documents


def bench_training(documents: Sequence[list[str]], epochs: int, workers: int):
    """Train with one thread (the reproducible default) and with one per core; the last model."""
    for threads in sorted({1, workers}):
        settings = TrainingSettings(epochs=epochs, min_count=DEFAULT.min_count, seed=0, workers=threads)
        model, seconds = timed(lambda settings=settings: train_model(documents, settings))
        report(
            f"training, {epochs} epochs, {threads} thread(s): {seconds:.1f} s "
            f"(vocabulary {len(model.wv):,} words; subsampling keeps {kept_token_share(model):.1%} of tokens)"
        )
    return model


def bench_inference(model, documents: Sequence[list[str]], workers: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        model_path = os.path.join(directory, "bench.model")
        model.save(model_path)
        start_up = measure_start_up(model_path, documents, workers)
        report(f"inference start-up of {workers} worker processes: {start_up:.1f} s")
        rng = np.random.default_rng(0)
        for epochs in ONE_CORE_SUBSET:
            settings = InferenceSettings(epochs=epochs, alpha=DEFAULT.infer_alpha, min_alpha=INFER_MIN_ALPHA, seed=0)
            per_core = one_core_rate(model, sample(documents, ONE_CORE_SUBSET[epochs], rng), settings)
            all_cores = all_cores_rate(
                model_path, sample(documents, ALL_CORES_SUBSET[epochs], rng), settings, workers, start_up
            )
            report(
                f"inference, {epochs} epochs: {per_core:,.0f} documents/s on 1 core, {all_cores:,.0f} on {workers} "
                f"-> pool of {len(documents):,}: {len(documents) / per_core / 60:.1f} min on 1 core, "
                f"{(start_up + len(documents) / all_cores) / 60:.1f} min on {workers} (with start-up)"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="the --scale 1.0 sample (`coco-unified sample DIR --scale 1.0`), generated there when missing "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes for tokenising and inference, and threads for the second training run "
        "(default: %(default)s, the cores this process may use)",
    )
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT.epochs, help="training epochs (default: %(default)s, the build's)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)
    ensure_sample(args.data_dir)
    # Other processes competing for the cores distort every figure below.
    report(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    records, seconds = timed(lambda: read_pool(args.data_dir))
    report(
        f"pool: {len(records):,} images, {sum(len(r.captions) for r in records):,} captions; annotations read in {seconds:.1f} s"
    )
    documents = bench_tokenising([record.captions for record in records], args.workers)
    model = bench_training(documents, args.epochs, args.workers)
    bench_inference(model, documents, args.workers)
    report(f"load average at end: {os.getloadavg()[0]:.2f}")


def sample(documents: Sequence[list[str]], count, rng) -> Sequence[list[str]]:
    """`count` documents drawn at random, or all of them for None."""
    if count is None:
        return documents
    return [documents[i] for i in rng.choice(len(documents), count, replace=False)]


if __name__ == "__main__":
    main()
