"""RunInspector: which run our message started, whether a run ended, whether it is parked.

The first half asks the real simulator over HTTP. The second half plays production's
observed quirks (``idle`` while parked, resumed output only in the message history, user
messages without a run id) through ``httpx.MockTransport`` with canned E3/E6/E9 bodies,
because the simulator does not reproduce those exact readings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from genie_api import (
    AgentMessage,
    ApiKeyAuth,
    EndEvidence,
    EventType,
    GenieClient,
    GenieEvent,
    Pause,
    PauseStatus,
    RunInspector,
)

from .conftest import GENIE

CONNECTION = EventType.RUNTIME_CONNECTION_AUTH_REQUIRED


async def _send(
    client: GenieClient, cid: str, user: str, text: str, *, stop: EventType | None = None
) -> list[GenieEvent]:
    """Post ``text`` and read its run's events up to ``stop`` (else to the end)."""
    out: list[GenieEvent] = []
    async with client.stream_message(GENIE, cid, text, user_id=user) as events:
        async for event in events:
            if event.type == EventType.SYSTEM_PING:
                continue
            out.append(event)
            if event.type == stop:
                break
    return out


async def _until_idle(client: GenieClient, cid: str, user: str) -> None:
    """Poll E3 (bounded: 5 s); the run resumes asynchronously after a decision."""
    for _ in range(250):
        if (await client.get_conversation(GENIE, cid, user_id=user)).state == "idle":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the conversation never became idle")


def _inspector(client: GenieClient, cid: str, user: str) -> RunInspector:
    return RunInspector(client, GENIE, cid, user_id=user)


def _texts(events: list[GenieEvent]) -> tuple[str, ...]:
    return tuple(e.message or "" for e in events if isinstance(e, AgentMessage))


# ------------------------------------------------------------------ against the simulator


