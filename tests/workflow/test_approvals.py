"""Skill confirmations: approve, reject, time out, decide early, refuse bad decisions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowFailureError

from genie_api import GenieClient
from geniectl import Refused
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.workflow.helpers import USER, convs, eventually, start, wait_state
from worker import build_worker
from workflows import ConversationPolicy, GenieConversation, SkillDecision, errors


async def _paused(api, wid: str, text: str = "please confirm:send_email"):
    accepted = await api.send(wid, text)
    res = await api.wait(wid, accepted.turn)
    assert res.status == "awaiting_approval", res
    (pending,) = res.pending.approvals
    return accepted.turn, pending


async def test_approved_skill_runs_and_the_decision_is_audited(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    turn, pending = await _paused(api, wid)
    assert pending.skill_name == "send_email" and pending.call_id
    st = await api.status(wid)
    assert st.state == "awaiting_approval" and st.awaiting_since is not None
    assert [p.call_id for p in st.pending_approvals] == [pending.call_id]
    desc = await api.handle(wid).describe()
    assert desc.typed_search_attributes  # GenieState is set (checked precisely in test_ops)

    rec = await api.approve(wid, pending.call_id, approver="alice", reason="looks right")
    assert (rec.id, rec.decision, rec.decided_by) == (pending.call_id, "approved", "alice")
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    assert done.reply is not None and "send_email" in done.reply
    st = await api.status(wid)
    assert st.state == "idle" and not st.pending_approvals
    entry = next(a for a in st.audit if a.ref == pending.call_id)
    assert (entry.actor, entry.decision, entry.via, entry.accepted) == (
        "alice",
        "approved",
        "update",
        True,
    )
    conv = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["skill_decision_posts"] == {pending.call_id: 1}
    assert conv["messages_accepted"] == 1


async def test_rejected_skill_does_not_run_and_the_reason_reaches_the_genie(
    client: Client, task_queue: str
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    turn, pending = await _paused(api, wid)
    await api.reject(wid, pending.call_id, approver="bob", reason="wrong recipient")
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    assert done.reply is not None and "wrong recipient" in done.reply


async def test_two_confirmations_in_one_run(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    turn, first = await _paused(api, wid, "confirm:a_skill confirm:b_skill")
    await api.approve(wid, first.call_id, approver="alice")
    res = await api.wait(wid, turn)
    assert res.status == "awaiting_approval"
    (second,) = res.pending.approvals
    assert second.call_id != first.call_id and second.skill_name == "b_skill"
    await api.approve(wid, second.call_id, approver="alice")
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"


async def test_a_decision_can_wait_for_its_turn_in_one_update(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    """``wait_for`` on the decision: "approve and give me the reply" is one round trip
    and one update in history, and with ``attention`` the next pause answers it."""
    api = convs(client, task_queue)
    wid = await start(api)
    turn, first = await _paused(api, wid, "confirm:a_skill confirm:b_skill")
    rec = await api.approve(wid, first.call_id, approver="alice", wait_for="attention")
    assert (rec.id, rec.decision) == (first.call_id, "approved")
    assert rec.result is not None and rec.result.status == "awaiting_approval"
    (second,) = [p for p in rec.result.pending.approvals if p.decision is None]
    assert second.skill_name == "b_skill"
    updates_before = await _updates(api, wid)
    rec = await api.reject(
        wid, second.call_id, approver="alice", reason="not today", wait_for="completion"
    )
    assert rec.result is not None and rec.result.status == "completed"
    assert rec.result.turn == turn and rec.result.reply and "not today" in rec.result.reply
    assert await _updates(api, wid) == updates_before + 1  # no wait_turn after it
    # Without wait_for, nothing changes: the answer comes as soon as it is recorded.
    turn2, third = await _paused(api, wid)
    rec = await api.approve(wid, third.call_id, approver="alice")
    assert rec.result is None
    done = await api.wait(wid, turn2, wait_for="completion")
    assert done.status == "completed"
    conv = sim.stats()["conversations"][(await api.status(wid)).conversation_id]  # type: ignore[index]
    assert conv["skill_decision_posts"] == {first.call_id: 1, second.call_id: 1, third.call_id: 1}


async def test_two_deciders_racing_and_waiting(client: Client, task_queue: str) -> None:
    """Both ask to wait; one decision counts and returns the finished turn, the other is
    refused at once (it does not wait), and the API saw one post."""
    api = convs(client, task_queue)
    wid = await start(api)
    _, pending = await _paused(api, wid)
    outcomes = await asyncio.gather(
        api.approve(wid, pending.call_id, approver="alice", wait_for="completion"),
        api.reject(wid, pending.call_id, approver="bob", wait_for="completion"),
        return_exceptions=True,
    )
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, Refused)]
    assert len(done) == 1 and len(refused) == 1, outcomes
    assert refused[0].type == errors.ALREADY_DECIDED
    assert done[0].result is not None and done[0].result.status == "completed"


async def test_the_resume_segment_posts_the_decision(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    """One activity posts the decision and streams on; if it cannot post, the decision
    is posted on its own (``post_skill_decision``) and the turn goes on as before."""
    api = convs(client, task_queue)
    wid = await start(api)
    _, first = await _paused(api, wid)
    rec = await api.approve(wid, first.call_id, approver="alice", wait_for="completion")
    assert rec.result is not None and rec.result.status == "completed"
    assert await _activities(api, wid) == ["stream_segment", "stream_segment"]

    # The API answers the segment's post with a 503: the segment streams nothing and
    # fails at once, and the decision activity posts it.
    conv = (await api.status(wid)).conversation_id
    _, second = await _paused(api, wid)
    sim.fault(endpoint="skill_approval", status=503, times=1, conversation_id=conv)
    rec = await api.approve(wid, second.call_id, approver="alice", wait_for="completion")
    assert rec.result is not None and rec.result.status == "completed", rec.result
    assert rec.result.reply and "send_email" in rec.result.reply
    assert (await _activities(api, wid))[2:] == [
        "stream_segment",
        "stream_segment",
        "post_skill_decision",
        "stream_segment",
    ]
    stats = sim.stats()["conversations"][conv]  # type: ignore[index]
    assert stats["skill_decisions_applied"] == {first.call_id: 1, second.call_id: 1}
    st = await api.status(wid)
    applied = [a.ref for a in st.audit if a.kind == "decision_applied"]
    assert applied == [first.call_id, second.call_id]


async def test_an_end_while_the_decision_streams_does_not_post_it_again(
    client: Client, task_queue: str, sim: SimProcess, genie: GenieClient
) -> None:
    """The conversation ends while the resume segment that posted the decision streams.
    The segment is cancelled, so the workflow posts the decision on its own, told it may
    have been posted: it finds the run past the pause and counts the decision applied
    without a second post (production answers a repeat with a 409 that reads as a
    refusal)."""
    api = convs(client, task_queue)
    wid = await start(api)
    _, pending = await _paused(api, wid, "please confirm:send_email delay:200 steps:30")
    conv = (await api.status(wid)).conversation_id
    assert conv is not None
    await api.approve(wid, pending.call_id, approver="alice")
    await eventually(
        lambda: genie.get_conversation("gin-test-genie", conv, user_id=USER),
        lambda d: (
            d.last_event is not None
            and d.last_event.type not in ("skill.confirmation_required", "system.ping")
        ),
        what="the run past the pause at the API",
    )
    await api.end(wid, "done here")
    st = await wait_state(api, wid, "ended")
    applied = [
        a.actor for a in st.audit if a.kind == "decision_applied" and a.ref == pending.call_id
    ]
    assert applied == ["alice"], st.audit
    assert not any(a.kind == "decision_failed" for a in st.audit), st.audit
    stats = sim.stats()["conversations"][conv]  # type: ignore[index]
    assert stats["skill_decision_posts"] == {pending.call_id: 1}
    assert "post_skill_decision" in await _activities(api, wid)


async def _activities(api, wid: str) -> list[str]:
    history = await api.handle(wid).fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name
        not in ("deployment", "create_conversation")
    ]


async def _updates(api, wid: str) -> int:
    history = await api.handle(wid).fetch_history()
    return sum(
        e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events
    )


async def test_approval_timeout_rejects_by_default(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=ConversationPolicy(approval_timeout=timedelta(seconds=1)))
    turn, pending = await _paused(api, wid)
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    assert done.reply is not None and "approval timed out" in done.reply
    st = await api.status(wid)
    kinds = [(a.kind, a.ref, a.via) for a in st.audit]
    assert ("approval_timeout", pending.call_id, "policy") in kinds
    # A decision after the deadline is refused as already decided.
    with pytest.raises(Refused) as e:
        await api.approve(wid, pending.call_id, approver="alice")
    assert e.value.type == errors.ALREADY_DECIDED


async def test_approval_timeout_can_fail_the_workflow(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    policy = ConversationPolicy(approval_timeout=timedelta(seconds=1), on_approval_timeout="fail")
    wid = await start(api, policy=policy)
    await api.send(wid, "confirm:wire_money")
    with pytest.raises(WorkflowFailureError) as e:
        await api.handle(wid).result()
    assert e.value.cause.type == errors.APPROVAL_TIMED_OUT  # type: ignore[attr-defined]


async def test_unknown_call_id_is_refused_by_update_and_audited_from_a_signal(
    client: Client, task_queue: str
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    turn, pending = await _paused(api, wid)
    with pytest.raises(Refused) as e:
        await api.approve(wid, "call_does_not_exist", approver="alice")
    assert e.value.type == errors.UNKNOWN_CALL_ID
    assert pending.call_id in e.value.message  # the refusal names what *is* pending

    await api.handle(wid).signal(
        GenieConversation.skill_decision,
        SkillDecision(call_id="call_bogus", approved=True, approver="mallory"),
    )
    st = await eventually(
        lambda: api.status(wid),
        lambda s: any(a.ref == "call_bogus" for a in s.audit),
        what="audited signal",
    )
    entry = next(a for a in st.audit if a.ref == "call_bogus")
    assert entry.accepted is False and entry.via == "signal"
    assert entry.refusal is not None and entry.refusal.startswith(errors.UNKNOWN_CALL_ID)
    assert st.state == "awaiting_approval"  # the bogus signal changed nothing
    await api.approve(wid, pending.call_id, approver="alice")
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


async def test_duplicate_decision_is_refused(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    turn, pending = await _paused(api, wid)
    await api.approve(wid, pending.call_id, approver="alice")
    with pytest.raises(Refused) as e:
        await api.reject(wid, pending.call_id, approver="alice")
    assert e.value.type == errors.ALREADY_DECIDED
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


async def test_approver_allow_list(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=ConversationPolicy(approvers=["alice"]))
    turn, pending = await _paused(api, wid)
    with pytest.raises(Refused) as e:
        await api.approve(wid, pending.call_id, approver="bob")
    assert e.value.type == errors.APPROVER_NOT_ALLOWED
    await api.approve(wid, pending.call_id, approver="alice")
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


async def test_early_decision_where_opted_in_is_applied_when_the_pause_shows(
    client: Client, task_queue: str, sim: SimProcess, genie: GenieClient
) -> None:
    """The workflow cannot see the pause (its stream is cut and every recovery path
    fails), but the approver already knows the call id. Where the conversation opted in
    (``allow_early_decisions``), the decision is kept and used the moment the pause shows
    up, so the turn never waits for a human."""
    api = convs(client, task_queue)
    wid = await start(api, policy=ConversationPolicy(allow_early_decisions=True))
    # The API conversation is created with the first turn.
    first = await api.ask(wid, "hello", wait_for="completion")
    assert first.status == "completed"
    conv_id = (await wait_state(api, wid, "idle")).conversation_id
    assert conv_id is not None
    sim.fault(endpoint="send_message", conversation_id=conv_id, drop_after_events=1)
    for endpoint in ("reconnect", "events"):
        sim.fault(endpoint=endpoint, conversation_id=conv_id, status=503, times=100_000)
    accepted = await api.send(wid, "confirm:send_email")
    detail = await eventually(
        lambda: genie.get_conversation("gin-test-genie", conv_id, user_id=USER),
        lambda d: d.last_event is not None and d.last_event.type == "skill.confirmation_required",
        what="the pause at the API",
    )
    call_id = detail.last_event.call_id  # type: ignore[union-attr]
    assert (await api.status(wid)).state == "running"  # the workflow has not seen it
    await api.handle(wid).signal(
        GenieConversation.skill_decision,
        SkillDecision(call_id=call_id, approved=True, approver="early-bird"),
    )
    sim.clear_faults()
    done = await api.wait(wid, accepted.turn, wait_for="completion")
    assert done.status == "completed"
    st = await api.status(wid)
    entry = next(a for a in st.audit if a.ref == call_id)
    assert (entry.actor, entry.accepted) == ("early-bird", True)
    assert sim.stats()["conversations"][conv_id]["skill_decision_posts"] == {call_id: 1}  # type: ignore[index]


async def test_a_refused_update_is_audited_for_good(
    client: Client, sim: SimProcess, genie: GenieClient
) -> None:
    """A refused ``decide_skill`` is in history, so its audit entry survives the worker
    that refused it: a new worker, replaying from scratch, shows the same trail."""
    tq = f"test-audit-{uuid.uuid4()}"
    api = convs(client, tq)
    async with build_worker(client, worker_settings(sim), genie, task_queue=tq):
        wid = await start(api, policy=ConversationPolicy(approvers=["alice"]))
        _, pending = await _paused(api, wid)
        with pytest.raises(Refused) as e:
            await api.approve(wid, pending.call_id, approver="mallory")
        assert e.value.type == errors.APPROVER_NOT_ALLOWED
        before = [a for a in (await api.status(wid)).audit if a.actor == "mallory"]
        assert len(before) == 1 and not before[0].accepted, before
    async with build_worker(client, worker_settings(sim), genie, task_queue=tq):
        after = [a for a in (await api.status(wid)).audit if a.actor == "mallory"]
        assert after == before
