"""Hostile and damaged input (issue 8): lying archives, bad annotations, stale caches, killed runs, messages."""

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_builder import edit_annotation, make_builder, prepare, raises_coco_error, rewrite_zip, stream

import coco_unified
from coco_unified import (
    DOC2VEC_DIM,
    AnnotationError,
    ArchiveError,
    CocoUnified,
    ConfigError,
    SidecarError,
    read_doc2vec_sidecar,
    write_doc2vec_sidecar,
)
from tools.fakes.hostile_zip import CASES, HOSTILE_ENTRY, make_hostile_copy
from tools.fakes.http_mirror import serve_mirror

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mirror_of():
    """A loopback mirror of a given folder, stopped when the test ends; returns its base URL."""
    with contextlib.ExitStack() as stack:

        def start(folder):
            return stack.enter_context(serve_mirror(folder, layout="coco")).base_url

        yield start


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


def _deflated_zip(path: Path, content: bytes) -> coco_unified.ZipMember:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("entry.bin", content)
    with open(path, "rb") as archive:
        (member,) = coco_unified.read_zip_directory(archive, str(path))
    return member


def _read(path: Path, member: coco_unified.ZipMember) -> bytes:
    reader = coco_unified.ByteRangeReader(str(path))
    try:
        return bytes(coco_unified.read_member(reader, member, member.end))
    finally:
        reader.close()


# Entries up to ONE_SHOT_INFLATE_MAX are inflated by libdeflate in one call, larger ones by ISA-L in
# chunks: both read the same bytes and fail with the same words.
BOTH_INFLATERS = pytest.mark.parametrize(
    "one_shot_max", [coco_unified.ONE_SHOT_INFLATE_MAX, 0], ids=["one call", "chunks"]
)


@BOTH_INFLATERS
def test_both_inflaters_read_an_entry_exactly(one_shot_max, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "ONE_SHOT_INFLATE_MAX", one_shot_max)
    content = np.random.default_rng(0).integers(0, 8, 3 * coco_unified.READ_CHUNK, dtype=np.uint8).tobytes()
    member = _deflated_zip(tmp_path / "a.zip", content)
    assert member.compressed_size > coco_unified.READ_CHUNK  # the chunked path reads several chunks
    assert _read(tmp_path / "a.zip", member) == content


@BOTH_INFLATERS
def test_an_entry_inflating_to_fewer_bytes_than_declared_is_named(one_shot_max, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "ONE_SHOT_INFLATE_MAX", one_shot_max)
    member = _deflated_zip(tmp_path / "a.zip", b"coco " * 1000)
    lying = dataclasses.replace(member, size=member.size + 10)
    with raises_coco_error(ArchiveError, r"a\.zip, entry entry\.bin: 5,000 bytes instead of the 5,010 its directory"):
        _read(tmp_path / "a.zip", lying)


@BOTH_INFLATERS
def test_an_entry_of_invalid_deflate_data_is_named(one_shot_max, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "ONE_SHOT_INFLATE_MAX", one_shot_max)
    path = tmp_path / "a.zip"
    member = _deflated_zip(path, b"coco " * 1000)
    data = bytearray(path.read_bytes())
    start = member.end - member.compressed_size
    data[start : member.end] = b"\xff" * member.compressed_size  # a reserved block type
    path.write_bytes(bytes(data))
    with raises_coco_error(ArchiveError, r"a\.zip, entry entry\.bin: corrupt data \(.*\); download it again"):
        _read(path, member)


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


# ----------------------------------------------------------------------------- messages


def test_null_vector_row_names_its_image(oracle, tmp_path):
    image_ids = sorted(oracle)
    rows = [[0.5] * DOC2VEC_DIM for _ in image_ids]
    rows[7] = None
    path = tmp_path / "null_row.parquet"
    table = pa.table(
        {"image_id": pa.array(image_ids, pa.int64()), "doc2vec": pa.array(rows, pa.list_(pa.float32(), DOC2VEC_DIM))}
    )
    pq.write_table(table, path)
    with raises_coco_error(SidecarError, rf"the Doc2Vec row for image_id {image_ids[7]} is null \(1 null row"):
        read_doc2vec_sidecar(str(path), image_ids)


@pytest.mark.parametrize("load", [prepare, stream])
def test_zip_missing_its_beginning_is_reported_without_negative_offsets(load, sample_copy, mirror_of, tmp_path):
    path = sample_copy / "val2017.zip"
    with zipfile.ZipFile(path) as reader:
        cut = sorted(info.header_offset for info in reader.infolist())[3]
    path.write_bytes(path.read_bytes()[cut:])
    source = {"data_dir": str(sample_copy)} if load is prepare else {"base_url": mirror_of(sample_copy)}
    with raises_coco_error(
        ArchiveError, r"val2017\.zip: its directory places entry .* bytes before the start"
    ) as caught:
        load(tmp_path, **source)
    assert not re.search(r"(byte|bytes) -\d", str(caught.value.__cause__ or caught.value))


def test_data_dir_with_chained_url_separator_is_named_whole(sample_dir, tmp_path):
    data_dir = tmp_path / "coco::2017"
    shutil.copytree(sample_dir, data_dir)
    with raises_coco_error(ConfigError, re.escape(f"data_dir={str(data_dir)!r}: '::' separates chained URLs")):
        prepare(tmp_path, data_dir=str(data_dir))


