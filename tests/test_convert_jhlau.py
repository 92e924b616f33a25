"""tools/lib/jhlau.py on fork-format model directories written by tools/fakes/jhlau_fixture.py.

A small real gensim 4 DBOW model is written in the on-disk format of jhlau's pretrained models and
converted back; the result must match the original word for word and bit for bit, and infer the
same vectors. Damaged or foreign directories must be refused with messages that name the file.
"""

import hashlib
import os
import pickle
import pickletools
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gensim.models import Doc2Vec
from gensim.models.doc2vec import TaggedDocument

from coco_unified import CocoError
from tools.fakes.jhlau_fixture import (
    PICKLE_NAME,
    SYN0_NAME,
    SYN1NEG_NAME,
    ForkVocab,
    write_fork_pickle,
    write_jhlau_model_dir,
)
from tools.lib.jhlau import (
    FORK_INFER_DEFAULTS,
    ConversionError,
    conversion_record,
    convert_jhlau_model,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Non-ASCII words of one, two and three UTF-8 bytes per character, as a caption corpus may hold.
CORPUS_WORDS = ["a", "man", "riding", "café", "naïve", "über", "東京", "."] + [f"word{i}" for i in range(60)]
# Every global a real fork pickle names, and so the only ones the fixture may name.
FORK_PICKLE_GLOBALS = {
    "gensim.models.doc2vec Doc2Vec",
    "gensim.models.doc2vec DocvecsArray",
    "gensim.models.word2vec Vocab",
    "numpy.core.multiarray _reconstruct",
    "numpy ndarray",
    "numpy dtype",
    "numpy.random __RandomState_ctor",
    "__builtin__ hash",
    "__builtin__ int",
    "collections defaultdict",
}
INFERENCE_DOCUMENTS = [
    ["a", "man", "riding", "café", "."],
    ["東京", "naïve", "über", "word3", "word3", "word17"],
    ["word1", "not-in-vocabulary", "word2"],
]


@pytest.fixture(scope="module")
def trained_model():
    """A DBOW model trained as jhlau trained his (dbow_words=1, dm_concat=1), only much smaller."""
    rng = random.Random(2016)
    # Zipf-like frequencies, so that counts differ and min_count drops the rarest words.
    weights = [1 / rank for rank in range(1, len(CORPUS_WORDS) + 1)]
    documents = [
        TaggedDocument(rng.choices(CORPUS_WORDS, weights=weights, k=rng.randint(4, 12)), [number])
        for number in range(400)
    ]
    return Doc2Vec(
        documents,
        dm=0,
        dbow_words=1,
        dm_concat=1,
        vector_size=300,
        window=5,
        negative=5,
        hs=0,
        min_count=2,
        sample=1e-3,
        epochs=5,
        workers=1,
        seed=7,
    )


@pytest.fixture(scope="module")
def fork_dir(trained_model, tmp_path_factory):
    return write_jhlau_model_dir(tmp_path_factory.mktemp("enwiki_dbow"), trained_model)


@pytest.fixture
def damaged_dir(fork_dir, tmp_path):
    """A private copy of the fork directory for a test to break."""
    return Path(shutil.copytree(fork_dir, tmp_path / "model"))


def infer(model, words):
    # gensim seeds the start vector from the text's hash (the same within this process) and
    # draws negative samples from model.random, which is reset so that both models draw alike.
    model.random = np.random.RandomState(0)
    return model.infer_vector(words)


def test_fixture_pickle_looks_written_by_python2(fork_dir):
    operations = list(pickletools.genops((fork_dir / PICKLE_NAME).read_bytes()))
    first, argument, _ = operations[0]
    assert (first.name, argument) == ("PROTO", 2)
    assert max(opcode.proto for opcode, _, _ in operations) == 2
    globals_named = {argument for opcode, argument, _ in operations if opcode.name == "GLOBAL"}
    assert globals_named == FORK_PICKLE_GLOBALS
    byte_strings = {argument for opcode, argument, _ in operations if opcode.name == "SHORT_BINSTRING"}
    # Python 2 str: attribute names and words, the latter as UTF-8 bytes (shown latin1-decoded).
    assert {"index2word", "syn0_lockf", "__numpys", "\0"} <= byte_strings
    assert "東京".encode().decode("latin1") in byte_strings
    assert not any(opcode.name == "BINUNICODE" for opcode, _, _ in operations)


@pytest.mark.parametrize("python2_words", ["str", "unicode"])
def test_round_trip_matches_the_original(trained_model, tmp_path, python2_words):
    model_dir = write_jhlau_model_dir(tmp_path / "model", trained_model, python2_words)

    converted = convert_jhlau_model(model_dir)

    assert converted.wv.index_to_key == trained_model.wv.index_to_key
    assert converted.wv.index_to_key[-1] == "\0"
    assert converted.wv.vectors.dtype == converted.syn1neg.dtype == np.float32
    assert np.array_equal(converted.wv.vectors, trained_model.wv.vectors)
    assert np.array_equal(converted.syn1neg, trained_model.syn1neg)
    assert len(converted.dv) == 0
    for words in INFERENCE_DOCUMENTS:
        assert np.array_equal(infer(converted, words), infer(trained_model, words))


def test_round_trip_carries_the_hyper_parameters(trained_model, fork_dir):
    converted = convert_jhlau_model(fork_dir)

    for name in (
        "vector_size",
        "window",
        "negative",
        "hs",
        "sample",
        "min_count",
        "alpha",
        "min_alpha",
        "epochs",
        "seed",
        "dbow_words",
        "dm_concat",
    ):
        assert getattr(converted, name) == getattr(trained_model, name), name
    assert converted.dm == trained_model.dm == 0
    for word in trained_model.wv.index_to_key:
        for attribute in ("count", "sample_int"):
            assert converted.wv.get_vecattr(word, attribute) == trained_model.wv.get_vecattr(word, attribute), (
                word,
                attribute,
            )
    assert np.array_equal(converted.cum_table, trained_model.cum_table)
    # The fork's inference defaults are spelled as gensim 4 infer_vector keywords.
    assert converted.infer_vector(INFERENCE_DOCUMENTS[0], **FORK_INFER_DEFAULTS).shape == (300,)


def test_cli_saves_a_loadable_model_and_reports_provenance(trained_model, fork_dir, tmp_path):
    output = tmp_path / "out" / "enwiki_dbow.gensim4"

    finished = subprocess.run(
        [sys.executable, "-m", "tools.convert_jhlau", str(fork_dir), str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    sha256 = hashlib.sha256((fork_dir / PICKLE_NAME).read_bytes()).hexdigest()
    assert sha256 in finished.stdout
    assert f"{len(trained_model.wv):,} words" in finished.stdout
    assert "vector size         300" in finished.stdout
    loaded = Doc2Vec.load(str(output))
    assert conversion_record(loaded)["pickle_sha256"] == sha256
    assert loaded.wv.index_to_key == trained_model.wv.index_to_key
    for words in INFERENCE_DOCUMENTS:
        assert np.array_equal(infer(loaded, words), infer(trained_model, words))


def test_conversion_errors_are_coco_errors(damaged_dir):
    (damaged_dir / SYN0_NAME).unlink()
    with pytest.raises(CocoError, match=f"{damaged_dir / SYN0_NAME} is missing"):
        convert_jhlau_model(damaged_dir)
    assert issubclass(ConversionError, CocoError)


def test_missing_syn1neg_is_named_with_the_fix(damaged_dir):
    (damaged_dir / SYN1NEG_NAME).unlink()

    with pytest.raises(ConversionError, match="is missing") as refused:
        convert_jhlau_model(damaged_dir)

    message = str(refused.value)
    assert str(damaged_dir / SYN1NEG_NAME) in message
    assert "Re-extract the whole model archive" in message


@pytest.mark.parametrize("damage", ["truncated", "not a pickle"])
def test_unreadable_pickle_is_refused(damaged_dir, damage):
    pickle_path = damaged_dir / PICKLE_NAME
    data = pickle_path.read_bytes()
    pickle_path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + data)

    with pytest.raises(ConversionError) as refused:
        convert_jhlau_model(damaged_dir)

    message = str(refused.value)
    assert f"{pickle_path} is not a complete Python pickle" in message
    assert "Re-extract it from the model archive" in message


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_naming_a_foreign_global_is_refused_before_it_runs(damaged_dir, tmp_path):
    marker = tmp_path / "the-pickle-ran"
    (damaged_dir / PICKLE_NAME).write_bytes(pickle.dumps(_RunsAShellCommand(marker), protocol=2))

    foreign_global = f"{os.system.__module__}.system"  # posix.system here
    with pytest.raises(ConversionError, match=f"references {foreign_global}") as refused:
        convert_jhlau_model(damaged_dir)

    assert "refusing to load it" in str(refused.value)
    assert not marker.exists()


def test_pickle_of_another_class_is_refused(damaged_dir):
    write_fork_pickle(damaged_dir / PICKLE_NAME, ForkVocab(count=1, index=0))

    with pytest.raises(
        ConversionError, match="holds a gensim.models.word2vec.Vocab, not the fork's gensim.models.doc2vec.Doc2Vec"
    ):
        convert_jhlau_model(damaged_dir)


def test_dm_model_is_refused_saying_what_is_supported(trained_model, tmp_path):
    model_dir = write_jhlau_model_dir(tmp_path / "dmpv", trained_model, sg=0)

    with pytest.raises(ConversionError) as refused:
        convert_jhlau_model(model_dir)

    message = str(refused.value)
    assert "dm=1" in message
    assert "Only DBOW models with negative sampling (dm=0, hs=0, negative>0)" in message


@pytest.mark.parametrize("array_name", [SYN0_NAME, SYN1NEG_NAME])
def test_array_shape_disagreeing_with_the_vocabulary_is_refused(damaged_dir, trained_model, array_name):
    array_path = damaged_dir / array_name
    np.save(array_path, np.load(array_path)[:-1])

    with pytest.raises(ConversionError) as refused:
        convert_jhlau_model(damaged_dir)

    message = str(refused.value)
    vocabulary_size = len(trained_model.wv)
    assert str(array_path) in message
    assert f"shape ({vocabulary_size - 1}, 300)" in message
    assert f"describes float32 ({vocabulary_size}, 300)" in message
    assert "must come from the same model archive" in message


def test_non_finite_vector_is_refused(damaged_dir, trained_model):
    syn0 = np.load(damaged_dir / SYN0_NAME)
    syn0[3, 17] = np.nan
    np.save(damaged_dir / SYN0_NAME, syn0)

    with pytest.raises(ConversionError) as refused:
        convert_jhlau_model(damaged_dir)

    message = str(refused.value)
    assert str(damaged_dir / SYN0_NAME) in message
    assert f"row 3 (the vector of {trained_model.wv.index_to_key[3]!r}) holds NaN or infinity" in message
