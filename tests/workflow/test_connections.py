"""Runtime connections: done, rejected, link refresh, timeout, and production's quirks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from genie_api import ApiKeyAuth, GenieClient
from geniectl import Refused
from tests.conftest import worker_settings
from tests.services import SIM_API_KEY, SimProcess, running_sim
from tests.workflow.helpers import convs, eventually, patch_markers, start, timer_waits
from worker import build_worker
from workflows import ConversationPolicy, GenieConversation, _backoff, errors
from workflows._patches import NEWEST_LEVEL_ID

# No automatic probing unless a test asks for it: these tests are about the human path.
NO_PROBE = ConversationPolicy(connection_poll_interval=timedelta(0))


async def _open_link(url: str) -> None:
    """What the end user does: open the auth link in a browser."""
    async with httpx.AsyncClient(timeout=5) as http:
        (await http.get(url)).raise_for_status()


async def _parked(api, wid: str, text: str = "connect:salesforce"):
    accepted = await api.send(wid, text)
    res = await api.wait(wid, accepted.turn)
    assert res.status == "awaiting_connection", res
    (pending,) = res.pending.connections
    return accepted.turn, pending


async def test_connection_done_resumes_the_run(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=NO_PROBE)
    turn, pending = await _parked(api, wid)
    assert pending.connector_name and pending.auth_url
    st = await api.status(wid)
    assert st.state == "awaiting_connection"
    await _open_link(pending.auth_url)  # the user authenticates
    rec = await api.connect_done(wid, pending.attempt_id, actor="alice")
    assert rec.decision == "done"
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed" and done.reply


async def test_connection_reject_posts_e12_and_the_genie_says_so(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=NO_PROBE)
    turn, pending = await _parked(api, wid)
    await api.connect_reject(wid, pending.attempt_id, actor="alice", reason="not today")
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    assert done.reply is not None and "declined" in done.reply.lower()
    st = await api.status(wid)
    conv = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["connection_reject_posts"] == {pending.attempt_id: 1}


async def test_auth_link_refresh_returns_a_fresh_link(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=NO_PROBE)
    turn, pending = await _parked(api, wid)
    link = await api.auth_link(wid, pending.attempt_id)
    assert link.status == "auth_required" and link.url and link.url != pending.auth_url
    st = await api.status(wid)
    assert st.pending_connections[0].auth_url == link.url  # the card shows the fresh one
    with pytest.raises(Refused) as e:
        await api.auth_link(wid, "rca_unknown")
    assert e.value.type == errors.UNKNOWN_ATTEMPT_ID
    await api.connect_reject(wid, pending.attempt_id, actor="alice")
    await api.wait(wid, turn, wait_for="completion")


async def test_connection_decisions_are_validated(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api, policy=NO_PROBE.model_copy(update={"approvers": ["alice"]}))
    turn, pending = await _parked(api, wid)
    with pytest.raises(Refused) as e:
        await api.connect_done(wid, "rca_nope", actor="alice")
    assert e.value.type == errors.UNKNOWN_ATTEMPT_ID
    with pytest.raises(Refused) as e:
        await api.connect_done(wid, pending.attempt_id, actor="mallory")
    assert e.value.type == errors.APPROVER_NOT_ALLOWED
    await api.connect_reject(wid, pending.attempt_id, actor="alice")
    with pytest.raises(Refused) as e:
        await api.connect_done(wid, pending.attempt_id, actor="alice")
    assert e.value.type == errors.ALREADY_DECIDED
    await api.wait(wid, turn, wait_for="completion")


async def test_connection_timeout_rejects(client: Client, task_queue: str, sim: SimProcess) -> None:
    api = convs(client, task_queue)
    wid = await start(
        api, policy=NO_PROBE.model_copy(update={"connection_timeout": timedelta(seconds=1)})
    )
    turn, pending = await _parked(api, wid)
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    st = await api.status(wid)
    assert any(a.kind == "connection_timeout" and a.ref == pending.attempt_id for a in st.audit)
    conv = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["connection_reject_posts"] == {pending.attempt_id: 1}


async def test_completed_connection_is_detected_without_anyone_saying_so(
    client: Client, task_queue: str
) -> None:
    """The user opens the link; nobody calls connect-done. The workflow's probe sees the
    run move on and resumes by itself (documented mode: auth_success is streamed)."""
    api = convs(client, task_queue)
    policy = ConversationPolicy(connection_poll_interval=timedelta(milliseconds=300))
    wid = await start(api, policy=policy)
    turn, pending = await _parked(api, wid)
    assert pending.auth_url
    await _open_link(pending.auth_url)
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    st = await api.status(wid)
    assert any(a.kind == "connection_detected" for a in st.audit)


async def test_a_long_pause_is_probed_ever_less_often_and_still_detected(
    client: Client, sim: SimProcess, genie: GenieClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the doubling cap, a probe waits a twelfth of the time waited, so a pause with
    a far deadline adds history and billable actions slowly, yet a user who connects late
    is noticed.

    The cap is five minutes, so the rule starts after an hour; the worker runs in this
    process, and the test lowers the cap to 200 ms (a constant stood in for, not a peer
    mocked) so that it starts after 2.4 s: unsandboxed, so the workflow sees it."""
    cap = timedelta(milliseconds=200)
    monkeypatch.setattr(_backoff, "MAX_CONNECTION_POLL", cap)
    tq = f"test-probes-{uuid.uuid4()}"
    async with build_worker(
        client, worker_settings(sim, workflow_sandbox=False), genie, task_queue=tq
    ):
        await _probed_less_often_and_detected(client, tq, cap)


