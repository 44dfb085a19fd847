"""A real webhook receiver on loopback, checking Standard Webhooks signatures."""

from __future__ import annotations

import base64
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook

from tests.services import free_port

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


class Receiver:
    """Records each POST (headers and body); answers ``status``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 204
        self.delay_first = 0.0
        """Seconds to sit on the first POST before answering (a delivery in flight)."""
        self.script: list[tuple[int, dict[str, str]]] = []
        """Answers (status, extra headers) for the next POSTs, in order; then ``status``."""
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.times: list[float] = []
        """``time.monotonic()`` of each POST's arrival."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.times.append(time.monotonic())
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if len(receiver.posts) == 1 and receiver.delay_first:
                    time.sleep(receiver.delay_first)
                status, headers = (
                    receiver.script.pop(0) if receiver.script else (receiver.status, {})
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[dict[str, Any]]:
        out = []
        for headers, body in self.posts:
            payload = Webhook(SECRET).verify(body, headers)  # raises if the signature is bad
            out.append({**payload, "webhook-id": headers["webhook-id"]})
        return out

    def close(self) -> None:
        self._server.shutdown()
