"""The public message types of ``GenieConversation``.

These are the JSON shapes that external clients send and read (the ``temporal`` CLI,
the Web UI, backends in other languages), so field names here are an interface:
``docs/contract.md`` is generated from this module. Every handler takes one model and
returns one.

Every input is bounded here, at the edge: strings have a maximum length, lists a maximum
count, numbers must be finite and in range, durations lie between one second and a
year. A value outside its bound is refused with a typed error (``InvalidInput``) before
anything changes, so no client input can make a workflow task fail in a loop, and
everything the workflow keeps stays small enough for its queries and for
continue-as-new. Durations accept ISO-8601 strings (``"PT24H"``) or seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

if TYPE_CHECKING:
    from workflows._state import ConversationData

__all__ = [
    "MAX_APPROVERS",
    "MAX_ID_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_REASON_CHARS",
    "MAX_URI_CHARS",
    "MAX_WAIT_SECONDS",
    "TERMINAL_TURN_STATUSES",
    "AuditEntry",
    "AuthLink",
    "ConnectionDecision",
    "ConnectionRule",
    "ConversationOutcome",
    "ConversationPolicy",
    "ConversationStart",
    "ConversationState",
    "ConversationStatus",
    "DecisionProgress",
    "DecisionProof",
    "DecisionRecorded",
    "Delivery",
    "EndConversation",
    "ErrorInfo",
    "MessageAccepted",
    "PendingApproval",
    "PendingConnection",
    "PendingWork",
    "RefreshAuthLink",
    "SendMessage",
    "SkillDecision",
    "SkillRule",
    "Transcript",
    "TranscriptQuery",
    "TurnRecord",
    "TurnResult",
    "TurnStatus",
    "Via",
    "WaitTurn",
]

# ---------------------------------------------------------------------- bounds

MAX_MESSAGE_CHARS = 12_288
"""The Headless API's observed limit on one message; longer ones are refused up front."""
MAX_ID_CHARS = 256
"""Ids and names a client sends: call/attempt ids, approvers, dedupe keys, handles."""
MAX_REASON_CHARS = 2_000
"""A human's reason for a decision or for ending a conversation."""
MAX_URI_CHARS = 2_048
MAX_APPROVERS = 100
MAX_WAIT_SECONDS = 366 * 24 * 3600.0
"""``wait_turn`` returns after at most this long; ask again to keep waiting."""
MIN_DURATION = timedelta(seconds=1)
MAX_DURATION = timedelta(days=366)

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_CHARS)]
HeaderSafe = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[\x20-\x7e]+$"
    ),
]
"""Printable ASCII: genie handles and user ids travel in URL paths and HTTP headers, where
an emoji or a CR/LF would only fail later, at the network layer, as a retried error."""
Reason = Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)]
Duration = Annotated[timedelta, Field(ge=MIN_DURATION, le=MAX_DURATION)]

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
TERMINAL_TURN_STATUSES: frozenset[TurnStatus] = frozenset({"completed", "failed", "cancelled"})
"""A turn in one of these has ended; it never changes again."""

Via = Literal["update", "signal", "policy", "api"]
"""How a decision arrived: a validated update, a signal, the policy (a timeout), or the
API itself (a connection the user completed that the workflow detected)."""


class _Model(BaseModel):
    # Inputs from other languages may carry fields we do not know yet; ignore them
    # rather than refuse the whole message.
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------- inputs


OnTimeout = Literal["reject", "fail", "escalate"]
"""What happens at an item's deadline: reject it (the turn goes on), reject it and fail
the workflow, or notify the escalation endpoints and extend the deadline once."""


