"""Quirk flags: ``--envelope result``, ``--states production``, ``--no-auth-success``,
``--oauth-token``, ``--hide-resumed-output``, ``--max-stream-seconds``, ``--gzip``."""

from __future__ import annotations

import time

import httpx

from tests.services import SimProcess
from tests.sim.conftest import data_of, make_api, sim_fixture, types, unwrap
from tests.sim.test_conversations import assert_error

quirky_sim = sim_fixture(
    "--envelope", "result", "--states", "production", "--no-auth-success",
    "--oauth-token", "oauth-token-abc=user-oauth", "--oauth-token", "oauth-token-def=user-two",
)  # fmt: skip
hiding_sim = sim_fixture("--hide-resumed-output", "--ping-interval", "5")
short_sim = sim_fixture("--max-stream-seconds", "0.5", "--ping-interval", "0.2")
gzip_sim = sim_fixture("--gzip", "--ping-interval", "0.2")


async def test_result_envelope_wraps_json_successes_only(
    client: httpx.AsyncClient, quirky_sim: SimProcess
) -> None:
    api = make_api(client, quirky_sim)
    r = await api.request("POST", "/conversations")
    assert r.status_code == 201
    assert set(r.json()) == {"result"}
    cid = r.json()["result"]["conversation_id"]
    for path in (f"/conversations/{cid}", "/conversations", f"/conversations/{cid}/messages"):
        r = await api.request("GET", path)
        assert r.status_code == 200, path
        assert set(r.json()) == {"result"}, path
    r = await api.request(
        "POST", f"/conversations/{cid}/messages", json={"message": "confirm:x", "stream": False}
    )
    assert r.status_code == 202
    assert set(r.json()["result"]) == {"conversation_id", "genie_run_id"}
    run_id = r.json()["result"]["genie_run_id"]
    r = await api.request("GET", "/conversations/events", params={"conversation_id": cid})
    events = r.json()["result"]["events"]
    call = events[-1]["call_id"]
    # Errors are never wrapped.
    assert_error(await api.request("GET", "/conversations/conv_x"), 404, "conversation_not_found")
    assert_error(
        await api.request("POST", f"/conversations/{cid}/messages", json={"message": "again"}),
        409,
        "conversation_busy",
    )
    r = await api.decide(cid, call, {"resolution": "approved"})
    assert r.status_code == 200
    assert r.content == b""
    # SSE is never wrapped.
    async with api.reconnect(cid, run_id) as reader:
        assert types(await reader.rest())[-1] == "processing.finished"
    r = await api.request("POST", f"/conversations/{cid}/upload", files={"file": ("a.txt", b"x")})
    assert set(r.json()) == {"result"}
    assert r.json()["result"]["file_id"].startswith("file_")


async def test_production_states(client: httpx.AsyncClient, quirky_sim: SimProcess) -> None:
    api = make_api(client, quirky_sim)
    cid = await api.create()
    async with api.send_stream(cid, "delay:250 steps:1 delay:0 confirm:x") as reader:
        await reader.next()
        assert (await api.conversation(cid))["state"] == "skill_processing"  # thinking
        card = data_of((await reader.until("skill.confirmation_required"))[-1])
        body = await api.conversation(cid)
        assert body["state"] == "skill_processing"  # paused, told apart only by last_event
        assert body["last_event"]["type"] == "skill.confirmation_required"
        await api.decide(cid, card["call_id"], {"resolution": "approved"})
        await reader.rest()
    assert (await api.conversation(cid))["state"] == "idle"


async def test_no_auth_success(client: httpx.AsyncClient, quirky_sim: SimProcess) -> None:
    api = make_api(client, quirky_sim)
    cid = await api.create()
    async with api.send_stream(cid, "connect:Salesforce") as reader:
        card = data_of((await reader.until("runtime_connection.auth_required"))[-1])
        assert (await api.conversation(cid))["state"] == "skill_processing"
        assert (await client.get(card["auth_link"]["url"])).status_code == 200
        tail = await reader.rest()
    assert types(tail) == [
        "skill.running",
        "skill.completed",
        "agent.message",
        "processing.finished",
    ]


async def test_oauth_tokens(client: httpx.AsyncClient, quirky_sim: SimProcess) -> None:
    base = f"{quirky_sim.base_url}/api/v1/genies/gin-o/chat"
    oauth = {"Authorization": "Bearer oauth-token-abc"}
    r = await client.post(f"{base}/conversations", headers=oauth)
    assert r.status_code == 201
    cid = r.json()["result"]["conversation_id"]
    assert (await client.get(f"{base}/conversations/{cid}", headers=oauth)).status_code == 200
    # The token's user is the owner: the same user through the API key sees it too...
    key_as_owner = {"Authorization": f"Bearer {quirky_sim.api_key}", "X-IDP-User-Id": "user-oauth"}
    assert (
        await client.get(f"{base}/conversations/{cid}", headers=key_as_owner)
    ).status_code == 200
    # ...another token's user does not, and an unknown token is rejected.
    r = await client.get(
        f"{base}/conversations/{cid}", headers={"Authorization": "Bearer oauth-token-def"}
    )
    assert_error(r, 404, "conversation_not_found")
    r = await client.get(
        f"{base}/conversations", headers={"Authorization": "Bearer oauth-token-zzz"}
    )
    assert_error(r, 401, "auth_failed")


