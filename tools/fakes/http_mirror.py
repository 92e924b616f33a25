"""A loopback HTTP server that serves a local directory as a COCO mirror.

The project's tests and benchmarks use it to stand in for images.cocodataset.org; a user can run
it to serve their own copy of the zips:

    coco-unified mirror DIR [--layout coco|plain] [--host 127.0.0.1] [--port 8000]

In Python, ``serve_mirror`` starts it in a daemon thread and stops it when the block ends:

    with serve_mirror("/data/coco", layout="coco") as mirror:
        url = mirror.url("zips/val2017.zip")      # http://127.0.0.1:PORT/zips/val2017.zip
        mirror.fail_status("zips/val2017.zip", 503)  # the next request is told "Slow Down"
        ...
        print(mirror.traffic().body_bytes)

Layouts: ``"coco"`` answers only the three official URL paths (``/zips/train2017.zip``,
``/zips/val2017.zip``, ``/annotations/annotations_trainval2017.zip``) from the same three zips
lying flat in DIR, so a client that asks for any other path gets a 404 exactly as it would from
the official host; ``"plain"`` serves every file under DIR at its relative path.

What it speaks: GET and HEAD, HTTP/1.1 with keep-alive (HTTP/1.0 clients get one response per
connection), ``Accept-Ranges: bytes`` and single byte ranges on GET (``bytes=a-b``, ``bytes=a-``,
``bytes=-n``) answered with 206 and ``Content-Range``; an unsatisfiable range gets 416, a missing
file 404. Malformed or multi-range ``Range`` headers are ignored (200 with the whole file), as
RFC 9110 allows. Bodies go out in 1 MiB chunks by ``sendfile`` (read and written only where
``corrupt`` patches them), so multi-GB zips are never held in memory. Requests that carry a body
are not supported.

Accounting: requests and body bytes per URL path (``Mirror.traffic``). A chunk is counted as it
is handed to the socket, so a client that stops reading early is charged for what the socket
buffers had already taken (up to a few MiB): what it cost the server, not what the client read.

Fault injection, per URL path and thread-safe: ``fail_status``, ``drop_after`` and ``stall`` are
used up after a given number of requests; ``ignore_range``, ``cap_replies`` and ``corrupt`` stay
until ``clear_faults``. ``require_password`` makes every request need basic-auth credentials
(401 without them), so a client's credentials are known to be really sent.

Proxies: aiohttp sessions created with ``trust_env=True`` (as ``datasets`` creates them) send
even loopback requests through ``HTTP_PROXY`` unless ``NO_PROXY`` covers the host, so clients of
this server need ``NO_PROXY=127.0.0.1,localhost``. ``serve_mirror`` adds those two hosts to
``NO_PROXY``/``no_proxy`` in ``os.environ`` when they do not already bypass the proxy, and leaves
them there.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import logging
import mimetypes
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

from coco_unified import ARCHIVES

log = logging.getLogger(__name__)

# URL path on the official host -> file name in a flat local directory.
COCO_LAYOUT = {f"/{archive.url_path}": archive.file_name for archive in ARCHIVES.values()}
LAYOUTS = ("coco", "plain")

CHUNK_SIZE = 1 << 20

# serve_forever only notices shutdown() between polls; the default 0.5 s would make every test
# that starts a mirror half a second slower.
_SHUTDOWN_POLL_SECONDS = 0.05

_RANGE_HEADER = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def url_path_of(path: str) -> str:
    """``path`` as the mirror keys its counters and faults: '/a/b' for 'a/b' or '/a/b'."""
    return "/" + path.lstrip("/")


# --- files -----------------------------------------------------------------------------------


class FileMap:
    """Which local file answers which URL path, for one of the layouts."""

    def __init__(self, root: str | os.PathLike, layout: str) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
        self.root = Path(root).absolute()
        if not self.root.is_dir():
            raise NotADirectoryError(f"mirror root is not a directory: {self.root}")
        self.layout = layout

    def resolve(self, url_path: str) -> Path | None:
        """The regular file served at ``url_path``, or None (-> 404)."""
        if self.layout == "coco":
            name = COCO_LAYOUT.get(url_path)
            candidate = self.root / name if name else None
        else:
            candidate = self._inside_root(url_path)
        return candidate if candidate is not None and candidate.is_file() else None

    def _inside_root(self, url_path: str) -> Path | None:
        # Checked on the normalised path rather than the resolved one so that symlinks placed
        # in the root (e.g. to zips stored elsewhere) are served, while '..' cannot climb out.
        candidate = os.path.normpath(os.path.join(self.root, url_path.lstrip("/")))
        if candidate != str(self.root) and not candidate.startswith(str(self.root) + os.sep):
            return None
        return Path(candidate)

    def missing_coco_files(self) -> list[str]:
        """The flat zip names the coco layout expects but the root lacks."""
        return [name for name in COCO_LAYOUT.values() if not (self.root / name).is_file()]


# --- byte ranges -----------------------------------------------------------------------------


class RangeNotSatisfiable(Exception):
    """The Range header is well formed but selects no byte of the file (-> 416)."""


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte positions, inclusive, that a single-range header selects.

    None means "send the whole file": no header, or one this server ignores (malformed, several
    ranges, other units). Raises RangeNotSatisfiable when the range lies outside the file.
    """
    match = _RANGE_HEADER.fullmatch(header) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if first_text == "":
        return _suffix_range(int(last_text), size)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # an invalid byte-range-spec: RFC 9110 says to ignore the header
    if first >= size:
        raise RangeNotSatisfiable
    last = min(int(last_text), size - 1) if last_text else size - 1
    return first, last


