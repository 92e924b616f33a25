"""MS COCO 2017 train+val as one pool of 123,287 images for cross-modal retrieval and hashing.

Each row is one image with its captions, its 80-class labels and a 300-d Doc2Vec vector of its
captions, numbered like the reference `.mat` files of the hashing literature: the pool is every
image of train2017 and val2017 sorted by image id, and `index` is the position in that order.

What is read (abridged, one record each):

    annotations_trainval2017.zip, annotations/captions_train2017.json
        {"images": [{"id": 397133, "file_name": "000000397133.jpg", "width": 640,
                     "height": 427, "license": 4, "coco_url": "...", ...}],
         "annotations": [{"image_id": 397133, "id": 370509, "caption": "A man is ..."}]}
    annotations_trainval2017.zip, annotations/instances_train2017.json
        {"images": [... as above ...],
         "annotations": [{"image_id": 397133, "id": 1768, "category_id": 18, "iscrowd": 0,
                          "bbox": [...], "area": 702.1, "segmentation": [[...polygon...]]}],
         "categories": [{"id": 18, "name": "dog", "supercategory": "animal"}]}
    train2017.zip, val2017.zip
        entries `train2017/000000397133.jpg`, ... (Zip64, some with data descriptors)
    the Doc2Vec sidecar, a Parquet file (written by `coco-unified doc2vec`)
        {"image_id": 397133, "doc2vec": [0.0213, -0.1187, ... 300 float32]}
        schema metadata "coco_unified.doc2vec": {"model": "...", "tokenizer": "...", ...}

What one row is (the `default` config; the image above, `...` where the example elides):

    {"index": ..., "image_id": 397133, "file_name": "000000397133.jpg",
     "coco_split": 0, "image": {"path": "000000397133.jpg", "bytes": b"..."},
     "width": 640, "height": 427, "captions": ["A man is ...", ...],
     "caption_ids": [370509, ...], "labels": [..., 16, ...],
     "multi_hot": [..., 1, ... 80 uint8], "doc2vec": [0.0213, -0.1187, ... 300 float32]}

`index` is the row's position in the pool, `coco_split` 0 is train2017, and the dog (category
id 18) is class 16 of CATEGORIES.

The file reads top-down: the facts about COCO 2017, the protocols of the literature, the config,
the builder, then the helpers by concept (errors, sources, archive reading, annotation index, image
listing, sidecars, shard planning). Everything that reads COCO lives here once and the tools in `tools/`
import it, because a loading script only carries single-file modules with it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import difflib
import functools
import gc
import hashlib
import inspect
import io
import itertools
import json
import numbers
import os
import re
import signal
import socket
import struct
import sys
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Annotated, TypeVar

import aiohttp
import datasets
import deflate
import fsspec
import msgspec
import multiprocess.util
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub.errors import OfflineModeIsEnabled
from isal import isal_zlib

# A fixed name under the `datasets` logger, so `datasets.logging.set_verbosity` governs it and no
# module-cache hash (datasets 3.6 imports the script as datasets_modules....<hash>.coco_unified) shows.
logger = datasets.logging.get_logger("datasets.coco_unified")

# ============================================================================= facts

_DESCRIPTION = """\
MS COCO 2017 (train2017 + val2017) as one pool of 123,287 images for cross-modal retrieval and
hashing: each image with its ~5 captions, a multi-hot vector over the 80 object categories and a
300-d Doc2Vec vector of its captions, ordered by image id as in the reference preprocessing.
"""
_HOMEPAGE = "https://cocodataset.org"
_LICENSE = "Annotations: CC BY 4.0. Images: Flickr terms of use of each image."
_CITATION = """\
@inproceedings{lin2014microsoft,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and Perona, Pietro
          and Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle={ECCV},
  year={2014}
}
"""

VERSION = datasets.Version("1.0.0")
OFFICIAL_BASE_URL = "http://images.cocodataset.org"
COCO_SPLITS = ("train2017", "val2017")
ANNOTATIONS = "annotations"


@dataclasses.dataclass(frozen=True)
class Archive:
    """One official COCO 2017 download."""

    url_path: str  # below the base URL of the official host or a mirror
    num_bytes: int
    sha256: str

    @property
    def file_name(self) -> str:
        return self.url_path.rsplit("/", 1)[-1]


ARCHIVES = {
    "train2017": Archive(
        "zips/train2017.zip", 19_336_861_798, "69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929"
    ),
    "val2017": Archive(
        "zips/val2017.zip", 815_585_330, "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05"
    ),
    ANNOTATIONS: Archive(
        "annotations/annotations_trainval2017.zip",
        252_907_541,
        "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
    ),
}


@dataclasses.dataclass(frozen=True)
class PoolCounts:
    images: int
    captions: int
    labeled: int

    @classmethod
    def of(cls, records: Sequence[ImageRecord]) -> PoolCounts:
        return cls(
            images=len(records),
            captions=sum(len(record.captions) for record in records),
            labeled=sum(1 for record in records if record.labels),
        )

    def __str__(self) -> str:
        return f"{self.images:,} images, {self.captions:,} captions, {self.labeled:,} labeled"


# What the real train2017 + val2017 hold; asserted whenever the source is the real COCO 2017.
REAL_COUNTS = PoolCounts(images=123_287, captions=616_767, labeled=122_218)

# The 80 COCO object categories as (category id, name, supercategory), ascending by id. The
# reference preprocessing numbers classes 0..79 in this order; ids 12, 26, 29, 30, 45, 66, 68,
# 69, 71 and 83 are unused by COCO.
CATEGORIES = (
    (1, "person", "person"),
    (2, "bicycle", "vehicle"),
    (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"),
    (6, "bus", "vehicle"),
    (7, "train", "vehicle"),
    (8, "truck", "vehicle"),
    (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"),
    (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"),
    (15, "bench", "outdoor"),
    (16, "bird", "animal"),
    (17, "cat", "animal"),
    (18, "dog", "animal"),
    (19, "horse", "animal"),
    (20, "sheep", "animal"),
    (21, "cow", "animal"),
    (22, "elephant", "animal"),
    (23, "bear", "animal"),
    (24, "zebra", "animal"),
    (25, "giraffe", "animal"),
    (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"),
    (32, "tie", "accessory"),
    (33, "suitcase", "accessory"),
    (34, "frisbee", "sports"),
    (35, "skis", "sports"),
    (36, "snowboard", "sports"),
    (37, "sports ball", "sports"),
    (38, "kite", "sports"),
    (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"),
    (41, "skateboard", "sports"),
    (42, "surfboard", "sports"),
    (43, "tennis racket", "sports"),
    (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"),
    (47, "cup", "kitchen"),
    (48, "fork", "kitchen"),
    (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"),
    (51, "bowl", "kitchen"),
    (52, "banana", "food"),
    (53, "apple", "food"),
    (54, "sandwich", "food"),
    (55, "orange", "food"),
    (56, "broccoli", "food"),
    (57, "carrot", "food"),
    (58, "hot dog", "food"),
    (59, "pizza", "food"),
    (60, "donut", "food"),
    (61, "cake", "food"),
    (62, "chair", "furniture"),
    (63, "couch", "furniture"),
    (64, "potted plant", "furniture"),
    (65, "bed", "furniture"),
    (67, "dining table", "furniture"),
    (70, "toilet", "furniture"),
    (72, "tv", "electronic"),
    (73, "laptop", "electronic"),
    (74, "mouse", "electronic"),
    (75, "remote", "electronic"),
    (76, "keyboard", "electronic"),
    (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"),
    (79, "oven", "appliance"),
    (80, "toaster", "appliance"),
    (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"),
    (84, "book", "indoor"),
    (85, "clock", "indoor"),
    (86, "vase", "indoor"),
    (87, "scissors", "indoor"),
    (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
)
CLASS_NAMES = [name for _, name, _ in CATEGORIES]

DOC2VEC_DIM = 300
DOC2VEC_SIDECAR = "coco_unified_doc2vec.parquet"
DOC2VEC_METADATA_KEY = b"coco_unified.doc2vec"
DOC2VEC_COMMAND = "coco-unified doc2vec --data-dir DIR --output {path}"
# Image features (CNN-F, VGG-19, CLIP) and the like, joined by `feature_sidecars`.
FEATURES_METADATA_KEY = b"coco_unified.features"
FEATURES_COMMAND = "coco-unified image-features --model MODEL --data-dir DIR --output {path}"
# Every sidecar's provenance sits under one metadata key of this prefix: coco_unified.doc2vec, ...
SIDECAR_METADATA_PREFIX = b"coco_unified."
FEATURE_STORE_TYPES = {"float32": pa.float32(), "float16": pa.float16()}
# Row groups this small let a reader stream a sidecar.
SIDECAR_ROW_GROUP_ROWS = 1024

# The research protocol of the hashing literature: 5,000 queries; training sets of these sizes.
DEFAULT_NUM_QUERY = 5_000
DEFAULT_TRAIN_SIZES = (5_000, 10_000)
DEFAULT_NUM_TRAIN = max(DEFAULT_TRAIN_SIZES)

# Shards of each split: when streaming images each is one ranged GET of whole entries of one zip.
# Their number bounds how many DataLoader workers and nodes can share the pool, and
# split_dataset_by_node divides the shards only when the number of nodes divides it (otherwise
# every node reads the whole pool and keeps every n-th row: measured, 1.88x the zips' bytes
# fetched by 2 nodes when streams had 17 shards).
DEFAULT_NUM_SHARDS = 16
# A gap this small between two wanted entries of a remote zip is read and thrown away rather
# than paid for with a new request.
MAX_SKIPPED_BYTES = 4 << 20
READ_CHUNK = 1 << 20
# Bytes asked of fsspec per call into its event loop (fewer when the run ends sooner). Real-size
# JPEG entries read and inflated: 0.65-0.69 ms of CPU each with 256 KB, 0.54-0.61 ms with 1 MB
# (measured here, loopback).
READ_AHEAD = 1 << 20
# A zip entry's output buffer is preallocated for at most this many bytes per compressed byte (COCO's
# JSON inflates 2.6-4.3x) and grows beyond as data arrives: a lying central directory costs nothing.
PREALLOCATED_PER_COMPRESSED_BYTE = 16
# Entries whose declared and compressed sizes are both at most this (every COCO image) are inflated
# in one call of libdeflate, with the whole entry and its declared size at hand: real-size JPEG
# entries read and inflated with 0.45-0.50 ms of CPU each instead of 0.56-0.63 with ISA-L's
# stream, and with the GIL released throughout; `default` preparation of the real-size copy
# 212-223 MB/s instead of 149-183 (measured here, alternately). Larger entries (the annotation
# JSONs) stream through ISA-L, their memory following the data.
ONE_SHOT_INFLATE_MAX = 16 << 20
# Every remote read (a HEAD, a ranged GET, a download) is tried this many times while it fails in
# a way that may pass (a busy server, a dropped connection, a stall), waiting 1, 2, 4, ... times
# RETRY_BASE_DELAY seconds in between (15.5 s in all). Bytes arriving since the last failure give a
# read a fresh budget: a read that dies 10 GB into train2017.zip is worth resuming patiently.
ATTEMPTS = 6
# A background thread reads and inflates images ahead of the rows being yielded, in batches of
# about this many bytes (one batch of tiny images is many entries, so that handing batches over
# costs little a row): read_images_ahead.
READ_AHEAD_BATCH_BYTES = 1 << 20
# Batches it reads ahead of a stream, whose rows are taken one at a time (deeper gave nothing
# beyond the noise of benchmarks/bench_realsize.py) ...
STREAM_READ_AHEAD_BATCHES = 2
# ... and when preparing: datasets converts and writes rows in batches of 100 when the features
# hold an image (config.PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS), 16 MB of real-size images.
# Two batches ahead, the reader stopped while a batch was written, then the writer waited for it.
# With 32, the real-size copy prepared faster in 8 of 9 alternate rounds (median 4.04 s, 4.62 s
# with 2; measured here).
PREPARE_READ_AHEAD_BATCHES = 32
RETRY_BASE_DELAY = 0.5
# Seconds a remote read may wait for its next bytes before the stall counts as a failure. aiohttp's
# own default is a 300 s limit on each whole request, which a multi-GB download outlasts.
DEFAULT_READ_TIMEOUT = 60.0
# Query parameters whose values are secrets (access tokens, signatures of presigned URLs, keys):
# URLs are stored, logged and shown with these values replaced.
SECRET_QUERY_PARAMETER = re.compile(r"token|sig|key|secret|pass|pwd|auth|credential", re.IGNORECASE)
# HTTP statuses of a busy or restarting server: a later try may succeed.
TRANSIENT_STATUSES = (408, 429, 500, 502, 503, 504)

# datasets 3.x (the last to run loading scripts) streams a generator's examples through a one-row
# Arrow table each: pyarrow infers the row's types (a fixed-size list only from an Arrow scalar,
# which it converts element by element) and datasets casts the table to the features unless they
# match; 0.33-0.48 ms a real-size row besides its decoding, whatever the examples' form (measured).
# Under 3.x a stream is therefore made of tables the builder builds with the features' schema, as
# datasets' own file builders stream theirs (CocoUnified._generate_tables): 0.09 ms a row all told.
# datasets >= 4 encodes each example dict, no table (0.04 ms a row of no_images): it gets examples.
STREAMS_TABLES = int(datasets.__version__.split(".")[0]) < 4
# Rows of each streamed table. datasets 3.6 cuts a table into one-row tables again; its cost a row,
# with the table built (real-size / no_images rows): 1 row 145 / 101 us, 4: 94 / 60, 16: 85 / 47,
# 128: 94 / 45 (measured). 16 real-size rows are ~2.6 MB.
STREAMED_TABLE_ROWS = 16

# ============================================================================= protocols
#
# A protocol says which pool images a paper queries with, trains on and retrieves from. PROTOCOLS
# names those of the literature (docs/FACTS.md §6, §7); each computes, from the pool's records in
# index order, split name -> pool indices, and, where its paper's code reads one file in a fixed
# row order, that order. The loader's protocol configs, `coco-unified protocol --protocol NAME` and
# the export formats all read this one table.


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The seeded query / database / training split of the labeled pool used by hashing papers."""

    seed: int
    query: np.ndarray  # pool indices, ascending
    database: np.ndarray
    train: dict[int, np.ndarray]  # training size -> pool indices, ascending


def sample_protocol(
    labeled: Sequence[int],
    seed: int,
    num_query: int = DEFAULT_NUM_QUERY,
    train_sizes: Sequence[int] = DEFAULT_TRAIN_SIZES,
) -> Protocol:
    """Split the ascending pool indices of labeled images into query and database, then draw training sets.

    Exactly: rng = numpy.random.default_rng(seed); shuffled = rng.permutation(labeled);
    query = sort(shuffled[:num_query]); database = sort(shuffled[num_query:]);
    order = rng.permutation(database); train_k = sort(order[:k]). So each training set lies in the
    database and every smaller one inside every larger one, whatever sizes are asked together.
    """
    labeled = np.asarray(labeled, dtype=np.int64)
    if len(np.unique(labeled)) != len(labeled) or not np.array_equal(labeled, np.sort(labeled)):
        raise ConfigError("The labeled pool indices must be ascending and distinct; pass the clean_id list.")
    check_protocol_fits(len(labeled), num_query, max(train_sizes, default=0))
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(labeled)
    database = np.sort(shuffled[num_query:])
    order = rng.permutation(database)
    return Protocol(
        seed, np.sort(shuffled[:num_query]), database, {size: np.sort(order[:size]) for size in train_sizes}
    )


