"""Build the Doc2Vec sidecar the dataset script reads: one 300-d vector per image of the pool.

    python -m tools.doc2vec --data-dir DIR --output PATH

Reads the annotations (a local copy, a mirror or the official host), makes one document per
image (tools/text.py), takes a model (--model, --jhlau-model, or trains one), infers every
document's vector in worker processes, chunk by chunk, and writes the Parquet sidecar with its
provenance. Vectors are bit-identical whatever the number of workers; an interrupted run started
again with the same arguments continues from its last finished chunk.
"""

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import sys
from collections.abc import Sequence

import gensim
import nltk
import numpy as np
import pyarrow.parquet as pq
import scipy

import coco_unified
from coco_unified import (
    DOC2VEC_DIM,
    DOC2VEC_SIDECAR,
    CocoError,
    ImageRecord,
    read_doc2vec_sidecar,
    write_doc2vec_sidecar,
)
from tools.lib.doc2vec_chunks import ChunkStore
from tools.lib.doc2vec_inference import MAX_SEED, InferenceSettings, default_workers, infer_tasks
from tools.lib.doc2vec_model import (
    ModelInfo,
    TrainingSettings,
    file_sha256,
    model_path_beside,
    use_jhlau_model,
    use_model_file,
    use_trained_model,
)
from tools.lib.pool import DEFAULT_SIDECAR, add_source_arguments, read_pool
from tools.lib.text import TOKENIZER, documents_sha256, join_captions, tokenize_captions

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 20
DEFAULT_MIN_COUNT = 5
DEFAULT_TRAIN_WORKERS = 1
DEFAULT_INFER_EPOCHS = 1000
DEFAULT_INFER_ALPHA = 0.01
# gensim's and the fork's default: the learning rate decays linearly to this over the epochs.
INFER_MIN_ALPHA = 0.0001
DEFAULT_CHUNK_IMAGES = 1000

TokenizedPool = list[list[list[str]]]  # per image, per caption, its tokens

