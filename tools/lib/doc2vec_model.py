"""The Doc2Vec model behind the sidecar: trained on the pool, a gensim 4 file, or jhlau's converted.

Whatever its origin, the model ends up as a gensim 4 file that the inference processes load (the
provenance's `path`), and is described by a `ModelInfo` for the sidecar's provenance. Trained and converted models are
saved beside the output and reused by a later run (a resumed one) when the same inputs made them.
"""

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence

import gensim
import numpy as np
from gensim.models.callbacks import CallbackAny2Vec
from gensim.models.doc2vec import Doc2Vec, TaggedDocument

from coco_unified import DOC2VEC_DIM, CocoError
from tools.lib import jhlau as jhlau_converter
from tools.lib.doc2vec_presets import DEFAULT_PRESET, PRESETS, Doc2VecPreset
from tools.lib.progress import Progress
from tools.lib.text import documents_sha256

logger = logging.getLogger(__name__)

# The lifecycle event a saved model carries to say which inputs made it.
_MADE_FROM_EVENT = "coco_unified_made_from"
_HASH_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    epochs: int
    min_count: int
    seed: int
    workers: int
    preset: Doc2VecPreset = PRESETS[DEFAULT_PRESET]  # the rest of the recipe (window, sample, ...)

    def model_parameters(self) -> dict:
        """gensim `Doc2Vec(...)` keyword arguments: the preset's, with these epochs and min_count."""
        return {**self.preset.model_parameters(), "epochs": self.epochs, "min_count": self.min_count}

    def describe(self, num_documents: int, train_ids: dict | None) -> dict:
        return {
            **self.model_parameters(),
            "seed": self.seed,
            "workers": self.workers,
            "reproducible": self.workers == 1,
            "documents": num_documents,
            "train_ids": train_ids,
        }


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A gensim 4 model file ready for inference, and the provenance of the model."""

    path: str
    provenance: dict

    @property
    def weights_sha256(self) -> str:
        return self.provenance["weights_sha256"]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: Doc2Vec) -> str:
    """A digest of what inference reads: vocabulary, word statistics and weights.

    Unlike the file's sha256 it does not change with the save time recorded in the file, so two
    trainings that produced the same model have the same digest.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([model.dm, model.vector_size, model.ns_exponent, model.wv.index_to_key]).encode("utf-8"))
    # Negatives are drawn by word count and frequent words skipped by sample_int.
    arrays = [
        model.wv.expandos["count"],
        model.wv.expandos["sample_int"],
        model.wv.vectors,
        getattr(model, "syn1neg", None),
        getattr(model, "syn1", None),
    ]
    for array in arrays:
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_model(model, where: str) -> None:
    """A model the sidecar can use: a Doc2Vec of the pool's dimension with a vocabulary."""
    if not isinstance(model, Doc2Vec):
        raise CocoError(
            f"{where}: holds a {type(model).__name__}, not a Doc2Vec model; pass a model saved with gensim 4's Doc2Vec.save."
        )
    if model.vector_size != DOC2VEC_DIM:
        raise CocoError(
            f"{where}: the model has vector size {model.vector_size}, but the dataset's doc2vec column holds "
            f"{DOC2VEC_DIM}-d vectors; use a {DOC2VEC_DIM}-d model (or train one: leave model= out)."
        )
    if len(model.wv) == 0:
        raise CocoError(
            f"{where}: the model has an empty vocabulary, so every document would get a random vector; use a trained model."
        )


def load_model(path: str, mmap: str | None = None) -> Doc2Vec:
    """Load and check a gensim 4 Doc2Vec file."""
    if not os.path.isfile(path):
        raise CocoError(f"{path}: model file not found; pass the file written by gensim 4's Doc2Vec.save.")
    try:
        model = Doc2Vec.load(path, mmap=mmap)
    # A damaged or foreign pickle fails in many ways; each means the same to the user.
    except Exception as error:  # noqa: BLE001
        raise CocoError(
            f"{path}: not a readable gensim 4 Doc2Vec model ({type(error).__name__}: {error}). Pass a file saved "
            "with Doc2Vec.save (its .npy companions beside it); for jhlau's models pass jhlau_model= instead."
        ) from None
    check_model(model, path)
    return model


def describe_model(model: Doc2Vec, source: dict) -> dict:
    parameters = {
        name: getattr(model, name)
        for name in ("dm", "dbow_words", "vector_size", "window", "sample", "negative", "hs", "min_count", "epochs")
    }
    return {
        **source,
        "vocabulary": len(model.wv),
        "parameters": {name: _plain(value) for name, value in parameters.items()},
        "weights_sha256": weights_sha256(model),
    }


def _plain(value):
    # gensim keeps some settings as numpy scalars, which JSON cannot hold.
    return value.item() if isinstance(value, np.generic) else value


