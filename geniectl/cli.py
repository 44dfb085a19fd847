"""``geniectl``: the command line for backends, approvers and ops.

Exit codes are ``_render.EXIT_CODES`` (shown by ``--help`` and in the README).
Connection settings come from the same environment as the worker (``TEMPORAL_*``,
``GENIE_TASK_QUEUE``). Every read command has ``--json``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich.table import Table
from temporalio.client import Client
from temporalio.exceptions import TemporalError
from temporalio.service import RPCError, RPCStatusCode

from genie_api import inert
from genie_codec import PayloadDecryptError, PayloadKeyConfigError, new_key
from genie_config import ConfigError, connect_temporal, load_settings, temporal_connect_config
from genie_telemetry import caller_span, setup_tracing, shutdown_tracing
from geniectl._api import (
    PENDING_LIMIT,
    GenieConversations,
    NotFound,
    Refused,
    _model,
    new_workflow_id,
)
from geniectl._contract import contract
from geniectl._dev import dev
from geniectl._render import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    age,
    err,
    fail,
    follow_turn,
    out,
    pause_panel,
    plain,
    print_pending,
    print_result,
    safe,
    when,
)
from inbox._cli import inbox as inbox_command
from inbox._cli import keygen
from workflows import (
    ConversationPolicy,
    ConversationStatus,
    TurnResult,
)

T = TypeVar("T")

EPILOG = "Exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES) + "."

app = typer.Typer(
    name="geniectl",
    help="Durable Workato genie conversations on Temporal.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _workflow_id(value: str | None) -> str | None:
    # An empty id (an unset shell variable) would otherwise reach the server as "not set"
    # or, for --id, silently start a conversation under a new random id on every run.
    if value is not None and not value.strip():
        raise typer.BadParameter("the workflow id is empty")
    return value


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WorkflowId = Annotated[
    str, typer.Argument(help="The conversation's workflow id.", callback=_workflow_id)
]
TextArg = Annotated[str, typer.Argument(help="The message.")]
ClientMessageIdOpt = Annotated[str | None, typer.Option(help="Idempotency key.")]
AttachmentOpt = Annotated[str | None, typer.Option(help="file:// or https:// URI.")]
GenieOpt = Annotated[str | None, typer.Option(help="Start the conversation if missing.")]
UserOpt = Annotated[str | None, typer.Option(help="User id, with --genie.")]


def _run(
    fn: Callable[[GenieConversations], Coroutine[Any, Any, T]], *, if_missing: str | None = None
) -> T:
    """Connect, run one command, and map failures onto the exit codes.

    ``if_missing`` is the hint printed when the workflow id names no conversation.
    """

    # The command's span is named after the command: every ``fn`` is defined in one.
    command = "geniectl " + fn.__qualname__.split(".", 1)[0].replace("_", "-")

    async def go() -> T:
        try:
            settings = load_settings()
            setup_tracing("geniectl")  # OTEL_*: off unless set
            client: Client = await connect_temporal()
        except ConfigError as e:
            fail(f"configuration: {e}")
        except RuntimeError as e:  # the SDK's connection failure
            fail(_unreachable(e))
        with caller_span(command):
            return await fn(GenieConversations(client, task_queue=settings.task_queue))

    try:
        return asyncio.run(go())
    except PayloadDecryptError as e:
        fail(str(e))
    except KeyError as e:  # the SDK's converter meeting a payload it cannot read
        if "binary/encrypted" not in str(e):
            raise
        fail(
            "this conversation's payloads are encrypted and no payload keys are configured "
            "here: set GENIE_PAYLOAD_KEYS or GENIE_PAYLOAD_KEY_FILE (as the worker has them)"
        )
    except Refused as e:
        fail(f"refused ({e.type}): {e.message}", EXIT_REFUSED)
    except NotFound as e:
        # Its own code: "create it, then retry" is a different next step from "refused".
        fail(f"{e}; {if_missing or _START_HINT}", EXIT_NOT_FOUND)
    except TemporalError as e:
        # What the server refused (an id over its length limit, the server going away
        # mid-command, ...): its own words in one line, not a traceback under exit 1.
        fail(f"Temporal: {e}")


_START_HINT = "check the id (`geniectl pending` lists the conversations waiting for a human)"
# The SDK's connection error is a Rust debug dump; its `message: "..."` is the OS's reason.
_OS_REASON = re.compile(r'message: "([^"]+)"')


def _unreachable(e: RuntimeError) -> str:
    """Which address was tried, why it failed, and how to get a server there."""
    try:
        target = temporal_connect_config()["target_host"]
    except ConfigError:  # cannot happen after a successful connect_temporal() setup
        target = "?"
    found = _OS_REASON.search(str(e))
    reason = found.group(1) if found else str(e).removeprefix("Failed client connect: ")
    source = (
        "from TEMPORAL_ADDRESS"
        if os.environ.get("TEMPORAL_ADDRESS")
        else "the default; set TEMPORAL_ADDRESS or a TEMPORAL_PROFILE to change it"
    )
    return (
        f"cannot connect to Temporal at {target} ({source}): {reason}. "
        "Start the local stack with `make run` (or `geniectl dev`), "
        "or point TEMPORAL_ADDRESS at your Temporal server."
    )


def _ask_hint(workflow_id: str, text: str, command: str = "ask") -> str:
    """The exact command that starts the conversation with this message."""
    return (
        "to start it with this message, add the genie and the user: "
        f"geniectl {command} {shlex.quote(workflow_id)} {shlex.quote(text)} "
        "--genie GENIE_HANDLE --user USER_ID"
    )


def _print_json(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    else:
        text = json.dumps(value, indent=2, default=str)
    print(inert(text))


@app.command()
def start(
    genie_handle: Annotated[str, typer.Argument(help="The genie (gin-… id).")],
    user_id: Annotated[str, typer.Argument(help="The end user's Workato Identity id.")],
    workflow_id: Annotated[
        str | None,
        typer.Option("--id", help="Workflow id (business key).", callback=_workflow_id),
    ] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="First message.")] = None,
    approval_timeout: Annotated[
        float | None, typer.Option(help="Seconds an approval may wait.")
    ] = None,
    approver: Annotated[
        list[str] | None, typer.Option(help="Allowed approver (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a conversation (or attach to the open one with this id)."""
    wid = workflow_id if workflow_id is not None else new_workflow_id()
    # Seconds as given: the policy's own validation refuses 0, negative, NaN and
    # infinite timeouts (InvalidInput), where timedelta() raised a traceback.
    timeout = {} if approval_timeout is None else {"approval_timeout": approval_timeout}

    async def go(api: GenieConversations) -> None:
        policy = _model(ConversationPolicy, approvers=approver or [], **timeout)
        await api.start(genie_handle, user_id, workflow_id=wid, policy=policy)
        if message:
            await api.send(wid, message)

    _run(go)
    if as_json:
        _print_json({"workflow_id": wid})
    else:
        out.print(safe(wid), highlight=False)


