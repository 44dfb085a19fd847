"""Hostile input on every route: bodies too big or malformed, ids that lead nowhere, HTML
where names and parameters go, and a conversation whose worker is gone."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from temporalio.client import Client

from tests.inbox.helpers import dev_login, listed, paused_skill, undecided
from tests.workflow.helpers import GENIE, convs
from workflows import errors


@pytest.fixture
async def alice(dev_http: httpx.AsyncClient) -> tuple[httpx.AsyncClient, str]:
    return dev_http, await dev_login(dev_http, "alice")


async def test_bodies_too_big_malformed_or_incomplete_decide_nothing(
    client: Client, task_queue: str, alice: tuple[httpx.AsyncClient, str]
) -> None:
    http, csrf = alice
    api = convs(client, task_queue)
    wid, _, item = await paused_skill(api)
    path = f"/api/decisions/{wid}/skill/{item.call_id}"
    h = {"X-CSRF-Token": csrf}
    huge = "x" * (200 * 1024)
    as_json = {**h, "content-type": "application/json"}
    assert (await http.post(path, content=huge, headers=as_json)).status_code == 413
    r = await http.post(f"/items/{wid}/skill/{item.call_id}", data={"reason": huge})
    assert r.status_code == 413
    cases = [
        ({"content": "{not json", "headers": {**h, "content-type": "application/json"}}, 400),
        ({"content": "approved=true", "headers": {**h, "content-type": "text/plain"}}, 415),
        ({"json": {}, "headers": h}, 422),
        ({"json": {"approved": "yes"}, "headers": h}, 422),
        ({"json": {"approved": 1}, "headers": h}, 422),
        ({"json": [True], "headers": h}, 422),
        ({"json": {"approved": True, "approver": "mallory"}, "headers": h}, 422),
        ({"json": {"approved": False}, "headers": h}, 422),  # a rejection needs a reason
        ({"json": {"approved": True, "reason": "r" * 2001}, "headers": h}, 422),
    ]
    for kwargs, status in cases:
        r = await http.post(path, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (kwargs, r.text)
        assert "error" in r.json()
    # The approver is never taken from the request: an "approver" field is refused above.
    r = await http.post(
        f"/items/{wid}/skill/{item.call_id}",
        data={"csrf_token": csrf, "verdict": "approve", "approver": "mallory"},
    )
    assert r.status_code == 200 and "by alice" in r.text and "mallory" not in r.text
    st = await api.status(wid)
    assert [a.actor for a in st.audit if a.kind == "skill_decision"] == ["alice"]


async def test_ids_that_lead_nowhere(
    client: Client, task_queue: str, alice: tuple[httpx.AsyncClient, str]
) -> None:
    http, csrf = alice
    api = convs(client, task_queue)
    wid, _, item = await paused_skill(api)
    nobody = f"no-such-{uuid.uuid4()}"
    long = "w" * 300
    for path in (
        f"/items/{nobody}/skill/call_1",
        f"/conversations/{nobody}",
        f"/items/{long}/skill/call_1",
        f"/conversations/{long}",
    ):
        assert (await http.get(path)).status_code == 404, path
    r = await http.post(
        f"/items/{nobody}/skill/call_1", data={"csrf_token": csrf, "verdict": "approve"}
    )
    assert r.status_code == 404 and "No conversation has the workflow id" in r.text
    h = {"X-CSRF-Token": csrf}
    r = await http.post(f"/api/decisions/{nobody}/skill/c", json={"approved": True}, headers=h)
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"
    assert (await http.get(f"/api/conversations/{nobody}")).status_code == 404
    r = await http.post(f"/api/decisions/{long}/skill/c", json={"approved": True}, headers=h)
    assert r.status_code == 404
    # A real conversation, an unknown call: said in words, nothing decided.
    r = await http.post(
        f"/items/{wid}/skill/call_unknown", data={"csrf_token": csrf, "verdict": "approve"}
    )
    assert r.status_code == 404 and "not waiting for this decision" in r.text
    r = await http.post(
        f"/api/decisions/{wid}/connection/{item.call_id}", json={"action": "done"}, headers=h
    )
    assert r.status_code == 404 and r.json()["error"]["type"] == errors.UNKNOWN_ATTEMPT_ID
    r = await http.get(f"/items/{wid}/connection/nothing")
    assert r.status_code == 200 and "Not waiting any more" in r.text
    assert undecided(await api.status(wid))
    # GET on a decision route decides nothing either.
    assert (await http.get(f"/api/decisions/{wid}/skill/{item.call_id}")).status_code == 405


async def test_html_in_names_and_parameters_is_text(
    client: Client, task_queue: str, alice: tuple[httpx.AsyncClient, str]
) -> None:
    http, _ = alice
    api = convs(client, task_queue)
    evil = "<img/src=x/onerror=alert(1)>"
    wid, _, item = await paused_skill(api, f'"><script>alert(2)</script> confirm:{evil}')
    assert item.skill_name == evil
    for path in ("/pending", f"/items/{wid}/skill/{item.call_id}", f"/conversations/{wid}"):
        page = (await http.get(path)).text
        assert "<script>alert" not in page and "<img/src" not in page, path
        assert "&lt;img/src=x/onerror=alert(1)&gt;" in page, path
    r = await http.get("/pending")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    cookie = r.headers.get("set-cookie") or ""
    assert cookie == "" or ("httponly" in cookie.lower() and "samesite=lax" in cookie.lower())


async def test_a_conversation_whose_worker_is_gone_does_not_hold_up_the_page(
    client: Client, alice: tuple[httpx.AsyncClient, str]
) -> None:
    """No worker polls its queue: every query to it would wait. The page answers anyway,
    listing it as not answering, and quickly again (it is not asked on every refresh)."""
    http, _ = alice
    api = convs(client, f"nobody-polls-{uuid.uuid4()}")
    wid = f"orphan-{uuid.uuid4().hex[:8]}"
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    from workflows.search_attributes import GENIE_HANDLE, GENIE_STATE, GENIE_USER_ID

    # Started as waiting (so visibility lists it) on a queue that no worker polls.
    await api.client.start_workflow(
        "GenieConversation",
        {"genie_handle": GENIE, "user_id": "u"},
        id=wid,
        task_queue=api.task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(GENIE_HANDLE, GENIE),
                SearchAttributePair(GENIE_USER_ID, "u"),
                SearchAttributePair(GENIE_STATE, "awaiting_approval"),
            ]
        ),
    )
    try:
        await listed(api.client, wid)
        t0 = time.monotonic()
        r = await http.get("/api/pending")
        assert r.status_code == 200 and time.monotonic() - t0 < 10
        (silent,) = [s for s in r.json()["not_answering"] if s["workflow_id"] == wid]
        assert "did not answer within 2s" in silent["why"]
        t0 = time.monotonic()
        page = await http.get("/pending")
        assert time.monotonic() - t0 < 1.5 and "Not answering" in page.text and wid in page.text
        r = await http.get(f"/conversations/{wid}")
        assert r.status_code == 503 and "not answering" in r.text
    finally:
        await api.handle(wid).terminate("test over")