_EPILOG = f"""\
defaults, and why:
  --infer-epochs {DEFAULT_INFER_EPOCHS} --infer-alpha {DEFAULT_INFER_ALPHA}
      jhlau's recommendation for his DBOW models. Few epochs leave a vector near its random
      start: on the 1,233-image sample (model trained 20 epochs), 5 epochs at alpha 0.1 found
      images by label no better than chance (mAP 0.16), 1000 at 0.01 reached mAP 0.46.
      Cost: ~15-20 ms per image on one core, about 35 minutes for the pool, divided by
      --workers (benchmarks/bench_doc2vec.py). The published features were inferred with the
      gensim 0.12 fork's defaults instead (alpha 0.1, 5 steps): pass --infer-epochs 5
      --infer-alpha 0.1 for that recipe.
  --min-count {DEFAULT_MIN_COUNT}
      gensim's default and the top of the range jhlau used (1-5): words seen fewer times are
      mostly typos whose vectors would be noise.
  --train-workers {DEFAULT_TRAIN_WORKERS}
      gensim trains reproducibly only with one thread; more threads are faster but give a
      different model (and vectors) on every run.
  --seed 0
      the reference run seeded the fork's generator with 0 before inferring.

published-style features (jhlau's enwiki_dbow, extracted from enwiki_dbow.tgz):
  python -m tools.doc2vec --data-dir DIR --jhlau-model enwiki_dbow \\
      --infer-epochs 5 --infer-alpha 0.1
They match the published recipe, not its bits: the Python 2 fork hashed and drew random numbers
differently.
"""


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.doc2vec",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(parser)
    parser.add_argument(
        "--output",
        default=DEFAULT_SIDECAR,
        metavar="PATH",
        help=f"the sidecar to write (default: {DOC2VEC_SIDECAR} next to coco_unified.py, where the dataset script "
        "looks). A trained or converted model is saved beside it as PATH without .parquet plus .model, and the "
        "chunks of an unfinished run are kept in PATH.parts/",
    )
    models = parser.add_mutually_exclusive_group()
    models.add_argument(
        "--model",
        metavar="PATH",
        help="use this gensim 4 Doc2Vec model (saved with Doc2Vec.save) instead of training one",
    )
    models.add_argument(
        "--jhlau-model",
        metavar="DIR",
        help="use jhlau's pretrained enwiki_dbow or apnews_dbow (the directory holding doc2vec.bin and its two .npy "
        "files), converted to gensim 4 by tools/lib/jhlau.py",
    )
    training = parser.add_argument_group("training (without --model and --jhlau-model)")
    training.add_argument("--epochs", type=_positive, help=f"training epochs (default: {DEFAULT_EPOCHS})")
    training.add_argument(
        "--min-count", type=_positive, help=f"ignore words seen fewer times in training (default: {DEFAULT_MIN_COUNT})"
    )
    training.add_argument(
        "--train-workers",
        type=_positive,
        help=f"training threads; only 1 is reproducible (default: {DEFAULT_TRAIN_WORKERS})",
    )
    training.add_argument(
        "--train-ids",
        metavar="FILE",
        help="train on these images only (one COCO image id per line), e.g. the database_image_ids.txt of "
        "tools/protocol.py, to keep query images out of training. Vectors are still inferred for the whole pool",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of training, of each inferred vector's random start and negative samples (default: 0)",
    )
    inference = parser.add_argument_group("inference")
    inference.add_argument(
        "--infer-epochs", type=_positive, default=DEFAULT_INFER_EPOCHS, help=f"(default: {DEFAULT_INFER_EPOCHS})"
    )
    inference.add_argument(
        "--infer-alpha",
        type=_positive_float,
        default=DEFAULT_INFER_ALPHA,
        help=f"initial learning rate, decaying to {INFER_MIN_ALPHA} (default: {DEFAULT_INFER_ALPHA})",
    )
    inference.add_argument(
        "--per-caption", action="store_true", help="also write one vector per caption (column caption_doc2vec)"
    )
    inference.add_argument(
        "--workers",
        type=_positive,
        default=default_workers(),
        help="tokenising and inference processes (default: all cores, here %(default)s)",
    )
    inference.add_argument(
        "--chunk-images",
        type=_positive,
        default=DEFAULT_CHUNK_IMAGES,
        help="images per chunk: the work an interruption can lose, per worker (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default: %(default)s)"
    )
    args = parser.parse_args(argv)
    _apply_training_defaults(parser, args)
    return args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_SEED} (it becomes the workers' PYTHONHASHSEED)")
    return value


def _apply_training_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    defaults = {
        "epochs": DEFAULT_EPOCHS,
        "min_count": DEFAULT_MIN_COUNT,
        "train_workers": DEFAULT_TRAIN_WORKERS,
        "train_ids": None,
    }
    given = [f"--{name.replace('_', '-')}" for name in defaults if getattr(args, name) is not None]
    if given and (args.model or args.jhlau_model):
        parser.error(f"{', '.join(given)} apply only to training, not to --model or --jhlau-model")
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


# ----------------------------------------------------------------------------- model


def read_train_ids(path: str, records: Sequence[ImageRecord]) -> list[int]:
    """Pool positions of the image ids listed in `path` (one per line), in pool order."""
    position_of = {record.image_id: record.index for record in records}
    wanted = set()
    with open(path) as file:
        for line_number, line in enumerate(file, 1):
            text = line.strip()
            if not text:
                continue
            try:
                wanted.add(int(text))
            except ValueError:
                raise CocoError(
                    f"{path}, line {line_number}: {text!r} is not an image id; the file lists one COCO image id per line."
                ) from None
    unknown = sorted(wanted - position_of.keys())
    if unknown:
        raise CocoError(
            f"{path}: {len(unknown)} image ids are not in the pool (e.g. {unknown[:5]}); it lists images of other data."
        )
    if not wanted:
        raise CocoError(f"{path}: lists no image id; training needs at least one image.")
    return sorted(position_of[image_id] for image_id in wanted)


def obtain_model(args: argparse.Namespace, records: Sequence[ImageRecord], captions: TokenizedPool) -> ModelInfo:
    if args.model:
        return use_model_file(args.model)
    beside = model_path_beside(args.output)
    if args.jhlau_model:
        return use_jhlau_model(args.jhlau_model, beside)
    positions = read_train_ids(args.train_ids, records) if args.train_ids else range(len(records))
    documents = [join_captions(captions[position]) for position in positions]
    train_ids = (
        {"path": os.path.abspath(args.train_ids), "sha256": file_sha256(args.train_ids)} if args.train_ids else None
    )
    settings = TrainingSettings(args.epochs, args.min_count, args.seed, args.train_workers)
    return use_trained_model(documents, settings, train_ids, beside)


# ----------------------------------------------------------------------------- inference


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Consecutive images of the pool whose documents one worker task infers."""

    chunk_id: int
    positions: range
    documents: list[list[str]]  # the images' documents, then (per caption) their captions'

    @property
    def num_images(self) -> int:
        return len(self.positions)


def plan_chunks(captions: TokenizedPool, chunk_images: int, per_caption: bool) -> list[Chunk]:
    chunks = []
    for chunk_id, start in enumerate(range(0, len(captions), chunk_images)):
        positions = range(start, min(start + chunk_images, len(captions)))
        documents = [join_captions(captions[position]) for position in positions]
        if per_caption:
            documents += [tokens for position in positions for tokens in captions[position]]
        chunks.append(Chunk(chunk_id, positions, documents))
    return chunks


def run_fingerprint(
    image_ids: Sequence[int], chunks: Sequence[Chunk], model: ModelInfo, settings: InferenceSettings
) -> str:
    """What the vectors depend on: equal fingerprints, equal chunk files."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [
                dataclasses.asdict(settings),
                model.weights_sha256,
                [len(chunk.positions) for chunk in chunks],
                gensim.__version__,
            ]
        ).encode()
    )
    digest.update(np.asarray(image_ids, dtype=np.int64).tobytes())
    digest.update(documents_sha256([words for chunk in chunks for words in chunk.documents]).encode())
    return digest.hexdigest()


