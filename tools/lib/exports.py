"""The pool as the files that cross-modal hashing code reads, in one or more formats.

`export_pool` writes each format of `formats` into the output folder, and always manifest.json
(source, counts, seeds, formats, the provenance of every sidecar used). The paper formats
(reference, ucch, dchn, dsph, images) are in tools/lib/export_formats.py. The `arrays` format,
this project's own layout, builds the loader's `no_images` config (or `default`) and writes:

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
- arrays_image_ids.txt: the image id of each row (pool order).
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
    CLASS_NAMES,
    DEFAULT_NUM_QUERY,
    DEFAULT_TRAIN_SIZES,
    DOC2VEC_DIM,
    OFFICIAL_BASE_URL,
    CocoError,
    ConfigError,
    check_feature_sidecars,
    feature_column,
    read_doc2vec_sidecar,
    redact_url,
    sample_protocol,
)
from tools.lib.builder import pool_builder
from tools.lib.export_formats import (
    DEFAULT_IMAGE_FEATURE,
    DEFAULT_TEXT_FEATURE,
    PLANS,
    ExportPool,
    FeatureChoice,
    NpyRows,
    fill_rows,
    write_class_names,
    write_id_map,
    write_image_ids,
)
from tools.lib.pool import DEFAULT_SIDECAR
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
# Every format `export_pool` writes; `arrays` is this project's own layout, the default.
FORMATS = ("arrays", *PLANS)
# Formats that need another: DSPH's index.mat names the exported image files.
NEEDS = {"dsph": "images"}


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
    formats: tuple[str, ...] = ("arrays",)
    # the sidecar columns of the ucch and dchn files' image and text features
    image_feature: str = DEFAULT_IMAGE_FEATURE
    text_feature: str = DEFAULT_TEXT_FEATURE

    def __post_init__(self):
        unknown = [name for name in self.formats if name not in FORMATS]
        if unknown or not self.formats:
            raise ConfigError(f"formats={list(self.formats)!r}: choose one or more of {list(FORMATS)}.")
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

    @property
    def formats_written(self) -> list[str]:
        """The formats asked for, each once, with those they need (dsph's images)."""
        written = list(dict.fromkeys(self.formats))
        return written + [NEEDS[name] for name in written if name in NEEDS and NEEDS[name] not in written]

    @property
    def source(self) -> str:
        """Where COCO was read from, as the manifest publishes it: no user or password."""
        return redact_url(self.data_dir or self.base_url or OFFICIAL_BASE_URL)


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
    write_id_map(
        os.path.join(directory, "id-map.txt"), arrays.image_ids.tolist(), arrays.file_names, arrays.coco_splits
    )
    write_class_names(os.path.join(directory, "class-name.txt"))


def export_features(options: ExportOptions, image_ids: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Each feature column as <column>.npy (and <column>.h5 when wider than MAT_MAX_COLUMNS), streamed
    from its sidecar in pool order into the files: a wide column is never in memory whole.

    Returns the narrow matrices (for coco_unified.mat) and, per column, its manifest entry.
    """
    narrow, described = {}, {}
    for column_name, path in options.feature_sidecars.items():
        column = feature_column(column_name, os.fspath(path))
        shape = (len(image_ids), column.dim)
        npy_path = os.path.join(options.output_dir, f"{column_name}.npy")
        if column.dim > MAT_MAX_COLUMNS:
            npy = NpyRows(npy_path, shape)
            with h5py.File(os.path.join(options.output_dir, f"{column_name}.h5"), "w") as file:
                dataset = file.create_dataset(column_name, shape=shape, dtype=np.float32)
                provenance = fill_rows(column, image_ids, [(npy, 0), (dataset, 0)])
            npy.close()
            files = [f"{column_name}.npy", f"{column_name}.h5"]
        else:
            matrix = np.zeros(shape, dtype=np.float32)
            provenance = fill_rows(column, image_ids, [(matrix, 0)])
            np.save(npy_path, matrix)
            narrow[column_name] = matrix
            files = [f"{column_name}.npy", MAT_FILE]
        described[column_name] = {"dim": column.dim, "files": files, "provenance": provenance}
        logger.info("%s: %s-d vectors from %s in %s", column_name, column.dim, path, ", ".join(files))
    return narrow, described


def label_counts(labels: np.ndarray) -> dict:
    """What the manifest says of the pool: its images, labeled images and label ones."""
    return {"images": len(labels), "labeled": int(labels.any(axis=1).sum()), "label_ones": int(labels.sum())}


def plan_arrays(options: ExportOptions):
    """Build the pool and draw the protocol (a protocol too large fails here); returns the counts and the writer."""
    arrays, provenance = current_pool_arrays(options)
    protocol = sample_protocol(arrays.clean_id, options.seed, options.num_query, options.train_sizes)

    def write(directory: str) -> dict:
        narrow_features, features = export_features(options, arrays.image_ids)
        write_arrays(directory, arrays, narrow_features)
        write_protocol(os.path.join(directory, PROTOCOL_DIR), protocol, arrays.image_ids)
        return {
            "files": [
                MAT_FILE,
                *(f"{name}.npy" for name in POOL_ARRAYS if name != "texts" or arrays.texts is not None),
                "id-map.txt",
                "class-name.txt",
                f"{PROTOCOL_DIR}/",
            ],
            "rows": len(arrays.image_ids),
            "image_ids": write_image_ids(directory, "arrays", arrays.image_ids),
            "protocol": {
                "seed": options.seed,
                **{name: len(indices) for name, indices in protocol_files(protocol).items()},
            },
            "doc2vec": provenance,
            "features": features,
        }

    return label_counts(arrays.labels), write


def plan_paper_formats(options: ExportOptions, names: list[str]) -> tuple[ExportPool, dict]:
    """The pool (its annotations read once, when a format first needs them), and a writer per format,
    each format's needs checked."""
    pool = ExportPool(
        data_dir=options.data_dir,
        base_url=options.base_url,
        features=FeatureChoice(options.image_feature, options.text_feature, options.sidecar, options.feature_sidecars),
        seed=options.seed,
        num_query=options.num_query,
        num_train=max(options.train_sizes, default=0),
    )
    return pool, {name: PLANS[name](pool) for name in names}


def export_pool(options: ExportOptions) -> dict:
    """Write every format of options.formats and the manifest into options.output_dir; returns the manifest.

    Every format's needs (sidecars, protocol sizes, image parts) are checked before anything is written.
    """
    for column, path in options.feature_sidecars.items():
        feature_column(column, os.fspath(path))  # a missing file or column fails now, before the pool is built
    formats = options.formats_written
    writers, counts = {}, {}
    papers = [name for name in formats if name != "arrays"]
    if papers:
        pool, planned = plan_paper_formats(options, papers)
        writers.update(planned)
        counts = label_counts(pool.labels())
    if "arrays" in formats:
        counts, writers["arrays"] = plan_arrays(options)
    os.makedirs(options.output_dir, exist_ok=True)
    written = {name: writers[name](options.output_dir) for name in formats}
    manifest = {"source": options.source, "formats": written}
    if "arrays" in written:
        # today's layout kept its keys at the top
        arrays = written["arrays"]
        manifest.update(protocol=arrays["protocol"], doc2vec=arrays["doc2vec"], features=arrays["features"])
    manifest.update(counts)
    with open(os.path.join(options.output_dir, MANIFEST_FILE), "w") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
    return manifest
