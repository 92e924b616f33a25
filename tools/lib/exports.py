"""The pool as the arrays and text files that cross-modal hashing code reads.

`export_pool` builds the loader's `no_images` config (or `default`) and writes to the output folder:

- coco_unified.mat: `labels` (uint8 N x 80), `texts` (float32 N x 300 Doc2Vec; left out with
  doc2vec=False), `clean_id` (the 0-based pool indices of the labeled images, a 1 x M row as
  scipy.io.savemat stores 1-d arrays); the same arrays as labels.npy, texts.npy, clean_id.npy;
- id-map.txt: `<image id> <file name> <train2017|val2017>`, one line per pool index;
- class-name.txt: `<category id> <name>`, one line per class index 0..79;
- protocol/: the seeded query / database / training index files (tools/lib/protocol_files.py);
- <column>.npy for each feature column of `feature_sidecars` (float32, row i = pool index i),
  read straight from its sidecar; a column up to 1,024 wide is also in coco_unified.mat, a wider
  one (4096-d CNN-F / VGG-19 fc7) is in <column>.h5 instead (dataset <column>), which .mat v5
  handles poorly;
- manifest.json: counts, the protocol's seed and sizes, the provenance of every sidecar.
"""

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping

import h5py
import numpy as np
import scipy.io

from coco_unified import (
    CATEGORIES,
    CLASS_NAMES,
    DEFAULT_NUM_QUERY,
    DEFAULT_TRAIN_SIZES,
    DOC2VEC_DIM,
    CocoError,
    ConfigError,
    check_feature_sidecars,
    feature_column,
    read_doc2vec_sidecar,
    read_feature_sidecar,
    sample_protocol,
)
from tools.lib.builder import pool_builder
from tools.lib.pool import DEFAULT_SIDECAR
from tools.lib.progress import Progress
from tools.lib.protocol_files import protocol_files, write_protocol

logger = logging.getLogger(__name__)

MAT_FILE = "coco_unified.mat"
MANIFEST_FILE = "manifest.json"
PROTOCOL_DIR = "protocol"
# The configs whose rows are the whole pool in index order: what the arrays need.
EXPORT_CONFIGS = ("no_images", "default")
_COLUMNS = ["index", "image_id", "file_name", "coco_split", "multi_hot"]
# The arrays every export writes; a feature column may not take their names.
POOL_ARRAYS = ("labels", "texts", "clean_id")
# A feature column becomes a file name (<column>.npy), a MATLAB variable and an HDF5 dataset: a
# letter, then letters, digits and underscores is a valid name for all three.
FEATURE_COLUMN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Feature columns wider than this go to HDF5 rather than .mat v5 (4096-d CNN-F / VGG-19 fc7).
MAT_MAX_COLUMNS = 1024
# Rows written to an HDF5 dataset at a time: 4,096 rows of 4096-d float32 are 64 MB.
H5_WRITE_ROWS = 4096


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Where the pool is read from, what is exported, and the protocol drawn from it."""

    output_dir: str
    data_dir: str | None = None
    base_url: str | None = None
    config: str = "no_images"  # no_images reads only the annotations; default also every image
    doc2vec: bool = True
    doc2vec_path: str = DEFAULT_SIDECAR
    cache_dir: str | None = None
    seed: int = 0
    num_query: int = DEFAULT_NUM_QUERY
    train_sizes: tuple[int, ...] = DEFAULT_TRAIN_SIZES
    # column -> feature sidecar, as the loader's feature_sidecars; each column is exported as arrays
    feature_sidecars: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.config not in EXPORT_CONFIGS:
            raise CocoError(
                f"config={self.config!r} cannot be exported as arrays; choose one of {list(EXPORT_CONFIGS)}."
            )
        check_feature_sidecars(dict(self.feature_sidecars), self.doc2vec)
        for column in self.feature_sidecars:
            if column in POOL_ARRAYS or not FEATURE_COLUMN.fullmatch(column):
                raise ConfigError(
                    f"feature_sidecars: {column!r} cannot name exported arrays: use a letter, then letters, digits "
                    f"or _, other than {', '.join(POOL_ARRAYS)} (e.g. vgg19_fc7)."
                )

    @property
    def sidecar(self) -> str | None:
        return self.doc2vec_path if self.doc2vec else None


@dataclasses.dataclass(frozen=True)
class PoolArrays:
    """The pool as arrays, row i being the image of pool index i."""

    labels: np.ndarray  # uint8 (N, 80)
    texts: np.ndarray | None  # float32 (N, 300); None without Doc2Vec
    image_ids: np.ndarray
    file_names: list[str]
    coco_splits: list[str]

    @property
    def clean_id(self) -> np.ndarray:
        return np.flatnonzero(self.labels.any(axis=1))


def build_pool_dataset(options: ExportOptions, download_mode: str | None = None):
    builder = pool_builder(
        options.config,
        data_dir=options.data_dir,
        base_url=options.base_url,
        doc2vec=options.doc2vec,
        doc2vec_path=options.doc2vec_path,
        cache_dir=options.cache_dir,
    )
    builder.download_and_prepare(download_mode=download_mode)
    return builder.as_dataset("train")


def current_pool_arrays(options: ExportOptions) -> tuple[PoolArrays, dict | None]:
    """The pool's arrays with the sidecar's vectors as they are now, and its provenance.

    The datasets cache is keyed by the sidecar's path, not its content: after a rebuilt sidecar
    the cached dataset would still hold the old vectors, so it is then generated again.
    """
    arrays = pool_arrays(build_pool_dataset(options), options.doc2vec)
    if not options.doc2vec:
        return arrays, None
    vectors, provenance = read_doc2vec_sidecar(options.sidecar, arrays.image_ids)
    if not np.array_equal(arrays.texts, vectors):
        logger.warning("The cached dataset holds the vectors of an older %s; generating it again", options.sidecar)
        arrays = pool_arrays(build_pool_dataset(options, download_mode="reuse_cache_if_exists"), options.doc2vec)
    return arrays, provenance


def pool_arrays(dataset, with_texts: bool) -> PoolArrays:
    """The arrays of the pool, checked: one row per pool index 0..N-1, in order."""
    table = dataset.select_columns(_COLUMNS + (["doc2vec"] if with_texts else [])).with_format("numpy")
    indices = table["index"]
    if not np.array_equal(indices, np.arange(len(indices))):
        raise CocoError("The dataset's rows are not the pool indices 0..N-1 in order; build it without labeled_only.")
    split_names = dataset.features["coco_split"].names
    arrays = PoolArrays(
        labels=np.asarray(table["multi_hot"], dtype=np.uint8),
        texts=np.asarray(table["doc2vec"], dtype=np.float32) if with_texts else None,
        image_ids=np.asarray(table["image_id"], dtype=np.int64),
        file_names=list(table["file_name"]),
        coco_splits=[split_names[split] for split in table["coco_split"]],
    )
    expected = {"labels": (len(indices), len(CLASS_NAMES)), "texts": (len(indices), DOC2VEC_DIM)}
    for name, shape in expected.items():
        array = getattr(arrays, name)
        if array is not None and array.shape != shape:
            raise CocoError(f"The dataset's {name} have shape {array.shape}, expected {shape}.")
    return arrays


def write_arrays(directory: str, arrays: PoolArrays, narrow_features: Mapping[str, np.ndarray]) -> None:
    """The pool's arrays as .npy and in coco_unified.mat, with the feature matrices .mat v5 holds well."""
    named = {"labels": arrays.labels, "texts": arrays.texts, "clean_id": arrays.clean_id}
    named = {name: array for name, array in named.items() if array is not None}
    scipy.io.savemat(os.path.join(directory, MAT_FILE), {**named, **narrow_features})
    for name, array in named.items():
        np.save(os.path.join(directory, f"{name}.npy"), array)
    with open(os.path.join(directory, "id-map.txt"), "w") as file:
        file.writelines(
            f"{image_id} {name} {split}\n"
            for image_id, name, split in zip(arrays.image_ids.tolist(), arrays.file_names, arrays.coco_splits)
        )
    with open(os.path.join(directory, "class-name.txt"), "w") as file:
        file.writelines(f"{category_id} {name}\n" for category_id, name, _ in CATEGORIES)


