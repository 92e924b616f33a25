"""tools/lib/export_formats.py: every paper format read back with its paper's own access code, on the sample.

The reference format is held to pycocotools' COCO API (the reader the reference preparation used)
on the sample's own annotation files; UCCH, DCHN and DSPH files to their loaders (tests/consumers.py).
"""

import json
import os
import zipfile

import h5py
import numpy as np
import pytest
import scipy.io
from pycocotools.coco import COCO

import coco_unified
from coco_unified import PROTOCOLS, SIDECAR_ROW_GROUP_ROWS, ConfigError, SidecarError
from tests.consumers import dchn_load, dsph_load, ucch_load
from tools.lib.export_formats import DCHN_FILE, UCCH_FILE, fill_rows
from tools.lib.exports import MANIFEST_FILE, ExportOptions, export_pool
from tools.lib.image_features.mean_image import mean_image_sha256, write_mean_image
from tools.lib.pool import read_pool

NUM_QUERY, NUM_TRAIN = 20, 50  # the sample's 243 labeled images hold these, not the papers' 5,000 / 10,000
IMAGE_DIM, CNNF_DIM = 24, 16  # small stand-ins for 4096-d fc7
PAPER_FORMATS = ("reference", "ucch", "dchn", "dsph", "images")


@pytest.fixture(scope="module")
def records(sample_dir):
    return read_pool(str(sample_dir))


@pytest.fixture(scope="module")
def features(oracle, tmp_path_factory):
    """Synthetic sidecars, rows shuffled: vgg19_fc7 stored as float16, cnnf_fc7 with its mean image
    beside it; and each one's vectors by image id as float32, as the exports must hold them."""
    folder = tmp_path_factory.mktemp("export_features")
    rng = np.random.default_rng(7)
    image_ids = rng.permutation(sorted(oracle))
    mean_image = rng.uniform(0, 255, (224, 224, 3))
    vectors, paths = {}, {}
    for column, dim, store in (("vgg19_fc7", IMAGE_DIM, "float16"), ("cnnf_fc7", CNNF_DIM, "float32")):
        matrix = rng.standard_normal((len(image_ids), dim)).astype(np.float32)
        paths[column] = folder / f"{column}.parquet"
        provenance = {"model": f"random {column}", "mean_image_sha256": mean_image_sha256(mean_image)}
        coco_unified.write_feature_sidecar(str(paths[column]), image_ids, {column: matrix}, provenance, store)
        vectors[column] = dict(zip(image_ids.tolist(), matrix.astype(store).astype(np.float32)))
    write_mean_image(mean_image, str(folder / "cnnf_fc7.meanpix"))
    return paths, vectors, mean_image


def options(sample_dir, sidecar, features, out, **changes):
    paths, _, _ = features
    values = {
        "output_dir": str(out),
        "data_dir": str(sample_dir),
        "doc2vec_path": str(sidecar),
        "feature_sidecars": {column: str(path) for column, path in paths.items()},
        "formats": PAPER_FORMATS,
        "num_query": NUM_QUERY,
        "train_sizes": (NUM_TRAIN,),
    }
    return ExportOptions(**{**values, **changes})


