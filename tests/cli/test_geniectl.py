"""The real ``geniectl`` console script, as a subprocess, against the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from genie_stack import free_ports
from tests.services import free_port

GENIECTL = str(Path(sys.executable).parent / "geniectl")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli_env(temporal_env: WorkflowEnvironment, task_queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "GENIE_TASK_QUEUE": task_queue,
        "COLUMNS": "200",
    }


async def geniectl(env: dict[str, str], *args: str, within: float = 60) -> Run:
    # Async, so the in-process worker keeps running while the CLI waits on it.
    proc = await asyncio.create_subprocess_exec(
        GENIECTL,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        # Never leave a stuck CLI (or the stack `geniectl dev` started) behind.
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def _started(env: dict[str, str]) -> str:
    r = await geniectl(env, "start", "gin-cli", "user-cli", "--json")
    assert r.code == 0, r.stderr
    wid: str = r.json()["workflow_id"]
    return wid


async def _pending(env: dict[str, str], wid: str) -> dict[str, Any]:
    """The conversation's entry in ``geniectl pending --json``, once it is listed."""
    t0 = time.monotonic()
    while True:
        assert time.monotonic() - t0 < 20, "the pause never reached `geniectl pending`"
        r = await geniectl(env, "pending", "--json")
        assert r.code == 0, r.stderr
        item = next((i for i in r.json() if i["workflow_id"] == wid), None)
        if item is not None:
            return dict(item)


async def test_ask_prints_the_reply(cli_env: dict[str, str]) -> None:
    wid = await _started(cli_env)
    r = await geniectl(cli_env, "ask", wid, "hello from the shell")
    assert r.code == 0, r.stderr
    assert "You said: hello from the shell" in r.stdout
    j = await geniectl(cli_env, "ask", wid, "again", "--json")
    assert j.code == 0
    # JSON Lines: each message as it arrived, then the result.
    *messages, result = [json.loads(line) for line in j.stdout.splitlines()]
    assert messages == [{"turn": 2, "message": "You said: again"}]
    assert result["status"] == "completed" and result["turn"] == 2


async def test_ask_with_update_with_start_creates_the_conversation(cli_env: dict[str, str]) -> None:
    wid = f"cli-{uuid.uuid4()}"
    r = await geniectl(cli_env, "ask", wid, "hi", "--genie", "gin-cli", "--user", "u1")
    assert r.code == 0, r.stderr
    assert "You said: hi" in r.stdout
    bad = await geniectl(cli_env, "ask", wid, "hi", "--genie", "gin-cli")
    assert bad.code == 2 and "--genie and --user go together" in bad.stderr


async def test_approval_round_trip_from_the_shell(cli_env: dict[str, str]) -> None:
    wid = await _started(cli_env)
    ask = asyncio.create_task(geniectl(cli_env, "ask", wid, "please confirm:send_email"))

    # The inbox shows the pause (visibility is fed from search attributes).
    item = await _pending(cli_env, wid)
    call_id = item["approvals"][0]["call_id"]
    assert item["approvals"][0]["skill_name"] == "send_email"
    table = await geniectl(cli_env, "pending")
    assert wid in table.stdout and call_id in table.stdout

    wrong = await geniectl(cli_env, "approve", wid, "call_wrong", "--approver", "ops")
    assert wrong.code == 1
    assert "UnknownCallId" in wrong.stderr and call_id in wrong.stderr

    ok = await geniectl(cli_env, "approve", wid, call_id, "--approver", "ops")
    assert ok.code == 0, ok.stderr
    again = await geniectl(cli_env, "approve", wid, call_id, "--approver", "ops")
    assert again.code == 1 and "AlreadyDecided" in again.stderr

    r = await ask
    assert r.code == 0, r.stderr
    assert call_id in r.stdout  # the pause was shown with its call id …
    assert f"geniectl approve {wid} {call_id}" in r.stdout  # … and the command to decide it
    assert "send_email" in r.stdout.split("awaiting_approval")[-1]  # then the reply

    st = await geniectl(cli_env, "status", wid, "--json")
    audit = st.json()["audit"]
    assert audit[-1]["actor"] == "ops" and audit[-1]["decision"] == "approved"
    h = await geniectl(cli_env, "history", wid, "--json")
    assert h.json()["turns"][0]["status"] == "completed"


