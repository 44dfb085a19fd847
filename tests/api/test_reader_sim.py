"""Integration tests: RunReader's exactly-once, in-order delivery against the real
simulator while connections are cut, streams interrupted and endpoints fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing

import pytest

from genie_api import (
    ApiKeyAuth,
    AuthenticationError,
    GenieClient,
    GenieEvent,
    ProtocolError,
    ResumePolicy,
    RunCursor,
    RunReader,
    SkillConfirmationRequired,
    StreamResumeError,
    UnknownEvent,
)
from tests.services import SimProcess, running_sim

from .conftest import FAST_POLICY, GENIE, TEST_TIMEOUTS
from .helpers import persisted_run

STEPS8_EVENTS = 11  # processing.started, 8 steps, the final reply, processing.finished


def _reader(
    client: GenieClient,
    conversation_id: str,
    user_id: str,
    cursor: RunCursor | None = None,
    *,
    policy: ResumePolicy = FAST_POLICY,
    on_frame: Callable[[], None] | None = None,
) -> RunReader:
    return RunReader(
        client,
        GENIE,
        conversation_id,
        user_id=user_id,
        cursor=cursor,
        policy=policy,
        on_frame=on_frame,
    )


async def _read(
    events_gen: AsyncGenerator[GenieEvent, None], stop_type: str | None = None
) -> list[GenieEvent]:
    out: list[GenieEvent] = []
    async with aclosing(events_gen) as events:
        async for event in events:
            out.append(event)
            if event.type == stop_type:
                break
    return out


async def _assert_exactly_once(
    client: GenieClient,
    conversation_id: str,
    user_id: str,
    got: list[GenieEvent],
    expected_len: int,
) -> None:
    """``got`` is the whole run, every persisted event once, in order."""
    assert got
    run_id = got[0].genie_run_id
    assert run_id is not None
    truth = await persisted_run(client, conversation_id, run_id, user_id)
    assert len(truth) == expected_len
    assert [e.event_id for e in got] == [e.event_id for e in truth]
    assert [e.seq_num for e in got] == list(range(1, expected_len + 1))
    assert got[-1].type == "processing.finished"


def _posts(sim: SimProcess, conversation_id: str) -> int:
    convs = sim.stats()["conversations"]
    assert isinstance(convs, dict)
    posts = convs[conversation_id]["message_posts"]
    assert isinstance(posts, int)
    return posts


async def test_plain_run(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    frames = 0

    def on_frame() -> None:
        nonlocal frames
        frames += 1

    reader = _reader(client, conversation_id, user_id, on_frame=on_frame)
    got = await _read(reader.send("steps:8"))
    await _assert_exactly_once(client, conversation_id, user_id, got, STEPS8_EVENTS)
    assert frames >= STEPS8_EVENTS
    cursor = reader.cursor
    assert cursor.finished
    assert cursor.last_event_id == got[-1].event_id
    assert cursor.last_seq_num == STEPS8_EVENTS
    assert cursor.genie_run_id == got[0].genie_run_id
    assert _posts(sim, conversation_id) == 1


def _requests(sim: SimProcess) -> dict[str, int]:
    requests = sim.stats()["requests"]
    assert isinstance(requests, dict)
    return dict(requests)


@pytest.mark.parametrize("k", range(STEPS8_EVENTS))
async def test_cut_once_after_every_event(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str, k: int
) -> None:
    sim.fault(endpoint="send_message", drop_after_events=k, conversation_id=conversation_id)
    before = _requests(sim)
    got = await _read(_reader(client, conversation_id, user_id).send("steps:8"))
    after = _requests(sim)
    await _assert_exactly_once(client, conversation_id, user_id, got, STEPS8_EVENTS)
    assert _posts(sim, conversation_id) == 1
    assert after["send_message"] - before["send_message"] == 1
    assert after["reconnect"] - before["reconnect"] == 1
    # Cut before any event named the run: it is found in the message history first.
    assert after["list_messages"] - before["list_messages"] == (1 if k == 0 else 0)


@pytest.mark.parametrize("k", range(STEPS8_EVENTS))
async def test_cut_repeatedly_after_every_event(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str, k: int
) -> None:
    sim.fault(endpoint="send_message", drop_after_events=k, conversation_id=conversation_id)
    sim.fault(
        endpoint="reconnect", drop_after_events=k, times=1000, conversation_id=conversation_id
    )
    before = _requests(sim)
    got = await _read(_reader(client, conversation_id, user_id).send("steps:8"))
    after = _requests(sim)
    await _assert_exactly_once(client, conversation_id, user_id, got, STEPS8_EVENTS)
    assert _posts(sim, conversation_id) == 1
    if k == 0:
        # Every re-attach is cut before it delivers anything: E9 has to provide the run.
        assert after["events"] - before["events"] >= 1
    else:
        assert after["reconnect"] - before["reconnect"] >= (STEPS8_EVENTS - k) // k


async def test_cut_repeatedly_while_the_run_is_live(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """Events are produced slowly, so every re-attach replays some and then follows live."""
    sim.fault(endpoint="send_message", drop_after_events=2, conversation_id=conversation_id)
    sim.fault(
        endpoint="reconnect", drop_after_events=3, times=1000, conversation_id=conversation_id
    )
    got = await _read(_reader(client, conversation_id, user_id).send("delay:15 steps:8"))
    await _assert_exactly_once(client, conversation_id, user_id, got, STEPS8_EVENTS)
    assert _posts(sim, conversation_id) == 1


@pytest.mark.parametrize("k", [0, 1, 3, 10])
async def test_interrupt_directive(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str, k: int
) -> None:
    got = await _read(_reader(client, conversation_id, user_id).send(f"steps:8 interrupt:{k}"))
    await _assert_exactly_once(client, conversation_id, user_id, got, STEPS8_EVENTS)
    assert _posts(sim, conversation_id) == 1


async def test_falls_back_to_events_when_reconnect_fails(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(endpoint="send_message", drop_after_events=3, conversation_id=conversation_id)
    sim.fault(endpoint="reconnect", status=500, times=1000, conversation_id=conversation_id)
    got = await _read(_reader(client, conversation_id, user_id).send("steps:8"))
    await _assert_exactly_once(client, conversation_id, user_id, got, STEPS8_EVENTS)
    requests = sim.stats()["requests"]
    assert isinstance(requests, dict)
    assert requests["events"] >= 1
    assert _posts(sim, conversation_id) == 1


async def test_falls_back_to_events_while_the_run_is_live(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """E8 fails twice, E9 then only has part of the run; E8 works again for the rest."""
    sim.fault(endpoint="send_message", drop_after_events=1, conversation_id=conversation_id)
    sim.fault(endpoint="reconnect", status=503, times=2, conversation_id=conversation_id)
    got = await _read(_reader(client, conversation_id, user_id).send("delay:20 steps:8"))
    await _assert_exactly_once(client, conversation_id, user_id, got, STEPS8_EVENTS)


async def test_html_on_reconnect_falls_back(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(endpoint="send_message", drop_after_events=4, conversation_id=conversation_id)
    sim.fault(endpoint="reconnect", html_200=True, times=3, conversation_id=conversation_id)
    got = await _read(_reader(client, conversation_id, user_id).send("steps:8"))
    await _assert_exactly_once(client, conversation_id, user_id, got, STEPS8_EVENTS)


async def test_unknown_last_event_id_falls_back_to_events(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    first = await _read(_reader(client, conversation_id, user_id).send("steps:8"))
    cursor = RunCursor(
        conversation_id=conversation_id,
        genie_run_id=first[0].genie_run_id,
        last_event_id="evt_unknown",  # E8 answers 400 invalid_last_event_id
    )
    again = await _read(_reader(client, conversation_id, user_id, cursor).resume())
    assert [e.event_id for e in again] == [e.event_id for e in first]


async def test_exhausted_resume_raises_with_cursor(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(endpoint="send_message", drop_after_events=3, conversation_id=conversation_id)
    sim.fault(endpoint="reconnect", status=503, times=1000, conversation_id=conversation_id)
    sim.fault(endpoint="events", status=502, times=1000, conversation_id=conversation_id)
    reader = _reader(client, conversation_id, user_id)
    got: list[GenieEvent] = []

    async def consume() -> None:
        async with aclosing(reader.send("steps:8")) as events:
            async for event in events:
                got.append(event)

    with pytest.raises(StreamResumeError) as info:
        await consume()
    err = info.value
    assert err.retryable is True
    assert err.cursor is not None
    assert err.cursor.last_event_id == got[-1].event_id
    assert len(got) == 3
    sim.clear_faults()
    # The cursor in the error is enough to finish the run in a new reader.
    rest = await _read(_reader(client, conversation_id, user_id, err.cursor).resume())
    await _assert_exactly_once(client, conversation_id, user_id, got + rest, STEPS8_EVENTS)


async def test_run_not_found_exhausts(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    cursor = RunCursor(conversation_id=conversation_id, genie_run_id="run_nope")
    policy = ResumePolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.01)
    with pytest.raises(StreamResumeError) as info:
        await _read(_reader(client, conversation_id, user_id, cursor, policy=policy).resume())
    assert "run_nope" in str(info.value)


async def test_auth_failure_propagates_at_once(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(endpoint="send_message", drop_after_events=2, conversation_id=conversation_id)
    sim.fault(endpoint="reconnect", status=401, times=1000, conversation_id=conversation_id)
    with pytest.raises(AuthenticationError):
        await _read(_reader(client, conversation_id, user_id).send("steps:8"))
    requests = sim.stats()["requests"]
    assert isinstance(requests, dict)


async def test_malformed_data_names_conversation_and_run(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(
        endpoint="send_message",
        malformed="non_json",
        after_events=1,
        conversation_id=conversation_id,
    )
    reader = _reader(client, conversation_id, user_id)
    with pytest.raises(ProtocolError) as info:
        await _read(reader.send("steps:8"))
    run_id = reader.cursor.genie_run_id
    assert run_id is not None
    assert conversation_id in str(info.value)
    assert run_id in str(info.value)
    assert info.value.retryable is False


async def test_malformed_on_reconnect(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(endpoint="send_message", drop_after_events=2, conversation_id=conversation_id)
    sim.fault(
        endpoint="reconnect", malformed="non_json", after_events=1, conversation_id=conversation_id
    )
    with pytest.raises(ProtocolError) as info:
        await _read(_reader(client, conversation_id, user_id).send("steps:8"))
    assert info.value.endpoint == "reconnect"
    assert info.value.genie_run_id is not None
    assert info.value.genie_run_id in str(info.value)


async def test_injected_frames_do_not_break_exactly_once(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """An event without ids is passed on; the injected unknown event reuses the previous
    event's seq_num, so (run, seq) de-duplication drops it."""
    sim.fault(
        endpoint="send_message",
        malformed="missing_ids",
        after_events=2,
        conversation_id=conversation_id,
    )
    sim.fault(
        endpoint="send_message",
        malformed="unknown_event",
        after_events=4,
        conversation_id=conversation_id,
    )
    got = await _read(_reader(client, conversation_id, user_id).send("steps:8"))
    no_ids = [e for e in got if e.event_id is None]
    assert len(no_ids) == 1
    assert not any(isinstance(e, UnknownEvent) for e in got)
    real = [e for e in got if e.event_id is not None]
    await _assert_exactly_once(client, conversation_id, user_id, real, STEPS8_EVENTS)


