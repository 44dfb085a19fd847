"""What the decision activities make of each answer of the API, and the connection probe.

The activities run in ``ActivityEnvironment`` against the real simulator over HTTP. The
answers the simulator gives on its own (a repeated decision: 409 already-resolved) are
real; the others (``conversation_busy``, an undocumented 409 code, final 4xx answers)
are injected with the simulator's fault mechanism, scoped to the test's conversation.

The rule under test: only the documented already-resolved code means "the API has a
resolution for this id". ``conversation_busy`` is retried; any other refusal fails the
decision for good with ``DECISION_REFUSED``, so the workflow can show it and let a human
decide again, instead of carrying on as if the decision had been applied.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import DECISION_REFUSED
from activities._control import ControlActivities
from activities.models import (
    PostDecisionResult,
    PostSkillDecisionInput,
    ProbeConnectionInput,
    ProbeConnectionResult,
    RejectConnectionInput,
)
from genie_api import (
    CONNECTION_ALREADY_RESOLVED,
    CONVERSATION_BUSY,
    SKILL_CALL_ALREADY_RESOLVED,
    GenieClient,
    PauseStatus,
    RuntimeConnectionAuthRequired,
    SkillConfirmationRequired,
)
from tests.services import SimProcess
from tests.workflow.helpers import eventually

from .conftest import GENIE

Decide = Callable[[], Awaitable[PostDecisionResult]]


async def _paused_call(client: GenieClient, cid: str, user: str) -> str:
    async with client.stream_message(GENIE, cid, "confirm:send_email", user_id=user) as events:
        async for event in events:
            if isinstance(event, SkillConfirmationRequired):
                assert event.call_id is not None
                return event.call_id
    raise AssertionError("the run never asked for a confirmation")


async def _paused_attempt(
    client: GenieClient, cid: str, user: str
) -> RuntimeConnectionAuthRequired:
    async with client.stream_message(GENIE, cid, "connect:jira", user_id=user) as events:
        async for event in events:
            if isinstance(event, RuntimeConnectionAuthRequired):
                return event
    raise AssertionError("the run never asked for a connection")


def _calls(sim: SimProcess, cid: str, counter: str) -> dict[str, int]:
    """The simulator's per-call counter (``skill_decision_posts``, ``..._applied``)."""
    conversations = sim.stats()["conversations"]
    assert isinstance(conversations, dict)
    counts: dict[str, int] = conversations[cid][counter]
    return counts


def _applied(sim: SimProcess, cid: str) -> dict[str, int]:
    return _calls(sim, cid, "skill_decisions_applied")


async def _state(client: GenieClient, cid: str, user: str) -> str | None:
    return (await client.get_conversation(GENIE, cid, user_id=user)).state


async def _decision(kind: str, client: GenieClient, cid: str, user: str) -> tuple[Decide, str, str]:
    """A parked decision of ``kind``: how to post it, its endpoint, its already-resolved code."""
    acts = ControlActivities(client)
    env = ActivityEnvironment()
    if kind == "skill":
        call = await _paused_call(client, cid, user)
        skill = PostSkillDecisionInput(
            genie_handle=GENIE, user_id=user, conversation_id=cid, call_id=call, approved=True
        )
        return (
            lambda: env.run(acts.post_skill_decision, skill),
            "skill_approval",
            SKILL_CALL_ALREADY_RESOLVED,
        )
    attempt = (await _paused_attempt(client, cid, user)).runtime_connection_attempt_id
    assert attempt is not None
    reject = RejectConnectionInput(genie_handle=GENIE, user_id=user, attempt_id=attempt)
    return (
        lambda: env.run(acts.reject_connection, reject),
        "connection_reject",
        CONNECTION_ALREADY_RESOLVED,
    )


@pytest.mark.parametrize("kind", ["skill", "connection"])
async def test_already_resolved_409_counts_as_done(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str, kind: str
) -> None:
    """The retry after a lost answer meets the real 409 already-resolved: done, not failed."""
    decide, _, code = await _decision(kind, client, conversation_id, user_id)
    assert (await decide()).outcome == "applied"
    again = await decide()  # the API answers 409 with ``code`` on its own
    assert again.outcome == "already_resolved", code
    if kind == "skill":
        assert list(_applied(sim, conversation_id).values()) == [1]