async def test_a_pause_with_parameters_too_long_to_keep_whole_says_so(
    cli_env: dict[str, str],
) -> None:
    wid = await _started(cli_env)
    ask = asyncio.create_task(geniectl(cli_env, "ask", wid, "draft confirm:send_email params:64"))
    (approval,) = (await _pending(cli_env, wid))["approvals"]
    assert approval["parameters_shortened"] is True
    assert approval["skill_parameters"]["body"].endswith(" more characters]")
    no = await geniectl(cli_env, "reject", wid, approval["call_id"], "--reason", "too long")
    assert no.code == 0, no.stderr
    r = await ask
    assert r.code == 0, r.stderr
    assert "shortened where marked" in r.stdout, r.stdout


async def test_reject_sends_the_reason(cli_env: dict[str, str]) -> None:
    wid = await _started(cli_env)
    r = await geniectl(cli_env, "send", wid, "confirm:delete_everything", "--json")
    turn = r.json()["turn"]
    call_id = None
    deadline = time.monotonic() + 20
    while call_id is None:
        assert time.monotonic() < deadline, "the confirmation never showed in status"
        st = (await geniectl(cli_env, "status", wid, "--json")).json()
        call_id = next((p["call_id"] for p in st["pending_approvals"]), None)
    r = await geniectl(cli_env, "reject", wid, call_id, "--reason", "too risky")
    assert r.code == 0, r.stderr
    h = None
    while h is None or h["turns"][-1]["status"] != "completed":
        assert time.monotonic() < deadline + 20, "the rejected turn never completed"
        h = (await geniectl(cli_env, "history", wid, "--json")).json()
    assert h["turns"][-1]["turn"] == turn
    assert "too risky" in h["turns"][-1]["reply"]
    text = await geniectl(cli_env, "history", wid)
    assert "too risky" in text.stdout


async def test_end_then_send_is_refused(cli_env: dict[str, str]) -> None:
    wid = await _started(cli_env)
    assert (await geniectl(cli_env, "end", wid, "--reason", "bye")).code == 0
    r = await geniectl(cli_env, "send", wid, "anyone?")
    assert r.code == 1 and "ConversationEnded" in r.stderr


