"""A broken or hostile Headless API peer: every answer is bounded, typed and content-free.

Each test feeds the client one odd answer the simulator cannot produce (a 10 MB error
body, a line that never ends, bytes trickled forever, NaN waits, an E9 cursor that creeps
forward without end) through ``httpx.MockTransport`` — a mocked peer, on purpose, one odd
response per test. The checks are the client's promises: memory stays bounded, every
failure is a :class:`GenieAPIError` subclass, and no error text carries the API key or
conversation content (a server or gateway may echo the request, i.e. the user's message).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from genie_api import (
    ApiKeyAuth,
    BadRequestError,
    ClientLimits,
    ClientTimeouts,
    GenieAPIError,
    GenieClient,
    ProtocolError,
    ResumePolicy,
    RunCursor,
    RunReader,
    ServerError,
    SystemStreamInterrupted,
    TransportError,
)
from genie_api._errors import parse_retry_after

KEY = "hostile-test-key-0123456789abcdef"
SECRET_TEXT = "CONFIDENTIAL merger with Acme closes Friday"
FAST = ClientTimeouts(connect=1, read=1, write=1, pool=1, stream_read=0.3, total=0.6)
SSE = {"content-type": "text/event-stream"}

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def _client(handler: Handler, **kw: Any) -> GenieClient:
    return GenieClient(
        "http://genie.test", ApiKeyAuth(KEY), transport=httpx.MockTransport(handler), **kw
    )


class Body:
    """A response body that counts how much of it the client pulled."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self.sent += len(chunk)
            yield chunk


async def _forever(head: bytes, chunk: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    yield head
    while True:
        if pause:
            await asyncio.sleep(pause)
        yield chunk


async def _drain_stream(client: GenieClient) -> list[Any]:
    async with client.stream_message("gin-1", "conv_1", SECRET_TEXT, user_id="u1") as events:
        return [e async for e in events]


def _assert_clean(err: GenieAPIError) -> None:
    text = f"{err} {err!r}"
    assert KEY not in text
    assert SECRET_TEXT not in text
    assert "merger" not in text
    assert len(str(err)) <= 1100


# ------------------------------------------------------------------ error bodies


async def test_error_text_is_bounded_and_never_echoes_the_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # A gateway that echoes the request (body and credential) into a 40 KB message
        # (within the error body limit, so it is read; a larger body is dropped whole).
        echo = f"cannot process {request.content.decode()} for {request.headers['authorization']}"
        return httpx.Response(
            400,
            json={
                "error_code": "c" * 10_000,
                "error_message": echo + "x" * 40_000,
                "request_id": "r" * 10_000,
            },
        )

    async with _client(handler) as client:
        with pytest.raises(BadRequestError) as info:
            await client.send_message("gin-1", "conv_1", SECRET_TEXT, user_id="u1")
    err = info.value
    _assert_clean(err)
    assert err.error_message is not None
    assert len(err.error_message) < 400
    assert KEY not in err.error_message  # kept for callers, redacted all the same
    assert len(err.error_code or "") < 200
    assert len(err.request_id or "") < 300


@pytest.mark.parametrize("pad", [0, 280, 290, 1990])
async def test_an_echoed_key_is_redacted_from_every_field(pad: int) -> None:
    # The key lands in each field, also where a cut to the field's bound splits it.
    echo = "x" * pad + f"Bearer {KEY}"

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error_code": echo, "error_message": echo, "request_id": echo}
        return httpx.Response(401, json=body)

    def page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, content=echo.encode(), headers={"x-request-id": echo})

    for h in (handler, page):
        async with _client(h) as client:
            with pytest.raises(GenieAPIError) as info:
                await client.create_conversation("gin-1", user_id="u1")
        err = info.value
        for text in (str(err), repr(err), err.error_code, err.error_message, err.request_id):
            assert KEY[:12] not in (text or "")


