"""The feature sidecar: a Parquet file keyed by `image_id`, one fixed-size float column per feature.

    image_id            int64, not null, ascending, each image once
    <feature>           fixed_size_list<float32 | float16>[dim], not null: cnnf_fc7, vgg19_fc7, clip_image, clip_text
    caption_<feature>   list<fixed_size_list<...>[dim]> (optional): one vector per caption, in the order of
                        the row's `captions` (clip with text: caption_clip_text)

The schema metadata holds, under `coco_unified.features`, the provenance as JSON: `features`
(column -> {"dim", "store"}), `images`, `skipped_images` (image_id, file_name, error of each image
left out because it could not be decoded), the model, weights and their sha256, the
preprocessing, the device, dtype and library versions. Row groups of 1,024 rows let a reader
stream the file. It is validated when written and when read: each image once, every vector of its
column's dimension, finite values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coco_unified import CocoError

FEATURES_METADATA_KEY = b"coco_unified.features"
STORE_TYPES = {"float32": pa.float32(), "float16": pa.float16()}
ROW_GROUP_ROWS = 1024
_REBUILD = "rebuild it with `coco-unified image-features`."


def write_feature_sidecar(
    path: str,
    image_ids: Sequence[int],
    features: dict[str, np.ndarray],
    provenance: dict,
    store: str = "float32",
    caption_features: dict[str, list[np.ndarray]] | None = None,
) -> None:
    """Write the sidecar aside, read it back and check it, then move it to `path`.

    So an interrupted or failed write never leaves a broken sidecar where a reader looks.
    """
    image_ids = np.asarray(image_ids, dtype=np.int64)
    numpy_type = np.dtype(STORE_TYPES[store].to_pandas_dtype())
    columns, fields, described = [pa.array(image_ids)], [pa.field("image_id", pa.int64(), nullable=False)], {}
    for name, matrix in features.items():
        stored = _stored(matrix, numpy_type, name, path)
        _check_matrix(stored, len(image_ids), stored.shape[1] if stored.ndim == 2 else -1, name, path)
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(stored.reshape(-1)), stored.shape[1]))
        fields.append(pa.field(name, columns[-1].type, nullable=False))
        described[name] = {"dim": int(stored.shape[1]), "store": store}
    for name, per_image in (caption_features or {}).items():
        column = _caption_column([_stored(rows, numpy_type, name, path) for rows in per_image], name, path)
        if len(column) != len(image_ids):
            raise CocoError(f"{path}: {len(column)} images have {name}, expected {len(image_ids)}.")
        columns.append(column)
        fields.append(pa.field(name, column.type))
        described[name] = {"dim": column.type.value_type.list_size, "store": store}
    _check_ids(image_ids, path)
    metadata = {**provenance, "features": described, "images": len(image_ids)}
    schema = pa.schema(fields, metadata={FEATURES_METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    partial = path + ".partial"
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), partial, row_group_size=ROW_GROUP_ROWS)
    for name, matrix in features.items():
        read_back, _ = read_feature_sidecar(partial, name)
        if not np.array_equal(read_back, matrix.astype(numpy_type).astype(np.float32)):
            raise CocoError(f"{partial}: {name} read back differs from what was written; the disk is faulty.")
    os.replace(partial, path)


def _stored(matrix: np.ndarray, numpy_type: np.dtype, name: str, path: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # an overflow is reported right below, as an error
        stored = np.asarray(matrix).astype(numpy_type)
    if np.isfinite(matrix).all() and not np.isfinite(stored).all():
        raise CocoError(f"{path}: {name} holds values beyond {numpy_type}'s range; store them as float32.")
    return stored


def _caption_column(per_image: list[np.ndarray], name: str, path: str) -> pa.Array:
    dims = {rows.shape[1] for rows in per_image if rows.ndim == 2}
    if len(dims) != 1 or any(rows.ndim != 2 for rows in per_image):
        raise CocoError(f"{path}: {name} must be one matrix (captions x dim) per image, all of one dim.")
    (dim,) = dims
    for rows in per_image:
        _check_matrix(rows, len(rows), dim, name, path)
    offsets = np.concatenate([[0], np.cumsum([len(rows) for rows in per_image])]).astype(np.int32)
    flat = np.concatenate([rows.reshape(-1) for rows in per_image])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))


def _check_matrix(matrix: np.ndarray, rows: int, dim: int, name: str, path: str) -> None:
    if matrix.shape != (rows, dim):
        raise CocoError(f"{path}: {name} has shape {matrix.shape}, expected ({rows}, {dim}); {_REBUILD}")
    if not np.isfinite(matrix).all():
        raise CocoError(f"{path}: {name} holds NaN or infinite values; {_REBUILD}")


def _check_ids(image_ids: np.ndarray, path: str) -> None:
    if len(image_ids) and not (np.diff(image_ids) > 0).all():
        repeated = np.unique(image_ids[:-1][np.diff(image_ids) == 0])[:5].tolist()
        if repeated:
            raise CocoError(f"{path}: image ids {repeated} appear more than once; {_REBUILD}")
        raise CocoError(f"{path}: image ids are not in ascending order; {_REBUILD}")


def read_feature_provenance(path: str) -> dict:
    """The sidecar's metadata (features, images, skipped images, model, ...), from its footer only."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise CocoError(f"{path} not found; make it with `coco-unified image-features`.") from None
    except (pa.ArrowInvalid, OSError) as error:
        raise CocoError(f"{path}: not a readable Parquet file ({error}); {_REBUILD}") from None
    metadata = schema.metadata or {}
    if FEATURES_METADATA_KEY not in metadata:
        raise CocoError(f"{path}: no {FEATURES_METADATA_KEY.decode()} metadata; not a feature sidecar. {_REBUILD}")
    return json.loads(metadata[FEATURES_METADATA_KEY])