def infer_chunks(
    store: ChunkStore, chunks: Sequence[Chunk], model: ModelInfo, settings: InferenceSettings, workers: int
) -> None:
    """Infer the chunks the store does not hold yet and store each as soon as it is done."""
    finished = store.finished()
    pending = [chunk for chunk in chunks if chunk.chunk_id not in finished]
    done_documents = sum(len(chunk.documents) for chunk in chunks if chunk.chunk_id in finished)
    if finished:
        logger.info(
            "resuming: %d of %d chunks were finished by an earlier run", len(chunks) - len(pending), len(chunks)
        )
    tasks = [(chunk.chunk_id, chunk.documents) for chunk in pending]
    total_documents = done_documents + sum(len(chunk.documents) for chunk in pending)
    for chunk_id, vectors in infer_tasks(
        model.path, tasks, settings, workers, "inference", done_documents, total_documents
    ):
        store.save(chunk_id, vectors)


def assemble(
    store: ChunkStore, chunks: Sequence[Chunk], captions: TokenizedPool, per_caption: bool
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """The image vectors in pool order and, per caption, each image's caption vectors."""
    image_parts, caption_parts = [], []
    for chunk in chunks:
        vectors = store.load(chunk.chunk_id, len(chunk.documents), DOC2VEC_DIM)
        image_parts.append(vectors[: chunk.num_images])
        caption_parts.append(vectors[chunk.num_images :])
    if not per_caption:
        return np.concatenate(image_parts), None
    boundaries = np.cumsum([len(tokens) for tokens in captions])[:-1]
    return np.concatenate(image_parts), np.split(np.concatenate(caption_parts), boundaries)


# ----------------------------------------------------------------------------- sidecar


def library_versions() -> dict:
    return {
        "python": platform.python_version(),
        "gensim": gensim.__version__,
        "nltk": nltk.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,  # its BLAS computes gensim's dot products
        "coco_unified": str(coco_unified.VERSION),
    }


def describe_run(
    args: argparse.Namespace, records: Sequence[ImageRecord], model: ModelInfo, settings: InferenceSettings
) -> dict:
    return {
        "tool": "tools/doc2vec.py",
        "source": args.data_dir or args.base_url or coco_unified.OFFICIAL_BASE_URL,
        "images": len(records),
        "captions": sum(len(record.captions) for record in records),
        "tokenizer": TOKENIZER,
        "model": model.provenance,
        "inference": {
            **dataclasses.asdict(settings),
            "per_caption": args.per_caption,
            "determinism": "workers run with PYTHONHASHSEED=seed; model.random.seed(seed) before each document",
        },
        "seed": args.seed,
        "versions": library_versions(),
    }


def write_checked_sidecar(
    path: str,
    image_ids: Sequence[int],
    vectors: np.ndarray,
    caption_vectors: list[np.ndarray] | None,
    provenance: dict,
) -> None:
    """Write the sidecar aside, read it back as the dataset script will, then move it in place.

    So a failed or interrupted write never leaves a broken sidecar where the script looks.
    """
    partial = path + ".partial"
    write_doc2vec_sidecar(partial, image_ids, vectors, provenance, caption_vectors)
    read_back, _ = read_doc2vec_sidecar(partial, image_ids)
    if not np.array_equal(read_back, vectors):
        raise CocoError(
            f"{partial}: the vectors read back differ from those written; the disk or filesystem is faulty."
        )
    if caption_vectors is not None:
        counts = (
            pq.read_table(partial, columns=["caption_doc2vec"]).column(0).combine_chunks().value_lengths().to_numpy()
        )
        if not np.array_equal(counts, [len(rows) for rows in caption_vectors]):
            raise CocoError(
                f"{partial}: the caption vectors read back do not match the captions; the disk or filesystem is faulty."
            )
    os.replace(partial, path)


def build(args: argparse.Namespace) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    records = read_pool(args.data_dir, args.base_url)
    captions = tokenize_captions([record.captions for record in records], args.workers)
    model = obtain_model(args, records, captions)
    settings = InferenceSettings(args.infer_epochs, args.infer_alpha, INFER_MIN_ALPHA, args.seed)
    image_ids = [record.image_id for record in records]
    chunks = plan_chunks(captions, args.chunk_images, args.per_caption)
    store = ChunkStore(args.output + ".parts", run_fingerprint(image_ids, chunks, model, settings))
    infer_chunks(store, chunks, model, settings, args.workers)
    vectors, caption_vectors = assemble(store, chunks, captions, args.per_caption)
    write_checked_sidecar(
        args.output, image_ids, vectors, caption_vectors, describe_run(args, records, model, settings)
    )
    store.remove()
    logger.info("wrote %d vectors to %s", len(image_ids), args.output)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":
        # gensim logs every lifecycle event and epoch at INFO; the progress bars say enough.
        logging.getLogger("gensim").setLevel(logging.WARNING)
    try:
        build(args)
    except CocoError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
