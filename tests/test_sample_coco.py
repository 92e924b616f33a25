"""Checks the archives of tools/fakes/sample_coco.py with independent readers (json, zipfile, PIL)."""

import collections
import io
import json
import struct
import zipfile

import pytest
from PIL import Image

from tools.fakes.sample_coco import (
    REAL_POOL_LABEL_ONES,
    REAL_SPLIT_COUNTS,
    ImageKind,
    RealSizeEncoder,
    RealSizeImages,
    generate,
)

SCALE = 0.002
SEED = 3
SPLITS = ("train2017", "val2017")
ANNOTATIONS = "annotations_trainval2017.zip"
REAL = REAL_SPLIT_COUNTS
UNUSED_CATEGORY_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}

EOCD64_SIGNATURE = b"PK\x06\x06"
EOCD64_LOCATOR_SIGNATURE = b"PK\x06\x07"
EOCD_SIGNATURE = b"PK\x05\x06"
DATA_DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
ZIP64_EXTRA_ID = 0x0001


def expected_counts(split):
    """The tool's rule: round(real * scale), raised to what the corner cases need."""
    real = REAL[split]
    images = max(round(real["images"] * SCALE), 10)
    unlabeled = max(round(real["unlabeled"] * SCALE), 2)
    return {
        "images": images,
        "captions": max(round(real["captions"] * SCALE), 5 * images + 3),  # a 6 and a 7
        "instances": max(round(real["instances"] * SCALE), images - unlabeled),
        "unlabeled": unlabeled,
    }


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sample")
    generate(out_dir, SCALE, SEED)
    return out_dir


@pytest.fixture(scope="module")
def documents(generated_dir):
    """{(kind, split): parsed JSON}, kind in captions / instances / person_keypoints."""
    with zipfile.ZipFile(generated_dir / ANNOTATIONS) as archive:
        return {
            (kind, split): json.loads(archive.read(f"annotations/{kind}_{split}.json"))
            for kind in ("captions", "instances", "person_keypoints")
            for split in SPLITS
        }


LocalHeader = collections.namedtuple("LocalHeader", "flag_bits crc compressed_size size extra data_start")


def local_header(data, info):
    """The entry's local file header, parsed from the archive's bytes."""
    (signature, _, flag_bits, _, _, _, crc, compressed_size, size, name_length, extra_length) = struct.unpack_from(
        "<4sHHHHHIIIHH", data, info.header_offset
    )
    assert signature == b"PK\x03\x04"
    extra_start = info.header_offset + 30 + name_length
    data_start = extra_start + extra_length
    return LocalHeader(flag_bits, crc, compressed_size, size, data[extra_start:data_start], data_start)


def grouped_by_image(annotations):
    """Whether each image's annotations sit next to each other."""
    positions = collections.defaultdict(list)
    for position, annotation in enumerate(annotations):
        positions[annotation["image_id"]].append(position)
    return all(p[-1] - p[0] == len(p) - 1 for p in positions.values())


def extra_field_ids(extra):
    ids, offset = [], 0
    while offset + 4 <= len(extra):
        field_id, size = struct.unpack_from("<HH", extra, offset)
        ids.append(field_id)
        offset += 4 + size
    return ids


def test_out_dir_holds_the_three_official_files(generated_dir):
    assert sorted(path.name for path in generated_dir.iterdir()) == [ANNOTATIONS, "train2017.zip", "val2017.zip"]
    with zipfile.ZipFile(generated_dir / ANNOTATIONS) as archive:
        infos = archive.infolist()
    assert sorted(info.filename for info in infos) == sorted(
        f"annotations/{kind}_{split}.json" for kind in ("captions", "instances", "person_keypoints") for split in SPLITS
    )
    assert {info.compress_type for info in infos} == {zipfile.ZIP_DEFLATED}


def test_counts_follow_the_scaling_rule(documents):
    pool_ones = 0
    for split in SPLITS:
        image_ids = [image["id"] for image in documents["instances", split]["images"]]
        instances = documents["instances", split]["annotations"]
        labeled = {annotation["image_id"] for annotation in instances}
        assert {
            "images": len(image_ids),
            "captions": len(documents["captions", split]["annotations"]),
            "instances": len(instances),
            "unlabeled": len(set(image_ids) - labeled),
        } == expected_counts(split)
        pool_ones += len({(a["image_id"], a["category_id"]) for a in instances})
    assert pool_ones == round(REAL_POOL_LABEL_ONES * SCALE)


