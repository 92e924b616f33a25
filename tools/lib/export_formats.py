"""The files that existing training code reads, written from the pool's records and its sidecars.

Each format writes exactly what its paper's code reads (docs/FACTS.md §6, §9), plus
`<format>_image_ids.txt`: the COCO image id of each row, in the files' row order.

    reference  labels.COCO.mat (`labels`, uint8 N x 80), texts.COCO.d2v-300d.mat (`texts`, float32
               N x 300 Doc2Vec), clean_id.COCO.mat (`clean_id`, the 0-based pool indices of the
               labeled images), id-map.COCO.txt (`<image id> <file name> <train2017|val2017>` per
               pool index), class-name.COCO.txt (`<category id> <name>` per class index); with a
               cnnf_fc7 sidecar also images.COCO.cnnf7.h5 (`images`, float32 N x 4096) and
               avgpix.COCO.py.mat (`meanpix`, the mean image beside that sidecar). Rows: the pool.
    ucch       MSCOCO_deep_doc2vec_data_rand.h5py: `XAll` (image feature), `YAll` (text feature),
               `LAll` (float32 0/1 labels), the labeled pool in the ucch protocol's seeded order:
               UCCH's MSCOCO_fea queries with the last 5,000 rows.
    dchn       MSCOCO_deep_doc2vec_data.h5py: `train_imgs_deep`, `train_text`, `train_imgs_labels`,
               `train_texts_labels` and their `test_` twins, the labeled pool in the dchn
               protocol's seeded order cut after its 5,000 queries and 10,000 training rows: DCHN
               concatenates train and test, queries with the first 5,000 rows, trains on the next
               10,000 and retrieves from all after the queries.
    dsph       index.mat (`index`: image paths into images/), caption.mat (`caption`: per image its
               captions), label.mat (`category`: int64 multi-hot), rows in DSPH's order
               (coco_unified.dsph_rows): its split_data with seed 1814 draws the dsph protocol.
    images     images/<pool index>.jpg: hard links (symbolic where the file system refuses) into
               an extracted copy, else the bytes read from the zips as the builder reads them.
"""

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence

import h5py
import numpy as np
import scipy.io

from coco_unified import (
    CATEGORIES,
    COCO_SPLITS,
    DEFAULT_NUM_QUERY,
    DEFAULT_NUM_TRAIN,
    DOC2VEC_COMMAND,
    FEATURES_COMMAND,
    PROTOCOLS,
    CocoError,
    ImageEntry,
    ImageRecord,
    SidecarColumn,
    SidecarError,
    Source,
    doc2vec_column,
    dsph_rows,
    feature_column,
    iter_sidecar_rows,
    list_images,
    locate_sources,
    read_image,
    read_sidecar_schema,
    redact_url,
    require_sources,
    sidecar_provenance,
)
from tools.lib.image_features.mean_image import MEAN_IMAGE_KEY, MEAN_IMAGE_SUFFIX, mean_image_sha256, read_mean_image
from tools.lib.pool import read_pool
from tools.lib.progress import Progress

logger = logging.getLogger(__name__)

# The literature's features (docs/FACTS.md §9): UCCH and DCHN read 4096-d VGG-19 fc7 with 300-d Doc2Vec.
DEFAULT_IMAGE_FEATURE = "vgg19_fc7"
DEFAULT_TEXT_FEATURE = "doc2vec"
# The reference preparation's image features (docs/FACTS.md §9).
REFERENCE_IMAGE_FEATURE = "cnnf_fc7"
IMAGE_FOLDER = "images"
IMAGE_IDS_SUFFIX = "_image_ids.txt"
UCCH_FILE = "MSCOCO_deep_doc2vec_data_rand.h5py"
DCHN_FILE = "MSCOCO_deep_doc2vec_data.h5py"