@app.command()
def send(
    workflow_id: WorkflowId,
    text: TextArg,
    client_message_id: ClientMessageIdOpt = None,
    attachment: AttachmentOpt = None,
    genie: GenieOpt = None,
    user: UserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a message; prints its turn number."""
    start_with = _start_with(genie, user)
    acc = _run(
        lambda api: api.send(
            workflow_id,
            text,
            client_message_id=client_message_id,
            attachment_uri=attachment,
            start_with=start_with,
        ),
        if_missing=_ask_hint(workflow_id, text, "send"),
    )
    if as_json:
        _print_json(acc)
    else:
        out.print(f"turn {acc.turn}" + (" (duplicate of an earlier send)" if acc.duplicate else ""))


def _start_with(genie: str | None, user: str | None) -> tuple[str, str] | None:
    if (genie is None) != (user is None):
        fail("--genie and --user go together")
    return (genie, user) if genie and user else None


@app.command()
def ask(
    workflow_id: WorkflowId,
    text: TextArg,
    client_message_id: ClientMessageIdOpt = None,
    attachment: AttachmentOpt = None,
    genie: GenieOpt = None,
    user: UserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message and wait for the reply, showing the genie's messages as they
    arrive and any pause. With --json: JSON Lines, one {"turn", "message"} object per
    message as it arrives, then the turn result on the last line."""
    start_with = _start_with(genie, user)

    async def go(api: GenieConversations) -> TurnResult:
        acc = await api.send(
            workflow_id,
            text,
            client_message_id=client_message_id,
            attachment_uri=attachment,
            start_with=start_with,
        )
        return await follow_turn(api, workflow_id, acc.turn, quiet=as_json)

    res = _run(go, if_missing=_ask_hint(workflow_id, text))
    if as_json:
        print(inert(res.model_dump_json()))
    else:
        print_result(res)
    if res.status != "completed":
        raise typer.Exit(EXIT_REFUSED)


@app.command()
def status(workflow_id: WorkflowId, as_json: JsonOpt = False) -> None:
    """Where a conversation stands and what it waits for."""
    st = _run(lambda api: api.status(workflow_id))
    if as_json:
        _print_json(st)
        return
    _print_status(workflow_id, st)


def _print_status(wid: str, st: ConversationStatus) -> None:
    t = Table.grid(padding=(0, 2))
    # Every value but our own numbers and dates is someone else's text: ``safe``.
    t.add_row("state", f"[bold]{safe(st.state)}[/]")
    t.add_row("genie / user", f"{safe(st.genie_handle)} / {safe(st.user_id)}")
    t.add_row("conversation", safe(st.conversation_id or "-"))
    t.add_row("turn", f"{st.turn} ({st.queued_turns} queued)")
    if st.awaiting_since:
        t.add_row("waiting", f"{age(st.awaiting_since)} (since {when(st.awaiting_since)})")
    if st.last_error:
        e = st.last_error
        t.add_row(
            "last error", safe(f"{e.type} {e.error_code or ''} {e.message} {e.request_id or ''}")
        )
    out.print(t)
    res = TurnResult(turn=st.turn, status="awaiting_approval")
    res.pending.approvals, res.pending.connections = st.pending_approvals, st.pending_connections
    pause_panel(wid, res)


@app.command()
def pending(as_json: JsonOpt = False) -> None:
    """The approvals inbox: every conversation waiting for a human."""

    def unreadable(workflow_id: str, e: Exception) -> None:
        err.print(
            f"[yellow]warning:[/] could not read {safe(workflow_id)} "
            f"({safe(type(e).__name__)}: {safe(e)}); it may be waiting for a human too",
            highlight=False,
            soft_wrap=True,
        )

    def not_listed(more: int) -> None:
        err.print(
            f"[yellow]warning:[/] {more} more conversation(s) wait for a human but were not "
            f"read (the list reads {PENDING_LIMIT}, the most recently started first)",
            highlight=False,
            soft_wrap=True,
        )

    items = _run(lambda api: api.pending(on_unreadable=unreadable, on_not_listed=not_listed))
    if as_json:
        _print_json([i.model_dump(mode="json") for i in items])
        return
    print_pending(items)


# The name is recorded in the audit trail. It is what the caller says it is (as with any
# client of the namespace) until approvers are authenticated, so the CLI keeps a
# convenient default but always says when it used it.
APPROVER_ENV = "GENIECTL_APPROVER"
_WHO_HELP = (
    f"Who decides, as the audit trail records it (default: ${APPROVER_ENV}, else your login name)."
)
ApproverOpt = Annotated[str | None, typer.Option("--approver", envvar=APPROVER_ENV, help=_WHO_HELP)]
ActorOpt = Annotated[str | None, typer.Option("--actor", envvar=APPROVER_ENV, help=_WHO_HELP)]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (sent to the genie).")]


def _me(name: str | None) -> str:
    return name or getpass.getuser()


def _as(name: str | None, decided_by: str) -> str:
    """How the confirmation names the decider; a defaulted login name is said to be one."""
    if name:
        return safe(decided_by)
    return f"{safe(decided_by)} (your login name; --approver or {APPROVER_ENV} to change)"


@app.command()
def approve(
    workflow_id: WorkflowId,
    call_id: Annotated[str, typer.Argument(help="The skill confirmation's call id.")],
    approver: ApproverOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Approve a skill confirmation (refused: exit 1 with the reason)."""
    rec = _run(lambda api: api.approve(workflow_id, call_id, approver=_me(approver), reason=reason))
    out.print(f"approved {safe(rec.id)} as {_as(approver, rec.decided_by)}", soft_wrap=True)


@app.command()
def reject(
    workflow_id: WorkflowId,
    call_id: Annotated[str, typer.Argument(help="The skill confirmation's call id.")],
    approver: ApproverOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Reject a skill confirmation; the reason reaches the genie."""
    rec = _run(lambda api: api.reject(workflow_id, call_id, approver=_me(approver), reason=reason))
    out.print(f"rejected {safe(rec.id)} as {_as(approver, rec.decided_by)}", soft_wrap=True)


@app.command("connect-done")
def connect_done(
    workflow_id: WorkflowId,
    attempt_id: Annotated[str, typer.Argument(help="The runtime connection attempt id.")],
    actor: ActorOpt = None,
) -> None:
    """Tell the conversation the user has authenticated."""
    rec = _run(lambda api: api.connect_done(workflow_id, attempt_id, actor=_me(actor)))
    out.print(
        f"connection {safe(rec.id)} marked done by {_as(actor, rec.decided_by)}", soft_wrap=True
    )


@app.command("connect-reject")
def connect_reject(
    workflow_id: WorkflowId,
    attempt_id: Annotated[str, typer.Argument(help="The runtime connection attempt id.")],
    actor: ActorOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Decline a runtime connection (posts E12)."""
    rec = _run(
        lambda api: api.connect_reject(workflow_id, attempt_id, actor=_me(actor), reason=reason)
    )
    out.print(f"connection {safe(rec.id)} rejected by {_as(actor, rec.decided_by)}", soft_wrap=True)


@app.command("auth-link")
def auth_link(
    workflow_id: WorkflowId,
    attempt_id: Annotated[str, typer.Argument(help="The runtime connection attempt id.")],
    as_json: JsonOpt = False,
) -> None:
    """Fetch a fresh auth link (links expire within minutes)."""
    link = _run(lambda api: api.auth_link(workflow_id, attempt_id))
    if as_json:
        _print_json(link)
    elif link.status == "authorized":
        out.print("already authorized")
    else:
        out.print(f"{safe(link.url)}\n(expires {when(link.expires_at)})", highlight=False)


@app.command()
def history(
    workflow_id: WorkflowId,
    since_turn: Annotated[int | None, typer.Option(help="Only turns from this one on.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent turns: the user's text and the genie's reply."""
    tr = _run(lambda api: api.transcript(workflow_id, since_turn))
    if as_json:
        _print_json(tr)
        return
    for t in tr.turns:
        out.print(f"[bold]turn {t.turn}[/] ({t.status})", highlight=False)
        out.print(f"  [cyan]user:[/] {safe(t.text)}", highlight=False)
        if t.reply is not None:
            out.print(f"  [green]genie:[/] {safe(t.reply)}", highlight=False)
        if t.error is not None:
            out.print(
                f"  [red]error:[/] {safe(f'{t.error.type}: {t.error.message}')}", highlight=False
            )
    if tr.first_retained_turn > 1:
        out.print(f"[dim](turns before {tr.first_retained_turn} are in the API's history)[/]")


@app.command()
def end(workflow_id: WorkflowId, reason: ReasonOpt = None) -> None:
    """End a conversation after its current step."""
    _run(lambda api: api.end(workflow_id, reason))
    out.print(f"ending {safe(workflow_id)}", highlight=False)


@app.command()
def audit(
    workflow_id: Annotated[
        str | None, typer.Argument(help="The conversation's workflow id.", show_default=False)
    ] = None,
    all_runs: Annotated[
        bool,
        typer.Option(
            "--all-runs",
            help="Every execution under this id the server still holds (earlier "
            "conversations that reused it too), not only the latest conversation's runs.",
        ),
    ] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl (one JSON object a line) or csv.")
    ] = "jsonl",
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON schema of a record and exit.")
    ] = False,
) -> None:
    """Export a conversation's decision trail from its history: every decision and
    refusal (signals and updates), who, how authenticated, when, and what the API did,
    across continue-as-new; decrypted with the payload keys. See docs/privacy.md."""
    from genie_codec.audit import AuditReplayError, export_audit, schema_text, to_csv, to_jsonl

    if schema:
        print(schema_text())
        return
    if workflow_id is None:
        fail("give the conversation's workflow id (or --schema)")
    if fmt not in ("jsonl", "csv"):
        fail(f"--format must be jsonl or csv, not {fmt!r}")
    wid = workflow_id

    async def go(api: GenieConversations) -> str:
        try:
            records = await export_audit(api.client, wid, all_runs=all_runs)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"no conversation with workflow id {wid}") from None
            raise
        except AuditReplayError as e:
            fail(str(e))
        return to_csv(records) if fmt == "csv" else to_jsonl(records)

    # A run that fails to replay is reported in one line, not by the SDK's logger.
    logging.getLogger("temporalio").setLevel(logging.CRITICAL)

    text = _run(go)
    # On a terminal the export is read, not parsed: a reason or a genie's text holding
    # escape sequences is shown, not obeyed. Into a file or a pipe it is data, unchanged.
    sys.stdout.write(plain(text) if sys.stdout.isatty() else text)


