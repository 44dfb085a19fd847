"""One service of the stack as a child process: start, health, log, and the ways to end it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar, Self

POLL_SECONDS = 0.05
"""How often a starting child's health is checked (each check is one loopback call)."""
KILL_WAIT_SECONDS = 10.0
"""How long a SIGKILLed child may take to be reaped."""

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
"""Resolved here, in the parent: between fork and exec the child only calls it."""


async def start_together(*starts: Awaitable[object]) -> None:
    """Run ``starts`` at once; if one fails, cancel the others (a half-started stack must
    not go on starting) and raise its error as it is."""
    tasks = [asyncio.ensure_future(s) for s in starts]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies.

    The orderly path is ``Child.stop``; this covers an owner that is SIGKILLed or
    crashes, which would otherwise leave a Temporal server, simulator and worker behind.
    Linux ties it to the thread that started the child, so start children from a thread
    that lives as long as they should (the main thread, or the event loop's).
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildFailed(RuntimeError):
    """A child exited before it was healthy, or was not healthy in time."""


@dataclass(kw_only=True)
class Child(ABC):
    """A service run as a child process, restartable (same ports, same log file)."""

    name: ClassVar[str] = "child"
    log_path: Path | None = None
    """stdout and stderr are appended here (across restarts); None discards them."""
    stop_timeout: float = 20.0
    """``stop`` waits this long after SIGTERM before it sends SIGKILL."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    """The running process (also after it died by itself); None once stopped or killed."""
    starts: int = 0
    _log_offset: int = field(default=0, repr=False)

    @abstractmethod
    def command(self) -> list[str]:
        """The command line."""

    @abstractmethod
    def healthy(self) -> bool:
        """One health check; an exception counts as not healthy (yet)."""

    def environment(self) -> dict[str, str] | None:
        """The child's whole environment; None: this process's."""
        return None

    # -- starting ---------------------------------------------------------------------

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to be healthy."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid})")
        with contextlib.ExitStack() as files:
            out: int | IO[bytes] = subprocess.DEVNULL
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                log = files.enter_context(self.log_path.open("ab"))
                self._log_offset = log.tell()
                out = log
            # A session of its own: a terminal's Ctrl-C reaches only the owner, which
            # stops its children in order (the worker first, so it can checkpoint).
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        return self.proc

    async def start(self, within: float = 60.0) -> None:
        """Spawn, then wait until healthy (``ChildFailed`` otherwise; it is stopped)."""
        with self._starting(within) as healthy:
            while True:  # polling: a process's health is not an event we can await
                if healthy():
                    return
                await asyncio.sleep(POLL_SECONDS)

    def start_sync(self, within: float = 60.0) -> None:
        """``start`` for callers without an event loop."""
        with self._starting(within) as healthy:
            while not healthy():
                time.sleep(POLL_SECONDS)

    @contextlib.contextmanager
    def _starting(self, within: float) -> Iterator[Callable[[], bool]]:
        proc = self.spawn()
        deadline = time.monotonic() + within

        def healthy() -> bool:
            if proc.poll() is not None:
                raise ChildFailed(self.exit_report())
            with contextlib.suppress(Exception):
                if self.healthy():
                    return True
            if time.monotonic() > deadline:
                raise ChildFailed(f"{self.name} was not healthy within {within:g}s{self._ends()}")
            return False

        try:
            yield healthy
        except BaseException:  # also a cancelled start or a Ctrl-C: never leave it behind
            self.stop()
            raise

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    # -- ending -----------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM, SIGKILL after ``stop_timeout``; returns once it has exited."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=KILL_WAIT_SECONDS)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs; only what the child already wrote survives."""
        proc, self.proc = self.proc, None
        assert proc is not None, f"{self.name} is not running"
        proc.kill()
        proc.wait(timeout=KILL_WAIT_SECONDS)

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM (a deploy) and wait, without blocking the loop, until it exits; its code."""
        proc = self.proc
        assert proc is not None, f"{self.name} is not running"
        proc.terminate()
        deadline = time.monotonic() + within
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise ChildFailed(f"{self.name} did not exit within {within:g}s of SIGTERM")
            await asyncio.sleep(POLL_SECONDS)
        self.proc = None
        return proc.returncode

    # -- facts ------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def exited(self) -> int | None:
        """The exit code if the process ended by itself (not through stop/kill), else None."""
        return None if self.proc is None else self.proc.poll()

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_since_start(self) -> str:
        """What the current process has written (the log also holds earlier runs)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def exit_report(self) -> str:
        """For a child that exited by itself: its exit code and the end of its log."""
        return f"{self.name} exited with code {self.exited()}{self._ends()}"

    def _ends(self, lines: int = 15) -> str:
        if self.log_path is None:
            return " (its output was discarded)"
        tail = "\n".join(self.log_since_start().splitlines()[-lines:])
        return f"; its log ({self.log_path}) ends with:\n{tail}"
