"""Console output shared by the ``geniectl`` commands and ``geniectl dev``."""

from __future__ import annotations

import json
import shlex
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NoReturn

import typer
from rich.console import Console
from rich.panel import Panel

from geniectl._api import GenieConversations
from workflows import PendingApproval, PendingConnection, TurnResult

out = Console()
err = Console(stderr=True)

EXIT_REFUSED = 1
EXIT_ERROR = 2


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
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


def approval_commands(wid: str, p: PendingApproval, prefix: str = "geniectl") -> list[str]:
    w = shlex.quote(wid)
    return [
        f"{prefix} approve {w} {p.call_id}",
        f"{prefix} reject {w} {p.call_id} --reason 'why not'",
    ]


def connection_commands(wid: str, c: PendingConnection, prefix: str = "geniectl") -> list[str]:
    w = shlex.quote(wid)
    return [
        f"{prefix} connect-done {w} {c.attempt_id}",
        f"{prefix} connect-reject {w} {c.attempt_id}",
        f"{prefix} auth-link {w} {c.attempt_id}",
    ]


def commands(lines: list[str]) -> None:
    """Print shell commands unwrapped and unstyled, so they paste as they are."""
    for line in lines:
        out.print(f"  $ {line}", soft_wrap=True, highlight=False, markup=False)


def pause_panel(wid: str, res: TurnResult, prefix: str = "geniectl") -> None:
    for p in res.pending.approvals:
        params = json.dumps(p.skill_parameters, ensure_ascii=False, indent=2)
        body = (
            f"skill [bold]{p.skill_name}[/] wants to run with:\n{params}\n\n"
            f"call id  [cyan]{p.call_id}[/]\ndeadline {when(p.deadline)}"
        )
        out.print(Panel(body, title="awaiting approval", border_style="yellow"), highlight=False)
        commands(approval_commands(wid, p, prefix))
    for c in res.pending.connections:
        body = (
            f"connector [bold]{c.connector_name}[/] needs the user to sign in "
            f"(link expires {when(c.auth_expires_at)}):\n{c.auth_url}\n\n"
            f"attempt id [cyan]{c.attempt_id}[/]\ndeadline   {when(c.deadline)}"
        )
        out.print(Panel(body, title="awaiting connection", border_style="yellow"), highlight=False)
        commands(connection_commands(wid, c, prefix))


def print_result(res: TurnResult) -> None:
    if res.status == "completed":
        out.print(Panel(res.reply or "(no reply)", title=f"turn {res.turn}: reply"))
    elif res.error is not None:
        code = f" {res.error.error_code}" if res.error.error_code else ""
        out.print(
            f"[red]turn {res.turn} {res.status}:[/] {res.error.type}{code}: {res.error.message}"
        )
    else:
        out.print(f"turn {res.turn}: {res.status}")


async def follow_turn(
    api: GenieConversations,
    wid: str,
    turn: int,
    *,
    on_pause: Callable[[TurnResult], Awaitable[None]] | None = None,
    quiet: bool = False,
    prefix: str = "geniectl",
) -> TurnResult:
    """Wait for a turn to end, printing each state change and every pause once."""
    shown: set[str] = set()
    last = ""
    while True:
        res = await api.wait(wid, turn, wait_for="attention", timeout_seconds=2.0)
        if res.status != last and not quiet:
            out.print(f"[dim]{when(datetime.now(UTC))}[/] turn {turn}: {res.status}")
            last = res.status
        if res.status in ("completed", "failed", "cancelled"):
            return res
        ids = {p.call_id for p in res.pending.approvals} | {
            c.attempt_id for c in res.pending.connections
        }
        if ids - shown:
            shown |= ids
            if not quiet:
                pause_panel(wid, res, prefix)
            if on_pause is not None:
                await on_pause(res)
        if res.status.startswith("awaiting_"):
            # Someone else decides; wait for the turn to move on without spinning.
            await api.wait(wid, turn, wait_for="completion", timeout_seconds=2.0)


# ---------------------------------------------------------------------- commands
