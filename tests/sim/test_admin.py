"""``/_sim`` admin endpoints: stats, clock and retention, reset (on a private simulator)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.services import SimProcess
from tests.sim.conftest import Api, data_of, make_api, sim_fixture, stats_of, types
from tests.sim.test_conversations import assert_error

private_sim = sim_fixture()


async def advance(client: httpx.AsyncClient, sim: SimProcess, seconds: float) -> dict[str, Any]:
    r = await client.post(f"{sim.base_url}/_sim/clock", json={"advance_seconds": seconds})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_health(client: httpx.AsyncClient, sim: SimProcess) -> None:
    r = await client.get(f"{sim.base_url}/_sim/health")
    assert r.status_code == 200
    assert r.json() == {"ok": True}


async def test_request_counters(api: Api, sim: SimProcess) -> None:
    before = sim.stats()["requests"]
    assert isinstance(before, dict)
    assert set(before) == {
        "create_conversation", "list_conversations", "get_conversation", "delete_conversation",
        "send_message", "list_messages", "upload", "reconnect", "events", "skill_approval",
        "auth_link", "connection_reject", "business_approval", "feedback",
    }  # fmt: skip
    cid = await api.create()
    await api.run_to_end(cid, "hi")
    await api.request("GET", f"/conversations/{cid}")
    await api.other(api_key="bad").request("GET", f"/conversations/{cid}")  # counted too
    after = sim.stats()["requests"]
    assert isinstance(after, dict)
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert delta == {"create_conversation": 1, "send_message": 1, "get_conversation": 2}


async def test_conversation_stats_shape(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    events = await api.run_to_end(cid, "hi")
    entry = stats_of(sim, cid)
    assert entry == {
        "message_posts": 1,
        "messages_accepted": 1,
        "skill_decision_posts": {},
        "skill_decisions_applied": {},
        "connection_reject_posts": {},
        "auth_link_posts": {},
        "feedback_posts": 0,
        "runs": [data_of(events[0])["genie_run_id"]],
        "state": "idle",
    }


async def test_retention_24h(client: httpx.AsyncClient, private_sim: SimProcess) -> None:
    api = make_api(client, private_sim)
    cid = await api.create()
    events = await api.run_to_end(cid, "remember me")
    run_id = data_of(events[0])["genie_run_id"]
    await advance(client, private_sim, 23 * 3600)
    assert len((await api.events(conversation_id=cid))["events"]) == 3
    async with api.reconnect(cid, run_id) as reader:
        assert len(await reader.rest()) == 3
    clock = await advance(client, private_sim, 3600 + 1)
    assert clock["offset_seconds"] >= 24 * 3600
    assert (await api.events(conversation_id=cid))["events"] == []
    assert (await api.events())["events"] == []
    r = await api.request("GET", f"/conversations/{cid}/genie-runs/{run_id}")
    assert_error(r, 404, "run_not_found")
    # The conversation and its history outlive the events.
    assert (await api.conversation(cid))["state"] == "idle"
    assert len((await api.messages(cid))["messages"]) == 2
    # New events carry the moved clock and are listed again.
    newer = await api.run_to_end(cid, "again")
    assert data_of(newer[0])["created_at"] > data_of(events[-1])["created_at"]
    assert len((await api.events(conversation_id=cid))["events"]) == 3


async def test_auth_link_expires_after_5_minutes(
    client: httpx.AsyncClient, private_sim: SimProcess
) -> None:
    api = make_api(client, private_sim)
    cid = await api.create()
    async with api.send_stream(cid, "connect:Box") as reader:
        card = data_of((await reader.until("runtime_connection.auth_required"))[-1])
        await advance(client, private_sim, 301)
        assert (await client.get(card["auth_link"]["url"])).status_code == 410
        attempt = card["runtime_connection_attempt_id"]
        fresh = (await api.request("POST", f"/runtime_connection/{attempt}/link")).json()
        assert fresh["status"] == "auth_required"
        assert (await client.get(fresh["auth_link"]["url"])).status_code == 200
        assert types(await reader.rest())[0] == "runtime_connection.auth_success"


async def test_clock_validation(client: httpx.AsyncClient, private_sim: SimProcess) -> None:
    url = f"{private_sim.base_url}/_sim/clock"
    for body in ({"advance_seconds": -1}, {"advance_seconds": "1"}, {}, {"advance_seconds": True}):
        assert (await client.post(url, json=body)).status_code == 400
    r = await client.get(url)
    assert r.status_code == 200
    assert r.json()["now"].endswith("Z")


async def test_reset(client: httpx.AsyncClient, private_sim: SimProcess) -> None:
    api = make_api(client, private_sim)
    cid = await api.create()
    private_sim.fault(endpoint="list_conversations", status=500)
    async with api.send_stream(cid, "confirm:x") as reader:
        before = data_of((await reader.until("skill.confirmation_required"))[-1])
        private_sim.reset()
        last = await reader.next()
        assert last is not None
        assert data_of(last)["reason"] == "reset"
        assert await reader.next() is None
    stats = private_sim.stats()
    assert stats["conversations"] == {}
    requests = stats["requests"]
    assert isinstance(requests, dict)
    assert set(requests.values()) == {0}
    assert_error(await api.request("GET", f"/conversations/{cid}"), 404, "conversation_not_found")
    assert (await api.request("GET", "/conversations")).status_code == 200  # fault forgotten
    # Ids and timestamps keep increasing across a reset.
    cid2 = await api.create()
    assert cid2 > cid
    events = await api.run_to_end(cid2, "after reset")
    assert data_of(events[0])["created_at"] > before["created_at"]
