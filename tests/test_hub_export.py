"""tools/push.py: the exported Parquet folder loads as the Hub would serve it, with the builder's rows.

Runs under datasets 3.6 and under the newest datasets (scripts/test.sh runs this file in both).
"""

import glob
import os
import re

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import coco_unified
from coco_unified import CocoUnified
from tools import push as push_to_hub

SHARD_SIZE = "100KB"  # the sample's image configs (~400 KB) then span several shards
# The sample has 243 labeled images: the protocol's default 5,000 queries would not fit.
PROTOCOL_KWARGS = (
    ["--config-kwarg", "num_query=20", "--config-kwarg", "num_train=50"]
    if "protocol" in CocoUnified.builder_configs
    else []
)
CONFIGS = list(CocoUnified.builder_configs)


def export_args(sample_dir, sidecar, cache_dir, output, *extra):
    return [
        "--data-dir", str(sample_dir), "--doc2vec-path", str(sidecar), "--cache-dir", str(cache_dir),
        "--output", str(output), "--shard-size", SHARD_SIZE, *PROTOCOL_KWARGS, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def exported(sample_dir, sidecar, tmp_path_factory):
    """The folder written by a dry run over every config, and the builders' cache it was built in."""
    root = tmp_path_factory.mktemp("hub_export")
    assert push_to_hub.main(export_args(sample_dir, sidecar, root / "cache", root / "folder", "--dry-run")) == 0
    return root


def builder_rows(root, sample_dir, sidecar, config, split):
    kwargs = dict(num_query=20, num_train=50) if PROTOCOL_KWARGS else {}
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
        push_to_hub.shard_file_name("train", i, len(paths)) for i in range(len(paths))
    ]
    rows = 0
    for path in paths:
        metadata = pq.ParquetFile(path).metadata
        sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        assert max(sizes) <= push_to_hub.ROW_GROUP_ROWS_WITH_IMAGES
        rows += metadata.num_rows
    assert rows == len(oracle)


def test_shard_plan_covers_every_row_once():
    plan = push_to_hub.ShardPlan.for_split(num_rows=1003, num_bytes=3_500, shard_size=1_000, row_group_rows=100)
    assert plan.num_shards == 4
    assert sum(plan.shard_rows(shard) for shard in range(4)) == 1003
    assert all(sum(plan.row_groups(shard)) == plan.shard_rows(shard) for shard in range(4))
    assert (
        push_to_hub.ShardPlan.for_split(num_rows=2, num_bytes=10**9, shard_size=1, row_group_rows=100).num_shards == 2
    )


def test_recut_slices_batches_into_exact_sizes():
    batches = [pa.record_batch({"x": list(range(start, start + 7))}) for start in range(0, 21, 7)]
    tables = list(push_to_hub.recut(batches, [5, 10, 6]))
    assert [table.num_rows for table in tables] == [5, 10, 6]
    assert sum((table.column("x").to_pylist() for table in tables), []) == list(range(21))
    with pytest.raises(coco_unified.CocoError, match="fewer rows"):
        list(push_to_hub.recut(batches, [22]))


def test_upload_creates_the_repo_and_uploads_the_folder(sample_dir, sidecar, tmp_path, monkeypatch):
    calls = []

    class RecordingApi:
        def create_repo(self, *args, **kwargs):
            calls.append(("create_repo", args, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", (), kwargs))

    monkeypatch.setattr(push_to_hub, "HfApi", RecordingApi)
    args = export_args(
        sample_dir,
        sidecar,
        tmp_path / "cache",
        tmp_path / "folder",
        "--configs",
        "no_images",
        "--repo-id",
        "me/coco",
        "--private",
    )
    assert push_to_hub.main(args) == 0
    assert calls[0] == ("create_repo", ("me/coco",), {"repo_type": "dataset", "private": True, "exist_ok": True})
    upload = calls[1][2]
    assert (upload["repo_id"], upload["folder_path"], upload["repo_type"]) == (
        "me/coco",
        str(tmp_path / "folder"),
        "dataset",
    )
    assert upload["delete_patterns"] == ["data/no_images/*"]


def test_script_mode_stages_the_script_infos_card_and_sidecar(sidecar, tmp_path, capsys):
    assert (
        push_to_hub.main(["--mode", "script", "--doc2vec-path", str(sidecar), "--output", str(tmp_path), "--dry-run"])
        == 0
    )
    listed = capsys.readouterr().out.split()
    assert sorted(listed) == sorted(
        ["README.md", "coco_unified.py", "dataset_infos.json", coco_unified.DOC2VEC_SIDECAR]
    )
    assert (tmp_path / "coco_unified.py").read_bytes() == open(coco_unified.__file__, "rb").read()
    assert "trust_remote_code=True" in (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "configs" not in card_yaml(tmp_path)  # data-file configs would hide the script


def test_script_mode_without_sidecar_names_the_fix(tmp_path):
    assert (
        push_to_hub.main(
            [
                "--mode",
                "script",
                "--doc2vec-path",
                str(tmp_path / "missing.parquet"),
                "--output",
                str(tmp_path / "out"),
                "--dry-run",
            ]
        )
        == 1
    )


def test_bad_arguments_are_refused_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit):
        push_to_hub.main(["--output", str(tmp_path), "--shard-size", "big", "--dry-run"])
    assert "--shard-size 'big' is not a size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        push_to_hub.main(["--output", str(tmp_path)])
    assert "--repo-id is required" in capsys.readouterr().err
    assert push_to_hub.main(["--output", str(tmp_path), "--configs", "nope", "--dry-run"]) == 1
