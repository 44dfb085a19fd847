"""Faults nobody scripted: what a hostile client and a flaky network found (issue 9).

Each case reproduces one way the promise "lose nothing, repeat nothing, never stick" broke,
against the real worker process, dev server and simulator:

- a decision the API does not take at once (an outage, a final refusal) stays pending,
  is retried for as long as the policy allows, and can be decided again if refused;
- bad input of every kind fails fast with a typed error, never a stuck workflow task;
- state and query answers stay bounded under floods and maximum-size turns;
- a false "connection done" is caught; an end always ends, within seconds;
- an API outage of minutes is ridden out, with the card saying so;
- refusals are all audited, coalesced, and never push a real decision out.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from genie_stack import WorkerProcess
from geniectl import Refused
from tests.faults._harness import (
    GENIE,
    QUERY_EVERY,
    USER,
    Conversation,
    FaultStack,
    case,
    cases_of,
    wait_until,
    worker_env,
)
from workflows import (
    ConversationPolicy,
    ConversationStatus,
    GenieConversation,
    SkillDecision,
    errors,
)
from workflows.models import MAX_ID_CHARS


async def _status(
    stack: FaultStack, conv: Conversation, check: Any, what: str
) -> ConversationStatus:
    return await wait_until(
        lambda: stack.api.status(conv.wid), check, what=what, within=240, every=QUERY_EVERY * 5
    )


async def _task_failures(stack: FaultStack, wid: str) -> int:
    n = 0
    async for ev in stack.api.handle(wid).fetch_history_events():
        n += ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    return n


# ---------------------------------------------------------------------- decision posts


@case("trust", "decision posted while the API answers 503 for 100 s")
async def case_decision_post_outage(stack: FaultStack) -> None:
    conv, call = await stack.paused()
    stack.fault(conv, "skill_approval", status=503, for_seconds=100)
    await stack.api.approve(conv.wid, call, approver="alice")
    st = await _status(
        stack,
        conv,
        lambda s: (
            bool(s.pending_approvals)
            and s.pending_approvals[0].decision is not None
            and s.pending_approvals[0].decision.last_error is not None
        ),
        "the decision shown as posting, with its last error",
    )
    posting = st.pending_approvals[0].decision
    assert posting is not None and posting.state == "posting" and posting.actor == "alice"
    # Another decider meanwhile is refused: the decision is taken, just not applied yet.
    with pytest.raises(Refused) as refused:
        await stack.api.reject(conv.wid, call, approver="bob")
    assert refused.value.type == errors.ALREADY_DECIDED
    result = await stack.finish(conv, 1, within=300)
    assert result.status == "completed", result
    st = await stack.api.status(conv.wid)
    assert st.api_unreachable_since is None and not st.pending_approvals
    assert any(a.kind == "decision_applied" and a.ref == call for a in st.audit)
    assert stack.conv_stats(conv)["skill_decisions_applied"] == {call: 1}
    assert await _task_failures(stack, conv.wid) == 0
    stack.record(
        "decision_post_outage",
        f"the approval stayed pending as 'posting' (last error shown) through a 100 s "
        f"outage, was applied once afterwards ({posting.attempts}+ retries shown on the card)",
    )


@case("trust", "decision refused for good by the API (401), then decided again")
async def case_decision_refused(stack: FaultStack) -> None:
    conv, call = await stack.paused()
    stack.fault(conv, "skill_approval", status=401, times=1)
    await stack.api.approve(conv.wid, call, approver="alice")
    st = await _status(
        stack,
        conv,
        lambda s: (
            bool(s.pending_approvals)
            and s.pending_approvals[0].decision is None
            and s.pending_approvals[0].note is not None
        ),
        "the approval handed back with a note",
    )
    note = st.pending_approvals[0].note or ""
    assert "401" in note and "decide again" in note, note
    assert st.state == "awaiting_approval", st
    assert any(a.kind == "decision_failed" and a.ref == call for a in st.audit)
    await stack.api.approve(conv.wid, call, approver="bob")
    result = await stack.finish(conv, 1)
    assert result.status == "completed", result
    await stack.check_decisions(conv, {call: 1}, posts={call: 2})
    stack.record(
        "decision_refused",
        "a 401 on the decision post handed the item back (pending, with the API's answer "
        "as a note); a second approver's decision was then applied once",
    )


# ---------------------------------------------------------------------- deadlines


@case("trust", "decision 3 s after the deadline, handled with the fired timer in one task")
async def case_late_after_deadline(stack: FaultStack) -> None:
    # No worker may run at the deadline, so the timer and the decision meet in one
    # workflow task: a worker of our own on a private task queue, stopped in between.
    policy = ConversationPolicy(approval_timeout=timedelta(seconds=6))
    reject = await _own_worker_case(stack, policy, "signal")
    update = await _own_worker_case(stack, policy, "update")
    for outcome in (reject, update):
        assert outcome["reply_has_timeout"], outcome
    fail_policy = policy.model_copy(update={"on_approval_timeout": "fail"})
    failed = await _own_worker_case(stack, fail_policy, "signal")
    assert failed["workflow_failed"] == errors.APPROVAL_TIMED_OUT, failed
    stack.record(
        "late_after_deadline",
        "a decision arriving after the deadline (timer and decision in one task) was "
        "refused DeadlineExpired (signal audited, update rejected); the timeout action "
        "(reject, or fail the workflow) happened instead",
    )


async def _own_worker_case(
    stack: FaultStack, policy: ConversationPolicy, via: str
) -> dict[str, Any]:
    tq = f"late-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        api_base_url=stack.sim.base_url,
        temporal_address=stack.temporal.address,
        task_queue=tq,
        attachments=stack.attachments,
    )
    worker = WorkerProcess(env=env, log_path=stack.attachments.parent / f"{tq}.log")
    api = type(stack.api)(stack.client, task_queue=tq)
    await worker.start()
    try:
        wid = f"late-{uuid.uuid4().hex[:12]}"
        await api.start(GENIE, USER, workflow_id=wid, policy=policy)
        res = await api.ask(wid, "confirm:wire_money")
        assert res.status == "awaiting_approval", res
        p = res.pending.approvals[0]
        worker.kill()
        await asyncio.sleep(max(0.0, (p.deadline - _now()).total_seconds()) + 3)
        update_task = None
        if via == "signal":
            await api.handle(wid).signal(
                GenieConversation.skill_decision,
                SkillDecision(call_id=p.call_id, approved=True, approver="late"),
            )
        else:
            update_task = asyncio.create_task(api.approve(wid, p.call_id, approver="late"))
            # The SDK cannot wait for "admitted" (only "accepted", which needs a worker), so
            # give the update a moment to reach the server before the worker's first task.
            # Arriving later would still be after the deadline and refused the same way.
            await asyncio.sleep(1)
        await worker.start()
        out: dict[str, Any] = {}
        if update_task is not None:
            with pytest.raises(Refused) as refused:
                await update_task
            assert refused.value.type == errors.DEADLINE_EXPIRED, refused.value
        if policy.on_approval_timeout == "fail":
            with pytest.raises(WorkflowFailureError) as failed:
                await asyncio.wait_for(api.handle(wid).result(), 60)
            cause = failed.value.cause
            out["workflow_failed"] = (
                cause.type if isinstance(cause, ApplicationError) else str(cause)
            )
            return out
        done = await api.wait(wid, 1, wait_for="completion")
        out["reply_has_timeout"] = bool(done.reply and "approval timed out" in done.reply)
        st = await api.status(wid)
        late = [a for a in st.audit if a.actor == "late"]
        assert late and not late[0].accepted, st.audit
        assert (late[0].refusal or "").startswith(errors.DEADLINE_EXPIRED), late
        assert not any(a.accepted and a.actor == "late" for a in st.audit)
        return out
    finally:
        await worker.terminate()


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------- bad input


RAW_STARTS: dict[str, dict[str, Any]] = {
    "wrong type": {"genie_handle": 5, "user_id": USER},
    "missing user": {"genie_handle": GENIE},
    "duration out of range": {
        "genie_handle": GENIE,
        "user_id": USER,
        "policy": {"approval_timeout": "P3000000D"},
    },
    "user over 2 KB": {"genie_handle": GENIE, "user_id": "u" * 2100},
    "user with CR/LF": {"genie_handle": GENIE, "user_id": "a\r\nX-Evil: 1"},
    "user with an emoji": {"genie_handle": GENIE, "user_id": "🙂"},
}


@case("trust", "bad start input, updates and signals from a raw Temporal client")
async def case_bad_input(stack: FaultStack) -> None:
    for name, raw in RAW_STARTS.items():
        wid = f"bad-{uuid.uuid4().hex[:12]}"
        handle = await stack.client.start_workflow(
            "GenieConversation", raw, id=wid, task_queue=stack.worker_task_queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 30)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError), (name, cause)
        assert cause.type == errors.INVALID_INPUT, (name, cause)
        kinds = [e.event_type async for e in handle.fetch_history_events()]
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in kinds, name
        # Nothing was scheduled, so nothing was created at the API.
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds, name

    conv, call = await stack.paused()
    handle = stack.api.handle(conv.wid)
    bad_updates: list[tuple[str, Any]] = [
        ("wait_turn", {"turn": 1, "timeout_seconds": 1e300}),
        ("wait_turn", {"turn": "one"}),
        ("send_message", {"text": 5}),
        ("send_message", {"text": "hi", "client_message_id": "c" * 4096}),
        ("decide_skill", {"call_id": call, "approved": "maybe", "approver": "a"}),
        ("decide_skill", {"call_id": call, "approved": True, "approver": "x" * 1_000_000}),
        ("decide_connection", {"attempt_id": "a", "action": "explode", "actor": "x"}),
        ("refresh_auth_link", {}),
    ]
    for name, arg in bad_updates:
        with pytest.raises(WorkflowUpdateFailedError) as e:
            await handle.execute_update(name, arg)
        assert isinstance(e.value.cause, ApplicationError), (name, e.value.cause)
        assert e.value.cause.type == errors.INVALID_INPUT, (name, e.value.cause)
    for junk in (5, "x", {"call_id": call, "approved": "maybe", "approver": "m"}, None):
        await handle.signal("skill_decision", junk)
    st = await _status(
        stack,
        conv,
        lambda s: sum(a.count for a in s.audit if not a.accepted) >= 4,
        "four malformed signals audited",
    )
    assert st.pending_approvals[0].decision is None, "a bad signal decided something"
    await stack.api.approve(conv.wid, call, approver="alice")
    assert (await stack.finish(conv, 1)).status == "completed"
    assert await _task_failures(stack, conv.wid) == 0
    stack.record(
        "bad_input",
        f"{len(RAW_STARTS)} bad start inputs each failed the workflow at once with "
        f"InvalidInput and created nothing; {len(bad_updates)} bad updates were rejected "
        "InvalidInput; 4 malformed signals were audited and dropped; no workflow task failed",
    )


# ---------------------------------------------------------------------- bounds


@case("trust", "1 MB strings, refusal floods, 60 maximum-size turns across continue-as-new")
async def case_bounds(stack: FaultStack) -> None:
    policy = ConversationPolicy(max_turns_per_run=25)
    conv, call = await stack.paused(policy=policy)
    handle = stack.api.handle(conv.wid)
    for i in range(3):
        await handle.signal(
            "skill_decision", {"call_id": f"g{i}", "approved": True, "approver": "m" * 1_000_000}
        )
    for i in range(299):
        await handle.signal(
            GenieConversation.skill_decision,
            SkillDecision(call_id=f"guess-{i}", approved=True, approver="mallory"),
        )
    await stack.api.approve(conv.wid, call, approver="alice")
    assert (await stack.finish(conv, 1)).status == "completed"
    st = await stack.api.status(conv.wid)
    assert len(st.model_dump_json()) < 200_000, len(st.model_dump_json())
    assert any(a.accepted and a.actor == "alice" for a in st.audit), "the real decision was lost"
    flood = [a for a in st.audit if a.actor == "mallory"]
    assert len(flood) == 1 and flood[0].count == 299, flood
    text = "y" * 12_288
    for i in range(60):
        key = f"{i:03d}".ljust(MAX_ID_CHARS, "k")
        r = await stack.api.ask(conv.wid, text, client_message_id=key, wait_for="completion")
        assert r.status == "completed", r
    transcript = await stack.api.transcript(conv.wid)
    assert transcript.turns and len(transcript.model_dump_json()) < 2_000_000
    st = await stack.api.status(conv.wid)
    assert st.turn == 61 and st.state == "idle", st
    assert (
        await stack.api.send(conv.wid, "z", client_message_id="059".ljust(MAX_ID_CHARS, "k"))
    ).duplicate
    runs = {e.run_id async for e in stack.client.list_workflows(f'WorkflowId = "{conv.wid}"')}
    assert len(runs) >= 3, runs
    assert await _task_failures(stack, conv.wid) == 0
    stack.record(
        "bounds",
        "3 x 1 MB approvers and 299 refused guesses kept status under 200 KB (one entry with "
        "count 299, the real decision kept); 60 maximum-size turns with maximum-size "
        f"dedupe keys crossed {len(runs) - 1} continue-as-new seams; queries and dedupe held",
    )


# ---------------------------------------------------------------------- connections, ending


@case("trust", "'connection done' that the user never completed, then an end")
async def case_false_connection_done(stack: FaultStack) -> None:
    conv = await stack.conversation()
    turn = (await stack.api.send(conv.wid, "connect:jira")).turn
    res = await stack.api.wait(conv.wid, turn)
    assert res.status == "awaiting_connection", res
    attempt = res.pending.connections[0].attempt_id
    await stack.api.connect_done(conv.wid, attempt, actor="ops")
    st = await _status(
        stack,
        conv,
        lambda s: bool(s.pending_connections) and s.pending_connections[0].note is not None,
        "the connection handed back with a note",
    )
    assert "still waits" in (st.pending_connections[0].note or ""), st
    assert st.state == "awaiting_connection"
    link = await stack.api.auth_link(conv.wid, attempt)  # still decidable, still linked
    assert link.attempt_id == attempt
    await stack.api.end(conv.wid, "giving up")
    await asyncio.wait_for(stack.api.handle(conv.wid).result(), 60)
    st = await stack.api.status(conv.wid)
    assert st.state == "ended" and st.ended_reason == "giving up", st
    stack.record(
        "false_connection_done",
        "'done' without the user connecting was checked with the API and put back as "
        "pending with a note; end_conversation then ended it (the connection was rejected)",
    )


@case("trust", "end_conversation while the genie streams a long run")
async def case_end_mid_stream(stack: FaultStack) -> None:
    conv = await stack.conversation()
    turn = (await stack.api.send(conv.wid, "steps:2 delay:80000 steps:2")).turn
    await _status(stack, conv, lambda s: s.state == "running", "the turn running")
    await asyncio.sleep(2)
    await stack.api.end(conv.wid, "stop")
    await asyncio.wait_for(stack.api.handle(conv.wid).result(), 30)
    rec = await stack.turn_record(conv, turn)
    assert rec.status == "cancelled", rec
    stack.record(
        "end_mid_stream",
        "ended within seconds although the run would stream for 80 s: the stream "
        "activity was cancelled and the card says the run may still be active at the API",
    )


# ---------------------------------------------------------------------- outages


@case("trust", "the API down for 150 s in the middle of a stream")
async def case_outage_mid_stream(stack: FaultStack) -> None:
    conv = await stack.conversation()
    stack.fault(conv, "send_message", drop_after_events=2)
    for endpoint in ("reconnect", "events", "get_conversation", "list_messages"):
        stack.fault(conv, endpoint, status=503, for_seconds=150)
    turn = (await stack.api.send(conv.wid, "steps:2 delay:2000 steps:3")).turn
    st = await _status(
        stack,
        conv,
        lambda s: s.api_unreachable_since is not None,
        "the card saying the API is unreachable",
    )
    assert st.state == "running", st
    result = await stack.finish(conv, turn, within=400)
    await stack.check_turn(conv, result)
    st = await stack.api.status(conv.wid)
    assert st.api_unreachable_since is None, st
    assert await _task_failures(stack, conv.wid) == 0
    stack.record(
        "outage_mid_stream",
        "a 150 s outage after the stream dropped was ridden out (card: 'API unreachable "
        "since ..., retrying'); the turn completed with every message once, one POST",
    )


@pytest.mark.slow
@pytest.mark.timeout(600)  # the cases run at once; the longest sits out minutes of outage
@pytest.mark.parametrize("case_id", cases_of(__name__))
async def test_trust(launched: dict[str, asyncio.Task[None]], case_id: str) -> None:
    await launched[case_id]
