"""What the API did with a run: the one place that asks the conversation itself.

A run's stream is the fast path, not the record. When it cannot answer — a POST whose
answer was lost, a stream cut before its first event, a run that ended without its
stream saying so (production, after a runtime connection), a connection completed in a
browser — :class:`RunInspector` asks the conversation, through three sources with
different strengths:

- E3 (conversation state): ``last_event`` is the conversation's newest event, and its run
  and type are precise. ``state`` is coarse: production reads ``idle`` while a run is
  parked, so ``idle`` is never evidence on its own.
- E6 (message history, newest first): the durable record. Genie messages name their
  run, and production shows a run's resumed output only here.
- E9 (persisted events): names the run of a user message that E6 lists without one.

Every answer rests on one rule that the caller must keep: it is the conversation's only
sender, so a run newer than its previous turn's run is its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from genie_api._client import GenieClient
from genie_api._events import EventType, GenieEvent
from genie_api._models import ConversationDetail, ConversationState

__all__ = [
    "PAUSE_EVENTS",
    "EndEvidence",
    "Pause",
    "PauseCheck",
    "PauseStatus",
    "RunEnd",
    "RunInspector",
]

_GENIE = "genie"
_USER = "user"
_RECENT_MESSAGES = 20
"""E6 page for finding a run: our message is among the newest unless 20 came after it."""

# Each pause event names what the human decides on; a second pause of the same type in the
# same run has another id, which is how "moved past pause A" is told from "parked on A".
_PAUSE_REF: dict[EventType, str] = {
    EventType.SKILL_CONFIRMATION_REQUIRED: "call_id",
    EventType.BUSINESS_APPROVAL_REQUIRED: "call_id",
    EventType.RUNTIME_CONNECTION_AUTH_REQUIRED: "runtime_connection_attempt_id",
}
PAUSE_EVENTS: frozenset[EventType] = frozenset(_PAUSE_REF)
"""The event types on which a run parks until a human (or the end user) acts."""

# Not events of the run's progress: a partial E3 summary parses with type "".
_NOT_PROGRESS = frozenset({"", EventType.SYSTEM_PING, EventType.SYSTEM_STREAM_INTERRUPTED})


class PauseStatus(StrEnum):
    """Where a run stands relative to one of its pauses."""

    PARKED = "parked"
    """The run still waits on this pause."""
    MOVED_ON = "moved_on"
    """The run went past it: a later event of the run, or genie messages after it."""
    UNKNOWN = "unknown"
    """The API shows neither (e.g. ``last_event`` of another run, or none at all)."""


class EndEvidence(StrEnum):
    """Why :meth:`RunInspector.run_end` believes a run ended."""

    TERMINAL_EVENT = "terminal_event"
    """E3's ``last_event`` is the run's ``processing.finished``."""
    GENIE_MESSAGES = "genie_messages"
    """The conversation is idle and E6 holds genie messages of the run nobody delivered."""


@dataclass(frozen=True, slots=True)
class Pause:
    """One pause of a run: its event type and the id a decision refers to.

    Attributes:
        type: One of :data:`PAUSE_EVENTS`.
        ref: ``call_id`` (confirmations, business approvals) or
            ``runtime_connection_attempt_id`` (runtime connections).
    """

    type: EventType
    ref: str

    def __post_init__(self) -> None:
        if self.type not in _PAUSE_REF:
            raise ValueError(f"{self.type} is not a pause event")


@dataclass(frozen=True, slots=True)
class RunEnd:
    """A run ended, and how we know.

    Attributes:
        evidence: What showed it.
        new_messages: Genie messages of the run after the first ``messages_seen``,
            oldest first (possibly none: a run may end without a further message).
    """

    evidence: EndEvidence
    new_messages: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PauseCheck:
    """The answer of :meth:`RunInspector.pause_status`, with what it was based on.

    Attributes:
        status: Parked, moved on, or unknown.
        state: E3 ``state`` as read (for logs and cards; not evidence).
        last_event_type: Type of E3's ``last_event``, if any.
    """

    status: PauseStatus
    state: str | None
    last_event_type: str | None


class RunInspector:
    """Answers "what happened to run R / to our last message" for one conversation.

    Args:
        client: The API client.
        genie_handle: The genie.
        conversation_id: The conversation.
        user_id: The end user (``X-IDP-User-Id`` in API-key mode).
        history_limit: E6 page size when reading a run's genie messages.
        events_page_limit: E9 page size when looking for a run's first event.

    Every method makes one to three reads and raises the client's errors unchanged;
    whether a failed check matters is the caller's decision.
    """

    def __init__(
        self,
        client: GenieClient,
        genie_handle: str,
        conversation_id: str,
        *,
        user_id: str | None,
        history_limit: int = 100,
        events_page_limit: int = 100,
    ) -> None:
        self._client = client
        self._genie = genie_handle
        self._conversation_id = conversation_id
        self._user_id = user_id
        self._history_limit = history_limit
        self._events_page_limit = events_page_limit

    # ------------------------------------------------------------------ our message's run

    async def run_of_accepted_message(self, text: str) -> str | None:
        """The run of a message E5 accepted, when no event has named it yet (E6, then E9).

        The message certainly landed, so the newest user message with this text is ours:
        its run, or else the first run with events after it. ``None`` while the API
        does not show it yet.
        """
        page = await self._client.list_messages(
            self._genie, self._conversation_id, user_id=self._user_id, limit=_RECENT_MESSAGES
        )
        wanted = text.strip()
        for item in page.messages:  # newest first
            if item.source == _USER and (item.content or "").strip() == wanted:
                return item.genie_run_id or await self._first_run_since(item.created_at)
        return None

    async def run_newer_than(self, previous_run_id: str | None) -> str | None:
        """A run started after ``previous_run_id``, if any (E3, then E6).

        For a sender that does not know whether its POST landed: any run newer than its
        previous turn's (``None``: there was no previous turn) is the one its message
        started. ``None`` means the API shows no such run, so the message was not taken.
        """
        conv = await self._detail()
        run_id = conv.last_event.genie_run_id if conv.last_event is not None else None
        if run_id is None:
            page = await self._client.list_messages(
                self._genie, self._conversation_id, user_id=self._user_id, limit=_RECENT_MESSAGES
            )
            run_id = next((m.genie_run_id for m in page.messages if m.genie_run_id), None)
        return run_id if run_id is not None and run_id != previous_run_id else None

    # ------------------------------------------------------------------ a known run

    async def run_end(self, run_id: str, *, messages_seen: int) -> RunEnd | None:
        """Whether run ``run_id`` ended, with the evidence; ``None`` if nothing shows it.

        Args:
            run_id: The run.
            messages_seen: Genie messages of the run the caller already has; only later
                ones count as evidence, and only they are returned.
        """
        conv = await self._detail()
        last = conv.last_event
        terminal = (
            last is not None
            and last.type == EventType.PROCESSING_FINISHED
            and _of_run(last, run_id)
        )
        if not terminal and conv.state != ConversationState.IDLE:
            return None  # a busy state is believed; only idle needs a second opinion
        new = tuple((await self._genie_messages(run_id))[messages_seen:])
        if terminal:
            return RunEnd(EndEvidence.TERMINAL_EVENT, new)
        if new:
            return RunEnd(EndEvidence.GENIE_MESSAGES, new)
        return None  # idle, but nothing of this run shows that it ended: maybe parked

    async def pause_status(
        self, run_id: str | None, pause: Pause, *, messages_seen: int
    ) -> PauseCheck:
        """Whether run ``run_id`` still waits on ``pause`` or has moved past it.

        E3 first: the run's newest event is the pause itself (parked) or a later one
        (moved on). Production may leave E3 looking parked after the run resumed, so
        unless E3 already showed the run moving on, E6 has the last word: genie
        messages of the run beyond ``messages_seen`` (those delivered before the pause)
        mean it moved on.

        Args:
            run_id: The run, if known; without it only E3's view of the pause counts.
            pause: The pause.
            messages_seen: Genie messages of the run delivered up to the pause.
        """
        conv = await self._detail()
        last = conv.last_event
        last_type = last.type if last is not None else None
        parked = last is not None and _is_pause(last, pause, run_id)
        if (
            not parked
            and last is not None
            and run_id is not None
            and _of_run(last, run_id)
            and last.type not in _NOT_PROGRESS
        ):
            return PauseCheck(PauseStatus.MOVED_ON, conv.state, last_type)
        if run_id is not None and (await self._genie_messages(run_id))[messages_seen:]:
            return PauseCheck(PauseStatus.MOVED_ON, conv.state, last_type)
        status = PauseStatus.PARKED if parked else PauseStatus.UNKNOWN
        return PauseCheck(status, conv.state, last_type)

    # ------------------------------------------------------------------ reads

    async def _detail(self) -> ConversationDetail:
        return await self._client.get_conversation(
            self._genie, self._conversation_id, user_id=self._user_id
        )

    async def _genie_messages(self, run_id: str) -> list[str]:
        """The run's genie messages in E6, oldest first."""
        page = await self._client.list_messages(
            self._genie, self._conversation_id, user_id=self._user_id, limit=self._history_limit
        )
        return [
            m.content or ""
            for m in reversed(page.messages)
            if m.source == _GENIE and m.genie_run_id == run_id
        ]

    async def _first_run_since(self, since: datetime | None) -> str | None:
        async for page in self._client.iter_event_pages(
            self._genie,
            user_id=self._user_id,
            conversation_id=self._conversation_id,
            since_created_at=since,
            limit=self._events_page_limit,
        ):
            for event in page.events:
                if event.genie_run_id:
                    return event.genie_run_id
        return None


def _of_run(event: GenieEvent, run_id: str | None) -> bool:
    """Whether ``event`` belongs to ``run_id``.

    An event without a run id (a summary may leave it out) is taken as the newest run's,
    which is the caller's own under the only-sender rule.
    """
    return event.genie_run_id is None or event.genie_run_id == run_id


def _is_pause(event: GenieEvent, pause: Pause, run_id: str | None) -> bool:
    if event.type != pause.type:
        return False
    ref = getattr(event, _PAUSE_REF[pause.type], None)
    if isinstance(ref, str) and ref:
        return ref == pause.ref  # the id is unique: no need to know the run
    return _of_run(event, run_id)
