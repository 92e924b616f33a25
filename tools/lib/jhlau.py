"""Convert jhlau's pretrained DBOW Doc2Vec models into gensim 4 models.

The published COCO text features were inferred with jhlau/doc2vec's ``enwiki_dbow`` and
``apnews_dbow`` models. Each is a directory written by gensim 0.12's ``SaveLoad.save`` under
Python 2 (jhlau's fork of gensim), which gensim 4 cannot load:

- ``doc2vec.bin``: a protocol-2 pickle of a ``gensim.models.doc2vec.Doc2Vec`` with its big arrays
  taken out. The model keeps its vocabulary on itself: ``vocab`` maps each word to a
  ``gensim.models.word2vec.Vocab`` (``count``, ``index``, ``sample_int``) and ``index2word`` lists
  the words in matrix-row order. Hyper-parameters are plain attributes (``sg`` = 1 for DBOW,
  ``vector_size``, ``layer1_size``, ``window``, ``negative``, ``hs``, ``sample``, ``min_count``,
  ``alpha``, ``min_alpha``, ``iter``, ``seed``, ``dbow_words``, ``dm_concat``, ...). Its
  ``__numpys`` attribute names the arrays stored beside it, ``__ignoreds`` those dropped.
- ``doc2vec.bin.syn0.npy``: the word vectors, one float32 row per word of ``index2word``.
- ``doc2vec.bin.syn1neg.npy``: the negative-sampling output weights, same shape.

Route: the pickle is read by an unpickler that resolves only the globals such a pickle names
(gensim classes become inert stand-ins, numpy arrays are rebuilt by numpy) and refuses any other,
so nothing in the file can run code. A gensim 4 ``Doc2Vec`` is then built from the vocabulary
frequencies in the same word order (``sorted_vocab=0``) and the two arrays are copied in. Only
DBOW models with negative sampling (``dm=0``, ``hs=0``, ``negative>0``) are supported: that is
how both released models were trained. The doc-vectors of the training documents are not needed
for ``infer_vector`` and stay empty. Words pickled as Python 2 ``str`` (UTF-8 bytes) or
``unicode`` both become ``str``. The converted model infers like the fork up to gensim 4's own
random draws: its vectors will not bit-match the Python 2 fork's.

On the command line, ``coco-unified convert-jhlau enwiki_dbow/ build/enwiki_dbow.gensim4``; in
Python ``convert_jhlau_model("enwiki_dbow")`` returns the ``Doc2Vec``.
The fork's ``infer_vector`` defaults differ from gensim 4's: see ``FORK_INFER_DEFAULTS``.
"""

import functools
import hashlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gensim.models import Doc2Vec

from coco_unified import CocoError
from tools.lib.progress import Progress

logger = logging.getLogger(__name__)

PICKLE_NAME = "doc2vec.bin"
SYN0_NAME = "doc2vec.bin.syn0.npy"
SYN1NEG_NAME = "doc2vec.bin.syn1neg.npy"
MODEL_FILES = (PICKLE_NAME, SYN0_NAME, SYN1NEG_NAME)

# The fork's infer_vector(doc_words, alpha=0.1, min_alpha=0.0001, steps=5), in gensim 4 terms.
# gensim 4 falls back to the model's training alpha and epochs instead, so callers who want the
# fork's behaviour pass these explicitly.
FORK_INFER_DEFAULTS = {"alpha": 0.1, "min_alpha": 0.0001, "epochs": 5}

# The padding word that gensim (0.12 and 4 alike) appends to the vocabulary when dm_concat is set.
NULL_WORD = "\0"

CONVERSION_EVENT = "converted_from_jhlau_fork"

# Fork attribute -> (gensim 4 keyword, type). DBOW inference reads none of the DM-only settings
# (dm_mean, dm_tag_count), so they are not carried.
_CARRIED_PARAMETERS = {
    "vector_size": ("vector_size", int),
    "window": ("window", int),
    "negative": ("negative", int),
    "hs": ("hs", int),
    "sample": ("sample", float),
    "min_count": ("min_count", int),
    "alpha": ("alpha", float),
    "min_alpha": ("min_alpha", float),
    "iter": ("epochs", int),
    "seed": ("seed", int),
    "dbow_words": ("dbow_words", int),
    "dm_concat": ("dm_concat", int),
}