@dataclasses.dataclass(frozen=True)
class FeatureChoice:
    """Where the image and text features of the ucch and dchn files come from."""

    image_feature: str = DEFAULT_IMAGE_FEATURE
    text_feature: str = DEFAULT_TEXT_FEATURE
    doc2vec_path: str | None = None  # None: no Doc2Vec sidecar (doc2vec=False)
    feature_sidecars: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def column(self, name: str, wanted_by: str, chosen_by: str | None = None) -> SidecarColumn:
        """The sidecar column `name`, checked from its footer; a missing one names the command that makes it.

        `chosen_by`: the option that chose the column (image_feature, text_feature), offered as the other way out.
        """
        instead = f", or choose another {chosen_by}" if chosen_by else ""
        if name == DEFAULT_TEXT_FEATURE:
            if self.doc2vec_path is None:
                raise SidecarError(
                    f"{wanted_by} needs the Doc2Vec vectors: drop doc2vec=False and pass doc2vec_path "
                    f"(made by `{DOC2VEC_COMMAND.format(path='PATH')}`){instead}."
                )
            column = doc2vec_column(self.doc2vec_path)
            read_sidecar_schema(column.path, None, column.missing_error(), column.remedy)
            return column
        if name not in self.feature_sidecars:
            model = name.partition("_")[0]
            raise SidecarError(
                f"{wanted_by} needs the {name} vectors, and feature_sidecars names no {name!r}: make the sidecar "
                f"with `{FEATURES_COMMAND.format(path='PATH').replace('MODEL', model)}` and add it as {name}=PATH"
                f"{instead}."
            )
        return feature_column(name, os.fspath(self.feature_sidecars[name]))


@dataclasses.dataclass
class ExportPool:
    """The pool in index order (annotations only, read when first needed), where its images are, and
    what the formats share."""

    data_dir: str | None
    base_url: str | None
    features: FeatureChoice
    seed: int | None  # of the protocols that draw (ucch, dchn); None: each protocol's default
    num_query: int = DEFAULT_NUM_QUERY
    num_train: int = DEFAULT_NUM_TRAIN

    @functools.cached_property
    def records(self) -> list[ImageRecord]:
        return read_pool(self.data_dir, self.base_url)

    @functools.cached_property
    def sources(self) -> dict[str, Source]:
        return locate_sources(self.data_dir, self.base_url)

    @property
    def image_ids(self) -> np.ndarray:
        return np.asarray([record.image_id for record in self.records], dtype=np.int64)

    def labels(self, rows: Sequence[int] | None = None, dtype=np.uint8) -> np.ndarray:
        """The multi-hot labels (rows x 80) of the pool indices `rows` (default: the pool), in that order."""
        rows = range(len(self.records)) if rows is None else rows
        matrix = np.zeros((len(rows), len(CATEGORIES)), dtype=dtype)
        for row, index in enumerate(rows):
            matrix[row, self.records[index].labels] = 1
        return matrix


# ----------------------------------------------------------------------------- shared writers


def write_image_ids(directory: str, name: str, image_ids: np.ndarray) -> str:
    """<name>_image_ids.txt: the COCO image id of each row of the format's files, one a line."""
    file_name = name + IMAGE_IDS_SUFFIX
    np.savetxt(os.path.join(directory, file_name), image_ids, fmt="%d")
    return file_name


def write_id_map(path: str, image_ids: Sequence[int], file_names: Sequence[str], coco_splits: Sequence[str]) -> None:
    """`<image id> <file name> <train2017|val2017>`, one line per pool index (the reference's id-map)."""
    with open(path, "w") as file:
        file.writelines(
            f"{image_id} {name} {split}\n" for image_id, name, split in zip(image_ids, file_names, coco_splits)
        )


def write_class_names(path: str) -> None:
    """`<category id> <name>`, one line per class index 0..79 (the reference's class-name)."""
    with open(path, "w") as file:
        file.writelines(f"{category_id} {name}\n" for category_id, name, _ in CATEGORIES)


def fill_rows(column: SidecarColumn, image_ids: np.ndarray, targets: Sequence[tuple[object, int]]) -> dict:
    """Write the vectors of `image_ids` into `targets`, row group by row group, with a progress bar.

    `targets` are (array, start) pairs: an HDF5 dataset or numpy array taking the rows
    image_ids[start : start + len(array)]. Returns the sidecar's provenance.
    """
    with Progress(total=len(image_ids), unit="rows", desc=column.name) as progress:
        for positions, vectors in iter_sidecar_rows(column.path, column, image_ids):
            for target, start in targets:
                inside = (positions >= start) & (positions < start + len(target))
                if inside.any():
                    # h5py takes increasing row lists, and the positions are ascending
                    target[positions[inside] - start] = vectors[inside]
            progress.update(len(positions))
    return sidecar_provenance(read_sidecar_schema(column.path, None, column.missing_error(), column.remedy))


