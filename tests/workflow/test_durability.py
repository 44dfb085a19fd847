"""Continue-as-new, a worker restarted mid-turn, and replay of recorded histories."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from genie_api import GenieClient
from tests.conftest import worker_settings
from tests.services import SimProcess, temporal_cli
from tests.workflow.helpers import (
    USER,
    convs,
    eventually,
    patch_markers,
    start,
    timer_waits,
)
from worker import build_worker
from workflows import (
    ALL_SEARCH_ATTRIBUTES,
    ConversationPolicy,
    GenieConversation,
    TurnResult,
    _backoff,
    _steps,
    _turn,
)
from workflows._patches import NEWEST_LEVEL_ID

HISTORIES = Path(__file__).parent / "histories"


async def test_turn_budget_continues_as_new_carrying_queue_and_dedupe(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=ConversationPolicy(max_turns_per_run=2))
    first_run = (await api.handle(wid).describe()).run_id
    sent = [await api.send(wid, f"m{i}", client_message_id=f"id-{i}") for i in range(5)]
    results = [await api.wait(wid, a.turn, wait_for="completion") for a in sent]
    assert [r.reply for r in results] == [f"You said: m{i}" for i in range(5)]
    assert (await api.handle(wid).describe()).run_id != first_run
    # Dedupe keys survived: a retry of turn 1's message is answered, not re-sent.
    again = await api.send(wid, "m0", client_message_id="id-0")
    assert (again.turn, again.duplicate) == (1, True)
    st = await api.status(wid)
    assert st.turn == 5
    assert sim.stats()["conversations"][st.conversation_id]["messages_accepted"] == 5  # type: ignore[index]


async def test_history_bound_continues_as_new_so_a_wake_replays_little(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    """A long conversation moves to a new run once its history reaches
    ``max_history_events_per_run``: a worker waking it replays at most about that many
    events, not every turn since the start. Each message is still sent exactly once."""
    api = convs(client, task_queue)
    bound = 60
    wid = await start(api, policy=ConversationPolicy(max_history_events_per_run=bound))
    first_run = (await api.handle(wid).describe()).run_id
    for i in range(12):
        r = await api.ask(wid, f"m{i}", client_message_id=f"id-{i}")
        assert (r.status, r.reply) == ("completed", f"You said: m{i}")
    # Follow the chain of runs from the first one, as the server recorded it.
    histories, run_id = [], first_run
    while run_id:
        history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    assert len(histories) >= 3, len(histories)  # 12 plain turns of 13 events each, 60 a run
    lengths = [len(h.events) for h in histories]
    for h in histories[:-1]:  # each closed run continued at the bound
        assert bound <= len(h.events) <= bound + 20, lengths
    # The patch level, asked once in the first task, stands for the bound's own patch; the
    # later runs carry it and record no marker (nor its TemporalChangeVersion upsert).
    markers = [patch_markers(h) for h in histories]
    assert markers[0] == [NEWEST_LEVEL_ID] and not any(markers[1:]), markers
    assert max(lengths) <= bound + 20, lengths
    # Dedupe keys survived every seam: a retry of turn 1's message is answered, not re-sent.
    again = await api.send(wid, "m0", client_message_id="id-0")
    assert (again.turn, again.duplicate) == (1, True)
    st = await api.status(wid)
    assert sim.stats()["conversations"][st.conversation_id]["messages_accepted"] == 12  # type: ignore[index]
    await Replayer(
        workflows=[GenieConversation], data_converter=pydantic_data_converter
    ).replay_workflow(histories[0])
    if os.environ.get("GENIE_RECORD_HISTORIES") == "1":
        name = f"bounded_history.{NEWEST_LEVEL_ID}.json"
        (HISTORIES / name).write_text(histories[0].to_json())


async def test_an_idle_conversation_that_callers_keep_polling_continues_as_new(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    """Between turns no turn ends, yet each update a caller sends (a ``wait_turn`` poll)
    adds history and spends the run's update budget. Once the history reaches its bound
    the idle conversation moves to a new run, so it keeps taking messages."""
    api = convs(client, task_queue)
    bound, idle = 50, timedelta(hours=1)
    policy = ConversationPolicy(max_history_events_per_run=bound, idle_timeout=idle)
    wid = await start(api, policy=policy)
    first_run = (await api.handle(wid).describe()).run_id
    r = await api.ask(wid, "hello")
    assert r.status == "completed", r
    polls = 0
    while (await api.handle(wid).describe()).run_id == first_run:
        polls += 1
        assert polls <= bound, "the idle run never continued as new"
        await api.handle(wid).execute_update(
            "wait_turn", {"turn": r.turn, "timeout_seconds": 0}, result_type=TurnResult
        )
    first = await client.get_workflow_handle(wid, run_id=first_run).fetch_history()
    assert bound <= len(first.events) <= bound + 20, len(first.events)
    assert patch_markers(first) == [NEWEST_LEVEL_ID]  # the level stands for idle-rollover
    assert not any(e.HasField("workflow_task_failed_event_attributes") for e in first.events)
    # The idle timeout runs on across the seam instead of starting again.
    second = await eventually(
        lambda: api.handle(wid).fetch_history(),
        lambda h: any(e.HasField("timer_started_event_attributes") for e in h.events),
        what="the new run's idle timer",
    )
    (timer,) = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in second.events
        if e.HasField("timer_started_event_attributes")
    ]
    assert timer < idle, timer
    # The new run has the whole conversation: the old turn, and room for the next.
    assert (await api.wait(wid, r.turn)).reply == "You said: hello"
    nxt = await api.ask(wid, "again")
    assert (nxt.turn, nxt.status) == (r.turn + 1, "completed")
    st = await api.status(wid)
    assert sim.stats()["conversations"][st.conversation_id]["messages_accepted"] == 2  # type: ignore[index]
    await Replayer(
        workflows=[GenieConversation], data_converter=pydantic_data_converter
    ).replay_workflow(first)


async def test_a_long_outage_is_retried_ever_less_often_and_ridden_out(
    client: Client, sim: SimProcess, genie: GenieClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past five minutes, a step the API keeps failing is retried after a twelfth of the
    outage so far, so an outage as long as ``api_outage_timeout`` allows (a year) adds
    history slowly instead of reaching the server's event limit; the step still goes
    through once the API is back.

    The rule starts after an hour down. The worker runs in this process, unsandboxed, and
    the test lowers the waits (30 s doubling to 5 min becomes 50 ms to 100 ms) and takes
    out the activity's own retries (constants stood in for, no peer mocked), so that it
    starts after 1.2 s."""
    monkeypatch.setattr(_steps, "OUTAGE_FIRST_WAIT", timedelta(milliseconds=50))
    monkeypatch.setattr(_steps, "OUTAGE_MAX_WAIT", timedelta(milliseconds=100))
    once = dataclasses.replace(_steps.CONTROL, retry=RetryPolicy(maximum_attempts=1))
    monkeypatch.setattr(_turn, "CONTROL", once)
    tq = f"test-outage-{uuid.uuid4()}"
    async with build_worker(
        client, worker_settings(sim, workflow_sandbox=False), genie, task_queue=tq
    ):
        api = convs(client, tq)
        wid = await start(api)
        sim.fault(endpoint="create_conversation", status=503, for_seconds=6)
        res = await api.ask(wid, "hello", wait_for="completion")
        assert (res.status, res.reply) == ("completed", "You said: hello")
        history = await api.handle(wid).fetch_history()
        conv_id = (await api.status(wid)).conversation_id
    failed = [e for e in history.events if e.HasField("activity_task_failed_event_attributes")]
    since = failed[0].event_time.ToDatetime().timestamp()
    ticks = timer_waits(history, since, b"API unreachable")
    assert len(ticks) >= 5, ticks
    # Never longer than the rule says (the cap, or a twelfth of the outage so far, so the
    # API's return is noticed soon); past the cap's turn, longer than the cap.
    cap, slack = timedelta(milliseconds=100), timedelta(milliseconds=100)
    assert all(d <= max(cap, _backoff.by_age(timedelta(seconds=at))) + slack for at, d in ticks)
    assert any(d > cap for _, d in ticks), ticks
    # Fewer retries than at the cap: 6 s of outage at 100 ms would be dozens.
    assert len(ticks) < 30, ticks
    assert patch_markers(history) == [NEWEST_LEVEL_ID]  # the level stands for outage-by-age
    assert sim.stats()["conversations"][conv_id]["messages_accepted"] == 1  # type: ignore[index]
    await Replayer(
        workflows=[GenieConversation],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),  # with the lowered waits, as it ran
    ).replay_workflow(history)