async def test_errors_map_to_exit_codes(cli_env: dict[str, str]) -> None:
    missing = await geniectl(cli_env, "status", f"no-such-{uuid.uuid4()}")
    assert missing.code == 3 and "no conversation" in missing.stderr
    usage = await geniectl(cli_env, "approve")
    assert usage.code == 2
    down = {**cli_env, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    r = await geniectl(down, "status", "x")
    assert r.code == 2 and "cannot connect to Temporal" in r.stderr
    bad = {**cli_env, "GENIE_TASK_QUEUE": ""}
    r = await geniectl(bad, "status", "x")
    assert r.code == 2 and "GENIE_TASK_QUEUE" in r.stderr


@pytest.mark.slow
def _dev_flags(state_dir: Path, ports: list[int]) -> list[str]:
    """`geniectl dev` on free ports (temporal, ui, sim, metrics, inbox, codec) and its own
    state dir."""
    names = (
        "--temporal-port",
        "--ui-port",
        "--sim-port",
        "--metrics-port",
        "--inbox-port",
        "--codec-port",
    )
    return [
        "--state-dir",
        str(state_dir),
        *(a for n, p in zip(names, ports, strict=True) for a in (n, str(p))),
    ]


async def test_dev_stack_runs_the_demo_end_to_end(tmp_path: Path) -> None:
    """README command 1, with --auto-approve so it finishes alone: Temporal (SQLite),
    simulator and worker come up, the demo pauses, is approved, and replies."""
    ports = free_ports(6)
    args = [
        "dev",
        "--demo",
        "--auto-approve",
        "--exit-after-demo",
        *_dev_flags(tmp_path, ports),
    ]
    env = {**os.environ, "COLUMNS": "200"}
    r = await geniectl(env, *args, within=120)
    assert r.code == 0, r.stderr + r.stdout
    assert "awaiting_approval" in r.stdout and "the genie replied" in r.stdout
    assert f"http://127.0.0.1:{ports[1]}/namespaces/default/workflows/demo-" in r.stdout
    assert (tmp_path / "temporal.db").exists()
    # Everything stopped: the ports are free again.
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


async def test_dev_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = await geniectl(
            {**os.environ}, "dev", "--state-dir", str(tmp_path), "--sim-port", str(port)
        )
    assert r.code == 2
    assert f"port {port} (the simulator) is already in use" in r.stderr


async def _read_until(stream: asyncio.StreamReader, needle: str, within: float) -> str:
    seen = ""
    async with asyncio.timeout(within):
        while needle not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {needle!r}:\n{seen}")
            seen += line.decode()
    return seen


@pytest.mark.slow
async def test_dev_demo_survives_ctrl_c_and_the_printed_command_approves_it(
    tmp_path: Path,
) -> None:
    """The README tour: the demo pauses and prints how to approve; Ctrl-C stops every
    child cleanly; the conversation survives a restart on the SQLite file; the printed
    command, pasted as is, approves it and the reply appears."""
    ports = free_ports(6)
    dev_args = [
        "dev",
        *_dev_flags(tmp_path, ports),
    ]
    env = {**os.environ, "COLUMNS": "300"}
    started: list[asyncio.subprocess.Process] = []
    try:
        proc = await asyncio.create_subprocess_exec(
            GENIECTL,
            *dev_args,
            "--demo",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(proc)
        assert proc.stdout is not None
        shown = await _read_until(proc.stdout, "--reason", within=90)
        approve = next(line for line in shown.splitlines() if " approve demo-" in line)
        command = approve.split("$ ", 1)[1].strip()
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and "Traceback" not in err.decode(), err.decode()

        # Restart on the same state directory; the paused conversation is still there.
        restarted = await asyncio.create_subprocess_exec(
            GENIECTL,
            *dev_args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(restarted)
        assert restarted.stdout is not None
        await _read_until(restarted.stdout, "Try, in another terminal", within=90)
        shell = await asyncio.create_subprocess_shell(
            command,
            cwd=Path(GENIECTL).parent.parent.parent,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(shell.communicate(), 60)
        assert shell.returncode == 0, err.decode()
        wid = command.split(" approve ", 1)[1].split()[0]
        cli_env = {**env, "TEMPORAL_ADDRESS": f"127.0.0.1:{ports[0]}"}
        async with asyncio.timeout(60):
            while True:
                h = (await geniectl(cli_env, "history", wid, "--json")).json()
                if h["turns"][0]["status"] == "completed":
                    break
        assert "send_email" in h["turns"][0]["reply"]
        restarted.send_signal(signal.SIGINT)
        await asyncio.wait_for(restarted.communicate(), 60)
        assert restarted.returncode == 0
    finally:
        # A failing assertion must not leave a whole stack running: stop what we started.
        for p in started:
            if p.returncode is None:
                p.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(p.wait(), 60)
                except TimeoutError:
                    p.kill()


async def test_dev_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """`geniectl dev` SIGKILLed (no chance to clean up): the kernel stops its Temporal
    server, simulator and worker, so nothing is left holding ports or the SQLite file."""
    ports = free_ports(6)
    proc = await asyncio.create_subprocess_exec(
        GENIECTL,
        "dev",
        *_dev_flags(tmp_path, ports),
        env={**os.environ, "COLUMNS": "300"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        await _read_until(proc.stdout, "Try, in another terminal", within=90)
    finally:
        proc.kill()
        await proc.wait()
    async with asyncio.timeout(30):
        for port in ports:
            while True:  # each child exits on SIGTERM within a few seconds
                with socket.socket() as s:
                    try:
                        s.bind(("127.0.0.1", port))
                        break
                    except OSError:
                        pass
                await asyncio.sleep(0.1)