def _suffix_range(length: int, size: int) -> tuple[int, int]:
    if length == 0 or size == 0:
        raise RangeNotSatisfiable
    return max(size - length, 0), size - 1


def apply_patches(chunk: bytes, chunk_offset: int, patches: list[tuple[int, bytes]]) -> bytes:
    """``chunk``, read from file offset ``chunk_offset``, with the overlapping patches written over."""
    if not patches:
        return chunk
    patched = bytearray(chunk)
    chunk_end = chunk_offset + len(chunk)
    for patch_offset, data in patches:
        start, end = max(patch_offset, chunk_offset), min(patch_offset + len(data), chunk_end)
        if start < end:
            in_chunk = slice(start - chunk_offset, end - chunk_offset)
            patched[in_chunk] = data[start - patch_offset : end - patch_offset]
    return bytes(patched)


# --- accounting ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PathTraffic:
    requests: int = 0
    body_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class Traffic:
    """A snapshot of what the mirror has served, per URL path."""

    per_path: Mapping[str, PathTraffic]

    @property
    def requests(self) -> int:
        return sum(entry.requests for entry in self.per_path.values())

    @property
    def body_bytes(self) -> int:
        return sum(entry.body_bytes for entry in self.per_path.values())

    def for_path(self, path: str) -> PathTraffic:
        return self.per_path.get(url_path_of(path), PathTraffic())