def check_protocol_fits(num_labeled: int, num_query: int, num_train: int | None, whose: str = "") -> None:
    """Queries and the largest training set (drawn from the database) must fit the labeled pool.

    num_train None: the protocol trains on its whole database, which must only not be empty.
    """
    if num_query < num_labeled and (num_train or 0) <= num_labeled - num_query:
        return
    fix = "use a larger copy of COCO"
    if num_labeled >= 2:
        query = num_query if num_query <= num_labeled // 4 else _round_down(num_labeled // 4)
        fix = f"pass num_query={query}"
        if num_train is not None:
            train = num_train if num_train <= num_labeled - query else _round_down(num_labeled - query)
            fix += f", num_train={train}"
        fix += " (or smaller)"
    database = "a database" if num_train is None else f"a database of at least {num_train} training images"
    raise ConfigError(
        f"{whose + ': its ' if whose else ''}{num_labeled:,} labeled images cannot hold {num_query} queries and "
        f"{database}: {fix}."
    )


def _round_down(number: int) -> int:
    """The largest of 1, 2, 5, 10, 20, 50, ... not above `number` (at least 1): a size easy to read."""
    best = 1
    for magnitude in (10**exponent for exponent in range(len(str(max(number, 1))))):
        best = max([best] + [step * magnitude for step in (1, 2, 5) if step * magnitude <= number])
    return best


def labeled_indices(records: Sequence[ImageRecord]) -> np.ndarray:
    """The ascending pool indices of the images with at least one label (the `clean_id` list)."""
    return np.asarray([record.index for record in records if record.labels], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class IdList:
    """Image ids in a file's order, and the file they were read from (named in errors)."""

    path: str
    image_ids: np.ndarray


def read_id_list(location: str, storage_options: dict | None = None) -> IdList:
    """One COCO image id a line, each once."""
    with open_location(location, storage_options) as file:
        text = file.read().decode("ascii", errors="replace")
    try:
        image_ids = np.asarray([int(line) for line in text.split()], dtype=np.int64)
    except ValueError as error:
        raise CocoError(
            f"{location}: {error}; the file must hold one image id a line. Restore it from the project."
        ) from None
    if len(np.unique(image_ids)) != len(image_ids):
        raise CocoError(f"{location} lists an image id twice; restore the file from the project.")
    return IdList(location, image_ids)


def shipped_id_lists(paths: dict[str, str]) -> dict[str, IdList]:
    """The id lists the project ships, read from beside this script (where the tools find them)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return {split: read_id_list(os.path.join(here, path)) for split, path in paths.items()}


# DSPH's `split_data` seeds numpy's global generator with this by default (its --seed).
DSPH_SEED = 1814
# Karpathy & Fei-Fei 2015 (docs/FACTS.md §7): 5,000 validation and 5,000 test images by id; train
# is every other pool image (82,783 train2014 + 30,504 "restval"). The "1K test" figures average
# five folds of 1,000 test images.
KARPATHY_ID_LISTS = {
    str(datasets.Split.VALIDATION): "data/karpathy_val_image_ids.txt",
    str(datasets.Split.TEST): "data/karpathy_test_image_ids.txt",
}
KARPATHY_LIST_SIZE = 5_000
KARPATHY_FOLD_SIZE = 1_000

# (records, seed, num_query, num_train, id lists) -> split name -> pool indices
_SplitsFunction = Callable[[Sequence["ImageRecord"], int, int, int, dict[str, IdList]], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class NamedProtocol:
    """A protocol of the literature: how its splits are drawn from the pool, and its file's row order.

    `splits(records, seed, num_query, num_train)` gives split name -> pool indices in the
    protocol's own order (ascending where it has none); `rows(records, seed)` the row order of the
    file its paper's code reads, or None. A seed of None is the protocol's own default seed.
    """

    name: str
    summary: str  # who uses it and how it splits, one line (README, --help)
    split_names: tuple[str, ...]
    default_seed: int | None  # None: nothing is drawn, the seed is not used
    uses_num_query: bool
    uses_num_train: bool
    draw: _SplitsFunction
    sizes_on_coco: Callable[[int, int], dict[str, int]]  # (num_query, num_train) -> rows per split on COCO 2017
    row_order: Callable[[Sequence[ImageRecord], int], np.ndarray] | None = None  # (records, seed) -> file rows
    id_lists: dict[str, str] = dataclasses.field(default_factory=dict)  # split -> file shipped beside the script

    def splits(
        self,
        records: Sequence[ImageRecord],
        seed: int | None = None,
        num_query: int = DEFAULT_NUM_QUERY,
        num_train: int = DEFAULT_NUM_TRAIN,
        id_lists: dict[str, IdList] | None = None,
    ) -> dict[str, np.ndarray]:
        """Split name -> pool indices; `id_lists` defaults to the files shipped beside this script."""
        if id_lists is None:
            id_lists = shipped_id_lists(self.id_lists)
        num_labeled = sum(1 for record in records if record.labels)
        self.check_fits(num_labeled, num_query, num_train, f"The {self.name} protocol on this copy of COCO")
        return self.draw(records, self.seed_or_default(seed), num_query, num_train, id_lists)

    def rows(self, records: Sequence[ImageRecord], seed: int | None = None) -> np.ndarray | None:
        """The pool indices in the row order of the file its paper's code reads; None if it reads none."""
        return None if self.row_order is None else self.row_order(records, self.seed_or_default(seed))

    def seed_or_default(self, seed: int | None) -> int | None:
        return self.default_seed if seed is None else seed

    def real_sizes(self, num_query: int = DEFAULT_NUM_QUERY, num_train: int = DEFAULT_NUM_TRAIN) -> dict[str, int]:
        """The rows of each split when drawn from the real COCO 2017."""
        return self.sizes_on_coco(num_query, num_train)

    def check_fits(self, num_labeled: int, num_query: int, num_train: int, whose: str = "") -> None:
        """Fail, naming sizes that fit, when the labeled pool cannot hold the protocol's sizes."""
        if self.uses_num_query:
            check_protocol_fits(num_labeled, num_query, num_train if self.uses_num_train else None, whose)


def _hashing_splits(records, seed, num_query, num_train, id_lists) -> dict[str, np.ndarray]:
    drawn = sample_protocol(labeled_indices(records), seed, num_query, [num_train])
    return {"query": drawn.query, "database": drawn.database, "train": drawn.train[num_train]}


def dsph_rows(records: Sequence[ImageRecord]) -> np.ndarray:
    """DSPH's row order (its make_coco.py): labeled train2017 images by id, then labeled val2017 images by id."""
    return np.asarray(
        [record.index for split in COCO_SPLITS for record in records if record.labels and record.coco_split == split],
        dtype=np.int64,
    )


def _dsph_splits(records, seed, num_query, num_train, id_lists) -> dict[str, np.ndarray]:
    # DSPH's split_data: np.random.seed(seed); p = np.random.permutation(n); RandomState(seed) is
    # that same legacy generator, without touching numpy's global state.
    rows = dsph_rows(records)
    order = rows[np.random.RandomState(seed).permutation(len(rows))]
    return {
        "query": order[:num_query],
        "train": order[num_query : num_query + num_train],
        "retrieval": order[num_query:],
    }


def seeded_labeled_order(records: Sequence[ImageRecord], seed: int) -> np.ndarray:
    """The labeled pool shuffled by numpy.random.default_rng(seed): the row order of the UCCH and DCHN files."""
    return np.random.default_rng(seed).permutation(labeled_indices(records))


def _ucch_splits(records, seed, num_query, num_train, id_lists) -> dict[str, np.ndarray]:
    # UCCH's MSCOCO_fea takes the file's last num_query rows as queries, all others to train and retrieve.
    order = seeded_labeled_order(records, seed)
    rest = order[:-num_query]
    return {"query": order[-num_query:], "train": rest, "retrieval": rest}


def _dchn_splits(records, seed, num_query, num_train, id_lists) -> dict[str, np.ndarray]:
    # DCHN's MSCOCO_doc2vec: the first num_query rows query, the next num_train train, all after the queries retrieve.
    order = seeded_labeled_order(records, seed)
    return {
        "query": order[:num_query],
        "train": order[num_query : num_query + num_train],
        "retrieval": order[num_query:],
    }


def _karpathy_splits(records, seed, num_query, num_train, id_lists) -> dict[str, np.ndarray]:
    """train: every pool image in neither list, ascending; validation and test: in their files' order."""
    for id_list in id_lists.values():
        if len(id_list.image_ids) != KARPATHY_LIST_SIZE:
            raise CocoError(
                f"{id_list.path} lists {number_of(len(id_list.image_ids), 'image id')}, not Karpathy's "
                f"{KARPATHY_LIST_SIZE:,}; restore the file from the project."
            )
    held_out = {split: _indices_of_listed(records, id_lists[split]) for split in KARPATHY_ID_LISTS}
    taken = np.concatenate(list(held_out.values()))
    if len(np.unique(taken)) != len(taken):
        raise CocoError(
            f"{' and '.join(id_list.path for id_list in id_lists.values())} share an image id; "
            "restore the files from the project."
        )
    train = np.setdiff1d(np.asarray([record.index for record in records], dtype=np.int64), taken)
    return {str(datasets.Split.TRAIN): train, **held_out}


def _indices_of_listed(records: Sequence[ImageRecord], id_list: IdList) -> np.ndarray:
    """The pool indices of a list's image ids, in the list's order; ids missing from this copy are logged.

    A copy of COCO smaller than the real one (a sample) holds only some of the ids; the real
    COCO 2017 holds them all, which the builder checks through the split sizes.
    """
    present = _present_indices(records, id_list.image_ids)
    if not len(present):
        raise ConfigError(
            f"{id_list.path}: none of its {number_of(len(id_list.image_ids), 'image id')} is in this copy of COCO "
            f"({number_of(len(records), 'image')}); the Karpathy split needs COCO 2017, or a sample made by "
            "`coco-unified sample`, which holds some of them."
        )
    if len(present) < len(id_list.image_ids):
        logger.warning(
            f"{id_list.path}: {len(present):,} of its {len(id_list.image_ids):,} image ids are in this copy of COCO; "
            "the split holds those."
        )
    return present


def _present_indices(records: Sequence[ImageRecord], image_ids: np.ndarray) -> np.ndarray:
    index_of = {record.image_id: record.index for record in records}
    return np.asarray([index_of[i] for i in image_ids.tolist() if i in index_of], dtype=np.int64)


def karpathy_test_folds(records: Sequence[ImageRecord], test_ids: IdList | None = None) -> list[np.ndarray]:
    """The five "1K test" folds as pool indices: fold k is rows k*1000 .. k*1000+999 of the shipped test list.

    Papers do not publish their fold order; this one, the file's, is stated in the README. On a
    copy that lacks some of the ids, each fold holds those of its rows that are present.
    """
    test = str(datasets.Split.TEST)
    test_ids = test_ids or shipped_id_lists({test: KARPATHY_ID_LISTS[test]})[test]
    return [
        _present_indices(records, test_ids.image_ids[start : start + KARPATHY_FOLD_SIZE])
        for start in range(0, len(test_ids.image_ids), KARPATHY_FOLD_SIZE)
    ]


PROTOCOLS: dict[str, NamedProtocol] = {
    protocol.name: protocol
    for protocol in (
        NamedProtocol(
            "hashing",
            "the seeded draw of the hashing literature: query, the rest the database, train drawn from it",
            ("query", "database", "train"),
            default_seed=0,
            uses_num_query=True,
            uses_num_train=True,
            draw=_hashing_splits,
            sizes_on_coco=lambda q, t: {"query": q, "database": REAL_COUNTS.labeled - q, "train": t},
        ),
        NamedProtocol(
            "dsph",
            "DSPH's split_data (seed 1814) over its rows: labeled train2017 then labeled val2017, each by id",
            ("query", "train", "retrieval"),
            default_seed=DSPH_SEED,
            uses_num_query=True,
            uses_num_train=True,
            draw=_dsph_splits,
            row_order=lambda records, seed: dsph_rows(records),
            sizes_on_coco=lambda q, t: {"query": q, "train": t, "retrieval": REAL_COUNTS.labeled - q},
        ),
        NamedProtocol(
            "ucch",
            "UCCH's file: the labeled pool seeded-shuffled; the last 5,000 rows query, the rest train and retrieve",
            ("query", "train", "retrieval"),
            default_seed=0,
            uses_num_query=True,
            uses_num_train=False,
            draw=_ucch_splits,
            row_order=seeded_labeled_order,
            sizes_on_coco=lambda q, t: {
                "query": q,
                "train": REAL_COUNTS.labeled - q,
                "retrieval": REAL_COUNTS.labeled - q,
            },
        ),
        NamedProtocol(
            "dchn",
            "DCHN's and SDML's file: the labeled pool seeded-shuffled; the first 5,000 rows query, the next "
            "10,000 train, all after the queries retrieve",
            ("query", "train", "retrieval"),
            default_seed=0,
            uses_num_query=True,
            uses_num_train=True,
            draw=_dchn_splits,
            row_order=seeded_labeled_order,
            sizes_on_coco=lambda q, t: {"query": q, "train": t, "retrieval": REAL_COUNTS.labeled - q},
        ),
        NamedProtocol(
            "karpathy",
            "Karpathy's image-text retrieval split: 5,000 validation and 5,000 test images by id, the rest train",
            (str(datasets.Split.TRAIN), str(datasets.Split.VALIDATION), str(datasets.Split.TEST)),
            default_seed=None,
            uses_num_query=False,
            uses_num_train=False,
            draw=_karpathy_splits,
            sizes_on_coco=lambda q, t: {
                str(datasets.Split.TRAIN): REAL_COUNTS.images - 2 * KARPATHY_LIST_SIZE,
                str(datasets.Split.VALIDATION): KARPATHY_LIST_SIZE,
                str(datasets.Split.TEST): KARPATHY_LIST_SIZE,
            },
            id_lists=KARPATHY_ID_LISTS,
        ),
    )
}


# ============================================================================= config


@dataclasses.dataclass
class CocoUnifiedConfig(datasets.BuilderConfig):
    """Which columns and rows to build, and where COCO is read from.

    Attributes:
        with_images: include the `image` column; without it no image archive is read at all.
        labeled_only: keep only the images with at least one instance annotation.
        doc2vec: include the `doc2vec` column, read from the sidecar at `doc2vec_path`.
        doc2vec_path: the Parquet sidecar written by `coco-unified doc2vec`; by default
            `coco_unified_doc2vec.parquet` next to this script (or in its Hub repo).
        feature_sidecars: more vector columns joined by image_id, as {column: sidecar path}, e.g.
            {"vgg19_fc7": "vgg19.parquet", "clip_text": "clip.parquet"}: each becomes a float32
            column of the sidecar's dimension (sidecars written by `coco-unified image-features`).
        base_url: a mirror with the official layout (`{base_url}/zips/train2017.zip`, ...). A user
            and password in it (`https://USER:PASSWORD@host`) are sent to that host only, as a
            header: they are kept out of the cache, the logs and the messages.
        read_timeout: seconds a remote read may wait for its next bytes before it is retried; it
            does not change what is built, so it is not part of the cache's name.
        num_shards: how many shards each split is cut into (a stream's `n_shards`): pick a multiple
            of the number of nodes. Streaming images, each archive takes its share by images, at
            least one shard, so a split from both zips has at least 2.
        protocol: the name of a protocol of PROTOCOLS (hashing, dsph, ucch, dchn, karpathy): instead of
            one `train` split of the pool, that protocol's splits (`coco-unified protocol --protocol NAME`
            writes the same as index files). True is the former spelling of "hashing".
        protocol_seed, num_query, num_train: the seed (None: the protocol's own, e.g. DSPH's 1814)
            and sizes of the protocols that draw and size their splits; the others ignore them.
    """

    with_images: bool = True
    labeled_only: bool = False
    doc2vec: bool = True
    doc2vec_path: str | None = None
    feature_sidecars: dict[str, str] | None = None
    base_url: str | None = None
    read_timeout: float = DEFAULT_READ_TIMEOUT
    num_shards: int = DEFAULT_NUM_SHARDS
    protocol: str | None = None
    protocol_seed: int | None = None
    num_query: int = DEFAULT_NUM_QUERY
    num_train: int = DEFAULT_NUM_TRAIN
    # Set by CocoUnified, never by a user: a hash of the local inputs (see `local_inputs_fingerprint`).
    # As a config keyword it keys the prepared cache, so changed inputs are prepared anew.
    inputs_fingerprint: str | None = None

    def __post_init__(self):
        super().__post_init__()
        self.check()

    def check(self) -> None:
        """Fail on a value no build can use, naming the keyword and a value that works.

        datasets sets the keywords given for a named config after constructing it, past
        `__post_init__`, so the builder calls this again.
        """
        for name in ("with_images", "labeled_only", "doc2vec"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r}: pass {name}=True or {name}=False.")
        if isinstance(self.protocol, bool):  # the former spelling: protocol=True was the hashing protocol
            self.protocol = "hashing" if self.protocol else None
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"protocol={self.protocol!r} is not a protocol; pass one of "
                f"{', '.join(repr(name) for name in PROTOCOLS)}, or protocol=None for the whole pool."
            )
        _check_whole_number("num_shards", self.num_shards, 1, f"e.g. num_shards={DEFAULT_NUM_SHARDS}, the default")
        _check_whole_number("num_query", self.num_query, 1, f"e.g. num_query={DEFAULT_NUM_QUERY}, the default")
        _check_whole_number("num_train", self.num_train, 0, f"e.g. num_train={DEFAULT_NUM_TRAIN}, the default")
        if self.protocol_seed is not None:
            _check_whole_number("protocol_seed", self.protocol_seed, 0, "e.g. protocol_seed=0, or None for the default")
        if self.doc2vec_path is not None and not isinstance(self.doc2vec_path, (str, os.PathLike)):
            raise ConfigError(f"doc2vec_path={self.doc2vec_path!r}: pass the path or URL of the sidecar as a string.")
        if self.feature_sidecars is not None:
            check_feature_sidecars(self.feature_sidecars, self.doc2vec)
        check_source_arguments(self.data_dir, self.base_url)
        if (
            isinstance(self.read_timeout, bool)
            or not isinstance(self.read_timeout, numbers.Real)
            or self.read_timeout <= 0
        ):
            raise ConfigError(
                f"read_timeout={self.read_timeout!r}: pass the seconds a remote read may stall, "
                f"e.g. read_timeout={DEFAULT_READ_TIMEOUT:g}, the default."
            )

    def create_config_id(self, config_kwargs: dict, custom_features=None) -> str:
        # How patiently the network is read does not change the rows: one cache whatever the timeout.
        config_kwargs = {name: value for name, value in config_kwargs.items() if name != "read_timeout"}
        return super().create_config_id(config_kwargs, custom_features)

    def sidecar_columns(self, storage_options: dict | None = None) -> list[SidecarColumn]:
        """The columns joined from sidecars: doc2vec, then those of feature_sidecars (their footers are read)."""
        columns = [doc2vec_column(self.doc2vec_path)] if self.doc2vec else []
        for name, path in (self.feature_sidecars or {}).items():
            columns.append(feature_column(name, os.fspath(path), storage_options))
        return columns

    def needed_parts(self) -> list[str]:
        return [ANNOTATIONS] + self.image_parts()

    def image_parts(self) -> list[str]:
        return list(COCO_SPLITS) if self.with_images else []

    def split_positions(
        self, records: Sequence[ImageRecord], id_lists: dict[str, IdList] | None = None
    ) -> dict[str, list[int]]:
        """Split name -> the positions in `records` (the pool, in index order) that split holds, ascending.

        A protocol too large for the labeled pool fails here, before any image is read. `id_lists`
        are the protocol's shipped id lists, as the builder fetched them (default: beside this script).
        """
        if self.protocol is None:
            return {str(datasets.Split.TRAIN): [p for p, r in enumerate(records) if r.labels or not self.labeled_only]}
        position_of = {record.index: position for position, record in enumerate(records)}
        splits = PROTOCOLS[self.protocol].splits(records, self.protocol_seed, self.num_query, self.num_train, id_lists)
        return {name: sorted(position_of[index] for index in indices.tolist()) for name, indices in splits.items()}

    def real_split_sizes(self) -> dict[str, int]:
        """The rows of each split when built from the real COCO 2017."""
        if self.protocol is not None:
            return PROTOCOLS[self.protocol].real_sizes(self.num_query, self.num_train)
        return {str(datasets.Split.TRAIN): REAL_COUNTS.labeled if self.labeled_only else REAL_COUNTS.images}


