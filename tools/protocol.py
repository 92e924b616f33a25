"""Write a named protocol's splits as index files: the hashing draw, DSPH's, UCCH's, DCHN's or Karpathy's.

    coco-unified protocol --data-dir DIR --output-dir OUT [--protocol NAME] [--seed S] [--num-query N] [--train-sizes K ...]

The protocols are `coco_unified.PROTOCOLS` (the loader's protocol configs split the pool the same
way). The hashing draw, exactly (`coco_unified.sample_protocol`):

    rng = numpy.random.default_rng(seed)
    shuffled = rng.permutation(labeled)     # labeled: the ascending pool indices of labeled images
    query = sort(shuffled[:num_query])
    database = sort(shuffled[num_query:])
    order = rng.permutation(database)       # the second draw of the same generator
    train_k = sort(order[:k])               # for each training size k

so every smaller training set lies inside every larger one, and all of them inside the database.
DSPH's: its rows (labeled train2017 images by id, then labeled val2017 ones), p =
numpy.random.RandomState(seed).permutation(rows), query = p[:num_query], train =
p[num_query:num_query + k], retrieval = p[num_query:]. UCCH's and DCHN's: the labeled pool in the
order numpy.random.default_rng(seed).permutation(labeled), UCCH's query its last num_query, DCHN's
its first num_query. Karpathy's: the shipped validation and test id lists, train the rest.

Files (tools/lib/protocol_files.py): per split `<split>.txt` (0-based pool indices, one a line)
and `<split>_image_ids.txt` (COCO image ids); `rows.txt` for the protocols whose paper reads one
file in a fixed row order; `test_fold_<k>.txt` for Karpathy's five 1K test folds.
`database_image_ids.txt` of the hashing protocol is for `coco-unified doc2vec --train-ids`, which
keeps the query images out of Doc2Vec training. `coco-unified export` writes the hashing files
beside the arrays.
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
    flags.add_protocol_arguments(parser, choose=True)


def run(args: argparse.Namespace) -> None:
    paths = write_pool_protocol(
        args.output_dir,
        data_dir=args.data_dir,
        base_url=args.base_url,
        protocol=args.protocol,
        seed=args.seed,
        num_query=args.num_query,
        train_sizes=args.train_sizes,
    )
    logger.info(
        "wrote %s in %s: %s", number_of(len(paths), "file"), args.output_dir, ", ".join(map(os.path.basename, paths))
    )


if __name__ == "__main__":
    cli.main_for(__file__)
