"""The loader as the tools build it: one config of `CocoUnified`, with or without its Doc2Vec sidecar."""

from coco_unified import CocoUnified
from tools.lib.pool import DEFAULT_SIDECAR


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
    sidecar = {"doc2vec_path": doc2vec_path} if doc2vec else {"doc2vec": False}
    return CocoUnified(
        config_name=config_name,
        data_dir=data_dir,
        base_url=base_url,
        cache_dir=cache_dir,
        **sidecar,
        **config_kwargs,
    )
