"""The named protocols (coco_unified.PROTOCOLS) and their index files (tools/lib/protocol_files.py)."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import coco_unified
from coco_unified import (
    KARPATHY_ID_LISTS,
    PROTOCOLS,
    REAL_COUNTS,
    CocoError,
    ConfigError,
    IdList,
    ImageRecord,
    dsph_rows,
    karpathy_test_folds,
    sample_protocol,
)
from tests.consumers import dsph_split_data
from tools.lib.pool import read_pool
from tools.lib.protocol_files import (
    DATABASE_IMAGE_IDS,
    named_protocol_lists,
    protocol_files,
    write_pool_protocol,
)

# The sample of conftest.py has 243 labeled images: sizes that fit it.
NUM_QUERY, NUM_TRAIN = 50, 100
SEEDED = [name for name, protocol in PROTOCOLS.items() if protocol.default_seed is not None]


@pytest.fixture(scope="module")
def records(sample_dir) -> list[ImageRecord]:
    return read_pool(str(sample_dir))


def labeled_set(records) -> set[int]:
    return {record.index for record in records if record.labels}


def shipped_ids(split: str) -> list[int]:
    """A Karpathy list as shipped, read here with plain Python."""
    return [int(line) for line in (Path(coco_unified.__file__).parent / KARPATHY_ID_LISTS[split]).read_text().split()]


# ----------------------------------------------------------------------------- the hashing draw


def test_hashing_draw_splits_the_labeled_pool():
    labeled = np.arange(0, 3_000, 3)
    protocol = sample_protocol(labeled, seed=4, num_query=100, train_sizes=(200, 400))
    assert len(protocol.query) == 100 and len(protocol.database) == 900
    assert np.array_equal(np.sort(np.concatenate([protocol.query, protocol.database])), labeled)
    assert set(protocol.train[200]) < set(protocol.train[400]) < set(protocol.database)
    assert all(np.array_equal(indices, np.sort(indices)) for indices in protocol_files(protocol).values())


def test_hashing_draw_is_reproducible_by_its_documented_recipe():
    labeled = np.arange(500)
    protocol = sample_protocol(labeled, seed=11, num_query=50, train_sizes=(100,))
    rng = np.random.default_rng(11)
    shuffled = rng.permutation(labeled)
    assert np.array_equal(protocol.query, np.sort(shuffled[:50]))
    assert np.array_equal(protocol.train[100], np.sort(rng.permutation(np.sort(shuffled[50:]))[:100]))
    other = sample_protocol(labeled, seed=12, num_query=50, train_sizes=(100,))
    assert not np.array_equal(protocol.query, other.query)


def test_hashing_draw_needs_enough_labeled_images():
    with pytest.raises(CocoError, match="cannot hold 50 queries and a database of at least 100"):
        sample_protocol(np.arange(120), seed=0, num_query=50, train_sizes=(100,))


# ----------------------------------------------------------------------------- every named protocol


@pytest.mark.parametrize("name", ["hashing", "dsph", "dchn"])
def test_sized_protocols_query_apart_and_train_inside_the_retrieval_set(records, name):
    splits = PROTOCOLS[name].splits(records, None, NUM_QUERY, NUM_TRAIN)
    retrieval = splits["database" if name == "hashing" else "retrieval"]
    assert {
        split: len(indices) for split, indices in splits.items() if split != "database" and split != "retrieval"
    } == {
        "query": NUM_QUERY,
        "train": NUM_TRAIN,
    }
    assert set(splits) == set(PROTOCOLS[name].split_names)
    assert not set(splits["query"]) & set(retrieval) and not set(splits["query"]) & set(splits["train"])
    assert set(splits["train"]) <= set(retrieval)
    assert set(splits["query"]) | set(retrieval) == labeled_set(records)
    assert all(len(np.unique(indices)) == len(indices) for indices in splits.values())


def test_ucch_queries_with_the_last_rows_of_its_file_and_trains_on_all_the_others(records):
    protocol = PROTOCOLS["ucch"]
    splits, rows = protocol.splits(records, 5, NUM_QUERY), protocol.rows(records, 5)
    assert sorted(rows.tolist()) == sorted(labeled_set(records))
    assert np.array_equal(splits["query"], rows[-NUM_QUERY:])
    assert np.array_equal(splits["train"], rows[:-NUM_QUERY]) and np.array_equal(splits["retrieval"], rows[:-NUM_QUERY])


def test_dchn_slices_its_file_as_dchn_does(records):
    protocol = PROTOCOLS["dchn"]
    splits, rows = protocol.splits(records, 5, NUM_QUERY, NUM_TRAIN), protocol.rows(records, 5)
    assert np.array_equal(rows, np.random.default_rng(5).permutation(sorted(labeled_set(records))))
    assert np.array_equal(splits["query"], rows[:NUM_QUERY])
    assert np.array_equal(splits["train"], rows[NUM_QUERY : NUM_QUERY + NUM_TRAIN])
    assert np.array_equal(splits["retrieval"], rows[NUM_QUERY:])


@pytest.mark.parametrize("name", SEEDED)
def test_seeded_protocols_depend_on_their_seed_only(records, name):
    protocol = PROTOCOLS[name]
    first = protocol.splits(records, 3, NUM_QUERY, NUM_TRAIN)
    again = protocol.splits(records, 3, NUM_QUERY, NUM_TRAIN)
    other = protocol.splits(records, 4, NUM_QUERY, NUM_TRAIN)
    assert all(np.array_equal(first[split], again[split]) for split in first)
    assert not np.array_equal(first["query"], other["query"])
    default = protocol.splits(records, None, NUM_QUERY, NUM_TRAIN)
    own = protocol.splits(records, protocol.default_seed, NUM_QUERY, NUM_TRAIN)
    assert all(np.array_equal(default[split], own[split]) for split in default)


@pytest.mark.parametrize("name", [name for name, protocol in PROTOCOLS.items() if protocol.uses_num_query])
def test_sized_protocols_too_big_for_the_pool_name_sizes_that_fit(records, name):
    with pytest.raises(ConfigError, match=rf"The {name} protocol on this copy of COCO: its 243 labeled images"):
        PROTOCOLS[name].splits(records)


def test_real_split_sizes_are_what_each_protocol_draws_from_a_pool_of_the_real_counts():
    """A pool with COCO 2017's counts, every Karpathy id in it: each protocol's splits have its stated sizes."""
    karpathy = np.concatenate([shipped_ids(split) for split in KARPATHY_ID_LISTS])
    others = np.setdiff1d(np.arange(1, 600_000), karpathy)[: REAL_COUNTS.images - len(karpathy)]
    image_ids = np.sort(np.concatenate([karpathy, others]))
    unlabeled = set(
        np.random.default_rng(0)
        .choice(len(image_ids), REAL_COUNTS.images - REAL_COUNTS.labeled, replace=False)
        .tolist()
    )
    records = [
        ImageRecord(
            int(image_id),
            "",
            "val2017" if index % 25 == 0 else "train2017",
            1,
            1,
            labels=[] if index in unlabeled else [0],
            index=index,
        )
        for index, image_id in enumerate(image_ids)
    ]
    for protocol in PROTOCOLS.values():
        sizes = {split: len(indices) for split, indices in protocol.splits(records).items()}
        assert sizes == protocol.real_sizes(), protocol.name


# ----------------------------------------------------------------------------- DSPH, exactly


def dsph_split_data_from_the_json(sample_dir, query_num, train_num, seed=1814):
    """An independent re-implementation: DSPH's make_coco.py row list from the annotation JSON, then its split_data."""
    image_ids = []
    with zipfile.ZipFile(sample_dir / "annotations_trainval2017.zip") as annotations:
        for split in ("train2017", "val2017"):
            instances = json.loads(annotations.read(f"annotations/instances_{split}.json"))
            with_instance = {annotation["image_id"] for annotation in instances["annotations"]}
            image_ids += sorted(image["id"] for image in instances["images"] if image["id"] in with_instance)
    query_index, train_index, retrieval_index = dsph_split_data(len(image_ids), query_num, train_num, seed)
    ids = np.asarray(image_ids)
    return ids, {"query": ids[query_index], "train": ids[train_index], "retrieval": ids[retrieval_index]}


