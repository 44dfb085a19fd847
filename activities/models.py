"""Inputs and outputs of the genie activities: one model in, one model out.

Only ids, cursors, small texts and decisions cross this boundary, so workflow history
stays small whatever the genie streams. The API key never does: activities get it from
the worker process.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from genie_api import PauseStatus, RunCursor

__all__ = [
    "MAX_AUTH_URL_CHARS",
    "MAX_NAME_CHARS",
    "MAX_PARAMETER_BYTES",
    "MAX_PARAMETER_DEPTH",
    "MAX_SKILL_ERROR_CHARS",
    "MAX_SKILL_EVENTS",
    "MAX_TURN_MESSAGE_CHARS",
    "AuthLinkInput",
    "AuthLinkResult",
    "ConnectionRequest",
    "CreateConversationInput",
    "CreateConversationResult",
    "DecisionOutcome",
    "Deployment",
    "DeploymentInput",
    "PostDecisionResult",
    "PostSkillDecisionInput",
    "ProbeConnectionInput",
    "ProbeConnectionResult",
    "RejectConnectionInput",
    "SegmentOutcome",
    "SkillActivity",
    "SkillConfirmation",
    "SkillVerdict",
    "StreamSegmentInput",
    "StreamSegmentResult",
    "UploadAttachmentInput",
    "UploadAttachmentResult",
    "bounded_parameters",
]

MAX_SKILL_EVENTS = 100
"""Skill events kept per stream segment (the latest); a run with more keeps the last ones."""
MAX_SKILL_ERROR_CHARS = 500

MAX_TURN_MESSAGE_CHARS = 256_000
"""Cap on the text of one turn's ``agent.message`` events kept in history. Past it the
earliest intermediate messages are dropped (``messages_truncated``); the final reply is
always kept, cut to this length if it is longer by itself, and E6 (message history)
remains the full record."""
MAX_PARAMETER_BYTES = 16_000
"""Skill parameters kept per pending item (as JSON); larger ones are shortened in place,
each cut marked, and the item says so (``parameters_shortened``)."""
MAX_PARAMETER_DEPTH = 16
"""Levels of lists and objects kept in skill parameters; deeper ones become a note. The
parameters travel inside other models (the segment's result, the pending item, the
carried state), and pydantic's JSON parser refuses a document nested about 200 deep:
unbounded, a genie's parameters could make the segment's result unreadable to the
workflow, failing its task on every retry."""
MAX_NAME_CHARS = 256
"""Skill and connector names kept from the genie's events; longer ones are cut (ids are
bounded by ``genie_api`` already). A stream segment's result must fit Temporal's 2 MB
payload limit whatever the genie sends, or the activity could never complete."""
MAX_AUTH_URL_CHARS = 8_192
"""An auth link longer than this is not kept (the approver fetches a fresh one)."""


def bounded_parameters(params: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``params`` and False while their JSON fits ``MAX_PARAMETER_BYTES`` and they nest
    at most ``MAX_PARAMETER_DEPTH`` levels. Otherwise a copy of the same shape, shortened
    in place, and True: deep nesting replaced by a note, and, while still too big, each
    long string cut with a ``… [N more characters]`` note and long lists and objects with
    a ``… [N more items]`` entry (``_SHORTENINGS``, each tighter than the last, until one
    fits). Keys and short values survive, so what an approver most needs (a recipient, an
    amount) stays readable beside a long body, and each cut says where it is. What fits
    under none of them keeps the start of its JSON text under ``"…"``."""
    deep = _deeper_than(params, MAX_PARAMETER_DEPTH)
    if not deep and _json_bytes(params) <= MAX_PARAMETER_BYTES:
        return params, False
    out: dict[str, Any] = params
    for chars, items, levels in _SHORTENINGS:
        out = _shorten_object(params, chars, items, levels)
        if _json_bytes(out) <= MAX_PARAMETER_BYTES:
            return out, True
    # The tightest shortening's text (never deep), at most 4 bytes a character in UTF-8,
    # less room for the note and the key.
    return {"…": _cut(_json_text(out), MAX_PARAMETER_BYTES // 4 - 32)}, True


_WHOLE = MAX_PARAMETER_BYTES  # no string or list longer than this fits anyway
_SHORTENINGS = (
    (_WHOLE, _WHOLE, MAX_PARAMETER_DEPTH),
    (2_000, 200, MAX_PARAMETER_DEPTH),
    (500, 50, 6),
    (120, 20, 4),
    (40, 8, 2),
)
"""(characters kept of a string or key, items kept of a list or object, levels kept)."""


def _deeper_than(value: object, levels: int) -> bool:
    """Whether ``value`` holds a list or an object ``levels`` deep (the top one is 0)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list | tuple):
            if depth >= levels:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def _json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _json_bytes(value: object) -> int:
    return len(_json_text(value).encode())


def _cut(text: str, chars: int) -> str:
    return (
        text if len(text) <= chars else f"{text[:chars]}… [{len(text) - chars:,} more characters]"
    )


def _shorten(value: object, chars: int, items: int, levels: int) -> object:
    if isinstance(value, dict):
        return _shorten_object(value, chars, items, levels)
    if isinstance(value, list | tuple):
        if levels == 0:
            return f"[a list of {_count(len(value), 'item')}, nested too deep to show]"
        kept = [_shorten(v, chars, items, levels - 1) for v in value[:items]]
        if len(value) > items:
            kept.append(f"… [{len(value) - items:,} more items]")
        return kept
    if value is None or isinstance(value, bool | int | float):
        return value
    return _cut(str(value), chars)


def _shorten_object(value: dict[Any, Any], chars: int, items: int, levels: int) -> Any:
    if levels == 0:
        return f"[an object of {_count(len(value), 'key')}, nested too deep to show]"
    out: dict[str, object] = {}
    for k, v in list(value.items())[:items]:
        out[_free(out, _cut(str(k), chars))] = _shorten(v, chars, items, levels - 1)
    if len(value) > items:
        out[_free(out, "…")] = f"[{len(value) - items:,} more items]"
    return out


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _free(taken: dict[str, object], key: str) -> str:
    """``key``, numbered if two keys are the same once cut (or a real key is "…")."""
    n, free = 1, key
    while free in taken:
        n += 1
        free = f"{key} ({n})"
    return free


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Scope(_Model):
    genie_handle: str
    user_id: str


class CreateConversationInput(_Scope):
    pass


class CreateConversationResult(_Model):
    conversation_id: str


class UploadAttachmentInput(_Scope):
    conversation_id: str
    attachment_uri: str


class UploadAttachmentResult(_Model):
    file_id: str
    filename: str
    size_bytes: int


class SkillVerdict(_Model):
    """A human's (or the policy's) answer to a skill confirmation, as posted to the API."""

    call_id: str
    approved: bool
    reason: str | None = None
    kind: Literal["skill", "business"] = "skill"
    """``business``: a business approval (E13); else a skill confirmation (E10)."""


class StreamSegmentInput(_Scope):
    """One stretch of a run: from the message POST (or a cursor) to the next pause or end."""

    conversation_id: str
    turn: int
    mode: Literal["send", "resume"]
    message: str | None = None
    """The user text (``send`` only). Posted at most once per turn: see the activity."""
    file_id: str | None = None
    cursor: RunCursor | None = None
    """Where the previous segment stopped (``resume``)."""
    previous_run_id: str | None = None
    """The run of the turn before this one: any newer run found while reconciling after a
    crash is this turn's, since the workflow is the conversation's only sender."""
    messages_so_far: NonNegativeInt = 0
    """``agent.message`` events of this run already delivered by earlier segments, so a
    reply recovered from E6 skips exactly those."""
    decision: SkillVerdict | None = None
    """``resume`` only: post this decision first, then stream on: the run continues
    once it is posted, so one activity does both. Posted once per segment: a heartbeat
    remembers the post, and a retry without one first asks the API (E3, E6) whether the
    run moved past the pause. If it cannot be posted the segment fails at once and
    streams nothing: with ``DecisionRefusedByApi`` when the API refused it, else
    ``DecisionNotPosted``."""
    may_have_posted: bool = False
    """An earlier activity of this turn (scheduled again after an outage outlasted its
    retries) may have posted the message: ask the API before posting (``send`` only)."""


SegmentOutcome = Literal[
    "finished", "confirmation_required", "business_approval_required", "auth_required"
]


class SkillConfirmation(_Model):
    call_id: str
    kind: Literal["skill", "business"] = "skill"
    skill_name: str | None = None
    skill_id: str | None = None
    skill_parameters: dict[str, Any] = Field(default_factory=dict)
    parameters_shortened: bool = False
    """The parameters were over ``MAX_PARAMETER_BYTES`` or ``MAX_PARAMETER_DEPTH`` and
    are kept shortened (``bounded_parameters``)."""


class ConnectionRequest(_Model):
    attempt_id: str
    connector_name: str | None = None
    auth_url: str | None = None
    auth_expires_at: datetime | None = None


class SkillActivity(_Model):
    """One skill event of a run (``skill.running``/``completed``/``stopped``/``failed``),
    for the transcript. Production runs skills in parallel: one ``running``, then one end
    event per skill; ``stopped`` is reported as an alternative successful end."""

    status: Literal["running", "completed", "stopped", "failed"]
    skill_name: str | None = None
    skill_id: str | None = None
    error: str | None = None
    """``skill.failed`` only, clipped to ``MAX_SKILL_ERROR_CHARS``."""


class StreamSegmentResult(_Model):
    outcome: SegmentOutcome
    cursor: RunCursor
    messages: list[str] = Field(default_factory=list)
    """This segment's ``agent.message`` texts, in order, each exactly once."""
    skills: list[SkillActivity] = Field(default_factory=list)
    """This segment's skill events, in run order, each once; at most ``MAX_SKILL_EVENTS``
    (the latest are kept)."""
    messages_truncated: bool = False
    confirmation: SkillConfirmation | None = None
    connection: ConnectionRequest | None = None
    events: int = 0
    """Run events consumed in this segment (not recorded per event anywhere)."""
    reconnects: int = 0
    recovered_from_history: bool = False
    """The run's end was learned from the conversation state and E6, not the stream."""


class PostSkillDecisionInput(_Scope, SkillVerdict):
    conversation_id: str
    genie_run_id: str | None = None
    """The run parked on the call, and the genie messages it delivered up to the pause:
    what the conversation state (E3, E6) is compared with to tell whether the call was
    resolved already (see ``may_have_posted``)."""
    messages_seen: NonNegativeInt = 0
    may_have_posted: bool = False
    """An earlier activity (the resume segment that carries the decision) may have posted
    it: ask the API whether the run moved past the pause before posting again, since
    production answers a repeat with a 409 that does not say "already resolved"."""


DecisionOutcome = Literal["applied", "already_resolved"]


class PostDecisionResult(_Model):
    outcome: DecisionOutcome = "applied"
    """``applied``: the API took this decision now. ``already_resolved``: the API has a
    resolution for this id already: ours, when an earlier attempt's answer was lost, or
    another one (e.g. a connection the user completed before our rejection arrived). It
    said so with its documented already-resolved code, or (skill decisions) the
    conversation state showed the run past the pause."""

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        # Results recorded before ``outcome`` existed said ``already_resolved: true``.
        if isinstance(data, dict) and "outcome" not in data and data.get("already_resolved"):
            return {**data, "outcome": "already_resolved"}
        return data


class AuthLinkInput(_Scope):
    attempt_id: str


class AuthLinkResult(_Model):
    status: Literal["auth_required", "authorized"]
    url: str | None = None
    expires_at: datetime | None = None
    connector_name: str | None = None


class RejectConnectionInput(_Scope):
    attempt_id: str
    reason: str | None = None


class ProbeConnectionInput(_Scope):
    conversation_id: str
    attempt_id: str
    genie_run_id: str | None = None
    messages_so_far: NonNegativeInt = 0
    """Genie messages of this run seen before the pause; more in E6 means it moved on."""


class ProbeConnectionResult(_Model):
    """Where the run stands on the connection, per the API (see ``genie_api.RunInspector``).

    ``parked``: the run still waits on this attempt (the workflow should keep, or put
    back, the connection as pending). ``moved_on``: the run went past it (the user
    connected, or the run ended). ``unknown``: the API shows neither.
    """

    status: PauseStatus
    state: str | None = None
    """E3 ``state`` as read; informative only (production reads ``idle`` while parked)."""
    last_event_type: str | None = None
    """Type of the conversation's newest event (E3 ``last_event``), if any."""

    @property
    def resolved(self) -> bool:
        """The run has moved past the connection."""
        return self.status == PauseStatus.MOVED_ON

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        # Results recorded before ``status`` existed carried only ``resolved``; false meant
        # "not seen to move on", which is "unknown" in today's terms.
        if isinstance(data, dict) and "status" not in data and "resolved" in data:
            status = PauseStatus.MOVED_ON if data["resolved"] else PauseStatus.UNKNOWN
            return {**data, "status": status.value}
        return data


class DeploymentInput(_Model):
    user_id: str = ""
    """The conversation's user, for ``Deployment.user_search_value``."""


class Deployment(_Model):
    """What a conversation takes from its worker's configuration, once, at start: the
    trusted decision keys (public), the names of the notification endpoints, the inbox
    address and the default policy. Secrets (webhook URLs and keys) stay in the worker."""

    keys: dict[str, str] = Field(default_factory=dict)
    """Trusted Ed25519 public keys, id → raw 32 bytes in base64; empty: no signing."""
    max_age_seconds: float = 300.0
    endpoints: list[str] = Field(default_factory=list)
    inbox_url: str | None = None
    default_policy: dict[str, Any] | None = None
    """``ConversationPolicy`` JSON for conversations started without a policy."""
    user_search_value: str | None = None
    """What the ``GenieUserId`` search attribute holds for this user: a keyed hash when
    the deployment sets ``GENIE_USER_ID_HASH_KEY`` (search attributes are not encrypted),
    else ``None`` (the user id itself)."""
    pause_rollover: bool = False
    """Whether a paused run may continue as new here: the worker is versioned (its runs
    are pinned, so the next run is resumed by the same build), or its operator set
    ``GENIE_PAUSE_ROLLOVER`` (every worker runs a release that can resume one). Asked
    again when a pause reaches its bound, not taken from the look-up at start."""
