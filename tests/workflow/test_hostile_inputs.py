"""Hostile and malformed input from any client: refused or audited, never a wedged run.

Every input a client can send (signals, updates, the start input) reaches workflow code
on the worker. Whatever it holds, the conversation must answer with a typed refusal (or,
for a signal, an audit entry), keep no more history than the bounds allow, and go on:
no workflow task may fail (a failed task is retried forever and the conversation stops
answering), and a normal action afterwards still works.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import pytest
import temporalio.converter
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError

from genie_api import GenieClient
from geniectl import GenieConversations, Refused
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.workflow.helpers import GENIE, USER, convs, eventually, start, wait_state
from worker import build_worker
from workflows import ConversationPolicy, ConversationStatus, _state, errors
from workflows.models import MAX_MESSAGE_CHARS, SkillRule, TurnResult
from workflows.signing import public_key_text, sign_decision

WAIT = 20.0
"""Seconds one call may take before the test calls the conversation wedged."""
NO_PROBE = ConversationPolicy(connection_poll_interval=timedelta(0))
"""No automatic probing of a pending connection: only the calls the test makes."""
MB2 = 2 * 1024 * 1024
"""The server's payload limit: no input, state or answer may reach it."""


# ---------------------------------------------------------------------- helpers


def _raw(client: Client, wid: str) -> WorkflowHandle[Any, Any]:
    """The untyped handle: any name, any number of payloads, as any client can send."""
    return client.get_workflow_handle(wid)


async def _task_failures(client: Client, wid: str, run_id: str | None = None) -> list[str]:
    """The WORKFLOW_TASK_FAILED events of a run (the latest by default)."""
    out = []
    async for e in client.get_workflow_handle(wid, run_id=run_id).fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            out.append(e.workflow_task_failed_event_attributes.failure.message[:300])
    return out


async def _task_failures_in_every_run(client: Client, wid: str, first_run: str) -> list[str]:
    """Task failures of the run ``first_run`` and of every run it continued as new into."""
    out: list[str] = []
    run_id: str | None = first_run
    runs = 0
    while run_id:
        runs += 1
        nxt = None
        async for e in client.get_workflow_handle(wid, run_id=run_id).fetch_history_events():
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                msg = e.workflow_task_failed_event_attributes.failure.message[:300]
                out.append(f"run {runs}: {msg}")
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                nxt = e.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        run_id = nxt
    return out


async def _events(handle: WorkflowHandle[Any, Any]) -> int:
    return len((await handle.fetch_history()).events)


async def _updates_accepted(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(
        e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events
    )


async def _rejected(call: Awaitable[object]) -> ApplicationError:
    """The typed error an update answered with (it must not hang: that is a wedge)."""
    with pytest.raises(WorkflowUpdateFailedError) as e:
        await asyncio.wait_for(call, WAIT)
    cause = e.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    return cause


def _refused(st: ConversationStatus, kind: str, actor: str | None = None) -> list[Any]:
    return [
        a
        for a in st.audit
        if a.kind == kind and not a.accepted and (actor is None or a.actor == actor)
    ]


async def _paused(
    api: GenieConversations, wid: str, text: str = "please confirm:send_email"
) -> TurnResult:
    res = await asyncio.wait_for(api.ask(wid, text), WAIT)
    assert res.status in ("awaiting_approval", "awaiting_connection"), res
    return res


async def _finish(api: GenieConversations, wid: str, res: TurnResult) -> None:
    """Decide the turn's pauses the normal way; the turn must complete."""
    for p in res.pending.approvals:
        await asyncio.wait_for(api.approve(wid, p.call_id, approver="alice"), WAIT)
    for c in res.pending.connections:
        await asyncio.wait_for(api.connect_reject(wid, c.attempt_id, actor="alice"), WAIT)
    done = await asyncio.wait_for(api.wait(wid, res.turn, wait_for="completion"), WAIT)
    assert done.status == "completed", done


# ---------------------------------------------------------------------- 1. arity and null


@pytest.mark.parametrize(
    ("signal", "pause", "empty_too"),
    [
        ("skill_decision", "please confirm:send_email", True),
        ("connection_decision", "connect:jira", True),
        # Its input is optional (docs/contract.md): no payload is a plain end, see below.
        ("end_conversation", "please confirm:send_email", False),
    ],
)
async def test_a_signal_with_no_or_two_payloads_is_audited_and_does_nothing(
    client: Client, task_queue: str, signal: str, pause: str, empty_too: bool
) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=NO_PROBE)
    res = await _paused(api, wid, pause)
    # Two payloads, each one a well-formed message on its own: neither counts.
    one: dict[str, object] = {"reason": "bye"}
    if signal == "skill_decision":
        one = {"call_id": res.pending.approvals[0].call_id, "approved": True, "approver": "alice"}
    elif signal == "connection_decision":
        one = {"attempt_id": res.pending.connections[0].attempt_id, "action": "done", "actor": "a"}
    handle = _raw(client, wid)
    if empty_too:
        await handle.signal(signal)
    await handle.signal(signal, args=[one, one])
    sent = 2 if empty_too else 1

    st = await eventually(
        lambda: api.status(wid),
        lambda s: sum(a.count for a in _refused(s, signal)) >= sent,
        what=f"the malformed {signal} signals in the audit",
    )
    refused = _refused(st, signal)
    assert sum(a.count for a in refused) == sent, refused
    assert all((a.refusal or "").startswith(errors.INVALID_INPUT) for a in refused), refused
    assert not [a for a in st.audit if a.kind == signal and a.accepted], st.audit
    assert st.state == res.status and st.ended_reason is None, st
    assert all(p.decision is None for p in st.pending_approvals), st.pending_approvals
    assert all(c.decision is None for c in st.pending_connections), st.pending_connections
    assert not await _task_failures(client, wid)
    await _finish(api, wid, res)


