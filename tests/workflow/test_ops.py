"""What ops rely on: search attributes, the details card, small history, no secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client
from temporalio.common import RawValue
from temporalio.testing import WorkflowEnvironment

from tests.services import SIM_API_KEY, SimProcess, temporal_cli
from tests.workflow.helpers import GENIE, USER, convs, eventually, start
from workflows.models import ConversationPolicy
from workflows.search_attributes import (
    GENIE_AWAITING_SINCE,
    GENIE_CONVERSATION_ID,
    GENIE_DEADLINE,
    GENIE_HANDLE,
    GENIE_STATE,
    GENIE_USER_ID,
)


async def _details(client: Client, wid: str) -> str:
    meta = await client.get_workflow_handle(wid).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    details: str = meta.current_details
    return details


async def test_search_attributes_and_details_card_follow_the_state(
    client: Client, task_queue: str
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    accepted = await api.send(wid, "confirm:send_email")
    res = await api.wait(wid, accepted.turn)
    call_id = res.pending.approvals[0].call_id

    desc = await api.handle(wid).describe()
    sa = desc.typed_search_attributes
    assert sa.get(GENIE_STATE) == "awaiting_approval"
    assert sa.get(GENIE_HANDLE) == GENIE and sa.get(GENIE_USER_ID) == USER
    assert sa.get(GENIE_CONVERSATION_ID) == (await api.status(wid)).conversation_id
    assert sa.get(GENIE_AWAITING_SINCE) is not None

    # Ops find it with the documented filter (visibility is eventually consistent).
    listed = await eventually(
        lambda: _list(client, f'GenieState = "awaiting_approval" AND WorkflowId = "{wid}"'),
        lambda ids: ids == [wid],
        what="visibility",
    )
    assert listed == [wid]

    card = await _details(client, wid)
    assert "Awaiting approval" in card and call_id in card
    assert f"geniectl approve {wid} {call_id}" in card
    assert "temporal workflow signal" in card and "skill_decision" in card

    await api.approve(wid, call_id, approver="ops")
    await api.wait(wid, accepted.turn, wait_for="completion")
    sa = (await api.handle(wid).describe()).typed_search_attributes
    assert sa.get(GENIE_STATE) == "idle" and sa.get(GENIE_AWAITING_SINCE) is None
    assert "Idle" in await _details(client, wid)


async def _shown_states(client: Client, wid: str) -> list[str]:
    """The ``GenieState`` values the conversation upserted, in order (its history)."""
    history = await client.get_workflow_handle(wid).fetch_history()
    shown = []
    for e in history.events:
        if e.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes
            if GENIE_STATE.name in fields.indexed_fields:
                shown.append(json.loads(fields.indexed_fields[GENIE_STATE.name].data))
    return shown


async def test_genie_state_shows_running_only_for_a_turn_that_lasts(
    client: Client, task_queue: str
) -> None:
    """Short turns write nothing to visibility (two upserts each cost the server a third
    more CPU than the turn); a turn lasting the policy's ``running_shown_after`` shows
    ``running`` while it runs, so ops find long and stuck turns with
    ``GenieState="running"``."""
    api = convs(client, task_queue)
    wid = await start(api, policy=ConversationPolicy(running_shown_after=timedelta(seconds=1)))
    for text in ("hello", "again"):
        assert (await api.ask(wid, text)).status == "completed"
    assert await _shown_states(client, wid) == ["idle"]  # set with the handle, at start

    accepted = await api.send(wid, "steps:2 delay:3000")
    desc = await eventually(
        lambda: api.handle(wid).describe(),
        lambda d: d.typed_search_attributes.get(GENIE_STATE) == "running",
        what="GenieState running once the turn lasts",
    )
    assert desc.typed_search_attributes.get(GENIE_AWAITING_SINCE) is None
    assert (await api.status(wid)).state == "running"
    done = await api.wait(wid, accepted.turn, wait_for="completion")
    assert done.status == "completed"
    sa = (await api.handle(wid).describe()).typed_search_attributes
    assert sa.get(GENIE_STATE) == "idle"
    assert await _shown_states(client, wid) == ["idle", "running", "idle"]


async def test_a_second_pause_after_a_decision_shows_its_own_wait(
    client: Client, task_queue: str
) -> None:
    """Leaving a pause shows ``running`` at once (visibility stops listing a decided pause
    as waiting), and the next pause shows its own since and deadline, never the first
    one's."""
    api = convs(client, task_queue)
    wid = await start(api)
    accepted = await api.send(wid, "confirm:send_email confirm:book_room")
    first = (await api.wait(wid, accepted.turn)).pending.approvals[0]
    since = (await api.handle(wid).describe()).typed_search_attributes.get(GENIE_AWAITING_SINCE)
    decided = await api.approve(wid, first.call_id, approver="ops", wait_for="attention")
    assert decided.result is not None
    second = decided.result.pending.approvals[0]
    assert second.call_id != first.call_id
    st = await api.status(wid)
    sa = (await api.handle(wid).describe()).typed_search_attributes
    assert sa.get(GENIE_STATE) == "awaiting_approval"
    assert since is not None and st.awaiting_since is not None and st.awaiting_since > since
    assert sa.get(GENIE_AWAITING_SINCE) == st.awaiting_since
    assert sa.get(GENIE_DEADLINE) == second.deadline
    await api.approve(wid, second.call_id, approver="ops")
    await api.wait(wid, accepted.turn, wait_for="completion")
    sa = (await api.handle(wid).describe()).typed_search_attributes
    assert (sa.get(GENIE_STATE), sa.get(GENIE_AWAITING_SINCE), sa.get(GENIE_DEADLINE)) == (
        "idle",
        None,
        None,
    )
    assert await _shown_states(client, wid) == [
        "idle",
        "awaiting_approval",
        "running",
        "awaiting_approval",
        "running",
        "idle",
    ]


