"""The image-feature sidecar: the generic feature sidecar of `coco_unified` (one format, defined there).

    image_id            int64, not null, each image once
    <feature>           fixed_size_list<float32 | float16>[dim], not null: cnnf_fc7, vgg19_fc7, clip_image, clip_text
    caption_<feature>   list<fixed_size_list<...>[dim]> (optional): one vector per caption, in the order of
                        the row's `captions` (clip with text: caption_clip_text)

The schema metadata holds, under `coco_unified.features`, the provenance as JSON: `features`
(column -> {"dim", "store"}), `images`, `skipped_images` (image_id, file_name, error of each image
left out because it could not be decoded), the model, weights and their sha256, the
preprocessing, the device, dtype and library versions. The loader joins its columns with
`feature_sidecars={column: path}`. This module adds what the command needs on top: the write
that never leaves a broken file where a reader looks, and the provenance of an image-feature
sidecar only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from coco_unified import (
    FEATURE_STORE_TYPES as STORE_TYPES,
)
from coco_unified import (
    FEATURES_COMMAND,
    FEATURES_METADATA_KEY,
    SidecarError,
    read_caption_features,
    read_feature_sidecar,
    read_sidecar_schema,
)
from coco_unified import (
    write_feature_sidecar as write_sidecar_file,
)

__all__ = [
    "FEATURES_METADATA_KEY",
    "STORE_TYPES",
    "read_caption_features",
    "read_feature_provenance",
    "read_feature_sidecar",
    "write_feature_sidecar",
]


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
    partial = path + ".partial"
    write_sidecar_file(partial, image_ids, features, provenance, store, caption_features)
    numpy_type = np.dtype(STORE_TYPES[store].to_pandas_dtype())
    for name, matrix in features.items():
        read_back, _ = read_feature_sidecar(partial, name)
        if not np.array_equal(read_back, np.asarray(matrix).astype(numpy_type).astype(np.float32)):
            raise SidecarError(f"{partial}: {name} read back differs from what was written; the disk is faulty.")
    os.replace(partial, path)


def read_feature_provenance(path: str) -> dict:
    """The sidecar's metadata (features, images, skipped images, model, ...), from its footer only."""
    remedy = f"rebuild it with `{FEATURES_COMMAND.format(path=path)}`"
    missing = SidecarError(f"{path} not found; make it with `{FEATURES_COMMAND.format(path=path)}`.")
    metadata = read_sidecar_schema(path, None, missing, remedy).metadata or {}
    if FEATURES_METADATA_KEY not in metadata:
        raise SidecarError(f"{path}: no {FEATURES_METADATA_KEY.decode()} metadata; not a feature sidecar. {remedy}.")
    return json.loads(metadata[FEATURES_METADATA_KEY])