async def test_resume_from_json_cursor_after_confirmation(
    sim: SimProcess, conversation_id: str, user_id: str
) -> None:
    async with GenieClient(sim.base_url, ApiKeyAuth(sim.api_key), timeouts=TEST_TIMEOUTS) as first:
        reader = _reader(first, conversation_id, user_id)
        head = await _read(
            reader.send("steps:2 confirm:submit_pto steps:1"),
            stop_type="skill.confirmation_required",
        )
        saved = reader.cursor.model_dump_json()
    pause = head[-1]
    assert isinstance(pause, SkillConfirmationRequired)
    assert pause.call_id is not None

    # "Another process": a new client and reader from the JSON cursor only.
    cursor = RunCursor.model_validate_json(saved)
    assert cursor.last_event_id == pause.event_id
    async with GenieClient(sim.base_url, ApiKeyAuth(sim.api_key), timeouts=TEST_TIMEOUTS) as later:
        await later.decide_skill(
            GENIE, conversation_id, pause.call_id, user_id=user_id, approved=True
        )
        sim.fault(endpoint="reconnect", drop_after_events=1, conversation_id=conversation_id)
        tail = await _read(_reader(later, conversation_id, user_id, cursor).resume())
        got = head + tail
        assert [e.type for e in tail][:2] == ["skill.running", "skill.completed"]
        await _assert_exactly_once(later, conversation_id, user_id, got, len(got))
    stats = sim.stats()["conversations"]
    assert isinstance(stats, dict)
    conv = stats[conversation_id]
    assert conv["message_posts"] == 1
    assert conv["skill_decisions_applied"] == {pause.call_id: 1}


