"""The seeded query / database / training split of the labeled pool, as hashing papers use it.

    python -m tools.protocol --data-dir DIR --output-dir OUT [--seed S]

The sampling, exactly (`coco_unified.sample_protocol`, which the dataset script's `protocol`
configuration uses too; import it rather than re-implementing it):

    rng = numpy.random.default_rng(seed)
    shuffled = rng.permutation(labeled)     # labeled: the ascending pool indices of labeled images
    query = sort(shuffled[:num_query])
    database = sort(shuffled[num_query:])
    order = rng.permutation(database)       # the second draw of the same generator
    train_k = sort(order[:k])               # for each training size k

so every smaller training set lies inside every larger one, and all of them inside the database.
Files (one 0-based pool index per line, ascending): query.txt, database.txt, train_<k>.txt; and
database_image_ids.txt (COCO image ids) for `build_doc2vec --train-ids`, which keeps the query
images out of Doc2Vec training. tools/export.py writes the same files beside the arrays.
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import numpy as np

from coco_unified import DEFAULT_NUM_QUERY, DEFAULT_TRAIN_SIZES, CocoError, Protocol, sample_protocol
from tools.lib.pool import add_source_arguments, read_pool

logger = logging.getLogger(__name__)

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


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: %(default)s)")
    parser.add_argument("--num-query", type=int, default=DEFAULT_NUM_QUERY, help="query images (default: %(default)s)")
    parser.add_argument(
        "--train-sizes",
        type=int,
        nargs="*",
        default=list(DEFAULT_TRAIN_SIZES),
        metavar="K",
        help="training set sizes sampled from the database (default: %(default)s)",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.protocol", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_source_arguments(parser)
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="where the index files go")
    add_protocol_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        records = read_pool(args.data_dir, args.base_url)
        labeled = [record.index for record in records if record.labels]
        protocol = sample_protocol(labeled, args.seed, args.num_query, args.train_sizes)
        paths = write_protocol(args.output_dir, protocol, [record.image_id for record in records])
    except CocoError as error:
        logger.error("%s", error)
        return 1
    logger.info("wrote %s", ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
