"""In-memory state: conversations, runs, their event logs, decisions, retention."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from ._clock import Clock, IdFactory, iso
from ._config import AUTH_LINK_TTL_SECONDS, EVENT_RETENTION_SECONDS, SimConfig
from ._errors import conversation_not_found
from ._faults import FaultBook
from ._script import Script
from ._stats import Stats

logger = logging.getLogger("genie_sim")

FINISHED = "processing.finished"
NOT_PERSISTED = frozenset({"runtime_connection.auth_success"})
"""Run-log events that E9 never returns (pings and interrupts are never in a run log)."""

_PURGE_EVERY_SECONDS = 60.0


def dumps(obj: object) -> str:
    """Compact one-line JSON (SSE ``data:`` must be a single line).

    ASCII-only on purpose: readers that split lines with ``str.splitlines`` (httpx's
    ``aiter_lines``) would also break on U+2028, U+0085 and friends.
    """
    return json.dumps(obj, separators=(",", ":"))


class RunStatus(enum.Enum):
    """Where a run is in its script."""

    RUNNING = "running"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    AWAITING_CONNECTION = "awaiting_connection"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Event:
    """One event of a run log, encoded once and shared by every subscriber.

    Attributes:
        event_id: The ``id:`` and ``event_id``.
        type: The event type.
        seq_num: 1-based position in the run.
        created_us: ``created_at`` in microseconds since the epoch.
        json: The ``data`` payload (one line).
        frame: The complete SSE frame, ready to write.
        hidden: Never delivered (``--hide-resumed-output``).
    """

    event_id: str
    type: str
    seq_num: int
    created_us: int
    json: str
    frame: bytes
    hidden: bool


def encode_event(data: dict[str, Any], created_us: int, hidden: bool) -> Event:
    """Build a run-log :class:`Event` from its ``data`` payload (encoded here, once).

    Args:
        data: The payload; ``type``, ``event_id`` and ``seq_num`` are read from it.
        created_us: ``data["created_at"]`` in microseconds since the epoch.
        hidden: Never delivered (``--hide-resumed-output``).
    """
    event_id, type_ = data["event_id"], data["type"]
    payload = dumps(data)
    return Event(
        event_id=event_id,
        type=type_,
        seq_num=data["seq_num"],
        created_us=created_us,
        json=payload,
        frame=f"id: {event_id}\nevent: {type_}\ndata: {payload}\n\n".encode(),
        hidden=hidden,
    )


@dataclass(slots=True, eq=False)
class Message:
    """One E6 history entry."""

    message_id: str
    source: Literal["user", "genie"]
    content: str
    genie_run_id: str
    created_us: int
    file_id: str | None = None

    def as_json(self) -> dict[str, object]:
        """The E6 item."""
        item: dict[str, object] = {
            "message_id": self.message_id,
            "source": self.source,
            "content": self.content,
            "genie_run_id": self.genie_run_id,
            "created_at": iso(self.created_us),
        }
        if self.file_id:
            item["file_id"] = self.file_id
        return item


@dataclass(slots=True, frozen=True)
class Decision:
    """A skill-confirmation resolution."""

    approved: bool
    reason: str | None = None


@dataclass(slots=True, eq=False)
class SkillCall:
    """A ``skill.confirmation_required`` awaiting (or past) its decision."""

    call_id: str
    run: Run
    skill: str
    future: asyncio.Future[Decision]
    resolved: bool = False
    decision: Decision | None = None


@dataclass(slots=True, eq=False)
class ConnectionAttempt:
    """A ``runtime_connection.auth_required`` and its one-time auth links."""

    attempt_id: str
    run: Run
    connector: str
    future: asyncio.Future[bool]
    status: Literal["pending", "authorized", "rejected"] = "pending"
    tokens: dict[str, int] = field(default_factory=dict)
    """Unused link token -> expiry (simulator clock, microseconds)."""


@dataclass(slots=True, eq=False)
class UploadedFile:
    """Metadata of an E7 upload (the content itself is not kept)."""

    file_id: str
    filename: str
    content_type: str
    size: int


@dataclass(slots=True, eq=False)
class Run:
    """One genie run (turn): its script, its event log and its live subscribers.

    Attributes:
        run_id: ``genie_run_id``.
        conversation: Owning conversation.
        script: What the genie does.
        base_url: Where the client reached the simulator (for auth links).
        events: The run log, in ``seq_num`` order.
        index: ``event_id`` -> position in ``events`` (E8 ``Last-Event-ID``); injected
            fault frames map to the position they followed.
        status: Progress.
        skill_active: Between ``skill.running`` and its end (E3 ``skill_processing``).
        hidden_from: Position from which events are hidden (``--hide-resumed-output``).
        closed_reason: Set when streams must end now (reset, deletion, shutdown).
        expired: Events dropped by retention.
        subscribers: One wake-up event per open stream; set on every change.
        feedback: E14 rating, if any.
    """

    run_id: str
    conversation: Conversation
    script: Script
    base_url: str
    events: list[Event] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    skill_active: bool = False
    hidden_from: int | None = None
    closed_reason: str | None = None
    expired: bool = False
    subscribers: set[asyncio.Event] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    feedback: dict[str, object] | None = None

    def notify(self) -> None:
        """Wake every stream following this run."""
        for wake in self.subscribers:
            wake.set()


@dataclass(slots=True, eq=False)
class Conversation:
    """A conversation and everything that belongs to it.

    Attributes:
        events: Persisted, visible events of all runs, oldest first (E9).
        event_times: ``created_us`` of ``events`` (parallel list, for bisecting).
        last_event: Most recent run-log event (E3).
    """

    conversation_id: str
    genie_handle: str
    user_id: str
    created_us: int
    updated_us: int
    topic: str | None = None
    runs: dict[str, Run] = field(default_factory=dict)
    active_run: Run | None = None
    messages: list[Message] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)
    last_event: Event | None = None
    files: dict[str, UploadedFile] = field(default_factory=dict)


Executor = Callable[["Store", Run], Coroutine[Any, Any, None]]


class Store:
    """All simulator state, owned by the event loop (no locks: single-threaded asyncio).

    Args:
        config: The simulator configuration.
        execute: Coroutine function that plays a run's script (``_runner.run_script``);
            injected to keep this module free of the runner.
    """

    def __init__(self, config: SimConfig, execute: Executor) -> None:
        self.config = config
        self.clock = Clock()
        self.ids = IdFactory()
        self.faults = FaultBook()
        self.stats = Stats()
        self.open_streams = 0
        """Gauge, deliberately not reset: streams still closing would make it negative."""
        self.conversations: dict[str, Conversation] = {}
        self.calls: dict[str, SkillCall] = {}
        self.attempts: dict[str, ConnectionAttempt] = {}
        self._execute = execute
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_purge = time.monotonic()
        self.api_key = config.api_key
        """The accepted API key (a rotation may replace it)."""
        self.settle_until = time.monotonic() + config.auth_settle_seconds
        """Monotonic end of the current credential settle window (``--auth-settle-seconds``)."""
        self.settle_refusals = 0
        """Requests refused because the key was still settling (not reset: a gauge of the
        simulator's life, like ``open_streams``)."""

    # -- lookups ---------------------------------------------------------------------------

    def visible_conversation(
        self, genie_handle: str, conversation_id: str, user_id: str
    ) -> Conversation:
        """The conversation if this user of this genie may see it.

        Raises:
            ApiError: ``404 conversation_not_found`` otherwise (also for other users').
        """
        conv = self.conversations.get(conversation_id)
        if conv is None or conv.user_id != user_id or conv.genie_handle != genie_handle:
            raise conversation_not_found()
        return conv

    def settling(self) -> bool:
        """Whether the API key is still in its settle window."""
        return time.monotonic() < self.settle_until

    def rotate_key(self, new_key: str | None, settle_seconds: float) -> None:
        """``POST /_sim/rotate_key``: a new (or the same) key, settling from now on."""
        if new_key is not None:
            self.api_key = new_key
        self.settle_until = time.monotonic() + settle_seconds

    def state_of(self, conv: Conversation) -> str:
        """E3 ``state`` in the configured vocabulary."""
        run = conv.active_run
        if run is None or run.status is RunStatus.FINISHED:
            return "idle"
        parked = run.status in (RunStatus.AWAITING_CONFIRMATION, RunStatus.AWAITING_CONNECTION)
        if parked and self.config.idle_while_parked:
            return "idle"  # observed in production: idle while a run is still parked
        if self.config.states == "production":
            # Production only ever shows idle/skill_processing, pauses included.
            return "skill_processing"
        if parked:
            return "awaiting_approval"
        return "skill_processing" if run.skill_active else "ai_running"

    def retention_cutoff_us(self) -> int:
        """Events created at or before this instant have expired."""
        return self.clock.now_us() - EVENT_RETENTION_SECONDS * 1_000_000

    def run_expired(self, run: Run) -> bool:
        """Whether E8 must answer ``404 run_not_found`` for this run."""
        if run.expired or not run.events:
            return True
        return run.events[-1].created_us <= self.retention_cutoff_us()

    # -- mutations -------------------------------------------------------------------------

    def create_conversation(self, genie_handle: str, user_id: str) -> Conversation:
        """E1."""
        now = self.clock.stamp()
        conv = Conversation(
            conversation_id=self.ids.new("conv"),
            genie_handle=genie_handle,
            user_id=user_id,
            created_us=now,
            updated_us=now,
        )
        self.conversations[conv.conversation_id] = conv
        self.stats.conversation(conv.conversation_id)
        return conv

    def start_run(
        self, conv: Conversation, text: str, script: Script, file_id: str | None, base_url: str
    ) -> Run:
        """E5: record the user message, emit ``processing.started`` and start the script.

        ``processing.started`` is appended synchronously so that E3 and every stream see
        the run as soon as the POST has been answered.
        """
        self._maybe_purge()
        run = Run(run_id=self.ids.new("run"), conversation=conv, script=script, base_url=base_url)
        conv.runs[run.run_id] = run
        conv.active_run = run
        created = self.clock.stamp()
        conv.messages.append(
            Message(self.ids.new("msg"), "user", text, run.run_id, created, file_id or None)
        )
        conv.updated_us = created
        if conv.topic is None:
            conv.topic = text[:80]
        stats = self.stats.conversation(conv.conversation_id)
        stats.messages_accepted += 1
        stats.runs.append(run.run_id)
        self.append(run, "processing.started", {})
        self.play(run)
        return run

    def play(self, run: Run) -> None:
        """Start (or, for a restored run, continue) playing its script as a task."""
        task = asyncio.get_running_loop().create_task(self._execute(self, run))
        run.task = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("run task failed", exc_info=task.exception())

    def append(self, run: Run, type_: str, fields: dict[str, Any]) -> Event:
        """Append an event to a run log and wake its streams.

        Args:
            run: The run.
            type_: Event type.
            fields: Type-specific payload fields.

        Returns:
            The stored event.
        """
        conv = run.conversation
        created = self.clock.stamp()
        event_id = self.ids.new("evt")
        seq = len(run.events) + 1
        data = {
            "type": type_,
            "event_id": event_id,
            "conversation_id": conv.conversation_id,
            "genie_handle": conv.genie_handle,
            "genie_run_id": run.run_id,
            "seq_num": seq,
            "created_at": iso(created),
            **fields,
        }
        event = encode_event(data, created, run.hidden_from is not None)
        run.index[event_id] = len(run.events)
        run.events.append(event)
        conv.last_event = event
        conv.updated_us = created
        if not event.hidden and type_ not in NOT_PERSISTED:
            conv.events.append(event)
            conv.event_times.append(created)
        run.notify()
        return event

    def say(self, run: Run, text: str) -> Event:
        """Emit an ``agent.message`` and record it in the E6 history."""
        message_id = self.ids.new("msg")
        event = self.append(run, "agent.message", {"message_id": message_id, "message": text})
        run.conversation.messages.append(
            Message(message_id, "genie", text, run.run_id, event.created_us)
        )
        return event

    def finish(self, run: Run) -> Event:
        """Emit ``processing.finished``; the conversation is idle from that event on."""
        run.status = RunStatus.FINISHED
        run.skill_active = False
        if run.conversation.active_run is run:
            run.conversation.active_run = None
        return self.append(run, FINISHED, {})

    def new_call(self, run: Run, skill: str) -> SkillCall:
        """Register a skill call that awaits confirmation; the run pauses."""
        call = SkillCall(
            call_id=self.ids.new("call"),
            run=run,
            skill=skill,
            future=asyncio.get_running_loop().create_future(),
        )
        self.calls[call.call_id] = call
        run.status = RunStatus.AWAITING_CONFIRMATION
        return call

    def apply_decision(self, call: SkillCall, decision: Decision) -> None:
        """E10: resolve a paused confirmation; the run resumes."""
        call.resolved = True
        call.decision = decision
        run = call.run
        self.stats.conversation(run.conversation.conversation_id).skill_decisions_applied[
            call.call_id
        ] += 1
        if run.status is RunStatus.AWAITING_CONFIRMATION:
            run.status = RunStatus.RUNNING
        if not call.future.done():
            call.future.set_result(decision)
        run.notify()

    def new_attempt(self, run: Run, connector: str) -> ConnectionAttempt:
        """Register a runtime-connection attempt; the run pauses."""
        attempt = ConnectionAttempt(
            attempt_id=self.ids.new("rca"),
            run=run,
            connector=connector,
            future=asyncio.get_running_loop().create_future(),
        )
        self.attempts[attempt.attempt_id] = attempt
        run.status = RunStatus.AWAITING_CONNECTION
        return attempt

    def issue_link(self, attempt: ConnectionAttempt, base_url: str) -> dict[str, object]:
        """A fresh one-time auth link valid for 5 minutes of simulator time."""
        token = secrets.token_urlsafe(16)
        expires = self.clock.now_us() + AUTH_LINK_TTL_SECONDS * 1_000_000
        attempt.tokens[token] = expires
        return {
            "url": f"{base_url}/_sim/connect/{attempt.attempt_id}?token={token}",
            "connector_name": attempt.connector,
            "expires_at": iso(expires),
        }

    def complete_connection(self, attempt: ConnectionAttempt) -> None:
        """The user opened a valid auth link: the connection is authorised, the run resumes."""
        attempt.status = "authorized"
        attempt.tokens.clear()
        run = attempt.run
        if self.config.hide_resumed_output and run.hidden_from is None:
            run.hidden_from = len(run.events)
        if run.status is RunStatus.AWAITING_CONNECTION:
            run.status = RunStatus.RUNNING
        if not attempt.future.done():
            attempt.future.set_result(True)
        run.notify()

    def reject_connection(self, attempt: ConnectionAttempt) -> None:
        """E12: the user declined; the run resumes without the connection."""
        attempt.status = "rejected"
        attempt.tokens.clear()
        run = attempt.run
        if run.status is RunStatus.AWAITING_CONNECTION:
            run.status = RunStatus.RUNNING
        if not attempt.future.done():
            attempt.future.set_result(False)
        run.notify()

    def _close_run(self, run: Run, reason: str) -> None:
        if run.task is not None and not run.task.done():
            run.task.cancel()
        run.closed_reason = reason
        run.notify()

    def delete_conversation(self, conv: Conversation) -> None:
        """E4: stop its runs, end its streams, forget it (its stats stay)."""
        for run in conv.runs.values():
            self._close_run(run, "conversation_deleted")
            self._forget_decisions(run)
        del self.conversations[conv.conversation_id]

    def _forget_decisions(self, run: Run) -> None:
        for call_id in [c for c, call in self.calls.items() if call.run is run]:
            del self.calls[call_id]
        for attempt_id in [a for a, att in self.attempts.items() if att.run is run]:
            del self.attempts[attempt_id]

    def reset(self) -> None:
        """``/_sim/reset``: forget conversations, runs, stats and faults.

        The clock and the id counter are kept so ``created_at`` and ids stay strictly
        increasing across the whole simulator lifetime.
        """
        for conv in self.conversations.values():
            for run in conv.runs.values():
                self._close_run(run, "reset")
        self.conversations.clear()
        self.calls.clear()
        self.attempts.clear()
        self.stats = Stats()
        self.faults.clear()

    def close_all_streams(self, reason: str) -> None:
        """End every open stream (server shutdown) without touching the runs."""
        for conv in self.conversations.values():
            for run in conv.runs.values():
                run.closed_reason = reason
                run.notify()

    def advance_clock(self, seconds: float) -> None:
        """``/_sim/clock``: move time forward, then apply retention."""
        self.clock.advance(seconds)
        self.purge_expired()

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge >= _PURGE_EVERY_SECONDS:
            self._last_purge = now
            self.purge_expired()

    def purge_expired(self) -> None:
        """Drop events past retention so a long-lived simulator does not grow forever.

        Readers filter by the cutoff anyway; this only frees memory. Paused runs keep
        their log (their decision is still possible) even though E8 reports them gone.
        """
        cutoff = self.retention_cutoff_us()
        for conv in self.conversations.values():
            keep = 0
            while keep < len(conv.event_times) and conv.event_times[keep] <= cutoff:
                keep += 1
            if keep:
                del conv.events[:keep]
                del conv.event_times[:keep]
            for run in conv.runs.values():
                if (
                    not run.expired
                    and run.status is RunStatus.FINISHED
                    and not run.subscribers
                    and run.events
                    and run.events[-1].created_us <= cutoff
                ):
                    run.expired = True
                    run.events = []
                    run.index = {}
                    self._forget_decisions(run)

    def snapshot(self) -> dict[str, object]:
        """``GET /_sim/stats``."""
        conversations: dict[str, object] = {}
        for conv_id, stats in self.stats.conversations.items():
            conv = self.conversations.get(conv_id)
            state = self.state_of(conv) if conv is not None else "deleted"
            conversations[conv_id] = stats.as_json(state)
        return {
            "requests": self.stats.requests_json(),
            "open_streams": self.open_streams,
            "auth_settling": self.settling(),
            "auth_settle_refusals": self.settle_refusals,
            "conversations": conversations,
        }
