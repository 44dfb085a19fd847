"""The types handlers decode their input into: the public models, failing *typed*.

The SDK decodes a handler's argument before our code runs, and a decoding error there
fails the workflow task — forever, for a workflow's start input. Decoding into these
subclasses turns a validation error into an ``ApplicationError`` of type
``InvalidInput`` naming each bad field, which fails the workflow at once (start input)
or rejects the update; signals decode leniently and audit what they refuse.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError, model_validator
from pydantic_core import to_json
from temporalio.exceptions import ApplicationError

from workflows._decisions import invalid_input
from workflows.errors import INVALID_INPUT
from workflows.models import (
    ConnectionDecision,
    ConversationStart,
    RefreshAuthLink,
    SendMessage,
    SkillDecision,
    WaitTurn,
)

MAX_UPDATE_INPUT_BYTES = 256 * 1024
"""An update's input as sent, at most. Every known field is bounded well below it (a
12,288-character message is at most 74 KiB of JSON); unknown fields, which the models
ignore for clients newer than us, would otherwise enter history unbounded with each
accepted update."""


class _Typed(BaseModel):
    _max_bytes: ClassVar[int | None] = MAX_UPDATE_INPUT_BYTES

    @model_validator(mode="wrap")
    @classmethod
    def _invalid_input(cls, data: Any, handler: Any) -> Any:
        if cls._max_bytes is not None and isinstance(data, dict):
            size = len(to_json(data, fallback=repr))
            if size > cls._max_bytes:
                raise ApplicationError(
                    f"input: {size} bytes of JSON; at most {cls._max_bytes}",
                    type=INVALID_INPUT,
                    non_retryable=True,
                )
        try:
            return handler(data)
        except ValidationError as e:
            refusal = invalid_input(e)
            raise ApplicationError(refusal.message, type=refusal.type, non_retryable=True) from None


class StartInput(ConversationStart, _Typed):
    # Carries the whole state across continue-as-new, so bounded by the carry budget and
    # the payload limit instead.
    _max_bytes: ClassVar[int | None] = None


class SendInput(SendMessage, _Typed): ...


class WaitInput(WaitTurn, _Typed): ...


class SkillInput(SkillDecision, _Typed): ...


class ConnectionInput(ConnectionDecision, _Typed): ...


class LinkInput(RefreshAuthLink, _Typed): ...
