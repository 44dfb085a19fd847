"""A run whose update budget is spent still takes decisions, by their signal twins.

The server takes at most ``history.maxTotalUpdates`` updates per run (2,000 by default).
A pause that keeps its run (an unversioned worker without ``GENIE_PAUSE_ROLLOVER``, as
here; elsewhere it continues as new before 2,000 events), or a server configured with a
smaller budget, lets a caller that polls ``wait_turn`` during one pause spend it; the
decision updates are then refused with ``FAILED_PRECONDITION``. ``GenieConversations``
sends the decision as its audited signal twin instead and reads the outcome from the
audit trail. Here a dev server of its own allows 12 updates per run, so the budget is
spent in a few calls.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from genie_api import GenieClient
from geniectl import GenieConversations, Refused
from tests.conftest import worker_settings
from tests.services import SimProcess, temporal_cli
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker
from workflows import ALL_SEARCH_ATTRIBUTES, ConversationPolicy, TurnResult, errors

UPDATES_PER_RUN = 12


@pytest.fixture(scope="module")
async def small_budget() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=list(ALL_SEARCH_ATTRIBUTES),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"history.maxTotalUpdates={UPDATES_PER_RUN}",
        ],
    )
    yield env
    await env.shutdown()


async def _spend_the_budget(api: GenieConversations, wid: str, turn: int) -> None:
    """Poll with ``wait_turn`` (each poll is one update) until the server refuses."""
    refusal: RPCError | None = None
    for _ in range(UPDATES_PER_RUN + 1):
        try:
            await api.handle(wid).execute_update(
                "wait_turn", {"turn": turn, "timeout_seconds": 0}, result_type=TurnResult
            )
        except RPCError as e:
            refusal = e
            break
    assert refusal is not None, "the server never refused an update"
    assert refusal.status == RPCStatusCode.FAILED_PRECONDITION, refusal


async def test_decisions_go_by_signal_once_the_run_takes_no_more_updates(
    small_budget: WorkflowEnvironment, genie: GenieClient, sim: SimProcess
) -> None:
    tq = f"test-budget-{uuid.uuid4()}"
    client = small_budget.client
    async with build_worker(client, worker_settings(sim), genie, task_queue=tq):
        api = convs(client, tq)
        policy = ConversationPolicy(approvers=["alice"])
        wid = await start(api, policy=policy)
        res = await api.ask(wid, "please confirm:send_email")
        call = res.pending.approvals[0].call_id
        await _spend_the_budget(api, wid, res.turn)

        # Refused by the workflow: the caller hears why, from the audit trail.
        with pytest.raises(Refused) as refused:
            await api.approve(wid, call, approver="mallory")
        assert refused.value.type == errors.APPROVER_NOT_ALLOWED, refused.value

        recorded = await api.approve(wid, call, approver="alice", wait_for="completion")
        assert (recorded.id, recorded.decision, recorded.decided_by) == (
            call,
            "approved",
            "alice",
        )
        assert recorded.result is None  # waiting takes an update too
        st = await eventually(
            lambda: api.status(wid), lambda s: s.state == "idle", what="the turn to complete"
        )
        done = next(t for t in (await api.transcript(wid)).turns if t.turn == res.turn)
        assert done.status == "completed" and "send_email" in (done.reply or ""), done
        taken = [a for a in st.audit if a.kind == "skill_decision" and a.accepted]
        assert [(a.actor, a.via) for a in taken] == [("alice", "signal")]
