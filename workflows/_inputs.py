"""The types handlers decode their input into: the public models, failing *typed*.

The SDK decodes a handler's argument before our code runs, and a decoding error there
fails the workflow task — forever, for a workflow's start input. Decoding into these
subclasses turns a validation error into an ``ApplicationError`` of type
``InvalidInput`` naming each bad field, which fails the workflow at once (start input)
or rejects the update; signals decode leniently and audit what they refuse.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError, model_validator
from temporalio.exceptions import ApplicationError

from workflows._decisions import invalid_input
from workflows.models import (
    ConnectionDecision,
    ConversationStart,
    RefreshAuthLink,
    SendMessage,
    SkillDecision,
    WaitTurn,
)


class _Typed(BaseModel):
    @model_validator(mode="wrap")
    @classmethod
    def _invalid_input(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as e:
            refusal = invalid_input(e)
            raise ApplicationError(refusal.message, type=refusal.type, non_retryable=True) from None


class StartInput(ConversationStart, _Typed): ...


class SendInput(SendMessage, _Typed): ...


class WaitInput(WaitTurn, _Typed): ...


class SkillInput(SkillDecision, _Typed): ...


class ConnectionInput(ConnectionDecision, _Typed): ...


class LinkInput(RefreshAuthLink, _Typed): ...
