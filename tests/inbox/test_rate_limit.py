"""Every POST that reaches a conversation (decisions, link refreshes) is rate limited per
person: a refused decision is still recorded in the conversation's history, so a flood of
them must stop at the inbox, with 429 and nothing sent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from temporalio.client import Client

from inbox._limit import RateLimiter, retry_after
from inbox._settings import InboxSettings
from tests.inbox.conftest import ClientFor
from tests.inbox.helpers import dev_login, history_length, paused_connection, paused_skill
from tests.workflow.helpers import convs
from workflows import ConversationPolicy

BURST = InboxSettings.model_fields["rate_limit_burst"].default
FLOOD = 4 * BURST


async def test_a_flood_of_refused_decisions_stops_at_the_inbox(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api, policy=ConversationPolicy(approvers=["alice"]))
    mallory = client_for("dev")
    csrf = await dev_login(mallory, f"mallory-{uuid.uuid4().hex[:6]}")
    path = f"/api/decisions/{wid}/skill/{item.call_id}"
    h = {"X-CSRF-Token": csrf}

    before = await history_length(api, wid)
    first = await mallory.post(path, json={"approved": True}, headers=h)
    assert first.status_code == 403  # refused by the conversation, and recorded
    one_refusal = await history_length(api, wid) - before
    assert one_refusal > 0

    sem = asyncio.Semaphore(8)

    async def post() -> tuple[int, dict[str, object], str | None]:
        async with sem:
            r = await mallory.post(path, json={"approved": True}, headers=h)
            return r.status_code, r.json(), r.headers.get("retry-after")

    answers = await asyncio.gather(*(post() for _ in range(FLOOD)))
    codes = [code for code, _, _ in answers]
    limited = [(body, after) for code, body, after in answers if code == 429]
    assert set(codes) <= {403, 429}, codes
    # The burst (less the first refusal) and what refilled while the flood ran get
    # through; the rest is turned away at the inbox.
    assert len(limited) >= FLOOD - 2 * BURST, codes
    body, after = limited[0]
    assert after is not None and int(after) >= 1
    assert body["error"]["type"] == "RateLimited"  # type: ignore[index]
    assert "nothing was sent to the conversation" in body["error"]["message"]  # type: ignore[index]
    admitted = 1 + codes.count(403)
    assert await history_length(api, wid) - before <= admitted * one_refusal

    # The page's decide form is limited the same way (the bucket refills meanwhile, so
    # a few may pass), and what it turns away adds nothing to the history.
    grown = await history_length(api, wid)
    form = {"csrf_token": csrf, "verdict": "approve"}
    passed, r = await _until_limited(
        lambda: mallory.post(f"/items/{wid}/skill/{item.call_id}", data=form)
    )
    assert r.headers["retry-after"] and "Too many requests" in r.text
    assert "nothing was sent" in r.text
    assert await history_length(api, wid) - grown <= passed * one_refusal

    # The limit is per person: alice is not slowed down by mallory.
    alice = client_for("dev")
    alice_csrf = await dev_login(alice, "alice")
    r = await alice.post(path, json={"approved": True}, headers={"X-CSRF-Token": alice_csrf})
    assert r.status_code == 200, r.text
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


async def test_link_refreshes_are_limited_too(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, _, conn = await paused_connection(api)
    http = client_for("dev")
    csrf = await dev_login(http, f"refresher-{uuid.uuid4().hex[:6]}")
    path = f"/api/auth-links/{wid}/{conn.attempt_id}"
    passed, r = await _until_limited(lambda: http.post(path, headers={"X-CSRF-Token": csrf}))
    assert passed >= BURST and r.json()["error"]["type"] == "RateLimited"
    grown = await history_length(api, wid)
    page = f"/items/{wid}/connection/{conn.attempt_id}/link"
    passed, r = await _until_limited(lambda: http.post(page, data={"csrf_token": csrf}))
    assert "Too many requests" in r.text and r.headers["retry-after"]
    if passed == 0:
        assert await history_length(api, wid) == grown


async def _until_limited(
    post: Callable[[], Awaitable[httpx.Response]],
) -> tuple[int, httpx.Response]:
    """POST until the inbox answers 429: how many got through first, and that answer."""
    for passed in range(3 * BURST):
        r = await post()
        if r.status_code == 429:
            return passed, r
        assert r.status_code in (200, 403), r.text
    raise AssertionError(f"{3 * BURST} requests and none was limited")


def test_the_bucket_refills_and_the_map_of_buckets_stays_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(3, 1.0, max_identities=100, clock=lambda: now[0])
    assert [limiter.take("m") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("m") == pytest.approx(1.0)
    now[0] += 0.5
    assert limiter.take("m") == pytest.approx(0.5)  # a refused request spends nothing
    now[0] += 0.5
    assert limiter.take("m") == 0.0
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"

    for i in range(1000):  # many identities: the map never passes its bound
        limiter.take(f"user-{i}")
        assert len(limiter) <= 100
    # The busiest identity keeps its (empty) bucket while idle full ones are forgotten.
    for _ in range(3):
        limiter.take("flooder")
    for i in range(150):
        limiter.take(f"other-{i}")
        assert limiter.take("flooder") > 0
    assert len(limiter) <= 100