class SkillRule(_Model):
    """Policy for the skills whose name matches ``match`` (a glob; the first rule that
    matches wins). Unset fields fall back to the conversation policy's."""

    match: Id = "*"
    approvers: Annotated[list[Id], Field(max_length=MAX_APPROVERS)] | None = None
    """Who may decide these skills (names); ``None``: the policy's ``approvers``."""
    approver_groups: Annotated[list[Id], Field(max_length=MAX_APPROVERS)] = Field(
        default_factory=list
    )
    """Groups whose members may decide (from a signed decision's authenticated groups)."""
    timeout: Duration | None = None
    on_timeout: OnTimeout | None = None
    escalate_to: Annotated[list[Id], Field(max_length=20)] = Field(default_factory=list)
    """Endpoints told when the deadline passes under ``escalate`` (empty: all)."""
    escalation_timeout: Duration = timedelta(hours=1)
    """How much longer an escalated item waits before it is rejected."""
    auto: Literal["approve", "reject"] | None = None
    """Decided by the workflow at once, without a human (audited as ``policy:<match>``)."""
    auto_reason: Reason | None = None
    required_approvals: int = Field(default=1, ge=1, le=2)
    """2: two distinct approvers must approve (a reject by either rejects); posted once."""
    notify: Annotated[list[Id], Field(max_length=20)] | None = None
    """Endpoints told of each pause; ``None``: the policy's ``notify``."""


class ConnectionRule(_Model):
    """Policy for runtime connections whose connector name matches ``match``."""

    match: Id = "*"
    timeout: Duration | None = None
    on_timeout: OnTimeout | None = None
    escalate_to: Annotated[list[Id], Field(max_length=20)] = Field(default_factory=list)
    escalation_timeout: Duration = timedelta(hours=1)
    notify: Annotated[list[Id], Field(max_length=20)] | None = None


class ConversationPolicy(_Model):
    """How long humans may take, who may decide, and how long an outage is ridden out."""

    approval_timeout: Duration = timedelta(hours=24)
    """How long a skill confirmation waits for a decision. A hard line in workflow time:
    a decision that arrives after it is refused (``DeadlineExpired``)."""
    connection_timeout: Duration = timedelta(hours=1)
    """How long a runtime connection waits for the user to authenticate."""
    idle_timeout: Duration | None = None
    """End the conversation after this long with no message; ``None`` keeps it open."""
    on_approval_timeout: OnTimeout = "reject"
    """``reject``: the skill is rejected ("approval timed out") and the turn goes on.
    ``fail``: the skill is rejected at the API and the workflow fails. ``escalate``: the
    escalation endpoints are told and the deadline moves by ``escalation_timeout`` once;
    then the skill is rejected."""
    escalation_timeout: Duration = timedelta(hours=1)
    approvers: Annotated[list[Id], Field(max_length=MAX_APPROVERS)] = Field(default_factory=list)
    """Who may decide skills and connections; empty means anyone with write access to
    the namespace."""
    max_turns_per_run: int = Field(default=200, ge=1, le=10_000)
    """Continue-as-new after this many turns in one run (the server may suggest sooner)."""
    max_history_events_per_run: int = Field(default=250, ge=50, le=50_000)
    """Continue-as-new at the end of a turn once the run's history has this many events,
    and in an idle wait or a pause once what arrives meanwhile (polls, refused decisions,
    signals, probes) takes it there (at most 2,000 events for those two). A worker that
    no longer caches a conversation replays its whole run before it can take the next
    message or decision (about a millisecond of worker CPU per event;
    docs/performance.md), so this bounds what waking a long conversation costs. Each
    continue-as-new costs one billable action (the new run)."""
    connection_poll_interval: timedelta = Field(
        default=timedelta(seconds=15), ge=timedelta(0), le=MAX_DURATION
    )
    """While a connection is pending, check the API this often (doubling up to 5 min;
    after an hour of waiting, a twelfth of the time waited, so a pause with a far
    deadline adds history slowly) for a connection the user completed without anyone
    telling us; 0 disables."""
    running_shown_after: timedelta = Field(
        default=timedelta(minutes=2), ge=timedelta(seconds=1), le=timedelta(hours=1)
    )
    """A turn shows ``GenieState="running"`` only once it has run this long, so ops find the
    long and stuck turns there, while a shorter turn writes nothing to visibility (two
    upserts per turn cost the server a third more CPU than a short turn itself).
    ``status.state`` says ``running`` from the first moment, and a turn leaving a pause
    shows ``running`` at once. Short thresholds backfire under overload, when every turn
    is slow: each turn then pays a workflow task more (docs/performance.md)."""
    api_outage_timeout: Duration = timedelta(hours=1)
    """How long the worker rides out an unreachable or failing API (5xx, 429, network)
    with durable, backing-off retries before it gives up on a step (30 s doubling to 5
    min; past an hour, a twelfth of the outage so far). Errors the API calls final (4xx)
    are not retried."""
    allow_early_decisions: bool = False
    """Accept a skill decision for a call id that has not been shown yet, while a turn
    runs, and apply it if the genie pauses with that id. Off by default: with it, a
    skill could run although no human has seen the request."""
    skills: Annotated[list[SkillRule], Field(max_length=50)] = Field(default_factory=list)
    """Per-skill rules, first match wins; a skill no rule matches uses the fields above."""
    connections: Annotated[list[ConnectionRule], Field(max_length=50)] = Field(default_factory=list)
    notify: Annotated[list[Id], Field(max_length=20)] | None = None
    """Notification endpoints (names the worker's deployment configures) told of each
    pause; ``None``: all of them; ``[]``: none."""


