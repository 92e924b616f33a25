"""The builder against a generated COCO sample: every source, config, mode and bad input."""

import contextlib
import dataclasses
import gc
import hashlib
import itertools
import json
import logging
import os
import re
import socket
import threading
import time
import zipfile

import datasets
import numpy as np
import pyarrow as pa
import pytest
from datasets.distributed import split_dataset_by_node

import coco_unified
from coco_unified import (
    AnnotationError,
    ArchiveError,
    CocoError,
    CocoUnified,
    ConfigError,
    MissingPartError,
    ServerUnreachableError,
    ShadowedImageError,
    SidecarError,
)

ORACLE_COLUMNS = ("index", "image_id", "file_name", "width", "height", "captions", "caption_ids", "labels", "multi_hot")
IMAGE_ZIPS = ("zips/train2017.zip", "zips/val2017.zip")
ANNOTATIONS_ZIP = "annotations/annotations_trainval2017.zip"
LOGGER = "datasets.coco_unified"
# datasets < 4 prefills a builder's info (split sizes included) from the dataset_infos.json beside it.
DATASETS_READS_SHIPPED_INFOS = int(datasets.__version__.split(".")[0]) < 4


def make_builder(tmp_path, config="default", **kwargs):
    kwargs.setdefault("doc2vec", False)
    return CocoUnified(config_name=config, cache_dir=str(tmp_path / "cache"), **kwargs)


def prepare(tmp_path, config="default", num_proc=None, **kwargs):
    builder = make_builder(tmp_path, config, **kwargs)
    builder.download_and_prepare(num_proc=num_proc)
    return builder.as_dataset("train")


def stream(tmp_path, config="default", **kwargs):
    return make_builder(tmp_path, config, **kwargs).as_streaming_dataset("train")


def raw_rows(dataset):
    """Rows as plain values, images as their bytes."""
    if "image" in dataset.column_names:
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return list(dataset)


def assert_matches_oracle(rows, oracle, image_ids, sidecar_vectors=None):
    assert sorted(row["image_id"] for row in rows) == sorted(image_ids)
    for row in rows:
        expected = oracle[row["image_id"]]
        assert {column: row[column] for column in ORACLE_COLUMNS} == {
            column: expected[column] for column in ORACLE_COLUMNS
        }
        assert ["train2017", "val2017"][row["coco_split"]] == expected["coco_split"]
        if "image" in row:
            assert row["image"]["bytes"] == expected["image"]
            assert row["image"]["path"] == expected["file_name"]
        if sidecar_vectors is not None:
            assert np.array_equal(np.asarray(row["doc2vec"], dtype=np.float32), sidecar_vectors[row["image_id"]])


@contextlib.contextmanager
def raises_coco_error(kind, pattern):
    """A `kind` of CocoError matching `pattern`, raised directly or as the cause of datasets' generation error."""
    with pytest.raises((CocoError, datasets.exceptions.DatasetGenerationError)) as caught:
        yield caught
    error = caught.value if isinstance(caught.value, CocoError) else caught.value.__cause__
    assert isinstance(error, kind), repr(caught.value)
    assert re.search(pattern, str(error)), str(error)


@pytest.fixture(scope="module")
def sidecar_vectors(sidecar, oracle):
    ids = sorted(oracle)
    vectors, _ = coco_unified.read_doc2vec_sidecar(str(sidecar), ids)
    return dict(zip(ids, vectors))


# ----------------------------------------------------------------------------- rows and order


@pytest.mark.parametrize("source", ["zips", "folders"])
def test_prepared_pool_matches_annotations_in_id_order(
    source, sample_dir, extracted_dir, oracle, sidecar, sidecar_vectors, tmp_path
):
    data_dir = sample_dir if source == "zips" else extracted_dir
    dataset = prepare(tmp_path, data_dir=str(data_dir), doc2vec=True, doc2vec_path=str(sidecar))
    rows = raw_rows(dataset)
    assert [row["index"] for row in rows] == list(range(len(oracle)))
    assert [row["image_id"] for row in rows] == sorted(oracle)
    assert_matches_oracle(rows, oracle, oracle, sidecar_vectors)
    assert dataset.features["labels"].feature.names[0] == "person"
    assert dataset.features["doc2vec"].length == 300 and dataset.features["multi_hot"].length == 80


@pytest.mark.parametrize(
    "config, labeled_only, with_images",
    [("labeled", True, True), ("no_images", False, False), ("labeled_no_images", True, False)],
)
def test_named_configs(config, labeled_only, with_images, sample_dir, oracle, tmp_path):
    rows = raw_rows(prepare(tmp_path, config, data_dir=str(sample_dir)))
    wanted = [image_id for image_id, row in oracle.items() if row["labels"] or not labeled_only]
    assert len(wanted) < len(oracle) or not labeled_only  # the sample has unlabeled images to drop
    assert_matches_oracle(rows, oracle, wanted)
    assert ("image" in rows[0]) == with_images
    assert "doc2vec" not in rows[0]


def test_config_kwargs_combine(sample_dir, oracle, tmp_path):
    rows = raw_rows(prepare(tmp_path, "default", data_dir=str(sample_dir), labeled_only=True, with_images=False))
    assert_matches_oracle(rows, oracle, [image_id for image_id, row in oracle.items() if row["labels"]])
    assert "image" not in rows[0]