async def test_resume_while_paused_then_approve(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """A reader that keeps reading through the pause sees the rest on the same stream."""
    reader = _reader(client, conversation_id, user_id)
    got: list[GenieEvent] = []
    async with aclosing(reader.send("confirm:pto")) as events:
        async for event in events:
            got.append(event)
            if isinstance(event, SkillConfirmationRequired):
                assert event.call_id is not None
                await client.decide_skill(
                    GENIE, conversation_id, event.call_id, user_id=user_id, approved=False
                )
    await _assert_exactly_once(client, conversation_id, user_id, got, len(got))


async def test_pings_reach_on_frame_while_paused(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """The consumer keeps reading through a pause; pings are not yielded but reach
    ``on_frame`` (the shared simulator pings every 0.5 s), and the decision is posted
    only once a ping proved the paused stream alive."""
    paused = asyncio.Event()
    pinged = asyncio.Event()
    frames_at_pause = 0
    frames = 0

    def on_frame() -> None:
        nonlocal frames
        frames += 1
        if paused.is_set() and frames > frames_at_pause:
            pinged.set()

    reader = _reader(client, conversation_id, user_id, on_frame=on_frame)
    got: list[GenieEvent] = []

    async def consume() -> None:
        nonlocal frames_at_pause
        async with aclosing(reader.send("confirm:pto")) as events:
            async for event in events:
                got.append(event)
                if isinstance(event, SkillConfirmationRequired):
                    frames_at_pause = frames
                    paused.set()

    consumer = asyncio.create_task(consume())
    await paused.wait()
    await asyncio.wait_for(pinged.wait(), timeout=10)
    pause = got[-1]
    assert isinstance(pause, SkillConfirmationRequired)
    assert pause.call_id is not None
    await client.decide_skill(GENIE, conversation_id, pause.call_id, user_id=user_id, approved=True)
    await asyncio.wait_for(consumer, timeout=10)
    assert not any(e.type == "system.ping" for e in got)
    await _assert_exactly_once(client, conversation_id, user_id, got, len(got))


@pytest.fixture(scope="module")
def short_stream_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """Quirk mode: every stream is ended after 0.2 s with ``system.stream_interrupted``."""
    log = tmp_path_factory.mktemp("sim-short") / "sim.log"
    with running_sim("--max-stream-seconds", "0.2", log_path=log) as sim:
        yield sim


async def test_max_stream_duration_quirk(short_stream_sim: SimProcess) -> None:
    user = "user-short-streams"
    async with GenieClient(
        short_stream_sim.base_url, ApiKeyAuth(short_stream_sim.api_key), timeouts=TEST_TIMEOUTS
    ) as client:
        conv = (await client.create_conversation(GENIE, user_id=user)).conversation_id
        reader = _reader(client, conv, user)
        got = await _read(reader.send("delay:60 steps:8"))
        await _assert_exactly_once(client, conv, user, got, STEPS8_EVENTS)
    stats = short_stream_sim.stats()["requests"]
    assert isinstance(stats, dict)
    assert stats["reconnect"] >= 2
