"""The client and the activities against ``genie_sim --profile production``.

Each test is one behaviour reported from the live API (``docs/simulator.md`` lists
them) and what the worker's activities make of it, run in ``ActivityEnvironment``
against a real simulator process over HTTP:

- a credential that is still settling (transient 401/403) is retried for a bounded
  window, then fails naming the credential; a key that worked before fails at once;
- a pause that no stream delivered (output after a resumed connection only in history,
  ``idle`` while parked) ends the segment at that pause instead of finishing the turn;
- parallel skills and ``skill.stopped`` are kept, in order;
- E11 answering 404 fails with that status (the workflow's "unavailable");
- E9 without a paging field is still read to the end;
- ``409 conversation_busy`` caused by an earlier turn's run waits for it, and a retry
  never adopts an earlier turn's run.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import httpx
import pytest
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import (
    BUSY_WITH_EARLIER_RUN,
    CREDENTIAL_REFUSED,
    CREDENTIAL_SETTLING,
    DECISION_REFUSED,
)
from activities._control import ControlActivities
from activities._stream import run_segment
from activities.models import (
    AuthLinkInput,
    CreateConversationInput,
    PostSkillDecisionInput,
    StreamSegmentInput,
    StreamSegmentResult,
)
from genie_api import (
    AgentMessage,
    ApiKeyAuth,
    EventType,
    GenieClient,
    RunInspector,
    SkillConfirmationRequired,
)
from tests.services import SimProcess, running_sim
from tests.workflow.helpers import eventually

from .conftest import GENIE, TEST_TIMEOUTS

SILENCE = 1.0
"""The segments' silence check here: short, so E3 is asked within the test."""


@pytest.fixture(scope="module")
def prod_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """Every production behaviour, except the settle window (tested on its own)."""
    log = tmp_path_factory.mktemp("sim-prod") / "sim.log"
    with running_sim(
        "--profile", "production", "--auth-settle-seconds", "0", "--ping-interval", "0.5",
        log_path=log,
    ) as sim:  # fmt: skip
        yield sim


@pytest.fixture(scope="module")
def settling_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """The production profile with its key settling for the whole module."""
    log = tmp_path_factory.mktemp("sim-settling") / "sim.log"
    with running_sim(
        "--profile", "production", "--auth-settle-seconds", "600", log_path=log
    ) as sim:
        yield sim


@pytest.fixture
async def prod(prod_sim: SimProcess) -> AsyncIterator[GenieClient]:
    async with GenieClient(
        prod_sim.base_url, ApiKeyAuth(prod_sim.api_key), timeouts=TEST_TIMEOUTS
    ) as c:
        yield c


def _env(
    *, started_ago: float = 0.0, attempt: int = 1, max_attempts: int = 7
) -> tuple[ActivityEnvironment, mock.MagicMock]:
    """An activity environment whose step began ``started_ago`` seconds ago."""
    env = ActivityEnvironment()
    now = datetime.now(UTC)
    env.info = dataclasses.replace(
        env.info,
        attempt=attempt,
        scheduled_time=now - timedelta(seconds=started_ago),
        current_attempt_scheduled_time=now,
        heartbeat_timeout=timedelta(seconds=10),
        retry_policy=RetryPolicy(maximum_attempts=max_attempts),
    )
    meter = mock.MagicMock()
    meter.with_additional_attributes.return_value = meter  # what the SDK hands activities
    env.metric_meter = meter
    return env, meter


def _refusals(meter: mock.MagicMock) -> list[dict[str, str]]:
    """The attributes of every ``genie_credential_refusals`` increment."""
    names = [c.args[0] for c in meter.create_counter.call_args_list]
    assert set(names) <= {"genie_credential_refusals"}, names
    add = meter.create_counter.return_value.add
    return [c.args[1] for c in add.call_args_list]


def _inp(cid: str, user: str, message: str, **kw: Any) -> StreamSegmentInput:
    return StreamSegmentInput(
        genie_handle=GENIE, user_id=user, conversation_id=cid, turn=1, mode="send",
        message=message, **kw,
    )  # fmt: skip


async def _segment(client: GenieClient, inp: StreamSegmentInput) -> StreamSegmentResult:
    env, _ = _env()
    return await env.run(run_segment, client, inp, silence_check_seconds=SILENCE)


