"""tools/lib/publish.py: the exported Parquet folder loads as the Hub would serve it, with the builder's rows.

Runs under datasets 3.6 and under the newest datasets (scripts/test.sh runs this file in both).
The command line over it (`coco-unified push`) is tested in test_cli.py.
"""

import glob
import os
import re
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import coco_unified
from coco_unified import CocoUnified
from tools.lib import publish
from tools.lib.publish import PublishOptions, write_folder

SHARD_SIZE = "100KB"  # the sample's image configs (~400 KB) then span several shards
# The sample has 243 labeled images: the protocol's default 5,000 queries would not fit.
PROTOCOL_KWARGS = {"num_query": 20, "num_train": 50}
CONFIGS = list(CocoUnified.builder_configs)


def publish_options(sample_dir, sidecar, cache_dir, output, **extra) -> PublishOptions:
    common = {"data_dir": str(sample_dir), "doc2vec_path": str(sidecar), "cache_dir": str(cache_dir)}
    return PublishOptions(output=str(output), shard_size=SHARD_SIZE, config_kwargs=PROTOCOL_KWARGS, **common, **extra)


@pytest.fixture(scope="module")
def exported(sample_dir, sidecar, tmp_path_factory):
    """The folder written for every config, and the builders' cache it was built in."""
    root = tmp_path_factory.mktemp("hub_export")
    folder = write_folder(publish_options(sample_dir, sidecar, root / "cache", root / "folder"))
    assert folder.configs == CONFIGS
    return root


def builder_rows(root, sample_dir, sidecar, config, split):
    kwargs = PROTOCOL_KWARGS if CocoUnified.builder_configs[config].protocol else {}
    builder = CocoUnified(
        config_name=config, data_dir=str(sample_dir), doc2vec_path=str(sidecar), cache_dir=str(root / "cache"), **kwargs
    )
    builder.download_and_prepare()
    return raw_rows(builder.as_dataset(split))


def raw_rows(dataset):
    if "image" in dataset.column_names:
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return sorted(dataset, key=lambda row: row["index"])


def splits_of(root, config):
    return sorted(
        {
            os.path.basename(path).split("-")[0]
            for path in glob.glob(str(root / "folder" / "data" / config / "*.parquet"))
        }
    )


def card_yaml(folder) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    header = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert header, "README.md must start with a YAML block"
    return yaml.safe_load(header.group(1))


@pytest.mark.parametrize("streaming", [False, True], ids=["prepared", "streaming"])
@pytest.mark.parametrize("config", CONFIGS)
def test_folder_loads_with_the_builders_rows(exported, sample_dir, sidecar, config, streaming):
    for split in splits_of(exported, config):
        loaded = datasets.load_dataset(
            str(exported / "folder"), config, split=split, streaming=streaming, cache_dir=str(exported / "loaded")
        )
        expected = builder_rows(exported, sample_dir, sidecar, config, split)
        assert loaded.features == CocoUnified(config_name=config, doc2vec_path=str(sidecar)).info.features
        assert raw_rows(loaded) == expected


def test_card_declares_every_config_with_its_files_and_features(exported):
    card = card_yaml(exported / "folder")
    assert card["license"] == "cc-by-4.0"
    declared = {entry["config_name"]: entry["data_files"] for entry in card["configs"]}
    assert sorted(declared) == sorted(CONFIGS)
    for config, files in declared.items():
        for entry in files:
            assert glob.glob(str(exported / "folder" / entry["path"])), (
                f"{config}/{entry['split']}: no file matches {entry['path']}"
            )
    infos = {entry["config_name"]: entry for entry in card["dataset_info"]}
    assert [feature["name"] for feature in infos["default"]["features"]] == list(
        CocoUnified(config_name="default").info.features
    )
    assert "image" not in [feature["name"] for feature in infos["no_images"]["features"]]


def test_card_records_the_doc2vec_provenance(exported):
    assert "random, for tests" in (exported / "folder" / "README.md").read_text(encoding="utf-8")


def test_shards_and_row_groups(exported, oracle):
    paths = sorted(glob.glob(str(exported / "folder" / "data" / "default" / "train-*.parquet")))
    assert len(paths) > 1
    assert [os.path.basename(path) for path in paths] == [
        publish.shard_file_name("train", i, len(paths)) for i in range(len(paths))
    ]
    rows = 0
    for path in paths:
        metadata = pq.ParquetFile(path).metadata
        sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        assert max(sizes) <= publish.ROW_GROUP_ROWS_WITH_IMAGES
        rows += metadata.num_rows
    assert rows == len(oracle)


