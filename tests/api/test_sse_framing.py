"""SSE framing edge cases the simulator never produces, over ``httpx.MockTransport``.

The simulator always writes ``\\n``-terminated single-line frames with an ``id:``; these
tests feed the client odd-but-legal streams (CRLF, multi-line data, comments, ``[DONE]``,
frames split across chunks, no ``type`` in data) and odd responses (error bodies and
non-SSE bodies on the streaming endpoints) through a mock transport.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from genie_api import (
    AgentMessage,
    ApiKeyAuth,
    ConflictError,
    GenieClient,
    GenieEvent,
    ProcessingFinished,
    ProcessingStarted,
    ProtocolError,
    SystemPing,
    TransportError,
)
from genie_api._http import RequestContext
from genie_api._sse import decode_frame

KEY = "unit-test-key-0123456789"


def _frame(event: dict[str, object], *, eol: str = "\n", with_event: bool = True) -> str:
    lines = []
    if "event_id" in event:
        lines.append(f"id: {event['event_id']}")
    if with_event:
        lines.append(f"event: {event['type']}")
    lines.append(f"data: {json.dumps(event)}")
    return eol.join(lines) + eol + eol


def _event(i: int, type_: str = "agent.message", **extra: object) -> dict[str, object]:
    return {
        "type": type_,
        "event_id": f"evt_{i}",
        "conversation_id": "conv_1",
        "genie_run_id": "run_1",
        "seq_num": i,
        "created_at": f"2026-06-08T12:00:{i:02d}.000000Z",
        **extra,
    }


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> GenieClient:
    return GenieClient("http://genie.test", ApiKeyAuth(KEY), transport=httpx.MockTransport(handler))


def _sse_response(chunks: list[bytes], status: int = 200) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body())


async def _collect(client: GenieClient) -> list[GenieEvent]:
    async with client.stream_message("gin-1", "conv_1", "hi", user_id="u1") as events:
        return [e async for e in events]


async def test_crlf_comments_multiline_done_and_split_chunks() -> None:
    multi = json.dumps(_event(2, message="two")).replace(', "seq_num"', ',\ndata: "seq_num"')
    text = (
        ": keep-alive comment\r\n\r\n"
        + _frame(_event(1, "processing.started"), eol="\r\n")
        + "id: evt_2\nevent: agent.message\ndata: "
        + multi
        + "\n\n"
        + 'event: system.ping\ndata: {"type":"system.ping","timestamp":1}\n\n'
        + "data: [DONE]\n\n"
        + _frame(_event(3, "processing.finished"), eol="\r")
        + _frame(_event(4, "agent.message", message="after finished"))
    )
    raw = text.encode()
    # Split every few bytes so frames and even CRLF pairs straddle chunk boundaries.
    chunks = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _sse_response(chunks)

    async with _client(handler) as client:
        events = await _collect(client)
    assert [type(e) for e in events] == [
        ProcessingStarted,
        AgentMessage,
        SystemPing,
        ProcessingFinished,
    ]
    assert isinstance(events[1], AgentMessage)
    assert events[1].message == "two"
    assert events[1].seq_num == 2
    request = seen[0]
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-idp-user-id"] == "u1"
    assert json.loads(request.content) == {"message": "hi", "stream": True}


async def test_type_falls_back_to_sse_event_name_and_sticky_id_is_ignored() -> None:
    without_type = {k: v for k, v in _event(1, message="m").items() if k != "type"}
    text = (
        f"id: evt_1\nevent: agent.message\ndata: {json.dumps(without_type)}\n\n"
        # A ping without id: the decoder's sticky id would still say evt_1.
        'event: system.ping\ndata: {"type": "system.ping"}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return _sse_response([text.encode()])

    async with _client(handler) as client:
        events = await _collect(client)
    assert isinstance(events[0], AgentMessage)
    assert events[0].type == "agent.message"
    assert isinstance(events[1], SystemPing)
    assert events[1].event_id is None


def test_decode_frame_rules() -> None:
    ctx = RequestContext("send_message", conversation_id="conv_9", genie_run_id="run_9")
    assert decode_frame("", "message", ctx) is None
    assert decode_frame("[DONE]", "message", ctx) is None
    assert decode_frame("  ", "message", ctx) is None
    assert isinstance(decode_frame("", "system.ping", ctx), SystemPing)
    for bad in ("{not json", "[1, 2]", '"str"', '{"no": "type"}'):
        with pytest.raises(ProtocolError) as info:
            decode_frame(bad, "message", ctx)
        text = str(info.value)
        assert "conv_9" in text
        assert "run_9" in text
        assert bad not in text  # the data is conversation content: never in the text
        assert info.value.retryable is False
        assert (info.value.conversation_id, info.value.genie_run_id) == ("conv_9", "run_9")


def test_decode_frame_truncates_long_lines() -> None:
    ctx = RequestContext("reconnect", conversation_id="c", genie_run_id="r")
    with pytest.raises(ProtocolError) as info:
        decode_frame("x" * 5000, "message", ctx)
    assert len(str(info.value)) < 600


async def test_error_body_on_stream_is_typed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            409,
            json={"error_code": "conversation_busy", "error_message": "busy", "request_id": "r1"},
        )

    async with _client(handler) as client:
        with pytest.raises(ConflictError) as info:
            await _collect(client)
    assert info.value.error_code == "conversation_busy"
    assert info.value.retryable is False


async def test_json_200_on_stream_is_retryable_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"conversation_id": "conv_1", "genie_run_id": "run_1"})

    async with _client(handler) as client:
        with pytest.raises(ProtocolError) as info:
            await _collect(client)
    assert info.value.retryable is True
    assert "text/event-stream" in str(info.value)


async def test_connect_error_is_transport_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with _client(handler) as client:
        with pytest.raises(TransportError) as info:
            await _collect(client)
        assert info.value.retryable is True
        with pytest.raises(TransportError):
            await client.create_conversation("gin-1", user_id="u1")