@pytest.fixture(scope="module")
async def can_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that suggests continue-as-new after a few dozen history events."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=list(ALL_SEARCH_ATTRIBUTES),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=40",
        ],
    )
    yield env
    await env.shutdown()


async def test_server_suggestion_continues_as_new_and_pending_work_survives(
    can_env: WorkflowEnvironment, genie: GenieClient, sim: SimProcess
) -> None:
    tq = f"test-can-{uuid.uuid4()}"
    async with build_worker(can_env.client, worker_settings(sim), genie, task_queue=tq):
        api = convs(can_env.client, tq)
        wid = await start(api)
        runs = {(await api.handle(wid).describe()).run_id}
        for i in range(6):
            r = await api.ask(wid, f"turn {i}", client_message_id=f"c{i}")
            assert r.status == "completed", r
            runs.add((await api.handle(wid).describe()).run_id)
        assert len(runs) >= 2, "the server's suggestion never led to continue-as-new"
        # A pause and a decision work across the seam.
        accepted = await api.send(wid, "confirm:send_email")
        res = await api.wait(wid, accepted.turn)
        await api.approve(wid, res.pending.approvals[0].call_id, approver="ops")
        done = await api.wait(wid, accepted.turn, wait_for="completion")
        assert done.status == "completed"
        assert (await api.send(wid, "x", client_message_id="c0")).duplicate
        transcript = await api.transcript(wid)
        assert transcript.turns[-1].turn == accepted.turn