async def _probed_less_often_and_detected(client: Client, task_queue: str, cap: timedelta) -> None:
    api = convs(client, task_queue)
    first = timedelta(milliseconds=100)
    wid = await start(api, policy=ConversationPolicy(connection_poll_interval=first))
    turn, pending = await _parked(api, wid)
    assert pending.auth_url
    # The waits between probes (not the turn's timer that shows GenieState running).
    since, waits = pending.requested_at.timestamp(), f"connection {pending.attempt_id}".encode()
    # The user connects late: once the probes wait longer than the cap, twice.
    await eventually(
        lambda: api.handle(wid).fetch_history(),
        lambda h: sum(d > cap for _, d in timer_waits(h, since, waits)) >= 2,
        what="probes past the cap's hour",
        within=60,
    )
    opened = datetime.now(UTC) - pending.requested_at
    await _open_link(pending.auth_url)
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    st = await api.status(wid)
    detected = next(a for a in st.audit if a.kind == "connection_detected")
    waited = detected.at - pending.requested_at
    history = await api.handle(wid).fetch_history()
    probes = [
        e
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "probe_connection"
    ]
    # Bounded: at most as many probes as the schedule has by then (each also takes its
    # round trips); probing at the cap, every 200 ms, would have been about 45.
    schedule = _backoff.probe_offsets(first, waited)
    assert 3 <= len(probes) <= len(schedule) + 1, (len(probes), len(schedule), waited)
    assert len(schedule) < 35, schedule
    # Each wait before a probe is what the rule says for that moment: never more than a
    # twelfth of the time waited (or the cap), and past the cap's hour, more than the cap.
    ticks = timer_waits(history, since, waits)
    slack = timedelta(milliseconds=100)
    assert all(d <= max(cap, timedelta(seconds=at) / 12) + slack for at, d in ticks), ticks
    assert any(d > cap for _, d in ticks), ticks
    # Noticed within a twelfth of the wait (and a probe's round trips) of the link opening.
    assert waited < opened * (1 + 1 / _backoff.AGE_SHARE) + timedelta(seconds=2), (waited, opened)
    assert patch_markers(history) == [NEWEST_LEVEL_ID]  # the level stands for probe-by-age
    await Replayer(
        workflows=[GenieConversation],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),  # with the lowered cap, as it ran
    ).replay_workflow(history)


# ---------------------------------------------------------------- production quirk mode


@pytest.fixture(scope="module")
def quirk_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    log = tmp_path_factory.mktemp("quirk") / "sim.log"
    flags = ("--no-auth-success", "--hide-resumed-output", "--states", "production")
    with running_sim(*flags, "--ping-interval", "0.3", log_path=log) as s:
        yield s


@pytest.fixture
async def quirk_queue(client: Client, quirk_sim: SimProcess) -> AsyncIterator[str]:
    tq = f"test-quirk-{uuid.uuid4()}"
    settings = worker_settings(quirk_sim, stream_silence_check_seconds=0.5)
    async with (
        GenieClient(quirk_sim.base_url, ApiKeyAuth(SIM_API_KEY)) as genie,
        build_worker(client, settings, genie, task_queue=tq),
    ):
        yield tq


@pytest.mark.parametrize("how", ["connect-done", "detected"])
async def test_quirk_mode_resumed_output_only_in_message_history(
    client: Client, quirk_queue: str, how: str
) -> None:
    """Production: after the user authenticates no auth_success arrives and the resumed
    run never reaches any stream, E8 or E9 — only E3 (idle) and E6 show the answer."""
    api = convs(client, quirk_queue)
    probe = timedelta(milliseconds=300) if how == "detected" else timedelta(0)
    wid = await start(api, policy=ConversationPolicy(connection_poll_interval=probe))
    turn, pending = await _parked(api, wid, "connect:salesforce")
    assert pending.auth_url
    await _open_link(pending.auth_url)
    if how == "connect-done":
        await api.connect_done(wid, pending.attempt_id, actor="alice")
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    assert done.reply and "salesforce" in done.reply.lower()
    st = await eventually(lambda: api.status(wid), lambda s: s.state == "idle", what="idle")
    assert st.last_error is None