def check_source_arguments(data_dir, base_url) -> None:
    """data_dir (a local copy) or base_url (a mirror) or neither (the official host), well formed."""
    if data_dir is not None and base_url is not None:
        raise ConfigError(
            f"data_dir={data_dir!r} and base_url={redact_url(base_url)!r} both given: pass data_dir for a local copy "
            "or base_url for a mirror, not both."
        )
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"data_dir={data_dir!r}: pass the folder holding the COCO zips as a string.")
    if data_dir is not None and "::" in os.fspath(data_dir):
        # datasets joins and opens a loading script's paths with its fsspec helpers, which cut them there.
        raise ConfigError(
            f"data_dir={os.fspath(data_dir)!r}: '::' separates chained URLs for fsspec and datasets, so a folder "
            "named with it cannot be read; rename the folder, or pass a symbolic link to it whose path has no '::'."
        )
    if base_url is not None and not (
        isinstance(base_url, str) and base_url.split("://", 1)[0] in ("http", "https", "file") and "://" in base_url
    ):
        raise ConfigError(
            f"base_url={redact_url(base_url) if isinstance(base_url, str) else base_url!r}: pass an http://, https:// "
            "or file:// URL of a mirror with the official "
            f"layout (e.g. base_url={OFFICIAL_BASE_URL!r}), or data_dir= for a local folder."
        )


def check_feature_sidecars(feature_sidecars, doc2vec: bool) -> None:
    """{column: path}, with column names that are not already columns of the pool."""
    example = "e.g. feature_sidecars={'vgg19_fc7': 'vgg19.parquet'}"
    if not isinstance(feature_sidecars, dict):
        raise ConfigError(
            f"feature_sidecars={feature_sidecars!r}: pass a dict of column name -> sidecar path, {example}."
        )
    taken = set(pool_features()) | ({"doc2vec"} if doc2vec else set())
    for name, path in feature_sidecars.items():
        if not isinstance(name, str) or not name or name in taken:
            raise ConfigError(
                f"feature_sidecars: {name!r} is not a free column name (the pool has {', '.join(sorted(taken))}); "
                f"name a column of the sidecar, {example}."
            )
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"feature_sidecars[{name!r}]={path!r}: pass the path or URL of the sidecar as a string.")


def pool_features() -> dict[str, datasets.features.FeatureType]:
    """The columns every build has (but `image` without images), before any sidecar column."""
    return {
        "index": datasets.Value("int32"),
        "image_id": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "coco_split": datasets.ClassLabel(names=list(COCO_SPLITS)),
        "image": datasets.Image(),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "captions": datasets.Sequence(datasets.Value("string")),
        "caption_ids": datasets.Sequence(datasets.Value("int64")),
        "labels": datasets.Sequence(datasets.ClassLabel(names=CLASS_NAMES)),
        "multi_hot": datasets.Sequence(datasets.Value("uint8"), length=len(CLASS_NAMES)),
    }


class MemoizedSchemaFeatures(datasets.Features):
    """Features that build their Arrow schema once, not for every streamed row.

    datasets 3.x compares each streamed row's one-row Arrow table with `features.arrow_schema`,
    which serialises the features, the 80 class names included, every time it is asked: a third of
    a small-image row's CPU time (measured: 0.72 ms a row before, 0.48 ms after). The schema is
    kept with the columns it was built from and built again when a column is set, added or removed
    (datasets replaces a column to change it). Copies, which datasets makes with every transform,
    stay of this class.
    """

    _memo: tuple[tuple, pa.Schema] | None = None  # (the columns' items, their schema)

    def __reduce__(self):
        return type(self), (dict(self),)

    @property
    def arrow_schema(self) -> pa.Schema:
        columns = tuple(self.items())
        # Tuples compare their items by identity first: the same columns cost no deep comparison.
        if self._memo is None or self._memo[0] != columns:
            self._memo = (columns, super().arrow_schema)
        return self._memo[1]


def _check_whole_number(name: str, value, minimum: int, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name}={value!r}: must be a whole number >= {minimum}; pass {example}.")


# ============================================================================= builder


class CocoUnified(datasets.GeneratorBasedBuilder):
    """The unified COCO 2017 pool: train2017 + val2017 ordered by image id."""

    VERSION = VERSION
    BUILDER_CONFIG_CLASS = CocoUnifiedConfig
    BUILDER_CONFIGS = [
        CocoUnifiedConfig(name="default", version=VERSION, description="All 123,287 images with every column."),
        CocoUnifiedConfig(
            name="labeled",
            version=VERSION,
            labeled_only=True,
            description="The 122,218 images with at least one label.",
        ),
        CocoUnifiedConfig(
            name="no_images",
            version=VERSION,
            with_images=False,
            description="All images' labels and text, no image column.",
        ),
        CocoUnifiedConfig(
            name="labeled_no_images",
            version=VERSION,
            labeled_only=True,
            with_images=False,
            description="Labeled images' labels and text, no image column.",
        ),
        CocoUnifiedConfig(
            name="protocol",
            version=VERSION,
            protocol="hashing",
            description="The labeled pool as the seeded splits of the hashing literature: 5,000 query images, "
            "the rest as database, 10,000 training images drawn from the database.",
        ),
    ] + [
        CocoUnifiedConfig(name=protocol.name, version=VERSION, protocol=protocol.name, description=protocol.summary)
        for protocol in PROTOCOLS.values()
        if protocol.name != "hashing"  # that is the `protocol` config, named when it was the only one
    ]
    DEFAULT_CONFIG_NAME = "default"

    def __init__(self, *args, **kwargs):
        check_keywords(kwargs)
        # Local paths the user passes mean the current folder, as typed, and their absolute form
        # keys the prepared cache (a relative data_dir would share one cache across folders).
        # Only the default sidecar resolves next to this script (or in its Hub repo).
        for name in ("data_dir", "doc2vec_path"):
            if isinstance(kwargs.get(name), (str, os.PathLike)) and _is_local(os.fspath(kwargs[name])):
                kwargs[name] = os.path.abspath(kwargs[name])
        if "feature_sidecars" in kwargs:
            # None or {} is the default config, and keys its cache
            feature_sidecars = _normalised_feature_sidecars(kwargs.pop("feature_sidecars"), kwargs.get("doc2vec"))
            if feature_sidecars:
                kwargs["feature_sidecars"] = feature_sidecars
        # Used directly (datasets >= 4 loads no scripts), relative paths such as the default
        # sidecar resolve next to this file, as they do next to the script when it is loaded.
        kwargs.setdefault("base_path", os.path.dirname(os.path.abspath(__file__)))
        # A password in base_url travels as a header from here on, never in a URL datasets stores.
        base_url, credentials = split_credentials(kwargs.get("base_url"))
        if credentials is not None:
            kwargs["base_url"] = base_url
        fingerprint = local_inputs_fingerprint(kwargs)
        if fingerprint is not None:
            kwargs["inputs_fingerprint"] = fingerprint
        self._made_in_pid = os.getpid()
        # Processes forked for num_proc (datasets' pool workers and its queue manager) end with this one.
        multiprocess.util.register_after_fork(self, CocoUnified._end_child_with_maker)
        # Decided once, here: workers making the lock at the same time cannot tell whose it is.
        self._removes_script_lock = not os.path.exists(_script_lock_path())
        super().__init__(*args, **kwargs)
        self._remove_script_lock()
        self.config.check()
        self.storage_options = http_storage_options(self.storage_options, self.config.read_timeout, credentials)
        self.categories = CategoryMap()
        self._check_sha256 = False  # set by download_and_prepare(verification_mode="all_checks")

    def __setstate__(self, state):
        # num_proc workers unpickle the builder for each job: started by spawn rather than fork,
        # this is where they learn to end with the preparing process.
        super().__setstate__(state)
        self._remove_script_lock()
        self._end_child_with_maker()

    def _remove_script_lock(self) -> None:
        if self._removes_script_lock:
            with contextlib.suppress(FileNotFoundError):
                os.remove(_script_lock_path())

    def _end_child_with_maker(self) -> None:
        if os.getppid() == self._made_in_pid:
            end_with_parent(self._made_in_pid)

    def _download_and_prepare(self, *args, **kwargs):
        # Runs under datasets' lock of this cache folder, in `<folder>.incomplete`, which datasets
        # reuses as it is: shards an interrupted run left there would end up in the finished folder.
        with os.scandir(self._output_dir) as entries:
            stale = [
                entry.path for entry in entries if entry.is_file() and entry.name.startswith(f"{self.dataset_name}-")
            ]
        if stale:
            logger.warning(
                f"{self._output_dir}: removing {number_of(len(stale), 'file')} an interrupted preparation left"
            )
        for path in stale:
            os.remove(path)
        return super()._download_and_prepare(*args, **kwargs)

    def download_and_prepare(self, *args, verification_mode=None, **kwargs):
        # datasets >= 4 no longer hashes downloads itself: remember whether the user asked to.
        mode = datasets.VerificationMode(verification_mode or datasets.VerificationMode.BASIC_CHECKS)
        self._check_sha256 = mode == datasets.VerificationMode.ALL_CHECKS
        return super().download_and_prepare(*args, verification_mode=verification_mode, **kwargs)

    @functools.cached_property
    def _sidecar_columns(self) -> list[SidecarColumn]:
        # Read when datasets first asks for _info, within __init__: the config's values are checked here.
        self.config.check()
        return self.config.sidecar_columns(self.storage_options)

    def _info(self):
        features = pool_features()
        if not self.config.with_images:
            del features["image"]
        for column in self._sidecar_columns:
            features[column.name] = datasets.Sequence(datasets.Value("float32"), length=column.dim)
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=MemoizedSchemaFeatures(features),
            homepage=_HOMEPAGE,
            license=_LICENSE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        config = self.config
        # 1. Where each part is; a part missing from data_dir, or a sidecar missing, is named before
        #    anything is read (preparing from the official URLs fetches 20 GB before step 4).
        sources = locate_sources(config.data_dir, config.base_url, dl_manager.download_config.storage_options)
        require_sources(sources, config.needed_parts())
        sidecars = self._fetch_sidecars(dl_manager)
        # 2. The pool from the annotations alone: the splits (and a protocol too large for them)
        #    are known before an image archive is fetched.
        sources[ANNOTATIONS] = sources[ANNOTATIONS].fetched_by(dl_manager)
        records = build_annotation_index(sources[ANNOTATIONS])
        split_positions = config.split_positions(records, self._id_lists(dl_manager))
        # 3. The image archives, then what datasets verifies against the real COCO 2017.
        for name in config.image_parts():
            sources[name] = sources[name].fetched_by(dl_manager)
        fetched = {name: sources[name] for name in config.needed_parts()}
        self._verify(dl_manager, fetched, PoolCounts.of(records), split_positions)
        # 4. The shards of each split, and the sidecars' vectors in their order.
        images = list_pool_images(records, split_positions, fetched) if config.with_images else None
        shards = {
            name: plan_shards([records[p] for p in positions], images, config.num_shards, dl_manager.is_streaming)
            for name, positions in split_positions.items()
        }
        if sidecars:
            self._attach_sidecars(
                dl_manager, sidecars, [shard for split_shards in shards.values() for shard in split_shards]
            )
        streaming = dl_manager.is_streaming
        return [
            datasets.SplitGenerator(name=name, gen_kwargs={"shards": shards[name], "streaming": streaming})
            for name in shards
        ]

    def _generate_examples(self, shards: list[Shard], streaming: bool = False):
        if os.getpid() != self._made_in_pid:
            freeze_inherited_objects()
        batches_ahead = STREAM_READ_AHEAD_BATCHES if streaming else PREPARE_READ_AHEAD_BATCHES
        if any(shard.images is not None for shard in shards):
            check_no_shadowing_files(record.file_name for shard in shards for record in shard.records)
        for shard in shards:
            contents = None
            if shard.images is not None:
                contents = read_images_ahead(shard.images, shard.run_ends(), batches_ahead)
            try:
                for row, record in enumerate(shard.records):
                    example = {
                        "index": record.index,
                        "image_id": record.image_id,
                        "file_name": record.file_name,
                        "coco_split": COCO_SPLITS.index(record.coco_split),
                    }
                    if contents is not None:
                        example["image"] = {"bytes": next(contents), "path": record.file_name}
                    example.update(
                        width=record.width,
                        height=record.height,
                        captions=record.captions,
                        caption_ids=record.caption_ids,
                        labels=record.labels,
                        multi_hot=self.categories.multi_hot(record.labels),
                    )
                    for name, vectors in shard.vectors.items():
                        example[name] = vectors[row]
                    yield record.image_id, example
            finally:
                if contents is not None:
                    contents.close()

    def _get_examples_iterable_for_split(self, split_generator):
        # Called for streams only. datasets 3.x gets tables (STREAMS_TABLES), as from its own Parquet
        # builder; datasets >= 4, the examples.
        if not STREAMS_TABLES:
            return super()._get_examples_iterable_for_split(split_generator)
        return datasets.iterable_dataset.ArrowExamplesIterable(self._generate_tables, split_generator.gen_kwargs)

    def _generate_tables(self, shards: list[Shard], streaming: bool):
        """The examples in tables of STREAMED_TABLE_ROWS rows, of the features' Arrow schema (no cast)."""
        schema = self.info.features.arrow_schema
        with contextlib.closing(self._generate_examples(shards, streaming)) as examples:
            while batch := list(itertools.islice(examples, STREAMED_TABLE_ROWS)):
                yield batch[0][0], pa.Table.from_pylist([example for _, example in batch], schema=schema)

    # ------------------------------------------------------------------ stages of _split_generators

    def _verify(
        self, dl_manager, sources: dict[str, Source], counts: PoolCounts, split_positions: dict[str, list[int]]
    ) -> None:
        """The real COCO 2017 is held to its published counts, split sizes and (when asked) sha256.

        A subset or a sample is consistent too, so it must not be held to the real numbers.
        """
        real = is_real_coco(sources.values(), counts)
        if real:
            check_real_counts(counts)
            check_real_split_sizes(split_positions, self.config.real_split_sizes())
            if self._check_sha256:
                check_sha256(dl_manager, sources.values())
        logger.info(f"{'The official COCO 2017' if real else 'A COCO copy that is not the full COCO 2017'}: {counts}")
        if not real:
            self.info.splits = None
            self.info.download_checksums = None
            return
        self.info.splits = datasets.SplitDict(dataset_name=self.dataset_name)
        for name, positions in split_positions.items():
            self.info.splits.add(datasets.SplitInfo(name=name, num_examples=len(positions)))
        self.info.download_checksums = official_checksums(sources.values())

    def _id_lists(self, dl_manager) -> dict[str, IdList] | None:
        """The protocol's shipped id lists, fetched as the default sidecar is: relative to the script or its repo."""
        if self.config.protocol is None:
            return None
        storage_options = dl_manager.download_config.storage_options
        id_lists = {}
        for split, path in PROTOCOLS[self.config.protocol].id_lists.items():
            try:
                id_lists[split] = read_id_list(dl_manager.download(path), storage_options)
            except FileNotFoundError:
                raise CocoError(
                    f"{path} not found beside the loading script: the {self.config.protocol} protocol reads it. "
                    "Keep the data/ folder of the project next to coco_unified.py (`coco-unified push --mode script` "
                    "uploads it with the script)."
                ) from None
        return id_lists

    def _fetch_sidecars(self, dl_manager) -> dict[str, list[SidecarColumn]]:
        """Where each sidecar was fetched to (streaming: where it is), with its columns."""
        by_path: dict[str, list[SidecarColumn]] = {}
        for column in self._sidecar_columns:
            by_path.setdefault(column.path, []).append(column)
        fetched = {}
        for path, columns in by_path.items():
            try:
                fetched[dl_manager.download(path)] = columns
            except FileNotFoundError:
                raise columns[0].missing_error() from None
        return fetched

    def _attach_sidecars(self, dl_manager, sidecars: dict[str, list[SidecarColumn]], shards: list[Shard]) -> None:
        """Each sidecar read once (all its columns), in the order of the shards' rows; each shard gets its slices."""
        image_ids = [record.image_id for shard in shards for record in shard.records]
        for location, columns in sidecars.items():
            vectors, provenance = read_sidecar_columns(
                location,
                {column.name: column.dim for column in columns},
                image_ids,
                dl_manager.download_config.storage_options,
                columns[0].remedy,
                columns[0].missing_error(),
            )
            logger.info(f"{', '.join(vectors)} vectors from {location}")
            logger.debug(f"{location} provenance: {provenance}")
            start = 0
            for shard in shards:
                for name, matrix in vectors.items():
                    shard.vectors[name] = matrix[start : start + len(shard.records)]
                start += len(shard.records)


