"""Who decides is who authenticated: JWT (bearer or login), trusted proxy headers.

A token that does not hold (forged, expired, for another audience or issuer, unsigned) is
refused before anything reaches the conversation: the status shows no decision and no
audit entry. Headers naming a user count only from the configured proxy addresses.
"""

from __future__ import annotations

import jwt
import pytest
from markupsafe import escape
from temporalio.client import Client

from tests.inbox.conftest import IDP_KEY, OTHER_KEY, SIGNING_KEY_ID, ClientFor
from tests.inbox.helpers import bearer, csrf_of, paused_skill, token, undecided
from tests.workflow.helpers import convs
from workflows import ConversationPolicy


async def test_a_bearer_token_decides_as_its_subject_without_csrf(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api)
    http = client_for("jwt")
    auth = bearer(token(IDP_KEY, email="alice@example.test", groups=["ops", "approvers"]))
    r = await http.get("/api/session", headers=auth)
    assert r.status_code == 200, r.text
    me = r.json()["me"]
    assert me == {
        "name": "alice@example.test",
        "groups": ["approvers", "ops"],
        "auth_method": "jwt",
    }
    listed = (await http.get("/api/pending", headers=auth)).json()
    assert any(i["workflow_id"] == wid for i in listed["items"])
    page = await http.get("/pending", headers=auth)
    assert page.status_code == 200 and "alice@example.test" in page.text
    assert "Development mode" not in page.text
    assert f"signed (key {SIGNING_KEY_ID})" in page.text

    r = await http.post(
        f"/api/decisions/{wid}/skill/{item.call_id}", json={"approved": True}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["decision"]["decided_by"] == "alice@example.test"
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"
    st = await api.status(wid)
    (entry,) = [a for a in st.audit if a.kind == "skill_decision"]
    # The proof the inbox attached says how the approver was authenticated.
    assert (entry.actor, entry.auth) == ("alice@example.test", f"jwt (key {SIGNING_KEY_ID})")


@pytest.mark.parametrize(
    ("case", "make", "why"),
    [
        ("forged", lambda: token(OTHER_KEY), "signature does not verify"),
        ("expired", lambda: token(IDP_KEY, lifetime=-120), "expired"),
        ("wrong audience", lambda: token(IDP_KEY, aud="another-app"), "audience"),
        ("wrong issuer", lambda: token(IDP_KEY, iss="https://evil.test/"), "issuer"),
        ("no expiry", lambda: token(IDP_KEY, exp=None), "'exp' claim"),
        (
            "unsigned",
            lambda: jwt.encode(
                {"iss": "https://idp.example.test/", "aud": "genie-inbox", "email": "x@y"},
                key="",
                algorithm="none",
            ),
            "are not accepted",
        ),
        ("garbage", lambda: "not.a.token", "not a valid token"),
        ("no name claim", lambda: token(IDP_KEY, email=None), "usable 'email' claim"),
    ],
)
async def test_a_token_that_does_not_hold_decides_nothing(
    client: Client, task_queue: str, client_for: ClientFor, case: str, make: object, why: str
) -> None:
    api = convs(client, task_queue)
    wid, _, item = await paused_skill(api)
    http = client_for("jwt")
    auth = bearer(make())  # type: ignore[operator]
    r = await http.post(
        f"/api/decisions/{wid}/skill/{item.call_id}", json={"approved": True}, headers=auth
    )
    assert r.status_code == 401, (case, r.text)
    assert r.json()["error"]["type"] == "Unauthenticated" and why in r.json()["error"]["message"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert (await http.get("/api/pending", headers=auth)).status_code == 401
    page = await http.get("/pending", headers=auth)
    assert page.status_code == 401 and escape(why) in page.text
    st = await api.status(wid)
    assert undecided(st) and st.audit == [], case


async def test_login_with_a_token_then_forms_need_csrf_and_an_expired_session_logs_out(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api, policy=ConversationPolicy(approvers=["bob@x.test"]))
    http = client_for("jwt")
    r = await http.get("/pending")
    assert r.status_code == 401 and "Paste an access token" in r.text
    csrf = csrf_of(r.text)
    bad = await http.post("/login", data={"csrf_token": csrf, "token": token(OTHER_KEY)})
    assert bad.status_code == 401 and "signature does not verify" in bad.text
    r = await http.post(
        "/login",
        data={"csrf_token": csrf, "token": token(IDP_KEY, email="bob@x.test"), "next": "/"},
    )
    assert r.status_code == 303
    page = await http.get("/pending")
    assert page.status_code == 200 and "bob@x.test" in page.text
    csrf = csrf_of(page.text)
    # Cookie-authenticated JSON needs the CSRF header; a form needs the field.
    api_path = f"/api/decisions/{wid}/skill/{item.call_id}"
    assert (await http.post(api_path, json={"approved": True})).status_code == 403
    form_path = f"/items/{wid}/skill/{item.call_id}"
    assert (await http.post(form_path, data={"verdict": "approve"})).status_code == 403
    assert undecided(await api.status(wid))
    r = await http.post(form_path, data={"verdict": "approve", "csrf_token": csrf})
    assert r.status_code == 200 and "Approved" in r.text and "bob@x.test" in r.text
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"

    # A session whose token has expired is a login page again, saying why.
    other = client_for("jwt")
    csrf = csrf_of((await other.get("/login")).text)
    short = token(IDP_KEY, lifetime=-100)  # past the 30 s leeway
    r = await other.post("/login", data={"csrf_token": csrf, "token": short})
    assert r.status_code == 401 and "expired" in r.text


async def test_proxy_headers_count_only_from_the_trusted_proxy(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api)
    who = {"X-Forwarded-User": "dave", "X-Forwarded-Groups": "ops, approvers"}

    elsewhere = client_for("proxy_elsewhere")  # trusts 10.0.0.0/8 only; we are 127.0.0.1
    r = await elsewhere.get("/pending", headers=who)
    assert r.status_code == 401 and "must come through the authenticating proxy" in r.text
    r = await elsewhere.post(
        f"/api/decisions/{wid}/skill/{item.call_id}", json={"approved": True}, headers=who
    )
    assert r.status_code == 401
    assert undecided(await api.status(wid))

    proxy = client_for("proxy")
    assert (await proxy.get("/api/pending")).status_code == 401  # no user header
    assert (await proxy.get("/login")).status_code == 404  # the proxy logs people in
    session = (await proxy.get("/api/session", headers=who)).json()
    assert session["me"] == {"name": "dave", "groups": ["approvers", "ops"], "auth_method": "proxy"}
    page = await proxy.get("/pending", headers=who)
    assert page.status_code == 200 and ">dave</span>" in page.text and wid in page.text
    # The proxy's headers come with every request the browser makes: ambient, so CSRF.
    path = f"/api/decisions/{wid}/skill/{item.call_id}"
    r = await proxy.post(path, json={"approved": True}, headers=who)
    assert r.status_code == 403 and r.json()["error"]["type"] == "CsrfRequired"
    r = await proxy.post(
        path, json={"approved": True}, headers={**who, "X-CSRF-Token": session["csrf_token"]}
    )
    assert r.status_code == 200 and r.json()["decision"]["decided_by"] == "dave"
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"
