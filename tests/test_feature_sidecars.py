"""Vector columns joined from feature sidecars (`feature_sidecars={column: path}`), Doc2Vec among them."""

import os
import shutil

import datasets
import numpy as np
import pytest
from test_builder import make_builder, raises_coco_error

import coco_unified
from coco_unified import ConfigError, SidecarError, write_feature_sidecar

FEATURES_WORDS = r"coco-unified image-features .*feature_sidecars"


@pytest.fixture(scope="module")
def features_sidecar(oracle, tmp_path_factory):
    """Two features in one sidecar, stored as float16, rows in an order other than the pool's."""
    image_ids = sorted(oracle)[::-1]
    rng = np.random.default_rng(7)
    matrices = {
        "vgg19_fc7": rng.standard_normal((len(image_ids), 24)),
        "clip_image": rng.standard_normal((len(image_ids), 6)),
    }
    path = tmp_path_factory.mktemp("features") / "features.parquet"
    write_feature_sidecar(str(path), image_ids, matrices, {"model": "random, for tests"}, store="float16")
    expected = {
        name: dict(zip(image_ids, matrix.astype(np.float16).astype(np.float32))) for name, matrix in matrices.items()
    }
    return path, expected


@pytest.fixture(scope="module")
def sidecar_vectors(sidecar, oracle):
    """The Doc2Vec sidecar's vectors by image id."""
    image_ids = sorted(oracle)
    return dict(zip(image_ids, coco_unified.read_doc2vec_sidecar(str(sidecar), image_ids)[0]))


def load(tmp_path, streaming, **kwargs):
    builder = make_builder(tmp_path, "no_images", **kwargs)
    if streaming:
        return builder.as_streaming_dataset("train")
    builder.download_and_prepare()
    return builder.as_dataset("train")


@pytest.mark.parametrize("streaming", [False, True])
def test_joined_columns_equal_the_sidecars_vectors(
    streaming, features_sidecar, sidecar, sidecar_vectors, sample_dir, oracle, tmp_path
):
    path, expected = features_sidecar
    dataset = load(
        tmp_path,
        streaming,
        data_dir=str(sample_dir),
        doc2vec=True,
        doc2vec_path=str(sidecar),
        feature_sidecars={"vgg19_fc7": str(path), "clip_image": str(path)},
    )
    assert dataset.features["vgg19_fc7"] == datasets.Sequence(datasets.Value("float32"), length=24)
    assert dataset.features["clip_image"].length == 6 and dataset.features["doc2vec"].length == 300
    rows = list(dataset)
    assert sorted(row["image_id"] for row in rows) == sorted(oracle)
    for row in rows:
        for name in ("vgg19_fc7", "clip_image"):
            assert np.array_equal(np.asarray(row[name], np.float32), expected[name][row["image_id"]])
        assert np.array_equal(np.asarray(row["doc2vec"], np.float32), sidecar_vectors[row["image_id"]])


def test_protocol_splits_carry_their_own_vectors(features_sidecar, sample_dir, tmp_path):
    path, expected = features_sidecar
    builder = make_builder(
        tmp_path,
        "protocol",
        data_dir=str(sample_dir),
        with_images=False,
        num_query=10,
        num_train=20,
        feature_sidecars={"clip_image": str(path)},
    )
    builder.download_and_prepare()
    for split in ("query", "database", "train"):
        for row in builder.as_dataset(split):
            assert np.array_equal(np.asarray(row["clip_image"], np.float32), expected["clip_image"][row["image_id"]])


def test_each_set_of_sidecars_has_its_own_cache(features_sidecar, sample_dir, tmp_path, monkeypatch):
    path, _ = features_sidecar
    monkeypatch.chdir(path.parent)

    def cache_of(**kwargs):
        return make_builder(tmp_path, "no_images", data_dir=str(sample_dir), **kwargs).cache_dir

    both = cache_of(feature_sidecars={"vgg19_fc7": str(path), "clip_image": str(path)})
    assert cache_of(feature_sidecars={"clip_image": path.name, "vgg19_fc7": str(path)}) == both  # order, relative path
    assert cache_of(feature_sidecars={"clip_image": str(path)}) != both
    assert cache_of(feature_sidecars={}) == cache_of()
    other = path.parent / "copy" / path.name
    other.parent.mkdir(exist_ok=True)
    shutil.copy(path, other)
    assert cache_of(feature_sidecars={"vgg19_fc7": str(other), "clip_image": str(path)}) != both


def test_missing_file_says_how_to_make_it(sample_dir, tmp_path):
    missing = tmp_path / "vgg.parquet"
    with raises_coco_error(SidecarError, rf"vgg19_fc7 sidecar {missing} not found\. .*{FEATURES_WORDS}"):
        make_builder(tmp_path, data_dir=str(sample_dir), feature_sidecars={"vgg19_fc7": str(missing)})


def test_misspelt_column_names_the_columns_there_are(features_sidecar, sample_dir, tmp_path):
    path, _ = features_sidecar
    with raises_coco_error(
        SidecarError, rf"{path}: has no column 'vgg19_fc8' \(did you mean 'vgg19_fc7'\?\); its vector columns are "
    ):
        make_builder(tmp_path, data_dir=str(sample_dir), feature_sidecars={"vgg19_fc8": str(path)})


