"""With keys, history holds ciphertext; the workflow, clients and the Replayer read plain.

Real dev server and simulator (the suite's), workers in this process whose clients carry
the codec, exactly as ``connect_temporal`` builds them from ``GENIE_PAYLOAD_KEYS``.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from genie_api import GenieClient
from genie_codec import KEY_ID_KEY, PayloadDecryptError, key_id_of, payloads_in
from geniectl import Refused
from tests.codec.conftest import K1, K2, codec_client, leaks, raw_events
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.workflow.helpers import GENIE, convs, eventually
from worker import build_worker
from workflows import ConversationPolicy, GenieConversation, SkillDecision

HASH_KEY = "hash-key-0123456789abcdef0123456789"


def _secrets(tag: str) -> dict[str, str]:
    return {
        "user": f"user-{tag}",
        "text": f"please confirm:send_email to the board {tag}",
        "reason": f"approved because {tag}-reason",
        "approver": f"approver-{tag}",
        "intruder": f"intruder-{tag}",
    }


def _payload_keys(events: list[HistoryEvent]) -> set[str | None]:
    """The key ids of every payload in the events (search attributes aside, which are
    never encoded); a plain payload (None) may only be the SDK's own marker metadata:
    a patch's id, or a local activity's type, attempt and times (its result is
    encrypted)."""
    found: set[str | None] = set()
    for payload in payloads_in(events):
        kid = key_id_of(payload)
        found.add(kid)
        if kid is None:
            meta = json.loads(payload.data)
            assert set(meta) <= SDK_MARKER_FIELDS, f"a plain payload: {payload.data[:200]!r}"
    return found


SDK_MARKER_FIELDS = {
    "id",
    "deprecated",
    "seq",
    "attempt",
    "activity_id",
    "activity_type",
    "complete_time",
    "backoff",
    "original_schedule_time",
    "activation_index",
}


async def test_history_is_ciphertext_while_the_conversation_reads_plain(
    temporal_env: WorkflowEnvironment, sim: SimProcess, genie: GenieClient
) -> None:
    s = _secrets(uuid.uuid4().hex[:8])
    client = await codec_client(temporal_env, K1)
    tq = f"test-codec-{uuid.uuid4()}"
    settings = worker_settings(sim, user_id_hash_key=HASH_KEY)
    async with build_worker(client, settings, genie, task_queue=tq):
        api = convs(client, tq)
        wid = f"test-codec-{uuid.uuid4()}"
        await api.start(
            GENIE, s["user"], workflow_id=wid, policy=ConversationPolicy(approvers=[s["approver"]])
        )
        res = await api.ask(wid, s["text"])
        (pending,) = res.pending.approvals
        assert pending.skill_parameters == {"query": s["text"]}  # the genie's, read plain
        with pytest.raises(Refused):  # a refusal naming a person: in history, encrypted
            await api.approve(wid, pending.call_id, approver=s["intruder"])
        await api.approve(wid, pending.call_id, approver=s["approver"], reason=s["reason"])
        done = await api.wait(wid, res.turn, wait_for="completion")
        assert done.status == "completed" and done.reply and "send_email" in done.reply
        st = await api.status(wid)
        assert st.user_id == s["user"]
        assert any(a.reason == s["reason"] for a in st.audit)
        transcript = await api.transcript(wid)
        assert transcript.turns[0].text == s["text"]

        events = await raw_events(client, wid)
        found = leaks(events, [*s.values(), done.reply])
        assert found == [], f"plaintext in the raw history: {found}"
        assert _payload_keys(events) == {"k1", None}, "every payload is encrypted with k1"
        kinds = {e.event_type for e in events}
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED in kinds

        # The positive control: the same strings are found once decrypted.
        history = await client.get_workflow_handle(wid).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        (decoded,) = await client.data_converter.decode(started.input.payloads)
        assert decoded["user_id"] == s["user"]

    # The Replayer replays the encrypted history with the codec, and only with it.
    with_codec = Replayer(workflows=[GenieConversation], data_converter=client.data_converter)
    await with_codec.replay_workflow(history)
    without = Replayer(workflows=[GenieConversation], data_converter=pydantic_data_converter)
    result = await without.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


async def test_keys_rotate_and_a_missing_key_only_stalls_the_conversation(
    temporal_env: WorkflowEnvironment,
    sim: SimProcess,
    genie: GenieClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """k1 encrypts a paused conversation; a worker with only k2 cannot read it and says
    so in one line naming k1, without failing the workflow; with k2 then k1 it finishes,
    its new payloads under k2, and the old ones still readable."""
    tq = f"test-rotate-{uuid.uuid4()}"
    settings = worker_settings(sim)
    old = await codec_client(temporal_env, K1)
    api_old = convs(old, tq)
    async with build_worker(old, settings, genie, task_queue=tq):
        wid = f"test-rotate-{uuid.uuid4()}"
        await api_old.start(GENIE, "user-rotate", workflow_id=wid)
        res = await api_old.ask(wid, "confirm:send_email")
        call = res.pending.approvals[0].call_id

    new_only = await codec_client(temporal_env, K2)
    rotated = await codec_client(temporal_env, K2, K1)
    api = convs(rotated, tq)
    caplog.set_level(logging.WARNING, logger="temporalio")
    async with build_worker(new_only, settings, genie, task_queue=tq):
        # A signal needs no answer: the worker must take a workflow task, and cannot.
        await rotated.get_workflow_handle(wid).signal(
            GenieConversation.skill_decision,
            SkillDecision(call_id=call, approved=True, approver="ops"),
        )
        events = await eventually(
            lambda: raw_events(rotated, wid),
            lambda evs: any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in evs),
            what="a failed workflow task",
        )
        # The task failure says why in plain words (only a key id), for whoever lacks it.
        (failed,) = [e for e in events if e.HasField("workflow_task_failed_event_attributes")]
        message = failed.workflow_task_failed_event_attributes.failure.message
        assert message.startswith("cannot decrypt a payload encrypted with key 'k1'")
        assert "configured: k2" in message and "\n" not in message
    logged = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert logged and all("encrypted with key 'k1'" in m for m in logged)
    desc = await rotated.get_workflow_handle(wid).describe()
    assert desc.status is not None and desc.status.name == "RUNNING"  # not failed
    first = await rotated.get_workflow_handle(wid).fetch_history()
    started = first.events[0].workflow_execution_started_event_attributes
    with pytest.raises(PayloadDecryptError, match="'k1'"):
        await new_only.data_converter.decode(started.input.payloads)

    async with build_worker(rotated, settings, genie, task_queue=tq):
        done = await api.wait(wid, res.turn, wait_for="completion")
        assert done.status == "completed"
        again = await api.ask(wid, "after the rotation")
        assert again.reply == "You said: after the rotation"
        st = await api.status(wid)
        assert st.user_id == "user-rotate"  # from k1's start input
    events = await raw_events(rotated, wid)
    assert _payload_keys(events) == {"k1", "k2", None}
    last = [e for e in events if e.HasField("workflow_execution_update_accepted_event_attributes")]
    payload = last[-1].workflow_execution_update_accepted_event_attributes.accepted_request
    assert payload.input.args.payloads[0].metadata[KEY_ID_KEY] == b"k2"