@pytest.fixture(scope="module")
def exported(sample_dir, sidecar, features, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_formats") / "out"
    manifest = export_pool(options(sample_dir, sidecar, features, out))
    return out, manifest


@pytest.fixture(scope="module")
def doc2vec_by_id(sidecar, oracle):
    image_ids = sorted(oracle)
    vectors, _ = coco_unified.read_doc2vec_sidecar(str(sidecar), image_ids)
    return dict(zip(image_ids, vectors))


@pytest.fixture(scope="module")
def cocoapi(sample_dir, tmp_path_factory):
    """pycocotools' COCO objects of the sample's own annotation files: {split: (instances, captions)}."""
    folder = tmp_path_factory.mktemp("annotations")
    with zipfile.ZipFile(sample_dir / "annotations_trainval2017.zip") as archive:
        archive.extractall(folder)
    return {
        split: (
            COCO(str(folder / "annotations" / f"instances_{split}.json")),
            COCO(str(folder / "annotations" / f"captions_{split}.json")),
        )
        for split in ("train2017", "val2017")
    }


def image_ids_of(out, name) -> list[int]:
    return np.loadtxt(out / f"{name}_image_ids.txt", dtype=np.int64).tolist()


def stacked(by_id, image_ids):
    return np.stack([by_id[image_id] for image_id in image_ids])


# ----------------------------------------------------------------------------- reference


def test_reference_equals_what_pycocotools_computes(exported, cocoapi, doc2vec_by_id):
    out, _ = exported
    image_split = {image_id: split for split, (instances, _) in cocoapi.items() for image_id in instances.getImgIds()}
    pool_ids = sorted(image_split)
    category_ids = sorted(next(iter(cocoapi.values()))[0].getCatIds())
    labels = np.zeros((len(pool_ids), len(category_ids)), dtype=np.uint8)
    for row, image_id in enumerate(pool_ids):
        instances = cocoapi[image_split[image_id]][0]
        for annotation in instances.loadAnns(instances.getAnnIds(imgIds=image_id)):
            labels[row, category_ids.index(annotation["category_id"])] = 1

    exported_labels = scipy.io.loadmat(out / "labels.COCO.mat")["labels"]
    assert exported_labels.dtype == np.uint8 and np.array_equal(exported_labels, labels)
    clean_id = scipy.io.loadmat(out / "clean_id.COCO.mat")["clean_id"]
    assert clean_id.shape == (1, int(labels.any(axis=1).sum()))  # 0-based indices, as the reference's np.arange
    assert clean_id.ravel().tolist() == np.flatnonzero(labels.sum(1) > 0).tolist()
    texts = scipy.io.loadmat(out / "texts.COCO.d2v-300d.mat")["texts"]
    assert texts.dtype == np.float32 and np.array_equal(texts, stacked(doc2vec_by_id, pool_ids))

    file_names = {
        image["id"]: image["file_name"] for instances, _ in cocoapi.values() for image in instances.dataset["images"]
    }
    id_map = (out / "id-map.COCO.txt").read_text().splitlines()
    assert id_map == [f"{image_id} {file_names[image_id]} {image_split[image_id]}" for image_id in pool_ids]
    categories = next(iter(cocoapi.values()))[0].loadCats(category_ids)
    assert (out / "class-name.COCO.txt").read_text().splitlines() == [f"{c['id']} {c['name']}" for c in categories]
    assert image_ids_of(out, "reference") == pool_ids


def test_reference_cnnf_features_and_mean_image(exported, features, oracle):
    out, manifest = exported
    _, vectors, mean_image = features
    with h5py.File(out / "images.COCO.cnnf7.h5", "r") as file:
        assert list(file) == ["images"] and file["images"].dtype == np.float32
        assert np.array_equal(file["images"][()], stacked(vectors["cnnf_fc7"], sorted(oracle)))
    assert np.array_equal(scipy.io.loadmat(out / "avgpix.COCO.py.mat")["meanpix"], mean_image)
    entry = manifest["formats"]["reference"]["features"]["images"]
    assert entry["column"] == "cnnf_fc7" and entry["provenance"]["model"] == "random cnnf_fc7"


def test_a_cnnf_sidecar_without_its_mean_image_is_refused(sample_dir, sidecar, features, tmp_path):
    paths, _, _ = features
    lone = tmp_path / "cnnf_fc7.parquet"
    lone.write_bytes(paths["cnnf_fc7"].read_bytes())
    feature_sidecars = {"cnnf_fc7": str(lone)}
    with pytest.raises(coco_unified.CocoError, match=r"no mean image beside it .*cnnf_fc7\.meanpix\.mat"):
        export_pool(
            options(
                sample_dir,
                sidecar,
                features,
                tmp_path / "out",
                formats=("reference",),
                feature_sidecars=feature_sidecars,
            )
        )
    mean_image = np.zeros((224, 224, 3))
    write_mean_image(mean_image, str(tmp_path / "cnnf_fc7.meanpix"))  # another mean image than the features'
    with pytest.raises(coco_unified.CocoError, match=r"not the mean image .* computed with"):
        export_pool(
            options(
                sample_dir,
                sidecar,
                features,
                tmp_path / "out",
                formats=("reference",),
                feature_sidecars=feature_sidecars,
            )
        )
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- UCCH and DCHN


def test_ucch_file_read_as_ucch_reads_it(exported, records, features, doc2vec_by_id, oracle):
    out, manifest = exported
    _, vectors, _ = features
    image_ids = image_ids_of(out, "ucch")
    with h5py.File(out / UCCH_FILE, "r") as file:
        assert {key: (file[key].shape, file[key].dtype) for key in file} == {
            "XAll": ((len(image_ids), IMAGE_DIM), np.float32),
            "YAll": ((len(image_ids), coco_unified.DOC2VEC_DIM), np.float32),
            "LAll": ((len(image_ids), 80), np.float32),
        }
    splits = ucch_load(out / UCCH_FILE, test_size=NUM_QUERY)
    query_ids, train_ids = image_ids[-NUM_QUERY:], image_ids[:-NUM_QUERY]
    for name, ids in (("test", query_ids), ("train", train_ids)):
        images, texts, labels = splits[name]
        assert np.array_equal(images, stacked(vectors["vgg19_fc7"], ids))
        assert np.array_equal(texts, stacked(doc2vec_by_id, ids))
        assert np.array_equal(labels, [oracle[image_id]["multi_hot"] for image_id in ids])
    assert not set(query_ids) & set(train_ids) and all(oracle[image_id]["labels"] for image_id in image_ids)
    protocol = PROTOCOLS["ucch"].splits(records, 0, NUM_QUERY, NUM_TRAIN)
    assert query_ids == [records[index].image_id for index in protocol["query"]]
    assert manifest["formats"]["ucch"]["protocol"] == {
        "name": "ucch",
        "seed": 0,
        **{split: len(rows) for split, rows in protocol.items()},
    }


def test_dchn_file_read_as_dchn_reads_it(exported, records, features, doc2vec_by_id, oracle):
    out, _ = exported
    _, vectors, _ = features
    image_ids = np.asarray(image_ids_of(out, "dchn"))
    with h5py.File(out / DCHN_FILE, "r") as file:
        assert sorted(file) == sorted(
            f"{part}_{key}"
            for part in ("train", "test")
            for key in ("imgs_deep", "text", "imgs_labels", "texts_labels")
        )
        for part in ("train", "test"):
            assert np.array_equal(file[f"{part}_imgs_labels"][()], file[f"{part}_texts_labels"][()])
        assert len(file["train_imgs_deep"]) == NUM_QUERY + NUM_TRAIN
    splits = dchn_load(out / DCHN_FILE, query_size=NUM_QUERY, train_size=NUM_TRAIN)
    positions = {"query": slice(0, NUM_QUERY), "train": slice(NUM_QUERY, NUM_QUERY + NUM_TRAIN)}
    positions["retrieval"] = slice(NUM_QUERY, None)
    protocol = PROTOCOLS["dchn"].splits(records, 0, NUM_QUERY, NUM_TRAIN)
    for name, (images, texts, labels) in splits.items():
        ids = image_ids[positions[name]].tolist()
        assert ids == [records[index].image_id for index in protocol[name]]
        assert images.dtype == texts.dtype == np.float32
        assert np.array_equal(images, stacked(vectors["vgg19_fc7"], ids))
        assert np.array_equal(texts, stacked(doc2vec_by_id, ids))
        assert np.array_equal(labels, [oracle[image_id]["multi_hot"] for image_id in ids])
    assert not set(image_ids[positions["query"]]) & set(image_ids[positions["train"]])
    assert not set(image_ids[positions["query"]]) & set(image_ids[positions["retrieval"]])


def test_another_image_and_text_feature_fill_the_files(sample_dir, sidecar, features, tmp_path):
    paths, vectors, _ = features
    out = tmp_path / "out"
    export_pool(
        options(
            sample_dir, sidecar, features, out, formats=("ucch",), image_feature="cnnf_fc7", text_feature="vgg19_fc7"
        )
    )
    ids = image_ids_of(out, "ucch")
    with h5py.File(out / UCCH_FILE, "r") as file:
        assert np.array_equal(file["XAll"][()], stacked(vectors["cnnf_fc7"], ids))
        assert np.array_equal(file["YAll"][()], stacked(vectors["vgg19_fc7"], ids))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"feature_sidecars": {}}, r"needs the vgg19_fc7 vectors, .*coco-unified image-features --model vgg19"),
        (
            {"image_feature": "clip_image"},
            r"needs the clip_image vectors, .*image-features --model clip.*another image_feature",
        ),
        ({"doc2vec": False}, r"needs the Doc2Vec vectors: .*coco-unified doc2vec"),
    ],
)
def test_a_missing_feature_names_the_command_that_makes_it(sample_dir, sidecar, features, tmp_path, changes, match):
    with pytest.raises(SidecarError, match=match):
        export_pool(options(sample_dir, sidecar, features, tmp_path / "out", formats=("dchn",), **changes))
    assert not (tmp_path / "out").exists()