def test_relative_paths_mean_the_current_folder(sample_dir, sidecar, oracle, tmp_path, monkeypatch):
    # The same relative path from two folders names two copies: each is read and cached on its own.
    other_copy = tmp_path / "other_copy"
    other_copy.mkdir()
    for archive in sample_dir.iterdir():
        (other_copy / archive.name).symlink_to(archive)
    datasets_built = []
    for folder, copy in ((tmp_path / "first", sample_dir), (tmp_path / "second", other_copy)):
        folder.mkdir()
        (folder / "coco").symlink_to(copy)
        (folder / "vectors.parquet").symlink_to(sidecar)
        monkeypatch.chdir(folder)
        builder = CocoUnified(
            config_name="no_images", data_dir="coco", doc2vec_path="vectors.parquet", cache_dir=str(tmp_path / "cache")
        )
        assert builder.config.data_dir == str(folder / "coco")
        builder.download_and_prepare()
        datasets_built.append(builder.as_dataset("train"))
    first, second = datasets_built
    assert first.cache_files[0]["filename"] != second.cache_files[0]["filename"]
    assert len(first) == len(second) == len(oracle)


@pytest.mark.parametrize("load", [prepare, stream])
def test_a_file_here_named_like_a_pool_image_is_refused(load, sample_dir, oracle, tmp_path, monkeypatch):
    # datasets.Image keeps the path of an existing file instead of the bytes: this file would be
    # stored, or decoded, in place of the image of its name.
    monkeypatch.chdir(tmp_path)
    name = oracle[max(oracle)]["file_name"]
    (tmp_path / name).write_bytes(b"not that image")
    pattern = (
        rf"^{re.escape(str(tmp_path))}: holds 1 file named like pool images \(e\.g\. {name}\);.* Run from a folder"
    )
    with raises_coco_error(ShadowedImageError, pattern):
        list(load(tmp_path, data_dir=str(sample_dir)))  # a stream checks each shard as it starts it


def test_num_proc_gives_the_same_dataset(sample_dir, tmp_path):
    single = raw_rows(prepare(tmp_path / "one", data_dir=str(sample_dir)))
    double = raw_rows(prepare(tmp_path / "two", data_dir=str(sample_dir), num_proc=2))
    assert single == double


@pytest.mark.parametrize("config, source", [("default", "zips"), ("default", "folders"), ("labeled_no_images", "zips")])
def test_streaming_equals_prepared_row_for_row(config, source, sample_dir, extracted_dir, tmp_path):
    data_dir = str(sample_dir if source == "zips" else extracted_dir)
    prepared = raw_rows(prepare(tmp_path, config, data_dir=data_dir))
    streamed = raw_rows(stream(tmp_path, config, data_dir=data_dir))
    assert sorted(streamed, key=lambda row: row["index"]) == prepared


def test_streaming_from_mirror_reads_each_image_byte_once(mirror, sample_dir, oracle, tmp_path):
    dataset = stream(tmp_path, base_url=mirror.base_url)
    assert dataset.n_shards >= 16
    rows = raw_rows(dataset)
    assert_matches_oracle(rows, oracle, oracle)
    traffic = mirror.traffic()
    image_zip_bytes = sum(os.path.getsize(sample_dir / os.path.basename(path)) for path in IMAGE_ZIPS)
    fetched = sum(traffic.for_path(path).body_bytes for path in IMAGE_ZIPS)
    image_bytes = sum(len(row["image"]) for row in oracle.values())
    assert image_bytes < fetched <= 1.05 * image_zip_bytes
    annotations = traffic.for_path("annotations/annotations_trainval2017.zip").body_bytes
    assert annotations <= os.path.getsize(sample_dir / "annotations_trainval2017.zip")


@pytest.mark.parametrize("world_size", [2, 4])
def test_nodes_share_the_image_bytes(world_size, mirror, sample_dir, oracle, tmp_path):
    """split_dataset_by_node divides the shards only when the nodes divide their number; otherwise
    every node reads the whole pool and keeps every n-th row."""
    image_ids, fetched = [], 0
    for rank in range(world_size):
        dataset = stream(tmp_path, base_url=mirror.base_url)
        assert dataset.n_shards == coco_unified.DEFAULT_NUM_SHARDS
        part = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        mirror.traffic(reset=True)
        image_ids += [row["image_id"] for row in raw_rows(part)]
        fetched += sum(mirror.traffic().for_path(path).body_bytes for path in IMAGE_ZIPS)
    assert sorted(image_ids) == sorted(oracle)
    assert fetched <= 1.05 * sum(os.path.getsize(sample_dir / os.path.basename(path)) for path in IMAGE_ZIPS)


@pytest.mark.parametrize(
    "sizes, total, shares",
    [
        ([118_287, 5_000], 16, [15, 1]),  # COCO 2017's archives
        ([118_287, 5_000], 1, [1, 1]),  # one shard of each archive at least
        ([1_000, 1, 1], 3, [1, 1, 1]),
        ([2, 1], 16, [2, 1]),  # no share above its size
        ([10, 10, 10], 4, [2, 1, 1]),
    ],
)
def test_apportion(sizes, total, shares):
    assert coco_unified.apportion(sizes, total) == shares


def test_prepared_from_mirror(mirror, oracle, tmp_path):
    assert_matches_oracle(raw_rows(prepare(tmp_path, base_url=mirror.base_url)), oracle, oracle)


@pytest.mark.parametrize("streaming", [False, True])
def test_no_images_fetches_no_image_bytes(streaming, mirror, oracle, tmp_path):
    if streaming:
        rows = list(stream(tmp_path, "no_images", base_url=mirror.base_url))
    else:
        rows = list(prepare(tmp_path, "no_images", base_url=mirror.base_url))
    assert len(rows) == len(oracle)
    traffic = mirror.traffic()
    assert [traffic.for_path(path).requests for path in IMAGE_ZIPS] == [0, 0]


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("world_size", [2, 3])
def test_nodes_cover_the_pool_exactly_once(world_size, sample_dir, oracle, tmp_path):
    dataset = stream(tmp_path, "default", data_dir=str(sample_dir)).remove_columns("image")
    seen = []
    for rank in range(world_size):
        seen += [row["index"] for row in split_dataset_by_node(dataset, rank=rank, world_size=world_size)]
    assert sorted(seen) == list(range(len(oracle)))


