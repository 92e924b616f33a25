"""Export the pool in the reference layout of the hashing literature (REFERENCE.md section 2).

    python -m tools.export --data-dir DIR --output-dir OUT

Builds the dataset script's `no_images` configuration (or `default`) and writes to OUT:

- coco_unified.mat: `labels` (uint8 N x 80), `texts` (float32 N x 300 Doc2Vec), `clean_id`
  (the 0-based pool indices of the labeled images, a 1 x M row as scipy.io.savemat stores 1-d
  arrays); the same three arrays as labels.npy, texts.npy, clean_id.npy;
- id-map.txt: `<image id> <file name> <train2017|val2017>`, one line per pool index;
- class-name.txt: `<category id> <name>`, one line per class index 0..79;
- protocol/: the seeded query / database / training index files of tools/protocol.py;
- manifest.json: counts, the protocol's seed and sizes, the Doc2Vec sidecar's provenance.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence

import numpy as np
import scipy.io

from coco_unified import (
    CATEGORIES,
    CLASS_NAMES,
    DOC2VEC_DIM,
    CocoError,
    CocoUnified,
    read_doc2vec_sidecar,
    sample_protocol,
)
from tools.lib.pool import DEFAULT_SIDECAR, add_source_arguments
from tools.protocol import add_protocol_arguments, protocol_files, write_protocol

logger = logging.getLogger(__name__)

MAT_FILE = "coco_unified.mat"
_COLUMNS = ["index", "image_id", "file_name", "coco_split", "multi_hot", "doc2vec"]


@dataclasses.dataclass
class PoolArrays:
    """The pool as arrays, row i being the image of pool index i."""

    labels: np.ndarray  # uint8 (N, 80)
    texts: np.ndarray  # float32 (N, 300)
    image_ids: np.ndarray
    file_names: list[str]
    coco_splits: list[str]

    @property
    def clean_id(self) -> np.ndarray:
        return np.flatnonzero(self.labels.any(axis=1))


def build_pool_dataset(args: argparse.Namespace, download_mode: str | None = None):
    builder = CocoUnified(
        config_name=args.config,
        data_dir=args.data_dir,
        base_url=args.base_url,
        doc2vec_path=args.doc2vec_path,
        cache_dir=args.cache_dir,
    )
    builder.download_and_prepare(download_mode=download_mode)
    return builder.as_dataset("train")


def current_pool_arrays(args: argparse.Namespace) -> tuple[PoolArrays, dict]:
    """The pool's arrays with the sidecar's vectors as they are now, and its provenance.

    The datasets cache is keyed by the sidecar's path, not its content: after a rebuilt sidecar
    the cached dataset would still hold the old vectors, so it is then generated again.
    """
    arrays = pool_arrays(build_pool_dataset(args))
    vectors, provenance = read_doc2vec_sidecar(args.doc2vec_path, arrays.image_ids)
    if not np.array_equal(arrays.texts, vectors):
        logger.warning("The cached dataset holds the vectors of an older %s; generating it again", args.doc2vec_path)
        arrays = pool_arrays(build_pool_dataset(args, download_mode="reuse_cache_if_exists"))
    return arrays, provenance


def pool_arrays(dataset) -> PoolArrays:
    """The arrays of the pool, checked: one row per pool index 0..N-1, in order."""
    table = dataset.select_columns(_COLUMNS).with_format("numpy")
    indices = table["index"]
    if not np.array_equal(indices, np.arange(len(indices))):
        raise CocoError("The dataset's rows are not the pool indices 0..N-1 in order; build it without labeled_only.")
    split_names = dataset.features["coco_split"].names
    arrays = PoolArrays(
        labels=np.asarray(table["multi_hot"], dtype=np.uint8),
        texts=np.asarray(table["doc2vec"], dtype=np.float32),
        image_ids=np.asarray(table["image_id"], dtype=np.int64),
        file_names=list(table["file_name"]),
        coco_splits=[split_names[split] for split in table["coco_split"]],
    )
    expected = {"labels": (len(indices), len(CLASS_NAMES)), "texts": (len(indices), DOC2VEC_DIM)}
    for name, shape in expected.items():
        if getattr(arrays, name).shape != shape:
            raise CocoError(f"The dataset's {name} have shape {getattr(arrays, name).shape}, expected {shape}.")
    return arrays


def write_arrays(directory: str, arrays: PoolArrays) -> None:
    named = {"labels": arrays.labels, "texts": arrays.texts, "clean_id": arrays.clean_id}
    scipy.io.savemat(os.path.join(directory, MAT_FILE), named)
    for name, array in named.items():
        np.save(os.path.join(directory, f"{name}.npy"), array)
    with open(os.path.join(directory, "id-map.txt"), "w") as file:
        file.writelines(
            f"{image_id} {name} {split}\n"
            for image_id, name, split in zip(arrays.image_ids.tolist(), arrays.file_names, arrays.coco_splits)
        )
    with open(os.path.join(directory, "class-name.txt"), "w") as file:
        file.writelines(f"{category_id} {name}\n" for category_id, name, _ in CATEGORIES)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_source_arguments(parser)
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="where the files go (created if missing)")
    parser.add_argument(
        "--doc2vec-path",
        metavar="PATH",
        help="the Doc2Vec sidecar (default: the dataset script's, coco_unified_doc2vec.parquet next to it)",
    )
    parser.add_argument(
        "--config",
        choices=["no_images", "default"],
        default="no_images",
        help="the configuration to build: no_images reads only the annotations; default also every image (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="the datasets cache (default: datasets' own)")
    add_protocol_arguments(parser)
    return parser.parse_args(argv)


def export(args: argparse.Namespace) -> dict:
    args.doc2vec_path = sidecar_location(args.doc2vec_path)
    arrays, provenance = current_pool_arrays(args)
    protocol = sample_protocol(arrays.clean_id, args.seed, args.num_query, args.train_sizes)
    os.makedirs(args.output_dir, exist_ok=True)
    write_arrays(args.output_dir, arrays)
    write_protocol(os.path.join(args.output_dir, "protocol"), protocol, arrays.image_ids)
    manifest = {
        "images": len(arrays.image_ids),
        "labeled": len(arrays.clean_id),
        "label_ones": int(arrays.labels.sum()),
        "protocol": {"seed": args.seed, **{name: len(indices) for name, indices in protocol_files(protocol).items()}},
        "doc2vec": provenance,
    }
    with open(os.path.join(args.output_dir, "manifest.json"), "w") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
    return manifest


def sidecar_location(doc2vec_path: str | None) -> str:
    """The sidecar the builder reads. A local path is made absolute: the builder would resolve a
    relative one against the script's folder, not the current directory."""
    if doc2vec_path is None:
        return DEFAULT_SIDECAR
    return doc2vec_path if "://" in doc2vec_path else os.path.abspath(doc2vec_path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        manifest = export(args)
    except CocoError as error:
        logger.error("%s", error)
        return 1
    logger.info("wrote %s: %d images, %d labeled", args.output_dir, manifest["images"], manifest["labeled"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
