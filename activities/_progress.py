"""What a stream segment checkpoints in its heartbeat, and how a retry reads it back."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from activities.models import SkillActivity
from genie_api import GenieEvent, RunCursor

log = logging.getLogger("genie_worker.stream")


class SegmentProgress(BaseModel):
    """The heartbeat snapshot: enough to resume after the last event it accounts for."""

    cursor: RunCursor
    messages: list[str] = Field(default_factory=list)
    skills: list[SkillActivity] = Field(default_factory=list)
    truncated: bool = False
    delivered: int = 0
    """``agent.message`` events this segment delivered, counting any that truncation
    dropped from ``messages``; what the run's E6 history is matched against."""
    events: int = 0
    reconnects: int = 0
    malformed: int = 0
    """Attempts of this segment that ended on malformed data (see MAX_MALFORMED_RETRIES)."""
    decision_posted: bool = False
    """The input's ``decision`` is posted: a retry does not post it again."""


def restore(details: Any) -> SegmentProgress | None:
    if not details:
        return None
    try:
        return SegmentProgress.model_validate(details[0])
    except ValueError:
        log.warning("ignoring unreadable heartbeat details; resuming from the input cursor")
        return None


def require(ev: GenieEvent, field: str) -> str:
    value = getattr(ev, field, None)
    if not isinstance(value, str) or not value:
        raise ApplicationError(
            f"{ev.type} event {ev.event_id} in conversation {ev.conversation_id} has no {field}",
            type="ProtocolError",
            non_retryable=True,
        )
    return value