def test_shard_plan_covers_every_row_once():
    plan = publish.ShardPlan.for_split(num_rows=1003, num_bytes=3_500, shard_size=1_000, row_group_rows=100)
    assert plan.num_shards == 4
    assert sum(plan.shard_rows(shard) for shard in range(4)) == 1003
    assert all(sum(plan.row_groups(shard)) == plan.shard_rows(shard) for shard in range(4))
    assert publish.ShardPlan.for_split(num_rows=2, num_bytes=10**9, shard_size=1, row_group_rows=100).num_shards == 2


def test_recut_slices_batches_into_exact_sizes():
    batches = [pa.record_batch({"x": list(range(start, start + 7))}) for start in range(0, 21, 7)]
    tables = list(publish.recut(batches, [5, 10, 6]))
    assert [table.num_rows for table in tables] == [5, 10, 6]
    assert sum((table.column("x").to_pylist() for table in tables), []) == list(range(21))
    with pytest.raises(coco_unified.CocoError, match="fewer rows"):
        list(publish.recut(batches, [22]))


def test_upload_creates_the_repo_and_uploads_the_folder(sample_dir, sidecar, tmp_path, monkeypatch):
    calls = []

    class RecordingApi:
        def create_repo(self, *args, **kwargs):
            calls.append(("create_repo", args, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", (), kwargs))

    monkeypatch.setattr(publish, "HfApi", RecordingApi)
    options = publish_options(sample_dir, sidecar, tmp_path / "cache", tmp_path / "folder", configs=("no_images",))
    publish.upload(write_folder(options), "me/coco", private=True)
    assert calls[0] == ("create_repo", ("me/coco",), {"repo_type": "dataset", "private": True, "exist_ok": True})
    upload = calls[1][2]
    assert (upload["repo_id"], upload["folder_path"], upload["repo_type"]) == (
        "me/coco",
        str(tmp_path / "folder"),
        "dataset",
    )
    assert upload["delete_patterns"] == ["data/no_images/*"]


def test_script_mode_stages_the_script_infos_card_and_sidecar(sidecar, tmp_path):
    folder = write_folder(PublishOptions(output=str(tmp_path / "out"), mode="script", doc2vec_path=str(sidecar)))
    assert sorted(folder.files) == sorted(
        ["README.md", "coco_unified.py", "dataset_infos.json", coco_unified.DOC2VEC_SIDECAR]
        + list(coco_unified.KARPATHY_ID_LISTS.values())
    )
    assert (tmp_path / "out" / "coco_unified.py").read_bytes() == open(coco_unified.__file__, "rb").read()
    assert "trust_remote_code=True" in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "configs" not in card_yaml(tmp_path / "out")  # data-file configs would hide the script


def test_script_mode_without_sidecar_names_the_fix_and_writes_nothing(tmp_path):
    options = PublishOptions(
        output=str(tmp_path / "out"), mode="script", doc2vec_path=str(tmp_path / "missing.parquet")
    )
    with pytest.raises(coco_unified.SidecarError, match=r"missing\.parquet not found.*doc2vec=False"):
        write_folder(options)
    assert os.listdir(tmp_path) == []


def test_a_small_pool_skips_the_sized_protocol_configs_by_default_saying_how_to_fit_them(
    sample_dir, sidecar, tmp_path, caplog
):
    options = PublishOptions(output=str(tmp_path / "out"), data_dir=str(sample_dir), configs=(), doc2vec=False)
    sized = ["protocol", "dsph", "ucch", "dchn"]  # not karpathy: its splits have no size to fit
    assert publish.configs_to_export(options) == [name for name in CONFIGS if name not in sized]
    for name in ("protocol", "dsph", "dchn"):
        assert re.search(rf"Config {name}: .* pass num_query=\d+, num_train=\d+ .*Skipped", caplog.text)
    assert re.search(
        r"Config ucch: .*cannot hold 5000 queries and a database: pass num_query=50 .*Skipped", caplog.text
    )
    named = PublishOptions(output=str(tmp_path / "out"), data_dir=str(sample_dir), configs=("protocol",))
    with pytest.raises(coco_unified.ConfigError, match=r"Config protocol: .*pass num_query=\d+, num_train=\d+"):
        publish.configs_to_export(named)


def test_a_failed_export_leaves_the_earlier_folder_and_no_partial_one(sample_dir, sidecar, tmp_path):
    options = publish_options(sample_dir, sidecar, tmp_path / "cache", tmp_path / "folder", configs=("no_images",))
    first = write_folder(options)
    before = {name: Path(first.path, name).read_bytes() for name in first.files}
    broken = publish_options(
        sample_dir, tmp_path / "missing.parquet", tmp_path / "cache", tmp_path / "folder", configs=("no_images",)
    )
    with pytest.raises(coco_unified.SidecarError):
        write_folder(broken)
    assert {name: Path(first.path, name).read_bytes() for name in first.files} == before
    assert sorted(os.listdir(tmp_path)) == ["cache", "folder"]


def test_a_folder_holding_other_files_is_not_replaced(tmp_path, sidecar):
    (tmp_path / "notes.txt").write_text("mine")
    options = PublishOptions(output=str(tmp_path), mode="script", doc2vec_path=str(sidecar))
    with pytest.raises(coco_unified.CocoError, match=r"holds notes\.txt, which this export does not write"):
        write_folder(options)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_bad_options_are_refused_by_keyword():
    with pytest.raises(coco_unified.CocoError, match=r"shard_size=big is not a size"):
        PublishOptions(output="out", shard_size="big")
    with pytest.raises(coco_unified.CocoError, match=r"Unknown config\(s\) \['nope'\]"):
        PublishOptions(output="out", configs=("nope",))


# ----------------------------------------------------------------------------- feature columns

FEATURE_DIMS = {"clip_image": 8, "vgg19_fc7": 20}


@pytest.fixture(scope="module")
def feature_sidecars(oracle, tmp_path_factory):
    """{column: (sidecar path, {image id: float32 vector})}, float16 on disk for vgg19_fc7."""
    folder = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(5)
    image_ids = rng.permutation(sorted(oracle))
    sidecars = {}
    for column, dim in FEATURE_DIMS.items():
        store = "float16" if column == "vgg19_fc7" else "float32"
        matrix = rng.standard_normal((len(image_ids), dim)).astype(np.float32)
        path = folder / f"{column}.parquet"
        coco_unified.write_feature_sidecar(str(path), image_ids, {column: matrix}, {"model": f"random {column}"}, store)
        sidecars[column] = (str(path), dict(zip(image_ids.tolist(), matrix.astype(store).astype(np.float32))))
    return sidecars


def test_feature_columns_are_in_the_data_files_and_their_provenance_in_the_card(
    sample_dir, sidecar, feature_sidecars, tmp_path
):
    paths = {column: path for column, (path, _) in feature_sidecars.items()}
    options = publish_options(
        sample_dir, sidecar, tmp_path / "cache", tmp_path / "folder", configs=("no_images",), feature_sidecars=paths
    )
    write_folder(options)
    schema = pq.read_schema(glob.glob(str(tmp_path / "folder" / "data" / "no_images" / "*.parquet"))[0])
    for column, dim in FEATURE_DIMS.items():
        assert schema.field(column).type == pa.list_(pa.float32(), dim)
    loaded = datasets.load_dataset(str(tmp_path / "folder"), "no_images", split="train", cache_dir=str(tmp_path / "l"))
    for column, (_, by_id) in feature_sidecars.items():
        vectors = np.asarray(loaded[column], dtype=np.float32)
        assert np.array_equal(vectors, np.stack([by_id[image_id] for image_id in loaded["image_id"]]))
    card = (tmp_path / "folder" / "README.md").read_text(encoding="utf-8")
    assert "## Feature columns" in card
    for column, dim in FEATURE_DIMS.items():
        assert f"### `{column}` ({dim}-d, from `{column}.parquet`)" in card and f"random {column}" in card
    assert [feature["name"] for feature in card_yaml(tmp_path / "folder")["dataset_info"]["features"]][-2:] == list(
        FEATURE_DIMS
    )


def test_script_mode_tells_how_to_pass_feature_sidecars_and_stages_none(sidecar, feature_sidecars, tmp_path):
    path, _ = feature_sidecars["clip_image"]
    options = PublishOptions(
        output=str(tmp_path / "out"),
        mode="script",
        doc2vec_path=str(sidecar),
        repo_id="me/coco",
        feature_sidecars={"clip_image": path},
    )
    folder = write_folder(options)
    assert "clip_image.parquet" not in folder.files
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert (
        """load_dataset("me/coco", "default", trust_remote_code=True, feature_sidecars={'clip_image': 'clip_image.parquet'})"""
        in card
    )
    assert "random clip_image" in card


def test_bad_feature_sidecars_are_refused_by_keyword(sample_dir, tmp_path):
    with pytest.raises(coco_unified.ConfigError, match=r"config_kwargs holds feature_sidecars: pass them as"):
        PublishOptions(output="out", config_kwargs={"feature_sidecars": {"a": "a.parquet"}})
    with pytest.raises(coco_unified.ConfigError, match=r"'doc2vec' is not a free column name"):
        PublishOptions(output="out", feature_sidecars={"doc2vec": "a.parquet"})
    options = PublishOptions(
        output=str(tmp_path / "out"), data_dir=str(sample_dir), doc2vec=False, feature_sidecars={"a": "absent.parquet"}
    )
    with pytest.raises(coco_unified.SidecarError, match=r"absent\.parquet not found"):
        write_folder(options)
    assert os.listdir(tmp_path) == []
