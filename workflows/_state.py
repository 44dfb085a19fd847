"""The whole state of a conversation workflow, as one model carried across continue-as-new.

The workflow keeps nothing outside ``ConversationData``: handlers and the run loop read
and change it (through the pure rules in ``_decisions``), and continue-as-new passes it
on whole, so no field can be forgotten at the seam. Every collection here has a bound,
enforced where it grows; ``bounded_for_carry`` applies the size bounds before a seam.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from genie_api import RunCursor

from workflows.models import (
    AuditEntry,
    ConversationStart,
    ConversationState,
    ConversationStatus,
    Delivery,
    ErrorInfo,
    PendingApproval,
    PendingConnection,
    PendingWork,
    SkillDecision,
    Transcript,
    TurnRecord,
    TurnResult,
    Via,
)
from workflows.signing import SigningPolicy

RETAINED_TURNS = 20
"""Finished turns kept in state for ``transcript``; the API's message history has all."""
RETAINED_TURN_BYTES = 400_000
"""The retained finished turns' JSON, at most, in bytes (older turns go first, then
intermediate messages). Bytes, not characters: an emoji is 4 bytes of UTF-8 and a control
character 6 of JSON, and the 2 MB payload limit counts bytes."""
MAX_QUEUED_TURNS = 100
"""More waiting turns than this is a caller bug; refuse rather than grow history."""
MAX_QUEUED_BYTES = 400_000
"""The waiting turns' JSON, at most, in bytes; with the retained turns and the rest of the
state, the whole of it stays under the payload limit at continue-as-new."""
CARRY_BUDGET_BYTES = 1_500_000
"""The state handed to continue-as-new, at most; ``bounded_for_carry`` drops retained
turns (oldest first) when it would be more."""
DEDUPE_WINDOW = 500
"""``client_message_id`` keys remembered (most recent first to go is the oldest)."""
DECIDED_WINDOW = 500
"""Decided call/attempt ids remembered, so a late duplicate is refused as decided."""
AUDIT_KEPT = 200
"""Accepted decisions and system events kept in state; refusals never displace them."""
REFUSALS_KEPT = 50
"""Distinct refusals kept (alike ones are counted in one entry)."""
REFUSALS_RECORDED_PER_RUN = 100
"""Refusals one run records. A refused decision update is accepted, refused in its
handler and so kept in history (and the audit) for good, a few events each; once a run
has recorded this many, the update validators refuse the rest without a trace, so a
flood of bad decisions cannot grow a paused run's history to the server's limit (which
terminates it). A refused signal cannot be turned away: it is in history regardless."""
MAX_WAITERS = 5
"""Calls that may wait on a turn at once (``wait_turn``, a send or decision with
``wait_for``). The server lets a run have 10 updates in flight; half stay free for
decisions and messages."""
MAX_LINK_REFRESHES = 20
"""Fresh auth links fetched per pending connection; each is an activity in history."""
MAX_EARLY_DECISIONS = 20


class EarlyDecision(BaseModel):
    decision: SkillDecision
    via: Via
    at: datetime