async def _resume(
    client: GenieClient, seg: StreamSegmentResult, inp: StreamSegmentInput
) -> StreamSegmentResult:
    nxt = inp.model_copy(
        update={
            "mode": "resume",
            "message": None,
            "cursor": seg.cursor,
            "messages_so_far": inp.messages_so_far + len(seg.messages),
        }
    )
    return await _segment(client, nxt)


# ---------------------------------------------------------------- credentials settling


async def test_a_settling_key_goes_to_the_workflow_then_a_zero_window_refuses(
    settling_sim: SimProcess, user_id: str
) -> None:
    """A refusal of a key this worker never had accepted is handed to the workflow as
    ``CredentialSettling`` (not Temporal's to retry: the workflow retries it on timers it
    can show on the card, and bounds it by the window it reads from the details)."""
    inp = CreateConversationInput(genie_handle=GENIE, user_id=user_id)
    async with GenieClient(settling_sim.base_url, ApiKeyAuth(settling_sim.api_key)) as fresh:
        activities = ControlActivities(fresh, auth_settle_seconds=60)
        env, meter = _env(started_ago=5)
        with pytest.raises(ApplicationError) as settling:
            await env.run(activities.create_conversation, inp)
        err = settling.value
        assert (err.type, err.non_retryable) == (CREDENTIAL_SETTLING, True)
        assert err.details[0]["credential_settling"] is True
        assert err.details[0]["settle_seconds"] == 60
        assert err.details[0]["status"] in (401, 403)
        assert "new or rotated API key can take up to 60 s" in err.message
        assert "retried every 10 s" in err.message
        assert settling_sim.api_key not in err.message
        assert _refusals(meter)[-1]["outcome"] == "retried"
        # However long the step has run: the window is the workflow's to measure.
        env, _ = _env(started_ago=600, attempt=9)
        with pytest.raises(ApplicationError) as late:
            await env.run(activities.create_conversation, inp)
        assert late.value.type == CREDENTIAL_SETTLING
        # A window of 0 turns waiting off: final at once, naming the credential.
        env, meter = _env(started_ago=0)
        with pytest.raises(ApplicationError) as off:
            await env.run(ControlActivities(fresh, auth_settle_seconds=0).create_conversation, inp)
        assert (off.value.type, off.value.non_retryable) == (CREDENTIAL_REFUSED, True)
        assert "GENIE_API_KEY" in off.value.message
        assert "GENIE_AUTH_SETTLE_SECONDS is 0" in off.value.message
        assert settling_sim.api_key not in off.value.message
        assert _refusals(meter)[-1]["outcome"] == "final"


async def test_a_stream_segment_retries_a_settling_key(
    settling_sim: SimProcess, user_id: str
) -> None:
    async with GenieClient(settling_sim.base_url, ApiKeyAuth(settling_sim.api_key)) as fresh:
        env, _ = _env(started_ago=1)
        with pytest.raises(ApplicationError) as settling:
            await env.run(
                run_segment,
                fresh,
                _inp("conv_x", user_id, "hello"),
                silence_check_seconds=SILENCE,
                auth_settle_seconds=60,
            )
        assert settling.value.type == CREDENTIAL_SETTLING
        assert settling.value.details[0]["credential_settling"] is True


