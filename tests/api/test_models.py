"""Unit tests: response models, envelope unwrapping and body variants (no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from genie_api import (
    AgentMessage,
    AuthLinkStatus,
    Conversation,
    ConversationDetail,
    ConversationPage,
    EventPage,
    MessagePage,
    SendAck,
    SkillConfirmationRequired,
    UnknownEvent,
    UploadedFile,
    format_timestamp,
)
from genie_api._http import unwrap_envelope


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"result": {"conversation_id": "c"}}, {"conversation_id": "c"}),
        ({"result": [1, 2]}, [1, 2]),
        ({"result": None}, None),
        ({"conversation_id": "c"}, {"conversation_id": "c"}),
        # A bare body whose own field happens to be called "result" (a scalar) stays.
        ({"result": "ok", "x": 1}, {"result": "ok", "x": 1}),
        ([1], [1]),
        (None, None),
    ],
)
def test_unwrap_envelope(body: object, expected: object) -> None:
    assert unwrap_envelope(body) == expected


def test_conversation_requires_only_its_id_and_keeps_extras() -> None:
    conv = Conversation.model_validate({"conversation_id": "c1", "pinned": True})
    assert conv.conversation_id == "c1"
    assert conv.topic is None
    assert conv.model_dump()["pinned"] is True


@pytest.mark.parametrize("key", ["list", "conversations"])
def test_conversation_page_accepts_both_list_names(key: str) -> None:
    page = ConversationPage.model_validate(
        {key: [{"conversation_id": "a"}, {"conversation_id": "b"}], "total_count": 2, "cursor": "n"}
    )
    assert [c.conversation_id for c in page.conversations] == ["a", "b"]
    assert page.total_count == 2
    assert page.cursor == "n"
    assert "list" not in (page.model_extra or {})


def test_conversation_page_accepts_bare_array() -> None:
    page = ConversationPage.model_validate([{"conversation_id": "a"}])
    assert page.conversations[0].conversation_id == "a"


def test_conversation_detail_types_last_event() -> None:
    detail = ConversationDetail.model_validate(
        {
            "conversation_id": "c",
            "state": "skill_processing",
            "last_event": {
                "type": "skill.confirmation_required",
                "call_id": "call_1",
                "seq_num": 2,
            },
            "updated_at": "2026-06-08T12:34:56Z",
        }
    )
    assert detail.state == "skill_processing"
    assert isinstance(detail.last_event, SkillConfirmationRequired)
    assert detail.last_event.call_id == "call_1"
    # Subclass fields survive serialisation (SerializeAsAny).
    assert detail.model_dump()["last_event"]["call_id"] == "call_1"


def test_conversation_detail_tolerates_untyped_last_event() -> None:
    detail = ConversationDetail.model_validate(
        {"conversation_id": "c", "last_event": {"seq_num": 2}}
    )
    assert isinstance(detail.last_event, UnknownEvent)


def test_message_page_variants() -> None:
    item = {
        "message_id": "m1",
        "source": "genie",
        "content": "hi",
        "genie_run_id": "r",
        "created_at": "2026-06-08T12:35:02Z",
    }
    for body in ({"messages": [item], "total_count": 1, "cursor": None}, [item]):
        page = MessagePage.model_validate(body)
        assert page.messages[0].content == "hi"
        assert page.messages[0].created_at == datetime(2026, 6, 8, 12, 35, 2, tzinfo=UTC)


def test_event_page_types_events_and_cursor() -> None:
    page = EventPage.model_validate(
        {
            "events": [
                {"type": "agent.message", "event_id": "e1", "message": "x"},
                {"type": "brand.new", "event_id": "e2", "x": 1},
            ],
            "next_since_created_at": "2026-06-08T12:35:02.480Z",
        }
    )
    assert isinstance(page.events[0], AgentMessage)
    assert isinstance(page.events[1], UnknownEvent)
    assert page.next_since_created_at is not None
    assert page.model_dump()["events"][0]["message"] == "x"
    assert EventPage.model_validate([]).events == []


def test_empty_bodies_of_acks() -> None:
    assert SendAck.model_validate({}).genie_run_id is None
    ack = SendAck.model_validate({"conversation_id": "c", "genie_run_id": "r"})
    assert ack.genie_run_id == "r"


def test_upload_and_auth_link_status() -> None:
    assert UploadedFile.model_validate({"file_id": "f"}).file_id == "f"
    status = AuthLinkStatus.model_validate(
        {"status": "auth_required", "auth_link": {"url": "u", "connector_name": "SF"}}
    )
    assert status.auth_link is not None
    assert status.auth_link.url == "u"
    assert AuthLinkStatus.model_validate({"status": "authorized"}).auth_link is None


def test_format_timestamp() -> None:
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.000006Z"
    )
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5)).endswith("05.000000Z")
