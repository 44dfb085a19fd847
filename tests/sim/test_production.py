"""``--profile production``: every behaviour reported from the live API, each its own flag.

The behaviour simulators below run the profile with the credential settle window off
(``--auth-settle-seconds 0``) and short pings, so each test sees one behaviour; the
settle window itself has its own simulators.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from genie_sim.__main__ import parse_args
from genie_sim._config import PRODUCTION_DEFAULTS, SimConfig
from tests.services import SimProcess
from tests.sim.conftest import Api, data_of, make_api, sim_fixture, stats_of, types, unwrap
from tests.sim.test_conversations import assert_error

prod_sim = sim_fixture(
    "--profile", "production", "--auth-settle-seconds", "0", "--ping-interval", "0.3"
)  # fmt: skip
settling_sim = sim_fixture("--profile", "production", "--auth-settle-seconds", "3")
rotating_sim = sim_fixture("--auth-settle-seconds", "0")
repeat_400_sim = sim_fixture("--repeat-decision", "400")
repeat_200_sim = sim_fixture("--repeat-decision", "200")


# ---------------------------------------------------------------- the command line


@pytest.fixture(autouse=True)
def _no_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENIE_SIM_PROFILE", raising=False)
    monkeypatch.delenv("GENIE_SIM_AUTH_SETTLE_SECONDS", raising=False)


def test_profile_turns_on_every_production_behaviour() -> None:
    config = parse_args(["--profile", "production"])
    for name, value in PRODUCTION_DEFAULTS.items():
        assert getattr(config, name) == value, name
    assert config.auth_settle_seconds == 60.0
    assert config.ping_interval == 30.0
    # Nothing of it is on by default.
    default = parse_args([])
    assert default == SimConfig(api_key=default.api_key)
    for name, value in PRODUCTION_DEFAULTS.items():
        assert getattr(default, name) != value, name


def test_each_behaviour_stays_its_own_flag() -> None:
    config = parse_args(
        [
            "--profile", "production", "--auth-success", "--no-hide-resumed-output",
            "--no-idle-while-parked", "--no-omit-conversation-id", "--no-auth-link-404",
            "--parallel-skills", "1", "--no-skill-stopped", "--events-paging",
            "--repeat-decision", "documented", "--auth-settle-seconds", "0",
            "--envelope", "bare", "--states", "sdk", "--ping-interval", "15",
        ]
    )  # fmt: skip
    assert config == SimConfig(api_key=config.api_key, profile="production")
    one = parse_args(["--idle-while-parked"])
    assert one.idle_while_parked and not one.auth_link_404 and one.states == "sdk"


def test_profile_and_settle_window_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_SIM_PROFILE", "production")
    monkeypatch.setenv("GENIE_SIM_AUTH_SETTLE_SECONDS", "0")
    config = parse_args([])
    assert config.profile == "production"
    assert config.auth_link_404
    assert config.auth_settle_seconds == 0.0
    assert parse_args(["--profile", "default"]).profile == "default"
    monkeypatch.setenv("GENIE_SIM_PROFILE", "staging")
    with pytest.raises(SystemExit):
        parse_args([])


# ---------------------------------------------------------------- credentials settling


async def _status(client: httpx.AsyncClient, api: Api) -> tuple[int, str | None]:
    r = await api.request("GET", "/conversations")
    code = r.json().get("error_code") if r.status_code != 200 else None
    return r.status_code, code


async def test_key_settles_after_start(client: httpx.AsyncClient, settling_sim: SimProcess) -> None:
    api = make_api(client, settling_sim)
    seen = [await _status(client, api) for _ in range(4)]
    # Transient refusals, both kinds the live gateway is reported to give.
    assert set(seen) == {(403, "access_denied"), (401, "auth_failed")}, seen
    stats = settling_sim.stats()
    assert stats["auth_settling"] is True
    assert stats["auth_settle_refusals"] == 4
    # A wrong key is refused as always, and is not counted as settling.
    assert await _status(client, api.other(api_key="wrong")) == (401, "auth_failed")
    deadline = time.monotonic() + 10
    while (await _status(client, api))[0] != 200:
        assert time.monotonic() < deadline, "the key never settled"
        await asyncio.sleep(0.1)
    assert settling_sim.stats()["auth_settling"] is False


async def test_rotation_opens_a_new_window(
    client: httpx.AsyncClient, rotating_sim: SimProcess
) -> None:
    api = make_api(client, rotating_sim)
    admin = f"{rotating_sim.base_url}/_sim/rotate_key"
    assert await _status(client, api) == (200, None)
    # Re-issued key (same value): refused for the window, then accepted again.
    r = await client.post(admin, json={"settle_seconds": 0.6})
    assert r.json() == {"ok": True, "settle_seconds": 0.6}
    assert (await _status(client, api))[0] in (401, 403)
    await asyncio.sleep(0.7)
    assert await _status(client, api) == (200, None)
    # A new key: the old one is refused for good at once, the new one after settling.
    new = api.other(api_key="rotated-key-2")
    await client.post(admin, json={"api_key": "rotated-key-2", "settle_seconds": 0.4})
    assert (await _status(client, new))[0] in (401, 403)
    await asyncio.sleep(0.5)
    assert await _status(client, new) == (200, None)
    assert await _status(client, api) == (401, "auth_failed")
    for bad in ({"api_key": ""}, {"settle_seconds": -1}, {"nope": 1}, [1]):
        r = await client.post(admin, json=bad)
        assert r.status_code == 400, bad
    await client.post(admin, json={"api_key": rotating_sim.api_key, "settle_seconds": 0})
    assert await _status(client, api) == (200, None)


# ---------------------------------------------------------------- the behaviours


async def test_coarse_state_idle_while_parked_and_no_conversation_id(
    client: httpx.AsyncClient, prod_sim: SimProcess
) -> None:
    api = make_api(client, prod_sim)
    cid = await api.create()
    states: list[str] = []
    async with api.send_stream(cid, "delay:200 steps:1 delay:0 confirm:x") as reader:
        await reader.next()
        states.append((await api.conversation(cid))["state"])
        card = data_of((await reader.until("skill.confirmation_required"))[-1])
        body = await api.conversation(cid)
        assert "conversation_id" not in body
        assert body["state"] == "idle"  # although the run is parked
        assert body["last_event"]["type"] == "skill.confirmation_required"
        await api.decide(cid, card["call_id"], {"resolution": "approved"})
        await reader.rest()
    states.append((await api.conversation(cid))["state"])
    assert states == ["skill_processing", "idle"]
    async with api.send_stream(cid, "connect:Box") as reader:
        await reader.until("runtime_connection.auth_required")
        assert (await api.conversation(cid))["state"] == "idle"


async def test_auth_link_answers_404(client: httpx.AsyncClient, prod_sim: SimProcess) -> None:
    api = make_api(client, prod_sim)
    cid = await api.create()
    async with api.send_stream(cid, "connect:Box") as reader:
        card = data_of((await reader.until("runtime_connection.auth_required"))[-1])
    attempt = card["runtime_connection_attempt_id"]
    assert_error(await api.request("POST", f"/runtime_connection/{attempt}/link"), 404, "not_found")
    # The link in the event still works, and a rejection still answers.
    assert (await client.get(card["auth_link"]["url"])).status_code == 200
    assert stats_of(prod_sim, cid)["auth_link_posts"] == {attempt: 1}


async def test_pings_have_no_id(client: httpx.AsyncClient, prod_sim: SimProcess) -> None:
    api = make_api(client, prod_sim)
    cid = await api.create()
    run_id = await api.post_message(cid, "delay:700 steps:1")
    frames = await api.raw_frames("GET", f"/conversations/{cid}/genie-runs/{run_id}")
    pings = [f for f in frames if f.event == "system.ping"]
    assert pings, [f.event for f in frames]
    for ping in pings:
        assert ping.field("id") is None
        assert set(ping.data) == {"type", "timestamp"}
    assert all(f.field("id") for f in frames if f.event != "system.ping")


async def test_parallel_skills_end_with_skill_stopped(
    client: httpx.AsyncClient, prod_sim: SimProcess
) -> None:
    api = make_api(client, prod_sim)
    cid = await api.create()
    events = await api.run_to_end(cid, "skill:Lookup")
    assert types(events) == [
        "processing.started",
        "skill.running",
        "skill.completed",
        "skill.stopped",
        "agent.message",
        "processing.finished",
    ]
    names = [data_of(e).get("skill_name") for e in events[1:4]]
    assert names == ["Lookup", "Lookup", "Lookup (parallel 2)"]
    assert [data_of(e)["seq_num"] for e in events] == list(range(1, 7))
    assert "Skills run: Lookup." in data_of(events[-2])["message"]


async def test_events_in_result_envelope_without_paging(
    client: httpx.AsyncClient, prod_sim: SimProcess
) -> None:
    api = make_api(client, prod_sim)
    cid = await api.create()
    await api.run_to_end(cid, "steps:3")
    r = await api.request(
        "GET", "/conversations/events", params={"conversation_id": cid, "limit": 2}
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"result"} and set(body["result"]) == {"events"}
    assert len(body["result"]["events"]) == 2  # more exist, and nothing says so


async def test_repeated_decision_answers_an_undocumented_409(
    client: httpx.AsyncClient, prod_sim: SimProcess
) -> None:
    api = make_api(client, prod_sim)
    call = await _decided_call(api)
    r = await api.decide(call["cid"], call["call_id"], {"resolution": "approved"})
    assert_error(r, 409, "invalid_state")
    assert stats_of(prod_sim, call["cid"])["skill_decisions_applied"] == {call["call_id"]: 1}


@pytest.mark.parametrize(("fixture", "status"), [("repeat_400_sim", 400), ("repeat_200_sim", 200)])
async def test_repeated_decision_other_answers(
    client: httpx.AsyncClient, request: pytest.FixtureRequest, fixture: str, status: int
) -> None:
    sim: SimProcess = request.getfixturevalue(fixture)
    api = make_api(client, sim)
    call = await _decided_call(api)
    r = await api.decide(call["cid"], call["call_id"], {"resolution": "rejected"})
    assert r.status_code == status, r.text
    if status == 200:
        assert r.content == b""
    # Never applied twice, whatever the answer.
    assert stats_of(sim, call["cid"])["skill_decisions_applied"] == {call["call_id"]: 1}


async def _decided_call(api: Api) -> dict[str, Any]:
    cid = await api.create()
    async with api.send_stream(cid, "confirm:x") as reader:
        card = data_of((await reader.until("skill.confirmation_required"))[-1])
        r = await api.decide(cid, card["call_id"], {"resolution": "approved"})
        assert r.status_code == 200
        await reader.rest()
    return {"cid": cid, "call_id": card["call_id"]}


async def test_resumed_output_only_in_history(
    client: httpx.AsyncClient, prod_sim: SimProcess
) -> None:
    api = make_api(client, prod_sim)
    cid = await api.create()
    async with api.send_stream(cid, "connect:Box steps:1") as reader:
        card = data_of((await reader.until("runtime_connection.auth_required"))[-1])
        assert (await client.get(card["auth_link"]["url"])).status_code == 200
        tail = await reader.rest()
    # No auth_success, no resumed output: a ping at most, then the interruption.
    assert types(tail) == ["system.stream_interrupted"]
    await api.wait_state(cid, "idle")
    latest = unwrap(await api.messages(cid, limit=1))["messages"][0]
    assert "Skills run: Box." in latest["content"]