def read_feature_sidecar(
    path: str, feature: str, image_ids: Sequence[int] | None = None, dim: int | None = None
) -> tuple[np.ndarray, dict]:
    """One feature column as float32 rows, in the order of `image_ids` (default: the file's), and the provenance.

    Checks: the column exists with the dimension the metadata declares (and `dim`, if given),
    values are finite, each image is listed once, and every image of `image_ids` is there (an
    image the run skipped as undecodable is named as such).
    """
    provenance = read_feature_provenance(path)
    declared = provenance.get("features", {})
    if feature not in declared:
        raise CocoError(f"{path}: has no feature {feature!r} (it has {sorted(declared)}); {_REBUILD}")
    if dim is not None and declared[feature]["dim"] != dim:
        raise CocoError(f"{path}: {feature} is {declared[feature]['dim']}-d, expected {dim}; {_REBUILD}")
    dim = declared[feature]["dim"]
    table = pq.read_table(path, columns=["image_id", feature])
    kind = table.schema.field(feature).type
    if not pa.types.is_fixed_size_list(kind) or kind.value_type not in STORE_TYPES.values():
        raise CocoError(f"{path}: column {feature} is {kind}, not a fixed-size float list; {_REBUILD}")
    if kind.list_size != dim:
        raise CocoError(f"{path}: column {feature} has dimension {kind.list_size}, the metadata says {dim}; {_REBUILD}")
    file_ids = table.column("image_id").to_numpy()
    vectors = table.column(feature).combine_chunks().flatten().to_numpy().astype(np.float32).reshape(-1, dim)
    _check_matrix(vectors, len(file_ids), dim, feature, path)
    _check_ids(file_ids, path)
    if image_ids is None:
        return vectors, provenance
    row_of = {image_id: row for row, image_id in enumerate(file_ids.tolist())}
    missing = [image_id for image_id in image_ids if image_id not in row_of]
    if missing:
        skipped = {entry["image_id"] for entry in provenance.get("skipped_images", [])}
        undecodable = [image_id for image_id in missing if image_id in skipped]
        raise CocoError(
            f"{path}: no {feature} for {len(missing)} images of the pool (e.g. {missing[:5]})"
            + (f"; {len(undecodable)} of them could not be decoded when it was made" if undecodable else "")
            + f". It was made for other images; {_REBUILD}"
        )
    return vectors[[row_of[image_id] for image_id in image_ids]], provenance


def read_caption_features(path: str, feature: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The image ids and, per image, its captions' vectors (float32) of a caption column."""
    provenance = read_feature_provenance(path)
    if feature not in provenance.get("features", {}):
        raise CocoError(f"{path}: has no feature {feature!r}; {_REBUILD}")
    dim = provenance["features"][feature]["dim"]
    table = pq.read_table(path, columns=["image_id", feature])
    column = table.column(feature).combine_chunks()
    flat = column.flatten().flatten().to_numpy().astype(np.float32).reshape(-1, dim)
    offsets = column.offsets.to_numpy()
    per_image = [flat[start:end] for start, end in zip(offsets[:-1], offsets[1:])]
    for rows in per_image:
        _check_matrix(rows, len(rows), dim, feature, path)
    return table.column("image_id").to_numpy(), per_image