async def test_an_end_signal_with_no_payload_is_a_plain_end(
    client: Client, task_queue: str
) -> None:
    """``end_conversation``'s input is optional (docs/contract.md), so a signal without
    one is a plain end, not a malformed signal; with two payloads it is (above)."""
    api = convs(client, task_queue)
    wid = await start(api)
    await _paused(api, wid)
    await _raw(client, wid).signal("end_conversation")
    st = await wait_state(api, wid, "ended")
    assert st.ended_reason == "ended by request", st
    assert not await _task_failures(client, wid)


@pytest.mark.parametrize(
    "update",
    ["decide_skill", "decide_connection", "send_message", "wait_turn", "refresh_auth_link"],
)
async def test_an_update_with_a_null_or_a_wrong_number_of_payloads_is_rejected(
    client: Client, task_queue: str, update: str
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    res = await _paused(api, wid)
    valid = {
        "decide_skill": {
            "call_id": res.pending.approvals[0].call_id,
            "approved": True,
            "approver": "alice",
        },
        "decide_connection": {"attempt_id": "rca_x", "action": "done", "actor": "alice"},
        "send_message": {"text": "hi"},
        "wait_turn": {"turn": res.turn, "timeout_seconds": 0},
        "refresh_auth_link": {"attempt_id": "rca_x"},
    }[update]
    handle = _raw(client, wid)
    accepted = await _updates_accepted(handle)

    cause = await _rejected(handle.execute_update(update, args=[None]))
    assert cause.type == errors.INVALID_INPUT, cause
    for args in ([], [valid, valid]):
        with pytest.raises(WorkflowUpdateFailedError):
            await asyncio.wait_for(handle.execute_update(update, args=args), WAIT)

    assert await _updates_accepted(handle) == accepted  # rejected, not accepted and failed
    assert not await _task_failures(client, wid)
    st = await api.status(wid)
    assert st.turn == res.turn and st.pending_approvals[0].decision is None, st
    await _finish(api, wid, res)


# ---------------------------------------------------------------------- 2. signing

KEY = Ed25519PrivateKey.generate()
EVIL = Ed25519PrivateKey.generate()


async def test_a_proof_issued_at_without_a_timezone_is_invalid_input(
    client: Client, sim: SimProcess, genie: GenieClient
) -> None:
    tq = f"test-hostile-signing-{uuid.uuid4()}"
    settings = worker_settings(sim, decision_keys={"inbox-1": public_key_text(KEY)})
    api = convs(client, tq)
    async with build_worker(client, settings, genie, task_queue=tq):
        wid = await start(api)
        res = await _paused(api, wid)
        call = res.pending.approvals[0].call_id
        good = sign_decision(
            KEY,
            "inbox-1",
            workflow_id=wid,
            ref=call,
            verdict="approved",
            approver="alice",
            auth_method="jwt",
            reason=None,
        )
        naive = {**good.model_dump(mode="json"), "issued_at": "2030-01-01T00:00:00"}
        handle = _raw(client, wid)

        await handle.signal(
            "skill_decision",
            {"call_id": call, "approved": True, "approver": "mallory", "proof": naive},
        )
        st = await eventually(
            lambda: api.status(wid),
            lambda s: bool(_refused(s, "skill_decision", "mallory")),
            what="the signal with a naive issued_at in the audit",
        )
        (entry,) = _refused(st, "skill_decision", "mallory")
        assert (entry.refusal or "").startswith(errors.INVALID_INPUT), entry
        assert st.pending_approvals[0].decision is None

        cause = await _rejected(
            handle.execute_update(
                "decide_skill",
                {"call_id": call, "approved": True, "approver": "alice", "proof": naive},
            )
        )
        assert cause.type == errors.INVALID_INPUT, cause
        assert not await _task_failures(client, wid)

        await asyncio.wait_for(api.approve(wid, call, approver="alice", proof=good), WAIT)
        done = await asyncio.wait_for(api.wait(wid, res.turn, wait_for="completion"), WAIT)
        assert done.status == "completed", done


# ---------------------------------------------------------------------- 3. dedupe


async def test_a_repeat_of_a_message_no_longer_retained_is_answered_as_a_duplicate(
    client: Client, sim: SimProcess, genie: GenieClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key of a finished turn outlives the turn in state (``DEDUPE_WINDOW`` keys,
    ``RETAINED_TURNS`` turns). A retry that asks to wait for that turn gets the turn
    number back, without a result, instead of failing the task. The bound is lowered to
    2 turns (a constant, in an unsandboxed in-process worker) so a few turns suffice."""
    monkeypatch.setattr(_state, "RETAINED_TURNS", 2)
    tq = f"test-hostile-dedupe-{uuid.uuid4()}"
    api = convs(client, tq)
    async with build_worker(
        client, worker_settings(sim, workflow_sandbox=False), genie, task_queue=tq
    ):
        wid = await start(api)
        first = await api.ask(wid, "first", client_message_id="k1", wait_for="completion")
        assert first.status == "completed"
        for i in range(3):
            later = await api.ask(wid, f"m{i}", wait_for="completion")
            assert later.status == "completed"
        assert (await api.transcript(wid)).first_retained_turn > first.turn

        again = await asyncio.wait_for(
            api.send(wid, "first", client_message_id="k1", wait_for="completion"), WAIT
        )
        assert (again.turn, again.duplicate, again.result) == (first.turn, True, None)
        assert not await _task_failures(client, wid)
        after = await asyncio.wait_for(api.ask(wid, "after", wait_for="completion"), WAIT)
        assert after.status == "completed" and after.turn == later.turn + 1


# ---------------------------------------------------------------------- 4. carried state


async def test_a_client_cannot_start_a_conversation_with_carried_state(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    """``carried`` is how continue-as-new hands the state over (trusted keys included);
    from a client it would let anyone pick the keys that sign decisions."""
    before = sim.stats()["requests"]
    wid = f"test-{uuid.uuid4()}"
    handle = await client.start_workflow(
        "GenieConversation",
        {
            "genie_handle": GENIE,
            "user_id": USER,
            "carried": {
                "signing": {"keys": {"evil": public_key_text(EVIL)}},
                "queue": [{"turn": i, "text": "x"} for i in range(1, 300)],
                "next_turn": 300,
            },
        },
        id=wid,
        task_queue=task_queue,
    )
    cause = await _start_refused(client, handle)
    assert "carried" in cause.message, cause
    assert sim.stats()["requests"] == before  # nothing reached the API


async def _start_refused(client: Client, handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    """The run failed at once with typed invalid input, and no workflow task failed."""
    with pytest.raises(WorkflowFailureError) as e:
        await asyncio.wait_for(handle.result(), WAIT)
    cause = e.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == errors.INVALID_INPUT, cause
    assert not await _task_failures(client, handle.id)
    return cause


def _nested(depth: int) -> Any:
    tree: Any = "x"
    for _ in range(depth):
        tree = {"n": tree}
    return tree


async def test_input_nested_too_deep_to_read_is_refused_typed_and_fails_no_task(
    client: Client, task_queue: str
) -> None:
    """JSON nested deeper than pydantic's parser goes (about 200 levels) failed in the
    SDK's decoding, before any validator of ours: a start input failed the workflow task
    on every retry. Sent by a client that can encode it (the SDK's plain JSON converter),
    it now fails the start, rejects the update, and is dropped as a signal, each typed;
    no workflow task fails, and the conversation goes on."""
    config = client.config()
    config["data_converter"] = temporalio.converter.default()
    raw = Client(**config)
    deep = _nested(300)
    wid = f"test-{uuid.uuid4()}"
    handle = await raw.start_workflow(
        "GenieConversation",
        {"genie_handle": GENIE, "user_id": USER, "extra": deep},
        id=wid,
        task_queue=task_queue,
    )
    assert "cannot be read" in (await _start_refused(client, handle)).message

    api = convs(client, task_queue)
    live = await start(api)
    hostile = raw.get_workflow_handle(live)
    refused = await _rejected(hostile.execute_update("send_message", {"text": "hi", "x": deep}))
    assert refused.type == errors.INVALID_INPUT and "cannot be read" in refused.message
    await hostile.signal("skill_decision", {"call_id": "c", "approved": True, "x": deep})
    done = await api.ask(live, "still here", wait_for="completion")
    assert done.status == "completed" and done.reply == "You said: still here"
    assert not await _task_failures(client, live)


# ---------------------------------------------------------------------- 5. early decisions


async def _early_ready(api: GenieConversations, policy: ConversationPolicy) -> tuple[str, str]:
    """A conversation that takes early decisions, its API conversation created."""
    wid = await start(api, policy=policy.model_copy(update={"allow_early_decisions": True}))
    first = await asyncio.wait_for(api.ask(wid, "hello", wait_for="completion"), WAIT)
    assert first.status == "completed"
    conv = (await wait_state(api, wid, "idle")).conversation_id
    assert conv is not None
    return wid, conv


async def _unseen_pause(
    api: GenieConversations, sim: SimProcess, genie: GenieClient, wid: str, conv: str, skill: str
) -> tuple[int, str]:
    """The genie pauses on ``skill`` but the workflow cannot see it (its stream is cut and
    every way back fails), so a decision for the call id arrives early. Returns the turn
    and the call id; ``sim.clear_faults()`` lets the pause show."""
    sim.fault(endpoint="send_message", conversation_id=conv, drop_after_events=1)
    for endpoint in ("reconnect", "events"):
        sim.fault(endpoint=endpoint, conversation_id=conv, status=503, times=100_000)
    accepted = await api.send(wid, f"confirm:{skill}")
    detail = await eventually(
        lambda: genie.get_conversation(GENIE, conv, user_id=USER),
        lambda d: d.last_event is not None and d.last_event.type == "skill.confirmation_required",
        what="the pause at the API",
    )
    call_id: str = detail.last_event.call_id  # type: ignore[union-attr]
    assert (await api.status(wid)).state == "running"  # the workflow has not seen it
    return accepted.turn, call_id


async def _early_kept(api: GenieConversations, wid: str, call: str, actor: str) -> None:
    await eventually(
        lambda: api.status(wid),
        lambda s: any(a.ref == call and a.actor == actor for a in s.audit),
        what=f"the early decision from {actor} recorded",
    )


def _posts(sim: SimProcess, conv: str) -> dict[str, int]:
    return sim.stats()["conversations"][conv]["skill_decision_posts"]  # type: ignore[index,no-any-return]


async def test_an_early_decision_from_someone_the_rule_does_not_allow_is_refused(
    client: Client, task_queue: str, sim: SimProcess, genie: GenieClient
) -> None:
    api = convs(client, task_queue)
    policy = ConversationPolicy(skills=[SkillRule(match="wire_money", approvers=["boss"])])
    wid, conv = await _early_ready(api, policy)
    turn, call = await _unseen_pause(api, sim, genie, wid, conv, "wire_money")
    await _raw(client, wid).signal(
        "skill_decision", {"call_id": call, "approved": True, "approver": "mallory"}
    )
    await _early_kept(api, wid, call, "mallory")
    sim.clear_faults()

    res = await asyncio.wait_for(api.wait(wid, turn), WAIT)
    assert res.status == "awaiting_approval", res
    (pending,) = res.pending.approvals
    assert pending.call_id == call and pending.decision is None and not pending.approved_by
    st = await api.status(wid)
    refused = [a for a in st.audit if a.ref == call and not a.accepted]
    assert [(a.actor, (a.refusal or "").split(":")[0]) for a in refused] == [
        ("mallory", errors.APPROVER_NOT_ALLOWED)
    ], st.audit
    assert call not in _posts(sim, conv)

    await asyncio.wait_for(api.approve(wid, call, approver="boss"), WAIT)
    done = await asyncio.wait_for(api.wait(wid, turn, wait_for="completion"), WAIT)
    assert done.status == "completed", done
    assert _posts(sim, conv) == {call: 1}
    assert not await _task_failures(client, wid)


async def test_an_early_update_from_someone_the_rule_does_not_allow_raises(
    client: Client, task_queue: str, sim: SimProcess, genie: GenieClient
) -> None:
    api = convs(client, task_queue)
    policy = ConversationPolicy(skills=[SkillRule(match="wire_money", approvers=["boss"])])
    wid, conv = await _early_ready(api, policy)
    turn, call = await _unseen_pause(api, sim, genie, wid, conv, "wire_money")
    early = asyncio.create_task(api.approve(wid, call, approver="mallory"))
    try:
        await _early_kept(api, wid, call, "mallory")
        sim.clear_faults()
        with pytest.raises(Refused) as e:
            await asyncio.wait_for(early, WAIT)
    finally:
        early.cancel()
    assert e.value.type == errors.APPROVER_NOT_ALLOWED, e.value

    st = await api.status(wid)
    (pending,) = st.pending_approvals
    assert pending.call_id == call and pending.decision is None, pending
    assert call not in _posts(sim, conv)
    await asyncio.wait_for(api.approve(wid, call, approver="boss"), WAIT)
    done = await asyncio.wait_for(api.wait(wid, turn, wait_for="completion"), WAIT)
    assert done.status == "completed", done
    assert not await _task_failures(client, wid)


async def test_an_early_approval_counts_as_the_first_of_two(
    client: Client, task_queue: str, sim: SimProcess, genie: GenieClient
) -> None:
    api = convs(client, task_queue)
    policy = ConversationPolicy(skills=[SkillRule(match="pay_invoice", required_approvals=2)])
    wid, conv = await _early_ready(api, policy)
    turn, call = await _unseen_pause(api, sim, genie, wid, conv, "pay_invoice")
    await _raw(client, wid).signal(
        "skill_decision", {"call_id": call, "approved": True, "approver": "alice"}
    )
    await _early_kept(api, wid, call, "alice")
    sim.clear_faults()

    res = await asyncio.wait_for(api.wait(wid, turn), WAIT)
    assert res.status == "awaiting_approval", res
    (pending,) = res.pending.approvals
    assert (pending.call_id, pending.approved_by, pending.decision) == (call, ["alice"], None)
    assert call not in _posts(sim, conv)

    await asyncio.wait_for(api.approve(wid, call, approver="bob"), WAIT)
    done = await asyncio.wait_for(api.wait(wid, turn, wait_for="completion"), WAIT)
    assert done.status == "completed", done
    assert _posts(sim, conv) == {call: 1}
    assert not await _task_failures(client, wid)


async def test_an_early_approval_does_not_override_an_automatic_reject(
    client: Client, task_queue: str, sim: SimProcess, genie: GenieClient
) -> None:
    api = convs(client, task_queue)
    rule = SkillRule(match="send_email", auto="reject", auto_reason="never by policy")
    wid, conv = await _early_ready(api, ConversationPolicy(skills=[rule]))
    turn, call = await _unseen_pause(api, sim, genie, wid, conv, "send_email")
    await _raw(client, wid).signal(
        "skill_decision", {"call_id": call, "approved": True, "approver": "mallory"}
    )
    await _early_kept(api, wid, call, "mallory")
    sim.clear_faults()

    done = await asyncio.wait_for(api.wait(wid, turn, wait_for="completion"), WAIT)
    assert done.status == "completed", done
    assert done.reply is not None and "never by policy" in done.reply, done.reply
    st = await api.status(wid)
    refused = [a for a in st.audit if a.ref == call and not a.accepted]
    assert [(a.actor, (a.refusal or "").split(":")[0]) for a in refused] == [
        ("mallory", errors.ALREADY_DECIDED)
    ], st.audit
    decided = [a for a in st.audit if a.ref == call and a.accepted and a.via == "policy"]
    assert [a.decision for a in decided] == ["rejected"], st.audit
    assert not await _task_failures(client, wid)


# ---------------------------------------------------------------------- 6/7. bytes

EMOJI = "\U0001f600" * MAX_MESSAGE_CHARS
"""The longest message in characters (12,288), four UTF-8 bytes each: 49,152 bytes."""


async def test_queued_text_is_bounded_in_bytes_and_continue_as_new_carries_it(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    """Characters are not bytes: a queue of maximal emoji messages is refused before the
    state a continue-as-new carries could pass the 2 MB payload limit (the server would
    refuse the command and fail the task on every retry); the transcript query answers
    throughout."""
    api = convs(client, task_queue)
    wid = await start(api, policy=ConversationPolicy(max_turns_per_run=1))
    handle = _raw(client, wid)
    first_run = (await handle.describe()).run_id
    assert first_run is not None
    res = await _paused(api, wid)  # the first turn goes on (for a human) meanwhile

    accepted: list[int] = []
    refusal: Refused | None = None
    for _ in range(_state.MAX_QUEUED_TURNS + 1):
        try:
            accepted.append((await asyncio.wait_for(api.send(wid, EMOJI), WAIT)).turn)
        except Refused as e:
            refusal = e
            break
    assert refusal is not None and refusal.type == errors.QUEUE_FULL, refusal
    assert accepted and len(accepted) * len(EMOJI.encode()) < MB2, len(accepted)

    async def transcript_fits() -> None:
        t = await asyncio.wait_for(api.transcript(wid), WAIT)
        assert t.turns
        assert len(t.model_dump_json().encode()) < MB2

    await transcript_fits()
    await _finish(api, wid, res)  # then one turn per run, each run continuing as new
    mid = accepted[len(accepted) // 2]
    done = await asyncio.wait_for(api.wait(wid, mid, wait_for="completion"), 60)
    assert done.status == "completed", done.status
    await transcript_fits()
    done = await asyncio.wait_for(api.wait(wid, accepted[-1], wait_for="completion"), 90)
    assert done.status == "completed", done.status
    await transcript_fits()

    st = await wait_state(api, wid, "idle")
    assert st.queued_turns == 0 and st.turn == accepted[-1], st
    assert st.conversation_id is not None
    conv = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["messages_accepted"] == 1 + len(accepted)
    assert not await _task_failures_in_every_run(client, wid, first_run)


# ---------------------------------------------------------------------- 8. flood bounds


async def test_refused_decisions_are_recorded_up_to_a_bound_per_run(
    client: Client, task_queue: str
) -> None:
    """Each refused ``decide_skill`` is accepted and refused in its handler so that its
    audit entry is in history; past 100 in a run, they are turned away by the validator
    with the same error type, and history stops growing.

    Where a pause continues as new (test_pause_rollover), the default bound of 250 events
    moves it before 100 refusals; the cap holds for a pause that keeps its run, or a high
    bound, as here."""
    api = convs(client, task_queue)
    wid = await start(api, policy=ConversationPolicy(max_history_events_per_run=5_000))
    res = await _paused(api, wid)
    handle = _raw(client, wid)
    accepted = await _updates_accepted(handle)

    def guess(i: int) -> dict[str, object]:
        return {"call_id": f"call_guess_{i}", "approved": True, "approver": "flooder"}

    for i in range(100):
        cause = await _rejected(handle.execute_update("decide_skill", guess(i)))
        assert cause.type == errors.UNKNOWN_CALL_ID, (i, cause)
        assert "not recorded" not in cause.message, (i, cause)
    assert await _updates_accepted(handle) == accepted + 100
    st = await api.status(wid)
    assert sum(a.count for a in _refused(st, "skill_decision", "flooder")) == 100

    events = await _events(handle)
    for i in range(100, 110):
        cause = await _rejected(handle.execute_update("decide_skill", guess(i)))
        assert cause.type == errors.UNKNOWN_CALL_ID, (i, cause)
        assert "not recorded" in cause.message, (i, cause)
    assert await _events(handle) == events
    st = await api.status(wid)
    assert sum(a.count for a in _refused(st, "skill_decision", "flooder")) == 100
    assert not await _task_failures(client, wid)
    await _finish(api, wid, res)


async def test_an_oversized_update_is_rejected_without_entering_history(
    client: Client, task_queue: str
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    res = await api.ask(wid, "please confirm:send_email", client_message_id="k1")
    assert res.status == "awaiting_approval", res
    call = res.pending.approvals[0].call_id
    handle = _raw(client, wid)
    events, accepted = await _events(handle), await _updates_accepted(handle)

    padded = {"call_id": call, "approved": True, "approver": "alice", "padding": "x" * 1_900_000}
    cause = await _rejected(handle.execute_update("decide_skill", padded))
    assert cause.type == errors.INVALID_INPUT, cause
    # A known key is answered as a duplicate, but not whatever else the retry carries.
    big = {"text": "x" * 1_900_000, "client_message_id": "k1"}
    cause = await _rejected(handle.execute_update("send_message", big))
    assert cause.type == errors.INVALID_INPUT, cause

    assert (await _events(handle), await _updates_accepted(handle)) == (events, accepted)
    desc = await handle.describe()
    assert desc.raw_description.workflow_execution_info.history_size_bytes < 1_000_000
    st = await api.status(wid)
    assert st.pending_approvals[0].decision is None and st.turn == res.turn, st
    assert not await _task_failures(client, wid)
    await _finish(api, wid, res)


async def test_auth_link_refreshes_are_bounded_per_connection(
    client: Client, task_queue: str
) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=NO_PROBE)
    res = await _paused(api, wid, "connect:jira")
    (pending,) = res.pending.connections
    for _ in range(20):
        link = await asyncio.wait_for(api.auth_link(wid, pending.attempt_id), WAIT)
        # The production profile's E11 answers 404 ("unavailable"); each fetch counts.
        assert link.status in ("auth_required", "unavailable"), link
    with pytest.raises(Refused) as e:
        await asyncio.wait_for(api.auth_link(wid, pending.attempt_id), WAIT)
    assert e.value.type == errors.LINK_REFRESHES_EXHAUSTED, e.value
    assert not await _task_failures(client, wid)
    await _finish(api, wid, res)


# ---------------------------------------------------------------------- 9. waiters


async def test_at_most_five_waits_are_open_at_once(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    res = await _paused(api, wid)
    call = res.pending.approvals[0].call_id
    handle = _raw(client, wid)
    accepted = await _updates_accepted(handle)
    wait = {"turn": res.turn, "wait_for": "completion"}
    waits: list[asyncio.Task[Any]] = [
        asyncio.create_task(handle.execute_update("wait_turn", wait, result_type=TurnResult))
        for _ in range(4)
    ]
    waits.append(
        asyncio.create_task(
            handle.execute_update("send_message", {"text": "hello", "wait_for": "completion"})
        )
    )
    try:
        await eventually(
            lambda: _updates_accepted(handle),
            lambda n: n >= accepted + 5,
            what="five waits open",
        )
        sixth = [
            ("wait_turn", wait),
            ("send_message", {"text": "one more", "wait_for": "attention"}),
            (
                "decide_skill",
                {"call_id": call, "approved": True, "approver": "alice", "wait_for": "completion"},
            ),
        ]
        for name, arg in sixth:
            cause = await _rejected(handle.execute_update(name, arg))
            assert cause.type == errors.TOO_MANY_WAITERS, (name, cause)
        assert not any(t.done() for t in waits)
        st = await api.status(wid)
        assert st.turn == res.turn + 1 and st.pending_approvals[0].decision is None, st

        # A decision that does not wait still goes through, and frees the five.
        await asyncio.wait_for(api.approve(wid, call, approver="alice"), WAIT)
        done = await asyncio.wait_for(asyncio.gather(*waits), WAIT)
    finally:
        for t in waits:
            t.cancel()
    assert [r.status for r in done[:4]] == ["completed"] * 4
    assert done[4]["result"]["status"] == "completed", done[4]
    assert not await _task_failures(client, wid)