def test_sidecar_missing_an_image_names_it(sample_dir, oracle, tmp_path):
    image_ids = sorted(oracle)[1:]
    path = tmp_path / "clip.parquet"
    write_feature_sidecar(str(path), image_ids, {"clip_image": np.ones((len(image_ids), 4))}, {})
    with raises_coco_error(
        SidecarError,
        rf"{path}: no clip_image vector for 1 image of the pool \(e\.g\. ids \[{sorted(oracle)[0]}\]\); it was built "
        rf"for other data\. Rebuild it with .*{FEATURES_WORDS}",
    ):
        load(tmp_path, False, data_dir=str(sample_dir), feature_sidecars={"clip_image": str(path)})


@pytest.mark.parametrize("streaming", [False, True])
def test_image_skipped_as_undecodable_is_named(streaming, sample_dir, oracle, tmp_path):
    skipped, *image_ids = sorted(oracle)
    path = tmp_path / "clip.parquet"
    provenance = {"skipped_images": [{"image_id": skipped, "file_name": "x.jpg", "error": "truncated JPEG"}]}
    write_feature_sidecar(str(path), image_ids, {"clip_image": np.ones((len(image_ids), 4))}, provenance)
    with raises_coco_error(
        SidecarError,
        rf"1 of them could not be decoded when it was made, e\.g\. image {skipped} \(x\.jpg: truncated JPEG\)\. "
        r"Replace the image and rebuild the sidecar, or build without the column .*leave 'clip_image' out",
    ):
        list(load(tmp_path, streaming, data_dir=str(sample_dir), feature_sidecars={"clip_image": str(path)}))


def test_sidecar_changed_after_the_builder_was_made(features_sidecar, sample_dir, oracle, tmp_path):
    path = tmp_path / "clip.parquet"
    shutil.copy(features_sidecar[0], path)
    builder = make_builder(tmp_path, "no_images", data_dir=str(sample_dir), feature_sidecars={"clip_image": str(path)})
    image_ids = sorted(oracle)
    write_feature_sidecar(str(path), image_ids, {"clip_image": np.ones((len(image_ids), 5))}, {})
    with raises_coco_error(SidecarError, rf"{path}: clip_image vectors are 5-d, expected 6-d; rebuild it with "):
        builder.download_and_prepare()


def test_doc2vec_sidecar_of_another_dimension(sample_dir, oracle, tmp_path):
    path = tmp_path / "doc2vec.parquet"
    image_ids = sorted(oracle)
    write_feature_sidecar(str(path), image_ids, {"doc2vec": np.ones((len(image_ids), 100))}, {})
    with raises_coco_error(
        SidecarError, rf"{path}: Doc2Vec vectors are 100-d, expected 300-d; rebuild it with `coco-unified doc2vec"
    ):
        load(tmp_path, False, data_dir=str(sample_dir), doc2vec=True, doc2vec_path=str(path))


def test_non_finite_and_null_vectors_are_refused(oracle, tmp_path):
    image_ids = sorted(oracle)[:3]
    path = tmp_path / "bad.parquet"
    with pytest.raises(SidecarError, match=rf"{path}: clip_image holds NaN or infinite values"):
        write_feature_sidecar(str(path), image_ids, {"clip_image": np.full((3, 4), np.inf)}, {})
    with pytest.raises(SidecarError, match=rf"{path}: image ids \[{image_ids[0]}\] appear more than once"):
        write_feature_sidecar(str(path), image_ids[:1] * 2, {"clip_image": np.ones((2, 4))}, {})
    with pytest.raises(SidecarError, match=rf"{path}: clip_image has no value in a row \(shape \(3, 0\)\)"):
        write_feature_sidecar(str(path), image_ids, {"clip_image": np.ones((3, 0))}, {})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"features": {"vgg19_fc7": "vgg.parquet"}}, r"features= is datasets' own argument .*feature_sidecars="),
        ({"feature_sidecars": ["vgg.parquet"]}, r"feature_sidecars=\['vgg\.parquet'\]: pass a dict of column name"),
        ({"feature_sidecars": {"labels": "x.parquet"}}, r"feature_sidecars: 'labels' is not a free column name"),
        ({"feature_sidecars": {"doc2vec": "x.parquet"}, "doc2vec": True}, r"'doc2vec' is not a free column name"),
        ({"feature_sidecars": {"clip_image": 3}}, r"feature_sidecars\['clip_image'\]=3: pass the path"),
    ],
)
def test_bad_feature_sidecars_fail_when_the_builder_is_made(kwargs, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        make_builder(tmp_path, **kwargs)


def test_doc2vec_sidecar_reads_as_a_feature_sidecar(sidecar, sidecar_vectors, oracle):
    image_ids = sorted(oracle)
    vectors, provenance = coco_unified.read_feature_sidecar(str(sidecar), "doc2vec", image_ids, dim=300)
    assert np.array_equal(vectors, np.stack([sidecar_vectors[image_id] for image_id in image_ids]))
    assert provenance == coco_unified.read_doc2vec_provenance(str(sidecar))
    assert provenance["model"] == "random, for tests" and os.path.isfile(sidecar)