async def test_worker_restarted_mid_turn_finishes_the_turn_once(
    client: Client, genie: GenieClient, sim: SimProcess
) -> None:
    tq = f"test-restart-{uuid.uuid4()}"
    settings = worker_settings(sim, graceful_shutdown_seconds=2)
    api = convs(client, tq)
    async with build_worker(client, settings, genie, task_queue=tq):
        wid = await start(api)
        accepted = await api.send(wid, "steps:10 delay:150")
        # The API conversation is created by the first turn.
        conv_id = (
            await eventually(lambda: api.status(wid), lambda s: s.conversation_id is not None)
        ).conversation_id
        await eventually(
            lambda: genie.get_conversation("gin-test-genie", conv_id or "", user_id=USER),
            lambda d: d.last_event is not None and (d.last_event.seq_num or 0) >= 4,
            what="the run to be mid-stream",
        )
    # The first worker is gone mid-stream; a new one picks the segment up.
    async with build_worker(client, settings, genie, task_queue=tq):
        done = await api.wait(wid, accepted.turn, wait_for="completion")
    assert done.status == "completed"
    assert done.messages == [f"step {i} of 10" for i in range(1, 11)] + [
        "You said: steps:10 delay:150"
    ]
    conv = sim.stats()["conversations"][conv_id]  # type: ignore[index]
    assert conv["messages_accepted"] == 1 and conv["message_posts"] == 1


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_histories_replay_deterministically(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())  # noqa: ASYNC240 (tiny file)
    await Replayer(
        workflows=[GenieConversation], data_converter=pydantic_data_converter
    ).replay_workflow(history)


async def test_fresh_histories_replay(client: Client, task_queue: str) -> None:
    """Every command the workflow issues (activities, timers, updates, signals, search
    attributes) replays deterministically. ``GENIE_RECORD_HISTORIES=1`` also writes the
    history to ``histories/``, where the test above pins it for future versions.
    ``approval_connection_timeout.json`` is from before ``decision-with-stream`` (decisions
    posted by their own activity), ``….decision-with-stream.json`` from before
    ``running-when-long`` (every state transition upserted ``GenieState``),
    ``….running-when-long.json`` from before patch levels (a marker at each patch's
    site); each file named after the newest patch its run took."""
    api = convs(client, task_queue)
    wid = await start(
        api,
        policy=ConversationPolicy(
            approval_timeout=timedelta(seconds=1), running_shown_after=timedelta(seconds=1)
        ),
    )
    await api.ask(wid, "hello")
    await api.ask(wid, "delay:2500")  # lasts: GenieState shows running
    accepted = await api.send(wid, "confirm:send_email connect:jira")
    res = await api.wait(wid, accepted.turn)
    await api.approve(wid, res.pending.approvals[0].call_id, approver="ops")
    res = await api.wait(wid, accepted.turn)
    await api.connect_reject(wid, res.pending.connections[0].attempt_id, actor="ops")
    await api.wait(wid, accepted.turn, wait_for="completion")
    timed_out = await api.ask(wid, "confirm:wire_money", wait_for="completion")
    assert timed_out.reply and "approval timed out" in timed_out.reply
    await api.end(wid)
    await api.handle(wid).result()
    history = await api.handle(wid).fetch_history()
    # One marker for the whole conversation: not one per patch site (a decision's among them).
    assert patch_markers(history) == [NEWEST_LEVEL_ID]
    await Replayer(
        workflows=[GenieConversation], data_converter=pydantic_data_converter
    ).replay_workflow(history)
    if os.environ.get("GENIE_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        # One file per workflow.patched id since the first: each is replayed for good.
        name = f"approval_connection_timeout.{NEWEST_LEVEL_ID}.json"
        (HISTORIES / name).write_text(history.to_json())
