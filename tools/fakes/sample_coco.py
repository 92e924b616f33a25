"""Write synthetic archives shaped like the MS COCO 2017 downloads, for tests and benchmarks.

    coco-unified sample OUT_DIR [--scale F] [--seed S] [--image-size WxH [--jpeg-quality Q]]
    (or generate(out_dir, scale, seed, RealSizeImages(width, height, quality)))

OUT_DIR receives the three files of the official download, under the same names and layout:

- ``train2017.zip``: the entry ``train2017/``, then one ``train2017/<12-digit id>.jpg`` per image.
  Entries come in random order, a few carry Zip64 extra fields, and the archive ends with Zip64
  end-of-central-directory records, as the real (> 4 GiB, 118,288-entry) archive does.
- ``val2017.zip``: the same for ``val2017/``, written through a stream that cannot seek, so every
  entry carries a data descriptor (flag bit 3, sizes after the data).
- ``annotations_trainval2017.zip``: ``annotations/{instances,captions,person_keypoints}_`` +
  ``{train,val}2017.json`` with the schema of the real files.

Each image zip also holds one image that no JSON lists. Images are 16-40 px pictures drawn from
their id (the id is also in a JPEG comment, so no two files share bytes); a few are greyscale and
one per split is a PNG behind a ``.jpg`` name. Ids are drawn at random, but each of the Karpathy
lists the project ships (data/karpathy_*_image_ids.txt) gives its share of the pool's ids, so the
``karpathy`` protocol has all its splits at any scale.

With real-size images (``RealSizeImages``, e.g. 640x427 at quality 90: ~160 KB, the size of an average COCO image) every picture has that size,
smooth colour fields plus grain, so that JPEG keeps about as many bytes as it does of a photo, and
every image entry is deflated, as in the official archives.

Every real figure (images, captions, instance annotations, images without instances per split,
label-matrix ones of the pool; ``REAL_SPLIT_COUNTS``) becomes ``round(real * scale)``, raised where
needed so that every corner case exists at any scale; scale 1.0 reproduces the real counts.
Equal arguments give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import io
import json
import logging
import random
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from coco_unified import (
    ANNOTATIONS,
    ARCHIVES,
    CATEGORIES,
    COCO_SPLITS,
    KARPATHY_ID_LISTS,
    KARPATHY_LIST_SIZE,
    REAL_COUNTS,
    shipped_id_lists,
)
from tools.lib.progress import Progress

log = logging.getLogger(__name__)

SPLITS = COCO_SPLITS
ANNOTATIONS_ARCHIVE = ARCHIVES[ANNOTATIONS].file_name

# What the official annotations_trainval2017.zip holds (http://images.cocodataset.org, counted
# from its JSON files): val2017's figures, and the pool's beyond coco_unified.REAL_COUNTS.
# train2017 holds the rest of the pool.
REAL_VAL_COUNTS = {"images": 5_000, "captions": 25_014, "instances": 36_781, "unlabeled": 48}
REAL_POOL_INSTANCES = 896_782
REAL_POOL_COUNTS = {
    "images": REAL_COUNTS.images,
    "captions": REAL_COUNTS.captions,
    "instances": REAL_POOL_INSTANCES,
    "unlabeled": REAL_COUNTS.images - REAL_COUNTS.labeled,
}
REAL_SPLIT_COUNTS = {
    "train2017": {name: REAL_POOL_COUNTS[name] - REAL_VAL_COUNTS[name] for name in REAL_POOL_COUNTS},
    "val2017": REAL_VAL_COUNTS,
}
# Distinct (image, category) pairs over the pool, the ones of its label matrix.
REAL_POOL_LABEL_ONES = 357_627
# COCO's ids go up to 581,929, which caps how far the pool can be scaled up.
MAX_IMAGE_ID = 581_929
MAX_SCALE = 4.0
# Id ranges about as wide as COCO's, so that sample ids look like real ones.
CAPTION_ID_RANGE = 830_000
INSTANCE_ID_RANGE = 2_300_000

# Minimums that keep every corner case present however small the scale.
MIN_IMAGES = 10
MIN_UNLABELED = 2
MIN_GREYSCALE = 3
PNG_PER_SPLIT = 1
BASE_CAPTIONS = 5
MIN_EXTRA_CAPTIONS = 3  # one image with 6 captions and one with 7
MIN_ZIP64_ENTRIES = 3
MIN_KARPATHY_IDS = 5  # of each Karpathy list (validation, test), so that its splits exist

GREYSCALE_SHARE = 0.002
DEFLATED_SHARE = 0.1
ZIP64_SHARE = 0.01
CROWD_SHARE = 0.01
KEYPOINT_SHARE = 0.1  # of person annotations; the real file lists them all, tests need only some
PERSON_WEIGHT = 25.0  # puts a person in about half of the images, as in COCO

MIN_SIDE, MAX_SIDE = 16, 40
# Real-size pictures: colour fields of this many pixels per cell plus Gaussian grain of this
# standard deviation come out at ~160 KB as 640x427 JPEGs of quality 90 (measured), about the
# average COCO image (19.3 GB / 118,287). A pool of this many distinct pictures is encoded once
# and each file is one of them with its own comment: the per-image cost is a copy, not an encode.
REAL_SIZE_CELL = 8
REAL_SIZE_GRAIN = 17.0
REAL_SIZE_POOL = 256
# Polygon vertices per instance, log-normal; the median is tuned so that instances_train2017.json
# comes out near the real 448 MB at scale 1.0.
MEDIAN_POLYGON_POINTS = 26
MAX_POLYGON_POINTS = 300
INSTANCE_CHUNK = 20_000
CAPTION_CHUNK = 50_000

JSON_SEPARATORS = (",", ": ")  # the spacing of the real annotation files

CATEGORY_IDS = np.array([category_id for category_id, _, _ in CATEGORIES])
CATEGORY_NAMES = tuple(name for _, name, _ in CATEGORIES)
CATEGORY_NAME_BY_ID = {category_id: name for category_id, name, _ in CATEGORIES}
PERSON_ID = next(category_id for category_id, name, _ in CATEGORIES if name == "person")

INFO = {
    "description": "Synthetic sample shaped like the COCO 2017 Dataset (tools/fakes/sample_coco.py)",
    "url": "http://cocodataset.org",
    "version": "1.0",
    "year": 2017,
    "contributor": "COCO Consortium",
    "date_created": "2017/09/01",
}
# COCO's eight licences, ids 1..8 in this order.
LICENSE_URLS_AND_NAMES = (
    ("http://creativecommons.org/licenses/by-nc-sa/2.0/", "Attribution-NonCommercial-ShareAlike License"),
    ("http://creativecommons.org/licenses/by-nc/2.0/", "Attribution-NonCommercial License"),
    ("http://creativecommons.org/licenses/by-nc-nd/2.0/", "Attribution-NonCommercial-NoDerivs License"),
    ("http://creativecommons.org/licenses/by/2.0/", "Attribution License"),
    ("http://creativecommons.org/licenses/by-sa/2.0/", "Attribution-ShareAlike License"),
    ("http://creativecommons.org/licenses/by-nd/2.0/", "Attribution-NoDerivs License"),
    ("http://flickr.com/commons/usage/", "No known copyright restrictions"),
    ("http://www.usa.gov/copyright.shtml", "United States Government Work"),
)
LICENSES = [
    {"url": url, "id": license_id, "name": name}
    for license_id, (url, name) in enumerate(LICENSE_URLS_AND_NAMES, start=1)
]
PERSON_KEYPOINTS_CATEGORY = {
    "supercategory": "person",
    "id": PERSON_ID,
    "name": "person",
    "keypoints": [
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ],
    "skeleton": [
        [16, 14],
        [14, 12],
        [17, 15],
        [15, 13],
        [12, 13],
        [6, 12],
        [7, 13],
        [6, 7],
        [6, 8],
        [7, 9],
        [8, 10],
        [9, 11],
        [2, 3],
        [1, 2],
        [1, 3],
        [2, 4],
        [3, 5],
        [4, 6],
        [5, 7],
    ],
}
KEYPOINT_COUNT = len(PERSON_KEYPOINTS_CATEGORY["keypoints"])

# Caption vocabulary. The templates cover commas, "'s", quotes and non-ASCII text.
CAPTION_TEMPLATES = (
    "A {adjective} {thing} {pose} {preposition} the {place}.",
    "A {thing} and a {other} {preposition} the {place}.",
    "There is a {thing} {pose} {preposition} a {place}.",
    "A {thing}, a {other} and a {third} {preposition} the {place}.",
    "A {person}'s {thing} {pose} {preposition} the {place}.",
    'A sign that says "{sign}" {preposition} a {thing}.',
    "A {adjective} {thing} {pose} outside a {foreign_place}.",
)
ADJECTIVES = ("small", "large", "white", "black", "red", "old", "young", "wooden", "brown", "big")
POSES = ("sitting", "standing", "parked", "lying", "resting", "waiting", "shown", "placed")
PREPOSITIONS = ("on", "in", "near", "next to", "under", "in front of", "on top of", "beside")
PLACES = (
    "table",
    "street",
    "field",
    "kitchen",
    "beach",
    "room",
    "grass",
    "road",
    "counter",
    "window",
    "sidewalk",
    "park",
    "city street",
    "living room",
)
PEOPLE = ("man", "woman", "boy", "girl", "child", "person")
SIGN_WORDS = ("stop", "open", "sale", "welcome", "one way")
FOREIGN_PLACES = ("café", "crêperie", "bodega in São Paulo", "Bäckerei")
ARTICLE_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def break_line(text: str) -> str:
    middle = text.find(" ", len(text) // 2)
    return text if middle < 0 else text[:middle] + "\n" + text[middle + 1 :]


# (probability, edit), applied in this order: the untidiness of real COCO captions.
CAPTION_QUIRKS = (
    (0.20, lambda text: text.removesuffix(".")),  # no final period
    (0.02, lambda text: text.removesuffix(".") + " ."),  # a space before the period
    (0.05, lambda text: text[0].lower() + text[1:]),  # lower-case start
    (0.01, lambda text: text.replace(" ", "  ", 1)),  # a double space
    (0.003, break_line),  # a newline inside
    (0.05, lambda text: text + " "),  # trailing space
    (0.01, lambda text: " " + text),  # leading space
)


class ImageKind(enum.IntEnum):
    RGB_JPEG = 0
    GREY_JPEG = 1
    PNG_NAMED_JPG = 2


@dataclasses.dataclass(frozen=True)
class SplitCounts:
    images: int
    captions: int
    instances: int
    unlabeled: int
    label_ones: int


@dataclasses.dataclass
class Split:
    """Which images, labels, annotations and zip entries one split has, drawn before any file is
    written; pixels, geometry and caption text are drawn while writing."""

    name: str
    # One row per image file; the last row is the file in the zip that no JSON lists.
    file_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    kinds: np.ndarray
    deflated: np.ndarray
    zip64: np.ndarray
    archive_order: np.ndarray  # rows in zip-entry order
    captions_per_image: np.ndarray
    caption_ids: np.ndarray
    # Label-matrix ones: (row of the image, category id).
    pair_image: np.ndarray
    pair_category: np.ndarray
    # Instance annotations in file order.
    instance_image: np.ndarray
    instance_category: np.ndarray
    instance_ids: np.ndarray
    instance_crowd: np.ndarray
    keypoint_ids: frozenset[int]

    @property
    def image_ids(self) -> np.ndarray:
        """Ids of the images the JSON files list, in their order."""
        return self.file_ids[:-1]

    def written_counts(self) -> SplitCounts:
        return SplitCounts(
            images=len(self.image_ids),
            captions=int(self.captions_per_image.sum()),
            instances=len(self.instance_ids),
            unlabeled=len(self.image_ids) - len(np.unique(self.pair_image)),
            label_ones=len(self.pair_image),
        )


# ---------------------------------------------------------------------------------------------
# Counts


def plan_counts(scale: float) -> dict[str, SplitCounts]:
    """Per split: round(real * scale), raised to the minimums the corner cases need."""
    sizes = {}
    for split, real in REAL_SPLIT_COUNTS.items():
        images = max(round(real["images"] * scale), MIN_IMAGES)
        unlabeled = max(round(real["unlabeled"] * scale), MIN_UNLABELED)
        captions = max(round(real["captions"] * scale), BASE_CAPTIONS * images + MIN_EXTRA_CAPTIONS)
        instances = max(round(real["instances"] * scale), images - unlabeled)
        sizes[split] = (images, captions, instances, unlabeled)
    labeled = {split: images - unlabeled for split, (images, _, _, unlabeled) in sizes.items()}
    ones = label_ones_per_split(
        round(REAL_POOL_LABEL_ONES * scale), labeled, {split: size[2] for split, size in sizes.items()}
    )
    return {split: SplitCounts(*sizes[split], label_ones=ones[split]) for split in SPLITS}


def label_ones_per_split(pool_ones: int, labeled: dict[str, int], instances: dict[str, int]) -> dict[str, int]:
    """Shares the pool's ones in proportion to labeled images, within what each split allows:
    at least one category per labeled image, and each pair needs an instance of its own."""
    train_ones = round(pool_ones * labeled["train2017"] / sum(labeled.values()))
    shares = {"train2017": train_ones, "val2017": pool_ones - train_ones}
    return {
        split: min(max(shares[split], labeled[split]), instances[split], len(CATEGORIES) * labeled[split])
        for split in SPLITS
    }


# ---------------------------------------------------------------------------------------------
# Planning


def make_rng(seed: int, purpose: str) -> np.random.Generator:
    # One stream per purpose, so that a change to how one part is drawn leaves the others alone.
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def random_mask(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[rng.choice(size, count, replace=False)] = True
    return mask


def unique_ids(rng: np.random.Generator, id_range: int, count: int) -> np.ndarray:
    """`count` distinct ids from 1..id_range, in random order."""
    return rng.choice(id_range, count, replace=False) + 1


def plan_splits(counts: dict[str, SplitCounts], seed: int) -> list[Split]:
    rng = make_rng(seed, "plan")
    # One extra image id per split for the file that no JSON lists.
    file_ids = unique_ids(rng, MAX_IMAGE_ID, sum(counts[s].images + 1 for s in SPLITS))
    listed = np.ones(len(file_ids), dtype=bool)
    listed[np.cumsum([counts[s].images + 1 for s in SPLITS]) - 1] = False
    place_karpathy_ids(file_ids, listed, make_rng(seed, "karpathy"), sum(counts[s].images for s in SPLITS))
    total_captions = sum(counts[s].captions for s in SPLITS)
    caption_ids = unique_ids(rng, max(CAPTION_ID_RANGE, 2 * total_captions), total_captions)
    total_instances = sum(counts[s].instances for s in SPLITS)
    instance_ids = unique_ids(rng, max(INSTANCE_ID_RANGE, 2 * total_instances), total_instances)

    splits = []
    for split in SPLITS:
        split_counts = counts[split]
        split_file_ids, file_ids = np.split(file_ids, [split_counts.images + 1])
        split_caption_ids, caption_ids = np.split(caption_ids, [split_counts.captions])
        split_instance_ids, instance_ids = np.split(instance_ids, [split_counts.instances])
        splits.append(plan_split(split, split_counts, split_file_ids, split_caption_ids, split_instance_ids, rng))
    return splits


def place_karpathy_ids(file_ids: np.ndarray, listed: np.ndarray, rng: np.random.Generator, pool_images: int) -> None:
    """Give listed images ids of the Karpathy lists the project ships, in place, each list's share of the pool.

    Each list holds 5,000 of the real pool's images, so a sample holds at least round(5,000 * scale)
    of each (and MIN_KARPATHY_IDS; random ids add a few more): the `karpathy` protocol then has all
    its splits, and at scale 1.0 every listed id is in the pool, as in COCO 2017.
    """
    id_lists = [id_list.image_ids for id_list in shipped_id_lists(KARPATHY_ID_LISTS).values()]
    share = max(MIN_KARPATHY_IDS, round(KARPATHY_LIST_SIZE * pool_images / REAL_COUNTS.images))
    chosen = np.concatenate([rng.choice(image_ids, share, replace=False) for image_ids in id_lists])
    missing = chosen[~np.isin(chosen, file_ids)]
    free = np.flatnonzero(listed & ~np.isin(file_ids, np.concatenate(id_lists)))
    file_ids[rng.choice(free, len(missing), replace=False)] = missing


def plan_split(
    name: str,
    counts: SplitCounts,
    file_ids: np.ndarray,
    caption_ids: np.ndarray,
    instance_ids: np.ndarray,
    rng: np.random.Generator,
) -> Split:
    files = len(file_ids)
    labeled_rows = np.flatnonzero(~random_mask(rng, counts.images, counts.unlabeled))
    pair_image, pair_category = draw_label_pairs(rng, labeled_rows, counts.label_ones)
    instance_image, instance_category, instance_crowd = draw_instances(rng, pair_image, pair_category, counts.instances)
    # train2017.zip is the archive that needs Zip64 in reality.
    zip64_entries = max(MIN_ZIP64_ENTRIES, round(ZIP64_SHARE * files)) if name == "train2017" else 0
    return Split(
        name=name,
        file_ids=file_ids,
        widths=rng.integers(MIN_SIDE, MAX_SIDE + 1, files),
        heights=rng.integers(MIN_SIDE, MAX_SIDE + 1, files),
        kinds=draw_image_kinds(rng, counts.images),
        deflated=random_mask(rng, files, max(1, round(DEFLATED_SHARE * files))),
        zip64=random_mask(rng, files, zip64_entries),
        archive_order=archive_order(rng, files),
        captions_per_image=draw_captions_per_image(rng, counts.images, counts.captions),
        caption_ids=caption_ids,
        pair_image=pair_image,
        pair_category=pair_category,
        instance_image=instance_image,
        instance_category=instance_category,
        instance_ids=instance_ids,
        instance_crowd=instance_crowd,
        keypoint_ids=draw_keypoint_ids(rng, instance_ids[instance_category == PERSON_ID]),
    )


def draw_image_kinds(rng: np.random.Generator, listed_images: int) -> np.ndarray:
    """Kinds of the listed images plus an RGB JPEG for the unlisted file (the last row)."""
    greyscale = max(MIN_GREYSCALE, round(GREYSCALE_SHARE * listed_images))
    special = rng.choice(listed_images, greyscale + PNG_PER_SPLIT, replace=False)
    kinds = np.full(listed_images + 1, int(ImageKind.RGB_JPEG))
    kinds[special[:greyscale]] = ImageKind.GREY_JPEG
    kinds[special[greyscale:]] = ImageKind.PNG_NAMED_JPG
    return kinds


def archive_order(rng: np.random.Generator, files: int) -> np.ndarray:
    """Listed files shuffled, with the unlisted one (the last row) in the middle."""
    listed = rng.permutation(files - 1)
    return np.insert(listed, len(listed) // 2, files - 1)


def draw_captions_per_image(rng: np.random.Generator, images: int, captions: int) -> np.ndarray:
    """Five captions per image, the extra ones as images with 6 or 7 captions."""
    extra = captions - BASE_CAPTIONS * images
    # val2017 has 12 images with 6 captions for its one with 7: 14 extra captions per seven.
    sevens = max(1, round(extra / 14))
    sixes = extra - 2 * sevens
    per_image = np.full(images, BASE_CAPTIONS)
    chosen = rng.choice(images, sixes + sevens, replace=False)
    per_image[chosen[:sixes]] = BASE_CAPTIONS + 1
    per_image[chosen[sixes:]] = BASE_CAPTIONS + 2
    return per_image


def draw_label_pairs(rng: np.random.Generator, labeled_rows: np.ndarray, ones: int) -> tuple[np.ndarray, np.ndarray]:
    """`ones` distinct (image row, category id) pairs, at least one per labeled image."""
    images, classes = len(labeled_rows), len(CATEGORIES)
    # Each image gets one category plus a share of the remaining ones (at most classes - 1 more).
    extra_slots = rng.choice(images * (classes - 1), ones - images, replace=False)
    per_image = 1 + np.bincount(extra_slots // (classes - 1), minlength=images)
    # Gumbel-top-k: the k best of log(weight) + Gumbel noise are a weighted draw without
    # replacement, for all images at once.
    weights = np.where(CATEGORY_IDS == PERSON_ID, PERSON_WEIGHT, 1.0)
    keys = np.log(weights) + rng.gumbel(size=(images, classes))
    keys[0, CATEGORY_IDS == PERSON_ID] = np.inf  # so that person_keypoints is never empty
    ranked = np.argsort(-keys, axis=1)
    rows, ranks = np.nonzero(np.arange(classes) < per_image[:, None])
    return labeled_rows[rows], CATEGORY_IDS[ranked[rows, ranks]]


def draw_instances(
    rng: np.random.Generator, pair_image: np.ndarray, pair_category: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` instances, at least one per pair, in shuffled file order: (image row, category
    id, iscrowd)."""
    pairs = len(pair_image)
    per_pair = 1 + np.bincount(rng.integers(0, pairs, count - pairs), minlength=pairs)
    pair_of_instance = rng.permutation(np.repeat(np.arange(pairs), per_pair))
    crowd = random_mask(rng, count, max(1, round(CROWD_SHARE * count)))
    return pair_image[pair_of_instance], pair_category[pair_of_instance], crowd