def _script_lock_path() -> str:
    """The lock file datasets < 4 makes whenever a builder is made or unpickled, while it reads the script's imports.

    It is `<the folder above this script's folder>.lock`: for a script loaded from the Hub, in
    datasets' modules cache; for a checkout, a file outside any cache, which the builder removes
    when it was not there before.
    """
    return os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + ".lock"


# The process whose objects freeze_inherited_objects froze last.
_frozen_in_pid: int | None = None


def freeze_inherited_objects() -> None:
    """Keep the cyclic garbage collector of this process off every object it holds now, once a process.

    For a process forked from the builder's (a DataLoader worker, a num_proc worker): it shares its
    parent's heap page by page, and its first full collection writes to every inherited object,
    copying every page. Measured: on the full pool 0.74 s and 113 MB a worker; on the real-size
    copy 1.16 s of each of 2 workers' ~7 s, and 2 workers streamed 366-383 img/s without the
    freeze, 483-592 with it (datasets 3.6; one process: 377).
    """
    global _frozen_in_pid
    if _frozen_in_pid != os.getpid():
        gc.freeze()
        _frozen_in_pid = os.getpid()


# prctl(2) option: the signal this process gets when its parent ends.
_PR_SET_PDEATHSIG = 1


def end_with_parent(parent_pid: int) -> None:
    """End this process when `parent_pid`, its parent, ends (Linux; elsewhere nothing is done).

    A killed preparation would otherwise leave its num_proc workers running, writing shards.
    """
    if not sys.platform.startswith("linux"):
        return
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        logger.debug(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
        return
    if os.getppid() != parent_pid:  # the parent ended before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def _normalised_feature_sidecars(feature_sidecars, doc2vec) -> dict[str, str] | None:
    """Sorted by column with local paths made absolute: one config id (and cache) per set of sidecars.

    datasets hashes a dict keyword into the config id, so the same sidecars in another order or
    through another relative path must become the same dict.
    """
    if not feature_sidecars:
        return None
    check_feature_sidecars(feature_sidecars, True if doc2vec is None else doc2vec)
    return {
        name: os.path.abspath(path) if _is_local(os.fspath(path)) else os.fspath(path)
        for name, path in sorted(feature_sidecars.items())
    }


def local_inputs_fingerprint(kwargs: dict) -> str | None:
    """A hash of what a build with these keywords reads from local files; None if it reads none.

    Archives and annotation files count by path, size and modification time; extracted image
    folders by those of every file; sidecars by those and their Parquet footer (its row-group
    statistics tell a rebuilt sidecar of the same size). Remote inputs are left to the download cache.
    """
    if kwargs.get("inputs_fingerprint") is not None:
        raise ConfigError("inputs_fingerprint= is set by CocoUnified itself from the input files; leave it out.")
    sidecars = list((kwargs.get("feature_sidecars") or {}).values())
    if kwargs.get("doc2vec", True) is not False:
        sidecars.append(kwargs.get("doc2vec_path") or os.path.join(kwargs["base_path"], DOC2VEC_SIDECAR))
    data_dir = kwargs.get("data_dir")
    data_files = _local_data_files(os.fspath(data_dir)) if isinstance(data_dir, (str, os.PathLike)) else []
    # A path of the wrong type or a missing input is left out: the config's check or the read reports it.
    sidecars = [os.fspath(path) for path in sidecars if isinstance(path, (str, os.PathLike))]
    found = [path for path in data_files + sidecars if _is_local(path) and os.path.isfile(path)]
    digest = hashlib.sha256()
    for path in found:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        if path in sidecars:
            with contextlib.suppress(pa.ArrowInvalid, OSError):  # not Parquet: reported where it is read
                digest.update(repr(pq.read_metadata(path).to_dict()).encode())
    return digest.hexdigest()[:16] if found else None


def _local_data_files(data_dir: str) -> list[str]:
    """The files of data_dir a build may read: the zips, or every file of the extracted folders."""
    if "::" in data_dir or not os.path.isdir(data_dir):
        return []  # refused, with the reason, when the config is checked or the sources located
    files = []
    for name, archive in ARCHIVES.items():
        folder = os.path.join(data_dir, name)
        if not os.path.isdir(folder):
            files.append(os.path.join(data_dir, archive.file_name))
            continue
        with os.scandir(folder) as entries:
            files += sorted(entry.path for entry in entries if entry.is_file())
    return files


def check_keywords(kwargs: dict) -> None:
    """A keyword that is neither a config field nor a DatasetBuilder argument is a typo: say which ones exist.

    datasets would otherwise fail with the whole config's repr, or (for a custom config) a TypeError.
    """
    config_fields = [field.name for field in dataclasses.fields(CocoUnifiedConfig)]
    own_fields = [
        name
        for name in config_fields
        if name not in {f.name for f in dataclasses.fields(datasets.BuilderConfig)} | {"inputs_fingerprint"}
    ]
    builder_parameters = [
        name
        for name, parameter in inspect.signature(datasets.DatasetBuilder.__init__).parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    valid = set(config_fields) | set(builder_parameters)
    if isinstance(kwargs.get("features"), dict) and not isinstance(kwargs["features"], datasets.Features):
        raise ConfigError(
            "features= is datasets' own argument (the schema, a datasets.Features); pass the sidecars to join as "
            "feature_sidecars=, e.g. feature_sidecars={'vgg19_fc7': 'vgg19.parquet'}."
        )
    for keyword in kwargs:
        if keyword in valid:
            continue
        closest = difflib.get_close_matches(keyword, sorted(valid), n=1)
        raise ConfigError(
            f"{keyword}= is not a keyword of CocoUnified{f'; did you mean {closest[0]}=?' if closest else '.'} "
            f"The config keywords are {', '.join(own_fields + ['data_dir'])}; datasets' builder arguments are "
            f"{', '.join(name for name in builder_parameters if name != 'data_dir')}."
        )


# ============================================================================= helpers: errors and wording


class CocoError(ValueError):
    """Bad or unreachable COCO input; the message names the file, the entry and the fix."""


class ConfigError(CocoError):
    """A loader argument no build can use: a misspelt keyword, a value out of range, a protocol too large."""


class MissingPartError(CocoError):
    """A part of COCO is not where it was looked for: a file missing from data_dir, or an HTTP 404."""


class ServerUnreachableError(CocoError):
    """A remote file could not be read: the host does not resolve, refuses, or fails every retry."""


class ArchiveError(CocoError):
    """A zip that is truncated, corrupt or incomplete, or not the official file; or a truncated extracted image."""


class AnnotationError(CocoError):
    """Annotation JSON that is malformed or disagrees with COCO 2017."""


class SidecarError(CocoError):
    """A sidecar (Doc2Vec, image features, ...) that is missing, unreadable or built for other data."""


class ShadowedImageError(CocoError):
    """A file in the current directory named like a pool image, which datasets would take for that image."""


def number_of(number: int, noun: str, plural: str | None = None) -> str:
    """`1 file`, `2 files`, `1,234 images`: a count in words."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


# ============================================================================= helpers: sources


@dataclasses.dataclass(frozen=True)
class Source:
    """One part of COCO (the annotations, or the images of one split) and how to reach it.

    It carries where the part was found, where it is read from once fetched, and the storage
    options to open it with, so no caller locates a part twice or passes the options along.
    """

    name: str  # ANNOTATIONS, "train2017" or "val2017"
    # Where the part was found: the official or mirror URL, or the zip or folder in data_dir; the
    # name datasets records its checksums under.
    found_at: str
    # What is read: the download cache path when preparing from a URL, the URL itself when
    # streaming, the data_dir path otherwise.
    read_from: str
    zipped: bool  # a zip, or a folder extracted from one
    # datasets' storage options, by protocol ({"https": {...}}).
    storage_options: dict = dataclasses.field(default_factory=dict, compare=False)

    def fetched_by(self, dl_manager) -> Source:
        """This part through the download manager: a cached download when preparing, the URL when streaming.

        A cached download that is not a readable zip (cut short earlier) is fetched again, once.
        """
        if not self.zipped:
            return self
        fetched = reach(self.found_at, lambda: dl_manager.download(self.found_at))
        if _is_stale_download(fetched, dl_manager):
            logger.warning(
                f"{fetched}, the cached download of {self.found_at}, is not a readable zip: fetching it again"
            )
            os.remove(fetched)
            fetched = reach(self.found_at, lambda: dl_manager.download(self.found_at))
            if _is_stale_download(fetched, dl_manager):
                raise ArchiveError(
                    f"{fetched}, downloaded from {self.found_at}, is not a readable zip even when fetched again; "
                    'the server sends a truncated or corrupt file. Delete it and load with download_mode="force_redownload", '
                    "or use another mirror."
                )
        return dataclasses.replace(self, read_from=fetched)

    def open(self):
        """A seekable binary file; a URL's reads go through a ByteRangeReader, with its retries."""
        if _is_local(self.read_from):
            return open_location(self.read_from, self.storage_options)
        return io.BufferedReader(RangedFile(self.reader(), self.size()), buffer_size=READ_AHEAD)

    def size(self) -> int:
        fs, path = fsspec.core.url_to_fs(self.read_from, **_options_for(self.read_from, self.storage_options))
        return reach(self.read_from, lambda: fs.size(path))

    def reader(self) -> ByteRangeReader:
        return ByteRangeReader(self.read_from, self.storage_options)


def locate_sources(data_dir=None, base_url=None, storage_options: dict | None = None) -> dict[str, Source]:
    """Where each part lives: a local copy (zips or extracted folders), a mirror, or the official host.

    A user and password in base_url leave the URLs and go with the storage options, to its host only.
    """
    check_source_arguments(data_dir, base_url)
    base_url, credentials = split_credentials(base_url)
    options = http_storage_options(storage_options, credentials=credentials)
    if data_dir is None:
        base = (base_url or OFFICIAL_BASE_URL).rstrip("/")
        return {
            name: Source(name, url, url, True, options)
            for name, url in ((name, f"{base}/{archive.url_path}") for name, archive in ARCHIVES.items())
        }
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise MissingPartError(
            f"data_dir={data_dir!r} is not a folder; pass the folder that holds the COCO 2017 zips "
            "(or the folders extracted from them)."
        )
    sources = {}
    for name, archive in ARCHIVES.items():
        folder = os.path.join(data_dir, name)
        zipped = not os.path.isdir(folder)  # a zip that is missing too is reported by `require_sources`
        location = os.path.join(data_dir, archive.file_name) if zipped else folder
        sources[name] = Source(name, location, location, zipped, options)
    return sources


def require_sources(sources: dict[str, Source], names: Sequence[str]) -> None:
    """Fail early, naming every local part that is missing."""
    missing = [
        sources[name]
        for name in names
        if "://" not in sources[name].found_at and not os.path.exists(sources[name].found_at)
    ]
    if missing:
        wanted = ", ".join(
            f"{source.found_at} (or the extracted folder {os.path.dirname(source.found_at)}/{source.name}/)"
            for source in missing
        )
        raise MissingPartError(
            f"Missing from data_dir: {wanted}. Download them from {OFFICIAL_BASE_URL} or fix data_dir."
        )


def official_checksums(sources: Iterable[Source]) -> dict[str, dict]:
    """datasets' expected download checksums of the zipped sources, under the name each was found at."""
    return {
        source.found_at: {"num_bytes": ARCHIVES[source.name].num_bytes, "checksum": ARCHIVES[source.name].sha256}
        for source in sources
        if source.zipped
    }


def is_real_coco(sources: Iterable[Source], counts: PoolCounts) -> bool:
    """Archives of the official sizes are the real COCO; extracted folders are judged by their image count."""
    zipped = [source for source in sources if source.zipped]
    if not zipped:
        return counts.images == REAL_COUNTS.images
    return all(source.size() == ARCHIVES[source.name].num_bytes for source in zipped)


def check_real_counts(counts: PoolCounts) -> None:
    """The real COCO 2017 must hold exactly the published numbers; anything else lost data."""
    if counts != REAL_COUNTS:
        raise AnnotationError(
            f"The archives have the size of the official COCO 2017 files but their annotations hold {counts}, "
            f"not {REAL_COUNTS}; an annotation file was altered. Download annotations_trainval2017.zip again."
        )


def check_real_split_sizes(split_positions: dict[str, list[int]], expected: dict[str, int]) -> None:
    """Built from the real COCO 2017, every split has its published size (a shipped id list holds only pool ids)."""
    sizes = {name: len(positions) for name, positions in split_positions.items()}
    if sizes != expected:
        raise AnnotationError(
            f"On the official COCO 2017 the splits hold {sizes}, not {expected}; the id lists beside "
            "coco_unified.py were altered. Restore them from the project."
        )


def check_sha256(dl_manager, sources: Iterable[Source]) -> None:
    """sha256 of each official zip, reusing what datasets < 4 hashed while downloading."""
    recorded = dl_manager.get_recorded_sizes_checksums()
    for source in sources:
        if not source.zipped:
            continue
        checksum = recorded.get(source.found_at, {}).get("checksum")
        if checksum is None:
            with open(source.read_from, "rb") as file:
                checksum = hashlib.file_digest(file, "sha256").hexdigest()
        expected = ARCHIVES[source.name].sha256
        if checksum != expected:
            raise ArchiveError(
                f"{source.read_from}: sha256 {checksum} differs from the official {expected}; "
                "the file is corrupt, delete it and download it again."
            )


def _is_local(location: str) -> bool:
    return fsspec.utils.get_protocol(location) in ("file", "local")


def _options_for(location: str, storage_options: dict | None) -> dict:
    """`datasets` keys storage options by protocol ({"hf": {...}}); fsspec takes one protocol's."""
    return http_storage_options(storage_options).get(fsspec.utils.get_protocol(location), {})


def _is_stale_download(path: str, dl_manager) -> bool:
    """A file of datasets' download cache that is not a readable zip (a download cut short earlier)."""
    if dl_manager.is_streaming or not dl_manager.download_config.cache_dir or not _is_local(path):
        return False
    cache_dir = dl_manager.download_config.cache_dir
    inside = os.path.commonpath([os.path.abspath(path), os.path.abspath(cache_dir)]) == os.path.abspath(cache_dir)
    return inside and not zipfile.is_zipfile(path)


# ----------------------------------------------------------------------------- remote access


def redact_url(url: str) -> str:
    """`url` as it may be stored, logged or shown: no user info, secret query values replaced by REDACTED.

    Anything that is not a URL (a local path) is returned as it is.
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    parts = urllib.parse.urlsplit(_without_user_info(url))
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if not any(SECRET_QUERY_PARAMETER.search(name) for name, _ in pairs):
        return parts.geturl()
    query = urllib.parse.urlencode(
        [(name, "REDACTED" if SECRET_QUERY_PARAMETER.search(name) else value) for name, value in pairs], safe="/:"
    )
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _without_user_info(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class OriginCredentials:
    """An aiohttp client middleware that adds basic-auth credentials to the requests for one origin.

    So a password given in base_url reaches its server without being in any URL that datasets
    or fsspec store (the download cache's metadata, dataset_info.json), and never reaches another
    host (a sidecar's, a redirect's). Its repr shows the origin only.
    """

    def __init__(self, origin: tuple[str, str, int | None], authorization: str):
        self.origin = origin
        self._authorization = authorization

    def __repr__(self) -> str:
        # The object's id keeps fsspec, which caches a filesystem per repr of its options, from
        # reusing one made with another password.
        return f"OriginCredentials({self.origin[0]}://{self.origin[1]}:{self.origin[2]} at {id(self):#x})"

    async def __call__(self, request, handler):
        if (request.url.scheme, request.url.host, request.url.port) == self.origin:
            request.headers[aiohttp.hdrs.AUTHORIZATION] = self._authorization
        return await handler(request)


def split_credentials(url: str | None) -> tuple[str | None, OriginCredentials | None]:
    """`url` without a user and password, and the middleware that sends them to its origin; (url, None) if none."""
    if not isinstance(url, str) or "://" not in url:
        return url, None
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    authorization = aiohttp.encode_basic_auth(
        urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")
    )
    origin = (parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme))
    return _without_user_info(url), OriginCredentials(origin, authorization)


def http_storage_options(
    storage_options: dict | None, read_timeout: float | None = None, credentials: OriginCredentials | None = None
) -> dict:
    """datasets' storage options with what every HTTP read needs, where the options do not say otherwise.

    A `read_timeout` given here replaces theirs (it is the builder's read_timeout=).

    aiohttp reads HTTP(S)_PROXY, NO_PROXY and ~/.netrc only with trust_env=True (datasets sets it
    for its downloads, fsspec does not: docs/FACTS.md §8); a stall longer than `read_timeout` raises
    and is retried; `credentials` go with every request to their origin.
    """
    options = dict(storage_options or {})
    for protocol in ("http", "https"):
        own = dict(options.get(protocol, {}))
        client = dict(own.get("client_kwargs", {}))
        client.setdefault("trust_env", True)
        if read_timeout is not None or "timeout" not in client:
            client["timeout"] = aiohttp.ClientTimeout(total=None, sock_read=read_timeout or DEFAULT_READ_TIMEOUT)
        if credentials is not None:
            client["middlewares"] = (*client.get("middlewares", ()), credentials)
        options[protocol] = {**own, "client_kwargs": client}
    return options


def open_location(
    location: str, storage_options: dict | None = None, missing: CocoError | None = None, advice: str | None = None
):
    """A seekable binary file for a local path or a URL (fsspec); `missing` is raised if there is none.

    `advice` replaces what an unreachable COCO archive's error advises.
    """
    opener = fsspec.open(location, "rb", **_options_for(location, storage_options))
    try:
        return reach(location, opener.open, advice)
    except MissingPartError:
        if missing is None:
            raise
        raise missing from None


_Result = TypeVar("_Result")


def reach(location: str, action: Callable[[], _Result], advice: str | None = None) -> _Result:
    """Run `action`, which opens, sizes or downloads `location`, under the retry policy of `Attempts`.

    Failures become the CocoError that says what happened, what was tried and how to work offline.
    """
    attempts = Attempts(location, remote=not _is_local(location), advice=advice)
    while True:
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - classified by Attempts; anything else goes on as it is
            attempts.failed(error)


class Attempts:
    """The retry policy of every remote read: ATTEMPTS tries with exponential backoff while the failure may pass.

    A busy server (HTTP 408, 429, 5xx), a refused, dropped or stalled connection may pass; a 404
    or anything that is not a network failure does not. `progressed` gives a fresh budget: a read
    that keeps receiving bytes between failures is resumed however many it meets.
    """

    def __init__(self, location: str, remote: bool, advice: str | None = None, span: str = ""):
        self.location, self.remote, self.advice, self.span = location, remote, advice, span
        self.failures = 0
        self.started = time.monotonic()

    def progressed(self) -> None:
        self.failures = 0

    def failed(self, error: BaseException) -> None:
        """Wait before the next try, or raise the CocoError telling why there is none."""
        shown = redact_url(self.location) + self.span
        failure = diagnose(error) if self.remote else None
        if failure is None and isinstance(error, FileNotFoundError):
            raise missing_error(self.location, None, self.advice) from error
        if failure is None and isinstance(error, OSError):
            raise (ServerUnreachableError if self.remote else MissingPartError)(
                f"{shown}: cannot be opened ({error!r}); check {'base_url and the network' if self.remote else 'data_dir'}."
            ) from error
        if failure is None:
            raise error
        self.failures += 1
        if failure.not_found or not failure.transient or self.failures >= ATTEMPTS:
            raise unreachable_error(
                self.location, failure, self.failures, time.monotonic() - self.started, self.advice, self.span
            ) from error
        delay = RETRY_BASE_DELAY * 2 ** (self.failures - 1)
        logger.warning(
            f"{shown}: {failure.reason} (attempt {self.failures} of {ATTEMPTS}); trying again in {delay:.2f} s"
        )
        time.sleep(delay)


@dataclasses.dataclass(frozen=True)
class NetworkFailure:
    """Why a remote file could not be read, in words, and whether another try may succeed."""

    reason: str
    transient: bool
    not_found: bool = False


def diagnose(error: BaseException) -> NetworkFailure | None:
    """The network failure behind `error` (fsspec and datasets wrap aiohttp's in FileNotFoundError); None if none."""
    cause, depth = error, 0
    while cause is not None and depth < 10:
        status = getattr(cause, "status", None)
        if isinstance(status, int) and status >= 400:
            host = getattr(getattr(cause, "request_info", None), "url", None)
            server = f" from {host.host}{f':{host.port}' if host.port else ''}" if host is not None else ""
            denied = " (refused credentials: give them as https://USER:PASSWORD@host or in ~/.netrc)"
            return NetworkFailure(
                f"HTTP {status}{server}{denied if status in (401, 403) else ''}",
                status in TRANSIENT_STATUSES,
                not_found=status in (404, 410),
            )
        if isinstance(cause, OfflineModeIsEnabled):
            return NetworkFailure("datasets' offline mode is on (HF_HUB_OFFLINE=1)", transient=False)
        if isinstance(cause, socket.gaierror):
            return NetworkFailure(f"the host name does not resolve ({cause.strerror})", transient=True)
        if isinstance(cause, ConnectionRefusedError):
            return NetworkFailure("connection refused", transient=True)
        if isinstance(cause, (TimeoutError, aiohttp.ServerTimeoutError)):
            return NetworkFailure("no data within the read timeout (read_timeout=)", transient=True)
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    if isinstance(error, (ConnectionError, EOFError)) or type(error).__module__.startswith("aiohttp"):
        return NetworkFailure(f"connection lost ({error!r})", transient=True)
    return None


def missing_error(location: str, failure: NetworkFailure | None, advice: str | None = None) -> MissingPartError:
    if _is_local(location):
        return MissingPartError(f"{location} not found; check data_dir (or a file:// base_url).")
    reason = failure.reason if failure else "no such file"
    return MissingPartError(
        f"{redact_url(location)}: not found ({reason}, 1 attempt). {advice or _coco_advice(location, True)}"
    )


def unreachable_error(
    location: str, failure: NetworkFailure, attempts: int, seconds: float, advice: str | None = None, span: str = ""
) -> CocoError:
    if failure.not_found:
        return missing_error(location, failure, advice)
    return ServerUnreachableError(
        f"{redact_url(location)}{span}: cannot be reached: {failure.reason} after {number_of(attempts, 'attempt')} "
        f"over {seconds:.1f} s. {advice or _coco_advice(location, False)}"
    )


def _coco_advice(location: str, not_found: bool) -> str:
    """What to check when a COCO archive cannot be read from a URL, and how to do without the network."""
    official = location.startswith(OFFICIAL_BASE_URL)
    if not_found and official:
        check = "The official host no longer serves it at this address: pass base_url= of a mirror."
    elif not_found:
        layout = ", ".join(archive.url_path for archive in ARCHIVES.values())
        check = f"Check base_url: a mirror needs the official layout ({layout})."
    else:
        check = "Check the network connection" + ("." if official else " and base_url.")
    names = ", ".join(archive.file_name for archive in ARCHIVES.values())
    return (
        f"{check} To work offline, download {names} from {OFFICIAL_BASE_URL} into one folder "
        "and pass data_dir=<that folder>."
    )


# ============================================================================= helpers: archive reading


@dataclasses.dataclass(frozen=True)
class ZipMember:
    """Where one archive entry lies; `end` is where the next entry (or the directory) starts."""

    name: str
    start: int
    end: int
    compressed_size: int
    size: int
    method: int
    crc: int


def read_zip_directory(archive, archive_name: str) -> list[ZipMember]:
    """The file entries of a zip in archive order, from its central directory.

    `archive` is a seekable binary file (local, or fsspec's ranged HTTP file): only the
    directory at the end is read. zipfile does the Zip64 bookkeeping.
    """
    try:
        with zipfile.ZipFile(archive) as reader:
            infos = sorted(reader.infolist(), key=lambda info: info.header_offset)
            directory_start = reader.start_dir
    except (zipfile.BadZipFile, EOFError, struct.error) as error:
        raise ArchiveError(
            f"{archive_name}: not a readable zip ({error}); the file is truncated or corrupt, download it again."
        ) from None
    ends = [info.header_offset for info in infos[1:]] + [directory_start]
    if infos and infos[0].header_offset < 0:
        # zipfile shifts every offset by where it found the directory: a zip that lost its first
        # bytes places its first entries before the file starts.
        raise ArchiveError(
            f"{archive_name}: its directory places entry {infos[0].filename} {-infos[0].header_offset:,} bytes "
            "before the start of the file; the file lost its beginning (truncated or corrupt), download it again."
        )
    members = [
        ZipMember(
            info.filename, info.header_offset, end, info.compress_size, info.file_size, info.compress_type, info.CRC
        )
        for info, end in zip(infos, ends)
        if not info.is_dir()
    ]
    duplicates = [name for name, times in collections.Counter(member.name for member in members).items() if times > 1]
    if duplicates:
        raise ArchiveError(
            f"{archive_name}: entry {duplicates[0]} appears twice; the archive is corrupt, download it again."
        )
    return members


class RangedFile(io.RawIOBase):
    """A seekable read-only file over a ByteRangeReader, for zipfile to read a remote central directory.

    Each read from a new position is one ranged GET to the end of the file, with the reader's
    retries and its check that the server honours Range; zipfile reads the directory in a few.
    """

    def __init__(self, reader: ByteRangeReader, size: int):
        self._reader, self._size, self._position = reader, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        self._reader.move_to(self._position, self._size)
        buffer[:wanted] = self._reader.read(wanted)
        self._position += wanted
        return wanted

    def close(self) -> None:
        self._reader.close()
        super().close()


def read_source_directory(source: Source) -> list[ZipMember]:
    with source.open() as archive:
        return read_zip_directory(archive, source.read_from)


class ByteRangeReader:
    """Reads a local file or a URL sequentially from an offset, one request per contiguous run.

    Remote runs are single ranged GETs (fsspec's streaming HTTP file); a dropped or stalled
    connection or a busy server is retried from the byte offset reached, under the policy of
    `Attempts`; a reply that ends early but cleanly (a server may cap each 206 reply) is continued
    from there with a new request, at once. Reads are served from a read-ahead buffer, because
    each call into fsspec's event loop costs more than a small image. Moving backwards or far
    ahead starts a new run.
    """

    def __init__(self, location: str, storage_options: dict | None = None):
        self.location = redact_url(location)  # as messages show it
        self._fs, self._path = fsspec.core.url_to_fs(location, **_options_for(location, storage_options))
        self._remote = not isinstance(self._fs, fsspec.implementations.local.LocalFileSystem)
        self._file = None
        self._buffer = bytearray()  # bytes [position, position + len(_buffer)), already received
        self.position = 0
        self._end = 0
        self._reply_start = 0  # where the current reply began

    # Bound to the class: at interpreter exit, when an unfinished generator is closed, the module's
    # globals (`sys` included) are already cleared.
    _interpreter_exiting = staticmethod(sys.is_finalizing)

    def close(self) -> None:
        self._buffer.clear()
        # fsspec's event loop is gone at interpreter exit; the connection dies with the process then.
        if self._file is not None and not self._interpreter_exiting():
            self._file.close()
        self._file = None

    def move_to(self, offset: int, end: int) -> None:
        """Position the reader at `offset`; reads will not go past `end`, the end of this run."""
        gap = offset - self.position
        if self._file is not None and 0 <= gap <= len(self._buffer):
            del self._buffer[:gap]
            self.position = offset
        elif self._file is not None and self._remote and 0 < gap <= MAX_SKIPPED_BYTES and offset < self._end:
            self.read(gap)
        elif self._file is not None and not self._remote:
            self._buffer.clear()
            self._file.seek(offset)
            self.position, self._end = offset, end
        else:
            self.close()
            self.position, self._end = offset, end

    def read(self, num_bytes: int) -> bytes:
        """Exactly `num_bytes` bytes."""
        self._fill(num_bytes)
        with memoryview(self._buffer) as buffered:
            data = buffered[:num_bytes].tobytes()  # one copy; bytes(self._buffer[:n]) makes two
        del self._buffer[:num_bytes]
        self.position += num_bytes
        return data

    def _fill(self, num_bytes: int) -> None:
        """Receive until the buffer holds `num_bytes`, retrying transient failures from the offset reached."""
        attempts = Attempts(self.location, self._remote)
        while len(self._buffer) < num_bytes:
            reached = self.position + len(self._buffer)
            attempts.span = f" (bytes {reached:,}-{self.position + num_bytes:,})"
            try:
                if self._file is None:
                    self._file = self._open(reached)
                part = self._file.read(max(num_bytes - len(self._buffer), min(READ_AHEAD, self._end - reached)))
            except ArchiveError:
                raise
            except Exception as error:  # noqa: BLE001 - classified by Attempts
                self._drop_connection()
                if not self._remote:
                    raise ArchiveError(
                        f"{self.location}: reading{attempts.span} failed ({error!r}); the file is truncated or "
                        "corrupt, download it again."
                    ) from error
                attempts.failed(error)
                continue
            if part:
                self._buffer += part
                attempts.progressed()
            elif not self._remote:
                raise ArchiveError(
                    f"{self.location}: the file ends at byte {reached:,}, before byte {self.position + num_bytes:,}; "
                    "it is truncated, download it again."
                )
            elif reached > self._reply_start:
                # The reply ended cleanly after some bytes: a server may cap each reply (legal HTTP).
                # Ask for the rest at once; this is no failure.
                self._drop_connection()
            else:
                self._drop_connection()
                attempts.failed(EOFError(f"the server sent no bytes from byte {reached:,}"))

    def _open(self, offset: int):
        self._reply_start = offset
        if not self._remote:
            file = self._fs.open(self._path, "rb")
            file.seek(offset)
            return file
        file = self._fs.open(
            self._path,
            "rb",
            block_size=0,
            size=self._end - offset,
            headers={"Range": f"bytes={offset}-{self._end - 1}"},
        )
        if file.r.status != 206 and (offset > 0 or self._end < int(file.r.headers.get("Content-Length", self._end))):
            file.close()
            raise ArchiveError(
                f"{self.location}: the server ignores Range requests (answered {file.r.status} to a ranged GET of "
                f"bytes {offset:,}-{self._end - 1:,}); COCO is read in byte ranges. Use a mirror that serves them, "
                "or download the zips and pass data_dir."
            )
        return file

    def _drop_connection(self) -> None:
        """Close the connection but keep what it delivered: the next read resumes after it."""
        buffered = self._buffer
        self._buffer = bytearray()
        self.close()
        self._buffer = buffered


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"


def read_member(reader: ByteRangeReader, member: ZipMember, run_end: int) -> bytearray:
    """The content of one zip entry, from its local header; checks name, size and CRC.

    Sizes come from the central directory, so entries whose local header defers them to a data
    descriptor read the same way; the descriptor is skipped with the gap before the next entry.
    """
    where = f"{reader.location}, entry {member.name}"
    misplaced = (
        f"{where}: no local header of this entry at byte {member.start}; the archive is corrupt or the "
        "server ignored the Range request. Download the archive again or use another mirror."
    )
    reader.move_to(member.start, run_end)
    header = reader.read(_LOCAL_HEADER.size)
    signature, _, flags, method, _, _, _, _, _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if signature != _LOCAL_HEADER_SIGNATURE:
        raise ArchiveError(misplaced)
    if reader.read(name_length).decode("utf-8" if flags & 0x800 else "cp437") != member.name:
        raise ArchiveError(misplaced)
    reader.read(extra_length)
    if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(f"{where}: compression method {method} is not supported (only stored and deflated).")
    content = _inflate(reader, member, method == zipfile.ZIP_DEFLATED)
    if isal_zlib.crc32(content) != member.crc:
        raise ArchiveError(f"{where}: CRC mismatch; the archive is corrupt, download it again.")
    return content


def _inflate(reader: ByteRangeReader, member: ZipMember, deflated: bool) -> bytearray:
    """The entry's content, inflated in one call when small (ONE_SHOT_INFLATE_MAX), else chunk by chunk.

    libdeflate says only that an entry failed; such an entry is inflated again in chunks, from
    memory, to say how.
    """
    if deflated and max(member.size, member.compressed_size) <= ONE_SHOT_INFLATE_MAX:
        data = reader.read(member.compressed_size)
        try:
            content = deflate.deflate_decompress(data, member.size)
        except deflate.DeflateError:
            content = bytearray()
        if len(content) == member.size:
            return content
        return _inflate_chunks([data], member, deflated, reader.location)
    chunks = (reader.read(min(READ_CHUNK, remaining)) for remaining in range(member.compressed_size, 0, -READ_CHUNK))
    return _inflate_chunks(chunks, member, deflated, reader.location)


def _inflate_chunks(chunks: Iterable[bytes], member: ZipMember, deflated: bool, location: str) -> bytearray:
    """Decompress chunk by chunk into one buffer: a 448 MB JSON is held once.

    Memory follows the data, not what the central directory claims: the buffer is preallocated
    for a plausible size and grows as bytes arrive, and inflation stops one byte past the declared
    size, so neither an entry declaring 1 TiB nor a deflate bomb declaring 1,000 bytes costs more
    than the bytes that exist. ISA-L inflates the same deflate streams as zlib, twice as fast
    (1.5 s instead of 3.0 s for instances_train2017.json, measured here).
    """
    where = f"{location}, entry {member.name}"
    if not deflated and member.compressed_size != member.size:
        raise ArchiveError(
            f"{where}: a stored entry of {member.compressed_size:,} bytes declares {member.size:,}; "
            "the archive is corrupt, download it again."
        )
    content = bytearray(min(member.size, PREALLOCATED_PER_COMPRESSED_BYTE * member.compressed_size))
    filled = 0
    inflater = isal_zlib.decompressobj(-isal_zlib.MAX_WBITS) if deflated else None
    try:
        for chunk in chunks:
            for part in [chunk] if inflater is None else _inflated_parts(inflater, chunk, member.size - filled):
                content[filled : filled + len(part)] = part  # grows the buffer past its preallocation
                filled += len(part)
                if filled > member.size:
                    raise ArchiveError(
                        f"{where}: inflates to more than the {member.size:,} bytes its directory declares; the "
                        "archive is corrupt or hostile, download it again from the official host."
                    )
    except isal_zlib.error as error:
        raise ArchiveError(f"{where}: corrupt data ({error}); download it again.") from None
    if filled != member.size:
        raise ArchiveError(
            f"{where}: {filled:,} bytes instead of the {member.size:,} its directory declares; "
            "the archive is corrupt, download it again."
        )
    return content


def _inflated_parts(inflater, data: bytes, room: int) -> Iterable[bytes]:
    """What `data` inflates to, in parts of at most READ_CHUNK bytes, never more than `room` + 1 bytes in all.

    One byte past `room` is enough to tell an entry that inflates beyond its declared size.
    """
    while not inflater.eof:
        limit = min(READ_CHUNK, room + 1)
        part = inflater.decompress(data, limit)
        data = inflater.unconsumed_tail
        room -= len(part)
        yield part
        if room < 0 or (not data and len(part) < limit):
            return


# ============================================================================= helpers: annotation index


class CategoryMap:
    """COCO category ids <-> the class indices 0..79 of the reference preprocessing."""

    def __init__(self, categories=CATEGORIES):
        self.names = [name for _, name, _ in categories]
        self._index_of_id = {category_id: index for index, (category_id, _, _) in enumerate(categories)}

    def index(self, category_id: int, where: str) -> int:
        try:
            return self._index_of_id[category_id]
        except KeyError:
            raise AnnotationError(
                f"{where}: unknown category id {category_id}; COCO 2017 uses the 80 ids of "
                "coco_unified.CATEGORIES. Fix or remove that annotation."
            ) from None

    def check_listed(self, listed: Sequence[_Category], file_name: str) -> None:
        """The `categories` of an instances file must be exactly the 80 known ones."""
        found = {category.id: category.name for category in listed}
        expected = {category_id: name for category_id, name in zip(self._index_of_id, self.names)}
        if found != expected:
            differing = sorted(set(found.items()) ^ set(expected.items()))[:5]
            raise AnnotationError(
                f"{file_name}: its `categories` differ from COCO 2017's 80 categories "
                f"(first differences as (id, name): {differing}); use the official annotation files."
            )

    def multi_hot(self, class_indices: Sequence[int]) -> list[int]:
        # A list, not an array: `datasets` encodes a short list of ints faster (measured: 30% of
        # the no_images preparation went to converting arrays).
        vector = [0] * len(self.names)
        for class_index in class_indices:
            vector[class_index] = 1
        return vector


class AnnotationFiles:
    """The JSON files of `annotations/`, read from the annotations zip (its directory read once) or folder."""

    def __init__(self, source: Source):
        self.source = source
        self._members: dict[str, ZipMember] = {}
        if source.zipped:
            self._members = {member.name: member for member in read_source_directory(source)}

    def read(self, file_name: str) -> bytearray:
        if not self.source.zipped:
            return self._read_file(os.path.join(self.source.read_from, file_name))
        member = self._members.get(f"{ANNOTATIONS}/{file_name}")
        if member is None:
            raise ArchiveError(
                f"{self.source.read_from}: entry {ANNOTATIONS}/{file_name} is missing; "
                "use the official annotations zip."
            )
        reader = self.source.reader()
        try:
            return read_member(reader, member, member.end)
        finally:
            reader.close()

    @staticmethod
    def _read_file(path: str) -> bytearray:
        try:
            with open(path, "rb") as file:
                content = bytearray(os.fstat(file.fileno()).st_size)
                file.readinto(content)
            return content
        except FileNotFoundError:
            raise MissingPartError(f"{path} is missing; the annotations folder of COCO 2017 holds it.") from None


# The records below hold no reference cycles: gc=False spares the garbage collector from walking
# the ~1.5 million of them decoded from the train2017 files.


# Values the pool's Arrow columns hold (pool_features: int64 ids, int32 sizes); msgspec rejects
# others while decoding, naming the entry (e.g. `$.images[3].width`).
_Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Size = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class _Image(msgspec.Struct, gc=False):
    id: _Id
    file_name: str
    width: _Size
    height: _Size


class _Caption(msgspec.Struct, gc=False):
    image_id: _Id
    id: _Id
    caption: str


class _Instance(msgspec.Struct, gc=False):
    # Only what labels need: msgspec skips segmentation, bbox, ... without building them.
    image_id: _Id
    id: _Id
    category_id: int


class _Category(msgspec.Struct, gc=False):
    id: int
    name: str


class _CaptionsFile(msgspec.Struct, gc=False):
    images: list[_Image]
    annotations: list[_Caption]


class _InstancesFile(msgspec.Struct, gc=False):
    images: list[_Image]
    annotations: list[_Instance]
    categories: list[_Category]


@dataclasses.dataclass
class ImageRecord:
    """Everything the annotation files say about one image of the pool."""

    image_id: int
    file_name: str
    coco_split: str
    width: int
    height: int
    captions: list[str] = dataclasses.field(default_factory=list)
    caption_ids: list[int] = dataclasses.field(default_factory=list)
    labels: list[int] = dataclasses.field(default_factory=list)  # class indices, ascending
    index: int = -1  # position in the pool sorted by image id


def build_annotation_index(annotations: Source) -> list[ImageRecord]:
    """Every image of train2017 + val2017, sorted by image id, `index` set to that position."""
    with _garbage_collection_paused():
        return _build_annotation_index(annotations)


@contextlib.contextmanager
def _garbage_collection_paused():
    """The index is millions of new objects and no garbage: collections would scan it for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build_annotation_index(annotations: Source) -> list[ImageRecord]:
    categories = CategoryMap()
    files = AnnotationFiles(annotations)
    pool: dict[int, ImageRecord] = {}
    for split in COCO_SPLITS:
        # One big file at a time: the instances JSON is decoded and dropped before the next read.
        captions_file = _decode(files.read(f"captions_{split}.json"), _CaptionsFile, f"captions_{split}.json")
        instances_file = _decode(files.read(f"instances_{split}.json"), _InstancesFile, f"instances_{split}.json")
        records = _index_split(captions_file, instances_file, split, categories)
        clash = next((image_id for image_id in records if image_id in pool), None)
        if clash is not None:
            raise AnnotationError(
                f"image id {clash} is in both train2017 and val2017; use the official annotation files."
            )
        pool.update(records)
    ordered = [pool[image_id] for image_id in sorted(pool)]
    for index, record in enumerate(ordered):
        record.index = index
    return ordered


def _decode(content: bytearray, schema, file_name: str):
    try:
        return msgspec.json.decode(content, type=schema)
    except msgspec.ValidationError as error:
        raise AnnotationError(f"{file_name}: {error}; use the official annotation file.") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(
            f"{file_name}: malformed JSON ({error}); the file is truncated or corrupt, download it again."
        ) from None


def _index_split(
    captions_file: _CaptionsFile, instances_file: _InstancesFile, split: str, categories: CategoryMap
) -> dict[int, ImageRecord]:
    captions_name, instances_name = f"captions_{split}.json", f"instances_{split}.json"
    records: dict[int, ImageRecord] = {}
    id_of_file: dict[str, int] = {}
    for image in captions_file.images:
        if image.id in records:
            raise AnnotationError(f"{captions_name}: image id {image.id} is listed twice; use the official file.")
        shared = id_of_file.setdefault(image.file_name, image.id)
        if shared != image.id:
            raise AnnotationError(
                f"{captions_name}: images {shared} and {image.id} both name the file {image.file_name}; "
                "use the official file."
            )
        records[image.id] = ImageRecord(image.id, image.file_name, split, image.width, image.height)
    instance_image_ids = {image.id for image in instances_file.images}
    if instance_image_ids != records.keys():
        differing = sorted(instance_image_ids ^ records.keys())[:5]
        raise AnnotationError(
            f"{instances_name} and {captions_name} list different images (e.g. ids {differing}); use the official files."
        )
    caption_ids: set[int] = set()
    for caption in captions_file.annotations:
        if caption.id in caption_ids:
            raise AnnotationError(
                f"{captions_name}: caption annotation {caption.id} is listed twice; use the official file."
            )
        caption_ids.add(caption.id)
        record = records.get(caption.image_id)
        if record is None:
            raise AnnotationError(f"{captions_name}: caption {caption.id} refers to unknown image {caption.image_id}.")
        record.captions.append(caption.caption)
        record.caption_ids.append(caption.id)
    categories.check_listed(instances_file.categories, instances_name)
    labels: dict[int, set] = {}
    for instance in instances_file.annotations:
        where = f"{instances_name}, annotation {instance.id}"
        class_index = categories.index(instance.category_id, where)
        if instance.image_id not in records:
            raise AnnotationError(f"{where}: refers to unknown image {instance.image_id}.")
        labels.setdefault(instance.image_id, set()).add(class_index)
    for image_id, class_indices in labels.items():
        records[image_id].labels = sorted(class_indices)
    return records


# ============================================================================= helpers: image listing


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image file to read: a zip entry (member set) or a file in an extracted folder."""

    source: Source
    member: ZipMember | None
    path: str


def list_pool_images(
    records: Sequence[ImageRecord], split_positions: dict[str, list[int]], sources: dict[str, Source]
) -> dict[int, ImageEntry]:
    """Image id -> where its file is, for every image some split holds."""
    used = {records[position].image_id for positions in split_positions.values() for position in positions}
    images: dict[int, ImageEntry] = {}
    for split in COCO_SPLITS:
        listed = [record for record in records if record.coco_split == split]
        images.update(list_images(sources[split], listed, [record for record in listed if record.image_id in used]))
    return images


def list_images(source: Source, listed: Sequence[ImageRecord], wanted: Sequence[ImageRecord]) -> dict[int, ImageEntry]:
    """Image id -> where its file is, for the `wanted` images among those the annotations `listed`.

    A listed image missing from the part is an error; a file no annotation lists is skipped, and
    said so. Images a config leaves out (the unlabeled ones of `labeled`) are neither.
    """
    if source.zipped:
        available = {member.name: member for member in read_source_directory(source)}
    else:
        available = {f"{source.name}/{name}": None for name in os.listdir(source.read_from)}
    listed_names = {f"{source.name}/{record.file_name}" for record in listed}
    missing = sorted(listed_names - available.keys())
    if missing:
        raise ArchiveError(
            f"{source.read_from}: {number_of(len(missing), 'annotated image')} "
            f"{'is' if len(missing) == 1 else 'are'} missing (e.g. {', '.join(missing[:3])}); "
            "the archive or folder is incomplete, download it again."
        )
    unlisted = sorted(available.keys() - listed_names)
    if unlisted:
        logger.warning(
            f"{number_of(len(unlisted), 'file')} in {source.read_from} {'is' if len(unlisted) == 1 else 'are'} "
            f"listed by no annotation: skipped (e.g. {', '.join(unlisted[:3])})"
        )
    entries = {}
    for record in wanted:
        name = f"{source.name}/{record.file_name}"
        path = name if source.zipped else os.path.join(source.read_from, record.file_name)
        entries[record.image_id] = ImageEntry(source, available[name], path)
    return entries


def read_image(entry: ImageEntry, readers: dict[str, ByteRangeReader], run_ends: dict[str, int]) -> bytes:
    if entry.member is None:
        with open(entry.path, "rb") as file:
            content = file.read()
        check_image_bytes(content, entry.path)
        return content
    location = entry.source.read_from
    reader = readers.get(location)
    if reader is None:
        reader = readers[location] = entry.source.reader()
    return bytes(read_member(reader, entry.member, run_ends.get(location, entry.member.end)))


def check_no_shadowing_files(file_names: Iterable[str]) -> None:
    """No file of the current directory may bear a pool image's name.

    An image is yielded as `{"bytes": ..., "path": file name}`, and `datasets.Image` keeps only the
    path when it names an existing file (relative to the current directory) and drops the bytes: a
    prepared dataset would then hold a path instead of that image, and a stream would decode the
    local file in its place, both without a word.
    """
    try:
        here = {entry.name for entry in os.scandir() if entry.is_file()}
    except OSError:  # a folder that cannot be listed may still hold the files
        here = None

    def is_file_here(name: str) -> bool:
        # Not os.path.dirname: once the module has streamed, datasets' version parses each name as
        # a URL (measured: 0.75 s for the pool's 123,287 names, 0.01 s this way).
        return name in here if here is not None and "/" not in name and os.sep not in name else os.path.isfile(name)

    shadowed = [name for name in file_names if is_file_here(name)]
    if shadowed:
        raise ShadowedImageError(
            f"{os.getcwd()}: holds {number_of(len(shadowed), 'file')} named like pool images (e.g. {shadowed[0]}); "
            "datasets would store or decode such a file in place of the COCO image of that name. Run from a "
            "folder without them, or move them away."
        )


def check_image_bytes(content: bytes, path: str) -> None:
    """An extracted image must not be empty, and a JPEG or PNG must end like one: a truncated copy fails here.

    A zip entry has its CRC for this; a loose file has only its structure. The end marker may be
    followed by padding, so it is looked for near the end (a JPEG's compressed data cannot hold
    it). Other formats pass: one official train2017 file is not a real JPEG (docs/FACTS.md §1).
    """
    if not content:
        raise ArchiveError(f"{path}: empty (0 bytes); extract it again from the official zip.")
    for kind, start, end in _IMAGE_FORMATS:
        if content.startswith(start) and end not in content[-_IMAGE_END_SLACK:]:
            raise ArchiveError(
                f"{path}: a {kind} without its end marker ({len(content):,} bytes); the file is truncated, "
                "extract it again from the official zip."
            )


# (format, first bytes, end marker) of the images COCO holds: JPEGs, and a few PNGs named .jpg.
_IMAGE_FORMATS = (("JPEG", b"\xff\xd8", b"\xff\xd9"), ("PNG", b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"))
_IMAGE_END_SLACK = 1024


def read_images_ahead(entries: Sequence[ImageEntry], run_ends: dict[str, int], batches_ahead: int) -> Iterator[bytes]:
    """The content of each entry in order, read by one thread `batches_ahead` batches ahead.

    Receiving and inflating entries (the socket and libdeflate release the GIL) then overlaps with
    decoding and writing the rows before them (PIL and Arrow release it too). ISA-L, which inflated
    image entries until libdeflate did (ONE_SHOT_INFLATE_MAX), releases it for part of its work
    only (2 threads inflating 1,200 JPEG entries: 0.61 s one after the other, 0.39 s side by side).
    """
    readers: dict[str, ByteRangeReader] = {}

    def read_batch(batch: Sequence[ImageEntry]) -> list[bytes]:
        return [read_image(entry, readers, run_ends) for entry in batch]

    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    # One thread: the entries of an archive are read in order, through one reader.
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="coco-unified-read")
    try:
        for batch in _batches_of_bytes(entries, READ_AHEAD_BATCH_BYTES):
            pending.append(executor.submit(read_batch, batch))
            if len(pending) > batches_ahead:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True)
        for reader in readers.values():
            reader.close()


def _batches_of_bytes(entries: Sequence[ImageEntry], batch_bytes: int) -> Iterator[list[ImageEntry]]:
    """Consecutive entries, each batch as few as hold `batch_bytes` of archive (one file: one entry)."""
    batch: list[ImageEntry] = []
    size = 0
    for entry in entries:
        batch.append(entry)
        size += entry.member.end - entry.member.start if entry.member is not None else batch_bytes
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# ============================================================================= helpers: sidecars
#
# A sidecar adds per-image vectors to the pool: a Parquet file with `image_id` (int64, each image
# once) and one or more fixed-size list columns (float32 or float16; integer counts such as
# bag-of-words too), one vector per image, plus optional `caption_<column>` columns (a list of
# vectors per image, one per caption). The schema metadata holds, under a key `coco_unified.<kind>`,
# the provenance as JSON: `features` (column -> {"dim", "store"}), `images`, `skipped_images`
# ({"image_id", "file_name", "error"} of each image left out as undecodable), and how the vectors
# were made. It is checked when written and when read: each image once, every pool image present
# (or named as skipped), the declared dimension, finite values.


@dataclasses.dataclass(frozen=True)
class SidecarColumn:
    """One dataset column joined from a sidecar by image_id, and what to tell a user whose sidecar is wrong."""

    name: str  # the column, in the sidecar and in the dataset
    path: str  # as the user gave it (absolute when local)
    dim: int | None  # fixed by the format (Doc2Vec) or read from the sidecar's schema
    make: str  # the command that makes the sidecar
    point: str  # how to pass another file
    drop: str  # how to build without the column

    @property
    def remedy(self) -> str:
        return f"rebuild it with `{self.make}`, {self.point}, or {self.drop}"

    def missing_error(self) -> SidecarError:
        return SidecarError(
            f"{_sidecar_words(self.name)} sidecar {self.path} not found. Create it with `{self.make}`, "
            f"{self.point}, or {self.drop} to build without the {self.name} column."
        )


def doc2vec_column(path: str | None) -> SidecarColumn:
    path = os.fspath(path or DOC2VEC_SIDECAR)
    return SidecarColumn(
        "doc2vec",
        path,
        DOC2VEC_DIM,
        DOC2VEC_COMMAND.format(path=path),
        "point doc2vec_path at it",
        "pass doc2vec=False",
    )


def feature_column(name: str, path: str, storage_options: dict | None = None) -> SidecarColumn:
    """A column of `feature_sidecars`; its dimension is read from the sidecar's footer (no vector is read)."""
    column = SidecarColumn(
        name,
        path,
        None,
        FEATURES_COMMAND.format(path=path),
        f"fix feature_sidecars[{name!r}]",
        f"leave {name!r} out of feature_sidecars",
    )
    schema = read_sidecar_schema(path, storage_options, column.missing_error(), column.remedy)
    kind = _vector_type(schema, name, path, column.remedy)
    return dataclasses.replace(column, dim=kind.list_size)


def write_feature_sidecar(
    path: str,
    image_ids: Sequence[int],
    features: dict[str, np.ndarray],
    provenance: dict,
    store: str = "float32",
    caption_features: dict[str, Sequence[np.ndarray]] | None = None,
    metadata_key: bytes = FEATURES_METADATA_KEY,
    remedy: str = f"rebuild it with `{FEATURES_COMMAND.format(path='PATH')}`",
) -> None:
    """Write a sidecar: one row per image, a fixed-size column per feature, provenance in the metadata.

    `store` is the value type on disk (float32, or float16 to halve a 4096-d pool's 2 GB).
    """
    if store not in FEATURE_STORE_TYPES:
        raise SidecarError(f"{path}: store={store!r}; pass one of {', '.join(FEATURE_STORE_TYPES)}.")
    numpy_type = np.dtype(FEATURE_STORE_TYPES[store].to_pandas_dtype())
    image_ids = np.asarray(image_ids, dtype=np.int64)
    _check_unique(image_ids, path, remedy)
    columns, fields, described = [pa.array(image_ids)], [pa.field("image_id", pa.int64(), nullable=False)], {}
    for name, matrix in features.items():
        matrix = np.asarray(matrix)
        _check_matrix(matrix, len(image_ids), matrix.shape[-1] if matrix.ndim == 2 else -1, name, path, remedy)
        stored = _stored(matrix, numpy_type, name, path)
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(stored.reshape(-1)), stored.shape[1]))
        fields.append(pa.field(name, columns[-1].type, nullable=False))
        described[name] = {"dim": int(stored.shape[1]), "store": store}
    for name, per_image in (caption_features or {}).items():
        column = _caption_column([_stored(np.asarray(rows), numpy_type, name, path) for rows in per_image], name, path)
        if len(column) != len(image_ids):
            raise SidecarError(f"{path}: {len(column):,} images have {name}, expected {len(image_ids):,}.")
        columns.append(column)
        fields.append(pa.field(name, column.type))
        described[name] = {"dim": column.type.value_type.list_size, "store": store}
    metadata = {**provenance, "features": described, "images": len(image_ids)}
    schema = pa.schema(fields, metadata={metadata_key: json.dumps(metadata, sort_keys=True)})
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), path, row_group_size=SIDECAR_ROW_GROUP_ROWS)


def _stored(matrix: np.ndarray, numpy_type: np.dtype, name: str, path: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # an overflow is reported right below, as an error
        stored = matrix.astype(numpy_type)
    if np.isfinite(matrix).all() and not np.isfinite(stored).all():
        raise SidecarError(f"{path}: {name} holds values beyond {numpy_type}'s range; store them as float32.")
    return stored


def _caption_column(per_image: list[np.ndarray], name: str, path: str) -> pa.Array:
    """list<fixed_size_list[dim]> per image, built from one flat buffer (no Python float per value)."""
    dims = {rows.shape[1] for rows in per_image if rows.ndim == 2}
    if len(dims) > 1 or any(rows.ndim != 2 for rows in per_image):
        raise SidecarError(f"{path}: {name} must be one matrix (captions x dim) per image, all of one dim.")
    if not dims:
        raise SidecarError(f"{path}: {name} has no image; pass a matrix (captions x dim) per image.")
    (dim,) = dims
    for rows in per_image:
        _check_matrix(rows, len(rows), dim, name, path, "rebuild it")
    offsets = np.concatenate([[0], np.cumsum([len(rows) for rows in per_image])]).astype(np.int32)
    flat = np.concatenate([rows.reshape(-1) for rows in per_image])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))


