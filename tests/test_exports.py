"""tools/lib/exports.py: the pool as the arrays and text files of the hashing literature, on the sample."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

import coco_unified
from coco_unified import DOC2VEC_DIM, CocoError, read_doc2vec_provenance, read_doc2vec_sidecar
from tools.lib.exports import MANIFEST_FILE, MAT_FILE, MAT_MAX_COLUMNS, PROTOCOL_DIR, ExportOptions, export_pool

REPO = Path(__file__).resolve().parents[1]


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


# ----------------------------------------------------------------------------- feature columns

NARROW_DIM, WIDE_DIM = 12, MAT_MAX_COLUMNS + 6  # the wide one goes to HDF5, as 4096-d fc7 would


@pytest.fixture(scope="module")
def feature_sidecars(oracle, tmp_path_factory):
    """A narrow float32 and a wide float16 sidecar for the sample, rows in shuffled order; and their
    vectors by image id as float32, as the exported arrays must hold them."""
    folder = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(3)
    image_ids = rng.permutation(sorted(oracle))
    vectors = {}
    for column, dim, store in (("clip_image", NARROW_DIM, "float32"), ("vgg19_fc7", WIDE_DIM, "float16")):
        matrix = rng.standard_normal((len(image_ids), dim)).astype(np.float32)
        path = folder / f"{column}.parquet"
        coco_unified.write_feature_sidecar(str(path), image_ids, {column: matrix}, {"model": f"random {column}"}, store)
        stored = matrix.astype(store).astype(np.float32)
        vectors[column] = (path, dict(zip(image_ids.tolist(), stored)))
    return vectors


def test_feature_columns_are_exported_in_pool_order(sample_dir, sidecar, feature_sidecars, rows, tmp_path):
    paths = {column: str(path) for column, (path, _) in feature_sidecars.items()}
    out = export(sample_dir, tmp_path, doc2vec_path=str(sidecar), train_sizes=(50,), feature_sidecars=paths)
    expected = {
        column: np.stack([by_id[row["image_id"]] for row in rows]) for column, (_, by_id) in feature_sidecars.items()
    }
    for column, matrix in expected.items():
        exported = np.load(out / f"{column}.npy")
        assert exported.dtype == np.float32 and np.array_equal(exported, matrix)

    mat = scipy.io.loadmat(out / MAT_FILE)
    assert np.array_equal(mat["clip_image"], expected["clip_image"]) and "vgg19_fc7" not in mat
    assert not (out / "clip_image.h5").exists()
    # Read back as the UCCH / DCHN code reads its .h5py features: whole, and by sorted row indices.
    with h5py.File(out / "vgg19_fc7.h5", "r") as file:
        assert list(file) == ["vgg19_fc7"] and file["vgg19_fc7"].dtype == np.float32
        assert np.array_equal(file["vgg19_fc7"][()], expected["vgg19_fc7"])
        some = [0, 5, 17, len(rows) - 1]
        assert np.array_equal(file["vgg19_fc7"][some], expected["vgg19_fc7"][some])
        assert np.array_equal(file["vgg19_fc7"][10:20], expected["vgg19_fc7"][10:20])

    features = json.loads((out / MANIFEST_FILE).read_text())["features"]
    assert features["clip_image"] == {
        "dim": NARROW_DIM,
        "files": ["clip_image.npy", MAT_FILE],
        "provenance": coco_unified.read_feature_sidecar(paths["clip_image"], "clip_image")[1],
    }
    assert features["vgg19_fc7"]["files"] == ["vgg19_fc7.npy", "vgg19_fc7.h5"]
    assert features["vgg19_fc7"]["provenance"]["model"] == "random vgg19_fc7"


@pytest.mark.parametrize(
    "feature_sidecars, error, match",
    [
        ({"clip_image": "absent.parquet"}, coco_unified.SidecarError, r"absent\.parquet not found.*image-features"),
        ({"clean_id": "x.parquet"}, coco_unified.ConfigError, r"'clean_id' cannot name exported arrays"),
        ({"clip image": "x.parquet"}, coco_unified.ConfigError, r"'clip image' cannot name exported arrays"),
        ({"image_id": "x.parquet"}, coco_unified.ConfigError, r"'image_id' is not a free column name"),
    ],
)
def test_bad_feature_sidecars_fail_before_anything_is_written(
    sample_dir, sidecar, feature_sidecars, error, match, tmp_path
):
    with pytest.raises(error, match=match):
        export(sample_dir, tmp_path, doc2vec_path=str(sidecar), feature_sidecars=feature_sidecars)
    assert not (tmp_path / "export").exists()


def test_a_column_the_sidecar_lacks_is_named_with_the_ones_it_has(sample_dir, sidecar, feature_sidecars, tmp_path):
    path, _ = feature_sidecars["clip_image"]
    with pytest.raises(coco_unified.SidecarError, match=r"has no column 'clip_img' \(did you mean 'clip_image'\?\)"):
        export(sample_dir, tmp_path, doc2vec_path=str(sidecar), feature_sidecars={"clip_img": str(path)})
    assert not (tmp_path / "export").exists()


def export_command(*arguments, cwd) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "tools.export", "--output-dir", "out", *arguments]
    return subprocess.run(
        command, cwd=cwd, env={**environment, "PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "arguments, status, named",
    [
        (["--feature", "vgg19_fc7"], 2, "argument --feature: 'vgg19_fc7' is not COLUMN=PATH"),
        (["--feature", "=x.parquet"], 2, "argument --feature: '=x.parquet' is not COLUMN=PATH"),
        (["--feature", "a=x.parquet", "--feature", "a=y.parquet"], 2, "argument --feature: column 'a' given twice"),
        (["--no-doc2vec", "--feature", "texts=x.parquet"], 1, "--feature: 'texts' cannot name exported arrays"),
        (["--format", "npy"], 2, "argument --format: invalid choice: 'npy'"),
        (
            ["--format", "ucch", "--no-doc2vec"],
            1,
            "--feature names no 'vgg19_fc7': make the sidecar with `coco-unified",
        ),
        (
            ["--format", "dchn", "--feature", "vgg19_fc7=vgg.parquet", "--image-feature", "cnnf_fc7"],
            1,
            "vgg.parquet not found",
        ),
    ],
)
def test_bad_feature_flags_are_one_line_errors(arguments, status, named, tmp_path):
    result = export_command(*arguments, cwd=tmp_path)
    assert result.returncode == status and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1 and named in errors[0], result.stderr
    assert not (tmp_path / "out").exists()
