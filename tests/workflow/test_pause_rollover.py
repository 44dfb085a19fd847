"""A pause that outlives its run's history bound moves to a new run and waits on there.

While a human takes days, what arrives meanwhile (a caller polling ``wait_turn``, refused
decisions, signals, connection probes) grows the run's history. Before the pause
rollover, one run held all of it: the server's budget of 2,000 updates per run ran out
(decisions then went by signal), and at 51,200 events the server ends the run. Now the
pause continues as new at ``max_history_events_per_run``, carrying its item, deadline,
escalation, probe interval and stream cursor. These tests drive the history to a small
bound with real polls and refusals against the dev server and the simulator.

An unversioned worker rolls a pause over only when its operator says no worker of an
older release is left (``GENIE_PAUSE_ROLLOVER``), as these workers do; the last test is
one that does not.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from genie_api import GenieClient
from geniectl import GenieConversations, Refused
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.webhooks import SECRET, Receiver
from tests.workflow.helpers import convs, eventually, patch_markers, start, timer_waits
from worker import build_worker
from workflows import (
    ConversationPolicy,
    GenieConversation,
    TurnResult,
    errors,
)
from workflows._patches import NEWEST_LEVEL_ID

HISTORIES = Path(__file__).parent / "histories"
BOUND = 50  # the smallest bound a policy may set


@pytest.fixture
async def api(
    client: Client, sim: SimProcess, genie: GenieClient, receiver: Receiver
) -> AsyncIterator[GenieConversations]:
    tq = f"test-pause-rollover-{uuid.uuid4()}"
    settings = worker_settings(
        sim, notify_url=receiver.url, notify_secret=SECRET, pause_rollover=True
    )
    async with build_worker(client, settings, genie, task_queue=tq):
        yield convs(client, tq)


async def _run_id(api: GenieConversations, wid: str) -> str:
    return (await api.handle(wid).describe()).run_id or ""


async def _poll_until_rolled(
    api: GenieConversations, wid: str, turn: int, *, refuse_as: str | None = None
) -> str:
    """What a busy caller does during a long pause: poll (and, with ``refuse_as``, try a
    decision it may not make), until the run continues as new. The first run's id."""
    first = await _run_id(api, wid)
    for _ in range(BOUND):
        if await _run_id(api, wid) != first:
            return first
        await api.handle(wid).execute_update(
            "wait_turn", {"turn": turn, "timeout_seconds": 0}, result_type=TurnResult
        )
        if refuse_as is not None:
            st = await api.status(wid)
            if st.pending_approvals:
                with pytest.raises(Refused) as refused:
                    await api.approve(wid, st.pending_approvals[0].call_id, approver=refuse_as)
                assert refused.value.type == errors.APPROVER_NOT_ALLOWED
    raise AssertionError("the paused run never continued as new")


async def _closed_run(client: Client, wid: str, run_id: str) -> WorkflowHistory:
    history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert BOUND <= len(history.events) <= BOUND + 25, len(history.events)
    assert not any(e.HasField("workflow_task_failed_event_attributes") for e in history.events)
    return history


