"""Integration tests: every endpoint, directive, envelope and error through the real
simulator process over HTTP/SSE."""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta

import httpx
import pytest

from genie_api import (
    AgentMessage,
    ApiKeyAuth,
    AuthenticationError,
    AuthLinkStatus,
    BadRequestError,
    ConflictError,
    GenieAPIError,
    GenieClient,
    GenieEvent,
    NotAcceptableError,
    NotFoundError,
    OAuthAuth,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    RuntimeConnectionAuthRequired,
    ServerError,
    SkillConfirmationRequired,
    SkillFailed,
    SystemStreamInterrupted,
    UnknownEvent,
    UnprocessableError,
)
from tests.services import SimProcess

from .conftest import GENIE, TEST_TIMEOUTS
from .helpers import persisted_run, stream_all, types

# ------------------------------------------------------------------ E1-E4


async def test_create_list_get_delete(client: GenieClient, user_id: str) -> None:
    created = [
        (await client.create_conversation(GENIE, user_id=user_id)).conversation_id for _ in range(3)
    ]
    assert len(set(created)) == 3
    first = await client.list_conversations(GENIE, user_id=user_id, limit=2)
    assert len(first.conversations) == 2
    assert first.cursor is not None
    second = await client.list_conversations(GENIE, user_id=user_id, limit=2, cursor=first.cursor)
    listed = {c.conversation_id for c in first.conversations + second.conversations}
    assert listed == set(created)
    assert second.cursor is None

    detail = await client.get_conversation(GENIE, created[0], user_id=user_id)
    assert detail.conversation_id == created[0]
    assert detail.state == "idle"

    await client.delete_conversation(GENIE, created[0], user_id=user_id)
    with pytest.raises(NotFoundError):
        await client.get_conversation(GENIE, created[0], user_id=user_id)


async def test_conversations_are_private_to_their_user(
    client: GenieClient, conversation_id: str
) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.get_conversation(GENIE, conversation_id, user_id="someone-else")
    assert info.value.conversation_id == conversation_id
    assert info.value.retryable is False


# ------------------------------------------------------------------ E5-E9


