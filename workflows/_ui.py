"""The markdown "current details" card shown for a conversation in the Temporal Web UI.

Pure functions of the workflow's state, so they are deterministic and unit-testable.
The card answers what ops ask first: what is it doing, what does it wait for, since when,
until when, who may decide, and the exact command that moves it on.

Markdown structure. The Web UI renders the card with a markdown parser in which a list
cannot interrupt a paragraph: a ``- `` line directly under a paragraph line shows as
literal text. So the card is a sequence of blocks (heading, paragraph or list) always
separated by a blank line, and every list starts after one.

Size. The card travels in the workflow's metadata query and, in the UI, in the URL of
the frame that renders it, so it is bounded (``MAX_CARD_BYTES``): every free-form value
is clipped, at most ``MAX_ITEMS`` waiting items are shown (then "and N more"), and the
whole text is cut as a last resort. Values that come from outside (names, notes, error
messages) are escaped so they cannot change the card's structure.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

from genie_api import inert
from workflows.models import ErrorInfo, PendingApproval, PendingConnection

MAX_CARD_BYTES = 16 * 1024
"""Upper bound on the card's UTF-8 size."""
MAX_ITEMS = 10
"""Waiting items (confirmations and connections) shown; the rest are counted."""
MAX_APPROVERS_SHOWN = 10

_MAX_PARAM_CHARS = 300
_MAX_NAME_CHARS = 120
_MAX_NOTE_CHARS = 300
_MAX_ERROR_CHARS = 500
_MAX_URL_CHARS = 2_048
_MAX_ORPHAN_NOTES = 5
_ANYONE = "anyone with access to this namespace"

_TITLES: dict[str, str] = {
    "starting": "Starting",
    "idle": "Idle: ready for the next message",
    "running": "Running",
    "awaiting_approval": "Awaiting approval",
    "awaiting_connection": "Awaiting connection",
    "ended": "Ended",
    "failed": "Failed",
}

_WS = re.compile(r"\s+")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#!])")
_BACKTICKS = re.compile(r"`+")


# ---------------------------------------------------------------- inline helpers


