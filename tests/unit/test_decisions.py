"""The decision rules, without a server: who may decide what, when, and what is kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workflows import _decisions as rules
from workflows import errors
from workflows._policy import for_skill
from workflows._state import AUDIT_KEPT, MAX_EARLY_DECISIONS, REFUSALS_KEPT, ConversationData
from workflows.models import (
    ConnectionDecision,
    ConversationPolicy,
    PendingApproval,
    PendingConnection,
    SendMessage,
    SkillDecision,
    SkillRule,
    TurnRecord,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEADLINE = T0 + timedelta(hours=1)


def paused(call_id: str = "c1") -> ConversationData:
    d = ConversationData(conversation_id="conv", state="awaiting_approval")
    d.current = TurnRecord(turn=1, text="hi", status="awaiting_approval")
    d.approvals.append(PendingApproval(call_id=call_id, turn=1, requested_at=T0, deadline=DEADLINE))
    return d


def connecting(attempt_id: str = "a1") -> ConversationData:
    d = ConversationData(conversation_id="conv", state="awaiting_connection")
    d.current = TurnRecord(turn=1, text="hi", status="awaiting_connection")
    d.connections.append(
        PendingConnection(attempt_id=attempt_id, turn=1, requested_at=T0, deadline=DEADLINE)
    )
    return d


def yes(call_id: str = "c1", approver: str = "alice") -> SkillDecision:
    return SkillDecision(call_id=call_id, approved=True, approver=approver)


POLICY = ConversationPolicy()


def refusal_type(r: rules.Refusal | None) -> str | None:
    return r.type if r else None


# ---------------------------------------------------------------------- skill decisions


def test_a_pending_call_may_be_decided_before_its_deadline() -> None:
    assert rules.skill_refusal(paused(), POLICY, yes(), T0) is None


@pytest.mark.parametrize(
    "at", [DEADLINE, DEADLINE + timedelta(seconds=3), DEADLINE + timedelta(days=9)]
)
def test_the_deadline_is_a_hard_line(at: datetime) -> None:
    r = rules.skill_refusal(paused(), POLICY, yes(), at)
    assert refusal_type(r) == errors.DEADLINE_EXPIRED


def test_one_second_before_the_deadline_still_counts() -> None:
    assert rules.skill_refusal(paused(), POLICY, yes(), DEADLINE - timedelta(seconds=1)) is None


def test_a_recorded_decision_is_posting_and_a_second_one_is_refused() -> None:
    d = paused()
    rules.record_skill(d, yes(), "update", T0)
    assert d.approvals[0].decision is not None
    assert d.approvals[0].decision.state == "posting"
    r = rules.skill_refusal(d, POLICY, yes(approver="bob"), T0)
    assert refusal_type(r) == errors.ALREADY_DECIDED
    assert r is not None and "alice" in r.message


def test_applied_decisions_are_remembered_with_who_decided() -> None:
    d = paused()
    rules.record_skill(d, yes(), "update", T0)
    progress = d.approvals.pop().decision
    assert progress is not None
    rules.applied(d, "c1", progress, T0)
    r = rules.skill_refusal(d, POLICY, yes(), T0)
    assert refusal_type(r) == errors.ALREADY_DECIDED
    assert r is not None and "approved by alice" in r.message


def test_a_refusal_by_the_api_hands_the_item_back_to_be_decided_again() -> None:
    d = paused()
    rules.record_skill(d, yes(), "update", T0)
    rules.refused_by_api(d.approvals[0], d, "the API refused it (401 unauthorized)", T0)
    item = d.approvals[0]
    assert item.decision is None
    assert item.note is not None and "401" in item.note and "decide again" in item.note
    assert rules.skill_refusal(d, POLICY, yes(approver="bob"), T0) is None
    assert d.audit[-1].kind == "decision_failed"


def test_approvers_policy_refuses_others() -> None:
    policy = ConversationPolicy(approvers=["alice"])
    assert rules.skill_refusal(paused(), policy, yes(), T0) is None
    r = rules.skill_refusal(paused(), policy, yes(approver="mallory"), T0)
    assert refusal_type(r) == errors.APPROVER_NOT_ALLOWED


def test_an_ending_conversation_takes_no_decisions() -> None:
    d = paused()
    d.end_reason = "bye"
    assert refusal_type(rules.skill_refusal(d, POLICY, yes(), T0)) == errors.CONVERSATION_ENDED


def test_unknown_call_ids_are_refused_while_a_turn_runs_unless_opted_in() -> None:
    d = ConversationData(conversation_id="conv", state="running")
    d.current = TurnRecord(turn=1, text="hi", status="running")
    r = rules.skill_refusal(d, POLICY, yes("guess"), T0)
    assert refusal_type(r) == errors.UNKNOWN_CALL_ID
    opted = ConversationPolicy(allow_early_decisions=True)
    assert rules.skill_refusal(d, opted, yes("guess"), T0) is None


def test_early_decisions_are_bounded_and_dropped_with_an_audit_when_the_turn_ends() -> None:
    opted = ConversationPolicy(allow_early_decisions=True)
    d = ConversationData(conversation_id="conv", state="running")
    d.current = TurnRecord(turn=1, text="hi", status="running")
    for i in range(MAX_EARLY_DECISIONS):
        assert rules.skill_refusal(d, opted, yes(f"g{i}"), T0) is None
        rules.record_skill(d, yes(f"g{i}"), "signal", T0)
    assert (
        refusal_type(rules.skill_refusal(d, opted, yes("one-more"), T0)) == errors.UNKNOWN_CALL_ID
    )
    rules.drop_unused_early(d, 1, T0)
    assert d.early == {}
    assert d.refusals and d.refusals[0].count == MAX_EARLY_DECISIONS


def test_an_early_decision_is_taken_by_its_pause() -> None:
    opted = ConversationPolicy(allow_early_decisions=True)
    d = ConversationData(conversation_id="conv", state="running")
    d.current = TurnRecord(turn=1, text="hi", status="running")
    assert rules.skill_refusal(d, opted, yes("c1"), T0) is None
    rules.record_skill(d, yes("c1"), "signal", T0)
    d.approvals.append(PendingApproval(call_id="c1", turn=1, requested_at=T0, deadline=DEADLINE))
    rules.take_early(d, "c1", for_skill(opted, None), T0)
    assert d.approvals[0].decision is not None and d.approvals[0].decision.actor == "alice"


def _early(policy: ConversationPolicy, decision: SkillDecision, skill: str) -> ConversationData:
    """A conversation where ``decision`` came early and the genie then paused on ``skill``."""
    d = ConversationData(conversation_id="conv", state="running")
    d.current = TurnRecord(turn=1, text="hi", status="running")
    assert rules.skill_refusal(d, policy, decision, T0) is None
    rules.record_skill(d, decision, "signal", T0)
    d.approvals.append(
        PendingApproval(
            call_id=decision.call_id,
            skill_name=skill,
            turn=1,
            requested_at=T0,
            deadline=DEADLINE,
            required_approvals=for_skill(policy, skill).required_approvals,
        )
    )
    return d


def test_an_early_decision_meets_the_rule_of_the_item_it_decides() -> None:
    # Only the conversation-wide approvers can be checked when an early decision comes;
    # the skill's own rule is known once the genie pauses on it.
    guarded = ConversationPolicy(
        allow_early_decisions=True,
        skills=[SkillRule(match="send_email", approvers=["cfo", "ceo"], required_approvals=2)],
    )
    mallory = SkillDecision(call_id="c1", approved=True, approver="mallory")
    d = _early(guarded, mallory, "send_email")
    item = for_skill(guarded, "send_email")
    assert not rules.early_meets_rule(d, "c1", item)
    rules.take_early(d, "c1", item, T0)
    assert d.approvals[0].decision is None and d.approvals[0].approved_by == []
    assert d.early == {}
    (refused,) = d.refusals
    assert refused.actor == "mallory" and (refused.refusal or "").startswith(
        errors.APPROVER_NOT_ALLOWED
    )
    refusal = rules.early_refusal(d, item, mallory)
    assert refusal is not None and refusal.type == errors.APPROVER_NOT_ALLOWED

    # An allowed approver's early approval is the first of the two the rule needs.
    cfo = SkillDecision(call_id="c1", approved=True, approver="cfo")
    d = _early(guarded, cfo, "send_email")
    rules.take_early(d, "c1", item, T0)
    assert d.approvals[0].decision is None and d.approvals[0].approved_by == ["cfo"]
    assert rules.skill_refusal(d, guarded, cfo, T0) is not None  # not twice by the same
    rules.record_skill(d, SkillDecision(call_id="c1", approved=True, approver="ceo"), "update", T0)
    assert d.approvals[0].decision is not None and d.approvals[0].decision.verdict == "approved"

    # A rejection by an allowed approver needs no second.
    no = SkillDecision(call_id="c1", approved=False, approver="ceo")
    d = _early(guarded, no, "send_email")
    assert rules.early_meets_rule(d, "c1", item)
    rules.take_early(d, "c1", item, T0)
    assert d.approvals[0].decision is not None and d.approvals[0].decision.verdict == "rejected"

    # A skill the policy decides itself keeps its rule, whoever came early.
    auto = ConversationPolicy(
        allow_early_decisions=True, skills=[SkillRule(match="lookup", auto="reject")]
    )
    d = _early(auto, SkillDecision(call_id="c1", approved=True, approver="alice"), "lookup")
    rules.take_early(d, "c1", for_skill(auto, "lookup"), T0)
    assert d.approvals[0].decision is None
    assert (d.refusals[0].refusal or "").startswith(errors.ALREADY_DECIDED)


def test_runs_recorded_before_the_item_rule_take_any_early_decision() -> None:
    # Replay keeps what those runs did: without the item, the early decision is taken.
    guarded = ConversationPolicy(
        allow_early_decisions=True, skills=[SkillRule(match="send_email", approvers=["cfo"])]
    )
    d = _early(
        guarded, SkillDecision(call_id="c1", approved=True, approver="mallory"), "send_email"
    )
    rules.take_early(d, "c1", None, T0)
    assert d.approvals[0].decision is not None and d.approvals[0].decision.actor == "mallory"


# ---------------------------------------------------------------------- connections


def test_connection_rules_mirror_skill_rules() -> None:
    d = connecting()
    done = ConnectionDecision(attempt_id="a1", action="done", actor="ops")
    assert rules.connection_refusal(d, POLICY, done, T0) is None
    late = rules.connection_refusal(d, POLICY, done, DEADLINE)
    assert refusal_type(late) == errors.DEADLINE_EXPIRED
    other = ConnectionDecision(attempt_id="zz", action="done", actor="ops")
    assert refusal_type(rules.connection_refusal(d, POLICY, other, T0)) == errors.UNKNOWN_ATTEMPT_ID
    rules.record_connection(d, done, "update", T0)
    assert d.connections[0].decision is not None
    assert d.connections[0].decision.state == "verifying"  # "done" is checked with the API
    again = rules.connection_refusal(d, POLICY, done, T0)
    assert refusal_type(again) == errors.ALREADY_DECIDED


# ---------------------------------------------------------------------- audit bounds


def test_refusals_never_displace_accepted_decisions() -> None:
    d = paused()
    rules.record_skill(d, yes(), "update", T0)
    for i in range(10_000):
        rules.skill_signal(
            d, POLICY, {"call_id": f"guess-{i}", "approved": True, "approver": "m"}, T0
        )
    trail = rules.audit_trail(d)
    assert any(e.accepted and e.actor == "alice" for e in trail)
    guesses = [e for e in d.refusals if e.actor == "m"]
    assert len(guesses) == 1 and guesses[0].count == 10_000


def test_alike_refusals_coalesce_distinct_ones_are_bounded() -> None:
    d = paused()
    for i in range(REFUSALS_KEPT * 3):
        rules.skill_signal(d, POLICY, {"call_id": "x", "approved": True, "approver": f"a{i}"}, T0)
    assert len(d.refusals) == REFUSALS_KEPT
    assert d.audit_dropped == REFUSALS_KEPT * 2


def test_accepted_audit_is_bounded_and_counts_what_it_dropped() -> None:
    d = paused()
    for i in range(AUDIT_KEPT + 25):
        rules.system_event(d, "end_conversation", None, "x", None, str(i), "signal", T0)
    assert len(d.audit) == AUDIT_KEPT and d.audit_dropped == 25


@pytest.mark.parametrize(
    "raw",
    [
        None,
        5,
        "approve",
        [],
        {},
        {"call_id": "c1", "approved": "maybe", "approver": "x"},
        {"call_id": "c1", "approved": True},
        {"call_id": "", "approved": True, "approver": "x"},
        {"call_id": "c1", "approved": True, "approver": "x" * 1_000_000},
        {"call_id": "c1" * 10_000, "approved": True, "approver": "x"},
        {"call_id": "c1", "approved": True, "approver": "x", "reason": "r" * 1_000_000},
        {"call_id": "c1", "approved": True, "approver": "   "},
    ],
)
def test_invalid_signals_are_audited_bounded_and_change_nothing(raw: object) -> None:
    d = paused()
    assert rules.skill_signal(d, POLICY, raw, T0) is False
    assert d.approvals[0].decision is None
    (entry,) = d.refusals
    assert not entry.accepted
    assert entry.refusal is not None and entry.refusal.startswith(errors.INVALID_INPUT)
    assert len(entry.model_dump_json()) < 4_000


def test_message_rules() -> None:
    assert refusal_type(rules.message_refusal(SendMessage(text="  "))) == errors.EMPTY_MESSAGE
    assert (
        refusal_type(rules.message_refusal(SendMessage(text="x" * 12_289)))
        == errors.MESSAGE_TOO_LONG
    )
    assert rules.message_refusal(SendMessage(text="x" * 12_288)) is None
