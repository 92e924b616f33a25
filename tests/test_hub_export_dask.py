"""The exported Parquet read by Dask, lazily and partition by partition, holds the builder's rows."""

import dask.dataframe as dd
import datasets
import numpy as np
import pytest

from coco_unified import CocoUnified
from tools.lib.publish import PublishOptions, write_folder

COMPARED = (
    "index",
    "image_id",
    "file_name",
    "coco_split",
    "width",
    "height",
    "captions",
    "caption_ids",
    "labels",
    "multi_hot",
)


@pytest.fixture(scope="module")
def exported(sample_dir, sidecar, tmp_path_factory):
    root = tmp_path_factory.mktemp("dask_export")
    common = {"data_dir": str(sample_dir), "doc2vec_path": str(sidecar), "cache_dir": str(root / "cache")}
    write_folder(PublishOptions(output=str(root / "folder"), configs=("default",), shard_size="100KB", **common))
    builder = CocoUnified(
        config_name="default", data_dir=str(sample_dir), doc2vec_path=str(sidecar), cache_dir=str(root / "cache")
    )
    builder.download_and_prepare()
    return root / "folder", builder.as_dataset("train").cast_column("image", datasets.Image(decode=False))


def as_python(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def test_dask_reads_the_builders_rows_partition_by_partition(exported):
    folder, expected = exported
    frame = dd.read_parquet(str(folder / "data" / "default" / "train-*.parquet"))
    assert frame.npartitions > 1
    rows = []
    for partition in frame.to_delayed():  # one shard's rows in memory at a time
        rows += partition.compute(scheduler="synchronous").to_dict("records")
    assert [row["index"] for row in rows] == list(range(len(expected)))
    for row, want in zip(rows, expected):
        assert {column: as_python(row[column]) for column in COMPARED} == {column: want[column] for column in COMPARED}
        assert row["image"]["bytes"] == want["image"]["bytes"]
        assert np.array_equal(
            np.asarray(row["doc2vec"], dtype=np.float32), np.asarray(want["doc2vec"], dtype=np.float32)
        )