def _clip(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters (an ellipsis marks a cut)."""
    text = _WS.sub(" ", text[: 2 * limit + 2]).strip()  # never scans more than it keeps
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value: object, limit: int = _MAX_NOTE_CHARS) -> str:
    """Free text from outside, clipped and escaped: it renders as written, never as markup."""
    # Clipped before and after: the escapes make the text longer, never unbounded.
    return _MD_SPECIAL.sub(r"\\\1", _clip(inert(_clip(str(value), limit)), limit))


def _code(value: str) -> str:
    """An inline code span holding ``value`` verbatim, whatever backticks it contains
    (characters that would reorder or hide text as their escape)."""
    value = _WS.sub(" ", inert(value))
    longest = max((len(m) for m in _BACKTICKS.findall(value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value[:1] in ("`", " ") or value[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _ts(t: datetime | None) -> str:
    if t is None:
        return "-"
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _signal_cmd(workflow_id: str, name: str, payload: dict[str, object]) -> str:
    body = json.dumps(payload, separators=(",", ":"))
    return (
        f"temporal workflow signal --workflow-id {shlex.quote(workflow_id)} "
        f"--name {name} --input {shlex.quote(body)}"
    )


def _bullets(items: Iterable[str]) -> str:
    """A markdown list block (the caller separates blocks with blank lines)."""
    return "\n".join(f"- {item}" for item in items)


def _size(blocks: Iterable[str]) -> int:
    return sum(len(b.encode()) + 2 for b in blocks)


# ---------------------------------------------------------------- item blocks


def approval_card(workflow_id: str, p: PendingApproval, note: str | None = None) -> str:
    """One pending confirmation: a bold line, a blank line, then its list."""
    params = json.dumps(p.skill_parameters, ensure_ascii=False, default=str)
    if len(params) > _MAX_PARAM_CHARS:
        params = params[:_MAX_PARAM_CHARS] + "…"
    wid = shlex.quote(workflow_id)
    cid = shlex.quote(p.call_id)
    items = [f"call id: {_code(p.call_id)}"]
    if note:
        items.append(f"progress: {_text(note)}")
    items += [
        f"waiting since {_ts(p.requested_at)}",
        f"deadline: {_ts(p.deadline)}",
        f"parameters: {_code(params)}"
        + (" (too long to keep whole: shortened where marked …)" if p.parameters_shortened else ""),
        f"approve: {_code(f'geniectl approve {wid} {cid} --approver <you>')}",
        f"reject: {_code(f'geniectl reject {wid} {cid} --approver <you> --reason <why>')}",
        "or: "
        + _code(
            _signal_cmd(
                workflow_id,
                "skill_decision",
                {"call_id": p.call_id, "approved": True, "approver": "<you>"},
            )
        ),
    ]
    kind = _text(str(p.kind).capitalize(), _MAX_NAME_CHARS)
    skill = _code(_clip(p.skill_name or "?", _MAX_NAME_CHARS))
    return f"**{kind} confirmation** for {skill} (turn {p.turn})\n\n{_bullets(items)}"


def connection_card(workflow_id: str, c: PendingConnection, note: str | None = None) -> str:
    """One pending runtime connection: a bold line, a blank line, then its list."""
    wid = shlex.quote(workflow_id)
    aid = shlex.quote(c.attempt_id)
    items = [f"attempt id: {_code(c.attempt_id)}"]
    if note:
        items.append(f"progress: {_text(note)}")
    items += [
        f"waiting since {_ts(c.requested_at)}",
        f"deadline: {_ts(c.deadline)}",
        f"the user must authenticate: {_auth_link(c.auth_url)} "
        f"(expires {_ts(c.auth_expires_at)}; fresh link: "
        f"{_code(f'geniectl auth-link {wid} {aid}')})",
        f"after they have: {_code(f'geniectl connect-done {wid} {aid} --actor <you>')}",
        f"decline: {_code(f'geniectl connect-reject {wid} {aid} --actor <you>')}",
        "or: "
        + _code(
            _signal_cmd(
                workflow_id,
                "connection_decision",
                {"attempt_id": c.attempt_id, "action": "done", "actor": "<you>"},
            )
        ),
    ]
    connector = _code(_clip(c.connector_name or "?", _MAX_NAME_CHARS))
    return f"**Runtime connection** to {connector} (turn {c.turn})\n\n{_bullets(items)}"


def _auth_link(url: str | None) -> str:
    if not url:
        return "no link yet"
    linkable = (
        url.startswith(("https://", "http://"))
        and len(url) <= _MAX_URL_CHARS
        and not re.search(r"[\s<>]", url)
    )
    return f"[open the auth link](<{url}>)" if linkable else "the link is not shown here"


# ---------------------------------------------------------------- the card


def details_card(
    *,
    workflow_id: str,
    state: str,
    genie_handle: str = "?",
    user_id: str | None = None,
    conversation_id: str | None = None,
    turn: int = 0,
    queued: int = 0,
    since: datetime | None = None,
    approvals: Sequence[PendingApproval] = (),
    connections: Sequence[PendingConnection] = (),
    last_error: ErrorInfo | None = None,
    approvers: Sequence[str] | None = None,
    decision_notes: Mapping[str, str] | None = None,
    api_note: str | None = None,
    notifications: Sequence[str] = (),
    policy_note: str | None = None,
) -> str:
    """The whole card, at most ``MAX_CARD_BYTES`` of UTF-8.

    ``approvers`` are the policy's (empty or ``None``: anyone with access to the
    namespace); ``decision_notes`` maps a call or attempt id to a short note shown under
    that item (a note for an id not shown is listed on its own); ``api_note`` says how
    the Headless API is doing when that matters (an outage, retries); ``notifications``
    are one line per endpoint about the last notification sent to it; ``policy_note``
    says where the policy came from when it is not the caller's.
    """
    notes = dict(decision_notes or {})
    waiting = len(approvals) + len(connections)

    head = [
        f"### {_TITLES.get(state) or _text(state.replace('_', ' ').capitalize(), 60)}",
        f"genie {_code(_clip(genie_handle, _MAX_NAME_CHARS))} · "
        + (f"user {_code(_clip(user_id, _MAX_NAME_CHARS))} · " if user_id else "")
        + "conversation "
        f"{_code(_clip(conversation_id or '-', _MAX_NAME_CHARS))} · turn {turn}"
        + (f" · {queued} queued" if queued else ""),
    ]
    if since is not None:
        head.append(f"since {_ts(since)}")
    if api_note:
        head.append(f"**API**: {_text(api_note)}")
    if waiting:
        head.append(f"**Who may decide**: {_who(approvers)}")
    if policy_note:
        head.append(f"**Policy**: {_text(policy_note)}")

    tail: list[str] = []
    if last_error is not None:
        code = (
            f" {_code(_clip(last_error.error_code, _MAX_NAME_CHARS))}"
            if last_error.error_code
            else ""
        )
        req = (
            f" (request {_text(last_error.request_id, _MAX_NAME_CHARS)})"
            if last_error.request_id
            else ""
        )
        tail.append(
            f"**Last error**: {_text(last_error.type, _MAX_NAME_CHARS)}{code}: "
            f"{_text(last_error.message, _MAX_ERROR_CHARS)}{req}"
        )

    if notifications:
        tail.append("**Notifications**")
        tail.append(_bullets([_text(n) for n in notifications[:MAX_ITEMS]]))

    waiting_ids = _ids(approvals, connections) if notes else set()
    orphans = [(k, v) for k, v in notes.items() if k not in waiting_ids]
    if orphans:
        listed = [
            f"{_code(_clip(k, _MAX_NAME_CHARS))}: {_text(v)}"
            for k, v in orphans[:_MAX_ORPHAN_NOTES]
        ]
        if len(orphans) > _MAX_ORPHAN_NOTES:
            listed.append(f"and {len(orphans) - _MAX_ORPHAN_NOTES} more")
        tail[:0] = ["**Decisions in progress**", _bullets(listed)]

    # Waiting items, in order, while they fit both the count and the byte budget; the
    # generator renders only those looked at, however many are waiting.
    budget = MAX_CARD_BYTES - _size([*head, *tail, _more_line(workflow_id, waiting)])
    shown: list[str] = []
    for block in _item_blocks(workflow_id, approvals, connections, notes):
        if len(shown) >= MAX_ITEMS or _size([*shown, block]) > budget:
            break
        shown.append(block)
    more = [_more_line(workflow_id, waiting - len(shown))] if waiting > len(shown) else []
    return _bounded("\n\n".join([*head, *shown, *more, *tail]))


def _item_blocks(
    workflow_id: str,
    approvals: Iterable[PendingApproval],
    connections: Iterable[PendingConnection],
    notes: Mapping[str, str],
) -> Iterator[str]:
    for p in approvals:
        yield approval_card(workflow_id, p, notes.get(p.call_id))
    for c in connections:
        yield connection_card(workflow_id, c, notes.get(c.attempt_id))


def _ids(
    approvals: Iterable[PendingApproval], connections: Iterable[PendingConnection]
) -> set[str]:
    """Every waiting item's id (shown or counted in "and N more")."""
    return {p.call_id for p in approvals} | {c.attempt_id for c in connections}


def _who(approvers: Sequence[str] | None) -> str:
    if not approvers:
        return _ANYONE
    names = ", ".join(_text(a, _MAX_NAME_CHARS) for a in approvers[:MAX_APPROVERS_SHOWN])
    extra = len(approvers) - MAX_APPROVERS_SHOWN
    return names + (f" and {extra} more" if extra > 0 else "")


def _more_line(workflow_id: str, n: int) -> str:
    cmd = f"geniectl status {shlex.quote(workflow_id)}"
    return f"**and {n} more** waiting: {_code(cmd)} lists them all"


def _bounded(card: str) -> str:
    """The last resort: cut the text to ``MAX_CARD_BYTES`` on a character boundary."""
    data = card.encode()
    if len(data) <= MAX_CARD_BYTES:
        return card
    marker = "\n\n… (card truncated)"
    cut = data[: MAX_CARD_BYTES - len(marker.encode())].decode(errors="ignore")
    return cut + marker