def test_json_schema(documents):
    for (kind, split), document in documents.items():
        expected_keys = ["info", "licenses", "images", "annotations"]
        if kind != "captions":
            expected_keys.append("categories")
        assert list(document) == expected_keys
        for image in document["images"]:
            assert set(image) == {
                "id",
                "file_name",
                "width",
                "height",
                "license",
                "coco_url",
                "flickr_url",
                "date_captured",
            }
            assert image["file_name"] == f"{image['id']:012d}.jpg"
        assert document["images"] == documents["captions", split]["images"]

    for split in SPLITS:
        categories = documents["instances", split]["categories"]
        assert len(categories) == 80
        assert {c["id"] for c in categories} == set(range(1, 91)) - UNUSED_CATEGORY_IDS
        assert all(set(c) == {"id", "name", "supercategory"} for c in categories)
        keypoint_categories = documents["person_keypoints", split]["categories"]
        assert [(c["id"], c["name"], len(c["keypoints"])) for c in keypoint_categories] == [(1, "person", 17)]


def test_image_ids_are_unique_random_and_disjoint(documents):
    ids = {split: [image["id"] for image in documents["captions", split]["images"]] for split in SPLITS}
    for split_ids in ids.values():
        assert len(set(split_ids)) == len(split_ids)
        assert split_ids != sorted(split_ids)
        assert all(1 <= image_id <= 581_929 for image_id in split_ids)
    assert not set(ids["train2017"]) & set(ids["val2017"])


def test_captions(documents):
    caption_ids = []
    texts = []
    for split in SPLITS:
        annotations = documents["captions", split]["annotations"]
        assert all(set(a) == {"image_id", "id", "caption"} for a in annotations)
        per_image = collections.Counter(a["image_id"] for a in annotations)
        assert set(per_image) == {image["id"] for image in documents["captions", split]["images"]}
        histogram = collections.Counter(per_image.values())
        assert set(histogram) == {5, 6, 7}
        assert not grouped_by_image(annotations)
        caption_ids += [a["id"] for a in annotations]
        texts += [a["caption"] for a in annotations]
    assert len(set(caption_ids)) == len(caption_ids)

    untidiness = {
        "leading space": lambda t: t.startswith(" "),
        "trailing space": lambda t: t.endswith(" "),
        "space before the period": lambda t: t.rstrip().endswith(" ."),
        "double space": lambda t: "  " in t,
        "no final period": lambda t: not t.rstrip().endswith("."),
        "comma": lambda t: "," in t,
        "possessive": lambda t: "'s " in t,
        "quotes": lambda t: '"' in t,
        "newline": lambda t: "\n" in t,
        "non-ASCII": lambda t: not t.isascii(),
    }
    missing = [name for name, present in untidiness.items() if not any(map(present, texts))]
    assert not missing