def _check_matrix(matrix: np.ndarray, rows: int, dim: int, name: str, path: str, remedy: str) -> None:
    if matrix.shape != (rows, dim):
        raise SidecarError(f"{path}: {name} has shape {matrix.shape}, expected ({rows}, {dim}); {remedy}.")
    if dim < 1:
        raise SidecarError(f"{path}: {name} has no value in a row (shape {matrix.shape}); {remedy}.")
    if not np.isfinite(matrix).all():
        raise SidecarError(f"{path}: {name} holds NaN or infinite values; {remedy}.")


def _check_unique(image_ids: np.ndarray, path: str, remedy: str) -> None:
    unique_ids, counts = np.unique(image_ids, return_counts=True)
    if (counts > 1).any():
        raise SidecarError(f"{path}: image ids {unique_ids[counts > 1][:5].tolist()} appear more than once; {remedy}.")


def _sidecar_words(column: str) -> str:
    return "Doc2Vec" if column == "doc2vec" else column


# What an unreachable sidecar's error advises.
_SIDECAR_ADVICE = "Check the network connection, or copy the sidecar to a local file and pass its path instead."


def read_sidecar_schema(
    path: str, storage_options: dict | None = None, missing: SidecarError | None = None, remedy: str = "rebuild it"
) -> pa.Schema:
    """The sidecar's schema and metadata, from its footer only."""
    missing = missing or SidecarError(f"{path} not found; {remedy}.")
    try:
        with open_location(path, storage_options, missing, _SIDECAR_ADVICE) as file:
            return pq.read_schema(file)
    except (pa.ArrowInvalid, OSError) as error:
        raise SidecarError(f"{path}: not a readable Parquet file ({error}); {remedy}.") from None