class SendMessage(_Model):
    text: str
    """At most ``MAX_MESSAGE_CHARS``; longer is refused as ``MessageTooLong`` (and never
    enters state)."""
    client_message_id: Id | None = None
    """Idempotency key: a repeated id returns the original turn instead of a new one
    (the last ``DEDUPE_WINDOW`` keys are remembered)."""
    attachment_uri: Annotated[str, StringConstraints(max_length=MAX_URI_CHARS)] | None = None
    """``file://`` path or ``https://`` URL the worker uploads before sending; the
    bytes never enter workflow history."""
    wait_for: Literal["none", "attention", "completion"] = "none"
    """Also wait for the turn, as ``wait_turn`` does, and return it in
    ``MessageAccepted.result``: "ask" in one round trip (and one update in history)."""


class ConversationStart(_Model):
    """Workflow input. ``carried`` is filled only by continue-as-new."""

    genie_handle: HeaderSafe
    user_id: HeaderSafe
    first_message: SendMessage | None = None
    policy: ConversationPolicy | None = None
    """``None``: the deployment's default policy (``GENIE_DEPLOYMENT_FILE``), else the
    built-in defaults."""
    create_at_start: bool = False
    """Create the API conversation at once instead of with the first accepted message,
    for callers that need its id before they send (``status.conversation_id``)."""
    carried: ConversationData | None = None
    """The whole state of the previous run; clients never set it."""


class WaitTurn(_Model):
    # Strict: ``true`` is not turn 1, nor a wait of one second.
    turn: int = Field(ge=1, le=2**53, strict=True)
    timeout_seconds: float | None = Field(
        default=None, ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False, strict=True
    )
    """Return the turn as it stands after this long; ``None`` waits as long as needed
    (one update in history however long that is)."""
    wait_for: Literal["attention", "completion"] = "attention"
    """``attention``: return when the turn ends *or* needs a human for an item not in
    ``seen``. ``completion``: return only when the turn has ended."""
    seen: Annotated[list[Id], Field(max_length=100)] = Field(default_factory=list)
    """Pause ids (call or attempt ids) the caller has already shown: with ``attention``
    a pause on one of these does not end the wait, so a caller can wait past a pause
    it has reported without polling."""


