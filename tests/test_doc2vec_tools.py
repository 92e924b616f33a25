"""tools/lib/doc2vec_build.py (with the model, inference and chunk modules under it) on a generated sample.

Real gensim training and inference on the 247-image sample of conftest.py, with few epochs and a
high inference learning rate so that the whole file stays fast yet the vectors mean something.
The command line over it (`coco-unified doc2vec`) is tested in test_cli.py.
"""

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from gensim.models.doc2vec import Doc2Vec, TaggedDocument

import coco_unified
from coco_unified import DOC2VEC_DIM, CocoError, CocoUnified, read_doc2vec_sidecar, write_doc2vec_sidecar
from tools.fakes.jhlau_fixture import write_jhlau_model_dir
from tools.lib.doc2vec_build import BuildOptions, build_sidecar
from tools.lib.doc2vec_inference import InferenceSettings, infer_all, infer_in_new_processes, inference_processes
from tools.lib.doc2vec_model import file_sha256, model_path_beside, weights_sha256
from tools.lib.doc2vec_presets import DEFAULT_PRESET, INFER_MIN_ALPHA, PRESETS
from tools.lib.pool import read_pool
from tools.lib.protocol_files import DATABASE_IMAGE_IDS, write_pool_protocol
from tools.lib.text import TOKENIZER, caption_tokens, join_captions

REPO = Path(__file__).resolve().parents[1]
# 100 epochs at alpha 0.1 already separate the sample's images well (measured: label mAP 0.57
# against 0.33 by chance); the chunks are small so that the sample spans several.
INFERENCE = {"infer_epochs": 100, "infer_alpha": 0.1, "chunk_images": 60}
INFERENCE_SETTINGS = InferenceSettings(epochs=100, alpha=0.1, min_alpha=INFER_MIN_ALPHA, seed=7)


def build(sample_dir, output, **options):
    """The sidecar of the sample, seed 7, with the fast inference settings unless told otherwise."""
    settings = {"data_dir": str(sample_dir), "output": str(output), "seed": 7, **INFERENCE, **options}
    return Path(build_sidecar(BuildOptions(**settings)))


@pytest.fixture(scope="module")
def records(sample_dir):
    return read_pool(str(sample_dir))


@pytest.fixture(scope="module")
def image_ids(records):
    return [record.image_id for record in records]


@pytest.fixture(scope="module")
def trained(sample_dir, tmp_path_factory):
    """A sidecar from the default path: train on the sample, infer with 2 workers."""
    return build(sample_dir, tmp_path_factory.mktemp("trained") / "vectors.parquet", epochs=50, workers=2)


@pytest.fixture(scope="module")
def trained_model(trained):
    return Path(model_path_beside(str(trained)))


def vectors_of(path, image_ids):
    return read_doc2vec_sidecar(str(path), image_ids)[0]


def provenance_of(path):
    return json.loads(pq.read_schema(path).metadata[coco_unified.DOC2VEC_METADATA_KEY])


# ----------------------------------------------------------------------------- the three models


def test_trained_sidecar_is_read_by_the_builder(sample_dir, trained, image_ids, tmp_path):
    builder = CocoUnified(
        config_name="no_images", data_dir=str(sample_dir), doc2vec_path=str(trained), cache_dir=str(tmp_path)
    )
    builder.download_and_prepare()
    dataset = builder.as_dataset("train").with_format("numpy")
    assert dataset["image_id"].tolist() == image_ids
    assert np.array_equal(dataset["doc2vec"], vectors_of(trained, image_ids))
    assert not os.path.exists(f"{trained}.parts"), "the chunks are removed once the sidecar is written"