def _activities(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


async def _replay(*histories: WorkflowHistory) -> None:
    replayer = Replayer(workflows=[GenieConversation], data_converter=pydantic_data_converter)
    for h in histories:
        await replayer.replay_workflow(h)


async def test_an_approval_pause_continues_as_new_and_is_decided_once_in_the_next_run(
    client: Client, api: GenieConversations, sim: SimProcess, receiver: Receiver
) -> None:
    """Polls and refused decisions take the paused run to its bound: it continues as new
    with the same item, deadline and escalation, the notification still failing is sent
    again from the new run (same ``webhook-id``), nothing upserts, and the decision made
    in the new run is posted once and the turn streams on."""
    receiver.status = 503  # still retrying when the run rolls over
    timeout = timedelta(hours=2)
    policy = ConversationPolicy(
        max_history_events_per_run=BOUND,
        approvers=["alice"],
        approval_timeout=timeout,
        on_approval_timeout="escalate",
    )
    wid = await start(api, policy=policy)
    res = await api.ask(wid, "please confirm:send_email")
    assert res.status == "awaiting_approval", res
    before = await api.status(wid)
    (item,) = before.pending_approvals
    first_run = await _poll_until_rolled(api, wid, res.turn, refuse_as="mallory")

    first = await _closed_run(client, wid, first_run)
    # The level asked in the first task stands for the rollover's own patch.
    assert patch_markers(first) == [NEWEST_LEVEL_ID]
    after = await api.status(wid)
    assert after.state == "awaiting_approval" and after.turn == res.turn
    assert after.awaiting_since == before.awaiting_since
    (same,) = after.pending_approvals
    assert same.model_dump(exclude={"note"}) == item.model_dump(exclude={"note"})
    assert not same.escalated, "a rollover is not a deadline"
    refused = [a for a in after.audit if a.actor == "mallory"]
    assert refused, "the refusals before the seam are still on the trail"

    second = await eventually(
        lambda: api.handle(wid).fetch_history(),
        lambda h: "notify" in _activities(h) and bool(timer_waits(h, 0, b"approval of")),
        what="the new run's first task",
    )
    # The deadline runs on: the new run's approval timer is set for what is left of it.
    (wait,) = [w for _, w in timer_waits(second, 0, b"approval of send_email")]
    assert wait < timeout, wait
    # The delivery still failing was sent again (the "notify" above).
    assert not any(
        e.HasField("upsert_workflow_search_attributes_event_attributes") for e in second.events
    ), "the search attributes came along with the run"
    ids = {e["webhook-id"] for e in receiver.events()}
    assert ids == {f"{wid}:{item.call_id}:pause"}, ids

    rec = await api.approve(wid, item.call_id, approver="alice", wait_for="completion")
    assert rec.result is not None and rec.result.status == "completed", rec
    assert rec.result.reply
    stats = sim.stats()["conversations"][after.conversation_id]  # type: ignore[index]
    assert stats["messages_accepted"] == 1, stats
    assert stats["skill_decisions_applied"] == {item.call_id: 1}, stats
    second = await api.handle(wid).fetch_history()
    await _replay(first, second)
    if os.environ.get("GENIE_RECORD_HISTORIES") == "1":
        (HISTORIES / f"pause_rollover.{NEWEST_LEVEL_ID}.json").write_text(first.to_json())


async def test_a_connection_pause_rolls_over_with_its_probe_interval(
    client: Client, api: GenieConversations, sim: SimProcess
) -> None:
    """A connection pause probes the API on a backing-off timer; across the seam the
    next run probes on from the interval reached, not from the start, and a user who
    connects is still noticed and the turn completes."""
    base = timedelta(seconds=1)
    policy = ConversationPolicy(max_history_events_per_run=BOUND, connection_poll_interval=base)
    wid = await start(api, policy=policy)
    accepted = await api.send(wid, "connect:salesforce")
    res = await api.wait(wid, accepted.turn)
    assert res.status == "awaiting_connection", res
    (pending,) = res.pending.connections
    # Two probes (1 s, then 2 s) before the polls push the run over its bound.
    await eventually(
        lambda: api.handle(wid).fetch_history(),
        lambda h: _activities(h).count("probe_connection") >= 2,
        what="two probes",
        within=30,
    )
    first_run = await _poll_until_rolled(api, wid, accepted.turn)
    await _closed_run(client, wid, first_run)
    second = await eventually(
        lambda: api.handle(wid).fetch_history(),
        lambda h: bool(timer_waits(h, 0, b"connection")),
        what="the new run's probe timer",
    )
    waits = [w for _, w in timer_waits(second, 0, b"connection")]
    assert waits[0] >= 4 * base, waits  # 1 s, 2 s, then 4 s: carried

    assert pending.auth_url
    async with httpx.AsyncClient(timeout=5) as http:  # the user authenticates
        (await http.get(pending.auth_url)).raise_for_status()
    rec = await api.connect_done(wid, pending.attempt_id, actor="alice")
    assert rec.decision == "done"
    done = await api.wait(wid, accepted.turn, wait_for="completion")
    assert done.status == "completed", done
    await _replay(second)


async def test_the_deadline_of_a_rolled_over_pause_holds(
    client: Client, api: GenieConversations, sim: SimProcess
) -> None:
    """The deadline is a line in time, not a duration per run: a pause that moved to a
    new run times out when it would have, and the policy's rejection is posted."""
    timeout = timedelta(seconds=8)
    policy = ConversationPolicy(max_history_events_per_run=BOUND, approval_timeout=timeout)
    wid = await start(api, policy=policy)
    res = await api.ask(wid, "please confirm:send_email")
    paused_at = time.monotonic()
    await _poll_until_rolled(api, wid, res.turn)
    assert time.monotonic() - paused_at < timeout.total_seconds(), "rolled over too late"
    # The wall clock alone cannot tell a kept deadline (8 s) from one started again at
    # the seam (8 s after it): the new run's timer is set for what is left.
    second = await eventually(
        lambda: api.handle(wid).fetch_history(),
        lambda h: bool(timer_waits(h, 0, b"approval of")),
        what="the new run's approval timer",
    )
    ((_, left),) = timer_waits(second, 0, b"approval of")
    assert left < timeout, left
    done = await api.wait(wid, res.turn, wait_for="completion")
    took = time.monotonic() - paused_at
    assert timeout.total_seconds() - 1 <= took <= timeout.total_seconds() + 6, took
    st = await api.status(wid)
    assert [a.kind for a in st.audit if a.kind == "approval_timeout"] == ["approval_timeout"]
    assert done.status == "completed", done  # the genie heard the rejection and answered


async def test_an_end_during_a_rolled_over_pause_rejects_and_ends(
    client: Client, api: GenieConversations, sim: SimProcess
) -> None:
    wid = await start(api, policy=ConversationPolicy(max_history_events_per_run=BOUND))
    res = await api.ask(wid, "please confirm:send_email")
    call = res.pending.approvals[0].call_id
    await _poll_until_rolled(api, wid, res.turn)
    st = await api.status(wid)
    await api.end(wid, reason="user left")
    outcome = await asyncio.wait_for(api.handle(wid).result(), timeout=30)
    assert outcome.ended_reason == "user left", outcome
    stats = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert stats["messages_accepted"] == 1, stats
    assert stats["skill_decisions_applied"] == {call: 1}, stats  # the policy's rejection


async def test_a_signal_flood_in_a_pause_rolls_over_again_and_again_and_one_decision_counts(
    client: Client, api: GenieConversations, sim: SimProcess
) -> None:
    """A caller gone wrong floods a pause with decisions it may not make, by signal (no
    validator stops a signal: each is history). The pause rolls over as often as the
    flood fills a run, never fails a workflow task, and the one allowed decision, sent
    in the middle of the flood, is applied exactly once."""
    policy = ConversationPolicy(max_history_events_per_run=BOUND, approvers=["alice"])
    wid = await start(api, policy=policy)
    res = await api.ask(wid, "please confirm:send_email")
    call = res.pending.approvals[0].call_id
    handle = api.handle(wid)
    first_run = await _run_id(api, wid)
    bad = {"call_id": call, "approved": True, "approver": "mallory"}
    sent = 0

    async def flood(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            await handle.signal("skill_decision", bad)
            sent += 1

    await asyncio.gather(*(flood(40) for _ in range(5)))
    # The allowed decision races the rest of the flood, and a seam.
    good = asyncio.create_task(api.approve(wid, call, approver="alice", wait_for="completion"))
    await asyncio.gather(*(flood(20) for _ in range(5)))
    rec = await asyncio.wait_for(good, timeout=60)
    assert rec.result is not None and rec.result.status == "completed", rec
    assert sent == 300

    runs, run_id = [], first_run
    while run_id:
        h = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        runs.append(h)
        run_id = h.events[
            -1
        ].workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    assert len(runs) >= 3, [len(h.events) for h in runs]  # 300 signals, 50 events a run
    lengths = [len(h.events) for h in runs]
    for h in runs:
        # The only failed task allowed: the server's own answer to signals that arrive
        # while a task continues as new (it is tried again with them, at once).
        failed = [
            e.workflow_task_failed_event_attributes
            for e in h.events
            if e.HasField("workflow_task_failed_event_attributes")
        ]
        unhandled = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
        assert all(f.cause == unhandled for f in failed), [(f.cause, f.failure) for f in failed]
    # A run that only waited (no stream in it: the pause, then the idle wait after the
    # turn) ends at the bound plus what the flood brought in while it was continuing as
    # new. The runs that streamed (the first, and the one the decision was posted in,
    # whose turn streamed on under the flood) cannot roll over mid-segment.
    waited = [len(h.events) for h in runs if "stream_segment" not in _activities(h)]
    assert waited and max(waited) <= 3 * BOUND, lengths
    st = await api.status(wid)
    stats = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert stats["skill_decisions_applied"] == {call: 1}, stats
    assert stats["messages_accepted"] == 1, stats
    await _replay(*runs)


async def test_an_unversioned_worker_keeps_the_pause_in_its_run_unless_told_otherwise(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    """Where a worker of an older release may still poll, it would take a carried pause
    for an idle conversation and never resume it: so by default an unversioned worker
    asks (once the bound is reached), hears no, and the pause waits on in its run as
    before. The decision is applied as usual."""
    api = convs(client, task_queue)
    wid = await start(api, policy=ConversationPolicy(max_history_events_per_run=BOUND))
    res = await api.ask(wid, "please confirm:send_email")
    first = await _run_id(api, wid)
    for _ in range(BOUND // 2):
        await api.handle(wid).execute_update(
            "wait_turn", {"turn": res.turn, "timeout_seconds": 0}, result_type=TurnResult
        )
    assert await _run_id(api, wid) == first
    history = await api.handle(wid).fetch_history()
    assert len(history.events) > 2 * BOUND
    asked = [
        e
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and b"may this pause continue as new?" in e.user_metadata.summary.data
    ]
    assert len(asked) == 1, "asked once, when the bound was reached"
    rec = await api.approve(
        wid, res.pending.approvals[0].call_id, approver="alice", wait_for="completion"
    )
    assert rec.result is not None and rec.result.status == "completed", rec
    await _replay(history)