async def test_error_body_and_non_sse_body_are_not_read_without_bound() -> None:
    limits = ClientLimits(
        max_body_bytes=64 * 1024, max_error_body_bytes=16 * 1024, max_event_chars=64 * 1024
    )
    bodies: list[Body] = []

    def huge(status: int, ctype: str) -> Handler:
        def handler(request: httpx.Request) -> httpx.Response:
            body = Body(_forever(b"<html>" + SECRET_TEXT.encode(), b"x" * 65536))
            bodies.append(body)
            return httpx.Response(status, headers={"content-type": ctype}, content=body)

        return handler

    async with _client(huge(500, "text/html"), limits=limits) as client:
        with pytest.raises(ServerError) as rest:
            await client.create_conversation("gin-1", user_id="u1")
        with pytest.raises(ServerError) as stream:
            await _drain_stream(client)
    async with _client(huge(200, "application/json"), limits=limits) as client:
        with pytest.raises(ProtocolError) as ok_rest:
            await client.list_messages("gin-1", "conv_1", user_id="u1")
    async with _client(huge(200, "text/html"), limits=limits) as client:
        with pytest.raises(ProtocolError) as ok_stream:
            await _drain_stream(client)
    assert ok_rest.value.retryable is False  # the same answer would come again
    assert ok_stream.value.retryable is True  # a gateway page instead of a stream
    for err in (rest.value, stream.value, ok_rest.value, ok_stream.value):
        _assert_clean(err)
    assert all(b.sent < 4 * 65536 for b in bodies), [b.sent for b in bodies]


@pytest.mark.parametrize("size", [60 * 1024, 2 * 1024 * 1024])
async def test_an_error_body_is_kept_only_up_to_its_own_small_limit(size: int) -> None:
    """An API error is a few hundred bytes of JSON; a peer's 2 MB page is not read to
    the REST body limit (16 MiB, which a thousand failing calls would each hold) but
    dropped past 64 KiB, the error typed from its status; one within the limit still
    gives its code."""
    body = json.dumps({"error_code": "upstream_busy", "pad": "x" * size}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=body)

    async with _client(handler) as client:
        with pytest.raises(ServerError) as info:
            await client.create_conversation("gin-1", user_id="u1")
    kept = size < ClientLimits().max_error_body_bytes
    assert info.value.error_code == ("upstream_busy" if kept else None), info.value
    assert info.value.retryable is True


def test_error_from_a_huge_integer_or_non_finite_wait_is_typed() -> None:
    # A JSON integer too large for a float used to escape as a bare OverflowError.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=b'{"retry_after_ms": 1' + b"0" * 400 + b"}")

    async def call() -> None:
        async with _client(handler) as client:
            await client.create_conversation("gin-1", user_id="u1")

    with pytest.raises(ServerError) as info:
        asyncio.run(call())
    assert info.value.retry_after is None


@pytest.mark.parametrize(
    ("header", "body"),
    [
        ("1e400", None),
        ("inf", None),
        ("nan", None),
        (None, {"retry_after_ms": float("nan")}),
        (None, {"retry_after_ms": float("inf")}),
        (None, {"retry_after_ms": 10**400}),
    ],
)
def test_non_finite_waits_are_no_wait(header: str | None, body: dict[str, Any] | None) -> None:
    # A caller caps the wait with min(); NaN and infinity defeat or outlast any cap.
    assert parse_retry_after(header, body) is None
    assert GenieAPIError("x", retry_after=float("nan")).retry_after is None


# ------------------------------------------------------------------ slow and endless peers


async def test_rest_call_that_trickles_forever_times_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # One byte now and then, each well inside httpx's per-read timeout.
        return httpx.Response(200, content=Body(_forever(b"{", b" ", pause=0.05)))

    started = time.monotonic()
    async with _client(handler, timeouts=FAST) as client:
        with pytest.raises(TransportError) as info:
            await client.get_conversation("gin-1", "conv_1", user_id="u1")
    assert info.value.retryable is True
    assert time.monotonic() - started < 5


async def test_stream_whose_headers_never_come_times_out() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)  # accepts the connection, then says nothing
        return httpx.Response(200, headers=SSE, content=b"")

    started = time.monotonic()
    async with _client(handler, timeouts=FAST) as client:
        with pytest.raises(TransportError):
            await _drain_stream(client)
    assert time.monotonic() - started < 5


async def test_stream_that_trickles_a_frame_forever_times_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = _forever(b"event: agent.message\ndata: {", b"x", pause=0.02)
        return httpx.Response(200, headers=SSE, content=Body(body))

    started = time.monotonic()
    async with _client(handler, timeouts=FAST) as client:
        with pytest.raises(TransportError) as info:
            await _drain_stream(client)
    assert info.value.retryable is True
    assert "no complete SSE frame" in str(info.value)
    assert time.monotonic() - started < 5


async def test_comments_and_pings_keep_a_quiet_stream_open() -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(8):  # 0.8 s of keep-alives, longer than stream_read (0.3 s)
            await asyncio.sleep(0.1)
            yield b": keep-alive\n" if i % 2 else b'data: {"type":"system.ping"}\n\n'
        yield b'data: {"type":"processing.finished","event_id":"e1"}\n\n'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=body())

    async with _client(handler, timeouts=FAST) as client:
        events = await _drain_stream(client)
    assert events[-1].type == "processing.finished"


