"""The public message types of ``GenieConversation``.

These are the JSON shapes that external clients send and read (the ``temporal`` CLI,
the Web UI, backends in other languages), so field names here are an interface: see
``shared/DESIGN.md`` "Public contract". Every handler takes one model and returns one.

Durations (``approval_timeout`` …) accept ISO-8601 strings (``"PT24H"``, ``"P1D"``) or
numbers of seconds, as pydantic parses ``timedelta``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_MESSAGE_CHARS",
    "AuditEntry",
    "AuthLink",
    "CarriedState",
    "ConnectionDecision",
    "ConversationOutcome",
    "ConversationPolicy",
    "ConversationStart",
    "ConversationState",
    "ConversationStatus",
    "DecisionRecorded",
    "EndConversation",
    "ErrorInfo",
    "MessageAccepted",
    "PendingApproval",
    "PendingConnection",
    "PendingWork",
    "RefreshAuthLink",
    "SendMessage",
    "SkillDecision",
    "Transcript",
    "TranscriptQuery",
    "TurnRecord",
    "TurnResult",
    "TurnStatus",
    "Via",
    "WaitTurn",
]

MAX_MESSAGE_CHARS = 12_288
"""The Headless API's observed limit on one message; longer ones are refused up front."""

ConversationState = Literal[
    "starting", "idle", "running", "awaiting_approval", "awaiting_connection", "ended", "failed"
]
TurnStatus = Literal[
    "queued",
    "running",
    "awaiting_approval",
    "awaiting_connection",
    "completed",
    "failed",
    "cancelled",
]


Via = Literal["update", "signal", "policy", "api"]
"""How a decision arrived: a validated update, a signal, the policy (a timeout), or the
API itself (a connection the user completed that the workflow detected)."""


class _Model(BaseModel):
    # Inputs from other languages may carry fields we do not know yet; ignore them
    # rather than refuse the whole message.
    model_config = ConfigDict(extra="ignore")


class ConversationPolicy(_Model):
    """How long humans may take, and who may decide."""

    approval_timeout: timedelta = timedelta(hours=24)
    """How long a skill confirmation waits for a decision."""
    connection_timeout: timedelta = timedelta(hours=1)
    """How long a runtime connection waits for the user to authenticate."""
    idle_timeout: timedelta | None = None
    """End the conversation after this long with no message; ``None`` keeps it open."""
    on_approval_timeout: Literal["reject", "fail"] = "reject"
    """``reject``: the skill is rejected ("approval timed out") and the turn goes on.
    ``fail``: the skill is rejected at the API and the workflow fails."""
    approvers: list[str] = Field(default_factory=list)
    """Who may decide skills and connections; empty means anyone."""
    max_turns_per_run: int = Field(default=200, ge=1)
    """Continue-as-new after this many turns in one run (the server may suggest sooner)."""
    connection_poll_interval: timedelta = timedelta(seconds=15)
    """While a connection is pending, check the API this often (backing off to 5 min)
    for a connection the user completed without anyone telling us; 0 disables."""


class SendMessage(_Model):
    text: str
    client_message_id: str | None = None
    """Idempotency key: a repeated id returns the original turn instead of a new one."""
    attachment_uri: str | None = None
    """``file://`` path or ``http(s)://`` URL the worker uploads before sending; the
    bytes never enter workflow history."""
    wait_for: Literal["none", "attention", "completion"] = "none"
    """Also wait for the turn, as ``wait_turn`` does, and return it in
    ``MessageAccepted.result``: "ask" in one round trip (and one update in history)."""


class ConversationStart(_Model):
    """Workflow input. ``carried`` is filled only by continue-as-new."""

    genie_handle: str
    user_id: str
    first_message: SendMessage | None = None
    policy: ConversationPolicy = Field(default_factory=ConversationPolicy)
    carried: CarriedState | None = None


class MessageAccepted(_Model):
    turn: int
    duplicate: bool = False
    result: TurnResult | None = None
    """The turn, when ``SendMessage.wait_for`` asked for it."""


class WaitTurn(_Model):
    turn: int
    timeout_seconds: float | None = None
    """Return the turn as it stands after this long; ``None`` waits as long as needed."""
    wait_for: Literal["attention", "completion"] = "attention"
    """``attention``: return when the turn ends *or* first needs a human.
    ``completion``: return only when the turn has ended."""


class ErrorInfo(_Model):
    """What went wrong, as ops need it: the API's own code and request id."""

    type: str
    message: str
    status: int | None = None
    error_code: str | None = None
    request_id: str | None = None
    turn: int | None = None
    at: datetime | None = None


