"""The shared harness: a real local stack, measured from the outside.

``BenchStack`` starts a ``genie_stack.LocalStack`` on free ports, logs under
``bench/results/logs/<bench>/``:

- ``temporal server start-dev --headless`` (in memory, our search attributes),
- ``python -m genie_sim``,
- ``python -m worker`` (configured only through ``TEMPORAL_*`` / ``GENIE_*``), which can be
  SIGKILLed and restarted, and whose memory is read from ``/proc/<pid>/status``.

It also holds the two clients a benchmark compares: ``api`` (``GenieConversations`` on a
Temporal client, i.e. through the durable worker) and ``genie`` (the bare ``GenieClient``
against the same simulator, the baseline). Helpers at the bottom print tables and write
``bench/results/<name>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from bench._floor import FLOOR_TASK_QUEUE, FloorReply, FloorTurn, FloorTurns
from genie_api import ApiKeyAuth, ClientTimeouts, GenieClient, RunReader
from genie_config import GenieSettings
from genie_stack import ChildFailed, LocalStack, TemporalDevServer, WorkerProcess, free_port
from geniectl import GenieConversations
from workflows import DEFAULT_TASK_QUEUE

if importlib.util.find_spec("sniffio") is None:
    # sniffio is a dependency (pyproject.toml, httpcore#1103); in an environment without
    # it, fail its import fast, so the bare baseline is not slowed by httpcore searching
    # sys.path for it again on every request.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
API_KEY = "bench-key-0123456789abcdef"
GENIE = "gin-bench"
USER = "bench-user"
MIB = 1024 * 1024
START_ATTEMPTS = 3
"""Tries at starting a stack (each on new ports): ``BenchStack.__aenter__``."""


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def log(msg: str) -> None:
    """Progress line (flushed: benches run under ``python -m bench`` with a pipe)."""
    print(msg, flush=True)


# ---------------------------------------------------------------- process facts


def proc_status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``: the
    share other processes (other engineers' test suites) took from a measurement."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f) - idle) / hz, sum(f) / hz


def machine() -> dict[str, Any]:
    mem = ""
    with contextlib.suppress(OSError, IndexError):
        mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()[1]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "memory": " ".join(mem.split()),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------- the stack


@dataclass(kw_only=True)
class MeteredTemporal(TemporalDevServer):
    """The dev server with its Prometheus endpoint on: its ``action`` counter (the
    server's own count of billable actions, by type) and ``service_requests`` (every
    RPC, e.g. ``RecordActivityTaskHeartbeat``: heartbeats are not in history)."""

    metrics_port: int = field(default_factory=free_port)

    def command(self) -> list[str]:
        return [*super().command(), "--metrics-port", str(self.metrics_port)]


def _no_settings_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("GENIE_", "TEMPORAL_"))}


@dataclass
class BenchStack:
    """Temporal dev server + simulator + worker subprocess, and both clients."""

    name: str
    sim_args: Sequence[str] = ()
    worker_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the worker (passed through as given)."""
    task_queue: str = DEFAULT_TASK_QUEUE
    worker_cmd: Sequence[str] = ("-m", "worker")
    """Arguments to the interpreter that runs the worker (an experiment may wrap it)."""
    floor: bool = True
    """Also run the floor worker (``bench._floor``) on ``FLOOR_TASK_QUEUE``."""

    def __post_init__(self) -> None:
        self.logs = RESULTS / "logs" / self.name
        self.logs.mkdir(parents=True, exist_ok=True)
        self._build()
        self.extra_workers: list[WorkerProcess] = []
        self._client: Client | None = None
        self._genie: GenieClient | None = None

    def _build(self) -> None:
        """The stack's children on ports free now (its logs start empty)."""
        for old in self.logs.glob("*.log"):
            old.unlink()
        self.stack = LocalStack.in_dir(
            self.logs,
            api_key=API_KEY,
            sim_args=("--log-level", "warning", *self.sim_args),
            metrics_port=free_port(),
            task_queue=self.task_queue,
            worker_settings={"log_level": "WARNING"},
            worker_extra_env=self.worker_env,
            worker_argv=self.worker_cmd,
        )
        t = self.stack.temporal
        self.stack.temporal = MeteredTemporal(
            log_path=t.log_path, port=t.port, http_port=t.http_port, ui_port=t.ui_port
        )
        self.floor_worker: WorkerProcess | None = None
        if self.floor:
            env = _no_settings_env() | {
                "TEMPORAL_ADDRESS": t.address,
                "FLOOR_TASK_QUEUE": FLOOR_TASK_QUEUE,
                "FLOOR_API_BASE_URL": self.stack.simulator.base_url,
                "FLOOR_API_KEY": API_KEY,
                "FLOOR_MAX_CACHED_WORKFLOWS": str(self.cache_size),
                "PYTHONUNBUFFERED": "1",
            }
            self.floor_worker = WorkerProcess(
                log_path=self.logs / "floor.log", env=env, argv=("-m", "bench._floor")
            )

    # -- lifecycle

    async def __aenter__(self) -> BenchStack:
        # Children run in sessions of their own, so a SIGTERM (``timeout``, ``make``) or a
        # hang-up must unwind through ``__aexit__`` to stop them in order.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)
        t0 = time.monotonic()
        for attempt in range(START_ATTEMPTS):
            try:
                await self.stack.start()
                break
            except ChildFailed as e:
                # A port picked free may be taken before its child binds it (the dev
                # server picks free ports of its own for its internal services): try
                # again on ports picked anew, rather than lose the whole benchmark.
                if attempt + 1 == START_ATTEMPTS:
                    raise
                log(f"  stack did not start ({e}); again on new ports")
                for failed in self.logs.glob("*.log"):  # kept, as <child>.log.failed<n>
                    failed.rename(failed.with_suffix(f".log.failed{attempt + 1}"))
                self._build()
        try:
            if self.floor_worker is not None:
                await self.floor_worker.start()
            self._client = await self.stack.temporal.connect()
        except BaseException:
            self._stop_all()
            raise
        sim_url = self.stack.simulator.base_url
        self._genie = GenieClient(
            sim_url, ApiKeyAuth(API_KEY), timeouts=ClientTimeouts(stream_read=120)
        )
        log(
            f"  stack up in {time.monotonic() - t0:.1f}s: temporal {self.stack.temporal.address} "
            f"(pid {self.temporal_pid}), simulator {sim_url} (pid {self.sim_pid}), "
            f"worker pid {self.worker_pid}; logs in {self.logs.relative_to(REPO)}/"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._genie is not None:
            await self._genie.aclose()
        self._stop_all()

    def _stop_all(self) -> None:
        for w in self.extra_workers:
            w.stop()
        if self.floor_worker is not None:
            self.floor_worker.stop()
        self.stack.stop()

    async def add_worker(self) -> WorkerProcess:
        """Another worker process on the same task queue (its own log and metrics port)."""
        env = dict(self.stack.worker.env)
        env["GENIE_METRICS_PORT"] = str(free_port())
        n = len(self.extra_workers) + 2
        w = WorkerProcess(log_path=self.logs / f"worker{n}.log", env=env, argv=self.worker_cmd)
        self.extra_workers.append(w)
        await w.start()
        return w

    async def start_worker(self) -> float:
        """Start the worker again; seconds until its metrics endpoint answers."""
        t0 = time.monotonic()
        await self.stack.worker.start()
        return time.monotonic() - t0

    def kill_worker(self) -> None:
        """SIGKILL the worker (no shutdown hooks run)."""
        self.stack.worker.kill()

    # -- accessors

    @property
    def client(self) -> Client:
        assert self._client is not None
        return self._client

    @property
    def api(self) -> GenieConversations:
        return GenieConversations(self.client, task_queue=self.task_queue)

    @property
    def genie(self) -> GenieClient:
        assert self._genie is not None
        return self._genie

    @property
    def temporal_pid(self) -> int:
        return self.stack.temporal.pid

    @property
    def sim_pid(self) -> int:
        return self.stack.simulator.pid

    @property
    def worker_pid(self) -> int:
        return self.stack.worker.pid

    def pids(self) -> dict[str, int]:
        """Every process of the run by role (the bench itself as ``bench``)."""
        out = {"server": self.temporal_pid, "simulator": self.sim_pid}
        if self.stack.worker.proc is not None:
            out["worker"] = self.worker_pid
        for i, w in enumerate(self.extra_workers):
            if w.proc is not None:
                out[f"worker{i + 2}"] = w.pid
        if self.floor_worker is not None and self.floor_worker.proc is not None:
            out["floor worker"] = self.floor_worker.pid
        out["bench"] = os.getpid()
        return out

    @property
    def metrics_url(self) -> str:
        url = self.stack.worker.metrics_url
        assert url is not None
        return url

    def worker_rss_mib(self) -> float:
        return proc_status_kib(self.worker_pid, "VmRSS") / 1024

    @property
    def floor_worker_pid(self) -> int:
        assert self.floor_worker is not None
        return self.floor_worker.pid

    def floor_rss_mib(self) -> float:
        return proc_status_kib(self.floor_worker_pid, "VmRSS") / 1024

    @property
    def cache_size(self) -> int:
        """Our worker's ``max_cached_workflows`` (from its extra env, else our settings,
        which it inherits); the floor worker caches as many."""
        given = self.worker_env.get("GENIE_MAX_CACHED_WORKFLOWS")
        return int(given) if given is not None else GenieSettings().max_cached_workflows

    def worker_hwm_mib(self) -> float:
        return proc_status_kib(self.worker_pid, "VmHWM") / 1024

    def reset_worker_hwm(self) -> None:
        """Reset the worker's peak RSS (``/proc/<pid>/clear_refs`` 5), if permitted."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.worker_pid}/clear_refs").write_text("5")

    async def metrics(self) -> dict[str, float]:
        """The worker's Prometheus samples, ``name{labels}`` -> value."""
        async with httpx.AsyncClient(timeout=5) as h:
            text = (await h.get(self.metrics_url)).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    async def server_metrics(self, settle: float = 2.0) -> dict[str, dict[str, float]]:
        """The dev server's ``action`` counts by ``action_type`` and ``service_requests``
        (frontend RPCs) by ``operation``, namespace ``default`` only (the server's own
        system workflows run in ``temporal_system``). The server publishes its counters
        about once a second: ``settle`` seconds are waited first."""
        assert isinstance(self.stack.temporal, MeteredTemporal)
        await asyncio.sleep(settle)
        url = f"http://127.0.0.1:{self.stack.temporal.metrics_port}/metrics"
        async with httpx.AsyncClient(timeout=10) as h:
            text = (await h.get(url)).text
        out: dict[str, dict[str, float]] = {"action": {}, "service_requests": {}}
        for fam in text_string_to_metric_families(text):
            if fam.name not in out:
                continue
            for smp in fam.samples:
                if smp.labels.get("namespace") != "default" or smp.name.endswith("_created"):
                    continue
                if fam.name == "service_requests" and smp.labels.get("service_name") != "frontend":
                    continue
                key = smp.labels.get("action_type") or smp.labels.get("operation", "?")
                out[fam.name][key] = out[fam.name].get(key, 0.0) + smp.value
        return out

    async def sim_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as h:
            url = f"{self.stack.simulator.base_url}/_sim/stats"
            stats: dict[str, Any] = (await h.get(url)).json()
        return stats

    # -- the two ways of doing one turn

    @staticmethod
    def new_id(prefix: str) -> str:
        return f"bench-{prefix}-{uuid.uuid4().hex[:12]}"

    async def bare_conversation(self) -> str:
        conv = await self.genie.create_conversation(GENIE, user_id=USER)
        return conv.conversation_id

    async def floor_turn(
        self, wid: str, conversation_id: str | None, text: str, *, local: bool = False
    ) -> FloorReply:
        """Floor (a), or (b) with ``local``: one update on a ``FloorTurns`` workflow
        (update-with-start, so the first turn also starts it) running one activity."""
        op = WithStartWorkflowOperation(
            FloorTurns.run,
            local,
            id=wid,
            task_queue=FLOOR_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return await self.client.execute_update_with_start_workflow(
            FloorTurns.turn, FloorTurn(conversation_id, text), start_workflow_operation=op
        )

    async def bare_turn(self, conversation_id: str, text: str) -> int:
        """The baseline: ``RunReader.send`` on the bare client, to ``processing.finished``."""
        reader = RunReader(self.genie, GENIE, conversation_id, user_id=USER)
        n = 0
        async with aclosing(reader.send(text)) as events:
            async for _ in events:
                n += 1
        if not reader.finished:
            raise RuntimeError(f"bare run in {conversation_id} ended unfinished after {n}")
        return n


# ---------------------------------------------------------------- numbers and output


def pct(values: Iterable[float], q: float) -> float:
    """The ``q``-quantile (0..1), linear interpolation; NaN for no values."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    xs = list(values)
    return statistics.median(xs) if xs else float("nan")


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(cells[0]), sep, *(line(r) for r in cells[1:])])


def write_result(name: str, data: dict[str, Any], table_text: str) -> Path:
    """Print the table and write ``bench/results/<name>.json`` (with the table in it)."""
    print()
    print(table_text, flush=True)
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **data, "table": table_text}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}", flush=True)
    return path


@contextlib.asynccontextmanager
async def ticker(every: float, say: Any) -> AsyncIterator[None]:
    """Call ``say()`` (returning a progress line or None) every ``every`` seconds."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                line = say()
                if asyncio.iscoroutine(line):
                    line = await line
                if line:
                    log(line)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
