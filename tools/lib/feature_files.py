"""Feature matrices and labels read from the files users have: sidecars, .npy and .mat files.

A source is `PATH` or `PATH:NAME`: NAME picks the column of a feature sidecar written by
`coco-unified image-features` (cnnf_fc7, vgg19_fc7, clip_image, clip_text) or the variable of a
.mat file; it may be left out when the file holds a single one. The Doc2Vec and BoW sidecars have
one column each. Rows of sidecars are matched by image id; rows of .npy and .mat matrices are
taken as they are: one row per pool index (as `coco-unified export` writes them), or per row of
the labels file when there is no pool.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq
import scipy.io

from coco_unified import DOC2VEC_METADATA_KEY, CocoError, read_doc2vec_sidecar
from tools.lib.bow import BOW_METADATA_KEY, read_bow_sidecar

MATRIX_SUFFIXES = (".npy", ".mat")


def split_source(source: str) -> tuple[str, str | None]:
    """`PATH:NAME` -> (PATH, NAME); a PATH that exists as it is keeps any colon it has."""
    if os.path.exists(source) or ":" not in source:
        return source, None
    path, _, name = source.rpartition(":")
    return path, name or None


def read_matrix(source: str, image_ids: Sequence[int] | None = None) -> tuple[np.ndarray, str, dict]:
    """(the matrix, a short name for reports, provenance) of a source.

    `image_ids`: the pool's ids in pool order, to match a sidecar's rows; None when there is no
    pool (then only .npy and .mat files can be read).
    """
    path, name = split_source(source)
    if not os.path.isfile(path):
        raise CocoError(f"{path}: file not found; pass a feature file (.parquet sidecar, .npy or .mat).")
    if path.endswith(MATRIX_SUFFIXES):
        matrix, name = _read_array_file(path, name)
        return matrix, name, {"file": os.path.abspath(path)}
    if image_ids is None:
        raise CocoError(f"{path}: a sidecar's rows are matched by image id; pass --data-dir (or --base-url) as well.")
    return _read_sidecar(path, name, image_ids)


def _read_sidecar(path: str, name: str | None, image_ids: Sequence[int]) -> tuple[np.ndarray, str, dict]:
    metadata = pq.read_schema(path).metadata or {}
    if DOC2VEC_METADATA_KEY in metadata:
        vectors, provenance = read_doc2vec_sidecar(path, image_ids)
        return vectors, "doc2vec", provenance
    if BOW_METADATA_KEY in metadata:
        vectors, metadata = read_bow_sidecar(path, image_ids)
        return vectors, "bow", metadata
    # Imported here: the image-features package imports torch, which only that command needs.
    from tools.lib.image_features.sidecar import FEATURES_METADATA_KEY, read_feature_provenance, read_feature_sidecar

    if FEATURES_METADATA_KEY in metadata:
        if name is None:
            declared = sorted(read_feature_provenance(path).get("features", {}))
            if len(declared) != 1:
                raise CocoError(f"{path}: holds the features {declared}; name one as {path}:FEATURE.")
            name = declared[0]
        vectors, provenance = read_feature_sidecar(path, name, image_ids)
        return vectors, name, provenance
    raise CocoError(
        f"{path}: not a sidecar of this project (no Doc2Vec, BoW or feature metadata); pass a sidecar written by "
        "`coco-unified doc2vec`, `bow` or `image-features`, or a .npy or .mat matrix."
    )


def _read_array_file(path: str, name: str | None) -> tuple[np.ndarray, str]:
    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False), name or os.path.splitext(os.path.basename(path))[0]
        except ValueError as error:
            raise CocoError(f"{path}: not a numeric .npy array ({error}).") from None
    try:
        variables = {key: value for key, value in scipy.io.loadmat(path).items() if not key.startswith("__")}
    except (ValueError, NotImplementedError) as error:
        raise CocoError(f"{path}: not a readable .mat file ({error}); save it with scipy.io.savemat.") from None
    if name is None:
        if len(variables) != 1:
            raise CocoError(f"{path}: holds the variables {sorted(variables)}; name one as {path}:VARIABLE.")
        name = next(iter(variables))
    if name not in variables:
        raise CocoError(f"{path}: has no variable {name!r}; it holds {sorted(variables)}.")
    return variables[name], name


def check_rows(matrix: np.ndarray, rows: int, source: str, rows_are: str) -> np.ndarray:
    """A 2-d finite numeric matrix of `rows` rows, or a CocoError naming the source."""
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise CocoError(f"{source}: has shape {matrix.shape}; expected one row per {rows_are} ({rows} rows).")
    if not np.issubdtype(matrix.dtype, np.number) and matrix.dtype != bool:
        raise CocoError(f"{source}: holds {matrix.dtype} values, not numbers.")
    if np.issubdtype(matrix.dtype, np.floating) and not np.isfinite(matrix).all():
        raise CocoError(f"{source}: holds NaN or infinite values.")
    return matrix
