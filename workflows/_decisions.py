"""The rules of human decisions, as pure functions over ``ConversationData``.

A decision is a small state machine, and only its last step is final::

    pending ──decide──► posting (retrying, last error) ──API confirms──► applied
       ▲                    │
       └── API refuses ─────┘   (pending again, with a note; decidable again)

These functions hold every rule about who may decide what and when — refusals, the
deadline as a hard line in workflow time, early decisions, and the bounded audit trail —
and do no I/O, so they are unit-tested without a server (``tests/unit``). The workflow
calls them from its handlers (record) and its run loop (post, apply).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import ValidationError
from pydantic_core import to_json

from workflows import errors

# The audit helpers are part of the rules' surface (``rules.audit_refusal`` …).
from workflows._audit import Refusal as Refusal
from workflows._audit import _entry
from workflows._audit import audit as audit
from workflows._audit import audit_refusal as audit_refusal
from workflows._audit import audit_trail as audit_trail
from workflows._audit import clip as clip
from workflows._audit import invalid_input as invalid_input
from workflows._audit import system_event as system_event
from workflows._policy import ItemPolicy, for_connection, for_skill
from workflows._state import (
    MAX_EARLY_DECISIONS,
    MAX_QUEUED_BYTES,
    MAX_QUEUED_TURNS,
    ConversationData,
    EarlyDecision,
    queued_bytes,
    remember_decided,
)
from workflows.models import (
    MAX_MESSAGE_CHARS,
    AuditKind,
    ConnectionDecision,
    ConversationPolicy,
    DecisionProgress,
    DecisionProof,
    PendingApproval,
    PendingConnection,
    SendMessage,
    SkillDecision,
    Via,
)
from workflows.signing import verify_decision


def verdict(d: SkillDecision) -> Literal["approved", "rejected"]:
    return "approved" if d.approved else "rejected"


# ---------------------------------------------------------------------- messages


def message_refusal(msg: SendMessage) -> Refusal | None:
    """What is wrong with a message whatever the conversation's state (the Python API
    checks this before it sends or starts anything)."""
    if not msg.text.strip():
        return Refusal(errors.EMPTY_MESSAGE, "the message text is empty")
    if len(msg.text) > MAX_MESSAGE_CHARS:
        return Refusal(
            errors.MESSAGE_TOO_LONG,
            f"the message has {len(msg.text)} characters; the limit is {MAX_MESSAGE_CHARS}",
        )
    return None


def send_refusal(data: ConversationData, msg: SendMessage) -> Refusal | None:
    """Why this conversation refuses ``msg`` now, or None."""
    if data.ending or data.state in ("ended", "failed"):
        return Refusal(errors.CONVERSATION_ENDED, "the conversation has ended")
    shape = message_refusal(msg)
    if shape is not None:
        return shape
    if len(data.queue) >= MAX_QUEUED_TURNS:
        return Refusal(errors.QUEUE_FULL, f"{len(data.queue)} turns are already waiting")
    if queued_bytes(data) + len(to_json(msg.text)) > MAX_QUEUED_BYTES:
        # In bytes as a payload holds it (an emoji is 4, a control character 6).
        return Refusal(
            errors.QUEUE_FULL,
            f"the {len(data.queue)} waiting turns hold too much text; send again when "
            "earlier turns have finished",
        )
    return None


# ---------------------------------------------------------------------- who may decide


def skill_refusal(
    data: ConversationData,
    policy: ConversationPolicy,
    d: SkillDecision,
    now: datetime,
    workflow_id: str = "",
) -> Refusal | None:
    """Why ``d`` may not be recorded now, or None."""
    refusal = (
        _ended_refusal(data)
        or _proof_refusal(data, workflow_id, d.call_id, verdict(d), d.approver, d, now)
        or _decided(data, "call", d.call_id)
    )
    if refusal is not None:
        return refusal
    pending = data.approval(d.call_id)
    if pending is not None:
        item = for_skill(policy, pending.skill_name)
        return (
            _approver_refusal(data, item, d.approver, d.proof)
            or _pending_refusal("call", d.call_id, pending, now)
            or _second_approver_refusal(pending, d)
        )
    if policy.approvers and d.approver not in policy.approvers:
        return _not_allowed(d.approver, for_skill(policy, None))
    if d.call_id in data.early:
        return Refusal(errors.ALREADY_DECIDED, f"call {d.call_id} already has an early decision")
    running = data.current is not None and data.current.status == "running"
    if policy.allow_early_decisions and running and len(data.early) < MAX_EARLY_DECISIONS:
        return None  # kept until the genie pauses with this id, or the turn ends
    waiting = ", ".join(p.call_id for p in data.approvals) or "none"
    return Refusal(
        errors.UNKNOWN_CALL_ID,
        f"no pending confirmation has call id {d.call_id} (pending: {waiting})",
    )


def connection_refusal(
    data: ConversationData,
    policy: ConversationPolicy,
    d: ConnectionDecision,
    now: datetime,
    workflow_id: str = "",
) -> Refusal | None:
    refusal = (
        _ended_refusal(data)
        or _proof_refusal(data, workflow_id, d.attempt_id, d.action, d.actor, d, now)
        or _decided(data, "attempt", d.attempt_id)
    )
    if refusal is not None:
        return refusal
    pending = data.connection(d.attempt_id)
    if pending is None:
        return Refusal(errors.UNKNOWN_ATTEMPT_ID, unknown_attempt(data, d.attempt_id))
    item = for_connection(policy, pending.connector_name)
    return _approver_refusal(data, item, d.actor, d.proof) or _pending_refusal(
        "attempt", d.attempt_id, pending, now
    )


def _proof_refusal(
    data: ConversationData,
    workflow_id: str,
    ref: str,
    verdict: str,
    actor: str,
    d: SkillDecision | ConnectionDecision,
    now: datetime,
) -> Refusal | None:
    """With signing configured, only a valid, fresh signature from a trusted key counts."""
    if data.signing is None or not data.signing.required:
        return None
    why = verify_decision(
        data.signing,
        d.proof,
        workflow_id=workflow_id,
        ref=ref,
        verdict=verdict,
        approver=actor,
        reason=d.reason,
        now=now,
    )
    return Refusal(errors.INVALID_SIGNATURE, why) if why else None


def auth_of(proof: DecisionProof | None) -> str | None:
    """How a decision's actor was authenticated, for the audit trail."""
    return f"{proof.auth_method} (key {proof.key_id})" if proof else None