def draw_keypoint_ids(rng: np.random.Generator, person_instance_ids: np.ndarray) -> frozenset[int]:
    count = max(1, round(KEYPOINT_SHARE * len(person_instance_ids)))
    return frozenset(rng.choice(person_instance_ids, count, replace=False).tolist())


# ---------------------------------------------------------------------------------------------
# Image archives


def zip_entry(name: str, compress_type: int) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name)  # dated 1980-01-01 as every entry: equal arguments, equal bytes
    entry.compress_type = compress_type
    is_directory = name.endswith("/")
    # Unix permission bits, plus the MS-DOS directory bit that unzip tools check.
    entry.external_attr = (0o40755 << 16) | 0x10 if is_directory else 0o644 << 16
    return entry


def encode_image(image_id: int, width: int, height: int, kind: ImageKind) -> bytes:
    """A picture whose colours and stripes come from the id; JPEGs also carry the id in a
    comment, so that no two files share bytes."""
    # Knuth's multiplicative hash: a bijection on 32 bits that spreads neighbouring ids apart.
    red, green, blue, stripes = ((image_id * 2654435761) & 0xFFFFFFFF).to_bytes(4, "little")
    rows, columns = np.mgrid[0:height, 0:width]
    band = (rows + columns) // (2 + stripes % 7) % 2
    pixels = np.stack([(red + 6 * columns) % 256, (green + 6 * rows) % 256, (blue + 128 * band) % 256], axis=-1).astype(
        np.uint8
    )
    image = Image.fromarray(pixels)
    encoded = io.BytesIO()
    if kind == ImageKind.PNG_NAMED_JPG:
        image.save(encoded, "PNG")
    else:
        if kind == ImageKind.GREY_JPEG:
            image = image.convert("L")
        image.save(encoded, "JPEG", quality=90, comment=f"coco-unified sample {image_id}")
    return encoded.getvalue()


