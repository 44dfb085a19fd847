"""A small HTTP server on 127.0.0.1 for attachment tests, counting what reaches it.

It serves what an attacker or a broken host would: cloud-metadata-looking credentials,
redirects anywhere, bodies larger than declared limits, a server that drips its body.
Tests only ever point the worker at loopback addresses.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

LOOPBACK = "127.0.0.1"
FILE_BODY = b"quarterly numbers\n"
CREDENTIALS = b'{"AccessKeyId": "AKIA-LOOPBACK-SECRET", "Token": "never-upload-me"}'
"""What ``/latest/meta-data/iam`` answers: it must never leave the worker."""
ERROR_BODY = b"SECRET-ERROR-BODY"
DRIP_INTERVAL = 0.1
DRIP_BYTES = 1000
STREAM_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Seen:
    path: str
    host: str | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output about tests

    def do_GET(self) -> None:
        self.server.seen.append(Seen(self.path, self.headers.get("Host")))
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        # The client may give up mid-answer, as it should for oversize and slow ones.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._route(url.path, query)

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        if path == "/latest/meta-data/iam":
            self._body(200, CREDENTIALS)
        elif path.startswith("/files/"):
            self._body(200, FILE_BODY)
        elif path == "/redirect":
            self._redirect(query["to"][0], int(query.get("status", ["302"])[0]))
        elif path == "/loop":
            self._redirect("/loop", 302)
        elif path == "/no-location":
            self._body(302, b"")
        elif path.startswith("/status/"):
            self._body(int(path.rsplit("/", 1)[-1]), ERROR_BODY)
        elif path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", query["size"][0])
            self.end_headers()
            self.wfile.write(FILE_BODY)
        elif path == "/big-streamed":
            # No Content-Length: the body runs until the connection closes (HTTP/1.0).
            self.send_response(200)
            self.end_headers()
            left = int(query["size"][0])
            while left > 0:
                n = min(left, STREAM_CHUNK)
                self.wfile.write(b"x" * n)
                left -= n
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(DRIP_BYTES))
            self.end_headers()
            for _ in range(DRIP_BYTES):
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(DRIP_INTERVAL)
        elif path == "/gzip":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            body = gzip.compress(FILE_BODY)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._body(404, ERROR_BODY)

    def _body(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str, status: int) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a dripping handler must not hold up the test's teardown

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.seen: list[Seen] = []


class LoopbackServer:
    """``with LoopbackServer() as srv:`` serves on ``srv.base_url`` until the block ends."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="loopback-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def seen(self) -> list[Seen]:
        return list(self._server.seen)

    def forget(self) -> None:
        self._server.seen.clear()

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
