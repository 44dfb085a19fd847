"""Which rule governs a pause: first match wins, unset fields fall back to the policy."""

from __future__ import annotations

from datetime import timedelta

from workflows._policy import endpoints, for_connection, for_skill
from workflows.models import ConnectionRule, ConversationPolicy, SkillRule

POLICY = ConversationPolicy(
    approvers=["ops"],
    approval_timeout=timedelta(hours=4),
    skills=[
        SkillRule(match="wire_*", required_approvals=2, approvers=["cfo", "ceo"]),
        SkillRule(match="send_email", auto="approve", notify=["slack"]),
        SkillRule(match="*", timeout=timedelta(minutes=30), on_timeout="escalate"),
    ],
    connections=[ConnectionRule(match="jira", timeout=timedelta(minutes=5), on_timeout="fail")],
    notify=["ops-hook"],
)


def test_first_matching_rule_wins_and_fills_in_the_rest() -> None:
    wire = for_skill(POLICY, "wire_money")
    assert (wire.rule, wire.required_approvals, wire.approvers) == ("wire_*", 2, ("cfo", "ceo"))
    assert wire.timeout == timedelta(hours=4) and wire.on_timeout == "reject"
    assert wire.notify == ("ops-hook",)
    mail = for_skill(POLICY, "send_email")
    assert mail.auto == "approve" and mail.approvers == ("ops",) and mail.notify == ("slack",)
    other = for_skill(POLICY, "book_room")
    assert other.rule == "*" and other.timeout == timedelta(minutes=30)
    assert other.on_timeout == "escalate"


def test_no_rule_means_the_policy_itself() -> None:
    bare = for_skill(ConversationPolicy(), "anything")
    assert bare.rule is None and bare.timeout == timedelta(hours=24)
    assert bare.may_decide("anyone", []) and bare.notify is None


def test_who_may_decide_by_name_or_verified_group() -> None:
    rule = for_skill(
        ConversationPolicy(skills=[SkillRule(approvers=["alice"], approver_groups=["finance"])]),
        "x",
    )
    assert rule.may_decide("alice", [])
    assert rule.may_decide("bob", ["finance"])
    assert not rule.may_decide("bob", ["sales"])
    assert "group finance" in rule.who()


def test_connection_rules() -> None:
    jira = for_connection(POLICY, "jira")
    assert jira.timeout == timedelta(minutes=5) and jira.on_timeout == "fail"
    assert for_connection(POLICY, "gmail").timeout == timedelta(hours=1)


def test_endpoints_are_the_configured_ones_named() -> None:
    assert endpoints(None, ["a", "b"]) == ["a", "b"]
    assert endpoints(("b", "zz"), ["a", "b"]) == ["b"]
    assert endpoints((), ["a"]) == []