async def _list(client: Client, query: str) -> list[str]:
    return [wf.id async for wf in client.list_workflows(query)]


async def _event_count(client: Client, wid: str) -> int:
    history = await client.get_workflow_handle(wid).fetch_history()
    return len(history.events)


@pytest.mark.parametrize("steps", [1, 998])
async def test_a_plain_turn_adds_a_bounded_number_of_history_events(
    client: Client, task_queue: str, steps: int
) -> None:
    """The run's SSE events never reach history: 3 events or 1,000, same count."""
    api = convs(client, task_queue)
    wid = await start(api)
    await api.ask(wid, "warm up")
    before = await _event_count(client, wid)
    res = await api.ask(wid, f"steps:{steps}")
    assert res.status == "completed"
    assert res.messages[0] == f"step 1 of {steps}"
    assert len(res.messages) == steps + 1  # every step, then the final reply
    added = await _event_count(client, wid) - before
    assert added <= 15, f"a plain turn added {added} history events"


async def test_the_api_key_never_reaches_history_or_logs(
    client: Client, task_queue: str, sim: SimProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = convs(client, task_queue)
    wid = await start(api)
    await api.ask(wid, "hello")
    accepted = await api.send(wid, "confirm:send_email")
    res = await api.wait(wid, accepted.turn)
    await api.approve(wid, res.pending.approvals[0].call_id, approver="ops")
    await api.wait(wid, accepted.turn, wait_for="completion")
    # An API error on the way (its message and details land in history and logs).
    conv_id = (await api.status(wid)).conversation_id
    sim.fault(
        endpoint="send_message", conversation_id=conv_id, status=401, error_code="auth_failed"
    )
    failed = await api.ask(wid, "this one is refused")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.status == 401 and failed.error.error_code == "auth_failed"

    history = await client.get_workflow_handle(wid).fetch_history()
    assert SIM_API_KEY not in history.to_json()
    assert SIM_API_KEY not in caplog.text
    assert SIM_API_KEY[:16] not in caplog.text


async def _cli(env: WorkflowEnvironment, *args: str) -> Any:
    """Run the official CLI without blocking the loop the in-process worker runs on."""
    address = env.client.service_client.config.target_host
    proc = await asyncio.create_subprocess_exec(
        temporal_cli(),
        *args,
        "--address",
        address,
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out) if out.strip() else None


async def test_the_official_temporal_cli_alone_can_drive_a_conversation(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    wid = f"test-cli-{uuid.uuid4()}"
    start_input = {
        "genie_handle": GENIE,
        "user_id": USER,
        "first_message": {"text": "please confirm:send_email"},
    }
    await _cli(
        temporal_env,
        "workflow",
        "start",
        "--type",
        "GenieConversation",
        "--task-queue",
        task_queue,
        "--workflow-id",
        wid,
        "--input",
        json.dumps(start_input),
    )

    async def poll() -> dict[str, Any]:
        out = await _cli(
            temporal_env, "workflow", "query", "--workflow-id", wid, "--name", "status"
        )
        result: dict[str, Any] = out["queryResult"][0]
        return result

    st = await eventually(poll, lambda s: s["state"] == "awaiting_approval", what="pause")
    call_id = st["pending_approvals"][0]["call_id"]
    # On the wire, lists are lists, never null (the CLI itself prints an empty JSON list
    # as null when it renders a query result; the payload it received holds []).
    raw = await temporal_env.client.get_workflow_handle(wid).query("status", result_type=RawValue)
    wire = json.loads(raw.payload.data)
    assert wire["pending_connections"] == [] and wire["audit"] == [] and wire["approvers"] == []
    # Started without geniectl, the card still names the genie and the user.
    meta = await _cli(
        temporal_env,
        "workflow",
        "query",
        "--workflow-id",
        wid,
        "--name",
        "__temporal_workflow_metadata",
    )
    details = meta["queryResult"][0]["currentDetails"]
    assert f"genie `{GENIE}`" in details and f"user `{USER}`" in details, details

    async def listed() -> list[str]:
        out = await _cli(
            temporal_env,
            "workflow",
            "list",
            "--query",
            f'GenieState="awaiting_approval" AND WorkflowId="{wid}"',
        )
        return [w["execution"]["workflowId"] for w in out or []]

    assert await eventually(listed, lambda ids: ids == [wid], what="list") == [wid]

    decision = {"call_id": call_id, "approved": True, "approver": "ops"}
    await _cli(
        temporal_env,
        "workflow",
        "signal",
        "--workflow-id",
        wid,
        "--name",
        "skill_decision",
        "--input",
        json.dumps(decision),
    )
    st = await eventually(poll, lambda s: s["state"] == "idle", what="resumed")
    assert st["audit"][-1]["actor"] == "ops"
    transcript = (
        await _cli(
            temporal_env,
            "workflow",
            "query",
            "--workflow-id",
            wid,
            "--name",
            "transcript",
        )
    )["queryResult"][0]
    assert transcript["turns"][0]["status"] == "completed"
    assert "send_email" in transcript["turns"][0]["reply"]