class ConversationData(BaseModel):
    """Everything the conversation knows. Carried whole across continue-as-new."""

    model_config = ConfigDict(extra="ignore")

    conversation_id: str | None = None
    state: ConversationState = "starting"
    awaiting_since: datetime | None = None
    next_turn: int = 1
    queue: list[TurnRecord] = Field(default_factory=list)
    turns: list[TurnRecord] = Field(default_factory=list)
    """Finished turns kept for ``transcript`` (bounded by RETAINED_TURNS/_CHARS)."""
    current: TurnRecord | None = None
    pause_cursor: RunCursor | None = None
    """Set only when a run continued as new in a pause of ``current`` (the pause
    rollover): where its stream stopped, so the next run waits for the same item and
    resumes the stream from there."""
    upgrade_after_turn: bool = False
    """Set when a versioned run continued as new in a pause: the next run inherits the
    pin, and the server does not tell an inherited run that a newer version became the
    target, so the run continues as new onto the target when the turn ends."""
    pause_probe_every: timedelta | None = None
    """With ``pause_cursor`` in a connection's pause: the probe interval reached, so the
    next run probes on from it instead of starting the back-off again."""
    approvals: list[PendingApproval] = Field(default_factory=list)
    connections: list[PendingConnection] = Field(default_factory=list)
    early: dict[str, EarlyDecision] = Field(default_factory=dict)
    """Decisions for call ids not shown yet (only with ``allow_early_decisions``)."""
    client_ids: dict[str, int] = Field(default_factory=dict)
    """``client_message_id`` → turn, oldest first (DEDUPE_WINDOW)."""
    decided: dict[str, str] = Field(default_factory=dict)
    """call/attempt id → what was decided, by whom (DECIDED_WINDOW)."""
    detected: list[str] = Field(default_factory=list)
    """Attempt ids the API showed as completed without anyone saying so."""
    audit: list[AuditEntry] = Field(default_factory=list)
    refusals: list[AuditEntry] = Field(default_factory=list)
    audit_dropped: int = 0
    idle_since: datetime | None = None
    """Set only when a run continued as new while idle (``_watch_idle_growth``): when the
    wait for work began, so the idle timeout runs on across the seam."""
    refusals_this_run: int = 0
    """Refusals recorded in this run's history (``REFUSALS_RECORDED_PER_RUN``); 0 again
    after continue-as-new."""
    last_error: ErrorInfo | None = None
    api_unreachable_since: datetime | None = None
    last_run_id: str | None = None
    end_reason: str | None = None
    left_at_api: str | None = None
    """What an end left behind at the API (a run it could not stop)."""
    runs: int = 1
    patch_level: int | None = None
    """The patch level (``workflows/_patches.py``) this conversation took in its first
    task, which stands for every patch up to it (0: recorded before levels); carried, and
    asked again by the next run when below the newest. None until asked."""
    running_when_long: bool | None = None
    """Whether ``GenieState`` shows ``running`` only for a turn that lasts (the policy's
    ``running_shown_after``): taken with the patch level, or asked once by a run recorded
    before levels, and carried; None until asked."""
    signing: SigningPolicy | None = None
    """Trusted decision keys, read once from the worker at start (``workflows.signing``)."""
    endpoints: list[str] = Field(default_factory=list)
    """Names of the notification endpoints the worker configures (read at start)."""
    deliveries: dict[str, Delivery] = Field(default_factory=dict)
    """The last notification to each endpoint."""
    policy_source: str | None = None
    """``deployment`` when the policy is the deployment's default."""
    trace_parents: dict[int, str] = Field(default_factory=dict)
    """Queued turn -> the W3C traceparent of the request that queued it, only while traces
    are on (``genie_telemetry.turn_trace``); taken when the turn starts, so at most one per
    queued turn."""

    # ------------------------------------------------------------------ lookups

    def turn(self, n: int) -> TurnRecord | None:
        if self.current is not None and self.current.turn == n:
            return self.current
        for t in (*self.queue, *self.turns):
            if t.turn == n:
                return t
        return None

    def first_known_turn(self) -> int:
        known = [t.turn for t in (*self.turns, *self.queue)]
        if self.current is not None:
            known.append(self.current.turn)
        return min(known, default=self.next_turn)

    def approval(self, call_id: str) -> PendingApproval | None:
        return next((p for p in self.approvals if p.call_id == call_id), None)

    def connection(self, attempt_id: str) -> PendingConnection | None:
        return next((c for c in self.connections if c.attempt_id == attempt_id), None)

    @property
    def ending(self) -> bool:
        return self.end_reason is not None


ConversationStart.model_rebuild(_types_namespace={"ConversationData": ConversationData})


def retain_finished(data: ConversationData, turn: TurnRecord) -> None:
    """Keep ``turn`` for ``transcript``, dropping what no longer fits the bounds."""
    data.turns.append(turn)
    del data.turns[:-RETAINED_TURNS]
    total = sum(map(json_bytes, data.turns))
    # Oldest turns first lose their intermediate messages, then go entirely; the newest
    # turn always stays (its texts are bounded by the activity and the message limit).
    for t in data.turns[:-1]:
        if total <= RETAINED_TURN_BYTES:
            break
        if len(t.messages) > 1:
            total -= json_bytes(t)
            t.messages = t.messages[-1:]
            t.messages_truncated = True
            total += json_bytes(t)
    while total > RETAINED_TURN_BYTES and len(data.turns) > 1:
        total -= json_bytes(data.turns.pop(0))