def write_h5(path: str, column: str, matrix: np.ndarray) -> None:
    """`matrix` as dataset `column` of a new HDF5 file, written in row slices with a progress bar."""
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset(column, shape=matrix.shape, dtype=np.float32)
        with Progress(total=len(matrix), unit="rows", desc=os.path.basename(path)) as progress:
            for start in range(0, len(matrix), H5_WRITE_ROWS):
                rows = matrix[start : start + H5_WRITE_ROWS]
                dataset[start : start + len(rows)] = rows
                progress.update(len(rows))


def export_features(options: ExportOptions, image_ids: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Each feature column as <column>.npy (and <column>.h5 when wider than MAT_MAX_COLUMNS), read from
    its sidecar in pool order, one column in memory at a time.

    Returns the narrow matrices (for coco_unified.mat) and, per column, its manifest entry.
    """
    narrow, described = {}, {}
    for column, path in options.feature_sidecars.items():
        matrix, provenance = read_feature_sidecar(os.fspath(path), column, image_ids)
        np.save(os.path.join(options.output_dir, f"{column}.npy"), matrix)
        files = [f"{column}.npy"]
        if matrix.shape[1] > MAT_MAX_COLUMNS:
            write_h5(os.path.join(options.output_dir, f"{column}.h5"), column, matrix)
            files.append(f"{column}.h5")
        else:
            narrow[column] = matrix
            files.append(MAT_FILE)
        described[column] = {"dim": int(matrix.shape[1]), "files": files, "provenance": provenance}
        logger.info("%s: %s-d vectors from %s in %s", column, matrix.shape[1], path, ", ".join(files))
    return narrow, described


def export_pool(options: ExportOptions) -> dict:
    """Write the arrays, the protocol and the manifest into options.output_dir; returns the manifest."""
    for column, path in options.feature_sidecars.items():
        feature_column(column, os.fspath(path))  # a missing file or column fails now, before the pool is built
    arrays, provenance = current_pool_arrays(options)
    protocol = sample_protocol(arrays.clean_id, options.seed, options.num_query, options.train_sizes)
    os.makedirs(options.output_dir, exist_ok=True)
    narrow_features, features = export_features(options, arrays.image_ids)
    write_arrays(options.output_dir, arrays, narrow_features)
    write_protocol(os.path.join(options.output_dir, PROTOCOL_DIR), protocol, arrays.image_ids)
    manifest = {
        "images": len(arrays.image_ids),
        "labeled": len(arrays.clean_id),
        "label_ones": int(arrays.labels.sum()),
        "protocol": {
            "seed": options.seed,
            **{name: len(indices) for name, indices in protocol_files(protocol).items()},
        },
        "doc2vec": provenance,
        "features": features,
    }
    with open(os.path.join(options.output_dir, MANIFEST_FILE), "w") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
    return manifest
