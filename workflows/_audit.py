"""The audit trail: every decision, every refusal, every system event, bounded.

Accepted decisions and system events are kept apart from refusals, and alike refusals
share one entry with a count, so a flood of bad guesses can neither grow state nor push
a real decision out. Each run's history still holds everything (``geniectl audit``).
Pure functions over ``ConversationData``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from workflows import errors
from workflows._state import AUDIT_KEPT, REFUSALS_KEPT, ConversationData
from workflows.models import MAX_ID_CHARS, AuditEntry, AuditKind, Via


@dataclass(frozen=True)
class Refusal:
    type: str
    """A ``workflows.errors`` constant."""
    message: str

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


def clip(value: object, limit: int = MAX_ID_CHARS) -> str:
    """A client-sent value made safe to keep: a string of at most ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def invalid_input(e: ValidationError) -> Refusal:
    """A readable one-line summary of what was wrong, naming fields, never echoing values."""
    parts = [f"{'.'.join(map(str, err['loc'])) or 'input'}: {err['msg']}" for err in e.errors()]
    return Refusal(errors.INVALID_INPUT, clip("; ".join(parts[:10]), 1000))


def _entry(
    at: datetime,
    kind: AuditKind,
    ref: str | None,
    actor: str | None,
    decision: str | None,
    reason: str | None,
    via: Via,
) -> AuditEntry:
    return AuditEntry(
        at=at, kind=kind, ref=ref, actor=actor, decision=decision, reason=reason, via=via
    )


def audit(data: ConversationData, entry: AuditEntry) -> None:
    """Keep an accepted decision or a system event (bounded: AUDIT_KEPT)."""
    data.audit.append(entry)
    if len(data.audit) > AUDIT_KEPT:
        data.audit_dropped += len(data.audit) - AUDIT_KEPT
        del data.audit[:-AUDIT_KEPT]


def system_event(
    data: ConversationData,
    kind: AuditKind,
    ref: str | None,
    actor: str,
    decision: str | None,
    reason: str | None,
    via: Via,
    now: datetime,
) -> None:
    audit(data, _entry(now, kind, ref, actor, decision, reason, via))


def audit_refusal(
    data: ConversationData,
    kind: AuditKind,
    ref: object,
    actor: object,
    decision: str | None,
    via: Via,
    refusal: Refusal,
    now: datetime,
) -> None:
    """Keep a refusal. Alike refusals (kind, actor, error, via) share one entry with a
    count, and refusals are kept apart from accepted decisions, so a flood of bad
    guesses can neither grow state nor push a real decision out of the trail."""
    data.refusals_this_run += 1
    actor_s = clip(actor)
    for e in data.refusals:
        if (e.kind, e.actor, e.via) == (kind, actor_s, via) and (e.refusal or "").startswith(
            refusal.type + ":"
        ):
            e.count += 1
            e.last_at = now
            e.ref, e.refusal = clip(ref), clip(str(refusal), 1000)
            return
    data.refusals.append(
        AuditEntry(
            at=now,
            kind=kind,
            ref=clip(ref),
            actor=actor_s,
            decision=decision,
            via=via,
            accepted=False,
            refusal=clip(str(refusal), 1000),
        )
    )
    if len(data.refusals) > REFUSALS_KEPT:
        data.audit_dropped += 1
        del data.refusals[0]


def audit_trail(data: ConversationData) -> list[AuditEntry]:
    """Accepted entries and refusals, oldest first."""
    return sorted([*data.audit, *data.refusals], key=lambda e: e.at)