def _decided(data: ConversationData, what: str, ref: str) -> Refusal | None:
    if ref in data.decided:
        return Refusal(
            errors.ALREADY_DECIDED, f"{what} {ref} was already decided ({data.decided[ref]})"
        )
    return None


def _pending_refusal(
    what: str, ref: str, pending: PendingApproval | PendingConnection, now: datetime
) -> Refusal | None:
    """A pending item takes one decision, before its deadline."""
    p = pending.decision
    if p is not None:
        being = "being checked with" if p.state == "verifying" else "being posted to"
        return Refusal(
            errors.ALREADY_DECIDED,
            f"{what} {ref} was already decided ({p.verdict} by {p.actor}; {being} the API)",
        )
    if now >= pending.deadline:
        return Refusal(
            errors.DEADLINE_EXPIRED,
            f"the deadline for {what} {ref} passed at {pending.deadline.isoformat()}",
        )
    return None


def _ended_refusal(data: ConversationData) -> Refusal | None:
    if data.ending or data.state in ("ended", "failed"):
        return Refusal(errors.CONVERSATION_ENDED, "the conversation has ended")
    return None


def verified_groups(data: ConversationData, proof: DecisionProof | None) -> list[str]:
    """The decider's groups, trusted only from a signature the workflow checks."""
    if proof is None or data.signing is None or not data.signing.required:
        return []
    return list(proof.groups)


def _approver_refusal(
    data: ConversationData, item: ItemPolicy, actor: str, proof: DecisionProof | None
) -> Refusal | None:
    if item.may_decide(actor, verified_groups(data, proof)):
        return None
    return _not_allowed(actor, item)


def _not_allowed(actor: str, item: ItemPolicy) -> Refusal:
    return Refusal(
        errors.APPROVER_NOT_ALLOWED, f"{actor!r} may not decide this; who may: {item.who()}"
    )