def test_dsph_rows_and_split_equal_dsph_split_data_on_the_annotation_json(sample_dir, records):
    rows_expected, expected = dsph_split_data_from_the_json(sample_dir, NUM_QUERY, NUM_TRAIN)
    image_id = np.asarray([record.image_id for record in records])
    assert np.array_equal(image_id[dsph_rows(records)], rows_expected)
    assert np.array_equal(image_id[PROTOCOLS["dsph"].rows(records)], rows_expected)
    splits = PROTOCOLS["dsph"].splits(records, None, NUM_QUERY, NUM_TRAIN)
    assert {split: image_id[indices].tolist() for split, indices in splits.items()} == {
        split: ids.tolist() for split, ids in expected.items()
    }
    state = np.random.get_state()[1][:4].tolist()
    PROTOCOLS["dsph"].splits(records, None, NUM_QUERY, NUM_TRAIN)
    assert np.random.get_state()[1][:4].tolist() == state  # numpy's global generator is left alone


# ----------------------------------------------------------------------------- Karpathy


def test_karpathy_holds_out_the_shipped_lists_in_their_order_and_trains_on_the_rest(records, caplog):
    in_pool = {record.image_id: record.index for record in records}
    splits = PROTOCOLS["karpathy"].splits(records)
    for split in KARPATHY_ID_LISTS:
        expected = [in_pool[image_id] for image_id in shipped_ids(split) if image_id in in_pool]
        assert splits[split].tolist() == expected and len(expected) >= 5
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(len(records)))
    assert np.array_equal(splits["train"], np.sort(splits["train"]))
    assert "image ids are in this copy of COCO" in caplog.text  # the sample holds only some of them