def sidecar_provenance(schema: pa.Schema) -> dict:
    """How the vectors were made: the JSON under the file's `coco_unified.<kind>` metadata key ({} if none)."""
    for key, value in (schema.metadata or {}).items():
        if key.startswith(SIDECAR_METADATA_PREFIX):
            return json.loads(value)
    return {}


def _vector_type(schema: pa.Schema, name: str, path: str, remedy: str, dim: int | None = None) -> pa.FixedSizeListType:
    """The fixed-size list type of column `name`, of `dim` values (None: any); a missing column names the ones there are."""
    vector_columns = [
        field.name for field in schema if field.name != "image_id" and pa.types.is_fixed_size_list(field.type)
    ]
    if name not in schema.names:
        closest = difflib.get_close_matches(name, vector_columns, n=1)
        raise SidecarError(
            f"{path}: has no column {name!r}{f' (did you mean {closest[0]!r}?)' if closest else ''}; "
            f"its vector columns are {vector_columns}. Name one of them, or {remedy}."
        )
    kind = schema.field(name).type
    if not pa.types.is_fixed_size_list(kind) or not (
        pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)
    ):
        raise SidecarError(f"{path}: column {name} is {kind}, not a fixed-size list of numbers; {remedy}.")
    if "image_id" not in schema.names or schema.field("image_id").type != pa.int64():
        raise SidecarError(f"{path}: needs an int64 column image_id keying its rows; {remedy}.")
    if dim is not None and kind.list_size != dim:
        raise SidecarError(
            f"{path}: {_sidecar_words(name)} vectors are {kind.list_size}-d, expected {dim}-d; {remedy}."
        )
    return kind


