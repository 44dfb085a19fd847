"""Helpers and extra simulators for the simulator tests.

Everything talks plain HTTP/SSE (httpx + httpx-sse) to a real ``python -m genie_sim``
process. The shared default simulator is the session fixture ``sim`` from
``tests/conftest.py``; simulators with quirk flags are started per module here.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from tests.services import SIM_API_KEY, SimProcess, running_sim

TIMEOUT = 5.0
"""Upper bound for any single wait in these tests."""


@dataclass
class Frame:
    """One raw SSE frame as it was on the wire."""

    lines: list[str]

    def field(self, name: str) -> str | None:
        """The value of the first ``name:`` line, or ``None``."""
        prefix = name + ":"
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix) :].removeprefix(" ")
        return None

    @property
    def event(self) -> str | None:
        """The ``event:`` field."""
        return self.field("event")

    @property
    def data(self) -> dict[str, Any]:
        """The ``data:`` field parsed as JSON."""
        raw = self.field("data")
        assert raw is not None, self.lines
        value: dict[str, Any] = json.loads(raw)
        return value


def data_of(sse: ServerSentEvent) -> dict[str, Any]:
    """The JSON payload of an event."""
    value: dict[str, Any] = json.loads(sse.data)
    return value


class SseReader:
    """Reads an open SSE response event by event, with a timeout on every wait."""

    def __init__(self, source: EventSource) -> None:
        self.source = source
        self.response = source.response
        self._events = source.aiter_sse()
        self.seen: list[ServerSentEvent] = []

    async def next(self, *, pings: bool = False, within: float = TIMEOUT) -> ServerSentEvent | None:
        """The next event (``None`` when the stream ends); pings are skipped unless asked."""
        async with asyncio.timeout(within):
            while True:
                sse = await anext(self._events, None)
                if sse is None:
                    return None
                self.seen.append(sse)
                if pings or sse.event != "system.ping":
                    return sse

    async def until(self, event_type: str, *, within: float = TIMEOUT) -> list[ServerSentEvent]:
        """Events (pings excluded) up to and including the first of ``event_type``."""
        got: list[ServerSentEvent] = []
        while True:
            sse = await self.next(within=within)
            assert sse is not None, f"stream ended before {event_type}: {[e.event for e in got]}"
            got.append(sse)
            if sse.event == event_type:
                return got

    async def rest(self, *, within: float = TIMEOUT) -> list[ServerSentEvent]:
        """Every remaining event (pings excluded) until the server ends the stream."""
        got: list[ServerSentEvent] = []
        while (sse := await self.next(within=within)) is not None:
            got.append(sse)
        return got


@dataclass
class Api:
    """A Headless API caller for one user of one genie."""

    client: httpx.AsyncClient
    base_url: str
    handle: str = "gin-test-0001"
    user: str = field(default_factory=lambda: f"user-{uuid.uuid4().hex[:8]}")
    api_key: str = SIM_API_KEY

    @property
    def headers(self) -> dict[str, str]:
        """Auth headers."""
        return {"Authorization": f"Bearer {self.api_key}", "X-IDP-User-Id": self.user}

    def url(self, path: str) -> str:
        """Absolute URL of an API path (relative to ``/chat``)."""
        return f"{self.base_url}/api/v1/genies/{self.handle}/chat{path}"

    def other(self, **changes: Any) -> Api:
        """The same client as another user/genie/key."""
        values = {"handle": self.handle, "user": self.user, "api_key": self.api_key, **changes}
        return Api(self.client, self.base_url, **values)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send an authenticated request."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.client.request(method, self.url(path), headers=headers, **kwargs)

    async def create(self) -> str:
        """E1; returns the conversation id."""
        r = await self.request("POST", "/conversations", json={})
        assert r.status_code == 201, r.text
        return str(unwrap(r.json())["conversation_id"])

    async def post_message(self, cid: str, message: str) -> str:
        """E5 with ``stream: false``; returns the run id."""
        r = await self.request(
            "POST", f"/conversations/{cid}/messages", json={"message": message, "stream": False}
        )
        assert r.status_code == 202, r.text
        return str(unwrap(r.json())["genie_run_id"])

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> AsyncIterator[SseReader]:
        """Open an SSE request and yield a reader (asserts a ``200`` event stream)."""
        async with aconnect_sse(
            self.client,
            method,
            self.url(path),
            headers={**self.headers, **(headers or {})},
            **kwargs,
        ) as source:
            assert source.response.status_code == 200, (await source.response.aread()).decode()
            yield SseReader(source)

    def send_stream(self, cid: str, message: str) -> Any:
        """E5 with ``stream: true`` (an async context manager yielding an :class:`SseReader`)."""
        return self.stream(
            "POST", f"/conversations/{cid}/messages", json={"message": message, "stream": True}
        )

    def reconnect(self, cid: str, run_id: str, last_event_id: str | None = None) -> Any:
        """E8 (an async context manager yielding an :class:`SseReader`)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        return self.stream("GET", f"/conversations/{cid}/genie-runs/{run_id}", headers=headers)

    async def run_to_end(self, cid: str, message: str) -> list[ServerSentEvent]:
        """Send a message with ``stream: true`` and read the stream to its end."""
        async with self.send_stream(cid, message) as reader:
            events: list[ServerSentEvent] = await reader.rest()
            return events

    async def conversation(self, cid: str) -> dict[str, Any]:
        """E3 body (unwrapped)."""
        r = await self.request("GET", f"/conversations/{cid}")
        assert r.status_code == 200, r.text
        return unwrap(r.json())

    async def wait_state(self, cid: str, state: str, *, within: float = TIMEOUT) -> dict[str, Any]:
        """Poll E3 (bounded) until ``state``; for checks where no event can be awaited."""
        deadline = time.monotonic() + within
        while True:
            body = await self.conversation(cid)
            if body["state"] == state:
                return body
            assert time.monotonic() < deadline, f"state stayed {body['state']!r}"
            await asyncio.sleep(0.02)

    async def events(self, **params: Any) -> dict[str, Any]:
        """E9 body (unwrapped)."""
        r = await self.request("GET", "/conversations/events", params=params)
        assert r.status_code == 200, r.text
        return unwrap(r.json())

    async def messages(self, cid: str, **params: Any) -> dict[str, Any]:
        """E6 body (unwrapped)."""
        r = await self.request("GET", f"/conversations/{cid}/messages", params=params)
        assert r.status_code == 200, r.text
        return unwrap(r.json())

    async def decide(self, cid: str, call_id: str, body: dict[str, Any]) -> httpx.Response:
        """E10."""
        return await self.request(
            "POST", f"/conversations/{cid}/skill_approval/{call_id}", json=body
        )

    async def raw_frames(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> list[Frame]:
        """Read a whole SSE response as raw frames (for wire-format checks)."""
        frames: list[Frame] = []
        current: list[str] = []
        async with (
            asyncio.timeout(TIMEOUT),
            self.client.stream(
                method, self.url(path), headers={**self.headers, **(headers or {})}, **kwargs
            ) as r,
        ):
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line == "":
                    if current:
                        frames.append(Frame(current))
                    current = []
                else:
                    current.append(line)
        return frames


def unwrap(body: Any) -> dict[str, Any]:
    """Strip the ``result`` envelope if present."""
    if isinstance(body, dict) and set(body) == {"result"}:
        body = body["result"]
    assert isinstance(body, dict)
    return body


def types(events: list[ServerSentEvent]) -> list[str]:
    """Event types in order."""
    return [e.event for e in events]


def stats_of(sim: SimProcess, cid: str) -> dict[str, Any]:
    """The ``/_sim/stats`` entry of one conversation."""
    conversations = sim.stats()["conversations"]
    assert isinstance(conversations, dict)
    entry: dict[str, Any] = conversations[cid]
    return entry


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client with a generous connection pool."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT)) as c:
        yield c


def make_api(client: httpx.AsyncClient, sim: SimProcess) -> Api:
    """An :class:`Api` for a fresh random user on ``sim``."""
    return Api(client, sim.base_url, api_key=sim.api_key)


@pytest.fixture
def api(client: httpx.AsyncClient, sim: SimProcess) -> Api:
    """A fresh user on the shared default simulator."""
    return make_api(client, sim)


def sim_fixture(*args: str) -> Callable[[], Iterator[SimProcess]]:
    """A module-scoped fixture starting a simulator with ``args``."""

    @pytest.fixture(scope="module")
    def _fixture() -> Iterator[SimProcess]:
        with running_sim(*args) as process:
            yield process

    return _fixture
