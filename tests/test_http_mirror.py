"""tools/fakes/http_mirror.py against real clients: fsspec (aiohttp), requests and http.client."""

import contextlib
import http.client
import os
import random
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import aiohttp
import fsspec
import pytest
import requests

from tools.fakes.http_mirror import CHUNK_SIZE, COCO_LAYOUT, serve_mirror

# Bigger than two send chunks, so ranges and patches can straddle a chunk boundary.
BLOB_SIZE = 2 * CHUNK_SIZE + 12_345
MEMBER = "val2017/000000000139.jpg"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory):
    """A flat directory: blob.bin plus the three COCO zips, each a small real zip."""
    root = tmp_path_factory.mktemp("mirror")
    rng = random.Random(2017)
    (root / "blob.bin").write_bytes(rng.randbytes(BLOB_SIZE))
    for name in COCO_LAYOUT.values():
        with zipfile.ZipFile(root / name, "w") as archive:
            archive.writestr(MEMBER, rng.randbytes(30_000))
            archive.writestr(f"{name}.txt", f"this is {name}")
    return root


@pytest.fixture
def blob(mirror_root):
    return (mirror_root / "blob.bin").read_bytes()


@pytest.fixture
def mirror(mirror_root):
    with serve_mirror(mirror_root, layout="plain") as running:
        yield running


@pytest.fixture
def coco_mirror(mirror_root):
    with serve_mirror(mirror_root, layout="coco") as running:
        yield running


@pytest.fixture
def connection(mirror):
    """A raw keep-alive connection to the plain mirror, for what higher-level clients hide."""
    with contextlib.closing(connect(mirror)) as raw:
        yield raw


def read_stream(url, range_header=None):
    """Everything an HTTPStreamFile (one GET, short reads) yields for ``url``."""
    headers = {"Range": range_header} if range_header else {}
    received = bytearray()
    with fsspec.open(url, "rb", block_size=0, headers=headers) as stream:
        while chunk := stream.read(1 << 16):
            received += chunk
    return bytes(received)


def request(connection, method, path, headers=None):
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    return response, response.read()


def connect(mirror):
    host, port = mirror.base_url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=5)


def test_head_reports_size_and_range_support(mirror):
    response = requests.head(mirror.url("blob.bin"))
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(BLOB_SIZE)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert fsspec.filesystem("http").size(mirror.url("blob.bin")) == BLOB_SIZE


@pytest.mark.parametrize(
    "range_header, first, last",
    [
        ("bytes=0-9", 0, 9),
        (f"bytes={CHUNK_SIZE - 5}-{CHUNK_SIZE + 4}", CHUNK_SIZE - 5, CHUNK_SIZE + 4),
        ("bytes=100-", 100, BLOB_SIZE - 1),
        ("bytes=-7", BLOB_SIZE - 7, BLOB_SIZE - 1),
        (f"bytes=-{BLOB_SIZE + 10}", 0, BLOB_SIZE - 1),
        (f"bytes=10-{BLOB_SIZE + 100}", 10, BLOB_SIZE - 1),
    ],
)
def test_satisfiable_range_gets_206_with_those_bytes(connection, blob, range_header, first, last):
    response, body = request(connection, "GET", "/blob.bin", {"Range": range_header})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{BLOB_SIZE}"
    assert body == blob[first : last + 1]


@pytest.mark.parametrize("range_header", ["bytes=5-3", "bytes=0-1,5-6", "items=0-1", "bytes=-"])
def test_range_the_server_does_not_understand_gets_whole_file(connection, blob, range_header):
    response, body = request(connection, "GET", "/blob.bin", {"Range": range_header})
    assert response.status == 200
    assert body == blob


@pytest.mark.parametrize("range_header", [f"bytes={BLOB_SIZE}-", f"bytes={BLOB_SIZE + 5}-{BLOB_SIZE + 9}", "bytes=-0"])
def test_unsatisfiable_range_gets_416(connection, range_header):
    response, body = request(connection, "GET", "/blob.bin", {"Range": range_header})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{BLOB_SIZE}"
    assert body == b""


@pytest.mark.parametrize("path", ["/missing.bin", "/../blob.bin", "/%2e%2e/etc/passwd", "/"])
def test_paths_outside_the_served_files_get_404(connection, path):
    response, _ = request(connection, "GET", path)
    assert response.status == 404


def test_fsspec_ranged_stream_returns_exactly_the_range(mirror, blob):
    first, last = CHUNK_SIZE - 1000, CHUNK_SIZE + 70_000
    received = read_stream(mirror.url("blob.bin"), f"bytes={first}-{last}")
    assert received == blob[first : last + 1]