class TrafficLog:
    """Thread-safe request and body-byte counters per URL path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, PathTraffic] = {}

    def count(self, url_path: str, requests: int = 0, body_bytes: int = 0) -> None:
        with self._lock:
            old = self._counts.get(url_path, PathTraffic())
            self._counts[url_path] = PathTraffic(old.requests + requests, old.body_bytes + body_bytes)

    def snapshot(self, reset: bool = False) -> Traffic:
        with self._lock:
            traffic = Traffic(dict(self._counts))
            if reset:
                self._counts.clear()
        return traffic


# --- faults ----------------------------------------------------------------------------------


class FaultTable:
    """Thread-safe fault plans per URL path, consulted by the request handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Queues of [value, requests left]: fail_status(p, 503, 2) then fail_status(p, 500)
        # answers 503, 503, 500, then normally.
        self._failures: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._drops: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._stalls: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._range_ignored: set[str] = set()
        self._reply_caps: dict[str, int] = {}
        self._patches: dict[str, list[tuple[int, bytes]]] = collections.defaultdict(list)

    def add_failure(self, url_path: str, status: int, times: int) -> None:
        with self._lock:
            self._failures[url_path].append([status, times])

    def add_drop(self, url_path: str, n_bytes: int, linger: float, times: int) -> None:
        with self._lock:
            self._drops[url_path].append([(n_bytes, linger), times])

    def add_stall(self, url_path: str, seconds: float, times: int) -> None:
        with self._lock:
            self._stalls[url_path].append([seconds, times])

    def add_reply_cap(self, url_path: str, n_bytes: int) -> None:
        with self._lock:
            self._reply_caps[url_path] = n_bytes

    def add_range_ignored(self, url_path: str) -> None:
        with self._lock:
            self._range_ignored.add(url_path)

    def add_patch(self, url_path: str, offset: int, data: bytes) -> None:
        with self._lock:
            self._patches[url_path].append((offset, data))

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()
            self._drops.clear()
            self._stalls.clear()
            self._range_ignored.clear()
            self._reply_caps.clear()
            self._patches.clear()

    def take_failure(self, url_path: str) -> int | None:
        """The status to answer this request with instead of serving it, if one is planned."""
        return self._take(self._failures, url_path)

    def take_drop(self, url_path: str) -> tuple[int, float] | None:
        """How many body bytes this GET may send before the connection is cut, and how long after, if planned."""
        return self._take(self._drops, url_path)

    def take_stall(self, url_path: str) -> float | None:
        """How many seconds this GET waits after its headers before sending its body, if planned."""
        return self._take(self._stalls, url_path)

    def reply_cap(self, url_path: str) -> int | None:
        """The most body bytes a ranged reply for ``url_path`` carries, if capped."""
        with self._lock:
            return self._reply_caps.get(url_path)

    def ignores_range(self, url_path: str) -> bool:
        with self._lock:
            return url_path in self._range_ignored

    def patches(self, url_path: str) -> list[tuple[int, bytes]]:
        with self._lock:
            return list(self._patches.get(url_path, ()))

    def _take(self, plans: dict[str, collections.deque], url_path: str) -> int | None:
        with self._lock:
            queue = plans.get(url_path)
            if not queue:
                return None
            value, times_left = queue[0]
            if times_left == 1:
                queue.popleft()
            else:
                queue[0][1] = times_left - 1
            return value


# --- HTTP ------------------------------------------------------------------------------------


