"""Unit tests of RunReader's cursor, de-duplication and recovery decisions.

A scripted in-memory stand-in for ``GenieClient`` (no network, no HTTP) drives each
branch deterministically; the same behaviours are proven end-to-end against the
simulator in ``test_reader_sim.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from genie_api import (
    AuthenticationError,
    BadRequestError,
    EventPage,
    GenieClient,
    GenieEvent,
    Message,
    MessagePage,
    NotFoundError,
    ProtocolError,
    ResumePolicy,
    RunCursor,
    RunReader,
    ServerError,
    StreamResumeError,
    TransportError,
    parse_event,
)

T0 = datetime(2026, 6, 8, 12, 0, tzinfo=UTC)
FAST = ResumePolicy(max_attempts=4, initial_backoff=0.0, max_backoff=0.0)


def ev(seq: int, type_: str = "agent.message", run: str = "run_1", **extra: Any) -> GenieEvent:
    return parse_event(
        {
            "type": type_,
            "event_id": f"evt_{run}_{seq}",
            "conversation_id": "conv_1",
            "genie_run_id": run,
            "seq_num": seq,
            "created_at": (T0 + timedelta(seconds=seq)).isoformat(),
            **extra,
        }
    )


def run_events(n: int, run: str = "run_1") -> list[GenieEvent]:
    """processing.started, n-2 messages, processing.finished."""
    out = [ev(1, "processing.started", run)]
    out += [ev(i, "agent.message", run, message=f"m{i}") for i in range(2, n)]
    out.append(ev(n, "processing.finished", run))
    return out


class Stream:
    """One scripted stream: raise on open, or yield events then maybe raise/end."""

    def __init__(
        self,
        events: Iterable[GenieEvent] = (),
        *,
        open_error: Exception | None = None,
        then: Exception | None = None,
    ) -> None:
        self.events = list(events)
        self.open_error = open_error
        self.then = then


class FakeClient:
    """Just the surface RunReader uses, answering from scripts."""

    def __init__(
        self,
        *,
        send: Stream | None = None,
        reconnects: list[Stream] | None = None,
        pages: list[EventPage | Exception] | None = None,
        messages: list[Message] | None = None,
    ) -> None:
        self.send_script = send
        self.reconnects = reconnects or []
        self.pages = pages or []
        self.messages = messages or []
        self.calls: list[tuple[str, Any]] = []

    @asynccontextmanager
    async def _serve(self, script: Stream) -> AsyncIterator[AsyncIterator[GenieEvent]]:
        if script.open_error is not None:
            raise script.open_error

        async def gen() -> AsyncIterator[GenieEvent]:
            for e in script.events:
                yield e
            if script.then is not None:
                raise script.then

        yield gen()

    def stream_message(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("send", args[2]))
        assert self.send_script is not None
        return self._serve(self.send_script)

    def reconnect_run(self, *args: Any, last_event_id: str | None = None, **kw: Any) -> Any:
        self.calls.append(("reconnect", last_event_id))
        script = self.reconnects.pop(0) if self.reconnects else Stream(then=TransportError("x"))
        return self._serve(script)

    async def iter_event_pages(self, *args: Any, since_created_at: Any = None, **kw: Any) -> Any:
        self.calls.append(("events", since_created_at))
        item = self.pages.pop(0) if self.pages else EventPage()
        if isinstance(item, Exception):
            raise item
        yield item

    async def list_messages(self, *args: Any, **kw: Any) -> MessagePage:
        self.calls.append(("messages", None))
        return MessagePage(messages=self.messages)


def reader(fake: FakeClient, cursor: RunCursor | None = None, **kw: Any) -> RunReader:
    return RunReader(
        cast(GenieClient, fake), "gin-1", "conv_1", user_id="u1", cursor=cursor, policy=FAST, **kw
    )


async def drain(gen: Any, stop_type: str | None = None) -> list[GenieEvent]:
    out: list[GenieEvent] = []
    async with aclosing(gen) as events:
        async for e in events:
            out.append(e)
            if e.type == stop_type:
                break
    return out


def ids(events: list[GenieEvent]) -> list[str | None]:
    return [e.event_id for e in events]


# ------------------------------------------------------------------ dedupe / cursor


def test_accept_dedupes_by_event_id_and_run_seq() -> None:
    r = reader(FakeClient())
    first = ev(1)
    assert r._accept(first) is True
    assert r._accept(first) is False  # same event_id
    assert r._accept(ev(1).model_copy(update={"event_id": "other"})) is False  # same (run, seq)
    assert r._accept(ev(2)) is True
    cur = r.cursor
    assert (cur.genie_run_id, cur.last_event_id, cur.last_seq_num) == ("run_1", "evt_run_1_2", 2)
    assert cur.last_created_at == T0 + timedelta(seconds=2)
    assert r._accept(ev(3, run="run_other")) is False  # not this run
    assert r._accept(parse_event({"type": "agent.message", "message": "no ids"})) is True


def test_seq_alone_is_not_an_identity() -> None:
    """A fresh reader for run 2 accepts seq 1 even though run 1 had reached seq 9."""
    r = reader(FakeClient(), RunCursor(conversation_id="conv_1", genie_run_id="run_2"))
    assert r._accept(ev(1, run="run_2")) is True


def test_cursor_seeds_dedupe_and_round_trips_json() -> None:
    cur = RunCursor(
        conversation_id="conv_1",
        genie_run_id="run_1",
        last_event_id="evt_run_1_3",
        last_seq_num=3,
        last_created_at=T0 + timedelta(seconds=3),
    )
    restored = RunCursor.model_validate_json(cur.model_dump_json())
    assert restored == cur
    r = reader(FakeClient(), restored)
    assert r._accept(ev(3)) is False
    assert r._accept(ev(4)) is True
    assert r.cursor.last_seq_num == 4
    assert len(cur.model_dump_json()) < 300


def test_constructor_and_method_guards() -> None:
    with pytest.raises(ValueError, match="conversation"):
        reader(FakeClient(), RunCursor(conversation_id="other"))
    with pytest.raises(ValueError, match="genie_run_id"):
        reader(FakeClient()).resume()
    r = reader(FakeClient(send=Stream()))
    r.send("hi")
    with pytest.raises(RuntimeError):
        r.send("again")
    with pytest.raises(RuntimeError):
        reader(FakeClient(), RunCursor(conversation_id="conv_1", genie_run_id="r")).send("x")


async def test_finished_cursor_resumes_to_nothing() -> None:
    fake = FakeClient()
    cur = RunCursor(conversation_id="conv_1", genie_run_id="run_1", finished=True)
    assert await drain(reader(fake, cur).resume()) == []
    assert fake.calls == []


def test_backoff_is_bounded() -> None:
    policy = ResumePolicy(initial_backoff=0.2, max_backoff=5.0)
    assert policy.backoff(0) == 0.0
    assert 0.16 <= policy.backoff(1) <= 0.24
    assert policy.backoff(30) <= 6.0


# ------------------------------------------------------------------ recovery decisions


async def test_pings_only_reach_on_frame() -> None:
    events = run_events(4)
    ping = parse_event({"type": "system.ping", "timestamp": 1})
    frames: list[int] = []
    fake = FakeClient(send=Stream([events[0], ping, ping, *events[1:]]))
    got = await drain(reader(fake, on_frame=lambda: frames.append(1)).send("hi"))
    assert ids(got) == ids(events)
    assert len(frames) == 6


async def test_drop_then_reconnect_with_last_event_id() -> None:
    events = run_events(6)
    fake = FakeClient(
        send=Stream(events[:2], then=TransportError("cut")),
        reconnects=[Stream(events[1:])],  # the server replays one we already have
    )
    r = reader(fake)
    got = await drain(r.send("hi"))
    assert ids(got) == ids(events)
    assert fake.calls == [("send", "hi"), ("reconnect", "evt_run_1_2")]
    assert r.cursor.finished
    assert r.finished


async def test_interrupted_waits_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    events = run_events(4)
    cut = parse_event(
        {"type": "system.stream_interrupted", "genie_run_id": "run_1", "retry_after_ms": 1234}
    )
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    fake = FakeClient(send=Stream([*events[:2], cut]), reconnects=[Stream(events[2:])])
    got = await drain(reader(fake).send("hi"))
    assert ids(got) == ids(events)
    assert sleeps == [1.234]


async def test_failed_reconnect_falls_back_to_events_filtered_and_sorted() -> None:
    events = run_events(5)
    other_run = run_events(5, run="run_0")
    # Unsorted page mixing another run whose seq numbers overlap ours.
    page = EventPage(events=[events[4], other_run[2], events[2], events[3], other_run[3]])
    fake = FakeClient(
        send=Stream(events[:2], then=TransportError("cut")),
        reconnects=[Stream(open_error=BadRequestError("invalid_last_event_id", status=400))],
        pages=[page],
    )
    got = await drain(reader(fake).send("hi"))
    assert ids(got) == ids(events)
    assert [c[0] for c in fake.calls] == ["send", "reconnect", "events"]
    assert fake.calls[2][1] == events[1].created_at  # since = cursor.last_created_at


async def test_events_fallback_then_reconnect_until_finished() -> None:
    events = run_events(6)
    fake = FakeClient(
        send=Stream(events[:1], then=TransportError("cut")),
        reconnects=[
            Stream(open_error=NotFoundError("run_not_found", status=404)),
            Stream(events[3:]),
        ],
        pages=[EventPage(events=events[1:3])],
    )
    got = await drain(reader(fake).send("hi"))
    assert ids(got) == ids(events)
    assert [c[0] for c in fake.calls] == ["send", "reconnect", "events", "reconnect"]
    assert fake.calls[3][1] == "evt_run_1_3"


async def test_exhaustion_raises_stream_resume_error_with_cursor() -> None:
    events = run_events(6)
    fake = FakeClient(
        send=Stream(events[:2], then=TransportError("cut")),
        reconnects=[Stream(open_error=ServerError("boom", status=503)) for _ in range(10)],
        pages=[ServerError("boom", status=500) for _ in range(10)],
    )
    r = reader(fake)
    with pytest.raises(StreamResumeError) as info:
        await drain(r.send("hi"))
    err = info.value
    assert err.retryable is True
    assert err.cursor is not None
    assert err.cursor.last_event_id == "evt_run_1_2"
    assert err.cursor == r.cursor
    assert "conv_1" in str(err)
    assert "run_1" in str(err)
    # The drop itself followed progress; then max_attempts recovery attempts failed.
    assert len([c for c in fake.calls if c[0] != "send"]) == FAST.max_attempts


async def test_auth_error_on_reconnect_propagates_at_once() -> None:
    fake = FakeClient(
        send=Stream(run_events(4)[:1], then=TransportError("cut")),
        reconnects=[Stream(open_error=AuthenticationError("auth_failed", status=401))],
    )
    with pytest.raises(AuthenticationError):
        await drain(reader(fake).send("hi"))
    assert [c[0] for c in fake.calls] == ["send", "reconnect"]


async def test_non_retryable_events_error_propagates() -> None:
    fake = FakeClient(
        send=Stream(run_events(4)[:1], then=TransportError("cut")),
        reconnects=[Stream(open_error=ServerError("x", status=500))],
        pages=[NotFoundError("conversation gone", status=404)],
    )
    with pytest.raises(NotFoundError):
        await drain(reader(fake).send("hi"))


async def test_send_open_failure_is_not_recovered() -> None:
    fake = FakeClient(send=Stream(open_error=TransportError("connect failed")))
    with pytest.raises(TransportError):
        await drain(reader(fake).send("hi"))
    assert fake.calls == [("send", "hi")]


async def test_malformed_mid_stream_propagates() -> None:
    fake = FakeClient(send=Stream(run_events(4)[:2], then=ProtocolError("bad data")))
    with pytest.raises(ProtocolError):
        await drain(reader(fake).send("hi"))
    assert fake.calls == [("send", "hi")]


async def test_drop_before_run_id_discovers_run_from_history() -> None:
    events = run_events(4)
    fake = FakeClient(
        send=Stream([], then=TransportError("cut")),
        messages=[
            Message(source="genie", content="old", genie_run_id="run_0"),
            Message(source="user", content="hi", genie_run_id="run_1"),
        ],
        reconnects=[Stream(events)],
    )
    r = reader(fake)
    got = await drain(r.send("hi"))
    assert ids(got) == ids(events)
    assert [c[0] for c in fake.calls] == ["send", "messages", "reconnect"]
    assert fake.calls[2][1] is None  # replay from the start


async def test_consumer_stops_early_and_resumes_in_new_reader() -> None:
    events = run_events(3)
    confirm = ev(2, "skill.confirmation_required", call_id="call_1")
    full = [events[0], confirm, ev(3, "skill.running"), ev(4, "processing.finished")]
    first = reader(FakeClient(send=Stream(full[:2])))
    got = await drain(first.send("hi"), stop_type="skill.confirmation_required")
    assert ids(got) == ids(full[:2])
    saved = first.cursor.model_dump_json()
    fake = FakeClient(reconnects=[Stream(full[1:])])
    rest = await drain(reader(fake, RunCursor.model_validate_json(saved)).resume())
    assert ids(rest) == ids(full[2:])
    assert fake.calls == [("reconnect", "evt_run_1_2")]
