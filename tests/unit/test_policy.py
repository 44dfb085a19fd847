"""Which rule governs a pause: first match wins, unset fields fall back to the policy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from genie_config import ConfigError, GenieSettings, load_deployment
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


def test_the_example_deployment_file_loads() -> None:
    example = Path(__file__).parents[2] / "deploy" / "deployment.example.toml"
    settings = GenieSettings(api_key="k", deployment_file=example)
    deployment, endpoints_ = load_deployment(settings)
    assert [e.name for e in endpoints_] == ["ops", "finance-lead"]
    policy = ConversationPolicy.model_validate(deployment.default_policy)
    assert for_skill(policy, "wire_money").required_approvals == 2
    assert deployment.inbox_url == "https://inbox.example.com"
    assert "whsec" not in deployment.model_dump_json()  # no secret reaches a conversation


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[policy\n", "not valid TOML"),
        ('[policy]\napproval_timeout = "P3000000D"\n', "approval_timeout"),
        ('[[notify]]\nname = "x"\nurl = "https://h.example/s3cr3t"\n', "needs a secret"),
        ('[[notify]]\nname = "x"\nformat = "fax"\nurl = "https://h.example/s3cr3t"\n', "format"),
    ],
)
def test_a_bad_deployment_file_stops_the_worker_with_one_line(
    tmp_path: Path, text: str, says: str
) -> None:
    file = tmp_path / "d.toml"
    file.write_text(text)
    settings = GenieSettings(api_key="k", deployment_file=file)
    with pytest.raises(ConfigError) as e:
        load_deployment(settings)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert "s3cr3t" not in str(e.value)


@pytest.mark.parametrize(
    ("url", "secret"),
    [("ftp://h.example/s3cr3t", "whsec_YWJj"), ("https://h.example/s3cr3t", "whsec_S")],
)
def test_a_bad_notify_url_or_secret_in_the_environment_is_one_line(url: str, secret: str) -> None:
    """``GENIE_NOTIFY_URL`` / ``_SECRET`` are checked like a deployment file's endpoints:
    one line naming the settings, quoting neither value (no traceback at start)."""
    settings = GenieSettings(api_key="k", notify_url=url, notify_secret=secret)
    with pytest.raises(ConfigError) as e:
        load_deployment(settings)
    text = str(e.value)
    assert text.startswith("GENIE_NOTIFY_URL / GENIE_NOTIFY_SECRET: ") and "\n" not in text
    assert "s3cr3t" not in text and secret not in text


@pytest.mark.parametrize(
    ("extra", "rolls_over"),
    [
        ({}, False),  # unversioned: a worker of an older release may take the next run
        ({"pause_rollover": True}, True),  # the operator says none is left
        ({"worker_deployment_name": "genie-worker", "worker_build_id": "b1"}, True),  # pinned
    ],
)
def test_a_pause_continues_as_new_where_the_next_run_finds_code_that_resumes_it(
    extra: dict[str, object], rolls_over: bool
) -> None:
    deployment, _ = load_deployment(GenieSettings(api_key="k", **extra))  # type: ignore[arg-type]
    assert deployment.pause_rollover is rolls_over
