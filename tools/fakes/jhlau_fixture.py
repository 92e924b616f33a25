"""Writes small model directories in the on-disk format of jhlau's pretrained Doc2Vec models.

jhlau's ``enwiki_dbow`` and ``apnews_dbow`` were saved under Python 2 by his fork of gensim 0.12,
whose ``SaveLoad.save`` takes every numpy attribute of at least ``sep_limit`` (10 * 1024**2)
elements out of the object, stores it as ``<file>.<attribute>.npy`` and pickles the rest with
protocol 2. What it leaves in the pickled object's ``__dict__``, as written here:

- the model: a ``gensim.models.doc2vec.Doc2Vec`` holding the Word2Vec attributes of that era
  (``vocab``, ``index2word``, ``sg``, ``vector_size``, ``layer1_size``, ``alpha``,
  ``min_alpha_yet_reached``, ``window``, ``max_vocab_size``, ``seed``, ``random``, ``min_count``,
  ``sample``, ``workers``, ``min_alpha``, ``hs``, ``negative``, ``cbow_mean``, ``hashfxn``,
  ``iter``, ``null_word``, ``train_count``, ``total_train_time``, ``sorted_vocab``,
  ``corpus_count``, ``raw_vocab``, ``syn0_lockf``) plus Doc2Vec's ``dbow_words``, ``dm_concat``,
  ``dm_tag_count``, ``docvecs`` and ``comment``; no ``batch_words`` (gensim 3's loader fails on
  the released enwiki model for want of it: jhlau/doc2vec#19);
- ``vocab``: word -> ``gensim.models.word2vec.Vocab`` with ``count``, ``index``, ``sample_int``;
- ``docvecs``: a ``gensim.models.doc2vec.DocvecsArray`` (``doctags``, ``max_rawint``,
  ``offset2doctag``, ``count``, ``mapfile_path``, ``doctag_syn0``, ``doctag_syn0_lockf``);
- on every saved object the bookkeeping lists ``__numpys`` (arrays stored beside the pickle:
  ``syn0``, ``syn1neg``), ``__scipys``, ``__ignoreds`` (``syn0norm``, ``cum_table``: dropped
  by ``Word2Vec.save``) and ``__recursive_saveloads`` (``docvecs``).

Sources: gensim 3.x ``gensim/models/deprecated/old_saveload.py`` (the old ``_save_specials``),
``gensim/models/deprecated/doc2vec.py`` and ``word2vec.py`` (``load_old_doc2vec`` and the
0.12-era attribute names), 0.12-era ``word2vec.py``/``doc2vec.py`` forks (``Vocab``,
``Word2Vec.__init__``, ``DocvecsArray``), and numpy's own Python 2 pickles
(``numpy/lib/tests/data/py2-objarr.npy``) for how an array was written.

Python 2 cannot run here, so ``_Python2Pickler`` writes the bytes Python 2 would: its ``str``
(given here as ``bytes``) as ``SHORT_BINSTRING``/``BINSTRING``, its ``unicode`` (given as
``str``) as ``BINUNICODE``, numpy arrays through ``numpy.core.multiarray._reconstruct``, and only
the globals such a pickle names. Attribute names are Python 2 ``str``, hence bytes.
"""

import copyreg
import pickle
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

from tools.lib.jhlau import PICKLE_NAME, SYN0_NAME, SYN1NEG_NAME

# The fork's dm_concat padding word, a Python 2 str literal.
PYTHON2_NULL_WORD = b"\0"


class _ForkObject:
    """An object of one of the fork's classes; pickles as NEWOBJ plus its attribute dict."""

    def __init__(self, **attributes):
        self.attributes = attributes

    def __reduce_ex__(self, protocol):
        state = {name.encode("ascii"): value for name, value in self.attributes.items()}
        return copyreg.__newobj__, (type(self),), state


