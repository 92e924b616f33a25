"""The seeded query / database / training split of the labeled pool, as index files.

The split itself is `coco_unified.sample_protocol` (the loader's `protocol` config draws it too).
Files (one 0-based pool index per line, ascending): query.txt, database.txt, train_<k>.txt; and
database_image_ids.txt (COCO image ids), for Doc2Vec's `train_ids`, which keeps the query images
out of Doc2Vec training.
"""

import os
from collections.abc import Sequence

import numpy as np

from coco_unified import DEFAULT_NUM_QUERY, DEFAULT_TRAIN_SIZES, Protocol, sample_protocol
from tools.lib.pool import read_pool

DATABASE_IMAGE_IDS = "database_image_ids.txt"


def protocol_files(protocol: Protocol) -> dict[str, np.ndarray]:
    """File name -> the pool indices it lists."""
    named = {"query.txt": protocol.query, "database.txt": protocol.database}
    named.update({f"train_{size}.txt": indices for size, indices in protocol.train.items()})
    return named


def write_protocol(directory: str, protocol: Protocol, image_ids: Sequence[int]) -> list[str]:
    """Write the index files and the database's image ids; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    image_ids = np.asarray(image_ids, dtype=np.int64)
    contents = protocol_files(protocol)
    contents[DATABASE_IMAGE_IDS] = image_ids[protocol.database]
    paths = []
    for name, values in contents.items():
        path = os.path.join(directory, name)
        np.savetxt(path, values, fmt="%d")
        paths.append(path)
    return paths


def write_pool_protocol(
    output_dir: str,
    data_dir: str | None = None,
    base_url: str | None = None,
    seed: int = 0,
    num_query: int = DEFAULT_NUM_QUERY,
    train_sizes: Sequence[int] = DEFAULT_TRAIN_SIZES,
) -> list[str]:
    """Read the pool's annotations, draw the protocol and write its files; returns their paths.

    Sizes the labeled pool cannot hold fail before any file is written (`sample_protocol` checks them).
    """
    records = read_pool(data_dir, base_url)
    labeled = [record.index for record in records if record.labels]
    protocol = sample_protocol(labeled, seed, num_query, train_sizes)
    return write_protocol(output_dir, protocol, [record.image_id for record in records])
