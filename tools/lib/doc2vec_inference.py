"""Deterministic, parallel `Doc2Vec.infer_vector`: the same document always gets the same bits.

gensim 4 draws an inferred vector's start from `hash(" ".join(words))`, which Python salts per
process unless PYTHONHASHSEED is fixed, and its negative samples from `model.random`, which
advances with every call. So inference runs only in processes started with PYTHONHASHSEED set
to the seed, and `model.random` is re-seeded before every document: a vector then depends on
the document, the model and the settings alone, not on the worker, the order or the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
from collections.abc import Hashable, Iterator, Sequence
from multiprocessing.pool import Pool
from typing import TYPE_CHECKING

import numpy as np

from coco_unified import CocoError
from tools.lib.progress import Progress

if TYPE_CHECKING:
    from gensim.models.doc2vec import Doc2Vec

# PYTHONHASHSEED accepts 0..2**32 - 1.
MAX_SEED = 2**32 - 1

Document = list[str]
Task = tuple[Hashable, Sequence[Document]]


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    epochs: int
    alpha: float
    min_alpha: float
    seed: int  # PYTHONHASHSEED of the workers and the per-document seed of model.random


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


# The model and settings of one worker process, set once by `_start_worker`, or why its model
# could not be loaded.
_worker_model = None
_worker_settings = None
_worker_error: CocoError | None = None


def _start_worker(model_path: str, settings: InferenceSettings) -> None:
    global _worker_model, _worker_settings, _worker_error
    # gensim is imported here, by the workers: a tool that only starts them (evaluate) need not
    # import it.
    from tools.lib.doc2vec_model import load_model

    try:
        # Memory-mapped, the big arrays of a large model are shared by all workers through the
        # page cache instead of being copied into each; inference only reads them.
        _worker_model = load_model(model_path, mmap="r")
    except CocoError as error:
        # Raised by each task instead: a pool whose initializer fails starts new workers forever.
        _worker_error = error
    _worker_settings = settings


def worker_ready() -> None:
    """Run in a worker: raises the error that kept it from loading the model, if any."""
    if _worker_error is not None:
        raise _worker_error


def infer_document(model: Doc2Vec, words: Document, settings: InferenceSettings) -> np.ndarray:
    """One document's vector; deterministic only in a process whose PYTHONHASHSEED is the seed."""
    if not words:
        # gensim starts an empty document from its global generator: the vector would be random.
        raise ValueError("cannot infer a reproducible vector for an empty document")
    model.random.seed(settings.seed)
    return model.infer_vector(words, alpha=settings.alpha, min_alpha=settings.min_alpha, epochs=settings.epochs)


def _infer_task(task: Task) -> tuple[Hashable, np.ndarray]:
    worker_ready()
    if os.environ.get("PYTHONHASHSEED") != str(_worker_settings.seed):
        raise RuntimeError(
            "an inference worker runs without PYTHONHASHSEED set to the seed; its vectors would not be reproducible"
        )
    key, documents = task
    vectors = np.stack([infer_document(_worker_model, words, _worker_settings) for words in documents])
    return key, vectors.astype(np.float32, copy=False)


@contextlib.contextmanager
def _environment(name: str, value: str):
    """Set an environment variable while processes are started, then restore it."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def inference_processes(model_path: str, settings: InferenceSettings, workers: int) -> Iterator[Pool]:
    """`workers` fresh processes that load the saved model at `model_path` as they start: started
    early, they import gensim and load the model while the caller does other work."""
    # spawn, not fork: a forked worker would inherit this process's hash salt. The variable stays
    # set while the pool lives, for the workers it starts to replace dead ones.
    context = multiprocessing.get_context("spawn")
    with _environment("PYTHONHASHSEED", str(settings.seed)):
        with context.Pool(workers, initializer=_start_worker, initargs=(model_path, settings)) as pool:
            yield pool


def infer_tasks(
    processes: Pool,
    tasks: Sequence[Task],
    description: str = "inference",
    done_documents: int = 0,
    total_documents: int = 0,
) -> Iterator[tuple[Hashable, np.ndarray]]:
    """(key, float32 vectors of the task's documents) for every task, in order of completion.

    `processes` come from `inference_processes`; a progress bar counts documents, starting at
    `done_documents` of `total_documents` when a run is resumed.
    """
    pending_documents = sum(len(documents) for _, documents in tasks)
    total = max(total_documents, done_documents + pending_documents)
    with Progress(total=total, initial=done_documents, desc=description, unit="doc", smoothing=0.05) as progress:
        for key, vectors in processes.imap_unordered(_infer_task, tasks):
            progress.update(len(vectors))
            yield key, vectors


def task_starts(documents: Sequence[Document], documents_per_task: int) -> range:
    """Where each task of `documents_per_task` documents starts (the last may hold fewer)."""
    return range(0, len(documents), documents_per_task)


def infer_all(
    processes: Pool, documents: Sequence[Document], description: str = "inference", documents_per_task: int = 256
) -> np.ndarray:
    """Vectors of `documents`, in their order, inferred by `processes` (of `inference_processes`)."""
    starts = task_starts(documents, documents_per_task)
    tasks = [(start, documents[start : start + documents_per_task]) for start in starts]
    vectors = dict(infer_tasks(processes, tasks, description))
    return np.concatenate([vectors[start] for start in starts])


def infer_in_new_processes(
    model_path: str,
    documents: Sequence[Document],
    settings: InferenceSettings,
    workers: int,
    description: str = "inference",
    documents_per_task: int = 256,
) -> np.ndarray:
    """`infer_all` in `workers` processes started for these documents alone (their start-up included),
    or fewer when the documents make fewer tasks: each process loads the model."""
    tasks = max(1, len(task_starts(documents, documents_per_task)))
    with inference_processes(model_path, settings, min(workers, tasks)) as processes:
        return infer_all(processes, documents, description, documents_per_task)