class ForkDoc2Vec(_ForkObject):
    __module__ = "gensim.models.doc2vec"
    __qualname__ = "Doc2Vec"


class ForkDocvecsArray(_ForkObject):
    __module__ = "gensim.models.doc2vec"
    __qualname__ = "DocvecsArray"


class ForkVocab(_ForkObject):
    __module__ = "gensim.models.word2vec"
    __qualname__ = "Vocab"


def _random_state_ctor():
    """Stands for Python 2 numpy's numpy.random.__RandomState_ctor; only ever pickled."""
    raise NotImplementedError


class _Python2RandomState:
    """A numpy RandomState as Python 2 numpy pickled it: the constructor, then get_state()."""

    def __init__(self, seed):
        name, keys, position, has_gauss, cached_gaussian = np.random.RandomState(seed).get_state()
        self.state = (name.encode("ascii"), keys, position, has_gauss, cached_gaussian)

    def __reduce_ex__(self, protocol):
        return _random_state_ctor, (), self.state


_RECONSTRUCT = np.zeros(1).__reduce__()[0]

# Every global other than the fork's classes that a fork model's pickle names.
_PYTHON2_GLOBAL_NAMES = {
    id(_RECONSTRUCT): ("numpy.core.multiarray", "_reconstruct"),
    id(np.ndarray): ("numpy", "ndarray"),
    id(np.dtype): ("numpy", "dtype"),
    id(_random_state_ctor): ("numpy.random", "__RandomState_ctor"),
    id(hash): ("__builtin__", "hash"),
    id(int): ("__builtin__", "int"),
    id(defaultdict): ("collections", "defaultdict"),
}


_StockPickler = pickle._Pickler


class _Python2Pickler(_StockPickler):
    """The pure-Python pickler, made to write what Python 2's pickle writes at protocol 2."""

    def _save_python2_str(self, value):
        if len(value) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(value)]) + value)
        else:
            self.write(pickle.BINSTRING + len(value).to_bytes(4, "little") + value)
        self.memoize(value)

    def _save_python2_int(self, value):
        # Python 2 writes an int beyond 32 bits as text; only its separate `long` type used LONG1.
        if -(2**31) <= value < 2**31:
            self.save_long(value)
        else:
            self.write(pickle.INT + str(value).encode("ascii") + b"\n")

    def save_global(self, obj, name=None):
        if isinstance(obj, type) and issubclass(obj, _ForkObject):
            module, name = obj.__module__, obj.__qualname__
        elif id(obj) in _PYTHON2_GLOBAL_NAMES:
            module, name = _PYTHON2_GLOBAL_NAMES[id(obj)]
        else:
            raise pickle.PicklingError(f"a fork model's pickle never names {obj!r}")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)

    # Spelled out rather than copied from pickle._Pickler.dispatch, which other libraries (dill,
    # imported with `datasets`) extend in place: these are the types a fork model's pickle holds.
    dispatch = {
        type(None): _StockPickler.save_none,
        bool: _StockPickler.save_bool,
        float: _StockPickler.save_float,
        str: _StockPickler.save_str,
        tuple: _StockPickler.save_tuple,
        list: _StockPickler.save_list,
        dict: _StockPickler.save_dict,
        type: _StockPickler.save_type,
        types.FunctionType: save_global,
        bytes: _save_python2_str,
        int: _save_python2_int,
    }

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            data = np.ascontiguousarray(obj).tobytes()
            return _RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, obj.shape, obj.dtype, False, data)
        if isinstance(obj, np.dtype):
            byte_order, type_code = obj.str[0].encode("ascii"), obj.str[1:].encode("ascii")
            return np.dtype, (type_code, 0, 1), (3, byte_order, None, None, None, -1, -1, 0)
        return NotImplemented


