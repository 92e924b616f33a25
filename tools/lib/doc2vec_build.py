"""Build the Doc2Vec sidecar the loader reads: one 300-d vector per image of the pool.

`build_sidecar(BuildOptions(...))` reads the annotations (a local copy, a mirror or the official
host), makes one document per image (tools/lib/text.py), takes a model (a gensim 4 file, jhlau's
converted, or one trained on the pool), infers every document's vector in worker processes, chunk
by chunk, and writes the Parquet sidecar with its provenance. Vectors are bit-identical whatever
the number of workers; an interrupted run started again with the same options continues from its
last finished chunk.
"""

import dataclasses
import hashlib
import json
import logging
import os
import platform
from collections.abc import Sequence

import gensim
import nltk
import numpy as np
import pyarrow.parquet as pq
import scipy

import coco_unified
from coco_unified import (
    DOC2VEC_DIM,
    CocoError,
    ImageRecord,
    number_of,
    read_doc2vec_sidecar,
    write_doc2vec_sidecar,
)
from tools.lib.doc2vec_chunks import ChunkStore
from tools.lib.doc2vec_inference import MAX_SEED, InferenceSettings, default_workers, infer_tasks, inference_processes
from tools.lib.doc2vec_model import (
    ModelInfo,
    TrainingSettings,
    file_sha256,
    model_path_beside,
    use_jhlau_model,
    use_model_file,
    use_trained_model,
)
from tools.lib.doc2vec_presets import DEFAULT_PRESET, INFER_MIN_ALPHA, PRESETS, Doc2VecPreset
from tools.lib.pool import DEFAULT_SIDECAR, read_pool
from tools.lib.text import TOKENIZER, documents_sha256, join_captions, tokenize_captions

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_WORKERS = 1  # gensim trains reproducibly with one thread only
DEFAULT_CHUNK_IMAGES = 1000
# The options that only training reads: refused beside a given model.
TRAINING_OPTIONS = ("epochs", "min_count", "train_workers", "train_ids")

TokenizedPool = list[list[list[str]]]  # per image, per caption, its tokens


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Where the pool is read from, the model, and how vectors are inferred and written.

    The model is `model` (a gensim 4 file), else `jhlau_model` (a directory of jhlau's), else one
    trained on the pool; the training options (None: their default) apply to that last case only.
    """

    data_dir: str | None = None
    base_url: str | None = None
    output: str = DEFAULT_SIDECAR
    model: str | None = None
    jhlau_model: str | None = None
    preset: str = DEFAULT_PRESET  # a name of doc2vec_presets.PRESETS: the defaults of the settings below
    epochs: int | None = None
    min_count: int | None = None
    train_workers: int | None = None  # only 1 trains reproducibly
    train_ids: str | None = None  # a file of COCO image ids to train on; vectors are still inferred for all
    seed: int = 0
    infer_epochs: int | None = None
    infer_alpha: float | None = None
    per_caption: bool = False
    workers: int = dataclasses.field(default_factory=default_workers)
    chunk_images: int = DEFAULT_CHUNK_IMAGES

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise CocoError(f"preset={self.preset!r} is not a Doc2Vec preset; choose one of {sorted(PRESETS)}.")
        if self.model and self.jhlau_model:
            raise CocoError("model= and jhlau_model= name two models; pass one of them.")
        given = [f"{name}={getattr(self, name)}" for name in TRAINING_OPTIONS if getattr(self, name) is not None]
        if given and (self.model or self.jhlau_model):
            raise CocoError(
                f"{', '.join(given)} apply only to training a model, not to a given one (model= or jhlau_model=); "
                "leave them out."
            )
        counts = ["epochs", "min_count", "train_workers", "infer_epochs", "workers", "chunk_images"]
        below_one = [f"{name}={value}" for name in counts if (value := getattr(self, name)) is not None and value < 1]
        if below_one:
            raise CocoError(f"{', '.join(below_one)}: each must be at least 1.")
        if self.infer_alpha is not None and not self.infer_alpha > 0:
            raise CocoError(f"infer_alpha={self.infer_alpha}: the learning rate must be above 0.")
        if not 0 <= self.seed <= MAX_SEED:
            raise CocoError(f"seed={self.seed}: must be in 0..{MAX_SEED} (it becomes the workers' PYTHONHASHSEED).")

    @property
    def recipe(self) -> Doc2VecPreset:
        return PRESETS[self.preset]

    def training_settings(self) -> TrainingSettings:
        """The preset's training, with the options given instead of its values."""
        return TrainingSettings(
            epochs=self.epochs or self.recipe.epochs,
            min_count=self.min_count or self.recipe.min_count,
            seed=self.seed,
            workers=self.train_workers or DEFAULT_TRAIN_WORKERS,
            preset=self.recipe,
        )

    def inference_settings(self) -> InferenceSettings:
        return InferenceSettings(
            self.infer_epochs or self.recipe.infer_epochs,
            self.infer_alpha or self.recipe.infer_alpha,
            INFER_MIN_ALPHA,
            self.seed,
        )


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
            f"{path}: {number_of(len(unknown), 'image id')} {'is' if len(unknown) == 1 else 'are'} not in the pool "
            f"(e.g. {unknown[:5]}); it lists images of other data."
        )
    if not wanted:
        raise CocoError(f"{path}: lists no image id; training needs at least one image.")
    return sorted(position_of[image_id] for image_id in wanted)