async def test_a_key_that_worked_before_is_refused_at_once(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    """A rotation elsewhere (or a revoked key): the key was accepted, now it is not."""
    assert client.credential_accepted  # the conversation fixture's E1
    sim.fault(endpoint="create_conversation", status=403, error_code="access_denied")
    env, meter = _env(started_ago=0)
    with pytest.raises(ApplicationError) as refused:
        await env.run(
            ControlActivities(client).create_conversation,
            CreateConversationInput(genie_handle=GENIE, user_id=user_id),
        )
    assert (refused.value.type, refused.value.non_retryable) == (CREDENTIAL_REFUSED, True)
    assert "accepted earlier, so it has been revoked or replaced" in refused.value.message
    assert refused.value.details[0]["status"] == 403
    assert _refusals(meter) == [{"outcome": "final", "status": "403"}]


async def test_an_inactive_user_is_not_a_credential_problem(sim: SimProcess) -> None:
    async with GenieClient(sim.base_url, ApiKeyAuth(sim.api_key)) as fresh:
        env, _ = _env(started_ago=0)
        with pytest.raises(ApplicationError) as refused:
            await env.run(
                ControlActivities(fresh).create_conversation,
                CreateConversationInput(genie_handle=GENIE, user_id="inactive-1"),
            )
    assert (refused.value.type, refused.value.non_retryable) == ("GenieAuthentication", True)
    assert refused.value.details[0]["error_code"] == "user_nonactive_or_missing"


async def test_a_settling_key_on_a_decision_is_retried_not_refused(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    call = await _paused_call(client, conversation_id, user_id)
    sim.fault(endpoint="skill_approval", status=403, conversation_id=conversation_id)
    inp = PostSkillDecisionInput(
        genie_handle=GENIE, user_id=user_id, conversation_id=conversation_id, call_id=call,
        approved=True,
    )  # fmt: skip
    async with GenieClient(sim.base_url, ApiKeyAuth(sim.api_key)) as fresh:
        env, _ = _env(started_ago=2)
        with pytest.raises(ApplicationError) as settling:
            await env.run(ControlActivities(fresh).post_skill_decision, inp)
        assert settling.value.type == CREDENTIAL_SETTLING
        # The retry gets through: applied once.
        env, _ = _env(started_ago=12, attempt=2)
        result = await env.run(ControlActivities(fresh).post_skill_decision, inp)
    assert result.outcome == "applied"


async def _paused_call(client: GenieClient, cid: str, user: str, text: str = "confirm:x") -> str:
    async with client.stream_message(GENIE, cid, text, user_id=user) as events:
        async for event in events:
            if isinstance(event, SkillConfirmationRequired):
                assert event.call_id is not None
                return event.call_id
    raise AssertionError("no confirmation")


# ---------------------------------------------------------------- never finished early


async def test_a_pause_after_a_resumed_connection_is_surfaced_not_finished(
    prod: GenieClient, user_id: str
) -> None:
    """After the connection nothing reaches any stream, and E3 reads ``idle`` while the
    run waits on its next confirmation; E6 has a new genie message meanwhile. That is
    not an end: the segment stops at the confirmation E3 shows."""
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    inp = _inp(cid, user_id, "connect:Box steps:1 confirm:Pay")
    first = await _segment(prod, inp)
    assert first.outcome == "auth_required" and first.connection is not None
    assert first.connection.auth_url is not None
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(first.connection.auth_url)).status_code == 200
    second = await _resume(prod, first, inp)
    assert second.outcome == "confirmation_required", second
    assert second.messages == ["step 1 of 1"]  # from E6: no stream carried it
    assert second.recovered_from_history
    assert second.confirmation is not None
    call = second.confirmation.call_id
    detail = await prod.get_conversation(GENIE, cid, user_id=user_id)
    assert detail.state == "idle"  # the coarse state that used to finish the turn
    assert second.cursor.last_seq_num is not None
    assert second.cursor.last_event_id == detail.last_event.event_id  # type: ignore[union-attr]
    env, _ = _env()
    decided = await env.run(
        ControlActivities(prod).post_skill_decision,
        PostSkillDecisionInput(
            genie_handle=GENIE, user_id=user_id, conversation_id=cid, call_id=call, approved=True
        ),
    )
    assert decided.outcome == "applied"
    third = await _resume(prod, second, inp.model_copy(update={"messages_so_far": 0}))
    assert third.outcome == "finished"
    assert third.recovered_from_history
    assert len(third.messages) == 1 and third.messages[0].startswith("You said: connect:Box")
    assert "Skills run: Box, Pay." in third.messages[0]


async def test_check_run_needs_the_runs_own_evidence(prod: GenieClient, user_id: str) -> None:
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    runs = RunInspector(prod, GENIE, cid, user_id=user_id)
    run_id = None
    async with prod.stream_message(GENIE, cid, "steps:1 confirm:x", user_id=user_id) as events:
        async for event in events:
            run_id = event.genie_run_id
            if event.type == EventType.SKILL_CONFIRMATION_REQUIRED:
                seen = event
                break
    assert run_id is not None
    # Parked on the pause we saw, E3 idle, E6 with nothing new: not an end.
    check = await runs.check_run(
        run_id, messages_seen=1, seen_event_id=seen.event_id, seen_seq_num=seen.seq_num
    )
    assert check.end is None and check.pause is None
    assert check.state == "idle"
    assert "no evidence that run" in check.why_not_ended(run_id)
    # From before the pause, the pause is unseen: the run waits on it.
    check = await runs.check_run(run_id, messages_seen=0, seen_event_id="x", seen_seq_num=1)
    assert check.pause is not None and check.pause.type == EventType.SKILL_CONFIRMATION_REQUIRED
    assert check.new_messages == ("step 1 of 1",)
    assert check.end is None


async def test_parallel_skills_and_skill_stopped_are_kept_in_order(
    prod: GenieClient, user_id: str
) -> None:
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    result = await _segment(prod, _inp(cid, user_id, "skill:Lookup fail:Sync"))
    assert result.outcome == "finished"
    assert [(s.status, s.skill_name) for s in result.skills] == [
        ("running", "Lookup"),
        ("completed", "Lookup"),
        ("stopped", "Lookup (parallel 2)"),
        ("running", "Sync"),
        ("failed", "Sync"),
    ]
    assert result.skills[-1].error == "Simulated failure of Sync"
    assert result.messages[-1].startswith("You said: ")


# ---------------------------------------------------------------- auth link, decisions


async def test_auth_link_404_fails_with_status_404(prod: GenieClient, user_id: str) -> None:
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    first = await _segment(prod, _inp(cid, user_id, "connect:Box"))
    assert first.connection is not None
    env, _ = _env()
    with pytest.raises(ApplicationError) as missing:
        await env.run(
            ControlActivities(prod).get_auth_link,
            AuthLinkInput(
                genie_handle=GENIE, user_id=user_id, attempt_id=first.connection.attempt_id
            ),
        )
    # The workflow answers refresh_auth_link with "unavailable" on exactly this.
    assert missing.value.details[0]["status"] == 404
    assert missing.value.non_retryable


async def test_a_repeated_decision_answered_409_unknown_is_refused(
    prod: GenieClient, prod_sim: SimProcess, user_id: str
) -> None:
    """With nothing to show that the run moved past the pause (no run id: E3 alone, and
    production's E3 may keep showing the pause), the repeat's 409 stays a refusal."""
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    call = await _paused_call(prod, cid, user_id)
    inp = PostSkillDecisionInput(
        genie_handle=GENIE, user_id=user_id, conversation_id=cid, call_id=call, approved=True
    )
    env, _ = _env()
    assert (await env.run(ControlActivities(prod).post_skill_decision, inp)).outcome == "applied"
    with pytest.raises(ApplicationError) as again:
        await env.run(ControlActivities(prod).post_skill_decision, inp)
    assert (again.value.type, again.value.non_retryable) == (DECISION_REFUSED, True)
    assert "HTTP 409 invalid_state" in again.value.message


async def test_a_repeated_decision_after_the_run_went_on_is_resolved_already(
    prod: GenieClient, prod_sim: SimProcess, user_id: str
) -> None:
    """The workflow names the run: its genie message after the pause (E6) shows the call
    resolved, so the repeat's ``409 invalid_state`` (an earlier post's answer lost) is
    taken as resolved already, as the documented already-resolved code would be."""
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    seen, pause = 0, None
    async with prod.stream_message(GENIE, cid, "confirm:x", user_id=user_id) as events:
        async for event in events:
            seen += isinstance(event, AgentMessage)
            if isinstance(event, SkillConfirmationRequired):
                pause = event
                break
    assert pause is not None and pause.call_id is not None and pause.genie_run_id is not None
    call, run = pause.call_id, pause.genie_run_id
    inp = PostSkillDecisionInput(
        genie_handle=GENIE,
        user_id=user_id,
        conversation_id=cid,
        call_id=call,
        approved=True,
        genie_run_id=run,
        messages_seen=seen,
    )
    env, _ = _env()
    assert (await env.run(ControlActivities(prod).post_skill_decision, inp)).outcome == "applied"

    await eventually(
        lambda: prod.list_messages(GENIE, cid, user_id=user_id),
        lambda page: any(m.source == "genie" and m.genie_run_id == run for m in page.messages),
        what="the run's genie message after the pause (E6)",
    )
    again = await env.run(ControlActivities(prod).post_skill_decision, inp)
    assert again.outcome == "already_resolved"
    stats = prod_sim.stats()["conversations"]
    assert isinstance(stats, dict)
    assert stats[cid]["skill_decision_posts"] == {call: 2}
    assert stats[cid]["skill_decisions_applied"] == {call: 1}


# ---------------------------------------------------------------- events without paging


async def test_events_without_a_paging_field_are_read_to_the_end(
    prod: GenieClient, user_id: str
) -> None:
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    async with prod.stream_message(GENIE, cid, "steps:5", user_id=user_id) as events:
        ids = [e.event_id async for e in events if e.type != EventType.SYSTEM_PING]
    assert len(ids) == 8
    seen: list[str | None] = []
    async for page in prod.iter_event_pages(GENIE, user_id=user_id, conversation_id=cid, limit=3):
        assert page.next_since_created_at is None
        seen.extend(e.event_id for e in page.events if e.event_id not in seen)
    assert seen == ids


# ---------------------------------------------------------------- 409 after a failed turn


async def test_busy_with_an_earlier_turns_run_waits_for_it(prod: GenieClient, user_id: str) -> None:
    """The earlier turn failed with its run still active (here: parked)."""
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    call = await _paused_call(prod, cid, user_id, "earlier turn confirm:x")
    detail = await prod.get_conversation(GENIE, cid, user_id=user_id)
    earlier = detail.last_event.genie_run_id  # type: ignore[union-attr]
    for may_have_posted in (False, True):
        env, _ = _env()
        with pytest.raises(ApplicationError) as busy:
            await env.run(
                run_segment,
                prod,
                _inp(cid, user_id, "this turn", may_have_posted=may_have_posted),
                silence_check_seconds=SILENCE,
            )
        assert (busy.value.type, busy.value.non_retryable) == (BUSY_WITH_EARLIER_RUN, False)
        assert busy.value.details[0]["genie_run_id"] == earlier
        assert busy.value.details[0]["status"] == 409
        assert f"busy with run {earlier} of an earlier turn" in busy.value.message
    await prod.decide_skill(GENIE, cid, call, user_id=user_id, approved=True)
    # Once it has ended, the message is posted and streamed.
    for _ in range(100):
        detail = await prod.get_conversation(GENIE, cid, user_id=user_id)
        if detail.last_event is not None and detail.last_event.type == "processing.finished":
            break
        await asyncio.sleep(0.05)
    result = await _segment(prod, _inp(cid, user_id, "this turn", may_have_posted=True))
    assert result.outcome == "finished"
    assert result.cursor.genie_run_id != earlier
    assert result.messages == ["You said: this turn"]


async def test_a_retry_never_adopts_an_earlier_turns_run(prod: GenieClient, user_id: str) -> None:
    """An earlier turn's run ended unrecorded (the turn failed before learning its id):
    a retry of the next turn that may have posted finds it newer than the last recorded
    run, but E6 says another text started it, so the message is posted, once."""
    cid = (await prod.create_conversation(GENIE, user_id=user_id)).conversation_id
    async with prod.stream_message(GENIE, cid, "failed turn", user_id=user_id) as events:
        earlier = [e.genie_run_id async for e in events][0]  # noqa: RUF015
    runs = RunInspector(prod, GENIE, cid, user_id=user_id)
    assert await runs.run_newer_than(None) == earlier  # the old, text-blind answer
    assert await runs.run_newer_than(None, text="failed turn") == earlier
    assert await runs.run_newer_than(None, text="next turn") is None
    result = await _segment(prod, _inp(cid, user_id, "next turn", may_have_posted=True))
    assert result.cursor.genie_run_id != earlier
    assert result.messages == ["You said: next turn"]
    # Had that post met a 409, the run it started would be recognised as this turn's.
    busy = await runs.busy_run("next turn", previous_run_id=earlier, may_have_posted=True)
    assert (busy.ours, busy.run_id) == (True, result.cursor.genie_run_id)
    first_post = await runs.busy_run("next turn", previous_run_id=earlier, may_have_posted=False)
    assert not first_post.ours  # a first post cannot have started it


async def test_full_pages_without_paging_stop_when_time_stands_still() -> None:
    """Every event of a full page has the same ``created_at``, and the server's
    ``since_created_at`` may be inclusive: the same page would come back forever."""
    stamp = "2026-06-08T12:00:00.000000Z"
    page = {
        "result": {
            "events": [
                {"type": "agent.message", "event_id": f"evt_{i}", "created_at": stamp}
                for i in range(3)
            ]
        }
    }
    calls: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.params.get("since_created_at"))
        return httpx.Response(200, json=page)

    transport = httpx.MockTransport(handle)
    async with GenieClient("https://genie.test", ApiKeyAuth("k"), transport=transport) as c:
        pages = c.iter_event_pages("g", user_id="u", conversation_id="c", limit=3)
        got = [p async for p in pages]
    assert len(got) == 2  # the first, then one from its newest created_at
    assert calls == [None, stamp]