def existing_model(path: str, made_from: str) -> Doc2Vec | None:
    """The model saved at `path` by an earlier run, if the same inputs (`made_from`) made it."""
    if not os.path.isfile(path):
        return None
    try:
        model = Doc2Vec.load(path, mmap="r")
    except Exception as error:  # noqa: BLE001 - an unreadable leftover is simply made again
        logger.warning("%s: cannot reuse it (%s); making the model again", path, error)
        return None
    recorded = [
        event.get("fingerprint") for event in model.lifecycle_events or [] if event.get("event") == _MADE_FROM_EVENT
    ]
    return model if recorded and recorded[-1] == made_from else None


def save_model(model: Doc2Vec, path: str, made_from: str) -> None:
    model.add_lifecycle_event(_MADE_FROM_EVENT, fingerprint=made_from)
    model.save(path)


class _EpochProgress(CallbackAny2Vec):
    """A progress bar over training epochs (gensim reports progress only in its log)."""

    def __init__(self, epochs: int):
        self._bar = Progress(total=epochs, desc="training", unit="epoch")

    def on_epoch_end(self, model):
        self._bar.update()

    def on_train_end(self, model):
        self._bar.close()


def train_model(documents: Sequence[list[str]], settings: TrainingSettings) -> Doc2Vec:
    """Doc2Vec on `documents` (tagged by position) with the settings' preset.

    With one worker thread the result depends only on the documents and the seed: gensim 4
    seeds its initial vectors and `model.random` from `seed` and, unlike inference, hashes no
    string while training (checked: equal models under different PYTHONHASHSEED values).
    """
    corpus = [TaggedDocument(words, [tag]) for tag, words in enumerate(documents)]
    model = Doc2Vec(**settings.model_parameters(), seed=settings.seed, workers=settings.workers)
    model.build_vocab(corpus)
    if len(model.wv) == 0:
        raise CocoError(
            f"No word occurs {settings.min_count} times in the {len(corpus)} training documents; lower min_count or train on more images."
        )
    model.train(
        corpus, total_examples=model.corpus_count, epochs=model.epochs, callbacks=[_EpochProgress(model.epochs)]
    )
    return model


def jhlau_files_sha256(model_dir: str) -> str:
    """One digest of the three files of a jhlau model directory."""
    jhlau_converter.check_model_files(model_dir)
    return hashlib.sha256(
        "".join(file_sha256(os.path.join(model_dir, name)) for name in jhlau_converter.MODEL_FILES).encode()
    ).hexdigest()


def convert_jhlau(model_dir: str) -> Doc2Vec:
    model = jhlau_converter.convert_jhlau_model(model_dir)
    check_model(model, model_dir)
    return model


# ----------------------------------------------------------------------------- the three origins


def model_path_beside(output: str) -> str:
    """Where a trained or converted model is saved: next to the sidecar, named after it."""
    stem = output[: -len(".parquet")] if output.endswith(".parquet") else output
    return stem + ".model"


def use_model_file(path: str) -> ModelInfo:
    model = load_model(path, mmap="r")
    source = {"source": "gensim4 file", "path": os.path.abspath(path), "sha256": file_sha256(path)}
    return ModelInfo(path, describe_model(model, source))


def use_jhlau_model(model_dir: str, converted_path: str) -> ModelInfo:
    """jhlau's model converted once into a gensim 4 file that inference processes can load."""
    source_sha256 = jhlau_files_sha256(model_dir)
    model = existing_model(converted_path, source_sha256)
    if model is None:
        model = convert_jhlau(model_dir)
        save_model(model, converted_path, source_sha256)
    else:
        logger.info("%s: reusing the model converted from %s by an earlier run", converted_path, model_dir)
    source = {
        "source": "jhlau pretrained (converted by tools/lib/jhlau.py)",
        "jhlau_dir": os.path.abspath(model_dir),
        "sha256": source_sha256,  # of the sha256 digests of doc2vec.bin and its two .npy files
        "path": os.path.abspath(converted_path),
    }
    return ModelInfo(converted_path, describe_model(model, source))


def use_trained_model(
    documents: Sequence[list[str]], settings: TrainingSettings, train_ids: dict | None, saved_path: str
) -> ModelInfo:
    """A model trained on `documents`, or the one an earlier run trained on the same inputs.

    `train_ids` describes the --train-ids file for the provenance (None: the whole pool).
    """
    made_from = hashlib.sha256(
        json.dumps([documents_sha256(documents), dataclasses.asdict(settings), gensim.__version__]).encode()
    ).hexdigest()
    model = existing_model(saved_path, made_from)
    if model is None:
        model = train_model(documents, settings)
        save_model(model, saved_path, made_from)
    else:
        logger.info("%s: reusing the model an earlier run trained on the same documents and settings", saved_path)
    source = {
        "source": "trained on this pool",
        "path": os.path.abspath(saved_path),
        "sha256": file_sha256(saved_path),
        "training": settings.describe(len(documents), train_ids),
    }
    return ModelInfo(saved_path, describe_model(model, source))
