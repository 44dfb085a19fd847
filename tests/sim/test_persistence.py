"""``--state-file``: the whole simulator state survives a graceful restart.

Real processes over real HTTP: each restart stops the simulator with SIGTERM and starts
a new one on the same port and the same state file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import REPO_ROOT, SimProcess, free_port
from tests.sim.conftest import Api, data_of, make_api, types, unwrap

Launch = Callable[..., SimProcess]


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "simulator.json"


@pytest.fixture
def launch(tmp_path: Path, state_file: Path) -> Iterator[Launch]:
    """Start a simulator on ``state_file``; ``launch(port)`` restarts on the same port."""
    started: list[SimProcess] = []

    def _launch(port: int | None = None) -> SimProcess:
        log = tmp_path / f"sim-{len(started)}.log"
        args = ("--ping-interval", "0.5", "--state-file", str(state_file))
        sim = SimProcess(args=args, port=port or free_port(), log_path=log)
        started.append(sim)
        return sim.start()

    yield _launch
    for sim in started:
        sim.stop()
    for log in tmp_path.glob("sim-*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "could not save" not in text, text


def restart(sim: SimProcess, launch: Launch) -> SimProcess:
    """SIGTERM (graceful: the state is saved), then a new process on the same port."""
    sim.stop()
    return launch(sim.port)


def saved(state_file: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(state_file.read_text())
    return value


def the_run(state: dict[str, Any], run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = next(
        r for c in state["conversations"] for r in c["runs"] if r["genie_run_id"] == run_id
    )
    return run


async def test_a_paused_confirmation_survives_a_restart_and_its_approval_completes_the_run(
    launch: Launch, client: httpx.AsyncClient, state_file: Path
) -> None:
    sim = launch()
    api = make_api(client, sim)
    cid = await api.create()
    async with api.send_stream(cid, "please confirm:send_email") as reader:
        before = await reader.until("skill.confirmation_required")
    last = before[-1]
    call_id, run_id = data_of(last)["call_id"], data_of(last)["genie_run_id"]

    sim = restart(sim, launch)
    assert saved(state_file)["version"] == 1
    body = await api.conversation(cid)
    assert body["state"] == "awaiting_approval"
    assert body["last_event"] == data_of(last)
    async with api.reconnect(cid, run_id, last.id) as reader:
        r = await api.decide(cid, call_id, {"resolution": "approved"})
        assert r.status_code == 200, r.text
        after = await reader.rest()
    assert types(after) == [
        "skill.running",
        "skill.completed",
        "agent.message",
        "processing.finished",
    ]
    first_seq = data_of(last)["seq_num"] + 1
    assert [data_of(e)["seq_num"] for e in after] == list(range(first_seq, first_seq + 4))
    assert "Skills run: send_email." in data_of(after[2])["message"]
    assert (await api.conversation(cid))["state"] == "idle"


async def test_a_decision_applied_before_a_restart_is_409_after_it(
    launch: Launch, client: httpx.AsyncClient
) -> None:
    sim = launch()
    api = make_api(client, sim)
    cid = await api.create()
    async with api.send_stream(cid, "confirm:send_email") as reader:
        call_id = data_of((await reader.until("skill.confirmation_required"))[-1])["call_id"]
        r = await api.decide(cid, call_id, {"resolution": "rejected", "reason": "not now"})
        assert r.status_code == 200
        await reader.rest()

    restart(sim, launch)
    for resolution in ("approved", "rejected"):
        r = await api.decide(cid, call_id, {"resolution": resolution})
        assert r.status_code == 409, r.text
        assert r.json()["error_code"] == "skill_call_already_resolved"
    r = await api.decide(cid, "call_unknown", {"resolution": "approved"})
    assert r.json()["error_code"] == "call_not_found"
    reply = (await api.messages(cid))["messages"][0]
    assert reply["source"] == "genie" and '"not now"' in reply["content"]


async def test_a_pending_connection_survives_a_restart_and_its_auth_link_completes_it(
    launch: Launch, client: httpx.AsyncClient
) -> None:
    sim = launch()
    api = make_api(client, sim)
    cid = await api.create()
    async with api.send_stream(cid, "sync connect:salesforce") as reader:
        last = (await reader.until("runtime_connection.auth_required"))[-1]
    attempt_id = data_of(last)["runtime_connection_attempt_id"]
    link = data_of(last)["auth_link"]["url"]

    sim = restart(sim, launch)
    assert (await api.conversation(cid))["state"] == "awaiting_approval"
    r = await api.request("POST", f"/runtime_connection/{attempt_id}/link", json={})
    assert unwrap(r.json())["status"] == "auth_required"
    async with api.reconnect(cid, data_of(last)["genie_run_id"], last.id) as reader:
        page = await client.get(link)  # the link handed out before the restart
        assert page.status_code == 200, page.text
        after = await reader.rest()
    assert types(after) == [
        "runtime_connection.auth_success",
        "skill.running",
        "skill.completed",
        "agent.message",
        "processing.finished",
    ]
    assert (await client.get(link)).status_code == 409  # one-time, and now authorized
    r = await api.request("POST", f"/runtime_connection/{attempt_id}/link", json={})
    assert unwrap(r.json()) == {"status": "authorized"}


async def _clock(sim: SimProcess, advance: float | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient() as h:
        if advance is None:
            r = await h.get(f"{sim.base_url}/_sim/clock")
        else:
            r = await h.post(f"{sim.base_url}/_sim/clock", json={"advance_seconds": advance})
    value: dict[str, Any] = r.json()
    return value


async def _everything(api: Api, cid: str, run_id: str) -> dict[str, Any]:
    """What a client can read back about one conversation."""
    frames = await api.raw_frames("GET", f"/conversations/{cid}/genie-runs/{run_id}")
    listed = await api.request("GET", "/conversations")
    return {
        "e2": unwrap(listed.json()),
        "e3": await api.conversation(cid),
        "e6": await api.messages(cid),
        "e8": [f.lines for f in frames],
        "e9": await api.events(conversation_id=cid),
        "e9_all": await api.events(),
    }


async def test_history_events_uploads_ids_and_the_clock_survive_a_restart(
    launch: Launch, client: httpx.AsyncClient
) -> None:
    sim = launch()
    api = make_api(client, sim)
    cid = await api.create()
    r = await api.request(
        "POST", f"/conversations/{cid}/upload", files={"file": ("a.txt", b"hi", "text/plain")}
    )
    file_id = unwrap(r.json())["file_id"]
    r = await api.request(
        "POST",
        f"/conversations/{cid}/messages",
        json={"message": "hello steps:2 fail:lookup", "file_id": file_id, "stream": True},
    )
    assert r.status_code == 200
    run_id = json.loads(r.text.split("data: ", 1)[1].split("\n", 1)[0])["genie_run_id"]
    other = await api.create()
    await api.run_to_end(other, "another")
    await _clock(sim, advance=3600)
    before = await _everything(api, cid, run_id)

    sim = restart(sim, launch)
    assert await _everything(api, cid, run_id) == before
    assert (await _clock(sim))["offset_seconds"] == 3600

    # Ids and created_at keep increasing; the upload's id is still valid.
    old_ids = [e["event_id"] for e in before["e9_all"]["events"]] + [cid, other, run_id]
    old_times = [e["created_at"] for e in before["e9_all"]["events"]]
    new_cid = await api.create()
    r = await api.request(
        "POST",
        f"/conversations/{cid}/messages",
        json={"message": "again", "file_id": file_id, "stream": False},
    )
    assert r.status_code == 202, r.text
    new_run = unwrap(r.json())["genie_run_id"]
    async with api.reconnect(cid, new_run) as reader:
        fresh = await reader.rest()
    assert types(fresh)[-1] == "processing.finished"
    new_ids = [data_of(e)["event_id"] for e in fresh] + [new_cid, new_run]
    assert min(i.split("_", 1)[1] for i in new_ids) > max(i.split("_", 1)[1] for i in old_ids)
    conv = await api.conversation(new_cid)
    assert conv["created_at"] > max(old_times)
    assert min(data_of(e)["created_at"] for e in fresh) > conv["created_at"]

    # Retention still follows the (restored) simulator clock.
    await _clock(sim, advance=25 * 3600)
    r = await api.request("GET", f"/conversations/{cid}/genie-runs/{run_id}")
    assert r.status_code == 404 and r.json()["error_code"] == "run_not_found"
    assert (await api.events(conversation_id=cid))["events"] == []


async def test_a_run_stopped_mid_flight_continues_from_where_its_log_ends(
    launch: Launch, client: httpx.AsyncClient, state_file: Path
) -> None:
    sim = launch()
    api = make_api(client, sim)
    cid = await api.create()
    async with api.send_stream(cid, "count delay:50 steps:40") as reader:
        await reader.until("agent.message")
        run_id = data_of(reader.seen[0])["genie_run_id"]

    sim = restart(sim, launch)
    run = the_run(saved(state_file), run_id)
    assert run["status"] == "running" and len(run["events"]) < 20, run["events"]
    async with api.reconnect(cid, run_id) as reader:
        events = await reader.rest(within=10)
    data = [data_of(e) for e in events]
    assert [d["seq_num"] for d in data] == list(range(1, 44))
    messages = [d["message"] for d in data if d["type"] == "agent.message"]
    assert messages[:-1] == [f"step {i} of 40" for i in range(1, 41)]
    assert messages[-1] == "You said: count delay:50 steps:40"
    assert types(events)[-1] == "processing.finished"
    history = (await api.messages(cid, limit=100))["messages"]
    assert len(history) == 42  # the user's message, 40 steps, the reply: none twice


def _refused(state_file: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "genie_sim", "--port", str(free_port())]
    return subprocess.run(
        [*cmd, "--state-file", str(state_file)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"version": 1, "clock": ', "not valid JSON"),
        ("", "not valid JSON"),
        ('{"version": 2}', "version 2 is not supported"),
        ('{"version": 1, "clock": {"offset_us": 0}}', "document.clock.last_stamp_us: missing"),
    ],
)
def test_a_corrupt_state_file_refuses_to_start_and_is_kept(
    state_file: Path, content: str, problem: str
) -> None:
    state_file.write_text(content)
    r = _refused(state_file)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert str(state_file) in r.stderr and problem in r.stderr, r.stderr
    assert state_file.read_text() == content


def test_an_unreadable_state_file_refuses_to_start(tmp_path: Path) -> None:
    r = _refused(tmp_path)  # a directory
    assert r.returncode == 2 and str(tmp_path) in r.stderr and "cannot read" in r.stderr
    r = _refused(tmp_path / "missing" / "simulator.json")
    assert r.returncode == 2 and "does not exist" in r.stderr, r.stderr


async def test_without_a_file_the_simulator_starts_fresh_and_creates_it(
    launch: Launch, client: httpx.AsyncClient, state_file: Path
) -> None:
    sim = launch()
    api = make_api(client, sim)
    listed = unwrap((await api.request("GET", "/conversations")).json())
    assert listed["total_count"] == 0
    cid = await api.create()
    sim.stop()
    state = saved(state_file)
    assert state["version"] == 1
    assert [c["conversation_id"] for c in state["conversations"]] == [cid]
    assert not list(state_file.parent.glob(".*.tmp"))
