"""Auth, errors, request ids and E1-E4 against the shared default simulator."""

from __future__ import annotations

import re

import httpx

from tests.services import SimProcess
from tests.sim.conftest import Api, stats_of

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error_code", "error_message", "request_id"}
    assert "result" not in body
    assert body["error_code"] == code
    assert body["request_id"] == r.headers["x-request-id"]
    assert UUID_RE.match(body["request_id"])


async def test_create_conversation_201(api: Api) -> None:
    r = await api.request("POST", "/conversations", json={})
    assert r.status_code == 201
    body = r.json()
    assert body["conversation_id"].startswith("conv_")
    assert ISO_RE.match(body["created_at"])
    assert r.headers["x-request-id"]


async def test_create_conversation_without_body(api: Api) -> None:
    r = await api.request("POST", "/conversations")
    assert r.status_code == 201


async def test_auth_failed_variants(api: Api) -> None:
    url = api.url("/conversations")
    user = {"X-IDP-User-Id": api.user}
    for headers in (
        user,
        {**user, "Authorization": "Bearer wrong"},
        {**user, "Authorization": f"bearer {api.api_key}"},
        {**user, "Authorization": f"Bearer  {api.api_key}"},
        {**user, "Authorization": api.api_key},
        {**user, "Authorization": "Bearer wrkaus-devapi-token"},
    ):
        assert_error(await api.client.post(url, headers=headers), 401, "auth_failed")


async def test_user_nonactive_or_missing(api: Api) -> None:
    for user in ("", "someone@example.com", "inactive-42"):
        r = await api.other(user=user).request("GET", "/conversations")
        assert_error(r, 401, "user_nonactive_or_missing")
    r = await api.client.get(
        api.url("/conversations"), headers={"Authorization": f"Bearer {api.api_key}"}
    )
    assert_error(r, 401, "user_nonactive_or_missing")


async def test_auth_is_checked_on_streaming_endpoints_before_any_sse(api: Api) -> None:
    cid = await api.create()
    run_id = await api.post_message(cid, "hi")
    r = await api.other(api_key="nope").request(
        "GET", f"/conversations/{cid}/genie-runs/{run_id}", headers={"Accept": "text/event-stream"}
    )
    assert_error(r, 401, "auth_failed")
    assert r.headers["content-type"].startswith("application/json")


async def test_genie_without_client_406(api: Api) -> None:
    r = await api.other(handle="gin-noclient-1").request("POST", "/conversations")
    assert_error(r, 406, "chat_interface_not_configured")


async def test_other_users_conversation_is_404(api: Api) -> None:
    cid = await api.create()
    intruder = api.other(user="someone-else")
    for method, path in (
        ("GET", f"/conversations/{cid}"),
        ("DELETE", f"/conversations/{cid}"),
        ("GET", f"/conversations/{cid}/messages"),
        ("POST", f"/conversations/{cid}/messages"),
    ):
        assert_error(await intruder.request(method, path), 404, "conversation_not_found")
    r = await api.other(handle="gin-another").request("GET", f"/conversations/{cid}")
    assert_error(r, 404, "conversation_not_found")
    assert_error(
        await api.request("GET", "/conversations/conv_nope"), 404, "conversation_not_found"
    )


async def test_unknown_route_is_json_404_with_request_id(api: Api) -> None:
    r = await api.request("GET", "/nothing/here")
    assert_error(r, 404, "not_found")


async def test_list_conversations_newest_first_paginated_and_scoped(api: Api) -> None:
    created = [await api.create() for _ in range(3)]
    await api.other(user="a-different-user").create()
    r = await api.request("GET", "/conversations", params={"limit": 2})
    assert r.status_code == 200
    first = r.json()
    assert [c["conversation_id"] for c in first["list"]] == created[::-1][:2]
    assert first["total_count"] == 3
    r = await api.request("GET", "/conversations", params={"limit": 2, "cursor": first["cursor"]})
    second = r.json()
    assert [c["conversation_id"] for c in second["list"]] == created[:1]
    assert "cursor" not in second
    item = second["list"][0]
    assert set(item) == {"conversation_id", "topic", "created_at", "last_updated_at"}
    assert_error(
        await api.request("GET", "/conversations", params={"cursor": "%%%"}), 400, "invalid_cursor"
    )
    assert_error(
        await api.request("GET", "/conversations", params={"limit": 0}), 400, "invalid_request"
    )


async def test_get_conversation_fields_and_topic(api: Api) -> None:
    cid = await api.create()
    body = await api.conversation(cid)
    assert body["state"] == "idle"
    assert body["last_event"] is None
    assert body["topic"] is None
    await api.run_to_end(cid, "What is my PTO balance?")
    body = await api.conversation(cid)
    assert body["topic"] == "What is my PTO balance?"
    assert body["last_event"]["type"] == "processing.finished"
    assert body["last_event"]["conversation_id"] == cid
    assert ISO_RE.match(body["updated_at"])


async def test_delete_conversation(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    await api.run_to_end(cid, "hello")
    r = await api.request("DELETE", f"/conversations/{cid}")
    assert r.status_code == 204
    assert_error(await api.request("GET", f"/conversations/{cid}"), 404, "conversation_not_found")
    assert_error(
        await api.request("DELETE", f"/conversations/{cid}"), 404, "conversation_not_found"
    )
    assert stats_of(sim, cid)["state"] == "deleted"


async def test_delete_ends_open_streams_of_a_paused_run(api: Api) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "confirm:pto") as reader:
        await reader.until("skill.confirmation_required")
        assert (await api.request("DELETE", f"/conversations/{cid}")).status_code == 204
        last = await reader.next()
        assert last is not None
        assert last.event == "system.stream_interrupted"
        assert last.data
        assert '"reason":"conversation_deleted"' in last.data
        assert await reader.next() is None