def test_karpathy_test_folds_follow_the_shipped_file_rows(records):
    in_pool = {record.image_id: record.index for record in records}
    ids = shipped_ids("test")
    folds = karpathy_test_folds(records)
    assert len(folds) == 5
    for k, fold in enumerate(folds):
        assert fold.tolist() == [in_pool[i] for i in ids[k * 1000 : (k + 1) * 1000] if i in in_pool]
    assert np.concatenate(folds).tolist() == PROTOCOLS["karpathy"].splits(records)["test"].tolist()


def test_karpathy_list_altered_or_absent_from_the_pool_is_named(records, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("\n".join(map(str, shipped_ids("test")[:-1])))
    lists = coco_unified.shipped_id_lists(KARPATHY_ID_LISTS)
    with pytest.raises(CocoError, match=rf"{short} lists 4,999 image ids, not Karpathy's 5,000; restore"):
        PROTOCOLS["karpathy"].splits(records, id_lists={**lists, "test": coco_unified.read_id_list(str(short))})
    absent = IdList("elsewhere.txt", np.arange(10**7, 10**7 + 5_000))
    with pytest.raises(ConfigError, match=r"elsewhere.txt: none of its 5,000 image ids is in this copy of COCO"):
        PROTOCOLS["karpathy"].splits(records, id_lists={**lists, "validation": absent})


# ----------------------------------------------------------------------------- index files


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_protocol_files_list_each_split_with_its_image_ids(sample_dir, records, tmp_path, name):
    sizes = (
        {} if name == "karpathy" else {"num_query": NUM_QUERY, "train_sizes": None if name == "ucch" else [NUM_TRAIN]}
    )
    paths = write_pool_protocol(str(tmp_path), data_dir=str(sample_dir), protocol=name, **sizes)
    named = named_protocol_lists(records, name, **sizes)
    image_ids = np.asarray([record.image_id for record in records])
    assert sorted(path.rsplit("/", 1)[-1] for path in paths) == sorted(
        file for list_name in named for file in (f"{list_name}.txt", f"{list_name}_image_ids.txt")
    )
    for list_name, indices in named.items():
        assert np.loadtxt(tmp_path / f"{list_name}.txt", dtype=np.int64, ndmin=1).tolist() == indices.tolist()
        assert (
            np.loadtxt(tmp_path / f"{list_name}_image_ids.txt", dtype=np.int64, ndmin=1).tolist()
            == image_ids[indices].tolist()
        )
    expected = set(PROTOCOLS[name].split_names) - ({"train"} if name == "hashing" else set())
    assert expected <= set(named)
    assert ("rows" in named) == (PROTOCOLS[name].rows(records) is not None)


def test_hashing_files_hold_every_training_size_and_the_database_ids_for_doc2vec(sample_dir, records, tmp_path):
    write_pool_protocol(str(tmp_path), data_dir=str(sample_dir), seed=3, num_query=40, train_sizes=[50, 100])
    expected = sample_protocol(sorted(labeled_set(records)), seed=3, num_query=40, train_sizes=[50, 100])
    for name, indices in protocol_files(expected).items():
        assert np.loadtxt(tmp_path / name, dtype=np.int64).tolist() == indices.tolist()
    database_ids = np.loadtxt(tmp_path / DATABASE_IMAGE_IDS, dtype=np.int64).tolist()
    assert database_ids == [records[index].image_id for index in expected.database]


@pytest.mark.parametrize(
    "name, values, named",
    [
        ("karpathy", {"seed": 3}, r"seed=3: protocol 'karpathy' does not use it"),
        ("karpathy", {"num_query": 5, "train_sizes": [4]}, r"num_query=5 train_sizes=\[4\]: protocol 'karpathy' does not use them"),
        ("ucch", {"train_sizes": [4]}, r"train_sizes=\[4\]: protocol 'ucch' does not use it"),
        ("dsph", {"num_query": 5, "train_sizes": [4, 8]}, r"protocol 'dsph' draws one training set"),
    ],
)  # fmt: skip
def test_values_a_protocol_does_not_use_are_refused(records, name, values, named):
    with pytest.raises(ConfigError, match=named):
        named_protocol_lists(records, name, **values)


def test_split_sizes_off_the_real_ones_on_the_official_coco_are_an_error():
    expected = PROTOCOLS["karpathy"].real_sizes()
    coco_unified.check_real_split_sizes({split: [0] * size for split, size in expected.items()}, expected)
    with pytest.raises(coco_unified.AnnotationError, match=r"the id lists beside coco_unified.py were altered"):
        coco_unified.check_real_split_sizes(
            {**{s: [0] * n for s, n in expected.items()}, "test": [0] * 4_999}, expected
        )
