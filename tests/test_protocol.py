"""The seeded hashing protocol: coco_unified.sample_protocol and the index files of tools/lib/protocol_files.py."""

import numpy as np
import pytest

from coco_unified import CocoError, sample_protocol
from tools.lib.pool import read_pool
from tools.lib.protocol_files import DATABASE_IMAGE_IDS, protocol_files, write_pool_protocol


def test_protocol_splits_the_labeled_pool():
    labeled = np.arange(0, 3_000, 3)
    protocol = sample_protocol(labeled, seed=4, num_query=100, train_sizes=(200, 400))
    assert len(protocol.query) == 100 and len(protocol.database) == 900
    assert np.array_equal(np.sort(np.concatenate([protocol.query, protocol.database])), labeled)
    assert set(protocol.train[200]) < set(protocol.train[400]) < set(protocol.database)
    assert all(np.array_equal(indices, np.sort(indices)) for indices in protocol_files(protocol).values())


def test_protocol_is_reproducible_by_its_documented_recipe():
    labeled = np.arange(500)
    protocol = sample_protocol(labeled, seed=11, num_query=50, train_sizes=(100,))
    rng = np.random.default_rng(11)
    shuffled = rng.permutation(labeled)
    assert np.array_equal(protocol.query, np.sort(shuffled[:50]))
    assert np.array_equal(protocol.train[100], np.sort(rng.permutation(np.sort(shuffled[50:]))[:100]))
    other = sample_protocol(labeled, seed=12, num_query=50, train_sizes=(100,))
    assert not np.array_equal(protocol.query, other.query)


def test_protocol_needs_enough_labeled_images():
    with pytest.raises(CocoError, match="cannot hold 50 queries and a database of at least 100"):
        sample_protocol(np.arange(120), seed=0, num_query=50, train_sizes=(100,))


def test_pool_protocol_files_list_the_drawn_indices(sample_dir, tmp_path):
    records = read_pool(str(sample_dir))
    labeled = [record.index for record in records if record.labels]
    paths = write_pool_protocol(str(tmp_path), data_dir=str(sample_dir), seed=3, num_query=40, train_sizes=[50, 100])
    expected = sample_protocol(labeled, seed=3, num_query=40, train_sizes=[50, 100])
    for name, indices in protocol_files(expected).items():
        assert np.loadtxt(tmp_path / name, dtype=np.int64).tolist() == indices.tolist()
    database_ids = np.loadtxt(tmp_path / DATABASE_IMAGE_IDS, dtype=np.int64).tolist()
    assert database_ids == [records[index].image_id for index in expected.database]
    assert sorted(path.rsplit("/", 1)[-1] for path in paths) == sorted([*protocol_files(expected), DATABASE_IMAGE_IDS])
