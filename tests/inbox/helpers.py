"""Driving the inbox over HTTP as approvers and bots do, and the JWTs they carry."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from temporalio.client import Client

from geniectl import GenieConversations
from tests.workflow.helpers import GENIE, eventually
from workflows import ConversationPolicy, ConversationStatus
from workflows.models import PendingApproval, PendingConnection

ISSUER = "https://idp.example.test/"
AUDIENCE = "genie-inbox"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def token(key: RSAPrivateKey, *, lifetime: float = 300, **claims: Any) -> str:
    """A token as the identity provider would issue it; ``claims`` override or, as None,
    remove the defaults."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "email": "alice@example.test",
        "groups": ["approvers", "ops"],
        "iat": now,
        "exp": now + int(lifetime),
    }
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256")


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def dev_login(http: httpx.AsyncClient, name: str) -> str:
    """Pick ``name`` on a dev-mode inbox; the session's CSRF token."""
    page = await http.get("/login")
    r = await http.post(
        "/login", data={"csrf_token": csrf_of(page.text), "name": name, "next": "/pending"}
    )
    assert r.status_code == 303, r.text
    session = await http.get("/api/session")
    assert session.status_code == 200 and session.json()["me"]["name"] == name
    return str(session.json()["csrf_token"])


async def page_csrf(http: httpx.AsyncClient, path: str = "/pending") -> str:
    r = await http.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


async def paused_skill(
    api: GenieConversations,
    text: str = "please confirm:send_email",
    *,
    policy: ConversationPolicy | None = None,
    genie: str = GENIE,
    wid: str | None = None,
) -> tuple[str, int, PendingApproval]:
    """A new conversation paused on a skill confirmation (listed by visibility)."""
    wid = wid or f"inbox-{uuid.uuid4().hex[:12]}"
    await api.start(genie, "user-1", workflow_id=wid, policy=policy)
    acc = await api.send(wid, text)
    res = await api.wait(wid, acc.turn)
    assert res.status == "awaiting_approval", res
    await listed(api.client, wid)
    return wid, acc.turn, res.pending.approvals[0]


async def paused_connection(
    api: GenieConversations, text: str = "connect:jira"
) -> tuple[str, int, PendingConnection]:
    wid = f"inbox-{uuid.uuid4().hex[:12]}"
    policy = ConversationPolicy(connection_poll_interval=timedelta(0))
    await api.start(GENIE, "user-1", workflow_id=wid, policy=policy)
    acc = await api.send(wid, text)
    res = await api.wait(wid, acc.turn)
    assert res.status == "awaiting_connection", res
    await listed(api.client, wid)
    return wid, acc.turn, res.pending.connections[0]


async def listed(client: Client, wid: str) -> None:
    """Visibility is eventually consistent: wait until it lists ``wid`` as waiting."""
    query = f'WorkflowId = "{wid}" AND GenieState IN ("awaiting_approval", "awaiting_connection")'

    async def ids() -> list[str]:
        return [w.id async for w in client.list_workflows(query)]

    await eventually(ids, lambda found: found == [wid], what=f"{wid} in visibility")


async def history_length(api: GenieConversations, wid: str) -> int:
    history = await api.handle(wid).fetch_history()
    return len(history.events)


def undecided(st: ConversationStatus) -> bool:
    """Nothing decided: every item pending without a decision, no accepted decision."""
    decisions = [p.decision for p in st.pending_approvals]
    decisions += [c.decision for c in st.pending_connections]
    accepted = [a for a in st.audit if a.accepted and a.kind.endswith("_decision")]
    return bool(decisions) and all(d is None for d in decisions) and not accepted
