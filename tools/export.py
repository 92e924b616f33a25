"""Export the pool as the files that existing cross-modal hashing code reads.

    coco-unified export --data-dir DIR --output-dir OUT [--format FORMAT ...]
                        [--doc2vec-path PATH | --no-doc2vec] [--feature COLUMN=PATH ...]
                        [--image-feature COLUMN] [--text-feature COLUMN]

Each --format writes exactly what one code reads (tools/lib/export_formats.py lists the files):
reference (the reference preparation's .mat/.txt/.h5 files), ucch (UCCH's
MSCOCO_deep_doc2vec_data_rand.h5py), dchn (DCHN's and SDML's MSCOCO_deep_doc2vec_data.h5py), dsph
(DSPH's index.mat, caption.mat, label.mat, with images), images (images/<pool index>.jpg); each
also writes <format>_image_ids.txt, the image id of each row. Always: manifest.json (source,
counts, seeds, formats, sidecar provenance). The default, arrays, is this project's own layout:
it builds the loader's `no_images` config (or `default`) and writes to OUT:

- coco_unified.mat: `labels` (uint8 N x 80), `texts` (float32 N x 300 Doc2Vec; not with
  --no-doc2vec), `clean_id` (the 0-based pool indices of the labeled images, a 1 x M row as
  scipy.io.savemat stores 1-d arrays); the same arrays as labels.npy, texts.npy, clean_id.npy;
- id-map.txt: `<image id> <file name> <train2017|val2017>`, one line per pool index;
- class-name.txt: `<category id> <name>`, one line per class index 0..79;
- protocol/: the seeded query / database / training index files of `coco-unified protocol`;
- <COLUMN>.npy for each --feature (float32, row i = pool index i), read straight from its sidecar;
  a column up to 1,024 wide is also in coco_unified.mat, a wider one (4096-d CNN-F / VGG-19 fc7)
  is in <COLUMN>.h5 instead (HDF5 dataset <COLUMN>: h5py.File(path)["COLUMN"][rows]);
- arrays_image_ids.txt.
"""

import argparse
import logging
import os
import sys

if not __package__:  # run by path: `python tools/export.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import cli, flags
from tools.lib.export_formats import DEFAULT_IMAGE_FEATURE, DEFAULT_TEXT_FEATURE
from tools.lib.exports import EXPORT_CONFIGS, FORMATS, ExportOptions, export_pool

logger = logging.getLogger(__name__)

# The library checks protocol sizes with the loader's keyword, num_train: here the largest of --train-sizes.
KWARG_FLAGS = {"num_train": "--train-sizes"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_source_arguments(parser)
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="where the files go (created if missing)")
    parser.add_argument(
        "--format",
        dest="formats",
        nargs="+",
        choices=FORMATS,
        default=[FORMATS[0]],
        metavar="FORMAT",
        help=f"what to write, one or more of {', '.join(FORMATS)}: the files of the paper code of that name "
        "(reference: the reference preparation; dsph also writes images), arrays: this project's own layout "
        "(default: %(default)s)",
    )
    flags.add_sidecar_arguments(parser)
    flags.add_feature_arguments(parser)
    parser.add_argument(
        "--image-feature",
        default=DEFAULT_IMAGE_FEATURE,
        metavar="COLUMN",
        help="the image feature of the ucch and dchn files: a column given with --feature "
        "(default: %(default)s, VGG-19 fc7 as UCCH and DCHN use)",
    )
    parser.add_argument(
        "--text-feature",
        default=DEFAULT_TEXT_FEATURE,
        metavar="COLUMN",
        help="the text feature of the ucch and dchn files: doc2vec (the --doc2vec-path sidecar) or a column "
        "given with --feature (default: %(default)s)",
    )
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
        formats=tuple(args.formats),
        image_feature=args.image_feature,
        text_feature=args.text_feature,
    )
    manifest = export_pool(options)
    logger.info(
        "wrote %s (%s): %s images, %s of them labeled",
        args.output_dir,
        ", ".join(manifest["formats"]),
        f"{manifest['images']:,}",
        f"{manifest['labeled']:,}",
    )


if __name__ == "__main__":
    cli.main_for(__file__)