@pytest.mark.parametrize("kind", ["skill", "connection"])
async def test_conversation_busy_409_is_retried_not_taken_as_applied(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str, kind: str
) -> None:
    decide, endpoint, _ = await _decision(kind, client, conversation_id, user_id)
    sim.fault(
        endpoint=endpoint, status=409, error_code=CONVERSATION_BUSY, conversation_id=conversation_id
    )
    with pytest.raises(ApplicationError) as busy:
        await decide()
    assert busy.value.non_retryable is False
    assert busy.value.type != DECISION_REFUSED
    assert busy.value.details[0]["error_code"] == CONVERSATION_BUSY
    # Nothing was applied: the run still waits, and the retry applies the decision.
    assert await _state(client, conversation_id, user_id) == "awaiting_approval"
    assert (await decide()).outcome == "applied"


@pytest.mark.parametrize("kind", ["skill", "connection"])
async def test_unknown_409_code_refuses_the_decision(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str, kind: str
) -> None:
    decide, endpoint, _ = await _decision(kind, client, conversation_id, user_id)
    sim.fault(
        endpoint=endpoint,
        status=409,
        error_code="resolution_conflict",
        conversation_id=conversation_id,
    )
    with pytest.raises(ApplicationError) as refused:
        await decide()
    err = refused.value
    assert (err.type, err.non_retryable) == (DECISION_REFUSED, True)
    details: dict[str, Any] = err.details[0]
    assert details["status"] == 409
    assert details["error_code"] == "resolution_conflict"
    assert details["request_id"]
    # The message alone tells a human what happened and lets an operator find the call.
    assert "refused by the API: HTTP 409 resolution_conflict" in err.message
    assert details["request_id"] in err.message
    assert sim.api_key not in err.message
    assert await _state(client, conversation_id, user_id) == "awaiting_approval"
    if kind == "skill":
        assert _applied(sim, conversation_id) == {}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_final_4xx_answers_refuse_the_decision(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str, status: int
) -> None:
    decide, endpoint, _ = await _decision("skill", client, conversation_id, user_id)
    sim.fault(endpoint=endpoint, status=status, conversation_id=conversation_id)
    with pytest.raises(ApplicationError) as refused:
        await decide()
    assert (refused.value.type, refused.value.non_retryable) == (DECISION_REFUSED, True)
    assert f"HTTP {status}" in refused.value.message
    assert _applied(sim, conversation_id) == {}


