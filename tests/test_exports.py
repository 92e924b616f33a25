"""tools/lib/exports.py: the pool as the arrays and text files of the hashing literature, on the sample."""

import json

import numpy as np
import pytest
import scipy.io

import coco_unified
from coco_unified import DOC2VEC_DIM, CocoError, read_doc2vec_provenance, read_doc2vec_sidecar
from tools.lib.exports import MANIFEST_FILE, MAT_FILE, PROTOCOL_DIR, ExportOptions, export_pool


@pytest.fixture(scope="module")
def rows(oracle):
    """The oracle's rows in pool order."""
    return sorted(oracle.values(), key=lambda row: row["index"])


def export(sample_dir, tmp_path, **options):
    out = tmp_path / "export"
    defaults = {"data_dir": str(sample_dir), "cache_dir": str(tmp_path / "cache"), "num_query": 40}
    export_pool(ExportOptions(output_dir=str(out), **{**defaults, **options}))
    return out


def test_export_writes_the_reference_layout(sample_dir, sidecar, rows, tmp_path):
    out = export(sample_dir, tmp_path, doc2vec_path=str(sidecar), train_sizes=(50, 100))
    count, labeled = len(rows), [row["index"] for row in rows if row["labels"]]
    image_ids = [row["image_id"] for row in rows]

    mat = scipy.io.loadmat(out / MAT_FILE)
    assert mat["labels"].dtype == np.uint8 and mat["labels"].shape == (count, 80)
    assert mat["texts"].dtype == np.float32 and mat["texts"].shape == (count, DOC2VEC_DIM)
    assert mat["clean_id"].ravel().tolist() == labeled
    assert np.array_equal(np.load(out / "labels.npy"), mat["labels"])
    assert np.array_equal(np.load(out / "texts.npy"), read_doc2vec_sidecar(str(sidecar), image_ids)[0])
    assert np.load(out / "clean_id.npy").tolist() == labeled
    assert [row["labels"] for row in rows] == [np.flatnonzero(labels).tolist() for labels in mat["labels"]]

    id_map = (out / "id-map.txt").read_text().splitlines()
    assert id_map == [f"{row['image_id']} {row['file_name']} {row['coco_split']}" for row in rows]
    class_names = (out / "class-name.txt").read_text().splitlines()
    assert len(class_names) == 80 and class_names[0] == "1 person" and class_names[-1] == "90 toothbrush"

    protocol = {
        name: np.loadtxt(out / PROTOCOL_DIR / f"{name}.txt", dtype=np.int64).tolist()
        for name in ("query", "database", "train_50", "train_100")
    }
    assert len(protocol["query"]) == 40 and sorted(protocol["query"] + protocol["database"]) == labeled
    assert not set(protocol["query"]) & set(protocol["database"])
    assert set(protocol["train_50"]) < set(protocol["train_100"]) < set(protocol["database"])
    database_ids = np.loadtxt(out / PROTOCOL_DIR / "database_image_ids.txt", dtype=np.int64).tolist()
    assert database_ids == [image_ids[index] for index in protocol["database"]]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["images"] == count and manifest["labeled"] == len(labeled) and manifest["protocol"]["seed"] == 0
    assert manifest["doc2vec"] == read_doc2vec_provenance(str(sidecar))


def test_export_without_doc2vec_needs_no_sidecar_and_writes_no_texts(sample_dir, tmp_path):
    out = export(sample_dir, tmp_path, doc2vec=False, doc2vec_path=str(tmp_path / "absent.parquet"), train_sizes=(50,))
    assert sorted(scipy.io.loadmat(out / MAT_FILE)) == sorted(
        ["__header__", "__version__", "__globals__", "labels", "clean_id"]
    )
    assert not (out / "texts.npy").exists()
    assert json.loads((out / MANIFEST_FILE).read_text())["doc2vec"] is None


def test_a_protocol_the_sample_cannot_hold_fails_before_writing(sample_dir, sidecar, tmp_path):
    with pytest.raises(coco_unified.ConfigError, match=r"pass num_query=\d+, num_train=\d+"):
        export(sample_dir, tmp_path, doc2vec_path=str(sidecar), num_query=5_000)
    assert not (tmp_path / "export").exists()


def test_a_config_that_is_not_the_whole_pool_is_refused():
    with pytest.raises(CocoError, match=r"config='labeled' cannot be exported as arrays; choose one of"):
        ExportOptions(output_dir="out", config="labeled")
