"""Reading COCO over a faulty network (issue 8): secrets, retries, timeouts, short replies, stale downloads, proxies.

Every fault is real: the loopback mirror of tools/fakes/http_mirror.py injects it (a password it
requires, 503s, dropped or stalled connections, 206 replies capped short, Range ignored), the
download cache is damaged on disk, the proxy of tools/fakes/http_proxy.py relays the requests.
Delays are cut short through coco_unified.RETRY_BASE_DELAY and read_timeout.
"""

import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import datasets
import numpy as np
import pytest

import coco_unified
from coco_unified import ArchiveError, CocoUnified, MissingPartError, ServerUnreachableError
from tools.fakes.http_mirror import serve_mirror
from tools.fakes.http_proxy import serve_proxy
from tools.lib.publish import PublishOptions, write_folder

REPO = Path(__file__).resolve().parents[1]
# The coco-unified command of this checkout (the installed one may be another's).
COMMAND = [sys.executable, "-c", "import sys; from tools.cli import main; sys.exit(main())"]
LOGGER = "datasets.coco_unified"
ANNOTATIONS_ZIP = "annotations/annotations_trainval2017.zip"
TRAIN_ZIP = "zips/train2017.zip"
USER, PASSWORD = "alice", "s3cr3tPASS"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(coco_unified, "RETRY_BASE_DELAY", 0.01)


def builder(tmp_path, config="default", **kwargs):
    kwargs.setdefault("doc2vec", False)
    return CocoUnified(config_name=config, cache_dir=str(tmp_path / "cache"), **kwargs)


def prepared_ids(tmp_path, config="no_images", **kwargs):
    made = builder(tmp_path, config, **kwargs)
    made.download_and_prepare()
    return sorted(made.as_dataset("train")["image_id"])


def streamed_rows(tmp_path, config="default", **kwargs):
    rows = builder(tmp_path, config, **kwargs).as_streaming_dataset("train")
    if "image" in rows.features:
        rows = rows.cast_column("image", datasets.Image(decode=False))
    return list(rows)


def assert_rows_match(rows, oracle):
    assert sorted(row["image_id"] for row in rows) == sorted(oracle)
    for row in rows:
        assert row["captions"] == oracle[row["image_id"]]["captions"]
        if "image" in row:
            assert row["image"]["bytes"] == oracle[row["image_id"]]["image"]


def with_password(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{PASSWORD}@")


def every_file_holding(root: Path, secret: str) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]


# ----------------------------------------------------------------------------- 1. secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://alice:pw@host:8000/coco", "http://host:8000/coco"),
        ("https://host/x.parquet?X-Amz-Signature=abc&part=1", "https://host/x.parquet?X-Amz-Signature=REDACTED&part=1"),
        (
            "https://host/x?token=abc&access_key=k&sig=s",
            "https://host/x?token=REDACTED&access_key=REDACTED&sig=REDACTED",
        ),
        ("/data/coco", "/data/coco"),
    ],
)
def test_redact_url_leaves_out_user_info_and_secret_query_values(url, shown):
    assert coco_unified.redact_url(url) == shown


