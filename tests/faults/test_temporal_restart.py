"""The Temporal server dies (SIGKILL) and restarts on the same SQLite file.

One restart serves both cases: a conversation streaming a slow run, and one parked on a
confirmation. The worker process is left alone: it has to ride out the outage by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.faults._harness import (
    GENIE,
    USER,
    Conversation,
    FaultStack,
    register_case,
    wait_until,
)

STREAM_TEXT = "delay:300 steps:10"


@dataclass
class Restart:
    streaming: Conversation
    streaming_turn: int
    paused: Conversation
    call_id: str
    down_seconds: float
    restarted_at: float
    worker_starts_before: int
    tasks: dict[str, asyncio.Task[None]]


@pytest.fixture(scope="module")
async def restart(stack: FaultStack) -> AsyncIterator[Restart]:
    streaming, paused = await asyncio.gather(stack.conversation(), stack.conversation())
    res = await stack.api.ask(paused.wid, "confirm:send_email")
    assert res.status == "awaiting_approval", res
    call_id = res.pending.approvals[0].call_id
    turn = (await stack.api.send(streaming.wid, STREAM_TEXT)).turn
    await wait_until(
        lambda: stack.genie.get_conversation(GENIE, streaming.conversation_id, user_id=USER),
        lambda d: d.last_event is not None and (d.last_event.seq_num or 0) >= 3,
        what="the run to be mid-stream",
    )
    t0 = time.monotonic()
    stack.temporal.kill()
    # Stay down until the run has finished at the API: the worker's segment then completes
    # while Temporal is away and has to deliver its result once the server is back.
    await wait_until(
        lambda: stack.genie.get_conversation(GENIE, streaming.conversation_id, user_id=USER),
        lambda d: d.state == "idle",
        what="the run to finish while Temporal is down",
    )
    await stack.temporal.start()
    rnd = Restart(
        streaming=streaming,
        streaming_turn=turn,
        paused=paused,
        call_id=call_id,
        down_seconds=time.monotonic() - t0,
        restarted_at=time.monotonic(),
        worker_starts_before=stack.worker.starts,
        tasks={},
    )
    rnd.tasks = {
        "restart_mid_conversation": asyncio.create_task(_mid(stack, rnd)),
        "restart_awaiting_approval": asyncio.create_task(_awaiting(stack, rnd)),
    }
    yield rnd
    for t in rnd.tasks.values():
        t.cancel()
    await asyncio.gather(*rnd.tasks.values(), return_exceptions=True)


async def _worker_survived(stack: FaultStack, rnd: Restart) -> None:
    assert stack.worker.starts == rnd.worker_starts_before
    assert stack.worker.proc is not None and stack.worker.proc.poll() is None, (
        stack.worker.log_tail()
    )


async def _mid(stack: FaultStack, rnd: Restart) -> None:
    conv = rnd.streaming
    result = await stack.finish(conv, rnd.streaming_turn, within=90)
    took = time.monotonic() - rnd.restarted_at
    await stack.check_turn(conv, result)
    assert result.messages == [f"step {i} of 10" for i in range(1, 11)] + [
        f"You said: {STREAM_TEXT}"
    ]
    nxt = await stack.api.ask(conv.wid, "and again", wait_for="completion")
    await stack.check_turn(conv, nxt, turns=2)
    await _worker_survived(stack, rnd)
    await stack.check_secrets(conv)
    segs = [a for a in await stack.activity_attempts(conv) if a.activity == "stream_segment"]
    first = segs[0]
    how = (
        "the segment's result, reached while the server was down, was delivered after it"
        if first.attempt == 1
        else f"the segment was retried (attempt {first.attempt} after {first.previous_failure})"
    )
    stack.record(
        "restart_mid_conversation",
        f"server down {rnd.down_seconds:.1f} s (until the run had finished at the API); the "
        f"worker process rode it out; {how}; the turn completed {took:.0f} s after the "
        "restart: 1 POST, 11/11 messages once, in order; the next turn completed normally",
    )


async def _awaiting(stack: FaultStack, rnd: Restart) -> None:
    conv = rnd.paused
    st = await stack.api.status(conv.wid)
    assert st.state == "awaiting_approval", st
    assert [p.call_id for p in st.pending_approvals] == [rnd.call_id]
    await stack.api.approve(conv.wid, rnd.call_id, approver="ops")
    result = await stack.finish(conv, 1)
    await stack.check_turn(conv, result)
    await stack.check_decisions(conv, {rnd.call_id: 1})
    await _worker_survived(stack, rnd)
    await stack.check_secrets(conv)
    stack.record(
        "restart_awaiting_approval",
        "still awaiting_approval with its pending call and deadline after the restart; the "
        "approval then completed the turn; decision posted once, 1 POST",
    )


RESTART_CASES = [
    register_case(
        "restart_mid_conversation",
        "temporal_restart",
        "mid-conversation: a run streaming while the server is killed and restarted",
    ),
    register_case(
        "restart_awaiting_approval",
        "temporal_restart",
        "while awaiting approval; the decision comes after the restart",
    ),
]


@pytest.mark.parametrize("case_id", RESTART_CASES)
async def test_temporal_restart(restart: Restart, case_id: str) -> None:
    await restart.tasks[case_id]