def test_trained_sidecar_records_its_provenance(trained, trained_model, image_ids):
    provenance = provenance_of(trained)
    model = provenance["model"]
    assert model["source"] == "trained on this pool"
    assert model["sha256"] == file_sha256(trained_model)
    assert model["weights_sha256"] == weights_sha256(Doc2Vec.load(str(trained_model)))
    expected_training = {
        "epochs": 50,
        "seed": 7,
        "workers": 1,
        "reproducible": True,
        "documents": len(image_ids),
        "dm": 0,
        "window": PRESETS[DEFAULT_PRESET].window,
        "sample": PRESETS[DEFAULT_PRESET].sample,
    }
    assert {name: model["training"][name] for name in expected_training} == expected_training
    expected_inference = {"epochs": 100, "alpha": 0.1, "seed": 7, "per_caption": False}
    assert {name: provenance["inference"][name] for name in expected_inference} == expected_inference
    assert provenance["tokenizer"] == TOKENIZER
    assert provenance["seed"] == 7 and provenance["images"] == len(image_ids)
    assert {"gensim", "nltk", "numpy", "python"} <= provenance["versions"].keys()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_sets_what_no_flag_gives(preset):
    recipe = PRESETS[preset]
    training = BuildOptions(preset=preset).training_settings()
    assert training.model_parameters() == recipe.model_parameters()
    inference = BuildOptions(preset=preset).inference_settings()
    assert (inference.epochs, inference.alpha) == (recipe.infer_epochs, recipe.infer_alpha)
    given = BuildOptions(preset=preset, epochs=3, infer_alpha=0.2)
    assert given.training_settings().epochs == 3 and given.inference_settings().alpha == 0.2
    assert given.training_settings().model_parameters()["sample"] == recipe.sample


def test_an_unknown_preset_is_named():
    with pytest.raises(
        CocoError, match=r"preset='tuned' is not a Doc2Vec preset; choose one of \['default', 'jhlau'\]"
    ):
        BuildOptions(preset="tuned")


def test_model_path_gives_the_same_vectors(sample_dir, trained, trained_model, image_ids, tmp_path):
    output = build(sample_dir, tmp_path / "from_model.parquet", model=str(trained_model))
    assert np.array_equal(vectors_of(output, image_ids), vectors_of(trained, image_ids))
    model = provenance_of(output)["model"]
    assert model["source"] == "gensim4 file"
    assert model["path"] == str(trained_model) and model["sha256"] == file_sha256(trained_model)


def test_jhlau_model_is_converted_and_gives_the_same_vectors(sample_dir, trained, trained_model, image_ids, tmp_path):
    # The fork format keeps the vocabulary, counts and both weight matrices, all that inference reads.
    fork_dir = write_jhlau_model_dir(tmp_path / "enwiki_dbow", Doc2Vec.load(str(trained_model)))
    output = build(sample_dir, tmp_path / "from_jhlau.parquet", jhlau_model=str(fork_dir))
    assert np.array_equal(vectors_of(output, image_ids), vectors_of(trained, image_ids))
    model = provenance_of(output)["model"]
    assert model["source"].startswith("jhlau") and model["jhlau_dir"] == str(fork_dir)
    assert model["path"] == str(tmp_path / "from_jhlau.model")
    assert Doc2Vec.load(model["path"]).vector_size == DOC2VEC_DIM


def test_per_caption_vectors(sample_dir, trained, trained_model, records, image_ids, tmp_path):
    output = build(sample_dir, tmp_path / "per_caption.parquet", model=str(trained_model), per_caption=True)
    assert np.array_equal(vectors_of(output, image_ids), vectors_of(trained, image_ids))
    per_caption = pq.read_table(output).column("caption_doc2vec").to_pylist()
    assert [len(rows) for rows in per_caption] == [len(record.captions) for record in records]
    # Any caption, inferred alone in a fresh process, gets the bits the sidecar holds.
    record = records[-1]
    alone = infer_in_new_processes(str(trained_model), [caption_tokens(record.captions[-1])], INFERENCE_SETTINGS, 1)
    assert np.array_equal(np.asarray(per_caption[-1][-1], dtype=np.float32), alone[0])
    assert provenance_of(output)["inference"]["per_caption"] is True


def test_processes_started_ahead_infer_the_bits_of_fresh_ones(trained_model, records):
    documents = [document_of(record) for record in records[:3]]
    with inference_processes(str(trained_model), INFERENCE_SETTINGS, 1) as processes:
        ahead = infer_all(processes, documents)
        # The same processes serve another call: they stay up as long as the caller's block.
        again = infer_all(processes, documents[::-1])
    fresh = infer_in_new_processes(str(trained_model), documents, INFERENCE_SETTINGS, 1)
    assert np.array_equal(ahead, fresh) and np.array_equal(again, fresh[::-1])


def test_fresh_processes_are_no_more_than_the_tasks(trained_model, records):
    # Three documents make one task: of the three processes asked for, one is started.
    counts, stop = [], threading.Event()

    def watch_children():
        while not stop.is_set():
            counts.append(len(multiprocessing.active_children()))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_children)
    watcher.start()
    try:
        vectors = infer_in_new_processes(
            str(trained_model), [document_of(record) for record in records[:3]], INFERENCE_SETTINGS, 3
        )
    finally:
        stop.set()
        watcher.join()
    assert vectors.shape == (3, DOC2VEC_DIM)
    assert max(counts) == 1, counts