@app.command("user-hash")
def user_hash(
    user_id: Annotated[str, typer.Argument(help="The end user's id, as conversations name it.")],
) -> None:
    """Print the GenieUserId search value of a user under GENIE_USER_ID_HASH_KEY, to
    filter their conversations (`GenieUserId = "<value>"`) while the index holds no ids."""
    from activities._users import user_search_value

    try:
        key = load_settings().user_id_hash_key
    except ConfigError as e:
        fail(f"configuration: {e}")
    if key is None:
        fail(
            "GENIE_USER_ID_HASH_KEY is not set: GenieUserId holds the plain user id "
            "(set the key the workers have to print its hash)"
        )
    print(user_search_value(key.get_secret_value().encode(), user_id))


@app.command("payload-key")
def payload_key(
    key_id: Annotated[
        str, typer.Argument(help="The new key's id (letters, digits, '.', '_', '-').")
    ],
) -> None:
    """Make a payload encryption key: one `id:base64` line to put first in
    GENIE_PAYLOAD_KEYS (or the key file), keeping the older keys after it."""
    try:
        print(new_key(key_id))
    except PayloadKeyConfigError as e:
        fail(str(e))


@app.command()
def codec(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: GENIE_CODEC_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: GENIE_CODEC_PORT, 8235).")
    ] = None,
) -> None:
    """Serve the codec server (/encode, /decode) the Temporal Web UI and CLI use to show
    encrypted payloads; settings GENIE_PAYLOAD_KEY(S|_FILE) and GENIE_CODEC_*."""
    from genie_codec.server import load_codec_config, serve

    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    try:
        config = load_codec_config(**overrides)
    except ConfigError as e:
        fail(f"configuration: {e}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    serve(config)


app.command(help=dev.__doc__)(dev)
app.command(help=contract.__doc__)(contract)
app.command("inbox", help=inbox_command.__doc__)(inbox_command)
app.command(help=keygen.__doc__)(keygen)


def main() -> None:
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_ERROR)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Exit without interpreter teardown.

    The Temporal client's Rust threads can outlive the event loop and abort CPython's
    finalizer ("PyGILState_Release: thread state … must be current", sdk-python#300),
    turning a successful command into exit -6. All our work is done and flushed here.
    """
    shutdown_tracing()  # export the spans still batched: os._exit skips atexit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