def _second_approver_refusal(pending: PendingApproval, d: SkillDecision) -> Refusal | None:
    if d.approved and d.approver in pending.approved_by:
        return Refusal(
            errors.SECOND_APPROVER_REQUIRED,
            f"{d.approver} already approved call {d.call_id}; a second, different approver "
            "must approve too",
        )
    return None


def unknown_attempt(data: ConversationData, attempt_id: str) -> str:
    waiting = ", ".join(c.attempt_id for c in data.connections) or "none"
    return f"no pending connection has attempt id {attempt_id} (pending: {waiting})"


# ---------------------------------------------------------------------- recording


def record_skill(data: ConversationData, d: SkillDecision, via: Via, now: datetime) -> None:
    """Take an accepted decision: on its pending item, or as an early decision."""
    pending = data.approval(d.call_id)
    if (
        pending is not None
        and d.approved
        and len(pending.approved_by) + 1 < pending.required_approvals
    ):
        # The first of two approvals: kept on the item; nothing is posted yet.
        pending.approved_by.append(d.approver)
    elif pending is not None:
        pending.decision = DecisionProgress(
            verdict=verdict(d),
            actor=", ".join([*pending.approved_by, d.approver]) if d.approved else d.approver,
            via=via,
            reason=d.reason,
            at=now,
        )
        pending.note = None
    else:
        data.early[d.call_id] = EarlyDecision(decision=d, via=via, at=now)
    entry = _entry(now, "skill_decision", d.call_id, d.approver, verdict(d), d.reason, via)
    entry.auth = auth_of(d.proof)
    audit(data, entry)


def record_connection(
    data: ConversationData, d: ConnectionDecision, via: Via, now: datetime
) -> None:
    pending = data.connection(d.attempt_id)
    assert pending is not None, "refusal rules guarantee a pending connection"
    pending.decision = DecisionProgress(
        verdict=d.action,
        actor=d.actor,
        via=via,
        reason=d.reason,
        at=now,
        state="verifying" if d.action == "done" else "posting",
    )
    pending.note = None
    entry = _entry(now, "connection_decision", d.attempt_id, d.actor, d.action, d.reason, via)
    entry.auth = auth_of(d.proof)
    audit(data, entry)


def early_refusal(data: ConversationData, item: ItemPolicy, d: SkillDecision) -> Refusal | None:
    """Why the early decision ``d`` may not decide the item it was meant for, now that the
    item is shown and its own rule known (at the decision's arrival only the
    conversation-wide approvers could be checked): the rule's approvers and groups, or a
    rule that decides by itself (``auto``)."""
    if item.auto is not None:
        return Refusal(
            errors.ALREADY_DECIDED,
            f"call {d.call_id} is decided by the policy ({item.auto}, rule {item.rule!r})",
        )
    return _approver_refusal(data, item, d.approver, d.proof)


def early_meets_rule(data: ConversationData, call_id: str, item: ItemPolicy) -> bool:
    """Whether the early decision for ``call_id`` (if any) can be taken as the item's
    decision as it is: allowed by the item's rule, and not the first of two approvals."""
    early = data.early.get(call_id)
    if early is None:
        return True
    d = early.decision
    return early_refusal(data, item, d) is None and not (d.approved and item.required_approvals > 1)


def take_early(
    data: ConversationData, call_id: str, item: ItemPolicy | None, now: datetime
) -> None:
    """The genie paused on ``call_id``: an early decision for it becomes its decision.

    With ``item``, the item's own rule applies first: a decider it does not allow is
    refused (audited; the item stays pending), and an approval of a two-approver item
    counts as the first. ``item`` is None for runs recorded before that rule, which took
    any early decision as the item's decision."""
    early = data.early.pop(call_id, None)
    pending = data.approval(call_id)
    if early is None or pending is None:
        return
    if item is not None:
        d = early.decision
        refusal = early_refusal(data, item, d)
        if refusal is not None:
            audit_refusal(
                data, "skill_decision", call_id, d.approver, verdict(d), early.via, refusal, now
            )
            return
        if d.approved and len(pending.approved_by) + 1 < pending.required_approvals:
            pending.approved_by.append(d.approver)
            return
    pending.decision = DecisionProgress(
        verdict=verdict(early.decision),
        actor=early.decision.approver,
        via=early.via,
        reason=early.decision.reason,
        at=early.at,
    )


