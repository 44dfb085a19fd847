"""Runtime connections: done, rejected, link refresh, timeout, and production's quirks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from temporalio.client import Client

from genie_api import ApiKeyAuth, GenieClient
from geniectl import Refused
from tests.conftest import worker_settings
from tests.services import SIM_API_KEY, SimProcess, running_sim
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker
from workflows import ConversationPolicy, errors

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
