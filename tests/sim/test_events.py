"""E9: persisted events, exclusive ``since_created_at`` paging, scoping."""

from __future__ import annotations

from tests.sim.conftest import Api, data_of
from tests.sim.test_conversations import assert_error


async def test_events_match_the_stream_and_page_exclusively(api: Api) -> None:
    cid = await api.create()
    streamed = [data_of(e) for e in await api.run_to_end(cid, "steps:7")]
    assert len(streamed) == 10
    pages = []
    since = None
    while True:
        params = {"conversation_id": cid, "limit": 3}
        if since:
            params["since_created_at"] = since
        page = await api.events(**params)
        pages.append(page["events"])
        if "next_since_created_at" not in page:
            break
        assert page["next_since_created_at"] == page["events"][-1]["created_at"]
        since = page["next_since_created_at"]
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [e for p in pages for e in p] == streamed


async def test_since_is_exclusive(api: Api) -> None:
    cid = await api.create()
    streamed = [data_of(e) for e in await api.run_to_end(cid, "steps:2")]
    page = await api.events(conversation_id=cid, since_created_at=streamed[1]["created_at"])
    assert page["events"] == streamed[2:]
    assert "next_since_created_at" not in page
    last = await api.events(conversation_id=cid, since_created_at=streamed[-1]["created_at"])
    assert last == {"events": []}


async def test_events_span_runs_oldest_first_and_skip_ephemeral(api: Api) -> None:
    cid = await api.create()
    first = [data_of(e) for e in await api.run_to_end(cid, "one")]
    async with api.send_stream(cid, "connect:Box") as reader:
        card = data_of((await reader.until("runtime_connection.auth_required"))[-1])
        await api.client.get(card["auth_link"]["url"])
        second = [data_of(e) for e in await reader.rest()]
    all_events = (await api.events(conversation_id=cid))["events"]
    assert all_events[: len(first)] == first
    kinds = [e["type"] for e in all_events]
    assert kinds.count("processing.started") == 2
    assert "runtime_connection.auth_required" in kinds
    assert "runtime_connection.auth_success" not in kinds
    assert [e for e in second if e["type"] != "runtime_connection.auth_success"] == all_events[
        len(first) + 2 :
    ]
    stamps = [e["created_at"] for e in all_events]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


async def test_events_without_conversation_id_cover_all_of_the_users(api: Api) -> None:
    a, b = await api.create(), await api.create()
    await api.run_to_end(a, "in a")
    await api.run_to_end(b, "in b")
    await api.other(user="someone-else-entirely").run_to_end(
        await api.other(user="someone-else-entirely").create(), "theirs"
    )
    events = (await api.events())["events"]
    assert {e["conversation_id"] for e in events} == {a, b}
    assert len(events) == 6
    assert [e["created_at"] for e in events] == sorted(e["created_at"] for e in events)


async def test_events_errors(api: Api) -> None:
    cid = await api.create()
    path = "/conversations/events"
    r = await api.request(
        "GET", path, params={"conversation_id": cid, "since_created_at": "yesterday"}
    )
    assert_error(r, 400, "invalid_request")
    assert_error(await api.request("GET", path, params={"limit": "x"}), 400, "invalid_request")
    assert_error(await api.request("GET", path, params={"limit": 0}), 400, "invalid_request")
    r = await api.request("GET", path, params={"conversation_id": cid, "limit": 100000})
    assert r.status_code == 200  # clamped to 500
    r = await api.other(user="intruder").request("GET", path, params={"conversation_id": cid})
    assert_error(r, 404, "conversation_not_found")


async def test_limit_is_capped_at_500(api: Api) -> None:
    cid = await api.create()
    await api.run_to_end(cid, "steps:600")
    page = await api.events(conversation_id=cid, limit=1000)
    assert len(page["events"]) == 500
    assert page["next_since_created_at"] == page["events"][-1]["created_at"]
    # 603 events: 500 + a default page of 100 + 3.
    rest = await api.events(conversation_id=cid, since_created_at=page["next_since_created_at"])
    assert len(rest["events"]) == 100
    last = await api.events(conversation_id=cid, since_created_at=rest["next_since_created_at"])
    assert len(last["events"]) == 3
    assert "next_since_created_at" not in last