def test_annotations_from_a_mirror_give_the_same_vectors(
    mirror, trained, trained_model, image_ids, tmp_path, monkeypatch
):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # aiohttp would send loopback requests to a proxy
    options = BuildOptions(
        base_url=mirror.base_url,
        output=str(tmp_path / "from_mirror.parquet"),
        seed=7,
        model=str(trained_model),
        **INFERENCE,
    )
    output = build_sidecar(options)
    assert np.array_equal(vectors_of(output, image_ids), vectors_of(trained, image_ids))
    assert provenance_of(output)["source"] == mirror.base_url


# ----------------------------------------------------------------------------- determinism and resume


def test_one_and_two_workers_give_identical_vectors(sample_dir, trained, trained_model, image_ids, tmp_path):
    # Other chunks and one worker instead of two: other batches, other order, same bits.
    output = build(sample_dir, tmp_path / "one_worker.parquet", model=str(trained_model), workers=1, chunk_images=37)
    assert np.array_equal(vectors_of(output, image_ids), vectors_of(trained, image_ids))


def test_same_seed_trains_the_same_model_whatever_the_hash_seed(sample_dir):
    script = (
        "import sys; from tools.lib.pool import read_pool; from tools.lib.text import tokenize_captions, join_captions; "
        "from tools.lib.doc2vec_model import TrainingSettings, train_model, weights_sha256; "
        "documents = [join_captions(c) for c in tokenize_captions([r.captions for r in read_pool(sys.argv[1])])]; "
        "print(weights_sha256(train_model(documents, TrainingSettings(epochs=5, min_count=5, seed=3, workers=1))))"
    )
    digests = []
    for hash_seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", script, str(sample_dir)],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.append(result.stdout.split()[-1])
    assert digests[0] == digests[1]


