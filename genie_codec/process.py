"""The codec server as a child process of a local stack (``geniectl dev``, tests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import httpx

from genie_stack import Child, free_port


@dataclass(kw_only=True)
class CodecServerProcess(Child):
    """``python -m genie_codec`` on ``127.0.0.1:port``; healthy once ``/healthz`` answers.

    Its environment is this process's plus ``env`` (the payload keys and
    ``GENIE_CODEC_*``)."""

    name: ClassVar[str] = "codec server"
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        port = str(self.port)
        return [sys.executable, "-m", "genie_codec", "--host", "127.0.0.1", "--port", port]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}

    def healthy(self) -> bool:
        return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
