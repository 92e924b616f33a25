"""tools.lib.bow and `coco-unified bow`: vocabulary, vectors and the sidecar, on the generated sample."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coco_unified import CocoError, CocoUnified
from tools import cli
from tools.lib.bow import (
    BOW_METADATA_KEY,
    BowOptions,
    bow_matrix,
    build_bow_sidecar,
    fit_vocabulary,
    read_bow_sidecar,
)
from tools.lib.pool import read_pool
from tools.lib.text import join_captions, tokenize_captions


def test_vocabulary_is_the_most_frequent_words_ties_alphabetical():
    documents = [["the", "dog", ",", "a", "cat", "."], ["the", "cat", "runs", "."], ["zebra", "dog", "cat"]]
    assert fit_vocabulary(documents, BowOptions(size=3)) == ["cat", "dog", "runs"]  # runs and zebra tie: r < z
    # Stop words kept: "the" (twice) comes before the words seen once; punctuation never counts.
    assert fit_vocabulary(documents, BowOptions(size=4, keep_stop_words=True)) == ["cat", "dog", "the", "a"]


def test_vectors_say_whether_or_how_often():
    documents = [["cat", "cat", "dog"], ["emu"], ["cat"] * 300]
    assert bow_matrix(documents, ["cat", "dog"]).toarray().tolist() == [[1, 1], [0, 0], [1, 0]]
    counts = bow_matrix(documents, ["cat", "dog"], counts=True)
    assert counts.dtype == np.uint8 and counts.toarray().tolist() == [[2, 1], [0, 0], [255, 0]]


@pytest.fixture(scope="module")
def records(sample_dir):
    return read_pool(str(sample_dir))


def test_sidecar_holds_the_pool_documents_vectors(sample_dir, records, tmp_path):
    path = tmp_path / "bow.parquet"
    metadata = build_bow_sidecar(str(path), BowOptions(size=50), data_dir=str(sample_dir))
    image_ids = [record.image_id for record in records]
    documents = [join_captions(captions) for captions in tokenize_captions([record.captions for record in records])]
    schema = pq.read_schema(path)
    assert schema.field("bow").type == pa.list_(pa.uint8(), 50) and schema.field("image_id").type == pa.int64()
    stored = json.loads(schema.metadata[BOW_METADATA_KEY])
    assert stored["vocabulary"] == metadata["vocabulary"] == fit_vocabulary(documents, BowOptions(size=50))
    assert stored["images"] == len(records) and stored["counts"] is False and "stop_words" in stored
    # Read back in another order: rows follow the ids asked for.
    vectors, _ = read_bow_sidecar(str(path), image_ids[::-1])
    assert np.array_equal(vectors[::-1], bow_matrix(documents, metadata["vocabulary"]).toarray())


def test_the_sidecar_joins_the_pool_and_exports_like_the_other_features(sample_dir, records, tmp_path):
    path = tmp_path / "bow.parquet"
    metadata = build_bow_sidecar(str(path), BowOptions(size=30), data_dir=str(sample_dir))
    expected, _ = read_bow_sidecar(str(path), [record.image_id for record in records])  # pool order
    builder = CocoUnified(
        config_name="no_images",
        data_dir=str(sample_dir),
        doc2vec=False,
        feature_sidecars={"bow": str(path)},
        cache_dir=str(tmp_path / "cache"),
    )
    builder.download_and_prepare()
    assert np.array_equal(np.array(builder.as_dataset("train")["bow"]), expected)

    out = tmp_path / "export"
    arguments = ["export", "--data-dir", str(sample_dir), "--output-dir", str(out), "--no-doc2vec"]
    arguments += ["--feature", f"bow={path}", "--num-query", "20", "--train-sizes", "50"]
    assert cli.main([*arguments, "--cache-dir", str(tmp_path / "export-cache")]) == 0
    assert np.array_equal(np.load(out / "bow.npy"), expected)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["features"]["bow"]["provenance"]["vocabulary"] == metadata["vocabulary"]


def test_cli_writes_counts_and_evaluate_can_read_them(sample_dir, tmp_path):
    path = tmp_path / "counts.parquet"
    assert cli.main(["bow", "--data-dir", str(sample_dir), "--output", str(path), "--size", "20", "--counts"]) == 0
    assert json.loads(pq.read_schema(path).metadata[BOW_METADATA_KEY])["counts"] is True


def test_reading_names_the_problem_and_the_fix(sample_dir, records, tmp_path):
    image_ids = [record.image_id for record in records]
    with pytest.raises(CocoError, match="not found. Create it with `coco-unified bow"):
        read_bow_sidecar(str(tmp_path / "missing.parquet"), image_ids)
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"image_id": pa.array([1], pa.int64())}), other)
    with pytest.raises(CocoError, match="no BoW vocabulary"):
        read_bow_sidecar(str(other), image_ids)
    path = tmp_path / "bow.parquet"
    build_bow_sidecar(str(path), BowOptions(size=10), data_dir=str(sample_dir))
    with pytest.raises(CocoError, match=r"no BoW vector for 1 images of the pool \(e\.g\. \[999999999\]\)"):
        read_bow_sidecar(str(path), [*image_ids, 999_999_999])


def test_credentials_stay_out_of_the_provenance(sample_dir, tmp_path, mirror):
    secret = mirror.base_url.replace("http://", "http://alice:s3cret@")
    metadata = build_bow_sidecar(str(tmp_path / "bow.parquet"), BowOptions(size=5), base_url=secret)
    assert "s3cret" not in json.dumps(metadata) and metadata["source"].startswith("http://127.0.0.1")
