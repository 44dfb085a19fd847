"""Unit tests: event parsing and the type registry (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from genie_api import (
    EVENT_TYPES,
    AgentMessage,
    AuthLink,
    EventType,
    GenieEvent,
    ProcessingFinished,
    ProtocolError,
    RuntimeConnectionAuthRequired,
    SkillConfirmationRequired,
    SkillFailed,
    SystemPing,
    SystemStreamInterrupted,
    UnknownEvent,
    parse_event,
)

ENVELOPE: dict[str, Any] = {
    "event_id": "evt_1",
    "conversation_id": "conv_1",
    "genie_handle": "gin-x",
    "genie_run_id": "run_1",
    "seq_num": 3,
    "created_at": "2026-06-08T12:35:02.480123Z",
}


def test_every_known_type_maps_to_its_class() -> None:
    assert set(EVENT_TYPES) == {t.value for t in EventType}
    for type_name, cls in EVENT_TYPES.items():
        event = parse_event({"type": type_name, **ENVELOPE})
        assert type(event) is cls
        assert event.type == type_name
        assert event.event_id == "evt_1"
        assert event.seq_num == 3
        assert event.created_at == datetime(2026, 6, 8, 12, 35, 2, 480123, tzinfo=UTC)


def test_envelope_fields_are_optional_except_type() -> None:
    event = parse_event({"type": "processing.finished"})
    assert isinstance(event, ProcessingFinished)
    assert event.event_id is None
    assert event.genie_run_id is None
    assert event.created_at is None


def test_agent_message_fields() -> None:
    event = parse_event({"type": "agent.message", "message": "hi **there**", "message_id": "m1"})
    assert isinstance(event, AgentMessage)
    assert (event.message, event.message_id) == ("hi **there**", "m1")


def test_confirmation_required_payload() -> None:
    schema = [{"name": "start_date", "label": "Start", "type": "string", "optional": False}]
    event = parse_event(
        {
            "type": "skill.confirmation_required",
            **ENVELOPE,
            "call_id": "call_abc",
            "skill_name": "Submit PTO",
            "skill_id": "recipe:1",
            "skill_parameters": {"start_date": "2026-11-01"},
            "skill_parameter_schema": schema,
        }
    )
    assert isinstance(event, SkillConfirmationRequired)
    assert event.call_id == "call_abc"
    assert event.skill_parameters == {"start_date": "2026-11-01"}
    assert event.skill_parameter_schema == schema


def test_confirmation_required_tolerates_null_containers() -> None:
    event = parse_event(
        {
            "type": "skill.confirmation_required",
            "skill_parameters": None,
            "skill_parameter_schema": None,
        }
    )
    assert isinstance(event, SkillConfirmationRequired)
    assert event.skill_parameters == {}
    assert event.skill_parameter_schema == []


def test_auth_required_carries_typed_link() -> None:
    event = parse_event(
        {
            "type": "runtime_connection.auth_required",
            "runtime_connection_attempt_id": "rca_1",
            "auth_link": {
                "url": "https://x/connect?token=t",
                "connector_name": "Salesforce",
                "expires_at": "2026-06-08T13:15:00Z",
            },
        }
    )
    assert isinstance(event, RuntimeConnectionAuthRequired)
    assert isinstance(event.auth_link, AuthLink)
    assert event.auth_link.connector_name == "Salesforce"
    assert event.runtime_connection_attempt_id == "rca_1"


@pytest.mark.parametrize("error", ["boom", {"code": "E1", "detail": "boom"}, None])
def test_skill_failed_error_is_string_or_object(error: Any) -> None:
    event = parse_event({"type": "skill.failed", "error": error})
    assert isinstance(event, SkillFailed)
    assert event.error == error


def test_ping_and_interrupted() -> None:
    ping = parse_event({"type": "system.ping", "timestamp": 1760000000.5})
    assert isinstance(ping, SystemPing)
    assert ping.timestamp == 1760000000.5
    iso = parse_event({"type": "system.ping", "timestamp": "2026-06-08T12:00:00Z"})
    assert isinstance(iso, SystemPing)
    assert iso.timestamp == "2026-06-08T12:00:00Z"
    cut = parse_event(
        {
            "type": "system.stream_interrupted",
            "genie_run_id": "run_1",
            "last_seq_num": 7,
            "reason": "max_stream_duration",
            "retry_after_ms": 200,
        }
    )
    assert isinstance(cut, SystemStreamInterrupted)
    assert (cut.last_seq_num, cut.reason, cut.retry_after_ms) == (7, "max_stream_duration", 200)


def test_unknown_type_keeps_every_field() -> None:
    data = {"type": "genie.unknown_thing", **ENVELOPE, "payload": {"a": [1, 2]}, "flag": True}
    event = parse_event(data)
    assert type(event) is UnknownEvent
    assert event.type == "genie.unknown_thing"
    dumped = event.model_dump(mode="json")
    assert dumped["payload"] == {"a": [1, 2]}
    assert dumped["flag"] is True


def test_known_type_keeps_unknown_fields() -> None:
    event = parse_event({"type": "agent.message", "message": "x", "new_field": 42})
    assert event.model_extra == {"new_field": 42}
    assert GenieEvent.model_validate(event.model_dump())


@pytest.mark.parametrize("data", [{}, {"type": ""}, {"type": 3}, {"message": "no type"}])
def test_missing_type_is_a_protocol_error(data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_event(data)
    assert info.value.retryable is False


def test_impossible_field_value_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"agent\.message"):
        parse_event({"type": "agent.message", "seq_num": "not-a-number"})


def test_lax_numbers_are_coerced() -> None:
    event = parse_event({"type": "agent.message", "seq_num": "4"})
    assert event.seq_num == 4