@pytest.mark.parametrize("line", [b"data: ", b": a comment ", b"id: "])
async def test_a_line_that_never_ends_is_bounded(line: bytes) -> None:
    limits = ClientLimits(max_event_chars=256 * 1024)
    bodies: list[Body] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(Body(_forever(line, b"x" * 65536)))
        return httpx.Response(200, headers=SSE, content=bodies[-1])

    async with _client(handler, limits=limits) as client:
        with pytest.raises(ProtocolError) as info:
            await _drain_stream(client)
    assert "over" in str(info.value)
    assert bodies[0].sent < 2 * 256 * 1024


async def test_a_frame_of_many_lines_is_bounded() -> None:
    limits = ClientLimits(max_event_chars=256 * 1024)
    body = Body(_forever(b"event: agent.message\n", b"data: " + b"y" * 1000 + b"\n"))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=body)

    async with _client(handler, limits=limits) as client:
        with pytest.raises(ProtocolError):
            await _drain_stream(client)
    assert body.sent < 2 * 256 * 1024


async def test_endless_e9_pages_stop() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pages = 0

    def handler(request: httpx.Request) -> httpx.Response:
        # Every page advances the cursor by a microsecond: never "no further page".
        nonlocal pages
        pages += 1
        at = (t0 + timedelta(microseconds=pages)).isoformat()
        event = {"type": "agent.message", "event_id": f"e{pages}", "created_at": at}
        return httpx.Response(200, json={"events": [event], "next_since_created_at": at})

    async with _client(handler) as client:
        seen = [
            p
            async for p in client.iter_event_pages(
                "gin-1", user_id="u1", conversation_id="conv_1", limit=100, max_pages=50
            )
        ]
    assert len(seen) == pages == 50


# ------------------------------------------------------------------ events from the peer


async def test_malformed_event_text_names_the_field_not_the_content() -> None:
    bad = {
        "type": "agent.message",
        "event_id": "evt_1",
        "genie_run_id": "run_1",
        "seq_num": "not-a-number",
        "message": SECRET_TEXT,
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages"):
            frame = f"event: agent.message\ndata: {json.dumps(bad)}\n\n"
            return httpx.Response(200, headers=SSE, content=frame.encode())
        if request.url.path.endswith("/events"):
            return httpx.Response(200, json={"events": [bad]})
        return httpx.Response(200, json={"conversation_id": "conv_1", "last_event": bad})

    async with _client(handler) as client:
        errors: list[GenieAPIError] = []
        with pytest.raises(ProtocolError) as sse:
            await _drain_stream(client)
        errors.append(sse.value)
        with pytest.raises(ProtocolError) as e9:
            await client.list_events("gin-1", user_id="u1", conversation_id="conv_1")
        errors.append(e9.value)
        with pytest.raises(ProtocolError) as e3:
            await client.get_conversation("gin-1", "conv_1", user_id="u1")
        errors.append(e3.value)
    for err in errors:
        _assert_clean(err)
        assert "seq_num" in str(err)
        assert "not-a-number" not in str(err)


async def test_an_event_with_many_invalid_items_has_a_short_error() -> None:
    many = {"type": "skill.confirmation_required", "skill_parameter_schema": [1] * 100_000}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=f"data: {json.dumps(many)}\n\n".encode())

    async with _client(handler) as client:
        with pytest.raises(ProtocolError) as info:
            await _drain_stream(client)
    assert len(str(info.value)) < 600


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400", "-5"])
async def test_stream_interrupted_wait_is_finite(value: str) -> None:
    data = f'{{"type":"system.stream_interrupted","retry_after_ms":{value}}}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=f"data: {data}\n\n".encode())

    async with _client(handler) as client:
        (event,) = await _drain_stream(client)
    assert isinstance(event, SystemStreamInterrupted)
    assert event.retry_after_ms in (None, 0.0)


async def test_nan_wait_does_not_skip_the_readers_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr("genie_api._reader.asyncio.sleep", record)
    data = b'data: {"type":"system.stream_interrupted","retry_after_ms":NaN}\n\n'

    def handler(request: httpx.Request) -> httpx.Response:
        if "/genie-runs/" in request.url.path:
            return httpx.Response(200, headers=SSE, content=data)
        return httpx.Response(200, json={"events": []})

    policy = ResumePolicy(max_attempts=4, initial_backoff=0.5, max_backoff=1.0)
    cursor = RunCursor(conversation_id="conv_1", genie_run_id="run_1")
    async with _client(handler) as client:
        reader = RunReader(client, "gin-1", "conv_1", user_id="u1", cursor=cursor, policy=policy)
        with pytest.raises(GenieAPIError):
            async for _ in reader.resume():
                pass
    assert len(delays) == 3
    assert all(d >= 0.4 for d in delays), delays