def test_a_password_in_base_url_is_sent_and_written_nowhere(mirror, tmp_path):
    """doc2vec and push --dry-run from a mirror that requires the password: no file, cache or log holds it."""
    mirror.require_password(USER, PASSWORD)
    secret_url = with_password(mirror.base_url)
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HOME": str(tmp_path / "hf_home")}
    sidecar = tmp_path / "out" / "vectors.parquet"
    commands = [
        ["doc2vec", "--base-url", secret_url, "--output", str(sidecar), "--epochs", "2", "--infer-epochs", "2"],
        ["push", "--base-url", secret_url, "--doc2vec-path", str(sidecar), "--configs", "default", "no_images"]
        + ["--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "hub"), "--dry-run"],
    ]
    logs = []
    for command in commands:
        run = subprocess.run(
            [*COMMAND, *command, "--verbose"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        logs.append(run.stdout + run.stderr)
        assert run.returncode == 0, logs[-1]
    assert mirror.traffic().requests > 0
    assert (tmp_path / "hub" / "README.md").is_file() and (tmp_path / "cache").is_dir()
    assert "127.0.0.1" in (tmp_path / "hub" / "README.md").read_text()  # the source is there, without its password
    assert every_file_holding(tmp_path, PASSWORD) == []
    assert not any(PASSWORD in log for log in logs)


def test_a_sidecar_recording_a_password_is_published_without_it(sidecar_with_password, tmp_path):
    with pytest.raises(coco_unified.CocoError, match=r"records a URL with a password .*'http://127\.0\.0\.1:8000'"):
        write_folder(PublishOptions(output=str(tmp_path / "script"), mode="script", doc2vec_path=sidecar_with_password))
    assert not (tmp_path / "script").exists()


@pytest.fixture
def sidecar_with_password(oracle, tmp_path):
    """A sidecar as `coco-unified doc2vec` wrote it before it left credentials out of the provenance."""
    path = str(tmp_path / "old.parquet")
    vectors = np.zeros((len(oracle), coco_unified.DOC2VEC_DIM), np.float32)
    coco_unified.write_doc2vec_sidecar(
        path, sorted(oracle), vectors, {"source": f"http://{USER}:{PASSWORD}@127.0.0.1:8000"}
    )
    return path


def test_base_url_without_the_password_is_refused_and_errors_do_not_show_it(mirror, tmp_path):
    mirror.require_password(USER, PASSWORD)
    with pytest.raises(
        ServerUnreachableError, match=r"HTTP 401 from 127\.0\.0\.1:\d+ \(refused credentials: .*\) after 1 attempt"
    ):
        streamed_rows(tmp_path, "no_images", base_url=mirror.base_url)
    with pytest.raises(MissingPartError, match="not found") as caught:
        streamed_rows(tmp_path, "no_images", base_url=with_password(mirror.base_url) + "/no-such-mirror")
    assert PASSWORD not in str(caught.value)


def test_the_password_goes_to_its_host_only(mirror, sample_dir, tmp_path):
    """A sidecar on another server (here: the same mirror under its other name) gets no credentials."""
    mirror.require_password(USER, PASSWORD)
    other_host = mirror.base_url.replace("127.0.0.1", "localhost")
    with pytest.raises(coco_unified.CocoError, match=r"HTTP 401 from localhost"):
        builder(
            tmp_path,
            "no_images",
            base_url=with_password(mirror.base_url),
            doc2vec=True,
            doc2vec_path=f"{other_host}/{ANNOTATIONS_ZIP}",
        ).as_streaming_dataset("train")


# ----------------------------------------------------------------------------- 3. opening a remote archive


def test_opening_is_retried_through_busy_and_dropped_replies(mirror, oracle, tmp_path):
    mirror.fail_status(ANNOTATIONS_ZIP, 503, times=4)
    mirror.drop_after(ANNOTATIONS_ZIP, 10, times=2)
    mirror.fail_status(TRAIN_ZIP, 429, times=4)
    assert_rows_match(streamed_rows(tmp_path, base_url=mirror.base_url), oracle)


# ----------------------------------------------------------------------------- 4. downloads while preparing


def test_downloads_are_retried_and_a_stall_times_out(mirror, oracle, tmp_path):
    mirror.fail_status(ANNOTATIONS_ZIP, 503, times=4)
    mirror.stall(ANNOTATIONS_ZIP, 3.0)
    assert prepared_ids(tmp_path, base_url=mirror.base_url, read_timeout=0.5) == sorted(oracle)


def cached_download(tmp_path) -> Path:
    (path,) = [p for p in (tmp_path / "cache" / "downloads").iterdir() if p.suffix not in (".json", ".lock")]
    return path


def test_a_truncated_cached_download_is_fetched_again(mirror, oracle, tmp_path, caplog):
    prepared_ids(tmp_path, base_url=mirror.base_url)
    cached = cached_download(tmp_path)
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])  # as an earlier run cut short left it
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert prepared_ids(tmp_path, "labeled_no_images", base_url=mirror.base_url) == sorted(
        image_id for image_id, row in oracle.items() if row["labels"]
    )
    assert f"{cached}, the cached download of {mirror.url(ANNOTATIONS_ZIP)}, is not a readable zip" in caplog.text
    assert zipfile.is_zipfile(cached)


def test_a_download_truncated_again_names_the_cache_file_and_force_redownload(sample_copy, tmp_path):
    archive = sample_copy / "annotations_trainval2017.zip"
    archive.write_bytes(archive.read_bytes()[:-1000])
    with serve_mirror(sample_copy) as truncating:
        with pytest.raises(ArchiveError, match=r'downloads/\w+, downloaded from .* download_mode="force_redownload"'):
            prepared_ids(tmp_path, base_url=truncating.base_url)


# ----------------------------------------------------------------------------- 5. short replies, progress, stalls


def test_replies_capped_at_32_kb_are_continued_without_counting_failures(mirror, oracle, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "ATTEMPTS", 1, raising=False)  # any counted failure would end the read
    for path in (ANNOTATIONS_ZIP, TRAIN_ZIP, "zips/val2017.zip"):
        mirror.cap_replies(path, 32 << 10)
    assert_rows_match(streamed_rows(tmp_path, base_url=mirror.base_url, num_shards=1), oracle)
    assert mirror.traffic().for_path(TRAIN_ZIP).requests > 5


def test_the_failure_budget_starts_again_while_bytes_arrive(mirror, oracle, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_unified, "ATTEMPTS", 3, raising=False)
    rows = builder(tmp_path, base_url=mirror.base_url, num_shards=1).as_streaming_dataset("train")
    mirror.drop_after(TRAIN_ZIP, 20_000, times=8, linger=0.1)  # 8 drops, each after progress
    rows = rows.cast_column("image", datasets.Image(decode=False))
    assert_rows_match(list(rows), oracle)


def test_a_stalled_read_is_retried_after_read_timeout(mirror, oracle, tmp_path, caplog):
    rows = builder(tmp_path, base_url=mirror.base_url, num_shards=1, read_timeout=0.5).as_streaming_dataset("train")
    mirror.stall(TRAIN_ZIP, 5.0)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert_rows_match(list(rows.cast_column("image", datasets.Image(decode=False))), oracle)
    assert "no data within the read timeout (read_timeout=)" in caplog.text


def test_read_timeout_does_not_change_the_cache(tmp_path, sample_dir):
    assert builder(tmp_path, read_timeout=5).cache_dir == builder(tmp_path).cache_dir
    with pytest.raises(coco_unified.ConfigError, match=r"read_timeout=0: .* e\.g\. read_timeout=60"):
        builder(tmp_path, read_timeout=0)


# ----------------------------------------------------------------------------- 6. proxies


@pytest.mark.parametrize("streaming", [False, True])
def test_http_proxy_is_honoured(streaming, mirror, oracle, tmp_path, monkeypatch):
    """The mirror under a name only the proxy resolves: reachable through HTTP_PROXY alone."""
    host, port = mirror.base_url.removeprefix("http://").split(":")
    with serve_proxy({"coco-mirror.test": (host, int(port))}) as proxy:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):  # scripts/test.sh exempts 127.0.0.1: the mirror's name is not it
            monkeypatch.setenv(name, "")
        if streaming:
            assert_rows_match(streamed_rows(tmp_path, base_url="http://coco-mirror.test"), oracle)
        else:
            assert prepared_ids(tmp_path, base_url="http://coco-mirror.test") == sorted(oracle)
        assert proxy.requests() > 0