async def test_hide_resumed_output(client: httpx.AsyncClient, hiding_sim: SimProcess) -> None:
    api = make_api(client, hiding_sim)
    cid = await api.create()
    async with api.send_stream(cid, "steps:1 connect:Salesforce steps:2") as reader:
        head = await reader.until("runtime_connection.auth_required")
        card = data_of(head[-1])
        assert (await client.get(card["auth_link"]["url"])).status_code == 200
        ping = await reader.next(pings=True)
        assert ping is not None
        assert ping.event == "system.ping"
        cut = await reader.next(pings=True)
        assert cut is not None
        assert cut.event == "system.stream_interrupted"
        assert data_of(cut)["reason"] == "runtime_connection_resumed"
        assert data_of(cut)["last_seq_num"] == 3
        assert await reader.next(pings=True) is None
    await api.wait_state(cid, "idle")
    run_id = card["genie_run_id"]
    # E8 from the last seen id: again only a ping and an interruption.
    async with api.reconnect(cid, run_id, card["event_id"]) as reader:
        assert types(await reader.rest()) == ["system.stream_interrupted"]
        assert [e.event for e in reader.seen] == ["system.ping", "system.stream_interrupted"]
    # E8 from the start: the visible part, then the same.
    async with api.reconnect(cid, run_id) as reader:
        assert types(await reader.rest()) == [*types(head), "system.stream_interrupted"]
    # E9 stops at the auth request; E6 has the result.
    assert [e["type"] for e in (await api.events(conversation_id=cid))["events"]] == types(head)
    latest = (await api.messages(cid, limit=1))["messages"][0]
    assert latest["source"] == "genie"
    assert "Skills run: Salesforce." in latest["content"]
    body = await api.conversation(cid)
    assert body["state"] == "idle"


async def test_hide_does_not_apply_to_a_rejected_connection(
    client: httpx.AsyncClient, hiding_sim: SimProcess
) -> None:
    api = make_api(client, hiding_sim)
    cid = await api.create()
    async with api.send_stream(cid, "connect:Box") as reader:
        attempt = data_of((await reader.until("runtime_connection.auth_required"))[-1])[
            "runtime_connection_attempt_id"
        ]
        assert (
            await api.request("POST", f"/runtime_connection/{attempt}/reject")
        ).status_code == 204
        assert types(await reader.rest()) == ["agent.message", "processing.finished"]


async def test_max_stream_seconds(client: httpx.AsyncClient, short_sim: SimProcess) -> None:
    api = make_api(client, short_sim)
    cid = await api.create()
    # A quick run is unaffected.
    assert types(await api.run_to_end(cid, "hi"))[-1] == "processing.finished"
    started = time.monotonic()
    async with api.send_stream(cid, "confirm:x") as reader:
        events = await reader.rest()
    assert 0.45 <= time.monotonic() - started < 2.0
    assert types(events) == [
        "processing.started",
        "skill.confirmation_required",
        "system.stream_interrupted",
    ]
    cut = data_of(events[-1])
    assert cut == {
        "type": "system.stream_interrupted",
        "conversation_id": cid,
        "genie_handle": api.handle,
        "genie_run_id": data_of(events[0])["genie_run_id"],
        "last_seq_num": 2,
        "reason": "max_stream_duration",
        "retry_after_ms": 200,
    }
    assert any(e.event == "system.ping" for e in reader.seen)  # 0.2 s pings meanwhile
    # Reconnects are limited too, and the run is unaffected.
    run_id = cut["genie_run_id"]
    async with api.reconnect(cid, run_id, data_of(events[1])["event_id"]) as reader:
        assert types(await reader.rest()) == ["system.stream_interrupted"]
    await api.decide(cid, data_of(events[1])["call_id"], {"resolution": "approved"})
    await api.wait_state(cid, "idle")


async def test_gzip_compresses_every_answer_for_a_client_that_accepts_it(
    client: httpx.AsyncClient, gzip_sim: SimProcess
) -> None:
    api = make_api(client, gzip_sim)
    gz = {"Accept-Encoding": "gzip"}
    r = await api.request("POST", "/conversations", json={}, headers=gz)
    assert r.status_code == 201 and r.headers["content-encoding"] == "gzip"
    cid = unwrap(r.json())["conversation_id"]  # httpx inflated it
    plain = await api.request(
        "GET", f"/conversations/{cid}", headers={"Accept-Encoding": "identity"}
    )
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    refused = await api.request(
        "GET", f"/conversations/{cid}", headers={"Accept-Encoding": "gzip;q=0"}
    )
    assert "content-encoding" not in refused.headers
    # A stream is compressed and still live: each event is flushed as it is sent, so the
    # confirmation arrives while the run waits on it with the stream open.
    async with api.stream(
        "POST", f"/conversations/{cid}/messages", json={"message": "confirm:x"}, headers=gz
    ) as reader:
        assert reader.response.headers["content-encoding"] == "gzip"
        got = await reader.until("skill.confirmation_required", within=5)
        assert types(got) == ["processing.started", "skill.confirmation_required"]
        ping = await reader.next(pings=True, within=5)
        assert ping is not None and ping.event == "system.ping"  # still open
