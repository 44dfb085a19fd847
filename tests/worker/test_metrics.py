"""``python worker.py`` serves Prometheus metrics: the SDK's and the conversation counters."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from geniectl import GenieConversations
from tests.services import REPO_ROOT, SIM_API_KEY, SimProcess, free_port, wait_http_ok


@pytest.fixture
def worker_process(
    temporal_env: WorkflowEnvironment, sim: SimProcess, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """A real worker process on its own task queue; yields (task queue, metrics URL)."""
    tq, port = f"metrics-{uuid.uuid4()}", free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GENIE_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "GENIE_API_BASE_URL": sim.base_url,
        "GENIE_API_KEY": SIM_API_KEY,
        "GENIE_TASK_QUEUE": tq,
        "GENIE_METRICS_PORT": str(port),
    }
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "worker.py")], env=env, stdout=log, stderr=log
        )
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            wait_http_ok(url, proc=proc)
            yield tq, url
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0  # a clean SIGTERM shutdown exits 0


def _value(text: str, name: str, label: str = "") -> float:
    """Sum of a metric's samples (optionally those whose labels contain ``label``)."""
    total = 0.0
    for m in re.finditer(rf"^{name}(?:_total)?(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M):
        if label in (m.group(1) or ""):
            total += float(m.group(2))
    return total


async def test_worker_serves_sdk_and_conversation_metrics(
    temporal_env: WorkflowEnvironment, sim: SimProcess, worker_process: tuple[str, str]
) -> None:
    tq, url = worker_process
    api = GenieConversations(temporal_env.client, task_queue=tq)
    wid = await api.start("gin-metrics", "user-1", workflow_id=f"metrics-{uuid.uuid4()}")
    assert (await api.ask(wid, "hello")).status == "completed"
    conv_id = (await api.status(wid)).conversation_id
    # Cut the next stream after two events, so the segment must re-attach (E8).
    sim.fault(endpoint="send_message", conversation_id=conv_id, drop_after_events=2)
    assert (await api.ask(wid, "steps:5")).status == "completed"
    res = await api.ask(wid, "confirm:send_email")
    await api.approve(wid, res.pending.approvals[0].call_id, approver="ops")
    await api.wait(wid, res.turn, wait_for="completion")

    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(100):  # the SDK exports on its own period
            text = (await http.get(url)).text
            if _value(text, "genie_turns", 'status="completed"') >= 3:
                break
            await asyncio.sleep(0.1)
    assert _value(text, "genie_turns", 'status="completed"') >= 3
    assert _value(text, "genie_approvals", 'decision="approved"') >= 1
    assert _value(text, "genie_stream_reconnects") >= 1
    assert _value(text, "genie_stream_events") >= 10
    assert "temporal_activity_execution_latency" in text  # the SDK's own worker metrics
    assert SIM_API_KEY not in text
