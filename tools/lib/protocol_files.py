"""A named protocol of `coco_unified.PROTOCOLS` as index files, one 0-based pool index a line.

Per split: `<split>.txt` (pool indices) and `<split>_image_ids.txt` (the COCO image ids of the
same rows), in the protocol's own order: ascending for the hashing draw and Karpathy's train, the
draw's order for dsph, ucch and dchn, the shipped lists' order for Karpathy's validation and test.
The hashing protocol writes one `train_<k>` split per training size (each smaller inside the larger
ones); its `database_image_ids.txt` is Doc2Vec's `train_ids`, which keeps the queries out of Doc2Vec
training. Protocols whose paper reads one file in a fixed row order add `rows.txt` (that order:
the file's row r is pool index rows[r]); Karpathy adds `test_fold_<k>.txt`, its five 1K test folds.
"""

import os
from collections.abc import Sequence

import numpy as np

from coco_unified import (
    DEFAULT_NUM_QUERY,
    DEFAULT_NUM_TRAIN,
    DEFAULT_TRAIN_SIZES,
    PROTOCOLS,
    ConfigError,
    ImageRecord,
    NamedProtocol,
    Protocol,
    karpathy_test_folds,
    labeled_indices,
    sample_protocol,
)
from tools.lib.pool import read_pool

IMAGE_IDS_SUFFIX = "_image_ids.txt"  # <split>_image_ids.txt: the COCO image ids of <split>.txt
# Doc2Vec's train_ids file: the hashing draw's database, which leaves the queries out of training.
DATABASE_IMAGE_IDS = f"database{IMAGE_IDS_SUFFIX}"
ROWS = "rows"  # rows.txt: the row order of the file the paper reads


def protocol_files(protocol: Protocol) -> dict[str, np.ndarray]:
    """File name -> the pool indices it lists, of the hashing draw."""
    return {f"{split}.txt": indices for split, indices in hashing_splits(protocol).items()}


def hashing_splits(protocol: Protocol) -> dict[str, np.ndarray]:
    """The hashing draw's splits: query, database and one train_<k> per training size."""
    named = {"query": protocol.query, "database": protocol.database}
    named.update({f"train_{size}": indices for size, indices in protocol.train.items()})
    return named


def write_protocol(directory: str, protocol: Protocol, image_ids: Sequence[int]) -> list[str]:
    """Write the hashing draw's index files and their image ids; returns the paths written."""
    return write_index_files(directory, hashing_splits(protocol), image_ids)


def write_index_files(directory: str, named: dict[str, np.ndarray], image_ids: Sequence[int]) -> list[str]:
    """`<name>.txt` and `<name>_image_ids.txt` for each named list of pool indices; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    image_ids = np.asarray(image_ids, dtype=np.int64)
    paths = []
    for name, indices in named.items():
        for path, values in ((f"{name}.txt", indices), (f"{name}{IMAGE_IDS_SUFFIX}", image_ids[indices])):
            paths.append(os.path.join(directory, path))
            np.savetxt(paths[-1], values, fmt="%d")
    return paths


def named_protocol_lists(
    records: Sequence[ImageRecord],
    protocol: str = "hashing",
    seed: int | None = None,
    num_query: int | None = None,
    train_sizes: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Name -> pool indices of every file `protocol` writes (its splits, `rows`, Karpathy's folds), less the suffix.

    None is the protocol's own value; a value the protocol does not use is refused, not ignored.
    """
    chosen = PROTOCOLS[protocol]
    _refuse_unused(chosen, seed, num_query, train_sizes)
    num_query = DEFAULT_NUM_QUERY if num_query is None else num_query
    if protocol == "hashing":  # several nested training sets at once
        sizes = DEFAULT_TRAIN_SIZES if train_sizes is None else train_sizes
        drawn = sample_protocol(labeled_indices(records), chosen.seed_or_default(seed), num_query, sizes)
        return hashing_splits(drawn)
    if train_sizes is not None and len(train_sizes) != 1:
        raise ConfigError(
            f"train_sizes={list(train_sizes)}: protocol {protocol!r} draws one training set; pass one size."
        )
    num_train = DEFAULT_NUM_TRAIN if train_sizes is None else train_sizes[0]
    named = chosen.splits(records, seed, num_query, num_train)
    rows = chosen.rows(records, seed)
    if rows is not None:
        named[ROWS] = rows
    if protocol == "karpathy":
        named.update({f"test_fold_{k}": fold for k, fold in enumerate(karpathy_test_folds(records))})
    return named


def _refuse_unused(protocol: NamedProtocol, seed, num_query, train_sizes) -> None:
    unused = {
        "seed": seed if protocol.default_seed is None else None,
        "num_query": num_query if not protocol.uses_num_query else None,
        "train_sizes": list(train_sizes) if train_sizes is not None and not protocol.uses_num_train else None,
    }
    given = [f"{name}={value}" for name, value in unused.items() if value is not None]
    if given:
        raise ConfigError(
            f"{' '.join(given)}: protocol {protocol.name!r} does not use {'them' if len(given) > 1 else 'it'} "
            f"({protocol.summary}); leave {'them' if len(given) > 1 else 'it'} out."
        )


def write_pool_protocol(
    output_dir: str,
    data_dir: str | None = None,
    base_url: str | None = None,
    protocol: str = "hashing",
    seed: int | None = None,
    num_query: int | None = None,
    train_sizes: Sequence[int] | None = None,
) -> list[str]:
    """Read the pool's annotations, compute `protocol`'s lists and write their files; returns their paths.

    Sizes the labeled pool cannot hold fail before any file is written.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol!r} is not a protocol; pass one of {', '.join(PROTOCOLS)}.")
    records = read_pool(data_dir, base_url)
    named = named_protocol_lists(records, protocol, seed, num_query, train_sizes)
    return write_index_files(output_dir, named, [record.image_id for record in records])