def test_concurrent_ranged_gets_are_served_promptly(mirror, blob):
    # aiohttp opens ~100 connections at once; a short listen backlog turned this into ~15 s.
    starts = range(0, 200 * 10_000, 10_000)
    ends = [start + 5000 for start in starts]
    http_fs = fsspec.filesystem("http", skip_instance_cache=True)
    began = time.monotonic()
    received = http_fs.cat_ranges([mirror.url("blob.bin")] * len(starts), list(starts), ends)
    assert time.monotonic() - began < 5
    assert received == [blob[start:end] for start, end in zip(starts, ends)]


def test_zipfile_reads_a_member_through_seekable_http_file(coco_mirror, mirror_root):
    with zipfile.ZipFile(mirror_root / "val2017.zip") as local:
        expected = local.read(MEMBER)
    remote_zip = fsspec.open(coco_mirror.url("zips/val2017.zip"), "rb")  # an HTTPFile: seekable
    with remote_zip as remote, zipfile.ZipFile(remote) as archive:
        assert archive.read(MEMBER) == expected


def test_traffic_counts_requests_and_body_bytes_until_reset(mirror, connection, mirror_root):
    request(connection, "HEAD", "/blob.bin")
    request(connection, "GET", "/blob.bin", {"Range": "bytes=0-99"})
    request(connection, "GET", "/val2017.zip")
    zip_size = (mirror_root / "val2017.zip").stat().st_size

    traffic = mirror.traffic(reset=True)
    assert traffic.for_path("blob.bin").requests == 2
    assert traffic.for_path("/blob.bin").body_bytes == 100
    assert traffic.requests == 3
    assert traffic.body_bytes == 100 + zip_size
    assert mirror.traffic().requests == 0


def test_keep_alive_connection_survives_every_kind_of_answer(mirror, connection):
    # http.client does not reconnect a connection the server closed unannounced: reaching the
    # last answer proves they all came over one connection.
    mirror.fail_status("blob.bin", 503)
    answers = [
        request(connection, "GET", "/blob.bin")[0],  # injected 503
        request(connection, "HEAD", "/blob.bin")[0],
        request(connection, "GET", "/blob.bin", {"Range": "bytes=0-0"})[0],
        request(connection, "GET", "/missing.bin")[0],
        request(connection, "GET", "/blob.bin", {"Range": "bytes=-0"})[0],
        request(connection, "GET", "/blob.bin")[0],
    ]
    assert [answer.status for answer in answers] == [503, 200, 206, 404, 416, 200]
    assert not any(answer.will_close for answer in answers)
    assert mirror.traffic().requests == 6


def test_fail_status_answers_planned_statuses_then_serves(mirror, blob):
    mirror.fail_status("blob.bin", 503, times=2)
    mirror.fail_status("blob.bin", 404)
    http_fs = fsspec.filesystem("http")
    for _ in range(2):
        with pytest.raises(aiohttp.ClientResponseError) as slow_down:
            http_fs.cat_file(mirror.url("blob.bin"))
        assert slow_down.value.status == 503
    with pytest.raises(FileNotFoundError):
        http_fs.cat_file(mirror.url("blob.bin"))
    assert http_fs.cat_file(mirror.url("blob.bin")) == blob


def test_drop_after_cuts_the_body_then_serves_again(mirror, blob):
    mirror.drop_after("blob.bin", 5000, times=2)
    with pytest.raises(aiohttp.ClientPayloadError):
        read_stream(mirror.url("blob.bin"))
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="5000 bytes read"):
        requests.get(mirror.url("blob.bin"))
    assert requests.get(mirror.url("blob.bin")).content == blob
    # fsspec's HEAD before its GET is not cut and does not use up a drop.
    assert mirror.traffic().for_path("blob.bin").body_bytes == 5000 + 5000 + BLOB_SIZE


def test_drop_after_applies_to_the_ranged_body(mirror, connection, blob):
    mirror.drop_after("blob.bin", 10)
    response, body = request(connection, "GET", "/blob.bin", {"Range": "bytes=0-9"})
    assert (response.status, body) == (206, blob[:10])
    assert connection.sock.recv(1) == b"", "a planned drop closes even a complete body's connection"


def test_ignore_range_answers_200_with_the_whole_file(mirror, blob):
    mirror.ignore_range("blob.bin")
    assert read_stream(mirror.url("blob.bin"), "bytes=100-199") == blob
    with fsspec.open(mirror.url("blob.bin"), "rb") as seekable:
        seekable.seek(100)
        with pytest.raises(ValueError, match="support range requests"):
            seekable.read(10)


def test_cap_replies_answers_a_shorter_206_than_asked(mirror, connection, blob):
    mirror.cap_replies("blob.bin", 1000)
    response, body = request(connection, "GET", "/blob.bin", {"Range": "bytes=10-99999"})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 10-1009/{BLOB_SIZE}"
    assert body == blob[10:1010]
    assert request(connection, "GET", "/blob.bin")[1] == blob  # a whole-file GET is not capped