# Globals whose real objects are safe to call: numpy rebuilding arrays and scalars.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
# Globals a fork model names but the conversion never needs: the hash function (hashfxn), the
# random generator's constructor (random) and the factory of raw_vocab's defaultdict.
_INERT_GLOBALS = {
    ("__builtin__", "hash"),
    ("__builtin__", "int"),
    ("numpy.random", "__RandomState_ctor"),
}

_ROWS_PER_CHUNK = 65_536
_HASH_CHUNK_BYTES = 1 << 20


class ConversionError(CocoError):
    """A model directory that cannot be converted; the message names the file and the fix."""


class _PickledObject:
    """Inert stand-in for an object whose class the pickle names: it keeps the state, runs nothing."""

    qualified_name = "?"

    def __new__(cls, *args):
        # NEWOBJ and REDUCE both end here; neither the arguments nor any code of the real class
        # matter to the conversion.
        instance = super().__new__(cls)
        instance.attributes = {}
        return instance

    def __setstate__(self, state):
        # A non-dict state (the random generator's tuple) holds nothing the conversion reads.
        if isinstance(state, dict):
            self.attributes = {_attribute_name(key): value for key, value in state.items()}


def _attribute_name(key):
    # Python 2 names attributes with byte strings, which encoding="bytes" leaves as bytes.
    return key.decode("ascii") if isinstance(key, bytes) else key


@functools.cache
def _stand_in_class(qualified_name):
    return type(qualified_name, (_PickledObject,), {"qualified_name": qualified_name})


def _plain_dict(*_default_factory):
    # raw_vocab is a defaultdict(int); a plain dict takes its items without calling anything.
    return {}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a gensim 0.12 Doc2Vec pickle names and refuses every other."""

    def __init__(self, file, path):
        # encoding="bytes" keeps Python 2's two string types apart: `str` arrives as bytes and
        # `unicode` as str. With "latin1" both would become str and a word could not be decoded
        # right (upstream 0.12 corpus readers yield unicode words; other corpora give UTF-8 str).
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("collections", "defaultdict"):
            return _plain_dict
        if module.startswith("gensim.models.") or (module, name) in _INERT_GLOBALS:
            return _stand_in_class(f"{module}.{name}")
        raise ConversionError(
            f"{self.path}: the pickle references {module}.{name}, which a gensim 0.12 Doc2Vec "
            "model never does; refusing to load it (a pickle can run code). Use the doc2vec.bin "
            "from jhlau's enwiki_dbow.tgz or apnews_dbow.tgz."
        )


@dataclass(frozen=True)
class ForkModel:
    """What the conversion takes from a fork model's pickle."""

    words: list  # index2word as str, in matrix-row order
    counts: list  # corpus frequency of each word
    params: dict  # gensim 4 Doc2Vec keyword arguments

    @property
    def vector_size(self):
        return self.params["vector_size"]


def check_model_files(model_dir):
    """Fail early, and with the fix, when a file of the model directory is missing."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConversionError(
            f"{model_dir} is not a directory; pass the directory extracted from jhlau's "
            "enwiki_dbow.tgz or apnews_dbow.tgz (it holds doc2vec.bin and two .npy files)."
        )
    for name in MODEL_FILES:
        if not (model_dir / name).is_file():
            raise ConversionError(
                f"{model_dir / name} is missing; doc2vec.bin only works with its companion files "
                f"{SYN0_NAME} and {SYN1NEG_NAME} beside it. Re-extract the whole model archive "
                "(enwiki_dbow.tgz or apnews_dbow.tgz) into one directory."
            )


def read_fork_pickle(path):
    """Unpickle doc2vec.bin into stand-ins, refusing any global outside the fork's layout."""
    path = Path(path)
    size = path.stat().st_size
    with (
        open(path, "rb") as raw,
        Progress.wrapattr(raw, "read", total=size, desc=path.name, unit="B", unit_scale=True, disable=None) as stream,
    ):
        try:
            return _RestrictedUnpickler(stream, path).load()
        except ConversionError:
            raise
        # Damaged pickles fail in many ways; every one means the file must be fetched again.
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise ConversionError(
                f"{path} is not a complete Python pickle ({type(error).__name__}: {error}). "
                "Re-extract it from the model archive; an interrupted download or extraction "
                "leaves it truncated."
            ) from error