async def test_plain_message_stream(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    events = await stream_all(client, conversation_id, "hello there", user_id)
    assert types(events) == ["processing.started", "agent.message", "processing.finished"]
    reply = events[-2]
    assert isinstance(reply, AgentMessage)
    assert reply.message == "You said: hello there"
    run_ids = {e.genie_run_id for e in events}
    assert len(run_ids) == 1
    assert [e.seq_num for e in events] == [1, 2, 3]
    assert all(e.conversation_id == conversation_id and e.event_id for e in events)
    assert all(e.genie_handle == GENIE and e.created_at is not None for e in events)


async def test_non_streaming_send_then_reconnect(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    ack = await client.send_message(GENIE, conversation_id, "steps:2", user_id=user_id)
    assert ack.genie_run_id is not None
    assert ack.conversation_id == conversation_id
    async with client.reconnect_run(
        GENIE, conversation_id, ack.genie_run_id, user_id=user_id
    ) as events:
        replay = [e async for e in events]
    assert types(replay) == ["processing.started"] + ["agent.message"] * 3 + ["processing.finished"]
    # Re-attach after the 2nd event: exclusive replay of the rest.
    async with client.reconnect_run(
        GENIE, conversation_id, ack.genie_run_id, user_id=user_id, last_event_id=replay[1].event_id
    ) as events:
        rest = [e async for e in events]
    assert [e.event_id for e in rest] == [e.event_id for e in replay[2:]]


async def test_reconnect_errors(client: GenieClient, conversation_id: str, user_id: str) -> None:
    events = await stream_all(client, conversation_id, "hi", user_id)
    run_id = events[0].genie_run_id
    assert run_id is not None
    with pytest.raises(BadRequestError) as bad:
        async with client.reconnect_run(
            GENIE, conversation_id, run_id, user_id=user_id, last_event_id="evt_nope"
        ):
            pass
    assert bad.value.error_code == "invalid_last_event_id"
    assert bad.value.genie_run_id == run_id
    with pytest.raises(NotFoundError) as missing:
        async with client.reconnect_run(GENIE, conversation_id, "run_nope", user_id=user_id):
            pass
    assert missing.value.error_code == "run_not_found"


async def test_message_history(client: GenieClient, conversation_id: str, user_id: str) -> None:
    await stream_all(client, conversation_id, "first", user_id)
    await stream_all(client, conversation_id, "second", user_id)
    page = await client.list_messages(GENIE, conversation_id, user_id=user_id)
    contents = [(m.source, m.content) for m in page.messages]
    assert contents == [
        ("genie", "You said: second"),
        ("user", "second"),
        ("genie", "You said: first"),
        ("user", "first"),
    ]
    assert all(m.genie_run_id and m.message_id and m.created_at for m in page.messages)
    head = await client.list_messages(GENIE, conversation_id, user_id=user_id, limit=3)
    assert len(head.messages) == 3
    assert head.cursor is not None
    tail = await client.list_messages(
        GENIE, conversation_id, user_id=user_id, limit=3, cursor=head.cursor
    )
    assert [m.message_id for m in head.messages + tail.messages] == [
        m.message_id for m in page.messages
    ]


async def test_upload_and_send_with_file(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    uploaded = await client.upload_file(
        GENIE,
        conversation_id,
        user_id=user_id,
        filename="notes.txt",
        content=b"hello file",
        content_type="text/plain",
    )
    assert uploaded.file_id
    async with client.stream_message(
        GENIE, conversation_id, "see attached", user_id=user_id, file_id=uploaded.file_id
    ) as events:
        got = [e async for e in events]
    assert got[-1].type == "processing.finished"
    with pytest.raises(BadRequestError) as info:
        await stream_all_with_file(client, conversation_id, user_id, "file_nope")
    assert info.value.error_code == "invalid_file_id"


async def stream_all_with_file(
    client: GenieClient, conversation_id: str, user_id: str, file_id: str
) -> None:
    async with client.stream_message(
        GENIE, conversation_id, "x", user_id=user_id, file_id=file_id
    ) as events:
        async for _ in events:
            pass


async def test_upload_too_large(client: GenieClient, conversation_id: str, user_id: str) -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        await client.upload_file(
            GENIE,
            conversation_id,
            user_id=user_id,
            filename="big.bin",
            content=b"\0" * (20 * 1024 * 1024 + 1),
        )
    assert info.value.error_code == "file_too_large"


async def test_events_endpoint_pages(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    events = await stream_all(client, conversation_id, "steps:3", user_id)
    first = await client.list_events(
        GENIE, user_id=user_id, conversation_id=conversation_id, limit=2
    )
    assert [e.event_id for e in first.events] == [e.event_id for e in events[:2]]
    assert first.next_since_created_at is not None
    paged = []
    async for page in client.iter_event_pages(
        GENIE, user_id=user_id, conversation_id=conversation_id, limit=2
    ):
        paged.extend(page.events)
    assert [e.event_id for e in paged] == [e.event_id for e in events]
    # since_created_at is exclusive.
    created = events[2].created_at
    assert created is not None
    later = await client.list_events(
        GENIE, user_id=user_id, conversation_id=conversation_id, since_created_at=created
    )
    assert [e.event_id for e in later.events] == [e.event_id for e in events[3:]]
    before = created - timedelta(microseconds=1)
    again = await client.list_events(
        GENIE, user_id=user_id, conversation_id=conversation_id, since_created_at=before
    )
    assert again.events[0].event_id == events[2].event_id


# ------------------------------------------------------------------ directives, E10-E14


async def test_steps_and_delay(client: GenieClient, conversation_id: str, user_id: str) -> None:
    events = await stream_all(client, conversation_id, "delay:20 steps:3", user_id)
    messages = [e.message for e in events if isinstance(e, AgentMessage)]
    assert messages[:3] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert len(messages) == 4
    assert events[-1].type == "processing.finished"


async def test_fail_directive(client: GenieClient, conversation_id: str, user_id: str) -> None:
    events = await stream_all(client, conversation_id, "fail:payroll", user_id)
    assert types(events) == [
        "processing.started",
        "skill.running",
        "skill.failed",
        "agent.message",
        "agent.message",
        "processing.finished",
    ]
    failed = next(e for e in events if isinstance(e, SkillFailed))
    assert failed.error
    assert failed.skill_name == "payroll"
    assert events[-1].type == "processing.finished"


async def test_interrupt_directive(client: GenieClient, conversation_id: str, user_id: str) -> None:
    events = await stream_all(client, conversation_id, "steps:4 interrupt:2", user_id)
    assert types(events) == ["processing.started", "agent.message", "system.stream_interrupted"]
    cut = events[-1]
    assert isinstance(cut, SystemStreamInterrupted)
    assert cut.last_seq_num == 2
    assert cut.retry_after_ms is not None
    assert cut.genie_run_id == events[0].genie_run_id


@pytest.mark.parametrize("approved", [True, False])
async def test_confirm_directive_on_the_open_stream(
    client: GenieClient, conversation_id: str, user_id: str, approved: bool
) -> None:
    seen = []
    async with client.stream_message(
        GENIE, conversation_id, "please confirm:submit_pto", user_id=user_id
    ) as events:
        async for event in events:
            seen.append(event)
            if isinstance(event, SkillConfirmationRequired):
                assert event.call_id
                assert event.skill_name == "submit_pto"
                assert isinstance(event.skill_parameters, dict)
                assert isinstance(event.skill_parameter_schema, list)
                detail = await client.get_conversation(GENIE, conversation_id, user_id=user_id)
                assert detail.state == "awaiting_approval"
                assert isinstance(detail.last_event, SkillConfirmationRequired)
                with pytest.raises(ConflictError) as busy:
                    await stream_all(client, conversation_id, "another", user_id)
                assert busy.value.error_code == "conversation_busy"
                await client.decide_skill(
                    GENIE,
                    conversation_id,
                    event.call_id,
                    user_id=user_id,
                    approved=approved,
                    reason=None if approved else "changed my mind",
                )
                call_id = event.call_id
    after = types(seen)[types(seen).index("skill.confirmation_required") + 1 :]
    final = [e for e in seen if isinstance(e, AgentMessage)][-1]
    if approved:
        assert after[:2] == ["skill.running", "skill.completed"]
    else:
        assert "skill.running" not in after
        assert final.message is not None
        assert "changed my mind" in final.message
    assert after[-1] == "processing.finished"
    with pytest.raises(ConflictError) as again:
        await client.decide_skill(GENIE, conversation_id, call_id, user_id=user_id, approved=True)
    assert again.value.error_code == "skill_call_already_resolved"
    with pytest.raises(NotFoundError) as unknown:
        await client.decide_skill(
            GENIE, conversation_id, "call_nope", user_id=user_id, approved=True
        )
    assert unknown.value.error_code == "call_not_found"


async def test_connect_directive_completed_via_auth_link(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    seen = []
    async with client.stream_message(
        GENIE, conversation_id, "connect:salesforce", user_id=user_id
    ) as events:
        async for event in events:
            seen.append(event)
            if isinstance(event, RuntimeConnectionAuthRequired):
                attempt = event.runtime_connection_attempt_id
                assert attempt
                assert event.auth_link is not None
                assert event.auth_link.url
                status = await client.get_auth_link(GENIE, attempt, user_id=user_id)
                assert isinstance(status, AuthLinkStatus)
                assert status.status == "auth_required"
                assert status.auth_link is not None
                assert status.auth_link.url
                assert status.auth_link.expires_at is not None
                async with httpx.AsyncClient() as browser:
                    opened = await browser.get(status.auth_link.url)
                assert opened.status_code == 200
    after = types(seen)[types(seen).index("runtime_connection.auth_required") + 1 :]
    assert after[:3] == ["runtime_connection.auth_success", "skill.running", "skill.completed"]
    assert after[-1] == "processing.finished"
    assert attempt is not None
    done = await client.get_auth_link(GENIE, attempt, user_id=user_id)
    assert done.status == "authorized"


async def test_connect_directive_rejected(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    seen = []
    async with client.stream_message(GENIE, conversation_id, "connect:jira", user_id=user_id) as ev:
        async for event in ev:
            seen.append(event)
            if isinstance(event, RuntimeConnectionAuthRequired):
                attempt = event.runtime_connection_attempt_id
                assert attempt
                await client.reject_connection(GENIE, attempt, user_id=user_id, reason="no thanks")
    assert "skill.running" not in types(seen)
    assert seen[-1].type == "processing.finished"
    final = [e for e in seen if isinstance(e, AgentMessage)][-1]
    assert final.message is not None
    assert "declined" in final.message.lower()
    assert attempt is not None
    with pytest.raises(ConflictError) as again:
        await client.reject_connection(GENIE, attempt, user_id=user_id)
    assert again.value.error_code == "connection_already_resolved"


async def test_business_approval_and_feedback(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    events = await stream_all(client, conversation_id, "hi", user_id)
    run_id = events[0].genie_run_id
    assert run_id is not None
    await client.feedback(
        GENIE, conversation_id, run_id, user_id=user_id, reaction="positive", comment="great"
    )
    # No script produces business approvals: every call id is unknown to the simulator.
    with pytest.raises(NotFoundError):
        await client.business_approval(
            GENIE, conversation_id, "call_x", user_id=user_id, approved=True
        )


# ------------------------------------------------------------------ envelope, OAuth


async def test_result_envelope_everywhere(result_sim: SimProcess) -> None:
    user = "user-envelope"
    async with GenieClient(
        result_sim.base_url, ApiKeyAuth(result_sim.api_key), timeouts=TEST_TIMEOUTS
    ) as client:
        conv = await client.create_conversation(GENIE, user_id=user)
        cid = conv.conversation_id
        page = await client.list_conversations(GENIE, user_id=user)
        assert [c.conversation_id for c in page.conversations] == [cid]
        ack = await client.send_message(GENIE, cid, "connect:salesforce", user_id=user)
        assert ack.genie_run_id
        detail = await client.get_conversation(GENIE, cid, user_id=user)
        assert detail.conversation_id == cid
        assert detail.state is not None
        events = await persisted_run(client, cid, ack.genie_run_id, user)
        auth = next(e for e in events if isinstance(e, RuntimeConnectionAuthRequired))
        assert auth.runtime_connection_attempt_id
        status = await client.get_auth_link(GENIE, auth.runtime_connection_attempt_id, user_id=user)
        assert status.status == "auth_required"
        assert status.auth_link is not None
        await client.reject_connection(GENIE, auth.runtime_connection_attempt_id, user_id=user)
        history = await client.list_messages(GENIE, cid, user_id=user)
        assert history.messages
        assert history.messages[-1].source == "user"
        uploaded = await client.upload_file(GENIE, cid, user_id=user, filename="a", content=b"a")
        assert uploaded.file_id


async def test_oauth_token(oauth_sim: SimProcess) -> None:
    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        return "tok"

    async with GenieClient(oauth_sim.base_url, OAuthAuth(token), timeouts=TEST_TIMEOUTS) as client:
        conv = await client.create_conversation(GENIE, user_id=None)
        events = await stream_all(client, conv.conversation_id, "hi", None)
        assert events[-1].type == "processing.finished"
        page = await client.list_conversations(GENIE, user_id=None)
        assert [c.conversation_id for c in page.conversations] == [conv.conversation_id]
    assert calls == 3

    async def bad_token() -> str:
        return "not-a-token"

    async with GenieClient(oauth_sim.base_url, OAuthAuth(bad_token)) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.create_conversation(GENIE, user_id=None)
    assert info.value.error_code == "auth_failed"
    assert "not-a-token" not in str(info.value)


# ------------------------------------------------------------------ errors

STATUS_CASES = [
    (400, BadRequestError, False),
    (401, AuthenticationError, False),
    (403, PermissionDeniedError, False),
    (404, NotFoundError, False),
    (406, NotAcceptableError, False),
    (409, ConflictError, False),
    (413, PayloadTooLargeError, False),
    (422, UnprocessableError, False),
    (429, RateLimitedError, True),
    (500, ServerError, True),
    (502, ServerError, True),
    (503, ServerError, True),
    (504, ServerError, True),
]


@pytest.mark.parametrize(("status", "cls", "retryable"), STATUS_CASES)
async def test_error_status_mapping(
    sim: SimProcess,
    client: GenieClient,
    conversation_id: str,
    user_id: str,
    status: int,
    cls: type[GenieAPIError],
    retryable: bool,
) -> None:
    sim.fault(endpoint="get_conversation", status=status, conversation_id=conversation_id)
    with pytest.raises(GenieAPIError) as info:
        await client.get_conversation(GENIE, conversation_id, user_id=user_id)
    err = info.value
    assert type(err) is cls
    assert err.status == status
    assert err.retryable is retryable
    assert err.error_code
    assert err.request_id
    assert err.conversation_id == conversation_id
    # The fault was consumed: the next call succeeds.
    await client.get_conversation(GENIE, conversation_id, user_id=user_id)


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"), [(429, 2, 2.0), (503, 1.5, 1.5), (500, None, None)]
)
async def test_retry_after(
    sim: SimProcess,
    client: GenieClient,
    user_id: str,
    status: int,
    retry_after: float | None,
    expected: float | None,
) -> None:
    spec: dict[str, object] = {"endpoint": "create_conversation", "status": status}
    if retry_after is not None:
        spec["retry_after"] = retry_after
    sim.fault(**spec)
    with pytest.raises(GenieAPIError) as info:
        await client.create_conversation(GENIE, user_id=user_id)
    assert info.value.retry_after == expected
    assert info.value.retryable is True


async def test_error_on_streaming_endpoint_before_any_event(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(endpoint="send_message", status=503, retry_after=1, conversation_id=conversation_id)
    with pytest.raises(ServerError) as info:
        await stream_all(client, conversation_id, "hi", user_id)
    assert info.value.retry_after == 1.0
    assert info.value.endpoint == "send_message"


async def test_real_error_cases(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    async with GenieClient(sim.base_url, ApiKeyAuth("wrong-key")) as bad:
        with pytest.raises(AuthenticationError) as wrong:
            await bad.create_conversation(GENIE, user_id=user_id)
    assert wrong.value.error_code == "auth_failed"
    for who in ("inactive-bob", "bob@example.com"):
        with pytest.raises(AuthenticationError) as inactive:
            await client.create_conversation(GENIE, user_id=who)
        assert inactive.value.error_code == "user_nonactive_or_missing"
    with pytest.raises(NotAcceptableError) as noclient:
        await client.create_conversation("gin-noclient-1", user_id=user_id)
    assert noclient.value.error_code == "chat_interface_not_configured"
    with pytest.raises(BadRequestError) as long:
        await stream_all(client, conversation_id, "x" * 12_289, user_id)
    assert long.value.error_code == "message_too_long"
    with pytest.raises(BadRequestError) as empty:
        await client.send_message(GENIE, conversation_id, "", user_id=user_id)
    assert empty.value.error_code == "message_empty"
    events = await stream_all(client, conversation_id, "x" * 12_288, user_id)
    assert events[-1].type == "processing.finished"


async def test_api_key_never_leaks(
    sim: SimProcess,
    client: GenieClient,
    conversation_id: str,
    user_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    for endpoint, status in (("get_conversation", 401), ("events", 503), ("send_message", 403)):
        sim.fault(endpoint=endpoint, status=status, conversation_id=conversation_id)
    for call in (
        client.get_conversation(GENIE, conversation_id, user_id=user_id),
        client.list_events(GENIE, user_id=user_id, conversation_id=conversation_id),
        stream_all(client, conversation_id, "hi", user_id),
    ):
        with pytest.raises(GenieAPIError) as info:
            await call
        errors.append(info.value)
    sim.fault(endpoint="events", html_200=True)
    with pytest.raises(ProtocolError) as html:
        await client.list_events(GENIE, user_id=user_id, conversation_id=conversation_id)
    errors.append(html.value)
    async with GenieClient("http://127.0.0.1:9", ApiKeyAuth(sim.api_key)) as dead:
        with pytest.raises(GenieAPIError) as transport:
            await dead.create_conversation(GENIE, user_id=user_id)
        errors.append(transport.value)
    for err in errors:
        text = "".join(traceback.format_exception(err)) + repr(err) + str(err)
        assert sim.api_key not in text
        assert sim.api_key not in repr(vars(err))
    assert sim.api_key not in caplog.text
    assert sim.api_key not in repr(client)


async def test_html_200_is_a_retryable_protocol_error(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(endpoint="events", html_200=True)
    with pytest.raises(ProtocolError) as rest:
        await client.list_events(GENIE, user_id=user_id, conversation_id=conversation_id)
    assert rest.value.retryable is True
    assert rest.value.status == 200
    sim.fault(endpoint="send_message", html_200=True, conversation_id=conversation_id)
    with pytest.raises(ProtocolError) as stream:
        await stream_all(client, conversation_id, "hi", user_id)
    assert stream.value.retryable is True
    assert "text/html" in str(stream.value)


# ------------------------------------------------------------------ malformed SSE


async def test_malformed_non_json(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(
        endpoint="send_message",
        malformed="non_json",
        after_events=1,
        conversation_id=conversation_id,
    )
    seen: list[GenieEvent] = []

    async def consume() -> None:
        async with client.stream_message(GENIE, conversation_id, "hi", user_id=user_id) as events:
            async for event in events:
                seen.append(event)

    with pytest.raises(ProtocolError) as info:
        await consume()
    err = info.value
    run_id = seen[0].genie_run_id
    assert run_id is not None
    assert err.retryable is False
    assert (err.conversation_id, err.genie_run_id) == (conversation_id, run_id)
    assert conversation_id in str(err)
    assert run_id in str(err)
    # What is wrong, not the offending data: it is the genie's message text.
    assert "not JSON" in str(err)
    assert "trunc" not in str(err)
    assert not isinstance(err.__cause__, ValueError)


async def test_malformed_no_type(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(
        endpoint="send_message",
        malformed="no_type",
        after_events=2,
        conversation_id=conversation_id,
    )
    with pytest.raises(ProtocolError, match="no 'type'") as info:
        await stream_all(client, conversation_id, "steps:2", user_id)
    assert info.value.genie_run_id is not None
    assert info.value.genie_run_id in str(info.value)


async def test_unknown_event_and_missing_ids_are_tolerated(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(
        endpoint="send_message",
        malformed="unknown_event",
        after_events=1,
        conversation_id=conversation_id,
    )
    events = await stream_all(client, conversation_id, "hi", user_id)
    unknown = [e for e in events if isinstance(e, UnknownEvent)]
    assert len(unknown) == 1
    assert unknown[0].type == "genie.unknown_thing"
    assert (unknown[0].model_extra or {}).get("detail")
    assert events[-1].type == "processing.finished"

    sim.fault(
        endpoint="send_message",
        malformed="missing_ids",
        after_events=1,
        conversation_id=conversation_id,
    )
    events = await stream_all(client, conversation_id, "hi", user_id)
    bare = [e for e in events if e.event_id is None]
    assert len(bare) == 1
    assert isinstance(bare[0], AgentMessage)
    assert bare[0].seq_num is None
    assert events[-1].type == "processing.finished"