def test_stall_holds_the_body_after_the_headers(mirror, connection, blob):
    mirror.stall("blob.bin", 1.0)
    connection.timeout = 0.2
    connection.request("GET", "/blob.bin", headers={"Range": "bytes=0-9"})
    response = connection.getresponse()
    assert response.status == 206
    with pytest.raises(TimeoutError):
        response.read()


def test_require_password_answers_401_without_the_credentials(mirror, blob):
    mirror.require_password("alice", "s3cret")
    refused = requests.get(mirror.url("blob.bin"))
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(mirror.url("blob.bin"), auth=("alice", "wrong")).status_code == 401
    assert requests.get(mirror.url("blob.bin"), auth=("alice", "s3cret")).content == blob


def test_corrupt_serves_other_bytes_across_chunks_and_leaves_the_file(mirror, mirror_root, blob):
    offset, bad = CHUNK_SIZE - 3, b"\x00\x01\x02\x03\x04\x05"
    mirror.corrupt("blob.bin", offset, bad)
    served = requests.get(mirror.url("blob.bin")).content
    assert served == blob[:offset] + bad + blob[offset + len(bad) :]
    assert read_stream(mirror.url("blob.bin"), f"bytes={offset + 2}-{offset + 3}") == bad[2:4]
    assert (mirror_root / "blob.bin").read_bytes() == blob
    mirror.clear_faults()
    assert requests.get(mirror.url("blob.bin")).content == blob


def test_corrupt_zip_member_fails_its_crc_check(coco_mirror, mirror_root):
    with zipfile.ZipFile(mirror_root / "val2017.zip") as local:
        member_data = local.read(MEMBER)
    # Members are stored uncompressed, so their data appears verbatim in the archive.
    data_offset = (mirror_root / "val2017.zip").read_bytes().index(member_data)
    coco_mirror.corrupt("zips/val2017.zip", data_offset + 100, b"corrupted")
    remote_zip = fsspec.open(coco_mirror.url("zips/val2017.zip"), "rb")
    with remote_zip as remote, zipfile.ZipFile(remote) as archive:
        with pytest.raises(zipfile.BadZipFile, match="CRC"):
            archive.read(MEMBER)


@pytest.mark.parametrize(
    "inject",
    [
        lambda mirror: mirror.fail_status("blob.bin", 200),
        lambda mirror: mirror.fail_status("blob.bin", 503, times=0),
        lambda mirror: mirror.drop_after("blob.bin", -1),
        lambda mirror: mirror.cap_replies("blob.bin", 0),
        lambda mirror: mirror.stall("blob.bin", 0),
        lambda mirror: mirror.corrupt("blob.bin", BLOB_SIZE - 1, b"xy"),
        lambda mirror: mirror.corrupt("blob.bin", 0, b""),
    ],
)
def test_impossible_faults_are_refused(mirror, inject):
    with pytest.raises(ValueError):
        inject(mirror)


def test_coco_layout_serves_the_official_paths_only(coco_mirror, mirror_root):
    for url_path, flat_name in COCO_LAYOUT.items():
        assert requests.get(coco_mirror.url(url_path)).content == (mirror_root / flat_name).read_bytes()
    assert requests.get(coco_mirror.url("val2017.zip")).status_code == 404
    assert requests.get(coco_mirror.url("blob.bin")).status_code == 404


def test_leaving_the_block_closes_idle_connections_and_the_port(mirror_root):
    with serve_mirror(mirror_root, layout="plain") as mirror, contextlib.closing(connect(mirror)) as connection:
        assert request(connection, "HEAD", "/blob.bin")[0].status == 200
    with pytest.raises(ConnectionError):
        request(connection, "HEAD", "/blob.bin")
    with pytest.raises(ConnectionError), contextlib.closing(connect(mirror)) as fresh_connection:
        request(fresh_connection, "HEAD", "/blob.bin")


def test_loopback_bypasses_a_configured_proxy(mirror_root, monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with serve_mirror(mirror_root, layout="plain") as mirror:
        # trust_env=True, as datasets sets it, makes aiohttp read the proxy variables.
        proxied_fs = fsspec.filesystem("http", client_kwargs={"trust_env": True}, skip_instance_cache=True)
        assert proxied_fs.size(mirror.url("blob.bin")) == BLOB_SIZE
    assert "127.0.0.1" in os.environ["NO_PROXY"].split(",")


def test_command_line_serves_a_directory(mirror_root):
    command = [sys.executable, "-m", "tools.mirror", str(mirror_root), "--layout", "plain", "--port", "0"]
    with subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True) as server:
        try:
            banner = server.stderr.readline()
            base_url = re.search(r"http://[\d.]+:\d+", banner).group()
            assert requests.head(f"{base_url}/blob.bin").headers["Content-Length"] == str(BLOB_SIZE)
        finally:
            server.terminate()