def obtain_model(options: BuildOptions, records: Sequence[ImageRecord], captions: TokenizedPool) -> ModelInfo:
    if options.model:
        return use_model_file(options.model)
    beside = model_path_beside(options.output)
    if options.jhlau_model:
        return use_jhlau_model(options.jhlau_model, beside)
    train_ids = options.train_ids
    positions = read_train_ids(train_ids, records) if train_ids else range(len(records))
    documents = [join_captions(captions[position]) for position in positions]
    train_ids_provenance = {"path": os.path.abspath(train_ids), "sha256": file_sha256(train_ids)} if train_ids else None
    return use_trained_model(documents, options.training_settings(), train_ids_provenance, beside)


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
    if not tasks:
        return
    with inference_processes(model.path, settings, min(workers, len(tasks))) as processes:
        for chunk_id, vectors in infer_tasks(processes, tasks, "inference", done_documents, total_documents):
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
    options: BuildOptions, records: Sequence[ImageRecord], model: ModelInfo, settings: InferenceSettings
) -> dict:
    return {
        "tool": "coco-unified doc2vec",
        # The sidecar is published with its provenance: no password or token of the URL goes in.
        "source": coco_unified.redact_url(options.data_dir or options.base_url or coco_unified.OFFICIAL_BASE_URL),
        "images": len(records),
        "captions": sum(len(record.captions) for record in records),
        "tokenizer": TOKENIZER,
        "model": model.provenance,
        "inference": {
            **dataclasses.asdict(settings),
            "per_caption": options.per_caption,
            "determinism": "workers run with PYTHONHASHSEED=seed; model.random.seed(seed) before each document",
        },
        "seed": options.seed,
        "versions": library_versions(),
    }


def write_checked_sidecar(
    path: str,
    image_ids: Sequence[int],
    vectors: np.ndarray,
    caption_vectors: list[np.ndarray] | None,
    provenance: dict,
) -> None:
    """Write the sidecar aside, read it back as the loader will, then move it in place.

    So a failed or interrupted write never leaves a broken sidecar where the loader looks.
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


def build_sidecar(options: BuildOptions) -> str:
    """Infer a vector for every image of the pool and write the sidecar; returns its path."""
    os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
    records = read_pool(options.data_dir, options.base_url)
    captions = tokenize_captions([record.captions for record in records], options.workers)
    model = obtain_model(options, records, captions)
    settings = options.inference_settings()
    image_ids = [record.image_id for record in records]
    chunks = plan_chunks(captions, options.chunk_images, options.per_caption)
    store = ChunkStore(options.output + ".parts", run_fingerprint(image_ids, chunks, model, settings))
    infer_chunks(store, chunks, model, settings, options.workers)
    vectors, caption_vectors = assemble(store, chunks, captions, options.per_caption)
    write_checked_sidecar(
        options.output, image_ids, vectors, caption_vectors, describe_run(options, records, model, settings)
    )
    store.remove()
    logger.info("wrote %s vectors to %s", f"{len(image_ids):,}", options.output)
    return options.output