@dataclasses.dataclass(frozen=True)
class RealSizeImages:
    """Pictures of one real size (COCO's are ~640x480 at most), in place of the tiny ones."""

    width: int
    height: int
    quality: int = 90

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or not 1 <= self.quality <= 95:
            raise ValueError(f"{self}: sizes must be >= 1 pixel and the JPEG quality within 1..95")


class RealSizeEncoder:
    """Encodes real-size pictures from a pool drawn once; see REAL_SIZE_POOL."""

    def __init__(self, images: RealSizeImages, seed: int) -> None:
        self.images = images
        rng = make_rng(seed, "real-size pictures")
        self._pixels = [self._draw(rng) for _ in range(REAL_SIZE_POOL)]
        self._jpegs = {
            kind: [self._jpeg(pixels, kind) for pixels in self._pixels]
            for kind in (ImageKind.RGB_JPEG, ImageKind.GREY_JPEG)
        }

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        width, height = self.images.width, self.images.height
        cells = rng.integers(0, 256, (height // REAL_SIZE_CELL + 2, width // REAL_SIZE_CELL + 2, 3), dtype=np.uint8)
        fields = np.asarray(Image.fromarray(cells).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
        grain = rng.normal(0.0, REAL_SIZE_GRAIN, fields.shape).astype(np.float32)
        return np.clip(fields + grain, 0, 255).astype(np.uint8)

    def _jpeg(self, pixels: np.ndarray, kind: ImageKind) -> bytes:
        image = Image.fromarray(pixels)
        if kind == ImageKind.GREY_JPEG:
            image = image.convert("L")
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=self.images.quality)
        return encoded.getvalue()

    def __call__(self, image_id: int, kind: ImageKind) -> bytes:
        picture = image_id % REAL_SIZE_POOL
        if kind == ImageKind.PNG_NAMED_JPG:  # one per split: encoded on its own
            encoded = io.BytesIO()
            Image.fromarray(self._pixels[picture]).save(encoded, "PNG")
            return encoded.getvalue()
        return with_jpeg_comment(self._jpegs[kind][picture], f"coco-unified sample {image_id}".encode())


def with_jpeg_comment(jpeg: bytes, comment: bytes) -> bytes:
    """The JPEG with a comment segment (COM) after its first segment (SOI + JFIF APP0)."""
    if jpeg[:4] != b"\xff\xd8\xff\xe0":
        raise ValueError("expected a JFIF JPEG (PIL writes one)")
    after_app0 = 4 + int.from_bytes(jpeg[4:6], "big")
    segment = b"\xff\xfe" + (2 + len(comment)).to_bytes(2, "big") + comment
    return jpeg[:after_app0] + segment + jpeg[after_app0:]


def with_real_size_images(split: Split, images: RealSizeImages) -> Split:
    """The split with every picture (and its annotations) at the real size, every entry deflated."""
    files = len(split.file_ids)
    return dataclasses.replace(
        split,
        widths=np.full(files, images.width),
        heights=np.full(files, images.height),
        deflated=np.ones(files, dtype=bool),
    )


def write_image_entries(archive: zipfile.ZipFile, split: Split, encoder: RealSizeEncoder | None) -> None:
    with archive.open(zip_entry(f"{split.name}/", zipfile.ZIP_STORED), "w"):
        pass  # opened rather than mkdir()ed so that a streamed archive gives it a data descriptor
    for row in Progress(split.archive_order, desc=ARCHIVES[split.name].file_name, unit="image"):
        image_id = int(split.file_ids[row])
        if encoder is None:
            data = encode_image(image_id, int(split.widths[row]), int(split.heights[row]), ImageKind(split.kinds[row]))
        else:
            data = encoder(image_id, ImageKind(split.kinds[row]))
        compress_type = zipfile.ZIP_DEFLATED if split.deflated[row] else zipfile.ZIP_STORED
        entry = zip_entry(f"{split.name}/{image_id:012d}.jpg", compress_type)
        with archive.open(entry, "w", force_zip64=bool(split.zip64[row])) as stream:
            stream.write(data)


@contextmanager
def zip64_end_records_forced() -> Iterator[None]:
    """While active, ZipFile.close() writes Zip64 end-of-central-directory records.

    zipfile writes them only past 65,535 entries; the real train2017.zip needs them for its
    118,288 entries and 19 GB, but samples below scale ~0.56 would not get them, so the limit is
    lowered while closing."""
    saved_limit = zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP_FILECOUNT_LIMIT = 0
    try:
        yield
    finally:
        zipfile.ZIP_FILECOUNT_LIMIT = saved_limit


class ForwardOnlyStream:
    """A write-only stream without tell() or seek(), like a pipe or an upload: zipfile then writes
    every entry with a data descriptor (flag bit 3, CRC and sizes after the data)."""

    def __init__(self, file: io.BufferedWriter) -> None:
        self._file = file

    def write(self, data: bytes) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


def write_train_images(path: Path, split: Split, encoder: RealSizeEncoder | None) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        write_image_entries(archive, split, encoder)
        with zip64_end_records_forced():
            archive.close()


def write_val_images(path: Path, split: Split, encoder: RealSizeEncoder | None) -> None:
    with open(path, "wb") as file, zipfile.ZipFile(ForwardOnlyStream(file), "w") as archive:
        write_image_entries(archive, split, encoder)


# ---------------------------------------------------------------------------------------------
# Annotation JSON


def dump_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=JSON_SEPARATORS)


def write_coco_json(
    archive: zipfile.ZipFile,
    name: str,
    images: list[dict],
    annotation_chunks: Iterable[list[dict]],
    categories: list[dict] | None,
) -> None:
    """Writes {info, licenses, images, annotations[, categories]} as a deflated entry, the
    annotations chunk by chunk: the instances file is ~450 MB at full scale."""
    head = dump_json({"info": INFO, "licenses": LICENSES, "images": images})
    with archive.open(name, "w") as entry:  # deflated at the archive's level, dated 1980-01-01
        # The annotations go in before the head's closing brace.
        entry.write(f'{head[:-1]},"annotations": ['.encode())
        separator = b""
        for chunk in annotation_chunks:
            if chunk:
                entry.write(separator + dump_json(chunk)[1:-1].encode())
                separator = b","
        entry.write(b"]")
        if categories is not None:
            entry.write(f',"categories": {dump_json(categories)}'.encode())
        entry.write(b"}")
    log.info("wrote %s (%d images, %.1f MB)", name, len(images), archive.getinfo(name).file_size / 1e6)


def image_records(split: Split, rng: np.random.Generator) -> list[dict]:
    count = len(split.image_ids)
    licenses = rng.integers(1, len(LICENSES) + 1, count)
    captured_seconds = rng.integers(0, 60 * 86_400, count)
    farms = rng.integers(1, 10, count)
    servers = rng.integers(1_000, 9_000, count)
    photos = rng.integers(1_000_000_000, 9_999_999_999, count)
    secrets = rng.integers(0, 1 << 40, count)
    first_capture = datetime.datetime(2013, 11, 10)
    records = []
    for row, image_id in enumerate(split.image_ids.tolist()):
        file_name = f"{image_id:012d}.jpg"
        captured = first_capture + datetime.timedelta(seconds=int(captured_seconds[row]))
        records.append(
            {
                "license": int(licenses[row]),
                "file_name": file_name,
                "coco_url": f"http://images.cocodataset.org/{split.name}/{file_name}",
                "height": int(split.heights[row]),
                "width": int(split.widths[row]),
                "date_captured": captured.strftime("%Y-%m-%d %H:%M:%S"),
                "flickr_url": f"http://farm{farms[row]}.staticflickr.com/{servers[row]}/"
                f"{photos[row]}_{secrets[row]:010x}_z.jpg",
                "id": image_id,
            }
        )
    return records


def make_caption(index: int, object_names: list[str], rng: random.Random) -> str:
    """A sentence about the image's objects. The first captions of a file use every template and
    every quirk once, so that each occurs at any scale."""
    names = object_names or CATEGORY_NAMES  # unlabeled images still show something
    template = CAPTION_TEMPLATES[index] if index < len(CAPTION_TEMPLATES) else rng.choice(CAPTION_TEMPLATES)
    text = template.format(
        thing=rng.choice(names),
        other=rng.choice(names),
        third=rng.choice(CATEGORY_NAMES),
        adjective=rng.choice(ADJECTIVES),
        pose=rng.choice(POSES),
        preposition=rng.choice(PREPOSITIONS),
        place=rng.choice(PLACES),
        person=rng.choice(PEOPLE),
        sign=rng.choice(SIGN_WORDS),
        foreign_place=rng.choice(FOREIGN_PLACES),
    )
    text = ARTICLE_BEFORE_VOWEL.sub(r"\1n ", text)
    for quirk_index, (probability, edit) in enumerate(CAPTION_QUIRKS):
        if quirk_index == index or rng.random() < probability:
            text = edit(text)
    return text


def object_names_per_image(split: Split) -> list[list[str]]:
    names: list[list[str]] = [[] for _ in split.image_ids]
    for row, category_id in zip(split.pair_image.tolist(), split.pair_category.tolist()):
        names[row].append(CATEGORY_NAME_BY_ID[category_id])
    return names


def caption_records(split: Split, rng: random.Random) -> list[dict]:
    """All captions of the split, shuffled so that an image's captions are not adjacent."""
    image_and_text = []
    names = object_names_per_image(split)
    per_image = split.captions_per_image.tolist()
    for row, image_id in enumerate(Progress(split.image_ids.tolist(), desc=f"captions {split.name}", unit="image")):
        for _ in range(per_image[row]):
            image_and_text.append((image_id, make_caption(len(image_and_text), names[row], rng)))
    rng.shuffle(image_and_text)
    return [
        {"image_id": image_id, "id": caption_id, "caption": text}
        for (image_id, text), caption_id in zip(image_and_text, split.caption_ids.tolist())
    ]


def draw_polygons(
    rng: np.random.Generator, widths: np.ndarray, heights: np.ndarray
) -> tuple[list[float], list[int], list, list[float]]:
    """One star-shaped polygon inside each image size given: (x, y coordinates of all polygons
    in one list, where polygon i is [offsets[i]:offsets[i + 1]], tight bbox per polygon, area per
    polygon)."""
    count = len(widths)
    points = np.clip(np.round(rng.lognormal(np.log(MEDIAN_POLYGON_POINTS), 0.6, count)), 3, MAX_POLYGON_POINTS).astype(
        np.int64
    )
    box_widths = widths * rng.uniform(0.1, 1.0, count)
    box_heights = heights * rng.uniform(0.1, 1.0, count)
    lefts = rng.uniform(0.0, 1.0, count) * (widths - box_widths)
    tops = rng.uniform(0.0, 1.0, count) * (heights - box_heights)

    owner = np.repeat(np.arange(count), points)
    starts = np.cumsum(points) - points
    position = np.arange(len(owner)) - starts[owner]
    # Increasing angles around the box centre keep the outline from crossing itself.
    angles = 2 * np.pi * (position + rng.uniform(0.0, 0.9, len(owner))) / points[owner]
    radii = 0.5 * rng.uniform(0.5, 1.0, len(owner))
    xs = np.round(lefts[owner] + box_widths[owner] * (0.5 + radii * np.cos(angles)), 2)
    ys = np.round(tops[owner] + box_heights[owner] * (0.5 + radii * np.sin(angles)), 2)

    # COCO derives bbox and area from the mask: tight bounds and the shoelace area here.
    x_min, y_min = np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts)
    x_max, y_max = np.maximum.reduceat(xs, starts), np.maximum.reduceat(ys, starts)
    boxes = np.round(np.stack([x_min, y_min, x_max - x_min, y_max - y_min], axis=1), 2)
    following = np.arange(len(owner)) + 1
    following[starts + points - 1] = starts
    areas = 0.5 * np.abs(np.add.reduceat(xs * ys[following] - xs[following] * ys, starts))

    coordinates = np.empty(2 * len(owner))
    coordinates[0::2], coordinates[1::2] = xs, ys
    offsets = np.append(2 * starts, len(coordinates))
    return coordinates.tolist(), offsets.tolist(), boxes.tolist(), areas.tolist()


