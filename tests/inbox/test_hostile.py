"""Hostile input on every route: bodies too big or malformed, ids that lead nowhere, HTML
where names and parameters go, and a conversation whose worker is gone."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from genie_api import GenieClient
from geniectl import GenieConversations
from inbox._auth import Identity
from inbox._data import Reader
from tests.conftest import worker_settings
from tests.inbox.helpers import dev_login, listed, paused_skill, undecided
from tests.services import SimProcess
from tests.workflow.helpers import GENIE, convs, eventually
from worker import build_worker
from workflows import errors
from workflows.search_attributes import GENIE_HANDLE, GENIE_STATE, GENIE_USER_ID


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
        # Nested past the parser's recursion limit (a RecursionError, not a ValueError).
        ({"content": "[" * 50_000, "headers": {**h, "content-type": "application/json"}}, 400),
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


async def _orphan(client: Client) -> tuple[GenieConversations, str]:
    """A conversation started as waiting (so visibility lists it) on a queue that no
    worker polls: every query to it waits for its timeout."""
    api = convs(client, f"nobody-polls-{uuid.uuid4()}")
    wid = f"orphan-{uuid.uuid4().hex[:8]}"
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
    await listed(api.client, wid)
    return api, wid


async def test_a_conversation_whose_worker_is_gone_does_not_hold_up_the_page(
    client: Client, alice: tuple[httpx.AsyncClient, str]
) -> None:
    """No worker polls its queue: every query to it would wait. The page answers anyway,
    listing it as not answering, and quickly again (it is not asked on every refresh)."""
    http, _ = alice
    api, wid = await _orphan(client)
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


async def test_a_silent_conversation_is_asked_again_in_the_background(
    client: Client, sim: SimProcess, genie: GenieClient
) -> None:
    """Once a silent conversation's cache expires, the page must not wait for it again:
    it stays listed as not answering while it is asked in the background, and once it
    answers (here: a worker comes back for its queue) the next listing shows it answering.
    Before, every load after each expiry waited the query timeout, per silent
    conversation."""
    api, wid = await _orphan(client)
    me = Identity("alice", (), "dev", "session")
    reader = Reader(api, query_timeout=1.0, silent_for=0.3)
    try:
        first = await reader.pending(me)
        assert [s.workflow_id for s in first.silent if s.workflow_id == wid] == [wid]
        await asyncio.sleep(0.4)  # expired
        for _ in range(3):
            t0 = time.monotonic()
            again = await reader.pending(me)
            assert time.monotonic() - t0 < 0.5, "the page waited for a known-silent one"
            assert wid in {s.workflow_id for s in again.silent}
        async with build_worker(client, worker_settings(sim), genie, task_queue=api.task_queue):
            answered = await eventually(
                lambda: reader.pending(me),
                lambda listing: wid not in {s.workflow_id for s in listing.silent},
                what="the conversation answering again",
            )
        assert wid not in {s.workflow_id for s in answered.silent}
    finally:
        await api.handle(wid).terminate("test over")