def test_a_missing_doc2vec_sidecar_names_the_command_that_makes_it(sample_dir, sidecar, features, tmp_path):
    absent = tmp_path / "absent.parquet"
    with pytest.raises(SidecarError, match=r"absent\.parquet not found\. Create it with `coco-unified doc2vec"):
        export_pool(
            options(sample_dir, sidecar, features, tmp_path / "out", formats=("ucch",), doc2vec_path=str(absent))
        )
    assert not (tmp_path / "out").exists()


def test_sizes_the_sample_cannot_hold_fail_before_anything_is_written(sample_dir, sidecar, features, tmp_path):
    with pytest.raises(ConfigError, match=r"dchn protocol on this copy of COCO"):
        export_pool(
            options(sample_dir, sidecar, features, tmp_path / "out", formats=("images", "dchn"), num_query=5000)
        )
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- DSPH and images


def test_dsph_loader_draws_the_dsph_protocol_from_the_files(exported, records, cocoapi, oracle):
    out, manifest = exported
    loaded = dsph_load(out, query_num=NUM_QUERY, train_num=NUM_TRAIN)
    protocol = PROTOCOLS["dsph"].splits(records, None, NUM_QUERY, NUM_TRAIN)
    by_path = {os.path.abspath(out / "images" / f"{record.index}.jpg"): record for record in records}
    for name, (paths, captions, labels) in loaded.items():
        drawn = [by_path[path] for path in paths]
        assert [record.index for record in drawn] == protocol[name].tolist()
        assert labels.dtype == np.int64 and np.array_equal(labels, [oracle[r.image_id]["multi_hot"] for r in drawn])
        for record, image_captions in zip(drawn, captions):
            # as its make_coco.py: the captions of the captions JSON, in its order
            api = cocoapi[record.coco_split][1]
            expected = [annotation["caption"] for annotation in api.loadAnns(api.getAnnIds(imgIds=record.image_id))]
            assert [caption.rstrip() for caption in image_captions] == [caption.rstrip() for caption in expected]
        with open(paths[0], "rb") as file:
            assert file.read() == oracle[drawn[0].image_id]["image"]
    query, train = set(loaded["query"][0]), set(loaded["train"][0])
    assert not query & train and not query & set(loaded["retrieval"][0])
    assert manifest["formats"]["dsph"]["protocol"]["seed"] == coco_unified.DSPH_SEED


