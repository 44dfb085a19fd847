"""`geniectl ask` shows the genie's messages while the turn runs, at no history cost."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.cli.test_geniectl import GENIECTL, _started


@pytest.fixture
def cli_env(temporal_env: WorkflowEnvironment, task_queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "GENIE_TASK_QUEUE": task_queue,
    }


async def test_ask_json_prints_each_message_as_it_arrives(
    cli_env: dict[str, str],
    client: Client,
) -> None:
    wid = await _started(cli_env)
    proc = await asyncio.create_subprocess_exec(
        GENIECTL,
        "ask",
        wid,
        "steps:1 delay:2500 steps:1",
        "--json",
        env=cli_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    arrivals: list[tuple[float, dict[str, object]]] = []
    async with asyncio.timeout(60):
        while line := await proc.stdout.readline():
            arrivals.append((time.monotonic(), json.loads(line)))
        await proc.wait()
    assert proc.returncode == 0
    *messages, (done_at, result) = arrivals
    assert [m["message"] for _, m in messages] == [
        "step 1 of 1",
        "step 1 of 1",
        "You said: steps:1 delay:2500 steps:1",
    ]
    assert result["status"] == "completed"
    # The first step was printed while the run still had seconds to go: live, not at the end.
    assert done_at - messages[0][0] > 1.5, arrivals
    # Live progress is read through describe (heartbeats): no update or signal per message.
    kinds = [ev.event_type async for ev in client.get_workflow_handle(wid).fetch_history_events()]
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) <= 2