async def test_a_decision_for_an_unknown_call_is_refused(
    client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """A real 404 ``call_not_found``, no fault injected."""
    await _paused_call(client, conversation_id, user_id)
    inp = PostSkillDecisionInput(
        genie_handle=GENIE,
        user_id=user_id,
        conversation_id=conversation_id,
        call_id="call_nobody_showed",
        approved=True,
    )
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(ControlActivities(client).post_skill_decision, inp)
    assert refused.value.type == DECISION_REFUSED
    assert "call_not_found" in refused.value.message


@pytest.mark.parametrize(("retry_after", "delay"), [(None, None), (2, timedelta(seconds=2))])
async def test_server_errors_retry_after_the_servers_wait_only(
    sim: SimProcess,
    client: GenieClient,
    conversation_id: str,
    user_id: str,
    retry_after: int | None,
    delay: timedelta | None,
) -> None:
    decide, endpoint, _ = await _decision("skill", client, conversation_id, user_id)
    spec: dict[str, object] = {"status": 503, "conversation_id": conversation_id}
    if retry_after is not None:
        spec["retry_after"] = retry_after
    sim.fault(endpoint=endpoint, **spec)
    with pytest.raises(ApplicationError) as failed:
        await decide()
    assert failed.value.non_retryable is False
    assert failed.value.next_retry_delay == delay
    assert (await decide()).outcome == "applied"


# ------------------------------------------------------------------ a post that may have landed


def _approval(pause: SkillConfirmationRequired, cid: str, user: str) -> PostSkillDecisionInput:
    """An approval of ``pause`` as the workflow posts it: naming the run."""
    assert pause.call_id is not None
    return PostSkillDecisionInput(
        genie_handle=GENIE,
        user_id=user,
        conversation_id=cid,
        call_id=pause.call_id,
        approved=True,
        genie_run_id=pause.genie_run_id,
    )


async def _parked(client: GenieClient, cid: str, user: str) -> PostSkillDecisionInput:
    """A skill call the run waits on, as the workflow would post it after a crash."""
    async with client.stream_message(GENIE, cid, "confirm:send_email", user_id=user) as events:
        async for event in events:
            if isinstance(event, SkillConfirmationRequired):
                return _approval(event, cid, user)
    raise AssertionError("the run never asked for a confirmation")


def _posts(sim: SimProcess, cid: str) -> dict[str, int]:
    return _calls(sim, cid, "skill_decision_posts")


def _attempt(n: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=n)
    return env


async def _moved_on(client: GenieClient, cid: str, user: str) -> None:
    await eventually(
        lambda: _state(client, cid, user),
        lambda state: state != "awaiting_approval",
        what="the run past the pause after the decision",
    )


@pytest.mark.parametrize("how", ["retry", "may_have_posted"])
async def test_a_post_that_landed_is_not_posted_again(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str, how: str
) -> None:
    """After a lost answer (a retry, or a fallback after the resume segment), the run
    having moved past the pause is proof enough: nothing is posted a second time."""
    inp = await _parked(client, conversation_id, user_id)
    acts = ControlActivities(client)
    assert (await ActivityEnvironment().run(acts.post_skill_decision, inp)).outcome == "applied"
    await _moved_on(client, conversation_id, user_id)
    if how == "retry":
        again = await _attempt(2).run(acts.post_skill_decision, inp)
    else:
        unsure = inp.model_copy(update={"may_have_posted": True})
        again = await ActivityEnvironment().run(acts.post_skill_decision, unsure)
    assert again.outcome == "already_resolved"
    assert _posts(sim, conversation_id) == {inp.call_id: 1}
    assert _applied(sim, conversation_id) == {inp.call_id: 1}


async def test_a_retry_posts_while_the_run_still_waits(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """The previous attempt never reached the API: the check finds the run parked, and
    the retry posts."""
    inp = await _parked(client, conversation_id, user_id)
    unsure = inp.model_copy(update={"may_have_posted": True})
    result = await _attempt(3).run(ControlActivities(client).post_skill_decision, unsure)
    assert result.outcome == "applied"
    assert _applied(sim, conversation_id) == {inp.call_id: 1}


async def test_a_refusal_after_the_run_moved_on_means_resolved_already(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """Production answers a repeat with ``409 invalid_state``; with the run past the
    pause, that is the call resolved already, not a refusal to show a human."""
    inp = await _parked(client, conversation_id, user_id)
    acts = ControlActivities(client)
    assert (await ActivityEnvironment().run(acts.post_skill_decision, inp)).outcome == "applied"
    await _moved_on(client, conversation_id, user_id)
    sim.fault(
        endpoint="skill_approval",
        status=409,
        error_code="invalid_state",
        conversation_id=conversation_id,
    )
    again = await ActivityEnvironment().run(acts.post_skill_decision, inp)
    assert again.outcome == "already_resolved"
    assert _applied(sim, conversation_id) == {inp.call_id: 1}


async def _second_pause(client: GenieClient, cid: str, user: str) -> PostSkillDecisionInput:
    """A run with two confirmations, the first decided: E3's newest event is the second
    pause, with no genie message between them. The first call, as it would be posted."""
    calls: list[SkillConfirmationRequired] = []
    async with client.stream_message(GENIE, cid, "confirm:a confirm:b", user_id=user) as events:
        async for event in events:
            if isinstance(event, SkillConfirmationRequired):
                calls.append(event)
                if len(calls) == 1:
                    assert event.call_id is not None
                    await client.decide_skill(
                        GENIE, cid, event.call_id, user_id=user, approved=True
                    )
                else:
                    break
    return _approval(calls[0], cid, user)


async def test_a_later_pause_alone_is_no_proof_before_posting(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """The newest event being another pause could mean that pause was raised beside this
    one: a retry posts again rather than risk leaving a call undecided."""
    inp = await _second_pause(client, conversation_id, user_id)
    again = await _attempt(2).run(ControlActivities(client).post_skill_decision, inp)
    assert again.outcome == "already_resolved"  # the simulator's documented 409
    assert _posts(sim, conversation_id)[inp.call_id] == 2


@pytest.mark.parametrize(
    ("status", "code", "resolved"), [(409, "invalid_state", True), (400, None, False)]
)
async def test_a_later_pause_settles_a_409_but_not_another_refusal(
    sim: SimProcess,
    client: GenieClient,
    conversation_id: str,
    user_id: str,
    status: int,
    code: str | None,
    resolved: bool,
) -> None:
    """After a 409 (the call is in no state to be decided) a later pause is proof enough;
    after another refusal (a 400 about the request) it is not, and the refusal stands."""
    inp = await _second_pause(client, conversation_id, user_id)
    fault: dict[str, object] = {"status": status, "conversation_id": conversation_id}
    if code is not None:
        fault["error_code"] = code
    sim.fault(endpoint="skill_approval", **fault)
    post = ActivityEnvironment().run(ControlActivities(client).post_skill_decision, inp)
    if resolved:
        assert (await post).outcome == "already_resolved"
    else:
        with pytest.raises(ApplicationError) as refused:
            await post
        assert refused.value.type == DECISION_REFUSED
        assert f"HTTP {status}" in refused.value.message


def test_a_negative_message_count_is_refused() -> None:
    """A count below zero would make E6's "messages after the pause" count the last ones
    (a negative slice) and take a waiting run for one that moved on."""
    base = {"genie_handle": GENIE, "user_id": "u", "conversation_id": "c", "call_id": "k"}
    with pytest.raises(ValidationError):
        PostSkillDecisionInput.model_validate({**base, "approved": True, "messages_seen": -1})
    with pytest.raises(ValidationError):
        ProbeConnectionInput.model_validate({**base, "attempt_id": "a", "messages_so_far": -1})


def test_results_recorded_before_outcome_still_read() -> None:
    """Histories recorded with ``already_resolved`` replay with the same meaning."""
    legacy = PostDecisionResult.model_validate({"already_resolved": True})
    assert legacy.outcome == "already_resolved"
    assert PostDecisionResult.model_validate({}).outcome == "applied"
    moved = ProbeConnectionResult.model_validate({"resolved": True, "state": "idle"})
    assert (moved.status, moved.resolved) == (PauseStatus.MOVED_ON, True)
    unseen = ProbeConnectionResult.model_validate({"resolved": False})
    assert unseen.status is PauseStatus.UNKNOWN


# ------------------------------------------------------------------ the connection probe


@pytest.mark.parametrize("how", ["connected", "rejected"])
async def test_probe_says_parked_until_the_run_moves_on(
    client: GenieClient, conversation_id: str, user_id: str, how: str
) -> None:
    pause = await _paused_attempt(client, conversation_id, user_id)
    assert pause.runtime_connection_attempt_id is not None
    assert pause.auth_link is not None
    assert pause.auth_link.url is not None
    probe = ProbeConnectionInput(
        genie_handle=GENIE,
        user_id=user_id,
        conversation_id=conversation_id,
        attempt_id=pause.runtime_connection_attempt_id,
        genie_run_id=pause.genie_run_id,
    )
    acts, env = ControlActivities(client), ActivityEnvironment()
    # A human saying "done" before the user connected: the probe says it is not true.
    parked = await env.run(acts.probe_connection, probe)
    assert parked.status is PauseStatus.PARKED
    assert parked.resolved is False
    assert parked.last_event_type == "runtime_connection.auth_required"
    if how == "connected":
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(pause.auth_link.url)).status_code == 200
    else:
        await client.reject_connection(GENIE, pause.runtime_connection_attempt_id, user_id=user_id)
    for _ in range(250):  # the run resumes asynchronously; bounded wait (5 s)
        moved = await env.run(acts.probe_connection, probe)
        if moved.status is not PauseStatus.PARKED:
            break
        await asyncio.sleep(0.02)
    assert moved.status is PauseStatus.MOVED_ON
    assert moved.resolved is True