async def test_run_newer_than_tells_whether_our_post_landed(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    runs = _inspector(client, conversation_id, user_id)
    assert await runs.run_newer_than(None) is None  # nothing posted yet: post
    first = (await _send(client, conversation_id, user_id, "steps:1"))[0].genie_run_id
    assert first is not None
    assert await runs.run_newer_than(None) == first  # first turn: any run is ours
    assert await runs.run_newer_than(first) is None  # the next post has not landed
    second = (await _send(client, conversation_id, user_id, "steps:1"))[0].genie_run_id
    assert await runs.run_newer_than(first) == second


async def test_run_of_accepted_message_matches_the_text(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    runs = _inspector(client, conversation_id, user_id)
    one = (await _send(client, conversation_id, user_id, "steps:1 first"))[0].genie_run_id
    two = (await _send(client, conversation_id, user_id, "steps:1 second"))[0].genie_run_id
    again = (await _send(client, conversation_id, user_id, "steps:1 first"))[0].genie_run_id
    assert len({one, two, again}) == 3
    assert await runs.run_of_accepted_message("steps:1 second") == two
    # The same text twice: the newest is the one just accepted.
    assert await runs.run_of_accepted_message("  steps:1 first ") == again
    assert await runs.run_of_accepted_message("never sent") is None


async def test_run_end_of_a_finished_run_is_its_terminal_event(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    events = await _send(client, conversation_id, user_id, "steps:3")
    run_id = events[0].genie_run_id
    assert run_id is not None
    runs = _inspector(client, conversation_id, user_id)
    end = await runs.run_end(run_id, messages_seen=0)
    assert end is not None
    assert end.evidence is EndEvidence.TERMINAL_EVENT
    assert end.new_messages == _texts(events)  # in order, from E6
    # Messages the caller already has are not handed out again.
    seen = await runs.run_end(run_id, messages_seen=2)
    assert seen is not None
    assert seen.new_messages == _texts(events)[2:]


async def test_run_end_is_none_while_the_run_is_parked_then_terminal(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    head = await _send(
        client, conversation_id, user_id, "confirm:pay", stop=EventType.SKILL_CONFIRMATION_REQUIRED
    )
    run_id, call_id = head[-1].genie_run_id, getattr(head[-1], "call_id", None)
    assert run_id is not None
    assert call_id is not None
    runs = _inspector(client, conversation_id, user_id)
    assert await runs.run_end(run_id, messages_seen=0) is None
    await client.decide_skill(GENIE, conversation_id, call_id, user_id=user_id, approved=True)
    await _until_idle(client, conversation_id, user_id)
    end = await runs.run_end(run_id, messages_seen=0)
    assert end is not None
    assert end.evidence is EndEvidence.TERMINAL_EVENT
    assert len(end.new_messages) == 1


@pytest.mark.parametrize("how", ["connected", "rejected"])
async def test_pause_status_follows_a_runtime_connection(
    client: GenieClient, conversation_id: str, user_id: str, how: str
) -> None:
    head = await _send(client, conversation_id, user_id, "connect:jira", stop=CONNECTION)
    run_id = head[-1].genie_run_id
    attempt = getattr(head[-1], "runtime_connection_attempt_id", None)
    link = getattr(head[-1], "auth_link", None)
    assert attempt is not None
    assert link is not None
    runs = _inspector(client, conversation_id, user_id)
    parked = await runs.pause_status(run_id, Pause(CONNECTION, attempt), messages_seen=0)
    assert parked.status is PauseStatus.PARKED
    assert parked.last_event_type == CONNECTION
    # Without the run id, the attempt id alone still identifies the pause.
    blind = await runs.pause_status(None, Pause(CONNECTION, attempt), messages_seen=0)
    assert blind.status is PauseStatus.PARKED
    if how == "connected":
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(link.url)).status_code == 200
    else:
        await client.reject_connection(GENIE, attempt, user_id=user_id)
    await _until_idle(client, conversation_id, user_id)
    moved = await runs.pause_status(run_id, Pause(CONNECTION, attempt), messages_seen=0)
    assert moved.status is PauseStatus.MOVED_ON
    assert moved.last_event_type == EventType.PROCESSING_FINISHED


def test_a_pause_must_be_a_pause_event() -> None:
    with pytest.raises(ValueError, match="not a pause event"):
        Pause(EventType.AGENT_MESSAGE, "x")


# ------------------------------------------------------------------ production's readings

RUN = "run_2"
OLD_RUN = "run_1"
ATTEMPT = "rca_1"


def _event(type_: str, run: str = RUN, seq: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "event_id": f"evt_{run}_{seq}",
        "genie_run_id": run,
        "seq_num": seq,
        "created_at": f"2026-06-08T12:00:{seq:02d}Z",
        **extra,
    }


PARKED_ON_ATTEMPT = _event(CONNECTION, runtime_connection_attempt_id=ATTEMPT)


def _message(source: str, text: str, run: str | None, second: int) -> dict[str, Any]:
    return {
        "message_id": f"msg_{second}",
        "source": source,
        "content": text,
        "genie_run_id": run,
        "created_at": f"2026-06-08T12:00:{second:02d}Z",
    }


OLD_TURN = [_message("genie", "old reply", OLD_RUN, 2), _message("user", "old", OLD_RUN, 1)]
"""E6 of an earlier turn, newest first."""


class Canned:
    """An API whose E3, E6 and E9 give fixed bodies; counts the calls per endpoint."""

    def __init__(
        self,
        *,
        state: str | None = "idle",
        last_event: dict[str, Any] | None = None,
        messages: list[dict[str, Any]] | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        self.e3 = {"conversation_id": "c", "state": state, "last_event": last_event}
        self.e6 = messages or []
        self.e9 = events or []
        self.calls: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/conversations/events"):
            self.calls.append("E9")
            return httpx.Response(200, json={"events": self.e9})
        if path.endswith("/messages"):
            self.calls.append("E6")
            return httpx.Response(200, json={"messages": self.e6})
        self.calls.append("E3")
        return httpx.Response(200, content=json.dumps(self.e3))


@pytest.fixture
async def canned() -> AsyncIterator[tuple[Canned, RunInspector]]:
    api = Canned()
    transport = httpx.MockTransport(lambda request: api.handle(request))
    async with GenieClient("https://genie.test", ApiKeyAuth("k"), transport=transport) as client:
        yield api, RunInspector(client, "g", "c", user_id="u")


async def test_idle_while_parked_is_not_an_end(canned: tuple[Canned, RunInspector]) -> None:
    """Production reads ``idle`` while a run waits on a connection: still parked."""
    api, runs = canned
    api.e3["last_event"] = PARKED_ON_ATTEMPT
    api.e6 = [_message("genie", "I need Jira", RUN, 4), _message("user", "go", RUN, 3), *OLD_TURN]
    assert await runs.run_end(RUN, messages_seen=1) is None
    check = await runs.pause_status(RUN, Pause(CONNECTION, ATTEMPT), messages_seen=1)
    assert (check.status, check.state) == (PauseStatus.PARKED, "idle")


async def test_resumed_output_only_in_history_ends_the_run(
    canned: tuple[Canned, RunInspector],
) -> None:
    """E3 still shows the pause, but E6 has a genie message of this run nobody delivered."""
    api, runs = canned
    api.e3["last_event"] = PARKED_ON_ATTEMPT
    api.e6 = [
        _message("genie", "Your ticket is filed.", RUN, 9),
        _message("genie", "I need Jira", RUN, 4),
        _message("user", "go", RUN, 3),
        *OLD_TURN,
    ]
    end = await runs.run_end(RUN, messages_seen=1)
    assert end is not None
    assert end.evidence is EndEvidence.GENIE_MESSAGES
    assert end.new_messages == ("Your ticket is filed.",)
    check = await runs.pause_status(RUN, Pause(CONNECTION, ATTEMPT), messages_seen=1)
    assert check.status is PauseStatus.MOVED_ON


async def test_a_busy_state_is_believed(canned: tuple[Canned, RunInspector]) -> None:
    api, runs = canned
    api.e3.update(state="skill_processing", last_event=_event("skill.running"))
    api.e6 = [_message("genie", "working on it", RUN, 4), *OLD_TURN]
    assert await runs.run_end(RUN, messages_seen=0) is None
    assert api.calls == ["E3"]  # no need to read the history


async def test_another_runs_messages_are_no_evidence(canned: tuple[Canned, RunInspector]) -> None:
    api, runs = canned
    api.e3["last_event"] = _event(CONNECTION, run=OLD_RUN, runtime_connection_attempt_id="rca_0")
    api.e6 = OLD_TURN
    assert await runs.run_end(RUN, messages_seen=0) is None
    check = await runs.pause_status(RUN, Pause(CONNECTION, ATTEMPT), messages_seen=0)
    assert check.status is PauseStatus.UNKNOWN


async def test_a_later_pause_of_the_run_is_moving_on(canned: tuple[Canned, RunInspector]) -> None:
    """A second connection request of the same run means the first one was passed."""
    api, runs = canned
    api.e3.update(
        state="skill_processing",
        last_event=_event(CONNECTION, seq=7, runtime_connection_attempt_id="rca_2"),
    )
    check = await runs.pause_status(RUN, Pause(CONNECTION, ATTEMPT), messages_seen=0)
    assert check.status is PauseStatus.MOVED_ON
    # Only another pause shows it: it may have been raised beside this one.
    assert check.by_other_pause
    again = await runs.pause_status(RUN, Pause(CONNECTION, "rca_2"), messages_seen=0)
    assert again.status is PauseStatus.PARKED


async def test_a_later_pause_after_new_messages_is_plain_moving_on(
    canned: tuple[Canned, RunInspector],
) -> None:
    """Genie messages after the first pause say the run went on past it, whatever its
    newest event is."""
    api, runs = canned
    api.e3["last_event"] = _event(CONNECTION, seq=7, runtime_connection_attempt_id="rca_2")
    api.e6 = [
        _message("genie", "Jira is connected; now Slack", RUN, 6),
        _message("genie", "I need Jira", RUN, 4),
        _message("user", "go", RUN, 3),
        *OLD_TURN,
    ]
    check = await runs.pause_status(RUN, Pause(CONNECTION, ATTEMPT), messages_seen=1)
    assert (check.status, check.by_other_pause) == (PauseStatus.MOVED_ON, False)
    assert api.calls == ["E3", "E6"]


async def test_a_later_event_that_is_no_pause_needs_no_history(
    canned: tuple[Canned, RunInspector],
) -> None:
    api, runs = canned
    api.e3["last_event"] = _event("skill.running", seq=7)
    check = await runs.pause_status(RUN, Pause(CONNECTION, ATTEMPT), messages_seen=0)
    assert (check.status, check.by_other_pause) == (PauseStatus.MOVED_ON, False)
    assert api.calls == ["E3"]


async def test_user_message_without_run_id_is_found_through_events(
    canned: tuple[Canned, RunInspector],
) -> None:
    """E6 may list the user message without its run: the first run with events after it."""
    api, runs = canned
    api.e6 = [_message("user", "go", None, 3), *OLD_TURN]
    api.e9 = [_event("processing.started", seq=1)]
    assert await runs.run_of_accepted_message("go") == RUN
    assert api.calls == ["E6", "E9"]


async def test_run_newer_than_reads_history_when_state_names_no_run(
    canned: tuple[Canned, RunInspector],
) -> None:
    api, runs = canned
    api.e6 = [_message("genie", "hi", RUN, 4), _message("user", "go", None, 3), *OLD_TURN]
    assert await runs.run_newer_than(OLD_RUN) == RUN
    api.e6 = OLD_TURN
    assert await runs.run_newer_than(OLD_RUN) is None
    assert api.calls == ["E3", "E6", "E3", "E6"]
