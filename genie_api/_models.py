"""Request/response models for the Headless API endpoints E1-E14 (``docs/headless-api.md``).

The models accept every documented and observed variant of a body: the ``{"result": …}``
envelope is removed by the client before validation, E2 may call its list ``list`` or
``conversations``, and E6/E9 may answer with the bare array. Only fields the official
documentation guarantees are required; everything else is optional and unknown fields
are kept (``extra="allow"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import SerializeAsAny, field_validator, model_validator

from genie_api._base import ApiId, APIModel
from genie_api._events import AuthLink, GenieEvent, UnknownEvent, parse_event

__all__ = [
    "AuthLink",
    "AuthLinkStatus",
    "Conversation",
    "ConversationDetail",
    "ConversationPage",
    "ConversationState",
    "EventPage",
    "Message",
    "MessagePage",
    "SendAck",
    "UploadedFile",
]


def _wrap_list(value: Any, key: str) -> Any:
    """Turn a bare JSON array body into ``{key: array}``."""
    if isinstance(value, list):
        return {key: value}
    return value


class Conversation(APIModel):
    """A conversation (E1 response, E2 item).

    Attributes:
        conversation_id: Identifies the conversation in every later call.
    """

    conversation_id: ApiId
    topic: str | None = None
    created_at: datetime | None = None
    last_updated_at: datetime | None = None
    updated_at: datetime | None = None


class ConversationPage(APIModel):
    """One page of E2 (``GET /conversations``).

    Attributes:
        conversations: The conversations (from ``list`` or ``conversations``).
        total_count: Total number of conversations, if the server says.
        cursor: Opaque cursor of the next page; ``None`` on the last page.
    """

    conversations: list[Conversation] = []
    total_count: int | None = None
    cursor: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_variants(cls, value: Any) -> Any:
        value = _wrap_list(value, "conversations")
        if isinstance(value, Mapping) and "conversations" not in value and "list" in value:
            value = {k: v for k, v in value.items() if k != "list"} | {
                "conversations": value["list"]
            }
        return value


class ConversationState(StrEnum):
    """E3 ``state`` values this client knows; compare with ``ConversationDetail.state``.

    Production has been seen to use only ``idle`` and ``skill_processing`` (a pause shows
    as ``skill_processing``), and to read ``idle`` while a run is parked on a runtime
    connection, so ``idle`` alone never proves that a run ended.
    """

    IDLE = "idle"
    AI_RUNNING = "ai_running"
    SKILL_PROCESSING = "skill_processing"
    AWAITING_APPROVAL = "awaiting_approval"


class ConversationDetail(Conversation):
    """E3 (``GET /conversations/{id}``): a conversation with its run state.

    Attributes:
        state: A :class:`ConversationState` value or one this client does not know;
            poll it, do not trust it alone.
        last_event: The most recent event of the conversation, typed.
    """

    state: str | None = None
    last_event: SerializeAsAny[GenieEvent] | None = None

    @field_validator("last_event", mode="before")
    @classmethod
    def _typed_event(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            if not isinstance(value.get("type"), str):
                # A partial summary object; keep it rather than reject the whole body.
                return UnknownEvent.model_validate({**value, "type": ""})
            return parse_event(value)
        return value


class SendAck(APIModel):
    """E5 with ``stream: false``: the acknowledgement (possibly empty)."""

    conversation_id: ApiId | None = None
    genie_run_id: ApiId | None = None


class Message(APIModel):
    """One E6 history item."""

    message_id: ApiId | None = None
    source: str | None = None
    """``"user"`` or ``"genie"``."""
    content: str | None = None
    genie_run_id: ApiId | None = None
    created_at: datetime | None = None


class MessagePage(APIModel):
    """One page of E6 (newest first), also when the body is the bare array."""

    messages: list[Message] = []
    total_count: int | None = None
    cursor: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_array(cls, value: Any) -> Any:
        return _wrap_list(value, "messages")


class UploadedFile(APIModel):
    """E7: the uploaded file; pass ``file_id`` to ``send_message``/``stream_message``."""

    file_id: ApiId


class EventPage(APIModel):
    """One page of E9 (``GET /conversations/events``), oldest first.

    Attributes:
        events: Typed events (unknown types as :class:`UnknownEvent`).
        next_since_created_at: Pass as ``since_created_at`` for the next page; ``None``
            when there is no further page.
    """

    events: list[SerializeAsAny[GenieEvent]] = []
    next_since_created_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_array(cls, value: Any) -> Any:
        return _wrap_list(value, "events")

    @field_validator("events", mode="before")
    @classmethod
    def _typed_events(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [parse_event(v) if isinstance(v, Mapping) else v for v in value]
        return value


class AuthLinkStatus(APIModel):
    """E11: ``status`` is ``"auth_required"`` (with ``auth_link``) or ``"authorized"``."""

    status: str | None = None
    auth_link: AuthLink | None = None
