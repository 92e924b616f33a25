"""Hostile and damaged input (issue 8): lying archives, bad annotations, stale caches, killed runs, messages."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_builder import edit_annotation, prepare, raises_coco_error, rewrite_zip

from coco_unified import AnnotationError, ArchiveError
from tools.fakes.hostile_zip import CASES, HOSTILE_ENTRY, make_hostile_copy

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- bounded inflation

# Reads the hostile entry in a child whose data segment may grow by this much only: an allocation
# that follows the declared size (1 GiB, 1 TiB) or the bomb's 400 MB is refused there.
MEMORY_HEADROOM = 200 << 20
READ_UNDER_LIMIT = textwrap.dedent(
    """
    import resource, sys
    import coco_unified
    data_dir, entry = sys.argv[1:]
    source = coco_unified.locate_sources(data_dir)[coco_unified.ANNOTATIONS]
    files = coco_unified.AnnotationFiles(source)
    with open("/proc/self/status") as status:
        used_kb = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
    limit = used_kb * 1024 + %d
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        files.read(entry.split("/", 1)[1])
    except coco_unified.ArchiveError as error:
        print("ArchiveError:", error)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc are Linux's")
@pytest.mark.parametrize("case", sorted(CASES))
def test_lying_entry_is_reported_without_allocating_what_it_claims(case, sample_dir, tmp_path):
    data_dir = make_hostile_copy(sample_dir, tmp_path / case, case)
    child = subprocess.run(
        [sys.executable, "-c", READ_UNDER_LIMIT % MEMORY_HEADROOM, str(data_dir), HOSTILE_ENTRY],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert f"ArchiveError: {data_dir / 'annotations_trainval2017.zip'}, entry {HOSTILE_ENTRY}:" in child.stdout
    declared = f"{CASES[case][0]:,}"
    assert declared in child.stdout


def test_deflate_bomb_fails_the_build_naming_the_entry(sample_dir, tmp_path):
    data_dir = make_hostile_copy(sample_dir, tmp_path / "bomb", "deflate_bomb")
    with raises_coco_error(ArchiveError, rf"entry {HOSTILE_ENTRY}: inflates to more than the 1,000 bytes"):
        prepare(tmp_path, "no_images", data_dir=str(data_dir))


# ----------------------------------------------------------------------------- annotation checks


def _first_image(doc):
    return doc["images"][0]


@pytest.mark.parametrize(
    ("file_name", "edit", "pattern"),
    [
        (
            "captions_val2017.json",
            lambda doc: doc["images"][1].update(file_name=doc["images"][0]["file_name"]),
            r"captions_val2017\.json: images \d+ and \d+ both name the file \d+\.jpg",
        ),
        (
            "captions_val2017.json",
            lambda doc: _first_image(doc).update(width=2**40),
            r"captions_val2017\.json: Expected `int` <= 2147483647 - at `\$\.images\[0\]\.width`",
        ),
        (
            "captions_val2017.json",
            lambda doc: _first_image(doc).update(width=-640),
            r"captions_val2017\.json: Expected `int` >= 1 - at `\$\.images\[0\]\.width`",
        ),
        (
            "captions_train2017.json",
            lambda doc: doc["annotations"][2].update(id=2**63),
            r"captions_train2017\.json: Expected `int` <= 9223372036854775807 - at `\$\.annotations\[2\]\.id`",
        ),
        (
            "captions_train2017.json",
            lambda doc: doc["annotations"].append(doc["annotations"][5]),
            r"captions_train2017\.json: caption annotation \d+ is listed twice",
        ),
    ],
    ids=["shared_file_name", "width_2_40", "negative_width", "id_2_63", "caption_twice"],
)
def test_bad_annotation_values_name_file_and_entry(file_name, edit, pattern, sample_copy, tmp_path):
    edit_annotation(sample_copy, file_name, edit)
    with raises_coco_error(AnnotationError, pattern):
        prepare(tmp_path, data_dir=str(sample_copy))


def test_invalid_utf8_in_annotations_names_the_file(sample_copy, tmp_path):
    def break_encoding(name, data):
        return data.replace(b'"caption": "', b'"caption": "\xff', 1) if name.endswith("captions_val2017.json") else data

    rewrite_zip(sample_copy / "annotations_trainval2017.zip", break_encoding)
    with raises_coco_error(AnnotationError, r"captions_val2017\.json: malformed JSON \(.*utf-8.*\)"):
        prepare(tmp_path, "no_images", data_dir=str(sample_copy))


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_extracted_image_is_named(damage, extracted_dir, oracle, tmp_path):
    copy = tmp_path / "extracted"
    subprocess.run(["cp", "-r", str(extracted_dir), str(copy)], check=True)
    victim = next(row for row in oracle.values() if row["coco_split"] == "val2017")["file_name"]
    path = copy / "val2017" / victim
    content = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else content[: len(content) // 2])
    with raises_coco_error(ArchiveError, rf"val2017/{victim}: .*(empty|without its end marker)"):
        prepare(tmp_path, data_dir=str(copy))