class DecisionProof(_Model):
    """An inbox's Ed25519 signature over one decision (``workflows.signing``)."""

    v: int = Field(default=1, ge=1, le=2, strict=True)
    """What the signature covers: 2 (what inboxes sign now) adds the decision's reason;
    1, which proofs recorded before that carry, leaves the reason unsigned. A version-2
    signature never checks as version 1: the version is itself signed."""
    key_id: Id
    issued_at: AwareDatetime
    """With its UTC offset: a time without one cannot be compared with the workflow's
    clock, so it is refused as invalid input."""
    auth_method: Literal["jwt", "proxy", "dev"]
    """How the inbox authenticated the approver."""
    groups: Annotated[list[Id], Field(max_length=50)] = Field(default_factory=list)
    signature: Annotated[str, StringConstraints(max_length=200)]
    """base64url of the 64-byte signature."""


class SkillDecision(_Model):
    call_id: Id
    approved: bool
    approver: Id
    reason: Reason | None = None
    proof: DecisionProof | None = None
    """Required when the deployment configures decision signing."""
    wait_for: Literal["none", "attention", "completion"] = "none"
    """``decide_skill`` only: also wait for the decision's turn, as ``wait_turn`` does
    (this call counts as seen), and return it in ``DecisionRecorded.result``: "approve
    and give me the reply" in one round trip and one update in history. The
    ``skill_decision`` signal cannot answer, so it ignores this."""


class ConnectionDecision(_Model):
    attempt_id: Id
    action: Literal["done", "reject"]
    actor: Id
    reason: Reason | None = None
    proof: DecisionProof | None = None
    """Required when the deployment configures decision signing."""


class RefreshAuthLink(_Model):
    attempt_id: Id


class EndConversation(_Model):
    reason: Reason | None = None


class TranscriptQuery(_Model):
    since_turn: int | None = Field(default=None, ge=0, le=2**53, strict=True)


# ---------------------------------------------------------------------- state and answers


class ErrorInfo(_Model):
    """What went wrong, as ops need it: the API's own code and request id."""

    type: str
    message: str
    status: int | None = None
    error_code: str | None = None
    request_id: str | None = None
    turn: int | None = None
    at: datetime | None = None


class DecisionProgress(_Model):
    """A decision taken by a human (or the policy) that the API has not confirmed yet.

    Only a decision the API confirmed is applied; until then the item stays pending
    with this attached, and a retry's last error is shown here.
    """

    verdict: Literal["approved", "rejected", "done", "reject"]
    actor: str
    via: Via
    reason: str | None = None
    at: datetime
    state: Literal["posting", "verifying"] = "posting"
    attempts: int = 0
    last_error: str | None = None


class PendingApproval(_Model):
    call_id: str
    kind: Literal["skill", "business"] = "skill"
    skill_name: str | None = None
    skill_id: str | None = None
    skill_parameters: dict[str, Any] = Field(default_factory=dict)
    """As the genie sent them, unless over ``MAX_PARAMETER_BYTES`` of JSON or nested over
    ``MAX_PARAMETER_DEPTH`` levels: then shortened in place, each cut marked with ``…``
    (``parameters_shortened``)."""
    parameters_shortened: bool = False
    """Some parameters were too long to keep whole: an approver sees them shortened."""
    turn: int
    requested_at: datetime
    deadline: datetime
    decision: DecisionProgress | None = None
    """Set while a decision is being posted to the API."""
    note: str | None = None
    """Why the item is pending again (e.g. the API refused an earlier decision)."""
    required_approvals: int = 1
    approved_by: list[str] = Field(default_factory=list)
    """Approvers so far, while ``required_approvals`` is not reached."""
    escalated: bool = False
    rule: str | None = None
    """The ``match`` of the skill rule that applies, if one does."""
    approvers: list[str] = Field(default_factory=list)
    """Who may decide this item (names); empty with no ``approver_groups``: anyone."""
    approver_groups: list[str] = Field(default_factory=list)