class NpyRows:
    """A float32 .npy file of `shape`, written row by row where each row belongs (as `fill_rows` writes).

    Plain writes at the rows' offsets rather than a memory map: a map's written pages count in the
    process's resident memory (measured: 3.2 GB resident while 4096-d columns went through np.memmap).
    """

    def __init__(self, path: str, shape: tuple[int, int]):
        with open(path, "wb") as file:
            np.lib.format.write_array_header_1_0(
                file,
                {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape},
            )
            self.offset = file.tell()
            file.truncate(self.offset + shape[0] * shape[1] * 4)
        self.shape, self.row_bytes = shape, shape[1] * 4
        self.file = open(path, "r+b")

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, rows: np.ndarray, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float32)
        # runs of consecutive rows go in one write
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run_rows, run_values in zip(np.split(rows, breaks), np.split(values, breaks)):
            self.file.seek(self.offset + int(run_rows[0]) * self.row_bytes)
            self.file.write(run_values.tobytes())

    def close(self) -> None:
        self.file.close()


def describe_feature(column: SidecarColumn, provenance: dict) -> dict:
    return {
        "column": column.name,
        "sidecar": redact_url(column.path),
        "dim": column.dim,
        "provenance": provenance,
    }


def protocol_entry(pool: ExportPool, name: str, seed: int | None) -> dict:
    """The protocol a format's rows encode, its seed and split sizes; a pool too small for them fails here."""
    protocol = PROTOCOLS[name]
    splits = protocol.splits(pool.records, seed, pool.num_query, pool.num_train)
    sizes = {split: len(rows) for split, rows in splits.items()}
    return {"name": name, "seed": protocol.seed_or_default(seed), **sizes}


# A format's plan checks everything it needs (sidecars, sizes, image parts) and returns its writer,
# so that nothing is written before every requested format is known to be writable.
Writer = Callable[[str], dict]


# ----------------------------------------------------------------------------- reference


def plan_reference(pool: ExportPool) -> Writer:
    """The reference preparation's files, rows in pool order (docs/FACTS.md §2, §9)."""
    texts_column = pool.features.column(DEFAULT_TEXT_FEATURE, "The reference format's texts.COCO.d2v-300d.mat")
    cnnf_path = pool.features.feature_sidecars.get(REFERENCE_IMAGE_FEATURE)
    cnnf_column = feature_column(REFERENCE_IMAGE_FEATURE, os.fspath(cnnf_path)) if cnnf_path else None
    mean_image = mean_image_beside(cnnf_column) if cnnf_column else None

    def write(directory: str) -> dict:
        image_ids, labels = pool.image_ids, pool.labels()
        scipy.io.savemat(os.path.join(directory, "labels.COCO.mat"), {"labels": labels}, do_compression=True)
        clean_id = np.flatnonzero(labels.any(axis=1))
        scipy.io.savemat(os.path.join(directory, "clean_id.COCO.mat"), {"clean_id": clean_id})
        texts = np.zeros((len(image_ids), texts_column.dim), dtype=np.float32)
        features = {"texts": describe_feature(texts_column, fill_rows(texts_column, image_ids, [(texts, 0)]))}
        scipy.io.savemat(os.path.join(directory, "texts.COCO.d2v-300d.mat"), {"texts": texts})
        records = pool.records
        write_id_map(
            os.path.join(directory, "id-map.COCO.txt"),
            [record.image_id for record in records],
            [record.file_name for record in records],
            [record.coco_split for record in records],
        )
        write_class_names(os.path.join(directory, "class-name.COCO.txt"))
        files = [
            "labels.COCO.mat",
            "texts.COCO.d2v-300d.mat",
            "clean_id.COCO.mat",
            "id-map.COCO.txt",
            "class-name.COCO.txt",
        ]
        if cnnf_column is not None:
            with h5py.File(os.path.join(directory, "images.COCO.cnnf7.h5"), "w") as file:
                images = file.create_dataset("images", shape=(len(image_ids), cnnf_column.dim), dtype=np.float32)
                features["images"] = describe_feature(cnnf_column, fill_rows(cnnf_column, image_ids, [(images, 0)]))
            scipy.io.savemat(os.path.join(directory, "avgpix.COCO.py.mat"), {MEAN_IMAGE_KEY: mean_image})
            files += ["images.COCO.cnnf7.h5", "avgpix.COCO.py.mat"]
        image_id_file = write_image_ids(directory, "reference", image_ids)
        return {"files": files, "rows": len(image_ids), "image_ids": image_id_file, "features": features}

    return write


