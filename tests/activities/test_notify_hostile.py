"""The ``notify`` activity against hostile receivers and bad configuration.

The receivers are real HTTP servers on loopback (asyncio streams, so they can answer
what no well-behaved server would: a 100 MB body, headers one line every second). The
activity runs in the SDK's ``ActivityEnvironment``; one test runs a whole conversation.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import _notify
from activities._notify import NotifyActivities, NotifyEndpoint, NotifyInput
from activities._options import MAX_SERVER_RETRY_DELAY, MIN_SERVER_RETRY_DELAY
from genie_api import GenieClient
from genie_config import ConfigError, load_deployment
from geniectl import GenieConversations
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.webhooks import SECRET, Receiver
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


class Hostile:
    """A loopback server running ``handler`` per connection, counting bytes it sent."""

    def __init__(self) -> None:
        self.sent = 0
        self.url = ""

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)


async def _serve(hostile: Hostile, answer: Answer) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, as it should
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    hostile.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    return server


def _input(**overrides: Any) -> NotifyInput:
    fields: dict[str, Any] = {
        "endpoint": "ops",
        "webhook_id": "wf-1:call_1:pause",
        "event": "pause",
        "workflow_id": "wf-1",
        "genie_handle": "helper",
        "user_id": "user-1",
        "ref": "call_1",
        "kind": "skill_confirmation",
        "title": "send_email wants approval",
        "deadline": datetime.now(UTC) + timedelta(hours=1),
        **overrides,
    }
    return NotifyInput(**fields)


def _activities(url: str, fmt: str = "standard") -> NotifyActivities:
    endpoint = NotifyEndpoint(
        name="ops",
        url=SecretStr(url),
        format=fmt,
        secret=SecretStr(SECRET) if fmt == "standard" else None,
    )
    return NotifyActivities([endpoint], "https://inbox.example.com")


async def _notify_within(acts: NotifyActivities, inp: NotifyInput, seconds: float) -> Any:
    # The bound is the test's, so that the old code (which waited forever) fails here.
    return await asyncio.wait_for(ActivityEnvironment().run(acts.notify, inp), seconds)


@asynccontextmanager
async def _notifying(
    client: Client, sim: SimProcess, genie: GenieClient, receiver: Receiver
) -> AsyncIterator[GenieConversations]:
    """A real worker on a queue of its own, telling ``receiver`` of every pause."""
    tq = f"test-notify-{uuid.uuid4()}"
    settings = worker_settings(sim, notify_url=receiver.url, notify_secret=SECRET)
    async with build_worker(client, settings, genie, task_queue=tq):
        yield convs(client, tq)


@pytest.fixture
def hostile() -> Hostile:
    return Hostile()


async def test_a_huge_answer_is_never_read(hostile: Hostile) -> None:
    """A receiver that answers 200 with 100 MB: the status is all we need; nothing of the
    body is held (the old code read all of it into memory before looking at the status)."""

    async def answer(writer: asyncio.StreamWriter) -> None:
        await hostile.write(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        chunk = b"x" * 1_000_000
        for _ in range(100):
            await hostile.write(writer, chunk)

    async with await _serve(hostile, answer):
        result = await _notify_within(_activities(hostile.url), _input(), 15)
    assert result.status == 200
    assert hostile.sent < 20_000_000, f"the worker read {hostile.sent} bytes of the answer"


@pytest.mark.parametrize("fmt", ["standard", "slack"])
async def test_a_receiver_that_drips_its_body_has_been_delivered_to(
    hostile: Hostile, fmt: str
) -> None:
    """200, then a byte of body every second forever: delivered (it said 200), at once. The
    old code kept reading, so every attempt timed out and the notification was sent
    again every 30 s for up to an hour."""

    async def answer(writer: asyncio.StreamWriter) -> None:
        await hostile.write(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            await hostile.write(writer, b"1\r\nx\r\n")
            await asyncio.sleep(1)

    async with await _serve(hostile, answer):
        result = await _notify_within(_activities(hostile.url, fmt), _input(), 10)
    assert result.status == 200


async def test_a_receiver_that_drips_its_headers_is_given_up_in_time(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header line every second, never the end of them: each read is quick, so only a
    bound on the whole delivery ends it, as a clear retryable failure."""
    monkeypatch.setattr(_notify, "DELIVERY_SECONDS", 2.0, raising=False)

    async def answer(writer: asyncio.StreamWriter) -> None:
        await hostile.write(writer, b"HTTP/1.1 200 OK\r\n")
        while True:
            await hostile.write(writer, b"X-Slow: yes\r\n")
            await asyncio.sleep(1)

    async with await _serve(hostile, answer):
        with pytest.raises(ApplicationError) as failed:
            await _notify_within(_activities(hostile.url), _input(), 10)
    assert failed.value.type == _notify.NOTIFY_FAILED and not failed.value.non_retryable
    assert "did not answer within 2 s" in str(failed.value)
    assert "127.0.0.1" not in str(failed.value)


