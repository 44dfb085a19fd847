"""The real processes: ``worker.py`` with ``GENIE_PAYLOAD_KEYS``, ``geniectl``, the codec
server, and the official ``temporal`` CLI with and without ``--codec-endpoint``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from genie_codec.process import CodecServerProcess
from genie_stack import WorkerProcess, temporal_cli, worker_env
from tests.cli.test_geniectl import Run, geniectl
from tests.codec.conftest import K1, address
from tests.services import SIM_API_KEY, SimProcess
from tests.workflow.helpers import eventually

TOKEN = "process-test-token-0123456789"


@pytest.fixture
async def encrypting_worker(
    temporal_env: WorkflowEnvironment, sim: SimProcess, tmp_path: Path
) -> AsyncIterator[WorkerProcess]:
    """``python -m worker`` configured only through its environment (its task queue is
    its ``GENIE_TASK_QUEUE``), logging audit entries as JSON lines."""
    tq = f"test-proc-{uuid.uuid4()}"
    env = worker_env(
        temporal_address=address(temporal_env),
        api_base_url=sim.base_url,
        api_key=SIM_API_KEY,
        task_queue=tq,
        settings={"payload_keys": K1, "workflow_sandbox": True, "audit_log": True},
        inherit=False,
    )
    worker = WorkerProcess(log_path=tmp_path / "worker.log", env=env)
    await worker.start()
    try:
        assert "payloads encrypted with key k1" in worker.log_since_start()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def codec_server(tmp_path: Path) -> AsyncIterator[CodecServerProcess]:
    server = CodecServerProcess(
        log_path=tmp_path / "codec.log",
        env={"GENIE_PAYLOAD_KEYS": K1, "GENIE_CODEC_TOKEN": TOKEN},
    )
    await server.start()
    try:
        yield server
    finally:
        server.stop()


async def _temporal(*args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        temporal_cli(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def _async(value: list[dict[str, object]]) -> list[dict[str, object]]:
    return value


def _audit_lines(worker: WorkerProcess, kind: str) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in worker.log_since_start().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("log") == "genie.audit" and x["kind"] == kind]


def _payloads(show_json: str) -> tuple[bytes, bytes]:
    """All payload data, and all metadata values, of ``temporal workflow show -o json``
    (it prints both base64-encoded, decoded or not), search attributes aside."""
    data: list[bytes] = []
    meta: list[bytes] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "metadata" in node and isinstance(node.get("data", ""), str):
                data.append(base64.b64decode(node.get("data", "")))
                meta.extend(base64.b64decode(v) for v in node["metadata"].values())
            for key, value in node.items():
                if key != "searchAttributes":  # indexed as they are (docs/privacy.md)
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(show_json))
    return b"\n".join(data), b"\n".join(meta)


async def test_the_worker_process_encrypts_and_geniectl_reads_plain(
    temporal_env: WorkflowEnvironment,
    encrypting_worker: WorkerProcess,
    codec_server: CodecServerProcess,
) -> None:
    tag = uuid.uuid4().hex[:8]
    wid, text, user = f"test-proc-{tag}", f"a private note {tag}", f"user-{tag}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GENIE_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": address(temporal_env),
        "GENIE_TASK_QUEUE": encrypting_worker.env["GENIE_TASK_QUEUE"],
        "GENIE_PAYLOAD_KEYS": K1,
    }
    ask = asyncio.create_task(
        geniectl(env, "ask", wid, f"{text} confirm:send_email", "--genie", "g", "--user", user)
    )
    status = await eventually(
        lambda: geniectl(env, "status", wid, "--json"),
        lambda r: r.code == 0 and bool(r.json()["pending_approvals"]),
        what="the pause",
    )
    call = status.json()["pending_approvals"][0]["call_id"]
    assert status.json()["user_id"] == user
    ok = await geniectl(env, "approve", wid, call, "--approver", f"ops-{tag}")
    assert ok.code == 0, ok.stderr
    r = await ask
    assert r.code == 0 and text in r.stdout, r.stderr  # the pause, shown in plain
    # GENIE_AUDIT_LOG=true: the decision is one bare JSON line in the worker's output.
    lines = await eventually(
        lambda: _async(_audit_lines(encrypting_worker, "decision_applied")),
        bool,
        what="the audit line",
    )
    (applied,) = lines
    assert (applied["actor"], applied["workflow_id"]) == (f"ops-{tag}", wid)
    (decided,) = _audit_lines(encrypting_worker, "skill_decision")
    assert (decided["via"], decided["source"], decided["accepted"]) == ("update", "update", True)

    # The official CLI, as an operator without the codec sees history: ciphertext.
    show = ["workflow", "show", "--workflow-id", wid, "--output", "json"]
    show += ["--address", address(temporal_env)]
    raw = await _temporal(*show)
    assert raw.code == 0, raw.stderr
    data, encodings = _payloads(raw.stdout)
    assert text.encode() not in data and user.encode() not in data
    assert b"binary/encrypted" in encodings
    # Through the codec server, with its token: the same history, readable. (Without
    # the token the CLI gets 401s and gives up: tests/codec/test_server.py.)
    codec = ["--codec-endpoint", codec_server.url]
    decoded = await _temporal(*show, *codec, "--codec-auth", f"Bearer {TOKEN}")
    assert decoded.code == 0, decoded.stderr
    data, encodings = _payloads(decoded.stdout)
    assert text.encode() in data and user.encode() in data
    assert b"binary/encrypted" not in encodings

    # geniectl without the key: one line, naming what to set.
    no_key = await geniectl({**env, "GENIE_PAYLOAD_KEYS": ""}, "status", wid)
    assert no_key.code == 2 and "Traceback" not in no_key.stderr
    assert "GENIE_PAYLOAD_KEYS" in no_key.stderr