def mean_image_beside(column: SidecarColumn) -> np.ndarray:
    """The mean image `coco-unified image-features --model cnnf` wrote beside its sidecar, checked
    against the sha256 the sidecar's provenance records."""
    provenance = sidecar_provenance(read_sidecar_schema(column.path, None, column.missing_error(), column.remedy))
    stem = os.path.splitext(column.path)[0] + MEAN_IMAGE_SUFFIX
    candidates = [stem + ".mat", stem + ".npy"]
    found = next((path for path in candidates if os.path.isfile(path)), None)
    if found is None:
        raise CocoError(
            f"{column.path}: no mean image beside it (looked for {' and '.join(candidates)}); the reference "
            "format's avgpix.COCO.py.mat is the mean image its features were computed with. Put the .meanpix "
            "file `coco-unified image-features --model cnnf` wrote (or the one passed to its --mean-image) there."
        )
    mean_image = read_mean_image(found)
    expected = provenance.get("mean_image_sha256")
    if expected != mean_image_sha256(mean_image):
        raise CocoError(
            f"{found}: not the mean image {column.path}'s features were computed with (its provenance records "
            f"sha256 {expected}); put the .meanpix file written with that sidecar there."
        )
    return mean_image


# ----------------------------------------------------------------------------- ucch and dchn


def plan_ucch(pool: ExportPool) -> Writer:
    """UCCH's one file: the labeled pool in the ucch protocol's order, its last num_query rows the queries."""
    wanted_by = f"The ucch format's {UCCH_FILE}"
    image_column = pool.features.column(pool.features.image_feature, wanted_by, "image_feature")
    text_column = pool.features.column(pool.features.text_feature, wanted_by, "text_feature")
    protocol = protocol_entry(pool, "ucch", pool.seed)
    rows = PROTOCOLS["ucch"].rows(pool.records, pool.seed)

    def write(directory: str) -> dict:
        image_ids = pool.image_ids[rows]
        with h5py.File(os.path.join(directory, UCCH_FILE), "w") as file:
            features = {}
            for key, column in (("XAll", image_column), ("YAll", text_column)):
                dataset = file.create_dataset(key, shape=(len(rows), column.dim), dtype=np.float32)
                features[key] = describe_feature(column, fill_rows(column, image_ids, [(dataset, 0)]))
            file.create_dataset("LAll", data=pool.labels(rows, np.float32))
        image_id_file = write_image_ids(directory, "ucch", image_ids)
        return {
            "files": [UCCH_FILE],
            "rows": len(rows),
            "image_ids": image_id_file,
            "protocol": protocol,
            "features": features,
        }

    return write


def plan_dchn(pool: ExportPool) -> Writer:
    """DCHN's (and SDML's) one file: the labeled pool in the dchn protocol's order, cut after its queries
    and training rows into the train_ part, the rest into the test_ part."""
    cut = pool.num_query + pool.num_train
    wanted_by = f"The dchn format's {DCHN_FILE}"
    image_column = pool.features.column(pool.features.image_feature, wanted_by, "image_feature")
    text_column = pool.features.column(pool.features.text_feature, wanted_by, "text_feature")
    protocol = protocol_entry(pool, "dchn", pool.seed)
    rows = PROTOCOLS["dchn"].rows(pool.records, pool.seed)

    def write(directory: str) -> dict:
        image_ids = pool.image_ids[rows]
        parts = {"train": slice(0, cut), "test": slice(cut, len(rows))}
        features = {}
        with h5py.File(os.path.join(directory, DCHN_FILE), "w") as file:
            for kind, column in (("imgs_deep", image_column), ("text", text_column)):
                targets = [
                    (
                        file.create_dataset(
                            f"{part}_{kind}", shape=(span.stop - span.start, column.dim), dtype=np.float32
                        ),
                        span.start,
                    )
                    for part, span in parts.items()
                ]
                features[kind] = describe_feature(column, fill_rows(column, image_ids, targets))
            for part, span in parts.items():
                labels = pool.labels(rows[span], np.float32)
                file.create_dataset(f"{part}_imgs_labels", data=labels)
                file.create_dataset(f"{part}_texts_labels", data=labels)
        image_id_file = write_image_ids(directory, "dchn", image_ids)
        return {
            "files": [DCHN_FILE],
            "rows": len(rows),
            "train_rows": cut,
            "image_ids": image_id_file,
            "protocol": protocol,
            "features": features,
        }

    return write