BAD_URLS = [
    "ftp://hooks.example.com/SECRET-PATH",
    "file:///etc/SECRET-PATH",
    "hooks.example.com/SECRET-PATH",
    "http:///SECRET-PATH",
    "http://[::1/SECRET-PATH",
    "http://hooks.example.com:99999/SECRET-PATH",
    "",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_an_endpoint_url_that_is_not_http_stops_the_worker_without_quoting_it(
    url: str, tmp_path: Path, no_genie_env: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError) as bad:
        NotifyEndpoint(name="ops", url=SecretStr(url), secret=SecretStr(SECRET))
    assert "SECRET-PATH" not in str(bad.value)
    path = tmp_path / "deployment.toml"
    path.write_text(f'[[notify]]\nname = "ops"\nformat = "slack"\nurl = {json.dumps(url)}\n')
    no_genie_env.setenv("GENIE_DEPLOYMENT_FILE", str(path))
    with pytest.raises(ConfigError) as refused:
        load_deployment(_settings())
    assert "[[notify]] #1: url:" in str(refused.value)
    assert "SECRET-PATH" not in str(refused.value)


@pytest.mark.parametrize("secret", ["whsec_SECRE", "whsec_S", ""])
def test_a_signing_secret_that_cannot_sign_stops_the_worker_without_quoting_it(
    secret: str, tmp_path: Path, no_genie_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "deployment.toml"
    path.write_text(
        f'[[notify]]\nname = "ops"\nurl = "https://hooks.example.com/x"\n'
        f"secret = {json.dumps(secret)}\n"
    )
    no_genie_env.setenv("GENIE_DEPLOYMENT_FILE", str(path))
    with pytest.raises(ConfigError) as refused:
        load_deployment(_settings())
    assert "[[notify]] #1: secret:" in str(refused.value)
    assert not secret or secret not in str(refused.value)


def _settings() -> Any:
    from genie_config import GenieSettings

    return GenieSettings(api_base_url="http://127.0.0.1:1", api_key="k")


async def test_a_standard_body_is_bounded_whatever_the_genie_sent() -> None:
    receiver = Receiver()
    try:
        details = {
            "call_id": "call_1",
            "skill_name": "n" * 1_000_000,
            "skill_parameters": {"body": "p" * 1_000_000},
            "approvers": [f"a{i}" for i in range(10_000)],
        }
        inp = _input(title="t" * 1_000_000, details=details)
        await _notify_within(_activities(receiver.url), inp, 15)
        (event,) = receiver.events()
    finally:
        receiver.close()
    assert len(receiver.posts[0][1]) < 64_000
    data = event["data"]
    assert data["title"] == "t" * _notify.MAX_TEXT_CHARS
    assert data["details"]["skill_name"] == "n" * _notify.MAX_TEXT_CHARS
    assert data["details"]["skill_parameters"]["body"].startswith("ppp")
    assert data["details"]["parameters_shortened"] is True
    assert len(data["details"]["approvers"]) == _notify.MAX_LIST_ITEMS


async def test_a_connection_notice_never_carries_the_users_auth_link(
    client: Client, sim: SimProcess, genie: GenieClient
) -> None:
    """The auth link connects whoever opens it into the user's conversation; the inbox
    shows it only to those who may decide the item, a webhook receiver is not that."""
    receiver = Receiver()
    try:
        async with _notifying(client, sim, genie, receiver) as api:
            wid = await start(api)
            await api.send(wid, "connect:jira")
            st = await eventually(
                lambda: api.status(wid), lambda s: bool(s.pending_connections), what="a pause"
            )
            assert st.pending_connections[0].auth_url  # there is one to leak
            events = await eventually(
                lambda: asyncio.sleep(0, receiver.events()), lambda e: len(e) >= 1, what="hook"
            )
    finally:
        receiver.close()
    assert events[0]["type"] == "genie.runtime_connection.pause"
    details = events[0]["data"]["details"]
    assert details["connector_name"] == "jira"
    assert "auth_url" not in details
    assert st.pending_connections[0].auth_url not in receiver.posts[0][1].decode()


@pytest.mark.parametrize("workflow_id", ["bestellung-müller-42", "order\r\nX-Evil: 1", "a b%c"])
async def test_any_workflow_id_is_delivered_with_a_stable_ascii_webhook_id(
    workflow_id: str,
) -> None:
    """Temporal takes any UTF-8 workflow id; the notice of such a conversation must
    arrive, signed, its ``webhook-id`` the same on a retried attempt and no way to add a
    header."""
    receiver = Receiver()
    try:
        acts = _activities(receiver.url)
        inp = _input(workflow_id=workflow_id, webhook_id=f"{workflow_id}:call_1:pause")
        for _ in range(2):  # a retried attempt
            await _notify_within(acts, inp, 15)
        events = receiver.events()  # verifies each signature
    finally:
        receiver.close()
    ids = {e["webhook-id"] for e in events}
    assert len(events) == 2 and len(ids) == 1, events
    (sent,) = ids
    assert sent.isascii() and sent.isprintable() and " " not in sent
    assert all(e["data"]["workflow_id"] == workflow_id for e in events)
    assert not any("x-evil" in headers for headers, _ in receiver.posts)


@pytest.mark.parametrize(
    ("status", "retry_after", "delay"),
    [
        (429, "7", 7.0),
        (503, "12", 12.0),
        (502, "3", 3.0),
        (429, "86400", MAX_SERVER_RETRY_DELAY),  # capped: the pause would be over
        (429, "1e400", None),  # infinity is no wait
        (429, "nan", None),
        (429, "-5", None),
        (429, "0", None),  # "now" is the workflow's back-off
        (429, "0.000001", MIN_SERVER_RETRY_DELAY),  # not retries back to back
        (503, "0.5", MIN_SERVER_RETRY_DELAY),
        (429, "soon", None),
        (404, "7", None),  # only 429 and 5xx ask for a retry later
        (301, "7", None),
        (503, None, None),
    ],
)
async def test_a_receivers_retry_after_sets_the_next_attempts_delay(
    status: int, retry_after: str | None, delay: float | None
) -> None:
    """A rate-limited receiver (Slack answers 429 with ``Retry-After``) is retried when it
    asks, not on the workflow's 2 s back-off, which would only earn more 429s. What it
    asks is bounded: garbage counts as nothing, and a day is cut to the cap."""
    receiver = Receiver()
    receiver.script = [(status, {"Retry-After": retry_after} if retry_after else {})]
    try:
        with pytest.raises(ApplicationError) as caught:
            await _notify_within(_activities(receiver.url), _input(), 15)
    finally:
        receiver.close()
    err = caught.value
    assert err.type == _notify.NOTIFY_FAILED and not err.non_retryable
    assert err.message == f"endpoint 'ops' answered HTTP {status}"  # the status, no more
    expected = None if delay is None else timedelta(seconds=delay)
    assert err.next_retry_delay == expected


async def test_an_http_date_retry_after_is_a_wait_from_now() -> None:
    receiver = Receiver()
    when = datetime.now(UTC) + timedelta(seconds=40)
    receiver.script = [(503, {"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")})]
    try:
        with pytest.raises(ApplicationError) as caught:
            await _notify_within(_activities(receiver.url), _input(), 15)
    finally:
        receiver.close()
    delay = caught.value.next_retry_delay
    assert delay is not None and 35 <= delay.total_seconds() <= 41, delay


async def test_a_rate_limited_receiver_is_notified_again_when_it_asked(
    client: Client, sim: SimProcess, genie: GenieClient
) -> None:
    """Through a real worker and server: the receiver answers the pause's notice 429 with
    ``Retry-After: 5``; the next attempt comes 5 s later (the retry policy alone would send
    it after 2 s), and the card then shows it delivered."""
    receiver = Receiver()
    receiver.script = [(429, {"Retry-After": "5"})]
    try:
        async with _notifying(client, sim, genie, receiver) as api:
            wid = await start(api)
            await api.send(wid, "please confirm:send_email")
            st = await eventually(
                lambda: api.status(wid),
                lambda s: any(d.state == "delivered" for d in s.notifications),
                what="the notice delivered",
                within=30,
            )
    finally:
        receiver.close()
    assert len(receiver.posts) == 2, receiver.posts
    gap = receiver.times[1] - receiver.times[0]
    assert 4.5 <= gap < 12, f"the second attempt came {gap:.1f} s after the 429"
    assert {e["webhook-id"] for e in receiver.events()} == {receiver.events()[0]["webhook-id"]}
    assert st.pending_approvals  # the conversation waited for its approver meanwhile