def test_an_interrupted_run_resumes_from_its_last_finished_chunk(
    sample_dir, trained_model, records, image_ids, tmp_path, caplog
):
    output = tmp_path / "resumed.parquet"
    work_dir = Path(f"{output}.parts")
    # 1000 epochs make the run last seconds, so it can be killed between chunks.
    slow = [
        "--model",
        str(trained_model),
        "--infer-epochs",
        "1000",
        "--infer-alpha",
        "0.1",
        "--chunk-images",
        "20",
        "--workers",
        "1",
        "--seed",
        "7",
    ]
    command = [sys.executable, "-m", "tools.doc2vec", "--data-dir", str(sample_dir), "--output", str(output), *slow]
    run = subprocess.Popen(
        command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not list(work_dir.glob("chunk-*.npy")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the CLI and its worker process, as a crash would
        run.wait()
    finished = len(list(work_dir.glob("chunk-*.npy")))
    num_chunks = -(-len(image_ids) // 20)
    assert 0 < finished < num_chunks and not output.exists()

    with caplog.at_level("INFO"):
        options = {"model": str(trained_model), "infer_epochs": 1000, "chunk_images": 20, "workers": 1}
        build(sample_dir, output, **options)
    resumed = [message for message in caplog.messages if message.startswith("resuming")]
    assert resumed and f"{finished} of {num_chunks} chunks" in resumed[0]
    # The first chunk (from the killed run) and the last (from the resumed one) are what a
    # fresh process infers for them.
    settings = InferenceSettings(epochs=1000, alpha=0.1, min_alpha=INFER_MIN_ALPHA, seed=7)
    first, last = records[0], records[-1]
    fresh = infer_in_new_processes(str(trained_model), [document_of(first), document_of(last)], settings, 1)
    vectors = vectors_of(output, image_ids)
    assert np.array_equal(vectors[[0, -1]], fresh)


def document_of(record):
    return join_captions([caption_tokens(caption) for caption in record.captions])


def test_chunks_of_other_inputs_are_discarded(sample_dir, trained_model, image_ids, trained, tmp_path):
    output = tmp_path / "stale.parquet"
    work_dir = Path(f"{output}.parts")
    work_dir.mkdir()
    (work_dir / "fingerprint").write_text("another run")
    np.save(work_dir / "chunk-000000.npy", np.zeros((60, DOC2VEC_DIM), np.float32))
    build(sample_dir, output, model=str(trained_model))
    assert np.array_equal(vectors_of(output, image_ids), vectors_of(trained, image_ids))


# ----------------------------------------------------------------------------- bad inputs


def test_unreadable_model_file_is_named(sample_dir, tmp_path):
    broken = tmp_path / "broken.model"
    broken.write_bytes(b"not a pickle at all")
    with pytest.raises(CocoError, match=rf"{broken}: not a readable gensim 4 Doc2Vec model .*Doc2Vec\.save"):
        build(sample_dir, tmp_path / "out.parquet", model=str(broken))


def test_a_model_the_inference_processes_cannot_load_is_named(tmp_path):
    # Loaded by the processes alone (evaluate starts them first): the error reaches the caller
    # instead of the pool starting new processes forever.
    broken = tmp_path / "broken.model"
    broken.write_bytes(b"not a pickle at all")
    with pytest.raises(CocoError, match=rf"{broken}: not a readable gensim 4 Doc2Vec model"):
        infer_in_new_processes(str(broken), [["a", "dog", "."]], INFERENCE_SETTINGS, 1)


def test_model_of_another_vector_size_is_refused(sample_dir, tmp_path):
    small = Doc2Vec([TaggedDocument(["a", "dog", "."], [0])], vector_size=50, min_count=1, epochs=1)
    small.save(str(tmp_path / "small.model"))
    with pytest.raises(CocoError, match=r"small\.model: the model has vector size 50, .* 300-d vectors"):
        build(sample_dir, tmp_path / "out.parquet", model=str(tmp_path / "small.model"))


def test_incomplete_jhlau_directory_is_named(sample_dir, tmp_path):
    with pytest.raises(CocoError, match=r"doc2vec\.bin is missing"):
        build(sample_dir, tmp_path / "out.parquet", jhlau_model=str(tmp_path))


def test_train_ids_outside_the_pool_are_refused(sample_dir, image_ids, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{image_ids[0]}\n999999999\n")
    with pytest.raises(CocoError, match=r"ids\.txt: 1 image id is not in the pool \(e\.g\. \[999999999\]\)"):
        build(sample_dir, tmp_path / "out.parquet", train_ids=str(ids))


def test_sidecar_missing_an_image_is_refused_by_the_builder(sample_dir, trained, image_ids, tmp_path):
    incomplete = tmp_path / "incomplete.parquet"
    write_doc2vec_sidecar(str(incomplete), image_ids[1:], vectors_of(trained, image_ids)[1:], provenance_of(trained))
    builder = CocoUnified(
        config_name="no_images",
        data_dir=str(sample_dir),
        doc2vec_path=str(incomplete),
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(
        CocoError,
        match=rf"no Doc2Vec vector for 1 image of the pool \(e\.g\. ids \[{image_ids[0]}\]\).*coco-unified doc2vec",
    ):
        builder.download_and_prepare()


def test_training_options_with_a_given_model_are_refused():
    with pytest.raises(CocoError, match=r"train_ids=ids\.txt apply only to training a model, not to a given one"):
        BuildOptions(model="m", train_ids="ids.txt")


@pytest.mark.parametrize(
    "options, named",
    [
        ({"model": "m", "jhlau_model": "d"}, "model= and jhlau_model= name two models"),
        ({"epochs": 0}, "epochs=0: each must be at least 1"),
        ({"infer_alpha": 0.0}, "infer_alpha=0.0: the learning rate must be above 0"),
        ({"seed": -1}, "seed=-1: must be in 0..4294967295"),
    ],
)
def test_options_no_build_can_use_are_refused_by_keyword(options, named):
    with pytest.raises(CocoError, match=re.escape(named)):
        BuildOptions(**options)


def test_protocol_database_ids_keep_queries_out_of_training(sample_dir, records, tmp_path):
    write_pool_protocol(str(tmp_path), data_dir=str(sample_dir), num_query=40, train_sizes=[50])
    database_ids = (tmp_path / DATABASE_IMAGE_IDS).read_text().split()
    output = build(
        sample_dir, tmp_path / "database_only.parquet", epochs=5, train_ids=str(tmp_path / DATABASE_IMAGE_IDS)
    )
    training = provenance_of(output)["model"]["training"]
    assert training["documents"] == len(database_ids) == sum(1 for record in records if record.labels) - 40
    assert training["train_ids"]["sha256"] == file_sha256(tmp_path / DATABASE_IMAGE_IDS)
