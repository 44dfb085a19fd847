"""Policy per skill, notifications on each pause, and the deployment's default policy.

A local webhook receiver (a real HTTP server on loopback) stands for the endpoint; its
signatures are checked with the ``standardwebhooks`` verifier, as a receiver would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from genie_api import GenieClient
from geniectl import GenieConversations, Refused
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.webhooks import SECRET, Receiver
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker
from workflows import ConversationPolicy, SkillRule, errors

INBOX = "http://inbox.test"


@pytest.fixture
async def api(
    client: Client, sim: SimProcess, genie: GenieClient, receiver: Receiver
) -> AsyncIterator[GenieConversations]:
    tq = f"test-policy-{uuid.uuid4()}"
    settings = worker_settings(sim, notify_url=receiver.url, notify_secret=SECRET, inbox_url=INBOX)
    async with build_worker(client, settings, genie, task_queue=tq):
        yield convs(client, tq)


async def _received(receiver: Receiver, n: int) -> list[dict[str, Any]]:
    return await eventually(
        lambda: asyncio.sleep(0, receiver.events()), lambda e: len(e) >= n, what=f"{n} webhooks"
    )


async def test_each_pause_is_announced_once_signed_with_a_link(
    api: GenieConversations, receiver: Receiver
) -> None:
    wid = await start(api)
    res = await api.ask(wid, "please confirm:send_email")
    call = res.pending.approvals[0].call_id
    (event,) = await _received(receiver, 1)
    assert event["type"] == "genie.skill_confirmation.pause"
    data = event["data"]
    assert data["ref"] == call and data["workflow_id"] == wid
    assert data["link"] == f"{INBOX}/items/{wid}/skill/{call}"
    assert data["details"]["skill_name"] == "send_email"
    assert event["webhook-id"] == f"{wid}:{call}:pause"
    st = await eventually(
        lambda: api.status(wid),
        lambda s: [n.state for n in s.notifications] == ["delivered"],
        what="the delivery on status",
    )
    assert st.notifications[0].endpoint == "default"
    await api.approve(wid, call, approver="alice")
    assert (await api.wait(wid, res.turn, wait_for="completion")).status == "completed"
    await asyncio.sleep(0.5)
    assert len(receiver.posts) == 1, "one notification per pause, not per step"


async def test_a_failing_endpoint_never_holds_up_the_conversation(
    api: GenieConversations, receiver: Receiver
) -> None:
    receiver.status = 503
    wid = await start(api)
    res = await api.ask(wid, "please confirm:send_email")
    await _received(receiver, 1)
    st = await api.status(wid)
    assert st.notifications and st.notifications[0].state in ("sending", "failed")
    await api.approve(wid, res.pending.approvals[0].call_id, approver="alice")
    assert (await api.wait(wid, res.turn, wait_for="completion")).status == "completed"


async def test_auto_approval_needs_no_human_and_is_announced(
    api: GenieConversations, receiver: Receiver
) -> None:
    policy = ConversationPolicy(
        skills=[SkillRule(match="send_*", auto="approve", auto_reason="safe")]
    )
    wid = await start(api, policy=policy)
    res = await api.ask(wid, "please confirm:send_email", wait_for="completion")
    assert res.status == "completed", res
    st = await api.status(wid)
    auto = [a for a in st.audit if a.kind == "skill_decision"]
    assert [(a.actor, a.decision, a.via) for a in auto] == [("policy:send_*", "approved", "policy")]
    (event,) = await _received(receiver, 1)
    assert event["type"] == "genie.skill_confirmation.decided_by_policy"


async def test_escalation_tells_again_waits_longer_then_rejects(
    api: GenieConversations, receiver: Receiver
) -> None:
    rule = SkillRule(
        timeout=timedelta(seconds=2),
        on_timeout="escalate",
        escalation_timeout=timedelta(seconds=2),
    )
    wid = await start(api, policy=ConversationPolicy(skills=[rule]))
    res = await api.ask(wid, "please confirm:wire_money")
    first_deadline = res.pending.approvals[0].deadline
    events = await _received(receiver, 2)
    assert [e["type"].rsplit(".", 1)[1] for e in events] == ["pause", "escalation"]
    done = await api.wait(wid, res.turn, wait_for="completion")
    assert done.reply and "approval timed out" in done.reply
    st = await api.status(wid)
    kinds = [a.kind for a in st.audit]
    assert kinds.index("escalation") < kinds.index("approval_timeout"), kinds
    assert events[1]["data"]["deadline"] > first_deadline.isoformat()


async def test_two_people_must_approve_and_either_can_reject(
    api: GenieConversations, sim: SimProcess
) -> None:
    policy = ConversationPolicy(skills=[SkillRule(match="wire_*", required_approvals=2)])
    wid = await start(api, policy=policy)
    res = await api.ask(wid, "please confirm:wire_money")
    call = res.pending.approvals[0].call_id
    await api.approve(wid, call, approver="alice")
    st = await api.status(wid)
    assert st.state == "awaiting_approval" and st.pending_approvals[0].approved_by == ["alice"]
    with pytest.raises(Refused) as again:
        await api.approve(wid, call, approver="alice")
    assert again.value.type == errors.SECOND_APPROVER_REQUIRED
    await api.approve(wid, call, approver="bob")
    assert (await api.wait(wid, res.turn, wait_for="completion")).status == "completed"
    conv = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["skill_decision_posts"] == {call: 1}
    # A reject by the first of two rejects at once.
    res = await api.ask(wid, "please confirm:wire_more")
    call = res.pending.approvals[0].call_id
    await api.reject(wid, call, approver="carol", reason="no")
    done = await api.wait(wid, res.turn, wait_for="completion")
    assert done.status == "completed" and done.reply and "rejected" in done.reply.lower()


async def test_a_conversation_without_a_policy_takes_the_deployments(
    client: Client, sim: SimProcess, genie: GenieClient, tmp_path: Path
) -> None:
    file = tmp_path / "deployment.toml"
    file.write_text('[policy]\napprovers = ["ops"]\napproval_timeout = "PT2H"\n')
    tq = f"test-deploy-{uuid.uuid4()}"
    async with build_worker(
        client, worker_settings(sim, deployment_file=file), genie, task_queue=tq
    ):
        api = convs(client, tq)
        wid = await start(api)
        res = await api.ask(wid, "please confirm:send_email")
        p = res.pending.approvals[0]
        assert p.deadline - p.requested_at == timedelta(hours=2)
        with pytest.raises(Refused) as refused:
            await api.approve(wid, p.call_id, approver="mallory")
        assert refused.value.type == errors.APPROVER_NOT_ALLOWED
        assert "ops" in refused.value.message
        explicit = await start(api, policy=ConversationPolicy())
        res2 = await api.ask(explicit, "please confirm:send_email")
        await api.approve(explicit, res2.pending.approvals[0].call_id, approver="mallory")
        await api.approve(wid, p.call_id, approver="ops")
        assert (await api.wait(wid, res.turn, wait_for="completion")).status == "completed"
        assert (await api.status(wid)).approvers == ["ops"]


async def test_a_delivery_cut_by_a_worker_stop_is_sent_again_with_the_same_id(
    client: Client, sim: SimProcess, genie: GenieClient, receiver: Receiver
) -> None:
    """At-least-once: the worker stops while the endpoint sits on the request; the next
    worker sends the notification again, with the same webhook-id for the receiver to
    dedupe, and records one delivery."""
    receiver.delay_first = 8.0
    tq = f"test-notify-restart-{uuid.uuid4()}"
    settings = worker_settings(
        sim,
        notify_url=receiver.url,
        notify_secret=SECRET,
        inbox_url=INBOX,
        graceful_shutdown_seconds=0.5,
    )
    api = convs(client, tq)
    async with build_worker(client, settings, genie, task_queue=tq):
        wid = await start(api)
        res = await api.ask(wid, "please confirm:send_email")
        await eventually(
            lambda: asyncio.sleep(0, len(receiver.posts)), lambda n: n == 1, what="first POST"
        )
    async with build_worker(client, settings, genie, task_queue=tq):
        events = await _received(receiver, 2)
        assert {e["webhook-id"] for e in events} == {
            f"{wid}:{res.pending.approvals[0].call_id}:pause"
        }
        st = await eventually(
            lambda: api.status(wid),
            lambda s: [n.state for n in s.notifications] == ["delivered"],
            what="one delivery recorded",
        )
        assert len(st.notifications) == 1
