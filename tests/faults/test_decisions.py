"""Decisions that must not reach the API (again): duplicates, late, unknown, foreign, unauthorised.

Each bad decision is sent both ways a client can: as the validated update (refused with a
typed error) and as the signal (ignored, recorded in the audit trail as refused). The API's
own counters then show that only the legitimate decision was posted, once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from geniectl import Refused
from tests.faults._harness import (
    QUERY_EVERY,
    Conversation,
    FaultStack,
    case,
    cases_of,
    wait_until,
)
from workflows import (
    AuditEntry,
    ConversationPolicy,
    ConversationStatus,
    GenieConversation,
    SkillDecision,
    errors,
)


async def _refused_both_ways(
    stack: FaultStack, conv: Conversation, call_id: str, approver: str, expected: str
) -> None:
    """The update is refused with ``expected``; the same decision as a signal is audited
    as refused with the same reason."""
    with pytest.raises(Refused) as refused:
        await stack.api.approve(conv.wid, call_id, approver=approver)
    assert refused.value.type == expected, refused.value
    await stack.api.handle(conv.wid).signal(
        GenieConversation.skill_decision,
        SkillDecision(call_id=call_id, approved=True, approver=approver),
    )

    # The signal leaves no other trace than its audit entry: wait for it.
    def audited(st: ConversationStatus) -> list[AuditEntry]:
        return [
            a
            for a in st.audit
            if a.ref == call_id and a.via == "signal" and not a.accepted and a.actor == approver
        ]

    st = await wait_until(
        lambda: stack.api.status(conv.wid),
        lambda st: bool(audited(st)),
        what=f"the refused signal for {call_id} in the audit trail",
        every=QUERY_EVERY,
    )
    entry = audited(st)[-1]
    assert entry.refusal and entry.refusal.startswith(expected), entry


async def _settled(stack: FaultStack, conv: Conversation, turn: int = 1) -> str:
    result = await stack.finish(conv, turn)
    await stack.check_turn(conv, result)
    st = await stack.api.status(conv.wid)
    assert st.state == "idle" and not st.pending_approvals and st.last_error is None, st
    await stack.check_secrets(conv)
    assert result.reply is not None
    return result.reply


@case("decisions", "duplicated: two approvals at once, a repeat, and a repeated signal")
async def case_duplicated(stack: FaultStack) -> None:
    conv, first = await stack.paused("confirm:send_email confirm:book_room")
    # Two approvers at the same moment: exactly one wins, the other is told why.
    outcomes = await asyncio.gather(
        stack.api.approve(conv.wid, first, approver="alice"),
        stack.api.approve(conv.wid, first, approver="bob"),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, Refused)]
    assert len(refused) == 1 and refused[0].type == errors.ALREADY_DECIDED, outcomes
    res = await stack.api.wait(conv.wid, 1)
    assert res.status == "awaiting_approval", res
    second = res.pending.approvals[0].call_id
    await stack.api.approve(conv.wid, second, approver="alice")
    await _refused_both_ways(stack, conv, second, "alice", errors.ALREADY_DECIDED)
    await _refused_both_ways(stack, conv, first, "carol", errors.ALREADY_DECIDED)
    await _settled(stack, conv)
    await stack.check_decisions(conv, {first: 1, second: 1})
    stack.record(
        "duplicated",
        "of two simultaneous approvals one was applied, the other refused AlreadyDecided; "
        "repeats (update and signal) refused/audited; each decision posted once",
    )


@case("decisions", "late: after the approval timed out (policy rejected it)")
async def case_late(stack: FaultStack) -> None:
    policy = ConversationPolicy(approval_timeout=timedelta(seconds=1))
    conv = await stack.conversation(policy=policy)
    result = await stack.api.ask(conv.wid, "confirm:wire_money", wait_for="completion")
    st = await stack.api.status(conv.wid)
    (timeout,) = [a for a in st.audit if a.kind == "approval_timeout"]
    assert timeout.ref is not None
    await _refused_both_ways(stack, conv, timeout.ref, "alice", errors.ALREADY_DECIDED)
    reply = await _settled(stack, conv)
    assert result.reply == reply and "approval timed out" in reply, reply
    await stack.check_decisions(conv, {timeout.ref: 1})
    stack.record(
        "late",
        "the timeout rejected the skill (posted once); the late approval was refused "
        "AlreadyDecided (signal: audited), nothing more reached the API",
    )


@case("decisions", "for an unknown call id")
async def case_unknown(stack: FaultStack) -> None:
    conv, call = await stack.paused()
    await _refused_both_ways(stack, conv, "call_does_not_exist", "alice", errors.UNKNOWN_CALL_ID)
    await stack.api.approve(conv.wid, call, approver="alice")
    await _settled(stack, conv)
    await stack.check_decisions(conv, {call: 1})
    stack.record(
        "unknown",
        "refused UnknownCallId (signal: audited), nothing posted; the real decision then "
        "completed the turn",
    )


@case("decisions", "for an unknown call id while the turn is still running")
async def case_unknown_early(stack: FaultStack) -> None:
    conv = await stack.conversation()
    turn = (await stack.api.send(conv.wid, "delay:2000 steps:3")).turn
    # While the run streams, a guessed call id is refused at once: nobody has been shown
    # a confirmation with it (early decisions need the policy's allow_early_decisions).
    with pytest.raises(Refused) as info:
        await stack.api.approve(conv.wid, "call_early_bogus", approver="al")
    assert info.value.type == errors.UNKNOWN_CALL_ID, info.value
    await stack.api.handle(conv.wid).signal(
        GenieConversation.skill_decision,
        SkillDecision(call_id="call_early_signal", approved=True, approver="al"),
    )
    await _settled(stack, conv, turn)
    st = await stack.api.status(conv.wid)
    refused = {a.ref for a in st.audit if not a.accepted}
    assert {"call_early_bogus", "call_early_signal"} <= refused, st.audit
    await stack.check_decisions(conv, {})
    stack.record(
        "unknown_early",
        "refused UnknownCallId at once while the turn ran (update failed, signal audited); "
        "nothing posted, turn completed",
    )


@case("decisions", "for another conversation's call id")
async def case_other_conversation(stack: FaultStack) -> None:
    (a, call_a), (b, call_b) = await asyncio.gather(stack.paused(), stack.paused())
    await _refused_both_ways(stack, b, call_a, "alice", errors.UNKNOWN_CALL_ID)
    await stack.api.approve(b.wid, call_b, approver="alice")
    await stack.api.approve(a.wid, call_a, approver="alice")
    await asyncio.gather(_settled(stack, a), _settled(stack, b))
    await stack.check_decisions(a, {call_a: 1})
    await stack.check_decisions(b, {call_b: 1})
    stack.record(
        "other_conversation",
        "refused UnknownCallId in the wrong conversation (signal: audited); each "
        "conversation's own decision posted once, to its own conversation",
    )


@case("decisions", "from an approver not allowed by the policy")
async def case_not_allowed(stack: FaultStack) -> None:
    conv, call = await stack.paused(policy=ConversationPolicy(approvers=["alice"]))
    await _refused_both_ways(stack, conv, call, "mallory", errors.APPROVER_NOT_ALLOWED)
    st = await stack.api.status(conv.wid)
    assert st.state == "awaiting_approval", st
    await stack.api.approve(conv.wid, call, approver="alice")
    await _settled(stack, conv)
    await stack.check_decisions(conv, {call: 1})
    stack.record(
        "not_allowed",
        "refused ApproverNotAllowed (signal: audited) and still awaiting; the allowed "
        "approver's decision posted once",
    )


@pytest.mark.parametrize("case_id", cases_of(__name__))
async def test_decision(launched: dict[str, asyncio.Task[None]], case_id: str) -> None:
    await launched[case_id]
