"""A refused decision, said in words an approver understands, with its HTTP status.

The workflow refuses with a typed error (``workflows.errors``); the sentence here is
chosen by that type, never by parsing the message, and filled in from the
conversation's status where it knows more (who decided, and when).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from inbox._auth import Identity
from workflows import ConversationStatus, errors
from workflows.models import AuditEntry, PendingApproval, PendingConnection

DECIDING_KINDS = frozenset(
    {
        "skill_decision",
        "connection_decision",
        "approval_timeout",
        "connection_timeout",
        "connection_detected",
    }
)


@dataclass(frozen=True)
class Explanation:
    type: str
    title: str
    sentence: str
    http_status: int
    detail: str
    """The workflow's own message, for the curious (and for support)."""


def utc(t: datetime | None) -> str:
    if t is None:
        return "-"
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def who_decided(status: ConversationStatus | None, ref: str) -> str | None:
    """ "approved by alice at 2026-01-02 12:00:03 UTC" for ``ref``, from the status."""
    if status is None:
        return None
    pending: list[PendingApproval | PendingConnection] = [
        *status.pending_approvals,
        *status.pending_connections,
    ]
    for p in pending:
        pid = getattr(p, "call_id", None) or getattr(p, "attempt_id", None)
        if pid == ref and p.decision is not None:
            d = p.decision
            return f"{d.verdict} by {d.actor} at {utc(d.at)} (being sent to the genie now)"
    entries: list[AuditEntry] = [
        a for a in status.audit if a.ref == ref and a.accepted and a.kind in DECIDING_KINDS
    ]
    if not entries:
        return None
    a = entries[-1]
    if a.kind == "approval_timeout":
        return f"rejected automatically at {utc(a.at)}: nobody decided before the deadline"
    if a.kind == "connection_timeout":
        return f"given up at {utc(a.at)}: nobody finished it before the deadline"
    if a.kind == "connection_detected":
        return f"completed by the user at {utc(a.at)}"
    how = f", authenticated by {a.auth}" if a.auth else ""
    return f"{a.decision} by {a.actor} at {utc(a.at)}{how}"


def explain(
    type: str,
    message: str,
    *,
    me: Identity,
    ref: str,
    status: ConversationStatus | None = None,
) -> Explanation:
    def e(title: str, sentence: str, http: int) -> Explanation:
        return Explanation(type, title, sentence, http, message)

    if type == errors.ALREADY_DECIDED:
        who = who_decided(status, ref)
        said = f"It was {who}." if who else f"The conversation says: {message}."
        return e("Already decided", f"Someone decided this before you. {said}", 409)
    if type == errors.DEADLINE_EXPIRED:
        return e(
            "Too late",
            "The deadline for this decision has passed, so the conversation's timeout rule "
            "applies instead (by default the skill is rejected).",
            409,
        )
    if type == errors.APPROVER_NOT_ALLOWED:
        return e(
            "Not an approver",
            f"You ({me.name}) are not among those who may decide this. The conversation "
            f"says: {message}. Your attempt was recorded in its audit trail.",
            403,
        )
    if type == errors.SECOND_APPROVER_REQUIRED:
        return e(
            "Waiting for someone else",
            "You approved this already; it needs a second approval from someone else "
            "before it runs.",
            409,
        )
    if type == errors.INVALID_SIGNATURE:
        return e(
            "Signature refused",
            "This deployment accepts only decisions signed by a trusted inbox, and the "
            "conversation did not accept this inbox's signature. Nothing was decided. "
            "Tell your operators: the inbox's signing key (GENIE_INBOX_SIGNING_KEY and "
            "GENIE_INBOX_SIGNING_KEY_ID) must match a key in the worker's "
            "GENIE_DECISION_KEYS, and both clocks must be right.",
            403,
        )
    if type in (errors.UNKNOWN_CALL_ID, errors.UNKNOWN_ATTEMPT_ID):
        return e(
            "Nothing to decide",
            "The conversation is not waiting for this decision: it may have moved on, or "
            "the link is wrong.",
            404,
        )
    if type == errors.CONVERSATION_ENDED:
        return e("Conversation ended", "The conversation has ended; nothing waits.", 410)
    if type in (errors.INVALID_INPUT, errors.INVALID_DECISION):
        return e("Not a valid decision", f"The decision was refused as malformed: {message}", 422)
    return e("Refused", f"The conversation refused the decision ({type}): {message}", 409)
