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
sender, so a run newer than its previous turn's run is its own. Where E6 names the user
message that started a run, its text must also match, so a turn never adopts the run of
an earlier turn that failed before anyone recorded its run id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from genie_api._client import GenieClient
from genie_api._events import EventType, GenieEvent
from genie_api._models import ConversationDetail, ConversationState, MessagePage

__all__ = [
    "PAUSE_EVENTS",
    "BusyRun",
    "EndEvidence",
    "Pause",
    "PauseCheck",
    "PauseStatus",
    "RunCheck",
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
class RunCheck:
    """The answer of :meth:`RunInspector.check_run`: ended, parked on a pause the caller
    has not seen, or neither (keep waiting).

    Attributes:
        end: Set when the run ended, with the evidence.
        pause: E3's ``last_event`` when it is a pause of the run later than anything the
            caller has seen (a stream that never delivered it: production's hidden
            resumed output). The run waits on it, so it has not ended.
        new_messages: With ``pause``: the run's genie messages after ``messages_seen``.
        state: E3 ``state`` as read (for logs; not evidence).
        last_event_type: Type of E3's ``last_event``, if any.
    """

    end: RunEnd | None
    pause: GenieEvent | None = None
    new_messages: tuple[str, ...] = ()
    state: str | None = None
    last_event_type: str | None = None

    def why_not_ended(self, run_id: str) -> str:
        """One line for a log or a card: why the run is not taken as ended."""
        if self.pause is not None:
            return f"run {run_id} waits on {self.pause.type} {self.pause.event_id}"
        return (
            f"no evidence that run {run_id} ended (state {self.state or '?'}, last event "
            f"{self.last_event_type or 'none'}, no processing.finished and no new genie "
            "message in the history)"
        )


@dataclass(frozen=True, slots=True)
class BusyRun:
    """The answer of :meth:`RunInspector.busy_run` after a ``409 conversation_busy``.

    Attributes:
        run_id: The run the conversation is busy with, per E3 (``None``: unknown, or the
            conversation turned idle meanwhile).
        ours: The run is the one the caller's own message started (resume it); else it is
            an earlier turn's (wait for it to end, then post).
        state: E3 ``state`` as read.
        last_event_type: Type of E3's ``last_event``, if any.
    """

    run_id: str | None
    ours: bool
    state: str | None
    last_event_type: str | None


@dataclass(frozen=True, slots=True)
class PauseCheck:
    """The answer of :meth:`RunInspector.pause_status`, with what it was based on.

    Attributes:
        status: Parked, moved on, or unknown.
        state: E3 ``state`` as read (for logs and cards; not evidence).
        last_event_type: Type of E3's ``last_event``, if any.
        by_other_pause: ``MOVED_ON`` only because E3's newest event is another pause of
            the run. That pause may have come after this one was resolved, or beside it
            (parallel skills), so it proves this one resolved only together with the
            API's own word that it no longer waits.
    """

    status: PauseStatus
    state: str | None
    last_event_type: str | None
    by_other_pause: bool = False


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

    async def run_newer_than(
        self, previous_run_id: str | None, *, text: str | None = None
    ) -> str | None:
        """A run started after ``previous_run_id``, if any (E3, then E6).

        For a sender that does not know whether its POST landed: any run newer than its
        previous turn's (``None``: there was no previous turn) is the one its message
        started. ``None`` means the API shows no such run, so the message was not taken.

        Args:
            previous_run_id: The run of the sender's previous turn.
            text: The sender's message. When given and E6 shows the user message that
                started the newer run with another text, that run is not the sender's (an
                earlier turn's that failed before its run id was recorded): ``None``.
        """
        conv = await self._detail()
        run_id = conv.last_event.genie_run_id if conv.last_event is not None else None
        page: MessagePage | None = None
        if run_id is None:
            page = await self._recent_messages()
            run_id = next((m.genie_run_id for m in page.messages if m.genie_run_id), None)
        if run_id is None or run_id == previous_run_id:
            return None
        if text is not None:
            started_by = await self._user_text_of(run_id, page)
            if started_by is not None and _words(started_by) != _words(text):
                return None
        return run_id

    async def busy_run(
        self, text: str, *, previous_run_id: str | None, may_have_posted: bool
    ) -> BusyRun:
        """After E5 answered ``409 conversation_busy``: is the active run ours?

        Ours only if the caller may have posted this message before (an earlier attempt
        whose answer was lost) and the active run is newer than its previous turn's and
        was not started by another text (:meth:`run_newer_than`). A first post that meets
        409 cannot have started the active run: that is an earlier turn's, still running
        or parked, and the caller waits for it instead of failing.
        """
        conv = await self._detail()
        last = conv.last_event
        last_type = last.type if last is not None else None
        run_id = last.genie_run_id if last is not None else None
        if may_have_posted:
            mine = await self.run_newer_than(previous_run_id, text=text)
            if mine is not None:
                return BusyRun(mine, True, conv.state, last_type)
        return BusyRun(run_id, False, conv.state, last_type)

    # ------------------------------------------------------------------ a known run

    async def run_end(
        self,
        run_id: str,
        *,
        messages_seen: int,
        seen_event_id: str | None = None,
        seen_seq_num: int | None = None,
    ) -> RunEnd | None:
        """Whether run ``run_id`` ended, with the evidence; ``None`` if nothing shows it.

        See :meth:`check_run`, which also tells a run parked on an unseen pause.
        """
        check = await self.check_run(
            run_id,
            messages_seen=messages_seen,
            seen_event_id=seen_event_id,
            seen_seq_num=seen_seq_num,
        )
        return check.end

    async def check_run(
        self,
        run_id: str,
        *,
        messages_seen: int,
        seen_event_id: str | None = None,
        seen_seq_num: int | None = None,
    ) -> RunCheck:
        """Whether run ``run_id`` ended (with the evidence) or waits on an unseen pause.

        Evidence of an end is the run's own: its ``processing.finished`` as E3's
        ``last_event``, or, while E3 reads ``idle``, genie messages of the run in E6 that
        the caller has not had. ``idle`` alone is never evidence (production reads it
        while a run is parked), and neither are new messages while E3's ``last_event`` is
        a pause of the run later than the caller's position: the run is parked on it.

        Args:
            run_id: The run.
            messages_seen: Genie messages of the run the caller already has; only later
                ones count as evidence, and only they are returned.
            seen_event_id: ``event_id`` of the caller's last event of the run (its cursor).
            seen_seq_num: ``seq_num`` of that event: a pause with a higher one is unseen.
        """
        conv = await self._detail()
        last = conv.last_event
        last_type = last.type if last is not None else None
        if last is not None and _unseen_pause(last, run_id, seen_event_id, seen_seq_num):
            new = tuple((await self._genie_messages(run_id))[messages_seen:])
            return RunCheck(None, last, new, conv.state, last_type)
        terminal = (
            last is not None
            and last.type == EventType.PROCESSING_FINISHED
            and _of_run(last, run_id)
        )
        if not terminal and conv.state != ConversationState.IDLE:
            # A busy state is believed; only idle needs a second opinion.
            return RunCheck(None, state=conv.state, last_event_type=last_type)
        new = tuple((await self._genie_messages(run_id))[messages_seen:])
        if terminal:
            end = RunEnd(EndEvidence.TERMINAL_EVENT, new)
        elif new:
            end = RunEnd(EndEvidence.GENIE_MESSAGES, new)
        else:
            end = None  # idle, but nothing of this run shows that it ended: maybe parked
        return RunCheck(end, state=conv.state, last_event_type=last_type)

    async def pause_status(
        self, run_id: str | None, pause: Pause, *, messages_seen: int
    ) -> PauseCheck:
        """Whether run ``run_id`` still waits on ``pause`` or has moved past it.

        E3 first: the run's newest event is the pause itself (parked) or a later one
        (moved on; when that is another pause, see ``PauseCheck.by_other_pause``, unless
        E6 shows genie messages after this one). Production may leave E3 looking parked
        after the run resumed, so unless E3 already showed the run moving on, E6 has the
        last word: genie messages of the run beyond ``messages_seen`` (those delivered
        before the pause) mean it moved on.

        Args:
            run_id: The run, if known; without it only E3's view of the pause counts.
            pause: The pause.
            messages_seen: Genie messages of the run delivered up to the pause.
        """
        conv = await self._detail()
        last = conv.last_event
        last_type = last.type if last is not None else None
        parked = last is not None and _is_pause(last, pause, run_id)
        later = (
            not parked
            and last is not None
            and run_id is not None
            and _of_run(last, run_id)
            and last.type not in _NOT_PROGRESS
        )
        if later and last_type not in _PAUSE_REF:
            return PauseCheck(PauseStatus.MOVED_ON, conv.state, last_type)
        if run_id is not None and (await self._genie_messages(run_id))[messages_seen:]:
            return PauseCheck(PauseStatus.MOVED_ON, conv.state, last_type)
        if later:
            return PauseCheck(PauseStatus.MOVED_ON, conv.state, last_type, by_other_pause=True)
        status = PauseStatus.PARKED if parked else PauseStatus.UNKNOWN
        return PauseCheck(status, conv.state, last_type)

    # ------------------------------------------------------------------ reads

    async def _detail(self) -> ConversationDetail:
        return await self._client.get_conversation(
            self._genie, self._conversation_id, user_id=self._user_id
        )

    async def _recent_messages(self) -> MessagePage:
        return await self._client.list_messages(
            self._genie, self._conversation_id, user_id=self._user_id, limit=_RECENT_MESSAGES
        )

    async def _user_text_of(self, run_id: str, page: MessagePage | None = None) -> str | None:
        """The text of the user message that started ``run_id``, if E6 shows it."""
        page = page or await self._recent_messages()
        for m in page.messages:
            if m.source == _USER and m.genie_run_id == run_id:
                return m.content or ""
        return None

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


def _words(text: str) -> list[str]:
    """A message's text as E6 might echo it: whitespace runs and ends do not count."""
    return text.split()


def _unseen_pause(
    event: GenieEvent, run_id: str, seen_event_id: str | None, seen_seq_num: int | None
) -> bool:
    """Whether ``event`` is a pause of ``run_id`` later than the caller's position.

    Judged by ``seq_num`` only (the run's own order): E3 may lag behind the stream, so
    another ``event_id`` alone could be an older pause the caller has passed. Without a
    position, or a ``seq_num`` on either side, nothing is judged unseen.
    """
    if event.type not in PAUSE_EVENTS or event.genie_run_id != run_id:
        return False
    if event.seq_num is None or seen_seq_num is None:
        return False
    return event.seq_num > seen_seq_num and event.event_id != seen_event_id


def _is_pause(event: GenieEvent, pause: Pause, run_id: str | None) -> bool:
    if event.type != pause.type:
        return False
    ref = getattr(event, _PAUSE_REF[pause.type], None)
    if isinstance(ref, str) and ref:
        return ref == pause.ref  # the id is unique: no need to know the run
    return _of_run(event, run_id)
