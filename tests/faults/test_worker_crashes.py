"""The worker process dies (SIGKILL) or is stopped for a deploy (SIGTERM) mid-turn.

One SIGKILL serves all four kill points, each in its own conversation, so the suite sits
out the stream heartbeat timeout once instead of four times. Every point is reached by
waiting for a condition on the real system, then the worker is killed at once:

- *after the message POST, before the first heartbeat*: the proxy withholds the answer to
  this conversation's POST, so the API has accepted the message (``messages_accepted``
  is 1) while the worker has seen no byte of the stream, not even the run id; the kill
  comes well inside the first heartbeat interval (checked on the server: the pending
  activity has no heartbeat details).
- *mid-stream*: the run has delivered several events (E3 ``last_event.seq_num``) and
  is still running.
- *just after a confirmation pause*: the workflow reports ``awaiting_approval``; the
  decision then arrives (as a signal) while no worker runs.
- *after the decision POST, before the resume segment*, twice: once with the proxy
  withholding the answer to the decision POST (the API has applied it, the decision
  activity is still waiting), and once after the decision activity has completed while E8
  and E9 answer 503 for the conversation, so the resume segment cannot make progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from genie_api import ConversationDetail
from tests.faults._harness import (
    GENIE,
    QUERY_EVERY,
    USER,
    Conversation,
    FaultStack,
    case,
    register_case,
    wait_until,
)
from workflows import GenieConversation, SkillDecision
from workflows.conversation import STREAM_HEARTBEAT_TIMEOUT

SIGKILL_CASES = [
    register_case(
        "kill_after_post", "sigkill", "after the message POST, before the first heartbeat"
    ),
    register_case("kill_mid_stream", "sigkill", "mid-stream"),
    register_case(
        "kill_at_pause",
        "sigkill",
        "just after a confirmation pause (the decision arrives while no worker runs)",
    ),
    register_case(
        "kill_during_decision_post",
        "sigkill",
        "after the decision POST, before its answer (the resume segment posting it in flight)",
    ),
    register_case(
        "kill_after_decision",
        "sigkill",
        "after the decision POST, before the resume segment could deliver (E8/E9 refusing)",
    ),
]


@dataclass
class Killed:
    """One conversation as the SIGKILL left it."""

    conv: Conversation
    turn: int
    call_id: str | None = None
    note: str = ""


async def _e3(stack: FaultStack, conv: Conversation) -> ConversationDetail:
    return await stack.genie.get_conversation(GENIE, conv.conversation_id, user_id=USER)


async def _pending_activities(stack: FaultStack, conv: Conversation) -> list[str]:
    desc = await stack.api.handle(conv.wid).describe()
    return [a.activity_type.name for a in desc.raw_description.pending_activities]


@dataclass
class KillRound:
    killed: dict[str, Killed]
    killed_at: float
    tasks: dict[str, asyncio.Task[None]]


@pytest.fixture(scope="module")
async def kill_round(stack: FaultStack) -> AsyncIterator[KillRound]:
    api = stack.api
    after_post, mid, pause, after_decision, in_decision = await asyncio.gather(
        *(stack.conversation() for _ in range(5))
    )

    # After the decision POST, before its answer: the API applies the decision, the worker
    # never hears back, so the resume segment that posts it is still in flight at the kill.
    res = await api.ask(in_decision.wid, "confirm:send_invoice")
    assert res.status == "awaiting_approval", res
    in_decision_call = res.pending.approvals[0].call_id
    decision_marker = (
        f"POST /api/v1/genies/{GENIE}/chat/conversations/{in_decision.conversation_id}"
        f"/skill_approval/{in_decision_call} "
    ).encode()
    stack.proxy.hold(decision_marker)
    await api.approve(in_decision.wid, in_decision_call, approver="ops")
    await wait_until(
        lambda: stack.conv_stats_async(in_decision),
        lambda s: s["skill_decisions_applied"] == {in_decision_call: 1},
        what="the API to apply the decision",
    )

    # After the decision POST, before the resume segment: E8 and E9 refuse, so the resume
    # segment that follows the decision cannot deliver anything.
    res = await api.ask(after_decision.wid, "confirm:send_report steps:2")
    assert res.status == "awaiting_approval", res
    decision_call = res.pending.approvals[0].call_id
    stack.fault(after_decision, "reconnect", status=503, times=100_000)
    stack.fault(after_decision, "events", status=503, times=100_000)
    await api.approve(after_decision.wid, decision_call, approver="ops")
    await wait_until(
        lambda: stack.conv_stats_async(after_decision),
        lambda s: s["skill_decisions_applied"] == {decision_call: 1},
        what="the API to apply the decision",
    )
    await wait_until(
        lambda: _pending_activities(stack, after_decision),
        lambda acts: acts == ["stream_segment"],
        what="the decision activity to complete and the resume segment to start",
        every=QUERY_EVERY,
    )

    # Mid-stream: a slow run, several events in.
    mid_turn = (await api.send(mid.wid, "delay:500 steps:10")).turn
    await wait_until(
        lambda: _e3(stack, mid),
        lambda d: d.last_event is not None and (d.last_event.seq_num or 0) >= 3,
        what="the run to be mid-stream",
    )

    # Just after a confirmation pause.
    res = await api.ask(pause.wid, "confirm:send_email")
    assert res.status == "awaiting_approval", res
    pause_call = res.pending.approvals[0].call_id

    # After the POST, before any answer reached the worker: kill the moment the API has it.
    marker = (
        f"POST /api/v1/genies/{GENIE}/chat/conversations/{after_post.conversation_id}/messages "
    ).encode()
    stack.proxy.hold(marker)
    post_turn = (await api.send(after_post.wid, "delay:200 steps:3")).turn
    await wait_until(
        lambda: stack.conv_stats_async(after_post),
        lambda s: s["messages_accepted"] == 1,
        what="the API to accept the message",
        every=0.005,
    )
    stack.worker.kill()
    killed_at = time.monotonic()

    # Confirm each placement held at the moment of the kill, from the server's view.
    desc = await api.handle(after_post.wid).describe()
    (segment,) = desc.raw_description.pending_activities
    assert segment.activity_type.name == "stream_segment"
    assert not segment.heartbeat_details.payloads, "a heartbeat was recorded before the kill"
    assert marker in stack.proxy.held
    assert decision_marker in stack.proxy.held
    assert await _pending_activities(stack, in_decision) == ["stream_segment"]
    mid_e3 = await _e3(stack, mid)
    assert mid_e3.state != "idle" and mid_e3.last_event is not None, mid_e3
    mid_seq = mid_e3.last_event.seq_num

    # While no worker runs: the approver decides (a signal needs no worker), and the API's
    # E8/E9 recover for the stuck resume segment.
    stack.proxy.release(marker)
    stack.proxy.release(decision_marker)
    stack.sim.clear_faults()
    # Two approvers at once: both signals land in the same workflow task on restart.
    for approver in ("ops", "ops-2"):
        await api.handle(pause.wid).signal(
            GenieConversation.skill_decision,
            SkillDecision(call_id=pause_call, approved=True, approver=approver),
        )
    await stack.worker.start()

    killed = {
        "kill_after_post": Killed(after_post, post_turn, note="no heartbeat yet"),
        "kill_mid_stream": Killed(mid, mid_turn, note=f"at event {mid_seq} of 13"),
        "kill_at_pause": Killed(pause, 1, pause_call),
        "kill_during_decision_post": Killed(in_decision, 1, in_decision_call),
        "kill_after_decision": Killed(after_decision, 1, decision_call),
    }
    rnd = KillRound(killed, killed_at, {})
    rnd.tasks = {cid: asyncio.create_task(CHECKS[cid](stack, rnd), name=cid) for cid in killed}
    yield rnd
    for t in rnd.tasks.values():
        t.cancel()
    await asyncio.gather(*rnd.tasks.values(), return_exceptions=True)


async def _recovered(
    stack: FaultStack, rnd: KillRound, cid: str, decision_posts: int = 1
) -> tuple[Killed, float]:
    k = rnd.killed[cid]
    result = await stack.finish(k.conv, k.turn, within=90)
    took = time.monotonic() - rnd.killed_at
    await stack.check_turn(k.conv, result)
    if k.call_id is not None:
        await stack.check_decisions(k.conv, {k.call_id: 1}, posts={k.call_id: decision_posts})
        assert result.reply is not None and "You said" in result.reply, result
    await stack.check_secrets(k.conv)
    return k, took


def _segment_history(attempts: list[tuple[str, int, str | None]]) -> str:
    return "; ".join(
        f"segment attempt {n}" + (f" after {why}" if why else "") for _, n, why in attempts
    )


async def _stream_attempts(
    stack: FaultStack, conv: Conversation
) -> list[tuple[str, int, str | None]]:
    return [
        (a.activity, a.attempt, a.previous_failure)
        for a in await stack.activity_attempts(conv)
        if a.activity == "stream_segment"
    ]


async def _check_kill_after_post(stack: FaultStack, rnd: KillRound) -> None:
    k, took = await _recovered(stack, rnd, "kill_after_post")
    result = await stack.api.wait(k.conv.wid, k.turn)
    assert result.messages == [f"step {i} of 3" for i in range(1, 4)] + [
        "You said: delay:200 steps:3"
    ]
    (seg,) = await _stream_attempts(stack, k.conv)
    assert seg[1] == 2 and seg[2] == "timeout:heartbeat", seg
    # The retry knew nothing of the first attempt's POST and asked the API (E3) first.
    reconciled = f"of {k.conv.conversation_id}: message already posted"
    assert reconciled in stack.worker.log_text()
    stack.record(
        "kill_after_post",
        f"completed {took:.0f} s after the kill (heartbeat timeout "
        f"{STREAM_HEARTBEAT_TIMEOUT.total_seconds():.0f} s); the retry, with no heartbeat to "
        "go on, found the accepted run via E3 and resumed it instead of posting again: "
        "1 POST, 4/4 messages once, in order",
    )


async def _check_kill_mid_stream(stack: FaultStack, rnd: KillRound) -> None:
    k, took = await _recovered(stack, rnd, "kill_mid_stream")
    result = await stack.api.wait(k.conv.wid, k.turn)
    assert result.messages == [f"step {i} of 10" for i in range(1, 11)] + [
        "You said: delay:500 steps:10"
    ]
    (seg,) = await _stream_attempts(stack, k.conv)
    assert seg[1] == 2 and seg[2] == "timeout:heartbeat", seg
    stack.record(
        "kill_mid_stream",
        f"killed {k.note}; completed {took:.0f} s after the kill: the retry resumed from the "
        "heartbeat cursor: 1 POST, 11/11 messages once, in order",
    )


async def _check_kill_at_pause(stack: FaultStack, rnd: KillRound) -> None:
    k, took = await _recovered(stack, rnd, "kill_at_pause")
    segs = await _stream_attempts(stack, k.conv)
    assert [n for _, n, _ in segs] == [1, 1], segs
    st = await stack.api.status(k.conv.wid)
    audit = [a for a in st.audit if a.ref == k.call_id and a.kind == "skill_decision"]
    assert [(a.actor, a.accepted) for a in audit] == [("ops", True), ("ops-2", False)], audit
    applied = [a for a in st.audit if a.ref == k.call_id and a.kind == "decision_applied"]
    assert [a.actor for a in applied] == ["ops"], st.audit
    stack.record(
        "kill_at_pause",
        f"completed {took:.0f} s after the kill: nothing was in flight; of the two approvals "
        "signalled while no worker ran, the first was applied on restart and the second "
        "audited as AlreadyDecided: decision posted once, 1 POST",
    )


async def _check_kill_after_decision(stack: FaultStack, rnd: KillRound) -> None:
    k, took = await _recovered(stack, rnd, "kill_after_decision")
    segs = await _stream_attempts(stack, k.conv)
    assert len(segs) == 2 and segs[1][1] >= 2, segs
    stack.record(
        "kill_after_decision",
        f"completed {took:.0f} s after the kill: the resume segment was retried from the "
        f"pause cursor ({_segment_history(segs[1:])}); decision posted once, not re-sent",
    )


async def _check_kill_during_decision_post(stack: FaultStack, rnd: KillRound) -> None:
    # One post: the retry, with no heartbeat to say the post was made, asked the API
    # (E3, E6) first, saw the run past the pause, and did not post again.
    k, took = await _recovered(stack, rnd, "kill_during_decision_post", decision_posts=1)
    # The decision is posted by the resume segment (one activity): the send, then the
    # resume, retried once after its heartbeat timeout. No separate decision activity.
    acts = await stack.activity_attempts(k.conv)
    assert "post_skill_decision" not in {a.activity for a in acts}, acts
    segs = [(a.attempt, a.previous_failure) for a in acts if a.activity == "stream_segment"]
    assert segs[1:] == [(2, "timeout:heartbeat")], segs
    assert f"for call {k.call_id}: the run moved past the pause" in stack.worker.log_text()
    stack.record(
        "kill_during_decision_post",
        f"completed {took:.0f} s after the kill: the resume segment that posts the decision "
        "was retried after its heartbeat timeout, found the run past the pause (E3) and "
        "did not post again (applied once, posted once) and finished the run",
    )


CHECKS = {
    "kill_during_decision_post": _check_kill_during_decision_post,
    "kill_after_post": _check_kill_after_post,
    "kill_after_decision": _check_kill_after_decision,
    "kill_at_pause": _check_kill_at_pause,
    "kill_mid_stream": _check_kill_mid_stream,
}


@pytest.mark.parametrize("case_id", SIGKILL_CASES)
async def test_sigkill(kill_round: KillRound, case_id: str) -> None:
    await kill_round.tasks[case_id]


@case("sigterm", "mid-stream: the segment checkpoints and hands over at once")
async def case_sigterm_mid_stream(stack: FaultStack) -> None:
    conv = await stack.conversation()
    text = "delay:300 steps:10"
    turn = (await stack.api.send(conv.wid, text)).turn
    await wait_until(
        lambda: _e3(stack, conv),
        lambda d: d.last_event is not None and (d.last_event.seq_num or 0) >= 4,
        what="the run to be mid-stream",
    )
    t0 = time.monotonic()
    rc = await stack.worker.terminate()
    stopped = time.monotonic() - t0
    await stack.worker.start()
    result = await stack.finish(conv, turn)
    took = time.monotonic() - t0
    await stack.check_turn(conv, result)
    assert result.messages == [f"step {i} of 10" for i in range(1, 11)] + [f"You said: {text}"]
    assert rc == 0, stack.worker.log_tail()
    (seg,) = await _stream_attempts(stack, conv)
    # Handed over by failing fast, not found dead by the heartbeat timeout.
    assert seg[1] == 2 and seg[2] == "WorkerShutdown", seg
    await stack.check_secrets(conv)
    stack.record(
        "sigterm_mid_stream",
        f"worker exited 0 in {stopped:.1f} s; the segment failed fast with WorkerShutdown "
        f"and the restarted worker resumed it from the cursor (no heartbeat timeout); "
        f"completed {took:.0f} s after SIGTERM: 1 POST, 11/11 messages once, in order",
    )


@pytest.mark.parametrize("case_id", ["sigterm_mid_stream"])
async def test_sigterm(stack: FaultStack, case_id: str) -> None:
    await case_sigterm_mid_stream(stack)