class PendingApproval(_Model):
    call_id: str
    kind: Literal["skill", "business"] = "skill"
    skill_name: str | None = None
    skill_id: str | None = None
    skill_parameters: dict[str, Any] = Field(default_factory=dict)
    turn: int
    requested_at: datetime
    deadline: datetime


class PendingConnection(_Model):
    attempt_id: str
    connector_name: str | None = None
    auth_url: str | None = None
    auth_expires_at: datetime | None = None
    turn: int
    requested_at: datetime
    deadline: datetime


class PendingWork(_Model):
    approvals: list[PendingApproval] = Field(default_factory=list)
    connections: list[PendingConnection] = Field(default_factory=list)


class TurnRecord(_Model):
    """One user message and what the genie did with it."""

    turn: int
    text: str
    client_message_id: str | None = None
    attachment_uri: str | None = None
    status: TurnStatus = "queued"
    reply: str | None = None
    """The genie's last ``agent.message`` of the run: its answer."""
    messages: list[str] = Field(default_factory=list)
    """Every ``agent.message`` of the run, in order (bounded; see ``messages_truncated``)."""
    messages_truncated: bool = False
    message_count: int = 0
    """How many ``agent.message`` events the run produced (``messages`` may hold fewer)."""
    genie_run_id: str | None = None
    error: ErrorInfo | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class TurnResult(_Model):
    turn: int
    status: TurnStatus
    reply: str | None = None
    messages: list[str] = Field(default_factory=list)
    messages_truncated: bool = False
    pending: PendingWork = Field(default_factory=PendingWork)
    error: ErrorInfo | None = None


class SkillDecision(_Model):
    call_id: str
    approved: bool
    approver: str
    reason: str | None = None


class ConnectionDecision(_Model):
    attempt_id: str
    action: Literal["done", "reject"]
    actor: str
    reason: str | None = None


class DecisionRecorded(_Model):
    id: str
    """The ``call_id`` or ``attempt_id`` decided."""
    decision: Literal["approved", "rejected", "done", "reject"]
    decided_by: str
    decided_at: datetime


class RefreshAuthLink(_Model):
    attempt_id: str


class AuthLink(_Model):
    attempt_id: str
    status: Literal["auth_required", "authorized"]
    url: str | None = None
    expires_at: datetime | None = None
    connector_name: str | None = None


class EndConversation(_Model):
    reason: str | None = None


class AuditEntry(_Model):
    """One decision (or refused decision) and who made it; shown in ``status.audit``."""

    at: datetime
    kind: Literal[
        "skill_decision",
        "connection_decision",
        "approval_timeout",
        "connection_timeout",
        "connection_detected",
        "end_conversation",
    ]
    ref: str | None = None
    """The ``call_id`` or ``attempt_id`` it concerns."""
    actor: str | None = None
    decision: str | None = None
    reason: str | None = None
    via: Via
    accepted: bool = True
    refusal: str | None = None
    """For a refused decision, the error type (e.g. ``UnknownCallId``) and why."""


class ConversationStatus(_Model):
    state: ConversationState
    conversation_id: str | None
    genie_handle: str
    user_id: str
    turn: int
    """The number of the latest turn queued (0 before any message)."""
    queued_turns: int = 0
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    pending_connections: list[PendingConnection] = Field(default_factory=list)
    awaiting_since: datetime | None = None
    last_error: ErrorInfo | None = None
    audit: list[AuditEntry] = Field(default_factory=list)
    ended_reason: str | None = None


class TranscriptQuery(_Model):
    since_turn: int | None = None


class Transcript(_Model):
    turns: list[TurnRecord]
    first_retained_turn: int
    """Older turns were dropped from workflow state; E6 (message history) has them all."""


class CarriedState(_Model):
    """Everything continue-as-new carries into the next run.

    The workflow continues as new only between turns, so no skill or connection wait is
    ever in flight here; decisions that arrived early are carried by id.
    """

    conversation_id: str
    next_turn: int
    queue: list[TurnRecord] = Field(default_factory=list)
    recent_turns: list[TurnRecord] = Field(default_factory=list)
    client_message_ids: dict[str, int] = Field(default_factory=dict)
    decided_ids: list[str] = Field(default_factory=list)
    """Recently decided call/attempt ids, so a late duplicate is refused as already decided."""
    audit: list[AuditEntry] = Field(default_factory=list)
    last_error: ErrorInfo | None = None
    last_run_id: str | None = None
    runs: int = 1


class ConversationOutcome(_Model):
    """The workflow's result when the conversation ends."""

    conversation_id: str | None
    turns: int
    ended_reason: str | None = None


ConversationStart.model_rebuild()
MessageAccepted.model_rebuild()
