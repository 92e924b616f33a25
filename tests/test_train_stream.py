"""examples/train_stream.py: every example exactly once per epoch across DataLoader workers and ranks.

For both sources: the script builder streaming a local COCO copy, and a folder exported by tools/lib/publish.py.
"""

from collections import Counter

import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed in this environment (requirements.txt pins torch==2.13.0)"
)

from coco_unified import CocoError  # noqa: E402
from examples.train_stream import make_loader, open_pool, train, training_stream  # noqa: E402
from tools.lib.publish import PublishOptions, write_folder  # noqa: E402

IMAGE_SIZE = 16  # small: the tests check coverage, not pixels
EPOCHS = 2


@pytest.fixture(scope="module")
def exported_folder(sample_dir, sidecar, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_stream")
    common = {"data_dir": str(sample_dir), "doc2vec_path": str(sidecar), "cache_dir": str(root / "cache")}
    # 100KB shards: the sample's ~400 KB of images split into 4 files, enough for 2 ranks x 2 workers.
    write_folder(PublishOptions(output=str(root / "folder"), configs=("default",), shard_size="100KB", **common))
    return root / "folder"


@pytest.fixture(params=["script", "parquet"])
def pool(request, sample_dir, sidecar, tmp_path):
    if request.param == "script":
        return open_pool(data_dir=str(sample_dir), doc2vec_path=str(sidecar), cache_dir=str(tmp_path / "cache"))
    return open_pool(parquet=str(request.getfixturevalue("exported_folder")), cache_dir=str(tmp_path / "cache"))


def epoch_indices(loader, stream, epoch):
    stream.set_epoch(epoch)
    indices = []
    for batch in loader:
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert batch["doc2vec"].shape[1:] == (300,) and batch["multi_hot"].shape[1:] == (80,)
        indices += batch["index"].tolist()
    return indices


def assert_once_each(indices, oracle):
    repeated = [index for index, count in Counter(indices).items() if count > 1]
    assert not repeated, f"read more than once: {repeated[:10]}"
    assert sorted(indices) == list(range(len(oracle)))


def test_two_workers_cover_the_pool_once_per_epoch(pool, oracle):
    stream = training_stream(pool, image_size=IMAGE_SIZE, shuffle_buffer=64)
    loader = make_loader(stream, batch_size=32, workers=2)
    orders = [epoch_indices(loader, stream, epoch) for epoch in range(EPOCHS)]
    for order in orders:
        assert_once_each(order, oracle)
    assert orders[0] != orders[1], "set_epoch should reshuffle"


def test_two_ranks_with_two_workers_each_cover_the_pool_once_per_epoch(pool, oracle):
    streams = [
        training_stream(pool, rank=rank, world_size=2, image_size=IMAGE_SIZE, shuffle_buffer=64) for rank in range(2)
    ]
    for epoch in range(EPOCHS):
        per_rank = [epoch_indices(make_loader(stream, batch_size=32, workers=2), stream, epoch) for stream in streams]
        assert all(per_rank), "every rank gets examples"
        assert_once_each(per_rank[0] + per_rank[1], oracle)


def test_training_steps_run(exported_folder, tmp_path):
    stream = training_stream(open_pool(parquet=str(exported_folder), cache_dir=str(tmp_path)), image_size=IMAGE_SIZE)
    model = train(make_loader(stream, batch_size=64, workers=0), stream, epochs=1)
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())


def test_a_config_without_images_is_refused_with_the_fix(sample_dir, sidecar, tmp_path):
    with pytest.raises(CocoError, match=r"no column\(s\) \['image'\]; use a config with images"):
        open_pool(data_dir=str(sample_dir), config="no_images", doc2vec_path=str(sidecar), cache_dir=str(tmp_path))