# ----------------------------------------------------------------------------- dsph


def plan_dsph(pool: ExportPool) -> Writer:
    """DSPH's three .mat files as its make_coco.py saves them, image paths into the exported images/."""
    protocol = protocol_entry(pool, "dsph", None)  # the files fix the rows; DSPH's loader draws with its own seed
    rows = dsph_rows(pool.records)

    def write(directory: str) -> dict:
        folder = os.path.abspath(os.path.join(directory, IMAGE_FOLDER))
        records = [pool.records[index] for index in rows]
        paths = [os.path.join(folder, image_file_name(record)) for record in records]
        # make_coco.py saves a list of paths (a char matrix), a list of per-image caption lists
        # (ragged: a cell array of char matrices) and a list of int64 multi-hot rows.
        captions = np.empty(len(records), dtype=object)
        captions[:] = [np.asarray(record.captions) for record in records]
        scipy.io.savemat(os.path.join(directory, "index.mat"), {"index": paths})
        scipy.io.savemat(os.path.join(directory, "caption.mat"), {"caption": captions})
        scipy.io.savemat(os.path.join(directory, "label.mat"), {"category": pool.labels(rows, np.int64)})
        image_id_file = write_image_ids(directory, "dsph", pool.image_ids[rows])
        return {
            "files": ["index.mat", "caption.mat", "label.mat"],
            "rows": len(rows),
            "image_ids": image_id_file,
            "image_folder": folder,
            "protocol": protocol,
        }

    return write


# ----------------------------------------------------------------------------- images


def image_file_name(record: ImageRecord) -> str:
    return f"{record.index}.jpg"


def plan_images(pool: ExportPool) -> Writer:
    """images/<pool index>.jpg for every pool image."""
    require_sources(pool.sources, COCO_SPLITS)

    def write(directory: str) -> dict:
        folder = os.path.join(directory, IMAGE_FOLDER)
        os.makedirs(folder, exist_ok=True)
        how = {"hard links": 0, "symbolic links": 0, "read from the zips": 0}
        with Progress(total=len(pool.records), unit="images", desc=IMAGE_FOLDER) as progress:
            for split in COCO_SPLITS:
                listed = [record for record in pool.records if record.coco_split == split]
                entries = list_images(pool.sources[split], listed, listed)
                for kind in place_images(listed, entries, folder):
                    how[kind] += 1
                    progress.update()
        image_id_file = write_image_ids(directory, "images", pool.image_ids)
        return {
            "files": [f"{IMAGE_FOLDER}/<pool index>.jpg"],
            "rows": len(pool.records),
            "image_ids": image_id_file,
            "written_as": how,
        }

    return write


def place_images(records: Sequence[ImageRecord], entries: dict[int, ImageEntry], folder: str):
    """Put each record's image in `folder`; yields how, image by image. Zip entries are read in archive
    order, so that a remote archive is read by one request."""
    zipped = [record for record in records if entries[record.image_id].member is not None]
    for record in records:
        entry = entries[record.image_id]
        if entry.member is None:
            yield link_image(entry.path, os.path.join(folder, image_file_name(record)))
    zipped.sort(key=lambda record: entries[record.image_id].member.start)
    run_ends = {}
    for record in zipped:
        entry = entries[record.image_id]
        run_ends[entry.source.read_from] = max(run_ends.get(entry.source.read_from, 0), entry.member.end)
    readers = {}
    try:
        for record in zipped:
            target = os.path.join(folder, image_file_name(record))
            content = read_image(entries[record.image_id], readers, run_ends)
            with open(target, "wb") as file:
                file.write(content)
            yield "read from the zips"
    finally:
        for reader in readers.values():
            reader.close()


def link_image(source: str, target: str) -> str:
    """A hard link to `source` at `target`, or a symbolic one where the file system refuses (another device)."""
    if os.path.lexists(target):
        os.remove(target)
    try:
        os.link(source, target)
        return "hard links"
    except OSError:
        os.symlink(os.path.abspath(source), target)
        return "symbolic links"


PLANS: dict[str, Callable[[ExportPool], Writer]] = {
    "reference": plan_reference,
    "ucch": plan_ucch,
    "dchn": plan_dchn,
    "dsph": plan_dsph,
    "images": plan_images,
}
