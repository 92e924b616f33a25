"""Zips whose central directory lies about an entry's size, for the bounded-inflation tests and benchmark.

Each case copies a sample's annotations zip and rewrites one JSON entry with real `zipfile`, then
changes the size its central-directory record declares (zipfile writes the Zip64 extra field a
1 TiB size needs). The local header keeps the true sizes; the loader trusts the central
directory, as every ranged reader must (the local header of a data-descriptor entry has none).

    declared_1gib   the entry's real bytes, declared as 1 GiB
    declared_1tib   the entry's real bytes, declared as 1 TiB
    deflate_bomb    400 MB of zeros deflated to ~400 KB, declared as 1,000 bytes

    make_hostile_copy(sample_dir, out_dir, "deflate_bomb")  # out_dir: the sample, one entry hostile
"""

import shutil
import zipfile
from pathlib import Path

# The entry made hostile: read by every build, first of the annotation files.
HOSTILE_ENTRY = "annotations/captions_train2017.json"
ANNOTATIONS_ZIP = "annotations_trainval2017.zip"
BOMB_BYTES = 400_000_000
BOMB_DECLARED = 1_000
BOMB_WRITE_CHUNK = 1 << 24

# case -> the size declared for the entry, and whether it holds the bomb (else its real bytes).
CASES = {
    "declared_1gib": (1 << 30, False),
    "declared_1tib": (1 << 40, False),
    "deflate_bomb": (BOMB_DECLARED, True),
}


def make_hostile_copy(sample_dir: Path, out_dir: Path, case: str) -> Path:
    """A copy of the sample in `out_dir` whose annotations zip holds the hostile entry of `case`."""
    declared, bomb = CASES[case]
    shutil.copytree(sample_dir, out_dir)
    write_lying_zip(Path(sample_dir) / ANNOTATIONS_ZIP, Path(out_dir) / ANNOTATIONS_ZIP, declared, bomb)
    return Path(out_dir)


def write_lying_zip(source: Path, target: Path, declared: int, bomb: bool) -> None:
    """`source` rewritten to `target` with HOSTILE_ENTRY declared as `declared` bytes (holding the bomb if asked)."""
    with zipfile.ZipFile(source) as reader, zipfile.ZipFile(target, "w") as writer:
        for info in reader.infolist():
            entry = zipfile.ZipInfo(info.filename, info.date_time)
            entry.compress_type = zipfile.ZIP_DEFLATED if info.filename == HOSTILE_ENTRY else info.compress_type
            if info.filename != HOSTILE_ENTRY:
                writer.writestr(entry, reader.read(info))
                continue
            with writer.open(entry, "w", force_zip64=True) as stream:
                if bomb:
                    zeros = bytes(BOMB_WRITE_CHUNK)
                    for start in range(0, BOMB_BYTES, BOMB_WRITE_CHUNK):
                        stream.write(zeros[: min(BOMB_WRITE_CHUNK, BOMB_BYTES - start)])
                else:
                    stream.write(reader.read(info))
            # The central directory is written from these records when the writer closes.
            writer.getinfo(info.filename).file_size = declared