class _MirrorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response below carries Content-Length
    # Headers and body go out in separate writes; with Nagle's algorithm the body of a small
    # keep-alive response waits for the client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True
    server: _MirrorHTTPServer

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.server.traffic.count(url_path, requests=1)
        if self.server.authorization is not None and self.headers.get("Authorization") != self.server.authorization:
            self._send_empty(HTTPStatus.UNAUTHORIZED, authenticate=True)
            return
        injected_status = self.server.faults.take_failure(url_path)
        if injected_status is not None:
            self._send_empty(injected_status)
            return
        file_path = self.server.files.resolve(url_path)
        if file_path is None:
            self._send_empty(HTTPStatus.NOT_FOUND)
            return
        with open(file_path, "rb") as file:
            self._answer_with_file(url_path, file, send_body)

    def _answer_with_file(self, url_path: str, file: BinaryIO, send_body: bool) -> None:
        size = os.fstat(file.fileno()).st_size
        try:
            byte_range = parse_byte_range(self._range_to_honour(url_path, send_body), size)
        except RangeNotSatisfiable:
            self._send_empty(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, content_range=f"bytes */{size}")
            return
        first, last = byte_range if byte_range else (0, size - 1)
        cap = self.server.faults.reply_cap(url_path)
        if byte_range is not None and cap is not None:
            last = min(last, first + cap - 1)  # a 206 whose Content-Range names fewer bytes than asked
        self._send_file_headers(file.name, size, first, last, partial=byte_range is not None)
        if send_body:
            self._send_body(url_path, file, first, last - first + 1)

    def _range_to_honour(self, url_path: str, is_get: bool) -> str | None:
        # RFC 9110 gives Range a meaning only for GET: a HEAD describes the whole file.
        if not is_get or self.server.faults.ignores_range(url_path):
            return None
        return self.headers.get("Range")

    def _send_file_headers(self, name: str, size: int, first: int, last: int, partial: bool) -> None:
        self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
        self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        if partial:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self._end_headers()

    def _send_body(self, url_path: str, file: BinaryIO, offset: int, length: int) -> None:
        stall = self.server.faults.take_stall(url_path)
        if stall is not None:
            self.wfile.flush()
            time.sleep(stall)
        drop = self.server.faults.take_drop(url_path)
        to_send = length if drop is None else min(length, drop[0])
        sent = self._copy_to_client(url_path, file, offset, to_send)
        if drop is not None and drop[1]:
            self.wfile.flush()
            time.sleep(drop[1])
        if sent < length or drop is not None:
            # A body short of its Content-Length can only be told by closing; a planned drop
            # closes even when the allowance covered the whole body.
            self.close_connection = True

    def _copy_to_client(self, url_path: str, file: BinaryIO, offset: int, length: int) -> int:
        """Send ``length`` bytes of ``file`` from ``offset``, patched; return how many went out."""
        patches = self.server.faults.patches(url_path)
        sent = 0
        try:
            while sent < length:
                # What the file still holds there: it may have shrunk under us.
                size = min(CHUNK_SIZE, length - sent, os.fstat(file.fileno()).st_size - offset - sent)
                if size <= 0:
                    break
                # Counted before the write: a client holding the bytes must find them counted.
                self.server.traffic.count(url_path, body_bytes=size)
                handed = self._send_chunk(file, offset + sent, size, patches)
                sent += handed
                if handed < size:  # shrunk between the two calls
                    break
        except ConnectionError:
            # Clients that stop reading early (a closed HTTPStreamFile) reset the connection.
            log.debug("client %s went away during %s", self.address_string(), url_path)
        return sent

    def _send_chunk(self, file: BinaryIO, offset: int, size: int, patches: list[tuple[int, bytes]]) -> int:
        """Hand at most `size` bytes of `file` from `offset` to the socket; return how many."""
        if patches:
            file.seek(offset)
            chunk = file.read(size)
            self.wfile.write(apply_patches(chunk, offset, patches))
            return len(chunk)
        # The kernel copies from the page cache to the socket. The benchmarks' clients share the
        # machine's cores with this server: 0.07-0.08 ms of its CPU a real-size image with read() +
        # write(), 0.05-0.06 ms this way (measured over 3,205 images streamed).
        return self.connection.sendfile(file, offset, size)

    def _send_empty(self, status: int, content_range: str | None = None, authenticate: bool = False) -> None:
        self.send_response(status)
        if content_range:
            self.send_header("Content-Range", content_range)
        if authenticate:
            self.send_header("WWW-Authenticate", 'Basic realm="mirror"')
        self.send_header("Content-Length", "0")
        self._end_headers()

    def _end_headers(self) -> None:
        if self.close_connection:
            # An HTTP/1.0 client or one that sent "Connection: close"; RFC 9112 asks us to
            # confirm. A planned drop is decided later and, like a real one, unannounced.
            self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _MirrorHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that remembers its open connections so it can close them."""

    # aiohttp opens up to 100 connections at once; with socketserver's backlog of 5 the extra
    # SYNs are dropped and retried after 1 s, 3 s, ... (500 concurrent ranged GETs: 40 s).
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], files: FileMap) -> None:
        self.files = files
        self.traffic = TrafficLog()
        self.faults = FaultTable()
        self.authorization: str | None = None  # the Authorization header every request must carry
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _MirrorRequestHandler)

    def process_request(self, request: socket.socket, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler thread (idle keep-alive ones block in recv) by shutting its socket."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("connection from %s broken", client_address)
        else:
            log.exception("error while serving %s", client_address)


# --- public API ------------------------------------------------------------------------------


class Mirror:
    """A running mirror: where it is, what it served, and the faults to inject into it.

    ``base_url`` is ``http://HOST:PORT``; ``files`` tells which local file answers a URL path.
    Paths given to the methods are URL paths ('/zips/val2017.zip'; the leading '/' may be left out).
    """

    def __init__(self, server: _MirrorHTTPServer) -> None:
        self._server = server
        self.files = server.files
        host, port = server.server_address[:2]
        self.base_url = f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + url_path_of(path)

    def traffic(self, reset: bool = False) -> Traffic:
        """Requests and body bytes served so far (since the last reset), per URL path."""
        return self._server.traffic.snapshot(reset)

    def fail_status(self, path: str, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests (GET or HEAD) for ``path`` with ``status``, no body."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an error status (400-599), not {status}")
        self._server.faults.add_failure(url_path_of(path), status, _positive(times))

    def drop_after(self, path: str, n_bytes: int, times: int = 1, linger: float = 0.0) -> None:
        """Cut the next ``times`` GETs of ``path`` after the headers and ``n_bytes`` of body.

        ``linger`` seconds pass between the last byte and the cut, so that a client has read those
        bytes when it sees the cut (on loopback the cut would otherwise come with them).
        """
        if n_bytes < 0 or linger < 0:
            raise ValueError(f"n_bytes and linger must be >= 0, not {n_bytes} and {linger}")
        self._server.faults.add_drop(url_path_of(path), n_bytes, linger, _positive(times))

    def stall(self, path: str, seconds: float, times: int = 1) -> None:
        """Make the next ``times`` GETs of ``path`` wait ``seconds`` between their headers and their body."""
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, not {seconds}")
        self._server.faults.add_stall(url_path_of(path), seconds, _positive(times))

    def cap_replies(self, path: str, n_bytes: int) -> None:
        """Answer every ranged GET of ``path`` with at most ``n_bytes`` of body (206 with a shorter Content-Range)."""
        if n_bytes < 1:
            raise ValueError(f"n_bytes must be >= 1, not {n_bytes}")
        self._server.faults.add_reply_cap(url_path_of(path), n_bytes)

    def require_password(self, user: str, password: str) -> None:
        """Answer 401 to every request that does not carry these basic-auth credentials."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._server.authorization = f"Basic {token}"

    def ignore_range(self, path: str) -> None:
        """Answer every request for ``path`` with 200 and the whole file, whatever Range asks."""
        self._server.faults.add_range_ignored(url_path_of(path))

    def corrupt(self, path: str, offset: int, data: bytes) -> None:
        """Serve ``data`` instead of the file's bytes at ``offset``; the file itself is untouched."""
        file_path = self._server.files.resolve(url_path_of(path))
        if file_path is None:
            raise FileNotFoundError(f"the mirror serves no file at {path}")
        size = file_path.stat().st_size
        if not data or offset < 0 or offset + len(data) > size:
            raise ValueError(f"patch [{offset}, {offset + len(data)}) is empty or outside the {size}-byte file")
        self._server.faults.add_patch(url_path_of(path), offset, bytes(data))

    def clear_faults(self) -> None:
        """Drop every planned or standing fault."""
        self._server.faults.clear()