def drop_unused_early(data: ConversationData, turn: int, now: datetime) -> None:
    """At a turn's end, early decisions whose pause never came are refused, audited."""
    for call_id, early in list(data.early.items()):
        del data.early[call_id]
        audit_refusal(
            data,
            "skill_decision",
            call_id,
            early.decision.approver,
            verdict(early.decision),
            early.via,
            Refusal(
                errors.UNKNOWN_CALL_ID,
                f"turn {turn} ended without a confirmation with this call id",
            ),
            now,
        )


def applied(data: ConversationData, ref: str, progress: DecisionProgress, now: datetime) -> None:
    """The API confirmed the decision on ``ref``: final."""
    remember_decided(data, ref, f"{progress.verdict} by {progress.actor}")
    audit(data, _entry(now, "decision_applied", ref, progress.actor, progress.verdict, None, "api"))


def refused_by_api(item: Any, data: ConversationData, message: str, now: datetime) -> None:
    """The API would not take the decision on ``item``: it is pending again, with why."""
    progress: DecisionProgress = item.decision
    ref = getattr(item, "call_id", None) or item.attempt_id
    item.decision = None
    item.note = clip(
        f"{progress.verdict} by {progress.actor} was not applied: {message}; decide again "
        "or end the conversation",
        1000,
    )
    audit(
        data,
        _entry(
            now, "decision_failed", ref, progress.actor, progress.verdict, clip(message, 500), "api"
        ),
    )


# ---------------------------------------------------------------------- from any client


def check_skill(
    data: ConversationData,
    policy: ConversationPolicy,
    d: SkillDecision,
    via: Via,
    now: datetime,
    workflow_id: str = "",
) -> Refusal | None:
    """``skill_refusal``, with a refusal audited (every refusal is, by update or signal)."""
    refusal = skill_refusal(data, policy, d, now, workflow_id)
    if refusal is not None:
        audit_refusal(data, "skill_decision", d.call_id, d.approver, verdict(d), via, refusal, now)
    return refusal


def check_connection(
    data: ConversationData,
    policy: ConversationPolicy,
    d: ConnectionDecision,
    via: Via,
    now: datetime,
    workflow_id: str = "",
) -> Refusal | None:
    refusal = connection_refusal(data, policy, d, now, workflow_id)
    if refusal is not None:
        audit_refusal(
            data, "connection_decision", d.attempt_id, d.actor, d.action, via, refusal, now
        )
    return refusal


def skill_signal(
    data: ConversationData,
    policy: ConversationPolicy,
    raw: object,
    now: datetime,
    workflow_id: str = "",
) -> bool:
    """A skill decision sent as a signal: recorded, or audited as refused and dropped."""
    return _signal(
        SkillDecision,
        "skill_decision",
        ("call_id", "approver"),
        data,
        raw,
        now,
        lambda d: check_skill(data, policy, d, "signal", now, workflow_id),
        lambda d: record_skill(data, d, "signal", now),
    )


def connection_signal(
    data: ConversationData,
    policy: ConversationPolicy,
    raw: object,
    now: datetime,
    workflow_id: str = "",
) -> bool:
    """A connection decision sent as a signal: recorded, or audited as refused."""
    return _signal(
        ConnectionDecision,
        "connection_decision",
        ("attempt_id", "actor"),
        data,
        raw,
        now,
        lambda d: check_connection(data, policy, d, "signal", now, workflow_id),
        lambda d: record_connection(data, d, "signal", now),
    )


_D = TypeVar("_D", SkillDecision, ConnectionDecision)


def _signal(
    model: type[_D],
    kind: AuditKind,
    fields: tuple[str, str],
    data: ConversationData,
    raw: object,
    now: datetime,
    check: Callable[[_D], Refusal | None],
    record: Callable[[_D], None],
) -> bool:
    # Signals cannot be refused to their sender, so whatever is wrong, even a payload
    # that does not parse, is kept in the audit trail instead.
    try:
        d = model.model_validate(raw)
    except ValidationError as e:
        ref, actor = _field(raw, fields[0]), _field(raw, fields[1])
        audit_refusal(data, kind, ref, actor, None, "signal", invalid_input(e), now)
        return False
    if check(d) is not None:
        return False
    record(d)
    return True


def _field(raw: object, name: str) -> object:
    return raw.get(name) if isinstance(raw, dict) else None