def _saveload_bookkeeping(numpys=(), ignoreds=(), recursive_saveloads=()):
    """The lists the fork's SaveLoad._save_specials leaves in a saved object's __dict__."""
    return {
        "__numpys": [name.encode("ascii") for name in numpys],
        "__scipys": [],
        "__ignoreds": [name.encode("ascii") for name in ignoreds],
        "__recursive_saveloads": [name.encode("ascii") for name in recursive_saveloads],
    }


def _python2_word(word, python2_words):
    if word == "\0":
        return PYTHON2_NULL_WORD
    return word.encode("utf-8") if python2_words == "str" else word


def _fork_docvecs(model):
    count = len(model.dv)
    return ForkDocvecsArray(
        doctags={},
        max_rawint=count - 1,
        offset2doctag=[],
        count=count,
        mapfile_path=None,
        doctag_syn0=np.asarray(model.dv.vectors, dtype=np.float32),
        doctag_syn0_lockf=np.ones(count, dtype=np.float32),
        **_saveload_bookkeeping(),
    )


def fork_model_from_gensim(model, python2_words="str", **overrides):
    """The object graph the fork would pickle for `model`, a trained gensim 4 DBOW Doc2Vec.

    `python2_words` is the Python 2 type of the vocabulary words: "str" (UTF-8 bytes, as from a
    corpus read without decoding) or "unicode" (as gensim 0.12's TaggedLineDocument yields).
    `overrides` replace or add attributes of the Doc2Vec, to make bad models.
    """
    words = [_python2_word(word, python2_words) for word in model.wv.index_to_key]
    vocab = {
        word: ForkVocab(
            count=int(model.wv.get_vecattr(index, "count")),
            index=index,
            sample_int=int(model.wv.get_vecattr(index, "sample_int")),
        )
        for index, word in enumerate(words)
    }
    attributes = dict(
        vocab=vocab,
        index2word=words,
        sg=1,
        vector_size=model.vector_size,
        layer1_size=model.layer1_size,
        alpha=model.alpha,
        min_alpha_yet_reached=model.min_alpha_yet_reached,
        window=model.window,
        max_vocab_size=None,
        seed=model.seed,
        random=_Python2RandomState(model.seed),
        min_count=model.min_count,
        sample=model.sample,
        workers=model.workers,
        min_alpha=model.min_alpha,
        hs=model.hs,
        negative=model.negative,
        cbow_mean=model.cbow_mean,
        hashfxn=hash,
        iter=model.epochs,
        null_word=model.dm_concat,
        train_count=model.train_count,
        total_train_time=model.total_train_time,
        sorted_vocab=1,
        corpus_count=model.corpus_count,
        raw_vocab=defaultdict(int),
        syn0_lockf=np.ones(len(words), dtype=np.float32),
        dbow_words=model.dbow_words,
        dm_concat=model.dm_concat,
        dm_tag_count=model.dm_tag_count,
        docvecs=_fork_docvecs(model),
        comment=None,
        **_saveload_bookkeeping(
            numpys=("syn0", "syn1neg"), ignoreds=("syn0norm", "cum_table"), recursive_saveloads=("docvecs",)
        ),
    )
    attributes.update(overrides)
    return ForkDoc2Vec(**attributes)


def write_fork_pickle(path, obj):
    """Pickle `obj` (fork objects, numbers, bytes, str, lists, dicts, arrays) as Python 2 would."""
    with open(path, "wb") as stream:
        _Python2Pickler(stream, protocol=2).dump(obj)


def write_jhlau_model_dir(directory, model, python2_words="str", **overrides):
    """Write `model` as a fork model directory: doc2vec.bin and its two .npy files.

    The released models' syn0 and syn1neg exceed sep_limit, so they are stored beside the pickle
    here whatever their size, as in the release.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_fork_pickle(directory / PICKLE_NAME, fork_model_from_gensim(model, python2_words, **overrides))
    np.save(directory / SYN0_NAME, np.ascontiguousarray(model.wv.vectors))
    np.save(directory / SYN1NEG_NAME, np.ascontiguousarray(model.syn1neg))
    return directory