def test_dsph_rows_are_its_make_coco_order(exported, cocoapi):
    """make_coco.py: the images with an instance in train2017 sorted by id, then val2017's likewise."""
    out, _ = exported
    expected = []
    for split in ("train2017", "val2017"):
        instances = cocoapi[split][0]
        expected += sorted({annotation["image_id"] for annotation in instances.dataset["annotations"]})
    assert image_ids_of(out, "dsph") == expected


def test_images_from_the_zips_hold_the_image_bytes(exported, oracle):
    out, manifest = exported
    pool_ids = sorted(oracle)
    assert sorted(os.listdir(out / "images")) == sorted(f"{index}.jpg" for index in range(len(pool_ids)))
    for index, image_id in enumerate(pool_ids):
        assert (out / "images" / f"{index}.jpg").read_bytes() == oracle[image_id]["image"]
    assert manifest["formats"]["images"]["written_as"]["read from the zips"] == len(pool_ids)


def test_images_from_a_mirror_are_read_in_archive_order(sample_dir, sidecar, features, oracle, tmp_path, mirror):
    out = tmp_path / "out"
    mirror.traffic(reset=True)
    manifest = export_pool(
        options(sample_dir, sidecar, features, out, formats=("images",), data_dir=None, base_url=mirror.base_url)
    )
    for index, image_id in enumerate(sorted(oracle)):
        assert (out / "images" / f"{index}.jpg").read_bytes() == oracle[image_id]["image"]
    train = mirror.traffic().for_path("zips/train2017.zip")
    # one sequential read of the entries plus the reads of the central directory (its end record is
    # looked for, then the directory read: a few hundred bytes twice), not a request per image
    assert train.requests < 10 and train.body_bytes <= 1.05 * (sample_dir / "train2017.zip").stat().st_size
    assert manifest["formats"]["images"]["written_as"]["read from the zips"] == len(oracle)


