"""E8 reconnect/replay, pings, stream independence, E3 states (sdk vocabulary)."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.services import SimProcess
from tests.sim.conftest import TIMEOUT, Api, data_of, types
from tests.sim.test_conversations import assert_error


async def test_reconnect_replays_after_last_event_id_then_follows_live(api: Api) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "steps:1 confirm:pto") as reader:
        head = await reader.until("skill.confirmation_required")
    # The E5 stream is gone; the run is paused and still there.
    first_id = data_of(head[0])["event_id"]
    run_id = data_of(head[0])["genie_run_id"]
    call = data_of(head[-1])["call_id"]
    async with api.reconnect(cid, run_id, first_id) as reader:
        replay = await reader.until("skill.confirmation_required")
        assert [data_of(e)["event_id"] for e in replay] == [
            data_of(e)["event_id"] for e in head[1:]
        ]
        assert (await api.decide(cid, call, {"resolution": "approved"})).status_code == 200
        live = await reader.rest()
    assert types(live) == [
        "skill.running",
        "skill.completed",
        "agent.message",
        "processing.finished",
    ]
    assert [data_of(e)["seq_num"] for e in replay + live] == list(range(2, 8))


async def test_reconnect_without_header_replays_from_start(api: Api) -> None:
    cid = await api.create()
    original = await api.run_to_end(cid, "steps:2")
    run_id = data_of(original[0])["genie_run_id"]
    async with api.reconnect(cid, run_id) as reader:
        replay = await reader.rest()
    assert [e.data for e in replay] == [e.data for e in original]
    # After the last event: nothing left, the stream just ends.
    async with api.reconnect(cid, run_id, data_of(original[-1])["event_id"]) as reader:
        assert await reader.rest() == []


async def test_reconnect_errors(api: Api) -> None:
    cid = await api.create()
    run_a = data_of((await api.run_to_end(cid, "a"))[0])["genie_run_id"]
    run_b_events = await api.run_to_end(cid, "b")
    path = f"/conversations/{cid}/genie-runs/{run_a}"
    for bad in ("evt_nope", data_of(run_b_events[1])["event_id"]):
        r = await api.request("GET", path, headers={"Last-Event-ID": bad})
        assert_error(r, 400, "invalid_last_event_id")
    r = await api.request("GET", f"/conversations/{cid}/genie-runs/run_nope")
    assert_error(r, 404, "run_not_found")
    other = await api.create()
    r = await api.request("GET", f"/conversations/{other}/genie-runs/{run_a}")
    assert_error(r, 404, "run_not_found")


async def test_cutting_a_stream_never_affects_the_run(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "delay:30 steps:5") as reader:
        head = [await reader.next(), await reader.next()]
    assert head[0] is not None
    run_id = data_of(head[0])["genie_run_id"]
    await api.wait_state(cid, "idle")
    async with api.reconnect(cid, run_id) as reader:
        everything = await reader.rest()
    assert len(everything) == 1 + 5 + 1 + 1
    assert types(everything)[-1] == "processing.finished"


async def test_many_concurrent_subscribers_see_the_same_log(api: Api) -> None:
    cid = await api.create()
    run_id = await api.post_message(cid, "delay:20 steps:4")

    async def follow() -> list[str]:
        async with api.reconnect(cid, run_id) as reader:
            return [e.data for e in await reader.rest()]

    results = await asyncio.gather(*(follow() for _ in range(10)))
    assert all(r == results[0] for r in results)
    assert len(results[0]) == 7


async def test_pings_on_a_paused_stream(api: Api) -> None:
    """The session simulator pings every 0.5 s; pings carry no id."""
    cid = await api.create()
    path = f"/conversations/{cid}/messages"
    frames = []
    started = time.monotonic()
    async with (
        asyncio.timeout(TIMEOUT),
        api.client.stream(
            "POST",
            api.url(path),
            headers=api.headers,
            json={"message": "confirm:x", "stream": True},
        ) as r,
    ):
        buffer: list[str] = []
        async for line in r.aiter_lines():
            if line:
                buffer.append(line)
                continue
            frames.append(buffer)
            buffer = []
            if sum(1 for f in frames if "event: system.ping" in f) == 2:
                break
    elapsed = time.monotonic() - started
    pings = [f for f in frames if "event: system.ping" in f]
    assert 0.9 <= elapsed < 3.0
    for ping in pings:
        assert not any(line.startswith("id:") for line in ping)
        data = ping[-1].removeprefix("data: ")
        assert data.startswith('{"type":"system.ping","timestamp":"')
        assert data.endswith('Z"}')
    await api.wait_state(cid, "awaiting_approval")  # leave it paused; nothing else to clean


async def test_open_streams_gauge(api: Api, sim: SimProcess) -> None:
    before = int(str(sim.stats()["open_streams"]))
    cid = await api.create()
    async with api.send_stream(cid, "confirm:x") as reader:
        await reader.until("skill.confirmation_required")
        assert sim.stats()["open_streams"] == before + 1
    deadline = time.monotonic() + TIMEOUT
    while sim.stats()["open_streams"] != before:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_states_sdk_vocabulary(api: Api) -> None:
    cid = await api.create()
    assert (await api.conversation(cid))["state"] == "idle"
    async with api.send_stream(
        cid, "delay:250 fail:slow delay:0 connect:Box delay:200 confirm:x"
    ) as reader:
        await reader.next()  # processing.started, then 250 ms of thinking
        assert (await api.conversation(cid))["state"] == "ai_running"
        await reader.until("skill.running")
        assert (await api.conversation(cid))["state"] == "skill_processing"
        link = data_of((await reader.until("runtime_connection.auth_required"))[-1])["auth_link"]
        body = await api.conversation(cid)
        assert body["state"] == "awaiting_approval"
        assert body["last_event"]["type"] == "runtime_connection.auth_required"
        await api.client.get(link["url"])
        await reader.until("skill.completed")
        assert (await api.conversation(cid))["state"] == "ai_running"
        card = data_of((await reader.until("skill.confirmation_required"))[-1])
        body = await api.conversation(cid)
        assert body["state"] == "awaiting_approval"
        assert body["last_event"]["call_id"] == card["call_id"]
        await api.decide(cid, card["call_id"], {"resolution": "rejected"})
        assert (await api.conversation(cid))["state"] == "ai_running"
        assert types(await reader.rest())[-1] == "processing.finished"
    assert (await api.conversation(cid))["state"] == "idle"


async def test_idle_as_soon_as_finished_is_seen(api: Api) -> None:
    cid = await api.create()
    for i in range(3):
        await api.run_to_end(cid, f"turn {i}")
        # The next message is accepted immediately after processing.finished.
    r = await api.request(
        "POST", f"/conversations/{cid}/messages", json={"message": "x", "stream": False}
    )
    assert r.status_code == 202


async def test_stream_survives_slow_reader(api: Api) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "steps:200") as reader:
        await asyncio.sleep(0.2)  # let the run finish and the socket buffers fill
        events = await reader.rest()
    assert len(events) == 203


async def test_reconnect_transport_error_is_not_a_server_problem(api: Api) -> None:
    """A client that hangs up mid-stream leaves the simulator healthy."""
    cid = await api.create()
    run_id = await api.post_message(cid, "confirm:x")
    async with (
        httpx.AsyncClient() as other,
        other.stream(
            "GET", api.url(f"/conversations/{cid}/genie-runs/{run_id}"), headers=api.headers
        ) as r,
    ):
        assert r.status_code == 200
    assert (await api.client.get(f"{api.base_url}/_sim/health")).json() == {"ok": True}