def test_shards_divide_each_archive_by_bytes(sample_dir, tmp_path):
    builder = make_builder(tmp_path, data_dir=str(sample_dir), num_shards=20)
    generator = builder._split_generators(datasets.StreamingDownloadManager(base_path=str(tmp_path)))[0]
    shards = generator.gen_kwargs["shards"]
    train_shards = [shard for shard in shards if shard.records[0].coco_split == "train2017"]
    assert len(train_shards) == 19 and len(shards) == 20  # val2017 holds 4% of the sample's images
    for shard in shards:  # one contiguous run of one archive: a single request
        members = [entry.member for entry in shard.images]
        assert {entry.source.name for entry in shard.images} == {shard.records[0].coco_split}
        assert all(a.start < b.start for a, b in zip(members, members[1:]))
    spans = [sum(e.member.end - e.member.start for e in shard.images) for shard in train_shards]
    assert max(spans) < 2 * min(spans)


# ----------------------------------------------------------------------------- network faults


def test_dropped_connection_resumes_from_the_offset_reached(mirror, oracle, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "RETRY_BASE_DELAY", 0.01)
    dataset = stream(tmp_path, base_url=mirror.base_url, num_shards=1)
    mirror.traffic(reset=True)
    mirror.drop_after("zips/train2017.zip", 5000, times=2)
    rows = raw_rows(dataset)
    assert_matches_oracle(rows, oracle, oracle)
    assert mirror.traffic().for_path("zips/train2017.zip").requests == 3


def test_busy_server_is_retried(mirror, oracle, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "RETRY_BASE_DELAY", 0.01)
    dataset = stream(tmp_path, base_url=mirror.base_url)
    mirror.fail_status("zips/val2017.zip", 503, times=2)
    assert_matches_oracle(raw_rows(dataset), oracle, oracle)


def test_http_error_names_the_url(mirror, tmp_path):
    with raises_coco_error(MissingPartError, r"annotations_trainval2017\.zip.*not found"):
        stream(tmp_path, base_url=mirror.base_url + "/no-such-mirror")


@pytest.mark.parametrize("when", ["reading images", "opening"])
def test_server_ignoring_range_is_reported(when, mirror, tmp_path):
    if when == "opening":
        mirror.ignore_range("zips/train2017.zip")
    with raises_coco_error(
        ArchiveError, r"train2017\.zip: the server ignores Range requests \(answered 200 to a ranged"
    ):
        dataset = stream(tmp_path, base_url=mirror.base_url)
        mirror.ignore_range("zips/train2017.zip")
        list(dataset)


def unused_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# What each failure to reach the mirror raises, and what its message says was tried.
NETWORK_FAULTS = {
    "dns": (ServerUnreachableError, r"cannot be reached: the host name does not resolve .* after 6 attempts over"),
    "refused": (ServerUnreachableError, r"cannot be reached: connection refused after 6 attempts over"),
    "404": (
        MissingPartError,
        r"not found \(HTTP 404 from 127\.0\.0\.1:\d+, 1 attempt\)\. Check base_url: a mirror needs the official",
    ),
    "503": (ServerUnreachableError, r"cannot be reached: HTTP 503 from 127\.0\.0\.1:\d+ after 6 attempts over"),
}


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("fault", list(NETWORK_FAULTS))
def test_unreachable_mirror_says_what_was_tried_and_how_to_work_offline(
    fault, streaming, mirror, tmp_path, monkeypatch
):
    monkeypatch.setattr(coco_unified, "RETRY_BASE_DELAY", 0.01)
    for proxy in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):  # a proxy would answer for the lost host
        monkeypatch.delenv(proxy, raising=False)
    base_url = {
        "dns": "http://coco-mirror.invalid",  # RFC 6761: never resolves
        "refused": f"http://127.0.0.1:{unused_loopback_port()}",
        "404": mirror.base_url + "/no-such-mirror",
        "503": mirror.base_url,
    }[fault]
    if fault == "503":
        mirror.fail_status(ANNOTATIONS_ZIP, 503, times=100)
    kind, what = NETWORK_FAULTS[fault]
    offline = r"To work offline, download train2017\.zip, val2017\.zip, annotations_trainval2017\.zip .* data_dir="
    with raises_coco_error(kind, rf"^{re.escape(f'{base_url}/{ANNOTATIONS_ZIP}')}: {what}.*{offline}"):
        (stream if streaming else prepare)(tmp_path, "no_images", base_url=base_url)


def test_busy_server_is_retried_before_downloading(mirror, oracle, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "RETRY_BASE_DELAY", 0.01)
    mirror.fail_status(ANNOTATIONS_ZIP, 503, times=2)
    assert len(prepare(tmp_path, "no_images", base_url=mirror.base_url)) == len(oracle)


def test_reads_failing_every_retry_are_reported(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "RETRY_BASE_DELAY", 0.01)
    dataset = stream(tmp_path, base_url=mirror.base_url)
    mirror.fail_status("zips/val2017.zip", 503, times=100)
    with raises_coco_error(
        ServerUnreachableError,
        rf"val2017\.zip \(bytes [\d,]+-[\d,]+\): .*HTTP 503 from 127\.0\.0\.1:\d+ after {coco_unified.ATTEMPTS} attempts",
    ):
        list(dataset)


# ----------------------------------------------------------------------------- bad input


def rewrite_zip(path, transform):
    """Rewrite a zip member by member: transform(name, data) returns new data, or None to drop it."""
    with zipfile.ZipFile(path) as reader:
        members = [(info, reader.read(info)) for info in reader.infolist()]
    with zipfile.ZipFile(path, "w") as writer:
        for info, data in members:
            new_data = transform(info.filename, data)
            if new_data is not None:
                writer.writestr(info, new_data)


def edit_annotation(path, file_name, edit):
    def transform(name, data):
        if name != f"annotations/{file_name}":
            return data
        document = json.loads(data)
        edit(document)
        return json.dumps(document)

    rewrite_zip(path / "annotations_trainval2017.zip", transform)


