"""Every fault kind of ``POST /_sim/faults`` (the ``sim`` fixture clears faults after each test)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from genie_sim._faults import FaultBook
from tests.services import SimProcess
from tests.sim.conftest import TIMEOUT, Api, data_of, stats_of, types
from tests.sim.test_conversations import assert_error


async def read_lines_until_cut(api: Api, method: str, path: str, **kwargs: Any) -> list[str]:
    """Read an SSE response expecting the server to cut it; returns the lines seen."""
    lines: list[str] = []

    async def read() -> None:
        async with (
            asyncio.timeout(TIMEOUT),
            api.client.stream(method, api.url(path), headers=api.headers, **kwargs) as r,
        ):
            assert r.status_code == 200
            async for line in r.aiter_lines():
                lines.append(line)

    with pytest.raises(httpx.RemoteProtocolError):
        await read()
    return lines


async def test_status_fault_with_retry_after(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    sim.fault(
        endpoint="send_message", status=503, retry_after=1.5, error_code="upstream_unavailable"
    )
    r = await api.request("POST", f"/conversations/{cid}/messages", json={"message": "hi"})
    assert_error(r, 503, "upstream_unavailable")
    assert r.headers["retry-after"] == "2"
    assert r.json()["retry_after_ms"] == 1500
    stats = stats_of(sim, cid)
    assert (stats["message_posts"], stats["messages_accepted"], stats["runs"]) == (1, 0, [])
    # Consumed: the next request goes through.
    await api.post_message(cid, "hi")
    assert stats_of(sim, cid)["messages_accepted"] == 1


async def test_status_fault_defaults_and_times(api: Api, sim: SimProcess) -> None:
    sim.fault(endpoint="list_conversations", status=429, times=2)
    for _ in range(2):
        r = await api.request("GET", "/conversations")
        assert_error(r, 429, "rate_limited")
        assert "retry-after" not in r.headers
    assert (await api.request("GET", "/conversations")).status_code == 200


async def test_after_request_does_the_work_then_loses_the_answer(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    sim.fault(endpoint="send_message", status=502, after_request=True)
    r = await api.request(
        "POST", f"/conversations/{cid}/messages", json={"message": "steps:1", "stream": True}
    )
    assert_error(r, 502, "bad_gateway")
    stats = stats_of(sim, cid)
    assert (stats["message_posts"], stats["messages_accepted"]) == (1, 1)
    run_id = stats["runs"][0]
    await api.wait_state(cid, "idle")
    history = (await api.messages(cid))["messages"]
    assert history[-1] == {
        **history[-1],
        "source": "user",
        "content": "steps:1",
        "genie_run_id": run_id,
    }
    async with api.reconnect(cid, run_id) as reader:
        assert types(await reader.rest())[-1] == "processing.finished"


async def test_after_request_on_a_decision(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "confirm:pto") as reader:
        call = data_of((await reader.until("skill.confirmation_required"))[-1])["call_id"]
        sim.fault(endpoint="skill_approval", status=504, after_request=True)
        assert_error(
            await api.decide(cid, call, {"resolution": "approved"}), 504, "gateway_timeout"
        )
        assert types(await reader.rest())[-1] == "processing.finished"
    assert_error(
        await api.decide(cid, call, {"resolution": "approved"}), 409, "skill_call_already_resolved"
    )
    stats = stats_of(sim, cid)
    assert stats["skill_decision_posts"] == {call: 2}
    assert stats["skill_decisions_applied"] == {call: 1}


async def test_conversation_filter(api: Api, sim: SimProcess) -> None:
    a, b = await api.create(), await api.create()
    sim.fault(endpoint="get_conversation", status=500, conversation_id=a)
    assert (await api.request("GET", f"/conversations/{b}")).status_code == 200
    assert_error(await api.request("GET", f"/conversations/{a}"), 500, "internal_error")
    assert (await api.request("GET", f"/conversations/{a}")).status_code == 200


async def test_events_fault_matches_its_query_conversation(api: Api, sim: SimProcess) -> None:
    a, b = await api.create(), await api.create()
    sim.fault(endpoint="events", status=503, conversation_id=a)
    assert (
        await api.request("GET", "/conversations/events", params={"conversation_id": b})
    ).status_code == 200
    r = await api.request("GET", "/conversations/events", params={"conversation_id": a})
    assert_error(r, 503, "upstream_unavailable")


async def test_drop_after_events_on_send(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    sim.fault(endpoint="send_message", drop_after_events=2)
    lines = await read_lines_until_cut(
        api, "POST", f"/conversations/{cid}/messages", json={"message": "steps:3", "stream": True}
    )
    ids = [line for line in lines if line.startswith("id:")]
    assert len(ids) == 2
    assert not any("stream_interrupted" in line or "processing.finished" in line for line in lines)
    await api.wait_state(cid, "idle")
    assert len((await api.events(conversation_id=cid))["events"]) == 6


async def test_drop_after_events_on_reconnect(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    run_id = await api.post_message(cid, "steps:3")
    await api.wait_state(cid, "idle")
    sim.fault(endpoint="reconnect", drop_after_events=3, conversation_id=cid)
    lines = await read_lines_until_cut(api, "GET", f"/conversations/{cid}/genie-runs/{run_id}")
    last_id = [line for line in lines if line.startswith("id:")][-1].removeprefix("id: ")
    async with api.reconnect(cid, run_id, last_id) as reader:
        rest = await reader.rest()
    assert [data_of(e)["seq_num"] for e in rest] == [4, 5, 6]


async def test_drop_on_a_json_endpoint(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    sim.fault(endpoint="send_message", drop_after_events=0)
    with pytest.raises(httpx.RemoteProtocolError):
        await api.request(
            "POST", f"/conversations/{cid}/messages", json={"message": "hi", "stream": False}
        )
    assert stats_of(sim, cid)["messages_accepted"] == 1


@pytest.mark.parametrize("kind", ["non_json", "no_type", "unknown_event", "missing_ids"])
async def test_malformed_frames(api: Api, sim: SimProcess, kind: str) -> None:
    cid = await api.create()
    sim.fault(endpoint="send_message", malformed=kind, after_events=1)
    frames = await api.raw_frames(
        "POST", f"/conversations/{cid}/messages", json={"message": "steps:1", "stream": True}
    )
    assert frames[0].event == "processing.started"
    odd = frames[1]
    assert [f.event for f in frames[2:]] == [
        "agent.message",
        "agent.message",
        "processing.finished",
    ]
    raw = odd.field("data") or ""
    if kind == "non_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
    elif kind == "no_type":
        assert odd.event is None
        assert odd.field("id") is None
        assert "type" not in odd.data
        assert odd.data["event_id"].startswith("evt_")
    elif kind == "unknown_event":
        assert odd.event == "genie.unknown_thing" == odd.data["type"]
        assert odd.field("id") == odd.data["event_id"]
        assert odd.data["conversation_id"] == cid
        # Its id is usable as Last-Event-ID: the replay resumes after the event before it.
        run_id = odd.data["genie_run_id"]
        async with api.reconnect(cid, run_id, odd.data["event_id"]) as reader:
            assert [data_of(e)["seq_num"] for e in await reader.rest()] == [2, 3, 4]
    else:
        assert odd.event == "agent.message"
        assert odd.field("id") is None
        assert "event_id" not in odd.data
        assert "seq_num" not in odd.data
    # Injected into this stream only: E9 never shows it.
    persisted = (await api.events(conversation_id=cid))["events"]
    assert [e["seq_num"] for e in persisted] == [1, 2, 3, 4]


async def test_malformed_at_zero_events_and_on_reconnect(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    run_id = await api.post_message(cid, "hi")
    await api.wait_state(cid, "idle")
    sim.fault(endpoint="reconnect", malformed="unknown_event")
    frames = await api.raw_frames("GET", f"/conversations/{cid}/genie-runs/{run_id}")
    assert [f.event for f in frames] == [
        "genie.unknown_thing",
        "processing.started",
        "agent.message",
        "processing.finished",
    ]


async def test_malformed_non_json_on_a_json_endpoint(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    sim.fault(endpoint="get_conversation", malformed="non_json")
    r = await api.request("GET", f"/conversations/{cid}")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()


@pytest.mark.parametrize("endpoint", ["events", "send_message", "reconnect"])
async def test_html_200(api: Api, sim: SimProcess, endpoint: str) -> None:
    cid = await api.create()
    run_id = await api.post_message(cid, "hi")
    await api.wait_state(cid, "idle")
    sim.fault(endpoint=endpoint, html_200=True)
    if endpoint == "events":
        r = await api.request("GET", "/conversations/events", params={"conversation_id": cid})
    elif endpoint == "send_message":
        r = await api.request(
            "POST", f"/conversations/{cid}/messages", json={"message": "x", "stream": True}
        )
    else:
        r = await api.request("GET", f"/conversations/{cid}/genie-runs/{run_id}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text.startswith("<!DOCTYPE html>")
    assert r.headers["x-request-id"]
    if endpoint == "send_message":
        assert stats_of(sim, cid)["messages_accepted"] == 1  # not performed


async def test_invalid_fault_spec_is_400(sim: SimProcess) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{sim.base_url}/_sim/faults", json={"endpoint": "send_message"})
        assert r.status_code == 400
        assert r.json()["error_code"] == "invalid_fault"
        r = await c.post(f"{sim.base_url}/_sim/faults", content=b"[]")
        assert r.status_code == 400
        r = await c.post(
            f"{sim.base_url}/_sim/faults", json={"endpoint": "events", "status": 500, "times": 3}
        )
        assert r.status_code == 201
        assert r.json()["times"] == 3
        assert len((await c.get(f"{sim.base_url}/_sim/faults")).json()["faults"]) == 1
        assert (await c.delete(f"{sim.base_url}/_sim/faults")).status_code == 200
        assert (await c.get(f"{sim.base_url}/_sim/faults")).json() == {"faults": []}


def test_a_timed_fault_is_an_outage_that_ends_by_itself() -> None:
    """``for_seconds``: every matching request fails until the time is up, then none."""
    book = FaultBook()
    book.add({"endpoint": "events", "status": 503, "for_seconds": 0.3})
    assert all(book.take("events", "c") is not None for _ in range(50))
    time.sleep(0.35)
    assert book.take("events", "c") is None
    assert book.active() == []
