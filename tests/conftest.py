"""Shared fixtures: a generated COCO-shaped sample, an independent oracle of its rows, a loopback mirror."""

import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import coco_unified  # noqa: E402
from tools.fakes.http_mirror import serve_mirror  # noqa: E402
from tools.fakes.sample_coco import generate  # noqa: E402

SAMPLE_SCALE = 0.002
SAMPLE_SEED = 0


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The three official zips, COCO-shaped, at a small scale (247 images)."""
    out = tmp_path_factory.mktemp("coco_sample")
    generate(out, SAMPLE_SCALE, SAMPLE_SEED)
    return out


@pytest.fixture(scope="session")
def extracted_dir(sample_dir, tmp_path_factory) -> Path:
    """The same sample as most people keep COCO: train2017/, val2017/, annotations/ folders."""
    out = tmp_path_factory.mktemp("coco_extracted")
    for archive in ("train2017.zip", "val2017.zip", "annotations_trainval2017.zip"):
        with zipfile.ZipFile(sample_dir / archive) as reader:
            reader.extractall(out)
    return out


@pytest.fixture(scope="session")
def oracle(sample_dir) -> dict:
    """Expected rows by image id, computed from the sample with plain json/zipfile code.

    Independent of coco_unified on purpose: it is what the builder is checked against.
    """
    with zipfile.ZipFile(sample_dir / "annotations_trainval2017.zip") as annotations:

        def load(name):
            return json.loads(annotations.read(f"annotations/{name}"))

        rows = {}
        for split in ("train2017", "val2017"):
            captions, instances = load(f"captions_{split}.json"), load(f"instances_{split}.json")
            class_of = {c["id"]: i for i, c in enumerate(sorted(instances["categories"], key=lambda c: c["id"]))}
            with zipfile.ZipFile(sample_dir / f"{split}.zip") as images:
                for image in captions["images"]:
                    rows[image["id"]] = {
                        "image_id": image["id"],
                        "file_name": image["file_name"],
                        "coco_split": split,
                        "width": image["width"],
                        "height": image["height"],
                        "captions": [],
                        "caption_ids": [],
                        "labels": set(),
                        "image": images.read(f"{split}/{image['file_name']}"),
                    }
            for caption in captions["annotations"]:
                rows[caption["image_id"]]["captions"].append(caption["caption"])
                rows[caption["image_id"]]["caption_ids"].append(caption["id"])
            for instance in instances["annotations"]:
                rows[instance["image_id"]]["labels"].add(class_of[instance["category_id"]])
    for index, image_id in enumerate(sorted(rows)):
        row = rows[image_id]
        row["index"] = index
        row["labels"] = sorted(row["labels"])
        row["multi_hot"] = [1 if i in row["labels"] else 0 for i in range(80)]
    return rows


@pytest.fixture(scope="session")
def karpathy_oracle(oracle) -> dict[str, list[int]]:
    """Karpathy's splits of the sample as sorted image ids, from the shipped lists read with plain Python."""
    held_out = {}
    for split, path in coco_unified.KARPATHY_ID_LISTS.items():
        listed = (REPO / path).read_text().split()
        held_out[split] = sorted(int(image_id) for image_id in listed if int(image_id) in oracle)
    taken = {image_id for ids in held_out.values() for image_id in ids}
    return {"train": sorted(set(oracle) - taken), **held_out}


@pytest.fixture(scope="session")
def sidecar(oracle, tmp_path_factory) -> Path:
    """A Doc2Vec sidecar for the sample, in the format tools/doc2vec.py writes."""
    path = tmp_path_factory.mktemp("doc2vec") / "vectors.parquet"
    image_ids = sorted(oracle)
    vectors = np.random.default_rng(0).standard_normal((len(image_ids), coco_unified.DOC2VEC_DIM)).astype(np.float32)
    coco_unified.write_doc2vec_sidecar(str(path), image_ids, vectors, {"model": "random, for tests"})
    return path


@pytest.fixture
def mirror(sample_dir):
    with serve_mirror(sample_dir, layout="coco") as running:
        yield running


@pytest.fixture
def sample_copy(sample_dir, tmp_path) -> Path:
    """A private copy of the sample zips, for tests that damage them."""
    out = tmp_path / "coco"
    shutil.copytree(sample_dir, out)
    return out