def test_image_missing_from_archive(sample_copy, oracle, tmp_path):
    victim = next(row for row in oracle.values() if row["coco_split"] == "val2017")["file_name"]
    rewrite_zip(sample_copy / "val2017.zip", lambda name, data: None if name.endswith(victim) else data)
    with raises_coco_error(ArchiveError, rf"val2017\.zip: 1 annotated image is missing.*{victim}"):
        prepare(tmp_path, data_dir=str(sample_copy))


def test_duplicate_image_id(sample_copy, tmp_path):
    edit_annotation(sample_copy, "captions_val2017.json", lambda doc: doc["images"].append(doc["images"][0]))
    with raises_coco_error(AnnotationError, r"captions_val2017\.json: image id \d+ is listed twice"):
        prepare(tmp_path, data_dir=str(sample_copy))


def test_unknown_category_id(sample_copy, tmp_path):
    def break_first(doc):
        doc["annotations"][0]["category_id"] = 12

    edit_annotation(sample_copy, "instances_train2017.json", break_first)
    with raises_coco_error(AnnotationError, r"instances_train2017\.json, annotation \d+: unknown category id 12"):
        prepare(tmp_path, data_dir=str(sample_copy))


def test_malformed_json(sample_copy, tmp_path):
    rewrite_zip(
        sample_copy / "annotations_trainval2017.zip",
        lambda name, data: data[: len(data) // 2] if name.endswith("captions_train2017.json") else data,
    )
    with raises_coco_error(AnnotationError, r"captions_train2017\.json: malformed JSON"):
        prepare(tmp_path, data_dir=str(sample_copy))


def test_wrong_type_in_json_names_the_entry(sample_copy, tmp_path):
    def break_caption(doc):
        doc["annotations"][3]["image_id"] = "one"

    edit_annotation(sample_copy, "captions_val2017.json", break_caption)
    with raises_coco_error(AnnotationError, r"captions_val2017\.json: .*annotations\[3\]\.image_id"):
        prepare(tmp_path, data_dir=str(sample_copy))


def test_truncated_zip(sample_copy, tmp_path):
    path = sample_copy / "train2017.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with raises_coco_error(ArchiveError, r"train2017\.zip: not a readable zip"):
        prepare(tmp_path, data_dir=str(sample_copy))


def test_corrupt_entry_fails_its_crc(sample_copy, oracle, tmp_path):
    path = sample_copy / "train2017.zip"
    with zipfile.ZipFile(path) as reader:
        info = next(i for i in reader.infolist() if i.compress_type == zipfile.ZIP_STORED and not i.is_dir())
    data = bytearray(path.read_bytes())
    data_offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[data_offset + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with raises_coco_error(ArchiveError, rf"train2017\.zip, entry {info.filename}: CRC mismatch"):
        prepare(tmp_path, data_dir=str(sample_copy))


def test_missing_archive_is_named(sample_copy, tmp_path):
    (sample_copy / "val2017.zip").unlink()
    with raises_coco_error(MissingPartError, r"Missing from data_dir: .*val2017\.zip"):
        prepare(tmp_path, data_dir=str(sample_copy))
    assert len(prepare(tmp_path, "no_images", data_dir=str(sample_copy))) > 0  # not needed without images


@pytest.mark.parametrize("load", [prepare, stream])
def test_missing_sidecar_says_how_to_make_it(load, sample_dir, tmp_path):
    with raises_coco_error(SidecarError, r"sidecar .*none\.parquet not found.*coco-unified doc2vec"):
        load(tmp_path, "no_images", data_dir=str(sample_dir), doc2vec=True, doc2vec_path=str(tmp_path / "none.parquet"))


def test_a_missing_sidecar_is_named_before_an_archive_is_fetched(mirror, tmp_path):
    with raises_coco_error(SidecarError, r"sidecar .*none\.parquet not found"):
        prepare(tmp_path, base_url=mirror.base_url, doc2vec=True, doc2vec_path=str(tmp_path / "none.parquet"))
    assert mirror.traffic().body_bytes == 0


def test_sidecar_missing_an_image(sample_dir, oracle, tmp_path):
    path = tmp_path / "partial.parquet"
    ids = sorted(oracle)[1:]
    coco_unified.write_doc2vec_sidecar(str(path), ids, np.zeros((len(ids), 300), np.float32), {})
    with raises_coco_error(SidecarError, rf"no Doc2Vec vector for 1 image of the pool .*{sorted(oracle)[0]}"):
        prepare(tmp_path, "no_images", data_dir=str(sample_dir), doc2vec=True, doc2vec_path=str(path))


# ----------------------------------------------------------------------------- the real COCO's numbers


@pytest.fixture
def sample_as_official(sample_dir, oracle, monkeypatch):
    """Record the sample's sizes and sha256 as if it were the official download, with its counts."""
    for name, archive in coco_unified.ARCHIVES.items():
        path = sample_dir / archive.file_name
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        monkeypatch.setitem(
            coco_unified.ARCHIVES, name, dataclasses.replace(archive, num_bytes=path.stat().st_size, sha256=checksum)
        )
    counts = coco_unified.PoolCounts(
        len(oracle), sum(len(r["captions"]) for r in oracle.values()), sum(1 for r in oracle.values() if r["labels"])
    )
    monkeypatch.setattr(coco_unified, "REAL_COUNTS", counts)
    return counts


def test_official_copy_is_verified(sample_dir, sample_as_official, tmp_path):
    builder = make_builder(tmp_path, "labeled", data_dir=str(sample_dir))
    builder.download_and_prepare(verification_mode="all_checks")
    assert builder.info.splits["train"].num_examples == sample_as_official.labeled


def test_official_copy_with_a_bad_checksum(sample_dir, sample_as_official, tmp_path, monkeypatch):
    archive = coco_unified.ARCHIVES["val2017"]
    monkeypatch.setitem(coco_unified.ARCHIVES, "val2017", dataclasses.replace(archive, sha256="0" * 64))
    with raises_coco_error(ArchiveError, r"val2017\.zip: sha256 \w+ differs from the official 0000"):
        make_builder(tmp_path, data_dir=str(sample_dir)).download_and_prepare(verification_mode="all_checks")
    make_builder(tmp_path, data_dir=str(sample_dir)).download_and_prepare()  # hashing is asked for, not imposed


def test_official_copy_with_wrong_counts(sample_dir, sample_as_official, tmp_path, monkeypatch):
    monkeypatch.setattr(
        coco_unified, "REAL_COUNTS", dataclasses.replace(sample_as_official, captions=sample_as_official.captions + 1)
    )
    with raises_coco_error(AnnotationError, "annotations hold"):
        prepare(tmp_path, data_dir=str(sample_dir))


def test_shipped_infos_do_not_reject_a_sample(sample_dir, tmp_path):
    infos = json.loads((coco_unified_dir() / "dataset_infos.json").read_text())
    assert infos["default"]["splits"]["train"]["num_examples"] == 123_287
    builder = make_builder(tmp_path, data_dir=str(sample_dir))
    if DATASETS_READS_SHIPPED_INFOS:
        assert builder.info.splits["train"].num_examples == 123_287  # what datasets would check...
    builder.download_and_prepare()  # ...but the builder knows a sample is not the real COCO
    assert builder.info.splits["train"].num_examples == 247


def coco_unified_dir():
    from pathlib import Path

    return Path(coco_unified.__file__).parent


# ----------------------------------------------------------------------------- research protocol


def protocol_splits(tmp_path, sample_dir, streaming=False, **kwargs):
    builder = make_builder(
        tmp_path, "protocol", data_dir=str(sample_dir), with_images=False, num_query=50, num_train=100, **kwargs
    )
    if streaming:
        return {
            name: [row["index"] for row in builder.as_streaming_dataset(name)]
            for name in ("query", "database", "train")
        }
    builder.download_and_prepare()
    return {name: list(builder.as_dataset(name)["index"]) for name in builder.info.splits}


def test_protocol_splits_the_labeled_pool(sample_dir, oracle, tmp_path):
    splits = protocol_splits(tmp_path, sample_dir)
    labeled = sorted(row["index"] for row in oracle.values() if row["labels"])
    assert sorted(splits) == ["database", "query", "train"]
    assert (len(splits["query"]), len(splits["train"])) == (50, 100)
    assert sorted(splits["query"] + splits["database"]) == labeled
    assert set(splits["train"]) <= set(splits["database"])
    assert all(split == sorted(split) for split in splits.values())
    assert splits == protocol_splits(tmp_path / "streamed", sample_dir, streaming=True)


def test_protocol_depends_on_its_seed_only(sample_dir, tmp_path):
    first = protocol_splits(tmp_path / "a", sample_dir, protocol_seed=3)
    assert first == protocol_splits(tmp_path / "b", sample_dir, protocol_seed=3)
    assert first["query"] != protocol_splits(tmp_path / "c", sample_dir, protocol_seed=4)["query"]


def test_protocol_too_big_for_the_pool_names_sizes_that_fit_before_reading_images(mirror, sample_dir, tmp_path):
    fix = r"pass num_query=(\d+), num_train=(\d+) \(or smaller\)"
    with raises_coco_error(
        ConfigError,
        rf"The hashing protocol on this copy of COCO: its 243 labeled images cannot hold 5000 queries.*{fix}",
    ) as caught:
        make_builder(tmp_path, "protocol", base_url=mirror.base_url).download_and_prepare()
    assert [mirror.traffic().for_path(path).requests for path in IMAGE_ZIPS] == [0, 0]
    num_query, num_train = map(int, re.search(fix, str(caught.value)).groups())
    assert (num_query, num_train) == (50, 100)
    builder = make_builder(
        tmp_path / "fits",
        "protocol",
        data_dir=str(sample_dir),
        with_images=False,
        **{"num_query": num_query, "num_train": num_train},
    )
    builder.download_and_prepare()
    assert (builder.info.splits["query"].num_examples, builder.info.splits["train"].num_examples) == (50, 100)


@pytest.mark.parametrize("num_labeled", [2, 3, 7, 243, 1_000, 122_218])
def test_suggested_protocol_sizes_fit_any_pool(num_labeled):
    with pytest.raises(ConfigError, match="or smaller") as caught:
        coco_unified.check_protocol_fits(num_labeled, 10**6, 10**6)
    num_query, num_train = map(int, re.search(r"num_query=(\d+), num_train=(\d+)", str(caught.value)).groups())
    drawn = coco_unified.sample_protocol(np.arange(num_labeled), 0, num_query, [num_train])
    assert len(drawn.query) == num_query and len(drawn.train[num_train]) == num_train


def test_protocol_splits_carry_their_own_doc2vec_vectors(sample_dir, sidecar, sidecar_vectors, tmp_path):
    builder = make_builder(
        tmp_path,
        "protocol",
        data_dir=str(sample_dir),
        with_images=False,
        num_query=50,
        num_train=100,
        doc2vec=True,
        doc2vec_path=str(sidecar),
    )
    builder.download_and_prepare()
    for split in ("query", "database", "train"):  # the train images are database images too
        rows = list(builder.as_dataset(split))
        assert all(
            np.array_equal(np.asarray(row["doc2vec"], np.float32), sidecar_vectors[row["image_id"]]) for row in rows
        )


@pytest.mark.parametrize("streaming", [False, True], ids=["prepared", "streaming"])
def test_karpathy_config_gives_train_validation_and_test(sample_dir, karpathy_oracle, tmp_path, streaming):
    builder = make_builder(tmp_path, "karpathy", data_dir=str(sample_dir), with_images=False)
    if streaming:
        loaded = {split: builder.as_streaming_dataset(split) for split in ("train", "validation", "test")}
    else:
        builder.download_and_prepare()
        loaded = {split: builder.as_dataset(split) for split in builder.info.splits}
    splits = {split: sorted(row["image_id"] for row in dataset) for split, dataset in loaded.items()}
    assert splits == karpathy_oracle
    assert min(len(ids) for ids in karpathy_oracle.values()) >= 10  # the sample holds each list's share


@pytest.mark.parametrize("config", ["dsph", "ucch", "dchn"])
def test_protocol_configs_give_their_protocols_splits(sample_dir, tmp_path, config):
    builder = make_builder(tmp_path, config, data_dir=str(sample_dir), with_images=False, num_query=50, num_train=100)
    builder.download_and_prepare()
    records = coco_unified.build_annotation_index(coco_unified.locate_sources(str(sample_dir))["annotations"])
    expected = coco_unified.PROTOCOLS[config].splits(records, None, 50, 100)
    assert sorted(builder.info.splits) == sorted(expected)
    for split, indices in expected.items():
        assert builder.as_dataset(split)["index"] == sorted(indices.tolist())


def test_protocol_keyword_names_a_protocol_and_keeps_its_former_spelling(sample_dir, tmp_path):
    with raises_coco_error(ConfigError, r"protocol='karpaty' is not a protocol; pass one of 'hashing', .*'karpathy'"):
        make_builder(tmp_path, protocol="karpaty")
    builder = make_builder(
        tmp_path, data_dir=str(sample_dir), protocol=True, with_images=False, num_query=50, num_train=100
    )
    assert builder.config.protocol == "hashing"


def test_karpathy_id_lists_missing_beside_the_script_are_named(sample_dir, tmp_path):
    builder = make_builder(tmp_path, "karpathy", data_dir=str(sample_dir), with_images=False, base_path=str(tmp_path))
    with raises_coco_error(CocoError, r"data/karpathy_val_image_ids.txt not found beside the loading script"):
        builder.download_and_prepare()


# ----------------------------------------------------------------------------- loader arguments


def test_error_kinds_are_distinct_value_errors():
    kinds = [
        ConfigError,
        MissingPartError,
        ServerUnreachableError,
        ArchiveError,
        AnnotationError,
        SidecarError,
        ShadowedImageError,
    ]
    assert all(issubclass(kind, CocoError) and issubclass(kind, ValueError) for kind in kinds)
    assert not any(issubclass(a, b) for a in kinds for b in kinds if a is not b)


@pytest.mark.parametrize("config", ["labeled", None])
@pytest.mark.parametrize(
    "keyword, closest",
    [("doc2vec_pth", "doc2vec_path"), ("num_shard", "num_shards"), ("labelled_only", "labeled_only")],
)
def test_misspelt_keyword_lists_the_valid_ones(config, keyword, closest, tmp_path):
    with raises_coco_error(
        ConfigError, rf"^{keyword}= is not a keyword of CocoUnified; did you mean {closest}=\?"
    ) as caught:
        CocoUnified(config_name=config, cache_dir=str(tmp_path), **{keyword: 1})
    message = str(caught.value)
    assert all(name in message for name in ("with_images", "num_query", "data_dir", "cache_dir", "storage_options"))
    assert "CocoUnifiedConfig(" not in message


BAD_VALUES = [
    ({"num_shards": 0}, r"num_shards=0: must be a whole number >= 1; pass e\.g\. num_shards=16, the default"),
    ({"num_shards": -2}, r"num_shards=-2: must be a whole number >= 1"),
    ({"num_shards": "8"}, r"num_shards='8': must be a whole number"),
    ({"num_shards": 2.5}, r"num_shards=2\.5: must be a whole number"),
    ({"num_query": 0}, r"num_query=0: must be a whole number >= 1"),
    ({"num_train": -1}, r"num_train=-1: must be a whole number >= 0"),
    ({"protocol_seed": -1}, r"protocol_seed=-1: must be a whole number >= 0"),
    ({"with_images": "no"}, r"with_images='no': pass with_images=True or with_images=False"),
    ({"doc2vec_path": 3}, r"doc2vec_path=3: pass the path or URL of the sidecar"),
    ({"data_dir": "/data/coco", "base_url": "http://mirror.example.org"}, r"both given: pass data_dir .* or base_url"),
    ({"base_url": "ftp://mirror.example.org/coco"}, r"base_url='ftp://mirror\.example\.org/coco': pass an http://"),
    ({"base_url": "images.cocodataset.org"}, r"base_url='images\.cocodataset\.org': pass an http://"),
]


@pytest.mark.parametrize("kwargs, message", BAD_VALUES)
def test_bad_values_fail_when_the_builder_is_made(kwargs, message, tmp_path):
    with raises_coco_error(ConfigError, message):
        CocoUnified(config_name="default", cache_dir=str(tmp_path), **kwargs)
    with raises_coco_error(ConfigError, message):
        coco_unified.CocoUnifiedConfig(name="custom", **kwargs)


def test_file_url_mirror(sample_dir, oracle, tmp_path):
    mirror_dir = tmp_path / "mirror"
    for archive in coco_unified.ARCHIVES.values():
        (mirror_dir / archive.url_path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(sample_dir / archive.file_name, mirror_dir / archive.url_path)
    assert_matches_oracle(raw_rows(stream(tmp_path, base_url=mirror_dir.as_uri())), oracle, oracle)


# ----------------------------------------------------------------------------- logs


def logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def test_logs_say_counts_in_words_under_the_datasets_logger(sample_dir, oracle, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    prepare(tmp_path, data_dir=str(sample_dir))
    messages = logged(caplog)
    for split in ("train2017", "val2017"):  # the sample puts one file no annotation lists in each zip
        assert f"1 file in {sample_dir / split}.zip is listed by no annotation: skipped (e.g. {split}/" in "\n".join(
            messages
        )
    captions = sum(len(row["captions"]) for row in oracle.values())
    assert f"A COCO copy that is not the full COCO 2017: 247 images, {captions:,} captions, 243 labeled" in messages
    assert not any("PoolCounts(" in message for message in messages)


def test_labeled_config_does_not_report_unlabeled_images_as_unlisted(sample_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    prepare(tmp_path, "labeled", data_dir=str(sample_dir))
    unlisted = [message for message in logged(caplog) if "listed by no annotation" in message]
    assert len(unlisted) == 2 and all(message.startswith("1 file in ") for message in unlisted), unlisted


@pytest.mark.skipif(not coco_unified.STREAMS_TABLES, reason="this datasets streams example dicts")
def test_streams_are_tables_of_the_features_schema(sample_dir, sidecar, tmp_path):
    """datasets 3.6 makes a one-row table of each streamed example dict and casts it unless the
    inferred types match (0.33-0.48 ms a real-size row): the builder streams tables built with the
    features' schema, which 3.6 only cuts into rows."""
    builder = make_builder(tmp_path, data_dir=str(sample_dir), num_shards=2, doc2vec=True, doc2vec_path=str(sidecar))
    dataset = builder.as_streaming_dataset("train")
    assert dataset.n_shards == 2
    schema = builder.info.features.arrow_schema
    sizes = []
    for _, table in dataset._ex_iterable.iter_arrow():
        assert table.schema == schema
        sizes.append(len(table))
    assert sum(sizes) == 247
    full = coco_unified.STREAMED_TABLE_ROWS
    assert sizes.count(full) == len(sizes) - 2 and all(size < full for size in sizes if size != full), sizes


def plain(value):
    """A streamed value in comparable form: images as their pixels, arrays and tensors as lists."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if hasattr(value, "tobytes") and hasattr(value, "mode"):  # a PIL image
        return ("image", value.mode, value.size, value.tobytes())
    if hasattr(value, "tolist"):  # numpy arrays and numbers, torch tensors
        return (str(value.dtype), value.tolist())
    if isinstance(value, pa.Table):
        return value.to_pylist()
    return value


STREAM_USES = {
    "as built": lambda d: d,
    "shuffled": lambda d: d.shuffle(seed=0, buffer_size=50),
    "skip, take": lambda d: d.skip(30).take(20),
    "filter": lambda d: d.filter(lambda row: len(row["labels"]) > 2),
    "columns": lambda d: d.select_columns(["image_id", "multi_hot"]).rename_column("multi_hot", "y"),
    "raw images": lambda d: d.cast_column("image", datasets.Image(decode=False)),
    "map": lambda d: d.map(lambda row: {"n": len(row["captions"]), "w": row["image"].size[0]}),
    "batched map": lambda d: d.map(lambda b: {"n": [len(c) for c in b["captions"]]}, batched=True, batch_size=7),
    "numpy": lambda d: d.with_format("numpy"),
    "torch": lambda d: d.with_format("torch"),
    "arrow": lambda d: d.with_format("arrow"),
    "concatenated": lambda d: datasets.concatenate_datasets([d, d.skip(200)]),
    "interleaved": lambda d: datasets.interleave_datasets([d, d.skip(100)]),
    "node 1 of 2": lambda d: split_dataset_by_node(d, rank=1, world_size=2),
}


@pytest.mark.skipif(not coco_unified.STREAMS_TABLES, reason="this datasets streams example dicts")
@pytest.mark.parametrize("use", STREAM_USES)
def test_streamed_tables_give_what_example_dicts_give(use, sample_dir, tmp_path, monkeypatch):
    """Under datasets 3.x a stream is made of tables (STREAMS_TABLES), not of the example dicts a
    generator gives by default; whatever a user does with it, the rows are the same."""
    tables = stream(tmp_path, data_dir=str(sample_dir))
    monkeypatch.setattr(coco_unified, "STREAMS_TABLES", False)
    dicts = stream(tmp_path, data_dir=str(sample_dir))
    assert isinstance(tables._ex_iterable, datasets.iterable_dataset.ArrowExamplesIterable)
    assert not isinstance(dicts._ex_iterable, datasets.iterable_dataset.ArrowExamplesIterable)
    rows = [plain(row) for row in STREAM_USES[use](tables)]
    assert rows and rows == [plain(row) for row in STREAM_USES[use](dicts)]


def test_a_stream_gives_batches_of_its_rows(sample_dir, tmp_path):
    """datasets 3.6 failed to batch example dicts when one held an unlabeled image, its empty
    `labels` typed as nulls ("ArrowInvalid: Schema at index 9 was different"); tables carry the
    features' types."""
    dataset = stream(tmp_path, "no_images", data_dir=str(sample_dir))
    rows = list(dataset)
    assert any(not row["labels"] for row in rows)
    batches = list(dataset.iter(batch_size=10))
    assert [dict(zip(batch, values)) for batch in batches for values in zip(*batch.values())] == rows


def test_a_stream_resumes_from_its_state_dict(sample_dir, tmp_path):
    dataset = stream(tmp_path, "no_images", data_dir=str(sample_dir))
    rows = iter(dataset)
    seen = [row["image_id"] for row in itertools.islice(rows, 40)]
    state = dataset.state_dict()
    rest = [row["image_id"] for row in rows]
    resumed = stream(tmp_path, "no_images", data_dir=str(sample_dir))
    resumed.load_state_dict(state)
    assert [row["image_id"] for row in resumed] == rest
    assert len(seen) + len(rest) == 247


def test_numpy_formatted_streams_give_float_vectors(sample_dir, sidecar, tmp_path):
    """Formatted as numpy, a streamed vector is float32 as in the prepared dataset, as built and
    mapped under datasets >= 4; 3.6 gives a mapped stream's vectors as float64 (from Python
    floats; from numpy float32 numbers it would give object arrays)."""
    kwargs = {"data_dir": str(sample_dir), "doc2vec": True, "doc2vec_path": str(sidecar)}
    prepared = next(iter(prepare(tmp_path, "labeled_no_images", **kwargs).with_format("numpy")))
    assert prepared["doc2vec"].dtype == np.float32
    built = stream(tmp_path, "labeled_no_images", **kwargs)
    mapped = np.float64 if coco_unified.STREAMS_TABLES else np.float32
    for streamed, dtype in ((built, np.float32), (built.map(features=built.features), mapped)):
        row = next(iter(streamed.with_format("numpy")))
        assert (row["doc2vec"].dtype, row["multi_hot"].dtype) == (dtype, prepared["multi_hot"].dtype)


def test_a_stream_builds_its_arrow_schema_once(sample_dir, tmp_path, monkeypatch):
    """datasets 3.6 asks the features for their Arrow schema with every streamed row: the pool's
    features build it once (0.24 ms of a small-image row, benchmarks/bench_loading.py), then again
    only when a column changes; transforms keep that class. Under 3.x the builder's own features
    build it once more, for the tables it streams."""
    built, build = [], datasets.Features.arrow_schema.fget

    def counted(features):
        built.append(dict(features))
        return build(features)

    monkeypatch.setattr(datasets.Features, "arrow_schema", property(counted))
    dataset = stream(tmp_path, data_dir=str(sample_dir))
    assert len(list(itertools.islice(dataset, 50))) == 50
    assert len(built) <= 1 + coco_unified.STREAMS_TABLES
    features = dataset.features
    assert features.arrow_schema is features.arrow_schema
    monkeypatch.undo()
    assert features.arrow_schema.equals(datasets.Features(dict(features)).arrow_schema, check_metadata=True)
    for transformed in (dataset.shuffle(seed=0), split_dataset_by_node(dataset, rank=0, world_size=2)):
        assert isinstance(transformed.features, coco_unified.MemoizedSchemaFeatures)
    cast = dataset.cast_column("multi_hot", datasets.Sequence(datasets.Value("float32"), length=80))
    assert isinstance(cast.features, coco_unified.MemoizedSchemaFeatures)
    assert cast.features.arrow_schema.field("multi_hot").type == pa.list_(pa.float32(), 80)
    assert next(iter(cast))["multi_hot"] == [float(value) for value in next(iter(dataset))["multi_hot"]]
    features["multi_hot"] = datasets.Sequence(datasets.Value("float32"), length=80)  # in place
    assert features.arrow_schema.field("multi_hot").type == pa.list_(pa.float32(), 80)


def test_a_mapped_stream_gives_the_rows_of_the_stream_as_built(sample_dir, tmp_path):
    """The README's option for datasets 3.6: through `.map(features=...)` 3.6 takes the stream's
    rows from its tables ten at a time instead of cutting one-row tables; the rows stay the same:
    decoded images, and raw bytes when the image column is cast first."""
    built = stream(tmp_path, data_dir=str(sample_dir))

    def comparable(row):
        return {**row, "image": (row["image"].mode, row["image"].size, row["image"].tobytes())}

    assert [comparable(row) for row in built.map(features=built.features)] == [comparable(row) for row in built]
    raw = built.cast_column("image", datasets.Image(decode=False))
    assert list(raw.map(features=raw.features)) == list(raw)


def in_this_process(row):
    return {"pid": os.getpid(), "frozen": gc.get_freeze_count()}


def test_dataloader_workers_freeze_what_they_inherit(sample_dir, tmp_path):
    """A forked worker's first full garbage collection writes to every object of its parent's heap,
    copying it page by page (0.74 s and 113 MB a worker on the full pool): the stream freezes them
    in the workers, and leaves the process that made it as it was."""
    torch = pytest.importorskip("torch")
    dataset = stream(tmp_path, "no_images", data_dir=str(sample_dir)).map(in_this_process)
    frozen_before = gc.get_freeze_count()
    assert {row["pid"] for row in itertools.islice(dataset, 20)} == {os.getpid()}
    assert gc.get_freeze_count() == frozen_before
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=2, collate_fn=list)
    rows = [row for batch in loader for row in batch]
    assert len({row["pid"] for row in rows} - {os.getpid()}) == 2
    assert all(row["frozen"] > 0 for row in rows)


def test_images_are_read_no_further_ahead_than_asked(tmp_path):
    """An extracted image is a batch of its own: while the first is yielded, `batches_ahead` more
    may be read, and a file rewritten then is read as rewritten from the one after them on."""
    folder = tmp_path / "train2017"
    folder.mkdir()
    source = coco_unified.Source("train2017", str(folder), str(folder), zipped=False)
    paths = [folder / f"{number:012d}.jpg" for number in range(8)]
    before, after = b"\xff\xd8 before \xff\xd9", b"\xff\xd8 after \xff\xd9"
    for path in paths:
        path.write_bytes(before)
    entries = [coco_unified.ImageEntry(source, None, str(path)) for path in paths]
    batches_ahead = 2
    contents = coco_unified.read_images_ahead(entries, {}, batches_ahead)
    try:
        assert next(contents) == before
        time.sleep(0.5)  # the reading thread's time to run as far ahead as it may
        for path in paths:
            path.write_bytes(after)
        rest = list(contents)
    finally:
        contents.close()
    assert rest == [before] * batches_ahead + [after] * (len(paths) - 1 - batches_ahead)


def reading_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("coco-unified-read")]


def test_a_stream_left_early_stops_its_reading_thread(mirror, tmp_path):
    # Shards of over 100 rows: a whole first table leaves its shard's reading unfinished.
    rows = iter(stream(tmp_path, base_url=mirror.base_url, num_shards=2))
    next(rows)
    assert reading_threads()
    rows.close()  # as when a training loop breaks out
    assert not reading_threads()