def test_images_from_an_extracted_copy_are_links(extracted_dir, sidecar, features, oracle, tmp_path):
    out = tmp_path / "out"
    manifest = export_pool(options(extracted_dir, sidecar, features, out, formats=("images",)))
    for index, image_id in enumerate(sorted(oracle)):
        row = oracle[image_id]
        source = extracted_dir / row["coco_split"] / row["file_name"]
        assert os.path.samefile(out / "images" / f"{index}.jpg", source)
    assert manifest["formats"]["images"]["written_as"]["hard links"] == len(oracle)
    export_pool(options(extracted_dir, sidecar, features, out, formats=("images",)))  # again, over the links


# ----------------------------------------------------------------------------- manifest and streaming


def test_manifest_names_every_format_with_its_row_ids(exported, sample_dir, oracle):
    out, manifest = exported
    written = json.loads((out / MANIFEST_FILE).read_text())
    assert written == manifest and sorted(written["formats"]) == sorted(PAPER_FORMATS)
    assert written["source"] == str(sample_dir) and written["images"] == len(oracle)
    assert written["labeled"] == sum(1 for row in oracle.values() if row["labels"])
    for name, entry in written["formats"].items():
        assert entry["image_ids"] == f"{name}_image_ids.txt" and len(image_ids_of(out, name)) == entry["rows"]


def test_credentials_stay_out_of_the_manifest(sample_dir, sidecar, features, tmp_path, mirror):
    secret = mirror.base_url.replace("http://", "http://alice:s3cret@")
    manifest = export_pool(
        options(sample_dir, sidecar, features, tmp_path / "out", formats=("ucch",), data_dir=None, base_url=secret)
    )
    assert "s3cret" not in (tmp_path / "out" / MANIFEST_FILE).read_text()
    assert manifest["source"].startswith("http://127.0.0.1")


def test_rows_are_streamed_into_their_places_across_row_groups(tmp_path):
    """More rows than a row group, in another order than the file's, into two targets (as DCHN's parts)."""
    rng = np.random.default_rng(1)
    file_ids = rng.permutation(np.arange(10, 10 + 3 * SIDECAR_ROW_GROUP_ROWS))
    matrix = rng.standard_normal((len(file_ids), 5)).astype(np.float32)
    path = str(tmp_path / "f.parquet")
    coco_unified.write_feature_sidecar(path, file_ids, {"f": matrix}, {})
    wanted = rng.permutation(file_ids)[: 2 * SIDECAR_ROW_GROUP_ROWS + 7]
    batches = list(coco_unified.iter_sidecar_rows(path, coco_unified.feature_column("f", path), wanted))
    assert len(batches) == 3 and all(np.all(np.diff(positions) > 0) for positions, _ in batches)
    first, second = np.zeros((100, 5), np.float32), np.zeros((len(wanted) - 100, 5), np.float32)
    fill_rows(coco_unified.feature_column("f", path), wanted, [(first, 0), (second, 100)])
    row_of = {image_id: row for row, image_id in enumerate(file_ids.tolist())}
    expected = matrix[[row_of[image_id] for image_id in wanted.tolist()]]
    assert np.array_equal(np.concatenate([first, second]), expected)