def json_bytes(m: BaseModel) -> int:
    """The size of ``m`` in a payload: its JSON in bytes."""
    return len(m.__pydantic_serializer__.to_json(m))


def queued_bytes(data: ConversationData) -> int:
    return sum(map(json_bytes, data.queue))


def bounded_for_carry(data: ConversationData) -> None:
    """Before continue-as-new: drop retained turns, then audit entries, oldest first,
    until the state fits ``CARRY_BUDGET_BYTES``. Everything else is bounded where it
    grows; these are bounded in count, and their long texts (a reason may have 2,000
    characters, 6 bytes each when escaped) could still add up past the payload limit."""
    over = json_bytes(data) - CARRY_BUDGET_BYTES
    while over > 0 and data.turns:
        over -= json_bytes(data.turns.pop(0))
    for entries in (data.audit, data.refusals):
        while over > 0 and entries:
            over -= json_bytes(entries.pop(0))
            data.audit_dropped += 1


def fit_status(st: ConversationStatus, budget: int) -> ConversationStatus:
    """``st`` within ``budget`` bytes of JSON: a full trail of long reasons is what can
    pass it, so the trail's oldest entries give way (counted in ``audit_dropped``)."""
    size = json_bytes(st)
    if size <= budget:
        return st
    others = size - sum(map(json_bytes, st.audit)) - len(st.audit)  # and the commas
    audit, left_out = fit_audit(st.audit, budget - others)
    return st.model_copy(update={"audit": audit, "audit_dropped": st.audit_dropped + left_out})


def fit_audit(trail: list[AuditEntry], budget: int) -> tuple[list[AuditEntry], int]:
    """The newest entries of ``trail`` (oldest first) whose JSON fits ``budget`` bytes,
    and how many older ones were left out."""
    kept: list[AuditEntry] = []
    for e in reversed(trail):
        budget -= json_bytes(e)
        if budget < 0:
            break
        kept.append(e)
    kept.reverse()
    return kept, len(trail) - len(kept)


def remember_client_id(data: ConversationData, key: str, turn: int) -> None:
    data.client_ids[key] = turn
    while len(data.client_ids) > DEDUPE_WINDOW:
        del data.client_ids[next(iter(data.client_ids))]


def remember_decided(data: ConversationData, ref: str, what: str) -> None:
    data.decided[ref] = what
    while len(data.decided) > DECIDED_WINDOW:
        del data.decided[next(iter(data.decided))]


def transcript(data: ConversationData, since: int, budget_bytes: int) -> Transcript:
    """Turns from ``since`` on, cut to ``budget_bytes`` of JSON (then ``next_since_turn``)."""
    turns = [*data.turns, *([data.current] if data.current else []), *data.queue]
    out: list[TurnRecord] = []
    size, next_since = 0, None
    for t in sorted((t for t in turns if t.turn >= since), key=lambda t: t.turn):
        size += json_bytes(t)
        if out and size > budget_bytes:
            next_since = t.turn
            break
        out.append(t)
    return Transcript(
        turns=out, first_retained_turn=data.first_known_turn(), next_since_turn=next_since
    )


def turn_result(data: ConversationData, n: int) -> TurnResult:
    t = data.turn(n)
    assert t is not None, "handlers validate the turn number first"
    return TurnResult(
        turn=n,
        status=t.status,
        reply=t.reply,
        messages=list(t.messages),
        messages_truncated=t.messages_truncated,
        pending=PendingWork(
            approvals=[p for p in data.approvals if p.turn == n],
            connections=[c for c in data.connections if c.turn == n],
        ),
        error=t.error,
    )


def unanswered(data: ConversationData, n: int) -> list[str]:
    """Ids of turn ``n``'s pauses that still wait for a human's decision."""
    return [p.call_id for p in data.approvals if p.turn == n and p.decision is None] + [
        c.attempt_id for c in data.connections if c.turn == n and c.decision is None
    ]
