"""Compressed answers from the peer: decoded in bounded steps, or refused in a typed way.

A real HTTP/1.1 server on 127.0.0.1 (``asyncio.start_server``) writes each answer byte
for byte, ``Content-Encoding`` and all, so the client reads it off a socket as it would
from the API. The promises checked: a gzip bomb (1 GiB of zeros in about 1 MB) costs a
bounded amount of memory and is a :class:`ProtocolError`; honest gzip and deflate bodies
and streams decode intact; an encoding the client does not decode (``br``, a stack such as
``gzip, gzip``) and corrupt data are typed errors that carry no content.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from genie_api import (
    AgentMessage,
    ApiKeyAuth,
    ClientTimeouts,
    GenieAPIError,
    GenieClient,
    ProtocolError,
    ServerError,
    TransportError,
)
from genie_api._decode import STEP, BoundedDecoder, DecodeError
from genie_api._http import RequestContext

KEY = "encoding-test-key-0123456789abcdef"
SECRET_TEXT = "CONFIDENTIAL merger with Acme closes Friday"
TIMEOUTS = ClientTimeouts(connect=5, read=10, write=10, pool=5, stream_read=10, total=30)
PEAK_BOUND = 50 * 1024 * 1024
"""Most Python memory one bomb may cost (tracemalloc peak, the server's 1 MB included)."""
SSE = "text/event-stream"
JSON = "application/json"
CTX = RequestContext(endpoint="test")


@functools.cache
def gzip_bomb() -> bytes:
    """1 GiB of zeros, gzip level 9: about 1 MB on the wire, one line that never ends."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    parts = [packer.compress(zeros) for _ in range(1024)]
    parts.append(packer.flush())
    return b"".join(parts)


def _deflate(data: bytes, *, raw: bool = False) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15 if raw else 15)
    return packer.compress(data) + packer.flush()


def _frame(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"


@dataclass
class Answer:
    """One canned HTTP answer; ``body`` is written as is, in ``pieces`` of this size."""

    status: int
    ctype: str
    body: bytes
    encoding: str | None = None
    pieces: int | None = None


@dataclass
class Peer:
    """What the server saw, and where it listens."""

    base_url: str
    requests: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def raw_peer(answer: Answer) -> AsyncIterator[Peer]:
    """Serve ``answer`` to every request, over a real socket, then close the connection."""
    peer = Peer(base_url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            peer.requests.append(head)
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    await reader.readexactly(int(value))
            lines = [
                f"HTTP/1.1 {answer.status} X",
                f"Content-Type: {answer.ctype}",
                f"Content-Length: {len(answer.body)}",
                "Connection: close",
            ]
            if answer.encoding is not None:
                lines.append(f"Content-Encoding: {answer.encoding}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            size = answer.pieces or len(answer.body) or 1
            for at in range(0, len(answer.body), size):
                writer.write(answer.body[at : at + size])
                await writer.drain()
                if answer.pieces:
                    await asyncio.sleep(0)  # a packet each, so chunks split where we chose
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer.base_url = f"http://127.0.0.1:{port}"
    try:
        async with server:
            yield peer
    finally:
        server.close()


def _client(peer: Peer, **kw: Any) -> GenieClient:
    kw.setdefault("timeouts", TIMEOUTS)
    return GenieClient(peer.base_url, ApiKeyAuth(KEY), **kw)


async def _stream(client: GenieClient) -> list[Any]:
    async with client.stream_message("gin-1", "conv_1", SECRET_TEXT, user_id="u1") as events:
        return [e async for e in events]


async def _rest(client: GenieClient) -> Any:
    return await client.list_messages("gin-1", "conv_1", user_id="u1")


def _assert_clean(err: GenieAPIError) -> None:
    text = f"{err} {err!r}"
    assert KEY not in text
    assert SECRET_TEXT not in text
    assert "\x00" not in text
    assert len(str(err)) < 1100


async def _peak(call: Callable[[], Awaitable[Any]]) -> tuple[Exception | None, int]:
    """Run ``call``; what it raised and the peak of Python memory meanwhile."""
    tracemalloc.start()
    try:
        try:
            await call()
        except Exception as exc:
            raised: Exception | None = exc
        else:
            raised = None
        return raised, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ bombs


@pytest.mark.parametrize(
    ("ctype", "call", "said"), [(SSE, _stream, "SSE frame over"), (JSON, _rest, "body over")]
)
async def test_a_gzip_bomb_is_refused_in_bounded_memory(
    ctype: str, call: Callable[[GenieClient], Awaitable[Any]], said: str
) -> None:
    answer = Answer(200, ctype, gzip_bomb(), encoding="gzip")
    async with raw_peer(answer) as peer, _client(peer) as client:
        raised, peak = await _peak(lambda: call(client))
    assert isinstance(raised, ProtocolError), raised
    assert said in str(raised)
    assert raised.retryable is False
    _assert_clean(raised)
    assert peak < PEAK_BOUND, f"{peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("call", [_rest, _stream])
async def test_a_gzip_bomb_as_an_error_body_is_dropped_in_bounded_memory(
    call: Callable[[GenieClient], Awaitable[Any]],
) -> None:
    answer = Answer(503, JSON, gzip_bomb(), encoding="gzip")
    async with raw_peer(answer) as peer, _client(peer) as client:
        raised, peak = await _peak(lambda: call(client))
    assert isinstance(raised, ServerError), raised  # typed from the status alone
    assert raised.retryable is True
    assert raised.error_message is None
    _assert_clean(raised)
    assert peak < PEAK_BOUND, f"{peak / 2**20:.1f} MiB"


async def test_a_compressed_run_of_blank_lines_cannot_outlast_the_idle_deadline() -> None:
    # 64 Mi empty lines in one network chunk: legal SSE that never completes a frame, and
    # inflating it needs no read that could suspend for the stream's timeout to fire.
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    blank = packer.compress(b"\n" * (64 << 20)) + packer.flush()
    timeouts = ClientTimeouts(connect=5, read=5, write=5, pool=5, stream_read=0.3, total=5)
    answer = Answer(200, SSE, blank, encoding="gzip")
    started = time.monotonic()
    async with raw_peer(answer) as peer, _client(peer, timeouts=timeouts) as client:
        with pytest.raises(TransportError) as info:
            await _stream(client)
    assert "no complete SSE frame" in str(info.value)
    assert time.monotonic() - started < 3


# ------------------------------------------------------------------ honest compression

WIDE = "é€😀" * 5 + "é" * 100_001
"""Two-, three- and four-byte UTF-8, long enough that 64 KiB steps split a character."""

EVENTS = [
    {"type": "processing.started", "event_id": "e1", "genie_run_id": "run_1"},
    {"type": "agent.message", "event_id": "e2", "genie_run_id": "run_1", "message": WIDE},
    {"type": "agent.message", "event_id": "e3", "genie_run_id": "run_1", "message": "ok ✓"},
    {"type": "processing.finished", "event_id": "e4", "genie_run_id": "run_1"},
]
STREAM = ("\ufeff" + "".join(_frame(e) for e in EVENTS)).encode()
PAGE = json.dumps({"messages": [{"message_id": "m1", "content": WIDE}]}).encode()


def _two_members(data: bytes) -> bytes:
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


ENCODINGS: dict[str, tuple[str | None, Callable[[bytes], bytes]]] = {
    "none": (None, lambda b: b),
    "identity": ("identity", lambda b: b),
    "gzip": ("gzip", gzip.compress),
    "x-gzip": ("x-gzip", gzip.compress),
    "GZIP, identity": ("GZIP, identity", gzip.compress),
    "gzip members": ("gzip", _two_members),
    "deflate": ("deflate", _deflate),
    "raw deflate": ("deflate", functools.partial(_deflate, raw=True)),
}


@pytest.mark.parametrize("pieces", [None, 7])
@pytest.mark.parametrize("name", list(ENCODINGS))
async def test_a_compressed_stream_arrives_intact(name: str, pieces: int | None) -> None:
    encoding, pack = ENCODINGS[name]
    answer = Answer(200, SSE, pack(STREAM), encoding=encoding, pieces=pieces)
    async with raw_peer(answer) as peer, _client(peer) as client:
        events = await _stream(client)
    assert [e.event_id for e in events] == ["e1", "e2", "e3", "e4"]
    assert isinstance(events[1], AgentMessage)
    assert events[1].message == WIDE
    assert events[2].message == "ok ✓"
    (request,) = peer.requests
    assert b"\r\naccept-encoding: gzip, deflate\r\n" in request.lower()


@pytest.mark.parametrize("name", list(ENCODINGS))
async def test_a_compressed_rest_body_arrives_intact(name: str) -> None:
    encoding, pack = ENCODINGS[name]
    answer = Answer(200, JSON, pack(PAGE), encoding=encoding, pieces=1000)
    async with raw_peer(answer) as peer, _client(peer) as client:
        page = await _rest(client)
    assert [m.content for m in page.messages] == [WIDE]


async def test_a_compressed_error_body_still_types_the_error() -> None:
    body = json.dumps({"error_code": "busy", "request_id": "req-1"}).encode()
    answer = Answer(503, JSON, gzip.compress(body), encoding="gzip")
    async with raw_peer(answer) as peer, _client(peer) as client:
        with pytest.raises(ServerError) as rest:
            await _rest(client)
        with pytest.raises(ServerError) as stream:
            await _stream(client)
    for err in (rest.value, stream.value):
        assert err.error_code == "busy"
        assert err.request_id == "req-1"


# ------------------------------------------------------------------ refused


@pytest.mark.parametrize(
    ("encoding", "named"),
    [
        ("br", "unsupported content encoding 'br'"),
        ("zstd", "unsupported content encoding 'zstd'"),
        ("compress", "unsupported content encoding 'compress'"),
        ("gzip, gzip", "stacked content encodings 'gzip, gzip'"),
        ("deflate, gzip", "stacked content encodings 'deflate, gzip'"),
    ],
)
async def test_an_encoding_the_client_does_not_decode_is_refused(encoding: str, named: str) -> None:
    body = SECRET_TEXT.encode()  # what the peer says it encoded: never to be shown
    for ctype, call in ((SSE, _stream), (JSON, _rest)):
        answer = Answer(200, ctype, body, encoding=encoding)
        async with raw_peer(answer) as peer, _client(peer) as client:
            with pytest.raises(ProtocolError) as info:
                await call(client)
        assert named in str(info.value)
        assert info.value.retryable is False
        assert info.value.status == 200
        _assert_clean(info.value)
    # On an error answer the body is dropped and the status still types the error.
    answer = Answer(503, JSON, body, encoding=encoding)
    async with raw_peer(answer) as peer, _client(peer) as client:
        with pytest.raises(ServerError) as error:
            await _rest(client)
    assert error.value.retryable is True
    assert error.value.error_message is None


OPEN = "".join(_frame(e) for e in EVENTS[:-1]).encode()
"""A stream with no ``processing.finished``: read to its end, as a REST body is."""


def _break_at(data: bytes, at: int) -> bytes:
    # 0xff opens a deflate block of the reserved type 3: corrupt from that byte on.
    return data[:at] + b"\xff" + data[at + 1 :]


@pytest.mark.parametrize(
    ("encoding", "body", "reason", "kind"),
    [
        ("gzip", _break_at(gzip.compress(OPEN), 10), "corrupt gzip data", ProtocolError),
        ("gzip", gzip.compress(OPEN) + b"\0" * 10, "corrupt gzip data", ProtocolError),
        ("gzip", b"plain text, no gzip at all\n", "corrupt gzip data", ProtocolError),
        ("deflate", _break_at(_deflate(OPEN), 2), "corrupt deflate data", ProtocolError),
        ("deflate", _break_at(_deflate(OPEN, raw=True), 0), "corrupt deflate data", ProtocolError),
        (
            "deflate",
            _deflate(OPEN) + b"tail",
            "data after the end of the deflate stream",
            ProtocolError,
        ),
        ("gzip", gzip.compress(OPEN)[:-6], "gzip data that ends early", TransportError),
        ("gzip", gzip.compress(OPEN)[:20], "gzip data that ends early", TransportError),
        ("deflate", _deflate(OPEN)[:-3], "deflate data that ends early", TransportError),
        ("deflate", b"x", "deflate data that ends early", TransportError),
    ],
)
async def test_bad_compressed_data_is_a_typed_error(
    encoding: str, body: bytes, reason: str, kind: type[GenieAPIError]
) -> None:
    """Corrupt data is the peer's malformed answer: final. A body whose HTTP framing ends
    cleanly before its compressed data does was cut on the way (a proxy closing a
    compressed stream, say): retryable, as a dropped connection, so a stream resumes from
    its cursor instead of counting against the turn's malformed-data retries."""
    for ctype, call in ((SSE, _stream), (JSON, _rest)):
        answer = Answer(200, ctype, body, encoding=encoding)
        async with raw_peer(answer) as peer, _client(peer) as client:
            with pytest.raises(kind) as info:
                await call(client)
        assert reason in str(info.value)
        assert info.value.retryable is (kind is TransportError)
        _assert_clean(info.value)


# ------------------------------------------------------------------ the decoder itself


@pytest.mark.parametrize("coding", [None, "gzip", "deflate"])
def test_no_step_yields_more_than_its_bound(coding: str | None) -> None:
    data = gzip_bomb() if coding == "gzip" else _deflate(bytes(8 << 20))
    if coding is None:
        data = bytes(1 << 20)
    decoder = BoundedDecoder(coding)
    sizes = []
    for piece in decoder.feed(data):  # the whole bomb in one call: still step by step
        sizes.append(len(piece))
        if len(sizes) == 100:
            break
    assert max(sizes) == STEP
    assert len(sizes) >= 16


@pytest.mark.parametrize(
    ("coding", "raw"), [("gzip", False), ("deflate", False), ("deflate", True)]
)
def test_byte_by_byte_input_decodes_exactly(coding: str, raw: bool) -> None:
    packed = gzip.compress(STREAM) if coding == "gzip" else _deflate(STREAM, raw=raw)
    decoder = BoundedDecoder(coding, step=100)
    out = [piece for at in range(len(packed)) for piece in decoder.feed(packed[at : at + 1])]
    decoder.end()
    assert b"".join(out) == STREAM
    assert max(map(len, out)) <= 100


def test_an_empty_compressed_body_is_empty() -> None:
    # A 204 or an empty 200 may still say gzip; nothing to inflate is not an error.
    for coding in ("gzip", "deflate"):
        decoder = BoundedDecoder(coding)
        assert list(decoder.feed(b"")) == []
        decoder.end()
    broken = BoundedDecoder("gzip")
    list(broken.feed(gzip.compress(b"x")[:5]))
    with pytest.raises(DecodeError):
        broken.end()
