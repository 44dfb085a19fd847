"""Whole conversations against an API that compresses every answer, streams included.

Whether the live API (or a gateway in front of it) compresses is not known; the client
asks for ``gzip, deflate`` and inflates in bounded steps (``genie_api._decode``). Here
the simulator's ``--gzip`` compresses each answer and flushes each event, and streams
are cut every second (``--max-stream-seconds``), so creating, sending, streaming,
deciding, resuming, reconnecting and the look-ups all go through the decoder, exactly
once each.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from temporalio.client import Client

from genie_api import ApiKeyAuth, GenieClient
from tests.conftest import worker_settings
from tests.services import SIM_API_KEY, SimProcess, running_sim
from tests.workflow.helpers import convs, start
from worker import build_worker


@pytest.fixture(scope="module")
def gzip_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    log = tmp_path_factory.mktemp("gzip") / "sim.log"
    flags = ("--gzip", "--max-stream-seconds", "1", "--ping-interval", "0.3")
    with running_sim(*flags, log_path=log) as s:
        yield s


@pytest.fixture
async def gzip_queue(client: Client, gzip_sim: SimProcess) -> AsyncIterator[str]:
    tq = f"test-gzip-{uuid.uuid4()}"
    async with (
        GenieClient(gzip_sim.base_url, ApiKeyAuth(SIM_API_KEY)) as genie,
        build_worker(client, worker_settings(gzip_sim), genie, task_queue=tq),
    ):
        yield tq


async def test_a_compressing_api_serves_whole_conversations_exactly_once(
    client: Client, gzip_sim: SimProcess, gzip_queue: str
) -> None:
    # What the worker gets is really compressed: the simulator's answer to any client
    # asking as ours does.
    async with httpx.AsyncClient() as http:
        probe = await http.get(
            f"{gzip_sim.base_url}/api/v1/genies/gin-x/chat/conversations",
            headers={"Authorization": f"Bearer {SIM_API_KEY}", "X-IDP-User-Id": "u"},
        )
    assert probe.headers.get("content-encoding") == "gzip", probe.headers

    api = convs(client, gzip_queue)
    wid = await start(api)
    plain = await api.ask(wid, "hello über café ☕", wait_for="completion")
    assert plain.status == "completed" and plain.reply == "You said: hello über café ☕"

    # Over three seconds of events, so the stream is cut and resumed (E8) twice or more.
    long = await api.ask(wid, "delay:300 steps:10", wait_for="completion")
    assert long.status == "completed", long
    steps = [f"step {i} of 10" for i in range(1, 11)]
    assert long.messages == [*steps, "You said: delay:300 steps:10"]  # each once, in order

    paused = await api.ask(wid, "steps:2 please confirm:send_email")
    assert paused.status == "awaiting_approval", paused
    (item,) = paused.pending.approvals
    decided = await api.approve(wid, item.call_id, approver="alice", wait_for="completion")
    assert decided.result is not None and decided.result.status == "completed", decided
    assert "send_email" in (decided.result.reply or "")

    st = await api.status(wid)
    assert st.last_error is None and st.state == "idle"
    conv = gzip_sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["messages_accepted"] == 3 and conv["message_posts"] == 3, conv
    assert conv["skill_decisions_applied"] == {item.call_id: 1}, conv
    assert gzip_sim.stats()["requests"]["reconnect"] >= 2  # type: ignore[index]
