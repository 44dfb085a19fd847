"""Real services for the test suite, started as child processes.

Tests talk to the simulator over real HTTP/SSE exactly as the worker does in
production, so the simulator runs in its own process (``python -m genie_sim``), on a
free loopback port, and is stopped when the session ends. Starting and stopping it is
``genie_stack``'s (the harness ``geniectl dev`` and the benchmarks use too); this module
adds what only tests need: a synchronous start and the simulator's admin endpoints.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from genie_stack import Simulator, free_port, temporal_cli

__all__ = [
    "REPO_ROOT",
    "SIM_API_KEY",
    "SimProcess",
    "free_port",
    "running_sim",
    "temporal_cli",
    "wait_http_ok",
]

SIM_API_KEY = "test-key-0123456789abcdef0123456789abcdef0123456789abcdef01234567"
"""The key the test simulator accepts. Tests assert it never leaks into history or logs."""

REPO_ROOT = Path(__file__).resolve().parent.parent
SIM_START_SECONDS = 20.0


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
    """The stack's ``Simulator`` for tests: started synchronously, plus its admin API.

    ``service`` is the ``genie_stack.Simulator`` itself, for async callers and stacks.
    """

    args: Sequence[str] = ()
    api_key: str = SIM_API_KEY
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    service: Simulator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.service = Simulator(
            api_key=self.api_key, port=self.port, args=self.args, log_path=self.log_path
        )

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.service.proc

    @property
    def base_url(self) -> str:
        return self.service.base_url

    def start(self) -> SimProcess:
        self.service.start_sync(within=SIM_START_SECONDS)
        return self

    def stop(self) -> None:
        self.service.stop()

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
