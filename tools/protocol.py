"""Write the seeded query / database / training split of the labeled pool, as hashing papers use it.

    coco-unified protocol --data-dir DIR --output-dir OUT [--seed S] [--num-query N] [--train-sizes K ...]

The sampling, exactly (`coco_unified.sample_protocol`, which the loader's `protocol` config uses too):

    rng = numpy.random.default_rng(seed)
    shuffled = rng.permutation(labeled)     # labeled: the ascending pool indices of labeled images
    query = sort(shuffled[:num_query])
    database = sort(shuffled[num_query:])
    order = rng.permutation(database)       # the second draw of the same generator
    train_k = sort(order[:k])               # for each training size k

so every smaller training set lies inside every larger one, and all of them inside the database.
Files (one 0-based pool index per line, ascending): query.txt, database.txt, train_<k>.txt; and
database_image_ids.txt (COCO image ids) for `coco-unified doc2vec --train-ids`, which keeps the
query images out of Doc2Vec training. `coco-unified export` writes the same files beside the arrays.
"""

import argparse
import logging
import os
import sys

if not __package__:  # run by path: `python tools/protocol.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from coco_unified import number_of
from tools import cli, flags
from tools.lib.protocol_files import write_pool_protocol

logger = logging.getLogger(__name__)

# The library checks protocol sizes with the loader's keyword, num_train: here the largest of --train-sizes.
KWARG_FLAGS = {"num_train": "--train-sizes"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_source_arguments(parser)
    parser.add_argument(
        "--output-dir", required=True, metavar="DIR", help="where the index files go (created if missing)"
    )
    flags.add_protocol_arguments(parser)


def run(args: argparse.Namespace) -> None:
    paths = write_pool_protocol(
        args.output_dir,
        data_dir=args.data_dir,
        base_url=args.base_url,
        seed=args.seed,
        num_query=args.num_query,
        train_sizes=args.train_sizes,
    )
    logger.info(
        "wrote %s in %s: %s", number_of(len(paths), "file"), args.output_dir, ", ".join(map(os.path.basename, paths))
    )


if __name__ == "__main__":
    cli.main_for(__file__)
