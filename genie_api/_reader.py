"""Resumable, exactly-once consumption of one run's events.

:class:`RunReader` posts a message once (E5) or re-attaches to a known run, and yields
every non-ping event of that run exactly once, in order, until ``processing.finished``.
Whatever goes wrong on the way — the server interrupting the stream, a dropped or
silent connection, a failing reconnect — is repaired through E8 (re-attach with
``Last-Event-ID``) and, when E8 fails, E9 (page the persisted events). The message is
never posted again.

Its progress is a small JSON-serialisable :class:`RunCursor`; a consumer may stop at
any event (e.g. at ``skill.confirmation_required``), persist the cursor, and continue
later, in another process, with ``RunReader(..., cursor=cursor).resume()``.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from genie_api._client import GenieClient
from genie_api._errors import (
    AuthenticationError,
    GenieAPIError,
    PermissionDeniedError,
    StreamResumeError,
)
from genie_api._events import EventType, GenieEvent, SystemStreamInterrupted
from genie_api._http import logger
from genie_api._runs import RunInspector

__all__ = ["ResumePolicy", "RunCursor", "RunReader"]

_PING = EventType.SYSTEM_PING.value
_INTERRUPTED = EventType.SYSTEM_STREAM_INTERRUPTED.value
_FINISHED = EventType.PROCESSING_FINISHED.value
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SEEN_IDS = 4096
"""Event ids remembered for de-duplication. Order is kept by ``(run, seq_num)``; ids
matter only for events without ``seq_num``, and a replay (E8 after ``Last-Event-ID``,
E9 from the last ``created_at``) repeats only recent ones. Unbounded, a stream that never
finishes would grow the set for as long as it runs."""

# Errors that no other endpoint can repair: give them to the caller at once.
_FATAL = (AuthenticationError, PermissionDeniedError)

_ENDPOINT_OF_MODE = {
    "reconnect": "E8 reconnect",
    "events": "E9 events",
    "discover": "E6 messages",
    "send": "E5",
}


class RunCursor(BaseModel):
    """Where a consumer is in a run; small, JSON-serialisable, safe to heartbeat.

    Attributes:
        conversation_id: The conversation.
        genie_run_id: The run, once known (from its first event).
        last_event_id: ``event_id`` of the last event handed to the consumer; sent as
            ``Last-Event-ID`` on reconnect.
        last_seq_num: ``seq_num`` of the last event handed over (within this run).
        last_created_at: ``created_at`` of the last event handed over; the
            ``since_created_at`` of an E9 fallback.
        finished: ``processing.finished`` was handed over; nothing more will come.
    """

    model_config = ConfigDict(extra="ignore")

    conversation_id: str
    genie_run_id: str | None = None
    last_event_id: str | None = None
    last_seq_num: int | None = None
    last_created_at: datetime | None = None
    finished: bool = False


@dataclass(frozen=True, slots=True)
class ResumePolicy:
    """How hard :class:`RunReader` tries before giving up.

    These bound one reader, i.e. one process's attempt at a run. Giving up loses
    nothing: :class:`StreamResumeError` carries the cursor, and a later reader (the next
    activity attempt) continues from it. So the limits say when to hand over, not when a
    run is lost; how long a caller keeps handing over is the caller's budget.

    Attributes:
        max_attempts: Consecutive recovery attempts that deliver no new event before
            :class:`StreamResumeError` is raised; any progress resets the count. With
            the default back-off, five failures take about 3 s of waiting plus the
            calls' own time.
        initial_backoff: First back-off in seconds (doubled per failure, ±20 % jitter).
        max_backoff: Back-off cap in seconds.
        max_server_wait: Cap on a server-requested wait (``retry_after_ms``,
            ``Retry-After``), so a bogus value cannot park the reader for hours.
        events_page_limit: ``limit`` for each E9 page.
        healthy_stream_seconds: A stream the server ends with ``system.stream_interrupted``
            after being open at least this long counts as healthy even if the run produced
            no event meanwhile (long skills under a max stream duration).
    """

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    max_server_wait: float = 60.0
    events_page_limit: int = 100
    healthy_stream_seconds: float = 10.0

    def backoff(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` consecutive failures."""
        if failures <= 0:
            return 0.0
        base = min(self.max_backoff, self.initial_backoff * (2.0 ** (failures - 1)))
        jitter: float = random.uniform(0.8, 1.2)  # spreads out reconnect storms
        return base * jitter


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return _EPOCH
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class RunReader:
    """Exactly-once, in-order reader of one run's events, resumable across processes.

    Args:
        client: The API client.
        genie_handle: The genie.
        conversation_id: The conversation.
        user_id: The end user (``X-IDP-User-Id`` in API-key mode).
        cursor: Progress saved from an earlier reader of the same conversation.
        policy: Retry bounds (:class:`ResumePolicy` defaults when omitted).
        on_frame: Called for every SSE frame received (pings and duplicates included) and
            every E9 page; use it for liveness, e.g. to heartbeat a Temporal activity. Must
            not block. SSE comment lines never reach it (httpx-sse drops them), so keep a
            timer-based heartbeat too; a dead connection surfaces as a read timeout
            (``ClientTimeouts.stream_read``) and is resumed.

    Use :meth:`send` for a new message or :meth:`resume` for a run the cursor names. Both
    return async generators; close them (``contextlib.aclosing``) when stopping early so
    the connection is released promptly.
    """

    def __init__(
        self,
        client: GenieClient,
        genie_handle: str,
        conversation_id: str,
        *,
        user_id: str | None,
        cursor: RunCursor | None = None,
        policy: ResumePolicy | None = None,
        on_frame: Callable[[], None] | None = None,
    ) -> None:
        if cursor is not None and cursor.conversation_id != conversation_id:
            raise ValueError(
                f"cursor is for conversation {cursor.conversation_id}, not {conversation_id}"
            )
        self._client = client
        self._genie = genie_handle
        self._conversation_id = conversation_id
        self._user_id = user_id
        self._policy = policy or ResumePolicy()
        self._on_frame = on_frame
        # The cursor lives in plain attributes: they change on every event, and building
        # a model per event would cost more than everything else the reader does.
        c = cursor or RunCursor(conversation_id=conversation_id)
        self._run_id = c.genie_run_id
        self._last_event_id = c.last_event_id
        self._last_seq = c.last_seq_num
        self._last_created = c.last_created_at
        self._finished = c.finished
        self._seen: OrderedDict[str, None] = OrderedDict()
        if c.last_event_id:
            self._seen[c.last_event_id] = None
        self._delivered = 0
        self.reconnects = 0
        """How many times this reader re-attached (E8) or fell back to E9 after a cut."""
        self._sent = False
        self._foreign_warned = False
        self._runs = RunInspector(
            client,
            genie_handle,
            conversation_id,
            user_id=user_id,
            events_page_limit=self._policy.events_page_limit,
        )

    # ------------------------------------------------------------------ public

    @property
    def cursor(self) -> RunCursor:
        """A snapshot of the progress (updated before each event is yielded)."""
        return RunCursor.model_construct(
            conversation_id=self._conversation_id,
            genie_run_id=self._run_id,
            last_event_id=self._last_event_id,
            last_seq_num=self._last_seq,
            last_created_at=self._last_created,
            finished=self._finished,
        )

    @property
    def finished(self) -> bool:
        """Whether ``processing.finished`` has been yielded."""
        return self._finished

    def send(self, message: str, *, file_id: str | None = None) -> AsyncGenerator[GenieEvent, None]:
        """Post ``message`` (E5, streaming) exactly once and yield the new run's events.

        Errors before the stream opens (HTTP errors such as 409 ``conversation_busy``,
        a connect failure) propagate unchanged: whether the message was accepted is then
        the caller's question (check E6/E3 before posting again). Once the stream is
        open, every failure is recovered through E8/E9, never by posting again.

        Raises:
            RuntimeError: This reader already sent, or its cursor already names a run.
        """
        if self._sent or self._run_id is not None:
            raise RuntimeError("RunReader.send() posts once per run; use resume() to continue")
        self._sent = True
        return self._drive(message, file_id)

    def resume(self) -> AsyncGenerator[GenieEvent, None]:
        """Continue the run named by the cursor, from just after its last event.

        Raises:
            ValueError: The cursor has no ``genie_run_id``.
        """
        if self._run_id is None:
            raise ValueError("resume() needs a cursor with a genie_run_id")
        return self._drive(None, None)

    # ------------------------------------------------------------------ core

    def _accept(self, event: GenieEvent) -> bool:
        """Decide whether ``event`` is new for the consumer; if so, advance the cursor."""
        event_id = event.event_id
        if event_id is not None and event_id in self._seen:
            return False
        run_id = event.genie_run_id
        if run_id is not None:
            if self._run_id is None:
                self._run_id = run_id
            elif run_id != self._run_id:
                # Warn once per reader: a misbehaving server could otherwise flood the log.
                log = logger.debug if self._foreign_warned else logger.warning
                self._foreign_warned = True
                log(
                    "ignoring event %s of run %s on the stream of run %s (conversation %s)",
                    event_id,
                    run_id,
                    self._run_id,
                    self._conversation_id,
                )
                return False
            seq = event.seq_num
            if seq is not None:
                # (run, seq) identifies an event; seq alone does not (it restarts per run).
                if self._last_seq is not None and seq <= self._last_seq:
                    return False
                self._last_seq = seq
        if event_id is not None:
            self._seen[event_id] = None
            if len(self._seen) > _SEEN_IDS:
                self._seen.popitem(last=False)
            self._last_event_id = event_id
        if event.created_at is not None:
            self._last_created = event.created_at
        if event.type == _FINISHED:
            self._finished = True
        self._delivered += 1
        return True

    def _frame(self) -> None:
        if self._on_frame is not None:
            self._on_frame()

    async def _drive(
        self, message: str | None, file_id: str | None
    ) -> AsyncGenerator[GenieEvent, None]:
        policy = self._policy
        on_frame = self._on_frame
        loop = asyncio.get_running_loop()
        failures = 0
        # "send" (E5, once) → "reconnect" (E8) ⇄ "events" (E9). "discover" finds the run
        # when E5 broke before any event named it.
        mode = "send" if message is not None else "reconnect"
        first_pass = True
        while not self._finished:
            if not first_pass:  # every pass after the first re-attaches (E8) or pages E9
                self.reconnects += 1
            first_pass = False
            delivered_before = self._delivered
            progressed = False  # an attempt that delivered nothing can still be healthy
            server_wait = 0.0
            # What an HTTP error answer asked for (Retry-After / retry_after_ms), kept apart
            # from stream pacing: only the server's own ask may outlive this reader.
            asked: float | None = None
            reason = ""
            next_mode = "reconnect"
            passthrough: GenieAPIError | None = None
            try:
                if mode == "send" or mode == "reconnect":
                    opened = False
                    interrupted: SystemStreamInterrupted | None = None
                    opened_at = loop.time()
                    try:
                        async with self._open(mode, message, file_id) as events:
                            opened = True
                            async for event in events:
                                if on_frame is not None:
                                    on_frame()
                                event_type = event.type
                                if event_type == _PING:
                                    continue
                                if event_type == _INTERRUPTED:
                                    # The server closes right after; remember how long to wait.
                                    assert isinstance(event, SystemStreamInterrupted)
                                    interrupted = event
                                    if self._run_id is None and event.genie_run_id:
                                        self._run_id = event.genie_run_id
                                    continue
                                if self._accept(event):
                                    yield event
                                    if self._finished:
                                        return
                    except GenieAPIError as exc:
                        if (
                            (mode == "send" and not opened)  # the caller decides on re-posting
                            or isinstance(exc, _FATAL)
                            or (opened and not exc.retryable)
                        ):
                            passthrough = exc
                            raise
                        reason = f"{'stream' if opened else 'reconnect'} failed: {exc}"
                        asked = exc.retry_after
                        server_wait = asked or 0.0
                    else:
                        if interrupted is not None:
                            reason = f"stream interrupted ({interrupted.reason or 'no reason'})"
                            server_wait = (interrupted.retry_after_ms or 0.0) / 1000.0
                            # A server that kept the stream open for a while and then cut it
                            # on purpose (max stream duration) is healthy even when the run
                            # produced nothing meanwhile (a long skill): not a failure.
                            progressed = loop.time() - opened_at >= policy.healthy_stream_seconds
                        else:
                            reason = "stream ended before processing.finished"
                    if self._run_id is None:
                        next_mode = "discover"
                    elif (
                        mode == "reconnect"
                        and self._delivered == delivered_before
                        and not progressed
                    ):
                        # E8 is failing (or brings nothing): try the persisted events.
                        next_mode = "events"
                elif mode == "events":
                    async with aclosing(self._events_since_cursor()) as persisted:
                        async for event in persisted:
                            yield event
                            if self._finished:
                                return
                    reason = "events endpoint is up to date; run not finished yet"
                else:  # discover
                    assert message is not None
                    run_id = await self._runs.run_of_accepted_message(message)
                    if run_id is not None:
                        self._run_id = run_id
                        reason = f"found run {self._run_id} of the posted message"
                        progressed = True  # knowing the run unlocks E8/E9
                    else:
                        reason = "the posted message's run is not visible yet"
                        next_mode = "discover"
            except GenieAPIError as exc:
                if exc is passthrough or isinstance(exc, _FATAL) or not exc.retryable:
                    raise
                reason = f"{mode} failed: {exc}"
                asked = exc.retry_after
                server_wait = asked or 0.0
                next_mode = "discover" if self._run_id is None else "reconnect"

            if progressed or self._delivered != delivered_before:
                failures = 0
            else:
                failures += 1
                if failures >= policy.max_attempts:
                    # retry_after is the server's ask or nothing. Our own reconnect pacing
                    # must not leak out: a caller that honours retry_after (a Temporal
                    # activity's next_retry_delay) would replace its back-off with ours
                    # and burn its retries within a minute of an outage.
                    raise StreamResumeError(
                        f"gave up on run {self._run_id or '(unknown)'} of conversation "
                        f"{self._conversation_id} after {failures} consecutive attempts "
                        f"without progress; last: {reason}",
                        cursor=self.cursor,
                        conversation_id=self._conversation_id,
                        genie_run_id=self._run_id,
                        retry_after=asked,
                    )
            delay = max(min(server_wait, policy.max_server_wait), policy.backoff(failures))
            logger.info(
                "resuming run %s of conversation %s via %s in %.2fs (failures %d/%d): %s",
                self._run_id,
                self._conversation_id,
                _ENDPOINT_OF_MODE[next_mode],
                delay,
                failures,
                policy.max_attempts,
                reason,
            )
            mode = next_mode
            if delay > 0:
                await asyncio.sleep(delay)

    def _open(
        self, mode: str, message: str | None, file_id: str | None
    ) -> AbstractAsyncContextManager[AsyncIterator[GenieEvent]]:
        if mode == "send":
            assert message is not None
            return self._client.stream_message(
                self._genie, self._conversation_id, message, user_id=self._user_id, file_id=file_id
            )
        assert self._run_id is not None
        return self._client.reconnect_run(
            self._genie,
            self._conversation_id,
            self._run_id,
            user_id=self._user_id,
            last_event_id=self._last_event_id,
        )

    async def _events_since_cursor(self) -> AsyncGenerator[GenieEvent, None]:
        """E9 fallback: this run's persisted events after the cursor, oldest first."""
        run_id = self._run_id
        logger.debug(
            "paging events of conversation %s since %s for run %s",
            self._conversation_id,
            self._last_created,
            run_id,
        )
        async for page in self._client.iter_event_pages(
            self._genie,
            user_id=self._user_id,
            conversation_id=self._conversation_id,
            since_created_at=self._last_created,
            limit=self._policy.events_page_limit,
        ):
            self._frame()
            mine = [
                e
                for e in page.events
                if e.genie_run_id == run_id and e.type != _PING and e.type != _INTERRUPTED
            ]
            mine.sort(key=lambda e: (_aware(e.created_at), e.event_id or ""))
            for event in mine:
                if self._accept(event):
                    yield event
                    if self._finished:
                        return