def test_instances(documents):
    annotation_ids = []
    for split in SPLITS:
        images = {image["id"]: image for image in documents["instances", split]["images"]}
        annotations = documents["instances", split]["annotations"]
        assert {a["category_id"] for a in annotations} <= set(range(1, 91)) - UNUSED_CATEGORY_IDS
        crowds = 0
        for annotation in annotations:
            assert set(annotation) == {"image_id", "id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
            assert len(annotation["bbox"]) == 4 and all(isinstance(v, float) for v in annotation["bbox"])
            assert isinstance(annotation["area"], float)
            image = images[annotation["image_id"]]
            if annotation["iscrowd"]:
                crowds += 1
                rle = annotation["segmentation"]
                assert rle["size"] == [image["height"], image["width"]]
                assert sum(rle["counts"]) == image["height"] * image["width"]
            else:
                assert annotation["iscrowd"] == 0
                (polygon,) = annotation["segmentation"]
                assert len(polygon) % 2 == 0 and len(polygon) >= 6
                assert all(round(v, 2) == v for v in polygon)
        assert crowds >= 1
        assert not grouped_by_image(annotations)
        annotation_ids += [a["id"] for a in annotations]
    assert len(set(annotation_ids)) == len(annotation_ids)


def test_person_keypoints(documents):
    for split in SPLITS:
        instances = {a["id"]: a for a in documents["instances", split]["annotations"]}
        keypoint_annotations = documents["person_keypoints", split]["annotations"]
        assert keypoint_annotations
        for annotation in keypoint_annotations:
            assert annotation["category_id"] == 1
            assert len(annotation["keypoints"]) == 51
            assert all(isinstance(v, int) for v in annotation["keypoints"])
            assert annotation["num_keypoints"] == sum(v > 0 for v in annotation["keypoints"][2::3])
            assert annotation["bbox"] == instances[annotation["id"]]["bbox"]


@pytest.mark.parametrize("split", SPLITS)
def test_image_archive_contents(generated_dir, documents, split):
    images = {image["id"]: image for image in documents["captions", split]["images"]}
    with zipfile.ZipFile(generated_dir / f"{split}.zip") as archive:
        infos = archive.infolist()
        assert infos[0].filename == f"{split}/" and infos[0].is_dir()
        file_infos = infos[1:]
        ids = [int(info.filename.removeprefix(f"{split}/").removesuffix(".jpg")) for info in file_infos]
        assert [info.filename for info in file_infos] == [f"{split}/{i:012d}.jpg" for i in ids]
        assert ids != sorted(ids)
        unlisted = [position for position, image_id in enumerate(ids) if image_id not in images]
        assert len(unlisted) == 1 and 0 < unlisted[0] < len(ids) - 1
        assert set(ids) - {ids[unlisted[0]]} == set(images)
        assert {info.compress_type for info in file_infos} == {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}

        greyscale = png = 0
        for image_id, info in zip(ids, file_infos):
            data = archive.read(info)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                if image_id in images:
                    assert image.size == (images[image_id]["width"], images[image_id]["height"])
                greyscale += image.mode == "L"
                png += data.startswith(b"\x89PNG\r\n\x1a\n")
        assert greyscale >= 3
        assert png >= 1


def test_images_are_unique(generated_dir):
    contents = []
    for split in SPLITS:
        with zipfile.ZipFile(generated_dir / f"{split}.zip") as archive:
            contents += [archive.read(info) for info in archive.infolist() if not info.is_dir()]
    assert len(set(contents)) == len(contents)


def test_train_archive_has_zip64_extras_and_end_records(generated_dir):
    data = (generated_dir / "train2017.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    zip64_entries = [info for info in infos if ZIP64_EXTRA_ID in extra_field_ids(local_header(data, info).extra)]
    assert len(zip64_entries) >= 3
    assert all(info.extract_version >= 45 for info in zip64_entries)

    eocd = data.rindex(EOCD_SIGNATURE)
    locator = data.rindex(EOCD64_LOCATOR_SIGNATURE, 0, eocd)
    (eocd64_offset,) = struct.unpack_from("<Q", data, locator + 8)
    assert data[eocd64_offset : eocd64_offset + 4] == EOCD64_SIGNATURE
    entries_on_disk, entries_total = struct.unpack_from("<QQ", data, eocd64_offset + 24)
    assert entries_on_disk == entries_total == len(infos)


def test_val_archive_entries_all_have_data_descriptors(generated_dir):
    data = (generated_dir / "val2017.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    for info in infos:
        assert info.flag_bits & 0x08
        header = local_header(data, info)
        assert header.flag_bits & 0x08
        assert header.crc == header.compressed_size == header.size == 0
        data_end = header.data_start + info.compress_size
        assert data[data_end : data_end + 4] == DATA_DESCRIPTOR_SIGNATURE


def test_equal_arguments_give_identical_bytes(generated_dir, tmp_path):
    generate(tmp_path, SCALE, SEED)
    for name in ("train2017.zip", "val2017.zip", ANNOTATIONS):
        assert (tmp_path / name).read_bytes() == (generated_dir / name).read_bytes(), name


def test_train2017_figures_derived_from_the_pool_are_the_published_ones():
    # train2017 is the pool (coco_unified.REAL_COUNTS) less val2017; these are its own JSON's counts.
    assert REAL["train2017"] == {"images": 118_287, "captions": 591_753, "instances": 860_001, "unlabeled": 1_021}


def test_scale_outside_what_coco_ids_allow_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"scale=5.0 is outside \(0, 4.0\]"):
        generate(tmp_path, 5.0, 0)
    assert not list(tmp_path.iterdir())


def test_real_size_images_have_the_size_the_annotations_give_and_are_deflated(tmp_path):
    real_size = RealSizeImages(width=160, height=120, quality=85)
    generate(tmp_path, SCALE, SEED, real_size)
    with zipfile.ZipFile(tmp_path / ANNOTATIONS) as archive:
        listed = json.loads(archive.read("annotations/instances_val2017.json"))["images"]
    assert {(image["width"], image["height"]) for image in listed} == {(160, 120)}
    with zipfile.ZipFile(tmp_path / "val2017.zip") as archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        contents = [archive.read(info) for info in entries]
    assert {info.compress_type for info in entries} == {zipfile.ZIP_DEFLATED}
    assert len(set(contents)) == len(contents)  # the pool's pictures are reused, the files are distinct
    decoded = [Image.open(io.BytesIO(content)) for content in contents]
    assert {image.size for image in decoded} == {(160, 120)}
    assert {image.format for image in decoded} == {"JPEG", "PNG"}
    assert {image.mode for image in decoded} >= {"RGB"}
    for image in decoded:
        image.load()  # the comment inserted after the JFIF header leaves a valid JPEG


def test_real_size_images_are_as_large_as_a_coco_photo(tmp_path):
    """640x427 at quality 90: about the 163 KB of an average COCO image, not a flat picture."""
    encoder = RealSizeEncoder(RealSizeImages(640, 427), SEED)
    sizes = [len(encoder(image_id, ImageKind.RGB_JPEG)) for image_id in range(20)]
    assert 130_000 < sum(sizes) / len(sizes) < 200_000
