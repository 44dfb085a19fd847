"""What ``geniectl`` says when something is wrong, as a new user meets it.

Each test runs the real console script (or, for layout, the real renderer at a fixed
width) and checks the message a person or a script gets: the exit code, that the text
names the next step, and that nothing is wrapped or split where it would be copied.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console
from temporalio.testing import WorkflowEnvironment

from geniectl import PendingItem
from geniectl._render import EXIT_CODES, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_REFUSED, print_pending
from tests.services import free_port
from workflows import MAX_MESSAGE_CHARS, PendingApproval, PendingConnection

GENIECTL = str(Path(sys.executable).parent / "geniectl")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def _geniectl(env: dict[str, str], *args: str, within: float = 60) -> Run:
    proc = await asyncio.create_subprocess_exec(
        GENIECTL, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def _narrow(**extra: str) -> dict[str, str]:
    """A pipe that Rich would treat as an 80-column terminal."""
    env = {k: v for k, v in os.environ.items() if k != "GENIECTL_APPROVER"}
    return {**env, "COLUMNS": "80", **extra}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ---------------------------------------------------------------------- no server needed


async def test_help_lists_every_exit_code() -> None:
    r = await _geniectl({**os.environ, "COLUMNS": "200"}, "--help")
    assert r.code == 0, r.stderr
    text = " ".join(r.stdout.split())  # the help panel may wrap the epilog
    for code, meaning in EXIT_CODES:
        assert f"{code} {meaning}" in text, (code, text)


async def test_unreachable_temporal_names_the_address_and_how_to_start_it() -> None:
    address = f"127.0.0.1:{free_port()}"
    r = await _geniectl(_narrow(TEMPORAL_ADDRESS=address), "status", "anything")
    assert r.code == EXIT_ERROR
    assert "tonic" not in r.stderr and "transport::Error" not in r.stderr, r.stderr
    lines = _error_lines(r.stderr)
    # One line, although far wider than the 80 columns: a pipe is not a terminal.
    assert len(lines) == 1, r.stderr
    assert f"cannot connect to Temporal at {address} (from TEMPORAL_ADDRESS)" in lines[0]
    assert "Connection refused" in lines[0]
    assert "make run" in lines[0] and "geniectl dev" in lines[0]


def _pending(n: int = 2) -> list[PendingItem]:
    now = datetime.now(UTC)
    items = []
    for i in range(n):
        wid = f"genie-conv-{uuid.uuid4()}"
        approval = PendingApproval(
            call_id=f"call_{uuid.uuid4().hex[:24]}",
            skill_name="send_email_to_the_whole_finance_team",
            turn=1,
            requested_at=now - timedelta(minutes=3),
            deadline=now + timedelta(hours=24),
        )
        connection = PendingConnection(
            attempt_id=f"rca_{uuid.uuid4().hex}",
            connector_name="Salesforce",
            turn=1,
            requested_at=now,
            deadline=now + timedelta(hours=1),
        )
        items.append(
            PendingItem(
                workflow_id=wid,
                genie_handle="gin-AaNpL4XP-baNnFY-CD",
                user_id=f"idp-user-{i}",
                state="awaiting_approval",
                awaiting_since=now,
                approvals=[approval],
                connections=[connection] if i == 0 else [],
            )
        )
    return items


@pytest.mark.parametrize("width", [60, 80, 100, 125, 140, 240])
def test_pending_never_splits_an_id(width: int) -> None:
    items = _pending()
    con = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    print_pending(items, con)
    lines = con.export_text().splitlines()
    for item in items:
        ids = [item.workflow_id]
        ids += [p.call_id for p in item.approvals] + [c.attempt_id for c in item.connections]
        for whole in ids:
            # Whole on one line, so a double-click or a copy gets the real id.
            assert any(whole in line for line in lines), (whole, "\n".join(lines))
    if width >= 240:
        assert any("│" in line for line in lines), "wide terminals get the table"


def test_pending_says_when_nothing_waits() -> None:
    con = Console(width=80, record=True, file=io.StringIO())
    print_pending([], con)
    assert con.export_text().strip() == "nothing is waiting for a human"


# ---------------------------------------------------------------------- with a server


@pytest.fixture
def cli_env(temporal_env: WorkflowEnvironment) -> dict[str, str]:
    return _narrow(
        TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        GENIE_TASK_QUEUE=f"no-worker-{uuid.uuid4()}",
    )


async def test_an_unknown_conversation_has_its_own_code_and_says_how_to_start_it(
    cli_env: dict[str, str],
) -> None:
    wid = f"nobody-{uuid.uuid4()}"
    r = await _geniectl(cli_env, "ask", wid, "hello there")
    assert r.code == EXIT_NOT_FOUND != EXIT_REFUSED, r.stderr
    (line,) = _error_lines(r.stderr)
    assert f"no conversation with workflow id {wid}" in line
    assert f"geniectl ask {wid} 'hello there' --genie GENIE_HANDLE --user USER_ID" in line

    send = await _geniectl(cli_env, "send", wid, "hi")
    assert send.code == EXIT_NOT_FOUND
    assert f"geniectl send {wid} hi --genie GENIE_HANDLE --user USER_ID" in send.stderr

    status = await _geniectl(cli_env, "status", wid)
    assert status.code == EXIT_NOT_FOUND
    assert "geniectl pending" in status.stderr


@pytest.fixture
def worker_env(temporal_env: WorkflowEnvironment, task_queue: str) -> dict[str, str]:
    return _narrow(
        TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        GENIE_TASK_QUEUE=task_queue,
    )


async def _started(env: dict[str, str]) -> str:
    wid = f"cli-errors-{uuid.uuid4()}"
    r = await _geniectl(env, "start", "gin-cli", "user-cli", "--id", wid)
    assert r.code == 0, r.stderr
    return wid


async def test_a_refusal_is_one_unwrapped_line(worker_env: dict[str, str]) -> None:
    wid = await _started(worker_env)
    r = await _geniectl(worker_env, "send", wid, "x" * (MAX_MESSAGE_CHARS + 1))
    assert r.code == EXIT_REFUSED, r.stderr
    (line,) = _error_lines(r.stderr)
    assert "refused (MessageTooLong)" in line
    assert f"the limit is {MAX_MESSAGE_CHARS}" in line


async def _pending_call(env: dict[str, str], wid: str, seen: set[str]) -> str:
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "no new confirmation showed in status"
        r = await _geniectl(env, "status", wid, "--json")
        assert r.code == 0, r.stderr
        calls: list[str] = [p["call_id"] for p in json.loads(r.stdout)["pending_approvals"]]
        fresh = [c for c in calls if c not in seen]
        if fresh:
            return fresh[0]
        await asyncio.sleep(0.2)


async def test_the_approver_comes_from_the_flag_the_environment_or_the_login(
    worker_env: dict[str, str],
) -> None:
    wid = await _started(worker_env)
    sent = await _geniectl(worker_env, "send", wid, "confirm:one confirm:two confirm:three")
    assert sent.code == 0, sent.stderr

    first = await _pending_call(worker_env, wid, set())
    r = await _geniectl({**worker_env, "GENIECTL_APPROVER": "alice"}, "approve", wid, first)
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == f"approved {first} as alice"

    second = await _pending_call(worker_env, wid, {first})
    r = await _geniectl(worker_env, "approve", wid, second, "--approver", "bob")
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == f"approved {second} as bob"

    third = await _pending_call(worker_env, wid, {first, second})
    r = await _geniectl(worker_env, "reject", wid, third)
    assert r.code == 0, r.stderr
    # The default is never silent: the output says the name is the login name.
    assert "(your login name; --approver or GENIECTL_APPROVER to change)" in r.stdout


@pytest.mark.parametrize("text", ["", "   ", "x" * (MAX_MESSAGE_CHARS + 1)])
async def test_a_refused_first_message_starts_nothing(
    worker_env: dict[str, str], temporal_env: WorkflowEnvironment, text: str
) -> None:
    """`ask` that would start a conversation with a refused message: exit 1, and no
    workflow exists afterwards (so nothing was created at the API either)."""
    wid = f"cli-refused-{uuid.uuid4()}"
    r = await _geniectl(worker_env, "ask", wid, text, "--genie", "gin-cli", "--user", "u1")
    assert r.code == EXIT_REFUSED, r.stderr
    listed = [w.id async for w in temporal_env.client.list_workflows(f'WorkflowId = "{wid}"')]
    assert listed == []
    status = await _geniectl(worker_env, "status", wid)
    assert status.code == EXIT_NOT_FOUND, status.stderr