def _positive(times: int) -> int:
    if times < 1:
        raise ValueError(f"times must be >= 1, not {times}")
    return times


@contextlib.contextmanager
def serve_mirror(
    root: str | os.PathLike, layout: str = "coco", host: str = "127.0.0.1", port: int = 0
) -> Iterator[Mirror]:
    """Serve ``root`` over HTTP from a daemon thread for the duration of the block.

    ``port=0`` lets the OS pick a free port (see ``Mirror.base_url``). On exit the server stops
    accepting, closes open keep-alive connections and waits for its handler threads.
    """
    _bypass_proxy_for_loopback()
    server = _MirrorHTTPServer((host, port), FileMap(root, layout))
    thread = threading.Thread(
        target=server.serve_forever, args=(_SHUTDOWN_POLL_SECONDS,), name="http-mirror", daemon=True
    )
    thread.start()
    try:
        yield Mirror(server)
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()


def _bypass_proxy_for_loopback() -> None:
    """Add 127.0.0.1 and localhost to NO_PROXY unless the environment already bypasses them."""
    if urllib.request.proxy_bypass_environment("127.0.0.1"):
        return
    existing = os.environ.get("no_proxy") or os.environ.get("NO_PROXY")
    extended = ",".join(filter(None, [existing, "127.0.0.1", "localhost"]))
    # Both spellings: urllib (and so aiohttp) lets the lower-case one win when both are set.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = extended


# --- serving until stopped --------------------------------------------------------------------


def serve_until_interrupted(root: str | os.PathLike, layout: str = "coco", host: str = "127.0.0.1", port: int = 0):
    """Serve ``root`` until Ctrl-C (SIGINT), after logging its URL."""
    with serve_mirror(root, layout, host, port) as mirror:
        _log_what_is_served(mirror)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


def _log_what_is_served(mirror: Mirror) -> None:
    files = mirror.files
    log.info("serving %s (layout %s) at %s; Ctrl-C stops", files.root, files.layout, mirror.base_url)
    if files.layout == "coco":
        for missing in files.missing_coco_files():
            log.warning("%s is missing from %s; its URL will answer 404", missing, files.root)