def draw_crowd_region(rng: np.random.Generator, width: int, height: int) -> tuple[dict, list[float], float]:
    """A ragged block as an uncompressed RLE (column-major run lengths, starting with
    background, as pycocotools encodes), with its bbox and area."""
    left = int(rng.integers(0, width // 2))
    right = int(rng.integers(left + width // 4, width + 1))
    # Each column's run stays clear of the top and bottom rows, so background runs are never empty.
    tops = rng.integers(1, height // 2, right - left)
    bottoms = rng.integers(height // 2, height, right - left)
    column_offsets = np.arange(left, right) * height
    run_starts, run_ends = column_offsets + tops, column_offsets + bottoms
    counts = np.empty(2 * (right - left) + 1, dtype=np.int64)
    counts[0] = run_starts[0]
    counts[1::2] = run_ends - run_starts
    counts[2:-1:2] = run_starts[1:] - run_ends[:-1]
    counts[-1] = width * height - run_ends[-1]
    top, bottom = int(tops.min()), int(bottoms.max())
    bbox = [float(left), float(top), float(right - left), float(bottom - top)]
    segmentation = {"counts": counts.tolist(), "size": [height, width]}
    return segmentation, bbox, float(counts[1::2].sum())


def instance_chunks(split: Split, rng: np.random.Generator) -> Iterator[list[dict]]:
    progress = Progress(total=len(split.instance_ids), desc=f"instances {split.name}", unit="ann")
    for start in range(0, len(split.instance_ids), INSTANCE_CHUNK):
        window = slice(start, start + INSTANCE_CHUNK)
        rows = split.instance_image[window]
        widths, heights = split.widths[rows], split.heights[rows]
        coordinates, offsets, boxes, areas = draw_polygons(rng, widths, heights)
        chunk = []
        for i, (image_id, category_id, annotation_id, crowd) in enumerate(
            zip(
                split.image_ids[rows].tolist(),
                split.instance_category[window].tolist(),
                split.instance_ids[window].tolist(),
                split.instance_crowd[window].tolist(),
            )
        ):
            if crowd:
                segmentation, bbox, area = draw_crowd_region(rng, int(widths[i]), int(heights[i]))
            else:
                segmentation = [coordinates[offsets[i] : offsets[i + 1]]]
                bbox, area = boxes[i], areas[i]
            chunk.append(
                {
                    "segmentation": segmentation,
                    "area": area,
                    "iscrowd": int(crowd),
                    "image_id": image_id,
                    "bbox": bbox,
                    "category_id": category_id,
                    "id": annotation_id,
                }
            )
        progress.update(len(chunk))
        yield chunk
    progress.close()


def with_keypoints(annotation: dict, rng: np.random.Generator) -> dict:
    """The person annotation as person_keypoints lists it: 17 (x, y, visibility) triples inside
    the bbox; unlabeled points are (0, 0, 0), and crowds have none."""
    left, top, width, height = annotation["bbox"]
    visibility = rng.choice(3, KEYPOINT_COUNT, p=[0.4, 0.1, 0.5]) * (1 - annotation["iscrowd"])
    xs = np.round(left + width * rng.random(KEYPOINT_COUNT)).astype(np.int64) * (visibility > 0)
    ys = np.round(top + height * rng.random(KEYPOINT_COUNT)).astype(np.int64) * (visibility > 0)
    return {
        "segmentation": annotation["segmentation"],
        "num_keypoints": int(np.count_nonzero(visibility)),
        "area": annotation["area"],
        "iscrowd": annotation["iscrowd"],
        "keypoints": np.stack([xs, ys, visibility], axis=1).ravel().tolist(),
        "image_id": annotation["image_id"],
        "bbox": annotation["bbox"],
        "category_id": annotation["category_id"],
        "id": annotation["id"],
    }


def write_instances(archive: zipfile.ZipFile, split: Split, images: list[dict], rng: np.random.Generator) -> list[dict]:
    """Writes instances_<split>.json; returns the person annotations that person_keypoints
    lists, with their keypoints."""
    keypoint_annotations = []

    def chunks_noting_keypoints() -> Iterator[list[dict]]:
        for chunk in instance_chunks(split, rng):
            keypoint_annotations.extend(
                with_keypoints(annotation, rng) for annotation in chunk if annotation["id"] in split.keypoint_ids
            )
            yield chunk

    categories = [
        {"supercategory": supercategory, "id": category_id, "name": name}
        for category_id, name, supercategory in CATEGORIES
    ]
    write_coco_json(archive, f"annotations/instances_{split.name}.json", images, chunks_noting_keypoints(), categories)
    return keypoint_annotations


def chunked(records: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def write_annotation_archive(path: Path, splits: list[Split], seed: int) -> None:
    rng = make_rng(seed, "annotations")
    # A str seed is hashed with SHA-512, so it does not depend on PYTHONHASHSEED.
    text_rng = random.Random(f"{seed}/captions")
    images = {split.name: image_records(split, rng) for split in splits}
    # Level 1: the ~450 MB of random digits deflate 9x faster than at the default level, and
    # only 20 % larger.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        # Instances first: the person annotations that person_keypoints lists are picked from them.
        keypoint_annotations = {
            split.name: write_instances(archive, split, images[split.name], rng) for split in splits
        }
        for split in splits:
            captions = caption_records(split, text_rng)
            write_coco_json(
                archive,
                f"annotations/captions_{split.name}.json",
                images[split.name],
                chunked(captions, CAPTION_CHUNK),
                categories=None,
            )
        for split in splits:
            write_coco_json(
                archive,
                f"annotations/person_keypoints_{split.name}.json",
                images[split.name],
                [keypoint_annotations[split.name]],
                [PERSON_KEYPOINTS_CATEGORY],
            )


# ---------------------------------------------------------------------------------------------
# Entry point


def generate(out_dir: Path, scale: float, seed: int, real_size: RealSizeImages | None = None) -> dict[str, SplitCounts]:
    """Writes the three archives into out_dir, with tiny pictures or `real_size` ones; returns the
    counts written per split."""
    if not 0 < scale <= MAX_SCALE:
        raise ValueError(f"scale={scale} is outside (0, {MAX_SCALE}]: COCO image ids stop at {MAX_IMAGE_ID:,}")
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("writing a COCO 2017 sample at scale %s, seed %d, into %s", scale, seed, out_dir)
    counts = plan_counts(scale)
    splits = plan_splits(counts, seed)
    encoder = None
    if real_size is not None:
        log.info("real-size images: %dx%d, JPEG quality %d", real_size.width, real_size.height, real_size.quality)
        splits = [with_real_size_images(split, real_size) for split in splits]
        encoder = RealSizeEncoder(real_size, seed)
    train, val = splits
    write_train_images(out_dir / ARCHIVES["train2017"].file_name, train, encoder)
    write_val_images(out_dir / ARCHIVES["val2017"].file_name, val, encoder)
    write_annotation_archive(out_dir / ANNOTATIONS_ARCHIVE, splits, seed)
    for archive in ARCHIVES.values():
        path = out_dir / archive.file_name
        log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return {split.name: split.written_counts() for split in splits}


def log_summary(written: dict[str, SplitCounts]) -> None:
    fields = [field.name for field in dataclasses.fields(SplitCounts)]
    pool = SplitCounts(*(sum(getattr(counts, field) for counts in written.values()) for field in fields))
    log.info("%-10s" + " %10s" * len(fields), "split", *fields)
    for name, counts in [*written.items(), ("pool", pool)]:
        log.info("%-10s" + " %10d" * len(fields), name, *dataclasses.astuple(counts))
