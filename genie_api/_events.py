"""Typed run events: the common envelope and the catalog of event types.

Every SSE ``data`` payload and every ``/events`` item is one JSON object with a ``type``.
:func:`parse_event` turns it into the matching :class:`GenieEvent` subclass through a
plain dict lookup (it runs once per event, so it stays cheap); an unknown ``type`` gives
an :class:`UnknownEvent` that keeps every field. All envelope fields except ``type`` are
optional because the sources disagree about which ones are always present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import ValidationError, ValidationInfo, field_validator

from genie_api._base import ApiId, APIModel
from genie_api._errors import ProtocolError, truncate

__all__ = [
    "EVENT_TYPES",
    "AgentMessage",
    "AuthLink",
    "BusinessApprovalRequired",
    "EventType",
    "GenieEvent",
    "ProcessingFinished",
    "ProcessingStarted",
    "RuntimeConnectionAuthFailed",
    "RuntimeConnectionAuthRequired",
    "RuntimeConnectionAuthSuccess",
    "SkillCompleted",
    "SkillConfirmationRequired",
    "SkillFailed",
    "SkillRunning",
    "SkillStopped",
    "SystemPing",
    "SystemStreamInterrupted",
    "UnknownEvent",
    "parse_event",
]


class EventType(StrEnum):
    """The event ``type`` strings known to this client (compare with ``event.type``)."""

    PROCESSING_STARTED = "processing.started"
    AGENT_MESSAGE = "agent.message"
    SKILL_RUNNING = "skill.running"
    SKILL_COMPLETED = "skill.completed"
    SKILL_STOPPED = "skill.stopped"
    SKILL_FAILED = "skill.failed"
    SKILL_CONFIRMATION_REQUIRED = "skill.confirmation_required"
    RUNTIME_CONNECTION_AUTH_REQUIRED = "runtime_connection.auth_required"
    RUNTIME_CONNECTION_AUTH_SUCCESS = "runtime_connection.auth_success"
    RUNTIME_CONNECTION_AUTH_FAILED = "runtime_connection.auth_failed"
    BUSINESS_APPROVAL_REQUIRED = "business_approval.required"
    PROCESSING_FINISHED = "processing.finished"
    SYSTEM_PING = "system.ping"
    SYSTEM_STREAM_INTERRUPTED = "system.stream_interrupted"


class AuthLink(APIModel):
    """A one-time link the end user opens to authorise a runtime connection (E11)."""

    url: str | None = None
    connector_name: str | None = None
    expires_at: datetime | None = None


class GenieEvent(APIModel):
    """Base of every run event; the common envelope every event carries.

    Attributes:
        type: The event type (``"agent.message"``, …); the only required field.
        event_id: Unique event id; what ``Last-Event-ID`` refers to.
        conversation_id: The conversation.
        genie_handle: The genie.
        genie_run_id: The run (turn) this event belongs to.
        seq_num: 1-based position within the run (restarts for every run).
        created_at: When the server created the event.
    """

    TYPE: ClassVar[str] = ""

    type: ApiId
    event_id: ApiId | None = None
    conversation_id: ApiId | None = None
    genie_handle: ApiId | None = None
    genie_run_id: ApiId | None = None
    seq_num: int | None = None
    created_at: datetime | None = None


class ProcessingStarted(GenieEvent):
    """The run began."""

    TYPE = EventType.PROCESSING_STARTED.value


class AgentMessage(GenieEvent):
    """The genie emitted text; a run may carry several, the last one is the answer."""

    TYPE = EventType.AGENT_MESSAGE.value
    message: str | None = None
    message_id: ApiId | None = None


class _SkillEvent(GenieEvent):
    skill_name: str | None = None
    skill_id: ApiId | None = None


class SkillRunning(_SkillEvent):
    """A skill (recipe) started."""

    TYPE = EventType.SKILL_RUNNING.value


class SkillCompleted(_SkillEvent):
    """A skill finished successfully."""

    TYPE = EventType.SKILL_COMPLETED.value
    result: Any = None


class SkillStopped(_SkillEvent):
    """Alternative terminal-success signal of a skill; treat like completed."""

    TYPE = EventType.SKILL_STOPPED.value
    result: Any = None


class SkillFailed(_SkillEvent):
    """A skill raised an error."""

    TYPE = EventType.SKILL_FAILED.value
    error: str | dict[str, Any] | None = None


class SkillConfirmationRequired(_SkillEvent):
    """The run pauses until the skill call is approved or rejected (E10 with ``call_id``)."""

    TYPE = EventType.SKILL_CONFIRMATION_REQUIRED.value
    call_id: ApiId | None = None
    skill_parameters: dict[str, Any] = {}
    skill_parameter_schema: list[dict[str, Any]] = []

    @field_validator("skill_parameters", "skill_parameter_schema", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        # Some producers send null for "no parameters"; the consumer wants a container.
        if value is None:
            return {} if info.field_name == "skill_parameters" else []
        return value


class RuntimeConnectionAuthRequired(GenieEvent):
    """The run pauses until the end user authorises a connection (E11/E12)."""

    TYPE = EventType.RUNTIME_CONNECTION_AUTH_REQUIRED.value
    runtime_connection_attempt_id: ApiId | None = None
    auth_link: AuthLink | None = None


class RuntimeConnectionAuthSuccess(GenieEvent):
    """The end user completed the connection; the run resumes (may never be delivered)."""

    TYPE = EventType.RUNTIME_CONNECTION_AUTH_SUCCESS.value
    runtime_connection_attempt_id: ApiId | None = None


class RuntimeConnectionAuthFailed(GenieEvent):
    """The connection attempt failed."""

    TYPE = EventType.RUNTIME_CONNECTION_AUTH_FAILED.value
    runtime_connection_attempt_id: ApiId | None = None


class BusinessApprovalRequired(GenieEvent):
    """A recipe-side business approval is needed (E13 with ``call_id``)."""

    TYPE = EventType.BUSINESS_APPROVAL_REQUIRED.value
    call_id: ApiId | None = None


class ProcessingFinished(GenieEvent):
    """The run completed; the server closes the stream after it."""

    TYPE = EventType.PROCESSING_FINISHED.value


class SystemPing(GenieEvent):
    """Heartbeat on an open stream; carries no run data and is never persisted."""

    TYPE = EventType.SYSTEM_PING.value
    timestamp: float | str | None = None


class SystemStreamInterrupted(GenieEvent):
    """The server is ending the stream early; reconnect after ``retry_after_ms``."""

    TYPE = EventType.SYSTEM_STREAM_INTERRUPTED.value
    last_seq_num: int | None = None
    reason: str | None = None
    retry_after_ms: float | None = None

    @field_validator("retry_after_ms", mode="after")
    @classmethod
    def _finite_wait(cls, value: float | None) -> float | None:
        # JSON from this peer may say NaN or Infinity (1e400 parses as infinity). NaN
        # defeats every min()/max() cap a reader puts on a wait, so it is no ask at all.
        if value is None or not math.isfinite(value):
            return None
        return max(0.0, value)


class UnknownEvent(GenieEvent):
    """An event type this client does not know; every field is kept as an extra."""


_REGISTRY: dict[str, type[GenieEvent]] = {
    cls.TYPE: cls
    for cls in (
        ProcessingStarted,
        AgentMessage,
        SkillRunning,
        SkillCompleted,
        SkillStopped,
        SkillFailed,
        SkillConfirmationRequired,
        RuntimeConnectionAuthRequired,
        RuntimeConnectionAuthSuccess,
        RuntimeConnectionAuthFailed,
        BusinessApprovalRequired,
        ProcessingFinished,
        SystemPing,
        SystemStreamInterrupted,
    )
}

EVENT_TYPES: Mapping[str, type[GenieEvent]] = _REGISTRY
"""Registry of known event types (read-only view); anything else parses as ``UnknownEvent``."""


def event_class(event_type: str) -> type[GenieEvent]:
    """Return the model class for ``event_type`` (``UnknownEvent`` when not known)."""
    return _REGISTRY.get(event_type, UnknownEvent)


def parse_event(data: Mapping[str, Any]) -> GenieEvent:
    """Build the typed event for one JSON object.

    Args:
        data: A decoded SSE ``data`` payload or ``/events`` item.

    Returns:
        The :class:`GenieEvent` subclass registered for ``data["type"]``, or an
        :class:`UnknownEvent` for any other type.

    Raises:
        ProtocolError: ``data`` has no string ``type``, or a field has an impossible
            value (e.g. a non-numeric ``seq_num``). Not retryable.
    """
    event_type = data.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("event has no 'type'", retryable=False)
    try:
        return _REGISTRY.get(event_type, UnknownEvent).model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(invalid_event(event_type, exc), retryable=False) from None


def invalid_event(event_type: str, exc: ValidationError) -> str:
    """Why an event of ``event_type`` did not validate: where, never what. ``str(exc)``
    quotes the offending values, and an event's values are the conversation (a message,
    a skill's parameters); only the first few locations, since a list of 10^5 bad items
    has 10^5 errors."""
    locs = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
    return (
        f"invalid {truncate(event_type, 100)!r} event ({exc.error_count()} field "
        f"error(s): {truncate(locs, 200)})"
    )