async def test_a_non_ascii_event_id_is_typed_and_the_reader_recovers_by_e9() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def event(seq: int, type_: str) -> dict[str, Any]:
        return {
            "type": type_,
            "event_id": f"évt_{seq}",  # not sendable as Last-Event-ID
            "genie_run_id": "run_1",
            "seq_num": seq,
            "created_at": (t0 + timedelta(seconds=seq)).isoformat(),
        }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages"):  # E5: one event, then the stream drops
            frame = f"data: {json.dumps(event(1, 'processing.started'))}\n\n"
            return httpx.Response(200, headers=SSE, content=frame.encode())
        if request.url.path.endswith("/events"):
            page = [event(1, "processing.started"), event(2, "processing.finished")]
            return httpx.Response(200, json={"events": page})
        raise AssertionError(f"no E8 with this id: {request.url}")

    async with _client(handler) as client:
        with pytest.raises(ProtocolError):
            async with client.reconnect_run(
                "gin-1", "conv_1", "run_1", user_id="u1", last_event_id="évt_1"
            ):
                pass
        policy = ResumePolicy(initial_backoff=0, max_backoff=0)
        reader = RunReader(client, "gin-1", "conv_1", user_id="u1", policy=policy)
        got = [e.type async for e in reader.send("hi")]
    assert got == ["processing.started", "processing.finished"]


async def test_an_endless_run_keeps_the_readers_memory_bounded() -> None:
    # No seq_num, so only the event ids de-duplicate; no processing.finished, ever.
    async def body() -> AsyncIterator[bytes]:
        for i in range(20_000):
            data = {"type": "agent.message", "event_id": f"e{i}", "genie_run_id": "r"}
            yield f"data: {json.dumps(data)}\n\n".encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=body())

    async with _client(handler) as client:
        reader = RunReader(client, "gin-1", "conv_1", user_id="u1")
        n = 0
        async for _ in reader.send("hi"):
            n += 1
            if n == 20_000:
                break
    assert len(reader._seen) <= 5000


async def test_a_redirect_is_an_error_and_the_key_stays_home() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "genie.test", "followed a redirect with the API key"
        return httpx.Response(307, headers={"location": "http://evil.test/steal"})

    async with _client(handler) as client:
        with pytest.raises(GenieAPIError) as info:
            await client.create_conversation("gin-1", user_id="u1")
        with pytest.raises(GenieAPIError):
            await _drain_stream(client)
    assert info.value.status == 307
    assert info.value.retryable is False
    assert "evil" not in str(info.value)


@pytest.mark.parametrize(
    "bad_id",
    ["c" * 1_000_000, "conv_1\nERROR forged log line", "run\x00"],
)
async def test_ids_from_the_api_are_bounded_and_printable(bad_id: str) -> None:
    # An id reaches URLs, Last-Event-ID, log lines, heartbeats, workflow history and the
    # GenieConversationId search attribute (at most 2 KB).
    event = {"type": "processing.started", "event_id": "e1", "genie_run_id": bad_id}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages"):
            frame = f"event: processing.started\ndata: {json.dumps(event)}\n\n"
            return httpx.Response(200, headers=SSE, content=frame.encode())
        if request.url.path.endswith("/events"):
            return httpx.Response(200, json={"events": [event]})
        return httpx.Response(201, json={"conversation_id": bad_id})

    async with _client(handler) as client:
        with pytest.raises(ProtocolError) as e1:
            await client.create_conversation("gin-1", user_id="u1")
        with pytest.raises(ProtocolError) as sse:
            await _drain_stream(client)
        with pytest.raises(ProtocolError) as e9:
            await client.list_events("gin-1", user_id="u1", conversation_id="conv_1")
    for err in (e1.value, sse.value, e9.value):
        assert bad_id not in str(err)
        assert len(str(err)) < 1100


async def test_a_leading_byte_order_mark_does_not_lose_the_first_event() -> None:
    frames = [
        {"type": "processing.started", "event_id": "e1"},
        {"type": "processing.finished", "event_id": "e2"},
    ]
    body = "\ufeff" + "".join(f"data: {json.dumps(f)}\n\n" for f in frames)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=body.encode())

    async with _client(handler) as client:
        events = await _drain_stream(client)
    assert [e.type for e in events] == ["processing.started", "processing.finished"]
