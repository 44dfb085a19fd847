"""SSE subscribers: replay a run log from a position, then follow it live.

A stream is a raw ASGI response (not Starlette's ``StreamingResponse``) so that its
per-connection state is a handful of slots, frames are written as pre-encoded bytes, and
it can cut the TCP connection on purpose (``drop_after_events``).
"""

from __future__ import annotations

import asyncio
import enum

from starlette.types import Receive, Scope, Send

from ._clock import iso
from ._faults import Fault
from ._store import FINISHED, Run, RunStatus, Store, dumps

REASON_SCRIPTED = "scripted_interrupt"
REASON_MAX_DURATION = "max_stream_duration"
REASON_HIDDEN = "runtime_connection_resumed"

_RETRY_SCRIPTED_MS = 100
_RETRY_MAX_DURATION_MS = 200
_RETRY_HIDDEN_MS = 200
_RETRY_CLOSED_MS = 1000


class _End(enum.Enum):
    DONE = "done"
    """Ended normally or with ``system.stream_interrupted``: finish the HTTP body."""
    CUT = "cut"
    """Drop the connection without completing the chunked body."""
    GONE = "gone"
    """The client went away."""


_BATCH_BYTES = 64 * 1024
"""Largest chunk the fast path writes; keeps one slow client from holding a huge buffer."""


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class SseStream:
    """One open E5/E8 stream of a run.

    Args:
        store: Simulator state.
        run: The run to follow.
        start: Position in the run log of the first event to deliver.
        request_id: ``X-Request-Id`` of the request.
        fault: A ``drop_after_events`` or ``malformed`` fault for this stream.
    """

    __slots__ = (
        "_delivered",
        "_injected",
        "_last_sent",
        "_last_seq",
        "_pos",
        "_request_id",
        "_run",
        "_send",
        "_store",
        "fault",
    )

    def __init__(
        self, store: Store, run: Run, start: int, request_id: str, fault: Fault | None = None
    ) -> None:
        self._store = store
        self._run = run
        self._pos = start
        self._request_id = request_id
        self.fault = fault
        self._delivered = 0
        self._injected = False
        self._last_sent = 0.0
        self._last_seq = run.events[start - 1].seq_num if 0 < start <= len(run.events) else 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream (ASGI)."""
        self._send = send
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    (b"x-request-id", self._request_id.encode()),
                ],
            }
        )
        run = self._run
        store = self._store
        wake = asyncio.Event()
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        watcher.add_done_callback(lambda _: wake.set())
        run.subscribers.add(wake)
        store.open_streams += 1
        try:
            end = await self._pump(wake, watcher)
        finally:
            run.subscribers.discard(wake)
            store.open_streams -= 1
            watcher.cancel()
        if end is _End.DONE:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # CUT/GONE: return with the body incomplete; uvicorn then closes the transport.

    async def _write(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        self._last_sent = asyncio.get_running_loop().time()

    async def _ping(self) -> None:
        payload = dumps({"type": "system.ping", "timestamp": iso(self._store.clock.now_us())})
        await self._write(f"event: system.ping\ndata: {payload}\n\n".encode())

    async def _interrupt(self, reason: str, retry_after_ms: int) -> None:
        run = self._run
        payload = dumps(
            {
                "type": "system.stream_interrupted",
                "conversation_id": run.conversation.conversation_id,
                "genie_handle": run.conversation.genie_handle,
                "genie_run_id": run.run_id,
                "last_seq_num": self._last_seq,
                "reason": reason,
                "retry_after_ms": retry_after_ms,
            }
        )
        await self._write(f"event: system.stream_interrupted\ndata: {payload}\n\n".encode())

    async def _checkpoint(self) -> _End | None:
        """Apply faults and ``interrupt:`` after each delivered event (and before the first)."""
        fault = self.fault
        if fault is not None:
            if (
                fault.malformed is not None
                and not self._injected
                and self._delivered >= fault.after_events
            ):
                self._injected = True
                await self._write(self._malformed(fault.malformed))
            if fault.drop_after_events is not None and self._delivered >= fault.drop_after_events:
                return _End.CUT
        k = self._run.script.interrupt_after
        if k is not None and self._delivered >= k:
            await self._interrupt(REASON_SCRIPTED, _RETRY_SCRIPTED_MS)
            return _End.DONE
        return None

    def _malformed(self, kind: str) -> bytes:
        run = self._run
        store = self._store
        envelope: dict[str, object] = {
            "conversation_id": run.conversation.conversation_id,
            "genie_handle": run.conversation.genie_handle,
            "genie_run_id": run.run_id,
            "created_at": iso(store.clock.now_us()),
        }
        if kind == "non_json":
            return b'event: agent.message\ndata: {"type":"agent.message","message":"trunc\n\n'
        if kind == "missing_ids":
            data = {"type": "agent.message", **envelope, "message": "[sim: event without ids]"}
            return f"event: agent.message\ndata: {dumps(data)}\n\n".encode()
        # The remaining kinds carry a fresh event_id; E8 accepts it as Last-Event-ID and
        # resumes after the last real event this stream had delivered.
        alias = store.ids.new("evt")
        run.index[alias] = self._pos - 1
        if kind == "no_type":
            data = {"event_id": alias, **envelope, "seq_num": self._last_seq, "message": "?"}
            return f"data: {dumps(data)}\n\n".encode()
        data = {
            "type": "genie.unknown_thing",
            "event_id": alias,
            **envelope,
            "seq_num": self._last_seq,
            "detail": "an event type this client has never seen",
        }
        return f"id: {alias}\nevent: genie.unknown_thing\ndata: {dumps(data)}\n\n".encode()

    async def _pump(self, wake: asyncio.Event, watcher: asyncio.Future[None]) -> _End:
        run = self._run
        config = self._store.config
        loop = asyncio.get_running_loop()
        interval = config.ping_interval
        self._last_sent = loop.time()
        deadline = (
            self._last_sent + config.max_stream_seconds
            if config.max_stream_seconds is not None
            else None
        )
        hidden_pinged = False
        end = await self._checkpoint()
        if end is not None:
            return end
        while True:
            # Cleared before looking at the log: anything appended while we write below
            # sets it again, so the wait at the bottom cannot miss an event.
            wake.clear()
            if watcher.done():
                return _End.GONE
            if run.closed_reason is not None:
                await self._interrupt(run.closed_reason, _RETRY_CLOSED_MS)
                return _End.DONE
            events = run.events
            limit = len(events) if run.hidden_from is None else run.hidden_from
            if self.fault is None and run.script.interrupt_after is None:
                # Fast path: flush the whole backlog as one chunk, as a real server's
                # buffered writer would. Per-event writes only matter when a fault or an
                # ``interrupt:`` directive counts events, and they cost clients a chunk
                # (an HTTP parse) per event.
                finished = False
                batch: list[bytes] = []
                size = 0
                while self._pos < limit and size < _BATCH_BYTES and not finished:
                    event = events[self._pos]
                    self._pos += 1
                    batch.append(event.frame)
                    size += len(event.frame)
                    self._delivered += 1
                    self._last_seq = event.seq_num
                    finished = event.type == FINISHED
                if batch:
                    await self._write(b"".join(batch))
                if finished:
                    return _End.DONE
                if watcher.done():
                    return _End.GONE
                if self._pos < limit:
                    continue  # more backlog than one chunk holds
            while self._pos < limit:
                event = events[self._pos]
                self._pos += 1
                await self._write(event.frame)
                self._delivered += 1
                self._last_seq = event.seq_num
                if event.type == FINISHED:
                    return _End.DONE
                end = await self._checkpoint()
                if end is not None:
                    return end
                if watcher.done():
                    return _End.GONE
            if run.hidden_from is not None and self._pos >= run.hidden_from:
                # Observed production behaviour: after a runtime connection completes the
                # stream only sees pings, then an interruption once the run stops.
                if not hidden_pinged:
                    hidden_pinged = True
                    await self._ping()
                if run.status is not RunStatus.RUNNING:
                    await self._interrupt(REASON_HIDDEN, _RETRY_HIDDEN_MS)
                    return _End.DONE
            elif run.status is RunStatus.FINISHED and self._pos >= len(events):
                return _End.DONE
            now = loop.time()
            if deadline is not None and now >= deadline:
                await self._interrupt(REASON_MAX_DURATION, _RETRY_MAX_DURATION_MS)
                return _End.DONE
            if now - self._last_sent >= interval:
                await self._ping()
            timeout = self._last_sent + interval - now
            if deadline is not None:
                timeout = min(timeout, deadline - now)
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    await wake.wait()
            except TimeoutError:
                pass