def describe_fork_model(pickled, path):
    """Check that `pickled` is a supported fork Doc2Vec and take out its vocabulary and settings."""
    expected = "gensim.models.doc2vec.Doc2Vec"
    found = pickled.qualified_name if isinstance(pickled, _PickledObject) else type(pickled).__name__
    if found != expected:
        raise ConversionError(
            f"{path} holds a {found}, not the fork's {expected}; pass the directory of jhlau's "
            "enwiki_dbow or apnews_dbow model."
        )
    attributes = pickled.attributes
    params = _carried_parameters(attributes, path)
    _check_supported(attributes, params, path)
    words, counts = _vocabulary(attributes, path)
    return ForkModel(words=words, counts=counts, params=params)


def _required(attributes, name, path):
    if name not in attributes:
        raise ConversionError(
            f"{path}: the pickled Doc2Vec has no '{name}' attribute, so it was not saved by "
            "gensim 0.12 (jhlau's fork); use the doc2vec.bin of enwiki_dbow or apnews_dbow."
        )
    return attributes[name]


def _number(attributes, name, kind, path):
    value = _required(attributes, name, path)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConversionError(
            f"{path}: the pickled Doc2Vec's '{name}' is {value!r}, not a number; the file is not a usable fork model."
        ) from None


def _carried_parameters(attributes, path):
    return {
        gensim_name: _number(attributes, fork_name, kind, path)
        for fork_name, (gensim_name, kind) in _CARRIED_PARAMETERS.items()
    }


def _check_supported(attributes, params, path):
    dm = 1 - _number(attributes, "sg", int, path)
    layer1_size = _number(attributes, "layer1_size", int, path)
    if dm != 0 or params["hs"] != 0 or params["negative"] <= 0:
        raise ConversionError(
            f"{path}: a model with dm={dm}, hs={params['hs']}, negative={params['negative']}. "
            "Only DBOW models with negative sampling (dm=0, hs=0, negative>0) are supported, "
            "which is how jhlau's enwiki_dbow and apnews_dbow were trained."
        )
    if layer1_size != params["vector_size"]:
        raise ConversionError(
            f"{path}: layer1_size {layer1_size} differs from vector_size "
            f"{params['vector_size']}, which a DBOW model never has; the file is damaged."
        )


def _vocabulary(attributes, path):
    index2word = _required(attributes, "index2word", path)
    vocab = _required(attributes, "vocab", path)
    if len(index2word) != len(vocab):
        raise ConversionError(
            f"{path}: index2word lists {len(index2word)} words but vocab holds {len(vocab)}; the file is damaged."
        )
    words, counts = [], []
    for index, raw_word in enumerate(index2word):
        entry = vocab.get(raw_word)
        if not isinstance(entry, _PickledObject) or entry.attributes.get("index") != index:
            raise ConversionError(
                f"{path}: word #{index} ({raw_word!r}) of index2word has no matching Vocab entry "
                "in vocab; the file is damaged."
            )
        words.append(_decode_word(raw_word, index, path))
        counts.append(int(entry.attributes["count"]))
    if len(set(words)) != len(words):
        raise ConversionError(
            f"{path}: the vocabulary holds the same word twice once decoded (as a UTF-8 byte "
            "string and as unicode); gensim 4 cannot keep both."
        )
    return words, counts


def _decode_word(raw_word, index, path):
    # A Python 2 `str` word holds the UTF-8 bytes of the token; a `unicode` word is already text.
    if isinstance(raw_word, str):
        return raw_word
    try:
        return raw_word.decode("utf-8")
    except (AttributeError, UnicodeDecodeError):
        raise ConversionError(
            f"{path}: vocabulary word #{index} ({raw_word!r}) is not UTF-8 text; the converter "
            "expects the fork's words to be UTF-8 byte strings or unicode."
        ) from None


def open_fork_array(path, expected_shape):
    """Memory-map one of the .npy files and check it against the pickled vocabulary."""
    try:
        array = np.load(path, mmap_mode="r")
    except ValueError as error:
        raise ConversionError(
            f"{path} is not a numpy .npy array file ({error}); re-extract the model archive."
        ) from error
    if array.dtype != np.float32 or array.shape != expected_shape:
        raise ConversionError(
            f"{path} holds a {array.dtype} array of shape {array.shape}, but doc2vec.bin "
            f"describes float32 {expected_shape} (one row per vocabulary word, vector_size "
            "columns). The .npy files and doc2vec.bin must come from the same model archive."
        )
    return array


