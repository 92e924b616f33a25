"""Export the pool as the arrays and text files that cross-modal hashing code reads.

    coco-unified export --data-dir DIR --output-dir OUT [--doc2vec-path PATH | --no-doc2vec]
                        [--feature COLUMN=PATH ...]

Builds the loader's `no_images` config (or `default`) and writes to OUT:

- coco_unified.mat: `labels` (uint8 N x 80), `texts` (float32 N x 300 Doc2Vec; not with
  --no-doc2vec), `clean_id` (the 0-based pool indices of the labeled images, a 1 x M row as
  scipy.io.savemat stores 1-d arrays); the same arrays as labels.npy, texts.npy, clean_id.npy;
- id-map.txt: `<image id> <file name> <train2017|val2017>`, one line per pool index;
- class-name.txt: `<category id> <name>`, one line per class index 0..79;
- protocol/: the seeded query / database / training index files of `coco-unified protocol`;
- <COLUMN>.npy for each --feature (float32, row i = pool index i), read straight from its sidecar;
  a column up to 1,024 wide is also in coco_unified.mat, a wider one (4096-d CNN-F / VGG-19 fc7)
  is in <COLUMN>.h5 instead (HDF5 dataset <COLUMN>: h5py.File(path)["COLUMN"][rows]);
- manifest.json: counts, the protocol's seed and sizes, the provenance of every sidecar.
"""

import argparse
import logging
import os
import sys

if not __package__:  # run by path: `python tools/export.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import cli, flags
from tools.lib.exports import EXPORT_CONFIGS, ExportOptions, export_pool

logger = logging.getLogger(__name__)

# The library checks protocol sizes with the loader's keyword, num_train: here the largest of --train-sizes.
KWARG_FLAGS = {"num_train": "--train-sizes"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_source_arguments(parser)
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="where the files go (created if missing)")
    flags.add_sidecar_arguments(parser)
    flags.add_feature_arguments(parser)
    parser.add_argument(
        "--config",
        choices=EXPORT_CONFIGS,
        default=EXPORT_CONFIGS[0],
        help="the config to build: no_images reads only the annotations; default also every image "
        "(default: %(default)s)",
    )
    flags.add_cache_dir_argument(parser)
    flags.add_protocol_arguments(parser)


def run(args: argparse.Namespace) -> None:
    options = ExportOptions(
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        base_url=args.base_url,
        config=args.config,
        doc2vec=not args.no_doc2vec,
        doc2vec_path=args.doc2vec_path,
        cache_dir=args.cache_dir,
        seed=args.seed,
        num_query=args.num_query,
        train_sizes=tuple(args.train_sizes),
        feature_sidecars=args.feature_sidecars,
    )
    manifest = export_pool(options)
    logger.info(
        "wrote %s: %s images, %s of them labeled",
        args.output_dir,
        f"{manifest['images']:,}",
        f"{manifest['labeled']:,}",
    )


if __name__ == "__main__":
    cli.main_for(__file__)
