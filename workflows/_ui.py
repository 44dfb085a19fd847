"""The markdown "current details" card shown for a conversation in the Temporal Web UI.

Pure functions of the workflow's state, so they are deterministic and unit-testable.
The card answers what ops ask first: what is it doing, what does it wait for, since when,
until when, and the exact command that moves it on.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime

from workflows.models import ConversationState, ErrorInfo, PendingApproval, PendingConnection

_MAX_PARAM_CHARS = 300
_TITLES: dict[ConversationState, str] = {
    "starting": "Starting",
    "idle": "Idle: ready for the next message",
    "running": "Running",
    "awaiting_approval": "Awaiting approval",
    "awaiting_connection": "Awaiting connection",
    "ended": "Ended",
    "failed": "Failed",
}


def _ts(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "-"


def _signal_cmd(workflow_id: str, name: str, payload: dict[str, object]) -> str:
    body = json.dumps(payload, separators=(",", ":"))
    return (
        f"temporal workflow signal --workflow-id {shlex.quote(workflow_id)} "
        f"--name {name} --input {shlex.quote(body)}"
    )


def approval_card(workflow_id: str, p: PendingApproval) -> str:
    params = json.dumps(p.skill_parameters, ensure_ascii=False, default=str)
    if len(params) > _MAX_PARAM_CHARS:
        params = params[:_MAX_PARAM_CHARS] + "…"
    wid = shlex.quote(workflow_id)
    return "\n".join(
        [
            f"**{p.kind.capitalize()} confirmation** for `{p.skill_name or '?'}` "
            f"(turn {p.turn}), call id `{p.call_id}`",
            f"- waiting since {_ts(p.requested_at)}, deadline {_ts(p.deadline)}",
            f"- parameters: `{params}`",
            f"- approve: `geniectl approve {wid} {p.call_id} --approver <you>`",
            f"- reject: `geniectl reject {wid} {p.call_id} --approver <you> --reason <why>`",
            "- or: `"
            + _signal_cmd(
                workflow_id,
                "skill_decision",
                {"call_id": p.call_id, "approved": True, "approver": "<you>"},
            )
            + "`",
        ]
    )


def connection_card(workflow_id: str, c: PendingConnection) -> str:
    wid = shlex.quote(workflow_id)
    link = f"[open the auth link]({c.auth_url})" if c.auth_url else "no link yet"
    return "\n".join(
        [
            f"**Runtime connection** to `{c.connector_name or '?'}` (turn {c.turn}), "
            f"attempt id `{c.attempt_id}`",
            f"- waiting since {_ts(c.requested_at)}, deadline {_ts(c.deadline)}",
            f"- the user must authenticate: {link} (expires {_ts(c.auth_expires_at)}; "
            f"fresh link: `geniectl auth-link {wid} {c.attempt_id}`)",
            f"- after they have: `geniectl connect-done {wid} {c.attempt_id} --actor <you>`",
            f"- decline: `geniectl connect-reject {wid} {c.attempt_id} --actor <you>`",
            "- or: `"
            + _signal_cmd(
                workflow_id,
                "connection_decision",
                {"attempt_id": c.attempt_id, "action": "done", "actor": "<you>"},
            )
            + "`",
        ]
    )


def details_card(
    *,
    workflow_id: str,
    state: ConversationState,
    genie_handle: str,
    conversation_id: str | None,
    turn: int,
    queued: int,
    since: datetime | None,
    approvals: list[PendingApproval],
    connections: list[PendingConnection],
    last_error: ErrorInfo | None,
) -> str:
    lines = [
        f"### {_TITLES[state]}",
        f"genie `{genie_handle}` · conversation `{conversation_id or '-'}` · turn {turn}"
        + (f" · {queued} queued" if queued else ""),
    ]
    if since is not None:
        lines.append(f"since {_ts(since)}")
    lines.extend(approval_card(workflow_id, p) for p in approvals)
    lines.extend(connection_card(workflow_id, c) for c in connections)
    if last_error is not None:
        code = f" `{last_error.error_code}`" if last_error.error_code else ""
        req = f" (request {last_error.request_id})" if last_error.request_id else ""
        lines.append(f"**Last error**: {last_error.type}{code}: {last_error.message}{req}")
    return "\n\n".join(lines)