def copy_finite_rows(source, target, path, words):
    """Copy `source` into `target` chunk by chunk, refusing NaN or infinite values."""
    with Progress(total=len(source), desc=Path(path).name, unit="row", unit_scale=True, disable=None) as progress:
        for start in range(0, len(source), _ROWS_PER_CHUNK):
            chunk = source[start : start + _ROWS_PER_CHUNK]
            finite_rows = np.isfinite(chunk).all(axis=1)
            if not finite_rows.all():
                row = start + int(np.flatnonzero(~finite_rows)[0])
                raise ConversionError(
                    f"{path}: row {row} (the vector of {words[row]!r}) holds NaN or infinity; "
                    "the file is damaged. Re-extract the model archive."
                )
            target[start : start + len(chunk)] = chunk
            progress.update(len(chunk))


def build_gensim_model(fork):
    """A gensim 4 DBOW Doc2Vec whose vocabulary matches the fork's word for word, in order."""
    model = Doc2Vec(dm=0, sorted_vocab=0, **fork.params)
    frequencies = dict(zip(fork.words, fork.counts))
    if fork.params["dm_concat"]:
        # gensim 4 appends the padding word itself, last, as the fork did.
        frequencies.pop(NULL_WORD, None)
    model.build_vocab_from_freq(frequencies)
    if model.wv.index_to_key != fork.words:
        raise ConversionError(
            "gensim 4 did not reproduce the fork's vocabulary order (a word below min_count="
            f"{fork.params['min_count']}, or a padding word '\\0' that is not last?); "
            "the model cannot be converted faithfully."
        )
    return model


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_HASH_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_jhlau_model(model_dir):
    """Read jhlau's fork model in `model_dir` and return the equivalent gensim 4 Doc2Vec."""
    model_dir = Path(model_dir)
    check_model_files(model_dir)
    pickle_path = model_dir / PICKLE_NAME
    logger.info("reading %s", pickle_path)
    fork = describe_fork_model(read_fork_pickle(pickle_path), pickle_path)
    expected_shape = (len(fork.words), fork.vector_size)
    syn0 = open_fork_array(model_dir / SYN0_NAME, expected_shape)
    syn1neg = open_fork_array(model_dir / SYN1NEG_NAME, expected_shape)

    logger.info("building a gensim 4 vocabulary of %d words", len(fork.words))
    model = build_gensim_model(fork)
    copy_finite_rows(syn0, model.wv.vectors, model_dir / SYN0_NAME, fork.words)
    copy_finite_rows(syn1neg, model.syn1neg, model_dir / SYN1NEG_NAME, fork.words)
    model.add_lifecycle_event(CONVERSION_EVENT, source=str(model_dir.resolve()), pickle_sha256=file_sha256(pickle_path))
    return model


def conversion_record(model):
    """The provenance event that convert_jhlau_model left on `model`."""
    return next(event for event in reversed(model.lifecycle_events) if event.get("event") == CONVERSION_EVENT)


def format_summary(model, output_path):
    record = conversion_record(model)
    params = (
        f"dm={int(model.dm)} dbow_words={model.dbow_words} window={model.window} "
        f"negative={model.negative} hs={model.hs} sample={model.sample:g} "
        f"min_count={model.min_count} epochs={model.epochs} alpha={model.alpha:g} "
        f"min_alpha={model.min_alpha:g}"
    )
    padding = " (the last, '\\0', is the dm_concat padding word)" if model.dm_concat else ""
    fork_infer = " ".join(f"{name}={value:g}" for name, value in FORK_INFER_DEFAULTS.items())
    return "\n".join(
        [
            f"converted {record['source']} -> {output_path}",
            f"  doc2vec.bin sha256  {record['pickle_sha256']}",
            f"  vocabulary          {len(model.wv):,} words{padding}",
            f"  vector size         {model.vector_size}",
            f"  parameters          {params}",
            f"  fork infer defaults {fork_infer} (gensim 4 uses the model's alpha/epochs unless told)",
        ]
    )


def convert_and_save(model_dir, output_path):
    """Convert the fork model in `model_dir` and save it at `output_path` (folders made as needed)."""
    model = convert_jhlau_model(model_dir)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    model.save(str(output_path))
    return model