class PendingConnection(_Model):
    attempt_id: str
    connector_name: str | None = None
    auth_url: str | None = None
    auth_expires_at: datetime | None = None
    turn: int
    requested_at: datetime
    deadline: datetime
    decision: DecisionProgress | None = None
    note: str | None = None
    escalated: bool = False
    link_refreshes: int = 0
    """Fresh links fetched for it with ``refresh_auth_link`` (bounded)."""


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


class MessageAccepted(_Model):
    turn: int
    duplicate: bool = False
    result: TurnResult | None = None
    """The turn, when ``SendMessage.wait_for`` asked for it."""


class TurnResult(_Model):
    turn: int
    status: TurnStatus
    reply: str | None = None
    messages: list[str] = Field(default_factory=list)
    messages_truncated: bool = False
    pending: PendingWork = Field(default_factory=PendingWork)
    error: ErrorInfo | None = None


class DecisionRecorded(_Model):
    id: str
    """The ``call_id`` or ``attempt_id`` decided."""
    decision: Literal["approved", "rejected", "done", "reject"]
    decided_by: str
    decided_at: datetime
    result: TurnResult | None = None
    """The decision's turn, when ``SkillDecision.wait_for`` asked for it."""


class AuthLink(_Model):
    attempt_id: str
    status: Literal["auth_required", "authorized", "unavailable"]
    url: str | None = None
    expires_at: datetime | None = None
    connector_name: str | None = None


AuditKind = Literal[
    "skill_decision",
    "connection_decision",
    "approval_timeout",
    "connection_timeout",
    "connection_detected",
    "decision_applied",
    "decision_failed",
    "escalation",
    "end_conversation",
]


class AuditEntry(_Model):
    """One decision (or refused decision) and who made it; shown in ``status.audit``."""

    at: datetime
    kind: AuditKind
    ref: str | None = None
    """The ``call_id`` or ``attempt_id`` it concerns."""
    actor: str | None = None
    decision: str | None = None
    reason: str | None = None
    via: Via
    accepted: bool = True
    refusal: str | None = None
    """For a refused decision, the error type (e.g. ``UnknownCallId``) and why."""
    auth: str | None = None
    """How the actor was authenticated, when a signed proof said so (``jwt (key k1)``);
    ``None``: the name is what the client asserted."""
    count: int = 1
    """Refusals alike in kind, actor, id and error are kept as one entry with a count."""
    last_at: datetime | None = None
    """When the last of ``count`` alike refusals arrived."""


class Delivery(_Model):
    """The last notification to one endpoint: what it said, and whether it arrived."""

    endpoint: str
    event: Literal["pause", "escalation", "decided_by_policy"]
    ref: str
    at: datetime
    state: Literal["sending", "delivered", "failed"]
    detail: str | None = None


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
    api_unreachable_since: datetime | None = None
    """Set while a step is retrying against a failing API (see ``api_outage_timeout``)."""
    audit: list[AuditEntry] = Field(default_factory=list)
    """Decisions and refusals, oldest first (bounded; see ``audit_dropped``)."""
    audit_dropped: int = 0
    """Older entries no longer kept in state; each run's history still holds them."""
    approvers: list[str] = Field(default_factory=list)
    notifications: list[Delivery] = Field(default_factory=list)
    """The last delivery to each notification endpoint."""
    ended_reason: str | None = None


class Transcript(_Model):
    turns: list[TurnRecord]
    first_retained_turn: int
    """Older turns were dropped from workflow state; E6 (message history) has them all."""
    next_since_turn: int | None = None
    """The answer was cut to fit the payload limit: ask again with this ``since_turn``."""


class ConversationOutcome(_Model):
    """The workflow's result when the conversation ends."""

    conversation_id: str | None
    turns: int
    ended_reason: str | None = None


MessageAccepted.model_rebuild()

# ``ConversationStart.carried`` is the workflow's whole state, defined in ``_state`` on top
# of the models above; importing it completes ``ConversationStart`` (see its last lines).