# ----------------------------------------------------------------------------- stale prepared cache


def _first_caption(builder):
    return builder.as_dataset("train")[0]["captions"][0]


def test_archive_edited_in_place_is_prepared_again(sample_copy, tmp_path):
    first = make_builder(tmp_path, "no_images", data_dir=str(sample_copy))
    first.download_and_prepare()
    before = _first_caption(first)
    edit_annotation(
        sample_copy, "captions_train2017.json", lambda doc: _caption_of_first_image(doc).update(caption="EDITED")
    )
    edit_annotation(
        sample_copy, "captions_val2017.json", lambda doc: _caption_of_first_image(doc).update(caption="EDITED")
    )
    again = make_builder(tmp_path, "no_images", data_dir=str(sample_copy))
    again.download_and_prepare()
    assert before != "EDITED"
    assert _first_caption(again) == "EDITED"


def _caption_of_first_image(doc):
    """The first caption of the image with the smallest id (the pool's first row, if in this file)."""
    first_image = min(image["id"] for image in doc["images"])
    return next(caption for caption in doc["annotations"] if caption["image_id"] == first_image)


def test_sidecar_rebuilt_at_the_same_path_is_joined_again(sample_dir, oracle, tmp_path):
    path = tmp_path / "vectors.parquet"
    image_ids = sorted(oracle)
    loads = []
    for seed in (1, 2):
        vectors = np.random.default_rng(seed).standard_normal((len(image_ids), DOC2VEC_DIM)).astype(np.float32)
        write_doc2vec_sidecar(str(path), image_ids, vectors, {"model": "random, for tests"})
        builder = make_builder(tmp_path, "no_images", data_dir=str(sample_dir), doc2vec=True, doc2vec_path=str(path))
        builder.download_and_prepare()
        row = builder.as_dataset("train")[0]
        loads.append((vectors[image_ids.index(row["image_id"])], np.asarray(row["doc2vec"], np.float32)))
    assert path.stat().st_size > 0
    for expected, joined in loads:
        assert np.array_equal(joined, expected)


def test_inputs_fingerprint_is_not_a_user_keyword(sample_dir, tmp_path):
    with raises_coco_error(ConfigError, r"inputs_fingerprint= is set by CocoUnified itself"):
        make_builder(tmp_path, data_dir=str(sample_dir), inputs_fingerprint="0123")


# ----------------------------------------------------------------------------- housekeeping


def test_making_a_builder_writes_nothing_beside_the_checkout(sample_dir, tmp_path):
    checkout = tmp_path / "outside" / "checkout"
    checkout.mkdir(parents=True)
    shutil.copy(REPO / "coco_unified.py", checkout)
    cache = tmp_path / "outside" / "cache"
    code = (
        "from coco_unified import CocoUnified\n"
        f"builder = CocoUnified(config_name='no_images', data_dir={str(sample_dir)!r}, cache_dir={str(cache)!r}, "
        "doc2vec=False)\n"
        "builder.download_and_prepare(num_proc=2)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=checkout, check=True, capture_output=True, env=_child_env(checkout)
    )
    assert sorted(os.listdir(tmp_path)) == ["outside"]
    assert sorted(os.listdir(tmp_path / "outside")) == ["cache", "checkout"]


def _child_env(path) -> dict:
    return {**os.environ, "PYTHONPATH": str(path)}


def _children(pid: int) -> set[int]:
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children |= {int(child) for child in (task / "children").read_text().split()}
    return children


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
def test_killed_preparation_ends_its_workers_and_leaves_nothing_a_rerun_keeps(extracted_dir, oracle, tmp_path):
    data_dir = tmp_path / "extracted"
    shutil.copytree(extracted_dir, data_dir)
    # The pool's last image is a FIFO: the worker preparing the last shard blocks opening it, for
    # as long as the test wants, while the other worker writes its shard.
    last = oracle[max(oracle)]
    fifo = data_dir / last["coco_split"] / last["file_name"]
    fifo.unlink()
    os.mkfifo(fifo)
    cache = tmp_path / "cache"
    code = (
        "from coco_unified import CocoUnified\n"
        f"CocoUnified(data_dir={str(data_dir)!r}, cache_dir={str(cache)!r}, doc2vec=False, num_shards=4)"
        ".download_and_prepare(num_proc=2)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], env=_child_env(REPO), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob("coco_unified/*/*.incomplete/*.arrow")):
            assert parent.poll() is None and time.monotonic() < deadline, "the preparation never wrote a shard"
            time.sleep(0.05)
        workers = _children(parent.pid)
        assert len(workers) >= 2
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left_running = [pid for pid in workers if _running(pid)]
    for pid in left_running:
        os.kill(pid, 9)
    assert not left_running, "workers outlived the killed preparation"

    feeder = threading.Thread(target=fifo.write_bytes, args=(last["image"],))
    feeder.start()
    builder = CocoUnified(data_dir=str(data_dir), cache_dir=str(cache), doc2vec=False, num_shards=4)
    builder.download_and_prepare()
    feeder.join()
    dataset = builder.as_dataset("train")
    assert len(dataset) == len(oracle)
    kept = {Path(path).name for path in os.listdir(builder.cache_dir) if path.endswith(".arrow")}
    assert kept == {Path(file["filename"]).name for file in dataset.cache_files}