def _check_no_null(vectors: pa.Array, image_ids: np.ndarray, name: str, path: str, remedy: str) -> None:
    """`vectors` (the rows of `image_ids`) hold no null row; the error names the images that do."""
    if vectors.null_count:
        null_ids = image_ids[np.flatnonzero(vectors.is_null().to_numpy(zero_copy_only=False))]
        raise SidecarError(
            f"{path}: the {_sidecar_words(name)} row for image_id {null_ids[0]} is null "
            f"({number_of(len(null_ids), 'null row')}: image ids {null_ids[:5].tolist()}); {remedy}."
        )


def read_sidecar_columns(
    path: str,
    dims: dict[str, int | None],
    image_ids: Sequence[int] | None = None,
    storage_options: dict | None = None,
    remedy: str = "rebuild it",
    missing: SidecarError | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Columns of a sidecar as float32 matrices in the order of `image_ids` (default: the file's; an id
    may repeat), read in one pass, and the sidecar's provenance.

    `dims` names the columns and the dimension each must have (None: any). Checks: each column is
    a fixed-size list of that dimension, values are finite, each image is listed once, and every
    image of `image_ids` is there (an image skipped as undecodable when the sidecar was made is
    named, with its file and error).
    """
    schema = read_sidecar_schema(path, storage_options, missing, remedy)
    for name, dim in dims.items():
        _vector_type(schema, name, path, remedy, dim)
    with open_location(path, storage_options, None, _SIDECAR_ADVICE) as file:
        table = pq.read_table(file, columns=["image_id", *dims])
    file_ids = table.column("image_id").to_numpy()
    _check_unique(file_ids, path, remedy)
    provenance = sidecar_provenance(table.schema)
    rows = None if image_ids is None else _rows_of(file_ids, image_ids, provenance, path, dims, remedy)
    matrices = {}
    for name in dims:
        column = table.column(name).combine_chunks()
        _check_no_null(column, file_ids, name, path, remedy)
        values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
        # float16 and integer vectors become float32: one type for every joined column
        matrix = values[rows] if rows is not None else values
        matrix = matrix.astype(np.float32, copy=False)
        _check_matrix(matrix, len(matrix), column.type.list_size, name, path, remedy)
        matrices[name] = matrix
    return matrices, provenance


def _rows_of(
    file_ids: np.ndarray, image_ids: Sequence[int], provenance: dict, path: str, columns: Iterable[str], remedy: str
) -> np.ndarray:
    """The sidecar row of each of `image_ids`; a missing image is an error naming it."""
    row_of = {image_id: row for row, image_id in enumerate(file_ids.tolist())}
    missing = [image_id for image_id in image_ids if image_id not in row_of]
    if missing:
        words = " and ".join(_sidecar_words(name) for name in columns)
        skipped = {entry["image_id"]: entry for entry in provenance.get("skipped_images", [])}
        undecodable = [skipped[image_id] for image_id in missing if image_id in skipped]
        if undecodable:
            first = undecodable[0]
            raise SidecarError(
                f"{path}: no {words} vector for {number_of(len(missing), 'image')} of the pool (e.g. ids "
                f"{missing[:5]}); {len(undecodable):,} of them could not be decoded when it was made, e.g. image "
                f"{first['image_id']} ({first.get('file_name')}: {first.get('error')}). Replace the image and "
                f"rebuild the sidecar, or build without the column ({remedy})."
            )
        raise SidecarError(
            f"{path}: no {words} vector for {number_of(len(missing), 'image')} of the pool (e.g. ids "
            f"{missing[:5]}); it was built for other data. {remedy[0].upper()}{remedy[1:]}."
        )
    unused = len(row_of) - len(set(image_ids))
    if unused:
        logger.info(
            f"{path}: {number_of(unused, 'vector')} {'belongs' if unused == 1 else 'belong'} to images outside "
            "this pool: not used"
        )
    return np.fromiter((row_of[image_id] for image_id in image_ids), dtype=np.int64, count=len(image_ids))


def read_feature_sidecar(
    path: str,
    feature: str,
    image_ids: Sequence[int] | None = None,
    dim: int | None = None,
    storage_options: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """One column of a sidecar as float32 rows in the order of `image_ids` (default: the file's), and its provenance."""
    remedy = f"rebuild it with `{FEATURES_COMMAND.format(path=path)}`"
    matrices, provenance = read_sidecar_columns(path, {feature: dim}, image_ids, storage_options, remedy)
    return matrices[feature], provenance


def iter_sidecar_rows(
    path: str, column: SidecarColumn, image_ids: Sequence[int], storage_options: dict | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The vectors of `image_ids` (distinct) from one sidecar column, one row group at a time, as
    (positions in `image_ids`, ascending; their float32 rows): a 123,287 x 4096 column is written
    where it goes without ever being in memory whole.

    The checks are read_sidecar_columns': the column's type and dimension, each image once, every
    one of `image_ids` there, no null, finite values.
    """
    schema = read_sidecar_schema(path, storage_options, column.missing_error(), column.remedy)
    kind = _vector_type(schema, column.name, path, column.remedy, column.dim)
    with open_location(path, storage_options, None, _SIDECAR_ADVICE) as file:
        # pre_buffer reads ahead every row group: iterating a 123,287 x 4096 float16 column peaked at
        # 1,063 MB resident with it, 262 MB without (measured), at the same speed.
        parquet = pq.ParquetFile(file, pre_buffer=False)
        file_ids = parquet.read(columns=["image_id"]).column("image_id").to_numpy()
        _check_unique(file_ids, path, column.remedy)
        rows = _rows_of(file_ids, image_ids, sidecar_provenance(schema), path, [column.name], column.remedy)
        by_row = np.argsort(rows)  # positions in the order of the file's rows
        sorted_rows = rows[by_row]
        start = 0
        for batch in parquet.iter_batches(batch_size=SIDECAR_ROW_GROUP_ROWS, columns=[column.name]):
            vectors = batch.column(0)
            _check_no_null(vectors, file_ids[start : start + len(vectors)], column.name, path, column.remedy)
            low, high = np.searchsorted(sorted_rows, [start, start + len(vectors)])
            if high > low:
                values = vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), kind.list_size)
                chosen = values[sorted_rows[low:high] - start].astype(np.float32)
                _check_matrix(chosen, len(chosen), kind.list_size, column.name, path, column.remedy)
                positions = by_row[low:high]
                order = np.argsort(positions)
                yield positions[order], chosen[order]
            start += len(vectors)


def read_caption_features(path: str, feature: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The image ids and, per image, its captions' vectors (float32) of a `caption_<feature>` column."""
    table = pq.read_table(path, columns=["image_id", feature])
    column = table.column(feature).combine_chunks()
    if not (pa.types.is_list(column.type) and pa.types.is_fixed_size_list(column.type.value_type)):
        raise SidecarError(f"{path}: column {feature} is {column.type}, not a list of vectors per image.")
    dim = column.type.value_type.list_size
    flat = column.flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    _check_matrix(flat, len(flat), dim, feature, path, "rebuild it")
    offsets = column.offsets.to_numpy()
    return table.column("image_id").to_numpy(), [flat[start:end] for start, end in zip(offsets[:-1], offsets[1:])]


def write_doc2vec_sidecar(
    path: str,
    image_ids: Sequence[int],
    vectors: np.ndarray,
    provenance: dict,
    caption_vectors: Sequence[np.ndarray] | None = None,
) -> None:
    """Write the Doc2Vec sidecar the builder reads: column `doc2vec`, optionally `caption_doc2vec`."""
    column = doc2vec_column(path)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != DOC2VEC_DIM:
        raise SidecarError(
            f"{path}: Doc2Vec vectors have shape {vectors.shape}, expected ({len(image_ids)}, {DOC2VEC_DIM}); "
            f"rebuild them with a {DOC2VEC_DIM}-d model."
        )
    captions = None
    if caption_vectors is not None:
        captions = {
            "caption_doc2vec": [np.asarray(rows, np.float32).reshape(-1, DOC2VEC_DIM) for rows in caption_vectors]
        }
    write_feature_sidecar(
        path, image_ids, {"doc2vec": vectors}, provenance, "float32", captions, DOC2VEC_METADATA_KEY, column.remedy
    )


def missing_sidecar_error(path: str) -> SidecarError:
    return doc2vec_column(path).missing_error()


def read_doc2vec_sidecar(
    path: str, image_ids: Sequence[int], storage_options: dict | None = None
) -> tuple[np.ndarray, dict]:
    """The vectors of `image_ids` (float32, in that order; an id may repeat) and the sidecar's provenance."""
    column = doc2vec_column(path)
    matrices, provenance = read_sidecar_columns(
        path, {"doc2vec": DOC2VEC_DIM}, image_ids, storage_options, column.remedy, column.missing_error()
    )
    return matrices["doc2vec"], provenance


def read_doc2vec_provenance(path: str, storage_options: dict | None = None) -> dict:
    """How the sidecar's vectors were made (model, tokenizer, parameters, versions), from its metadata only."""
    column = doc2vec_column(path)
    return sidecar_provenance(read_sidecar_schema(path, storage_options, column.missing_error(), column.remedy))


# ============================================================================= helpers: shard planning


@dataclasses.dataclass
class Shard:
    """The rows one generator call yields, in order, with where their images and vectors are."""

    records: list[ImageRecord]
    images: list[ImageEntry] | None  # aligned with records; None when there is no image column
    archive_order: bool = False  # images in the order of their archive: one read runs through them
    # column -> its vectors of these rows (aligned with records), for each column joined from a sidecar
    vectors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def run_ends(self) -> dict[str, int]:
        """Per archive, where the one request reading this shard's entries may stop.

        Shards in pool order jump around their archive (local files only): each entry is its own run.
        """
        ends: dict[str, int] = {}
        if not self.archive_order:
            return ends
        for entry in self.images or []:
            if entry.member is not None:
                location = entry.source.read_from
                ends[location] = max(ends.get(location, 0), entry.member.end)
        return ends


def plan_shards(
    records: Sequence[ImageRecord], images: dict[int, ImageEntry] | None, num_shards: int, archive_order: bool
) -> list[Shard]:
    """Divide the pool into shards.

    Without `archive_order` the shards are consecutive runs of the pool in image-id order (rows
    land in the prepared dataset at their `index`). With it (streaming images) each shard is a
    run of whole entries of one archive in archive order, so it is read by one sequential request;
    the shards of an archive are about equal in bytes and the archives share `num_shards` by their
    images (apportion).
    """
    archive_order = archive_order and images is not None
    if not archive_order:
        groups = _split_evenly(range(len(records)), [1] * len(records), num_shards)
    else:
        by_part: dict[str, list[int]] = {}
        for position, record in enumerate(records):
            by_part.setdefault(images[record.image_id].source.name, []).append(position)
        groups = []
        shares = apportion([len(positions) for positions in by_part.values()], num_shards)
        for positions, share in zip(by_part.values(), shares):
            entries = [images[records[position].image_id] for position in positions]
            order = sorted(
                range(len(positions)), key=lambda i: entries[i].member.start if entries[i].member else entries[i].path
            )
            weights = [entries[i].member.end - entries[i].member.start if entries[i].member else 1 for i in order]
            groups += _split_evenly([positions[i] for i in order], weights, share)
    return [
        Shard(
            records=[records[position] for position in group],
            images=None if images is None else [images[records[position].image_id] for position in group],
            archive_order=archive_order,
        )
        for group in groups
    ]


def apportion(sizes: Sequence[int], total: int) -> list[int]:
    """`total` parts shared in proportion to `sizes` (largest remainders), each share at least 1 and
    at most its size: the shares add up to `total` unless there are more sizes, or fewer items."""
    whole = sum(sizes)
    quotas = [total * size / whole for size in sizes]
    shares = [min(size, max(1, int(quota))) for size, quota in zip(sizes, quotas)]
    while sum(shares) > max(total, len(sizes)):  # the ones raised to 1 took more than the total
        over = [i for i, share in enumerate(shares) if share > 1]
        shares[max(over, key=lambda i: shares[i] - quotas[i])] -= 1
    while sum(shares) < min(total, whole):
        short = [i for i, size in enumerate(sizes) if shares[i] < size]
        shares[max(short, key=lambda i: quotas[i] - shares[i])] += 1
    return shares


def _split_evenly(positions: Sequence[int], weights: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Consecutive chunks of `positions` holding about the same total weight; none empty."""
    cumulative = np.cumsum(weights)
    cuts = np.searchsorted(cumulative, cumulative[-1] * np.arange(1, num_chunks) / num_chunks, side="right")
    return [chunk.tolist() for chunk in np.split(np.asarray(positions, dtype=np.int64), cuts) if len(chunk)]
