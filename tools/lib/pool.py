"""What the tools share about the pool: reading its annotations, where the Doc2Vec sidecar goes."""

import os
import urllib.parse

import coco_unified
from coco_unified import (
    ANNOTATIONS,
    DOC2VEC_SIDECAR,
    AnnotationError,
    ImageRecord,
    build_annotation_index,
    locate_sources,
    number_of,
    require_sources,
)

# Where the dataset script looks for the Doc2Vec sidecar when not told otherwise.
DEFAULT_SIDECAR = os.path.join(os.path.dirname(os.path.abspath(coco_unified.__file__)), DOC2VEC_SIDECAR)


def read_pool(data_dir: str | None = None, base_url: str | None = None) -> list[ImageRecord]:
    """Every image of the pool in index order; only the annotations are read.

    Every image needs a caption: the vector of an empty document would be random.
    """
    sources = locate_sources(data_dir, base_url)
    require_sources(sources, [ANNOTATIONS])
    records = build_annotation_index(sources[ANNOTATIONS])
    uncaptioned = [record.image_id for record in records if not record.captions]
    if uncaptioned:
        raise AnnotationError(
            f"{sources[ANNOTATIONS].found_at}: {number_of(len(uncaptioned), 'image')} "
            f"{'has' if len(uncaptioned) == 1 else 'have'} no caption (e.g. ids {uncaptioned[:5]}); "
            "COCO 2017 captions every image, so the captions files are incomplete. Use the official annotations."
        )
    return records


def without_credentials(source: str) -> str:
    """A URL without its user and password: provenance and manifests are published with the files."""
    parts = urllib.parse.urlsplit(source)
    if not parts.hostname:
        return source
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
