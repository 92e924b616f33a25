"""The loader as the tools build it: `CocoUnified` with the tools' paths made absolute first.

The builder resolves a relative local path (data_dir, doc2vec_path) against the folder of
coco_unified.py, where the loading script lives, not against the current directory; a path a user
typed on the command line means the latter.
"""

import os

from coco_unified import CocoUnified
from tools.lib.pool import DEFAULT_SIDECAR


def absolute(location: str | None) -> str | None:
    """A local path made absolute; a URL (or None) as it is."""
    return location if location is None or "://" in location else os.path.abspath(location)


def pool_builder(
    config_name: str,
    data_dir: str | None = None,
    base_url: str | None = None,
    doc2vec: bool = True,
    doc2vec_path: str = DEFAULT_SIDECAR,
    cache_dir: str | None = None,
    **config_kwargs,
) -> CocoUnified:
    """The builder of one config; without Doc2Vec no sidecar is read."""
    sidecar = {"doc2vec_path": absolute(doc2vec_path)} if doc2vec else {"doc2vec": False}
    return CocoUnified(
        config_name=config_name,
        data_dir=absolute(data_dir),
        base_url=base_url,
        cache_dir=cache_dir,
        **sidecar,
        **config_kwargs,
    )
