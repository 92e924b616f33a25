"""A forward HTTP proxy on 127.0.0.1 that relays GET and HEAD, for tests of HTTP_PROXY handling.

    with serve_proxy({"coco-mirror.test": mirror_address}) as proxy:
        os.environ["HTTP_PROXY"] = proxy.url        # http://127.0.0.1:PORT
        ...  # read http://coco-mirror.test/zips/val2017.zip
        assert proxy.requests() > 0

A client that honours HTTP_PROXY sends it the absolute URL (`GET http://host/path HTTP/1.1`); the
proxy looks the host up in its own table, so a host name only it knows is reachable through the
proxy alone: a client that ignores the proxy fails to resolve the name. Request headers (Range,
Authorization, ...) go to the server as they came, the answer comes back as the server sent it,
its body streamed in 1 MiB chunks. CONNECT (HTTPS tunnels) is refused with 501.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
# Headers about one hop, not to be relayed (RFC 9110 §7.6.1).
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"}


class _ProxyRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _ProxyServer

    def do_GET(self) -> None:
        self._relay("GET")

    def do_HEAD(self) -> None:
        self._relay("HEAD")

    def do_CONNECT(self) -> None:
        self.send_error(HTTPStatus.NOT_IMPLEMENTED, "this proxy relays plain HTTP only")

    def _relay(self, method: str) -> None:
        target = urllib.parse.urlsplit(self.path)
        address = self.server.hosts.get(target.hostname or "")
        if target.scheme != "http" or address is None:
            self.send_error(HTTPStatus.BAD_GATEWAY, f"unknown host {target.hostname!r}")
            return
        self.server.count()
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_HEADERS}
        upstream = http.client.HTTPConnection(*address, timeout=30)
        try:
            upstream.request(method, urllib.parse.urlunsplit(("", "", target.path, target.query, "")), headers=headers)
            answer = upstream.getresponse()
            self.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
            self.end_headers()
            if method == "GET":
                self._stream(answer)
        finally:
            upstream.close()

    def _stream(self, answer: http.client.HTTPResponse) -> None:
        try:
            while chunk := answer.read(CHUNK_SIZE):
                self.wfile.write(chunk)
        except (ConnectionError, http.client.IncompleteRead):
            self.close_connection = True  # a body cut short upstream is cut short here too

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hosts: Mapping[str, tuple[str, int]]) -> None:
        self.hosts = dict(hosts)
        self._requests = 0
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyRequestHandler)

    def count(self) -> None:
        with self._lock:
            self._requests += 1

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests


class Proxy:
    """A running proxy: its URL (for HTTP_PROXY) and how many requests it relayed."""

    def __init__(self, server: _ProxyServer) -> None:
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def requests(self) -> int:
        return self._server.requests


@contextlib.contextmanager
def serve_proxy(hosts: Mapping[str, tuple[str, int]]) -> Iterator[Proxy]:
    """Relay requests for the host names of `hosts` ({name: (ip, port)}) from a daemon thread, for the block."""
    server = _ProxyServer(hosts)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="http-proxy", daemon=True)
    thread.start()
    try:
        yield Proxy(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
