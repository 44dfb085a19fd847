"""What the pages show, read without writing anything to any workflow's history.

Conversations waiting for a human are listed from visibility (the ``GenieState`` search
attribute), then each is asked for its ``status`` and the paused turn's ``transcript``:
queries, which add no event to history. Every query has a deadline, and they run side by
side: a conversation whose worker is down (a query would wait for it) is shown as "not
answering" instead of holding up the page, and is not asked again for a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, Field
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from geniectl import GenieConversations, NotFound
from geniectl._api import PENDING_QUERY
from inbox._auth import Identity
from workflows import ConversationStatus, Transcript, TranscriptQuery
from workflows.models import (
    DecisionProgress,
    PendingApproval,
    PendingConnection,
    TurnRecord,
)
from workflows.search_attributes import GENIE_HANDLE, GENIE_USER_ID

T = TypeVar("T")

MAX_LISTED = 200
"""Waiting conversations read per listing, unless ``GENIE_INBOX_MAX_LISTED`` says."""
CONCURRENT_QUERIES = 16
TURN_CACHE_SECONDS = 30.0
"""A paused turn's text and messages do not change while it is paused."""
SILENT_CACHE_SECONDS = 15.0
"""A conversation that did not answer is listed as not answering without being asked; once
this long has passed it is asked again in the background, so no page load waits for it a
second time (a worker that is gone would cost every load after expiry the query timeout)."""
LISTING_CACHE_SECONDS = 2.0
"""Pages refreshing themselves share a listing this fresh (a page load fetches anew)."""


class Unavailable(Exception):
    """The conversation did not answer (its worker is down or slow); why, in words."""


class Item(BaseModel):
    """One pending skill confirmation or runtime connection, as pages and the API show it."""

    kind: Literal["skill", "connection"]
    workflow_id: str
    ref: str
    """The ``call_id`` (skill) or ``attempt_id`` (connection)."""
    genie: str | None
    user: str | None
    title: str
    """The skill's or the connector's name."""
    skill_id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameters_shortened: bool = False
    turn: int
    user_message: str | None = None
    genie_messages: list[str] = Field(default_factory=list)
    requested_at: datetime
    deadline: datetime
    auth_url: str | None = None
    auth_expires_at: datetime | None = None
    decision: DecisionProgress | None = None
    note: str | None = None
    approvers: list[str] = Field(default_factory=list)
    """The conversation's approvers (empty: anyone), unless ``rule`` says otherwise."""
    rule: str | None = None
    """The skill rule that governs this item (its ``match``); it may name other approvers
    or groups, which the status does not show: the conversation decides on posting."""
    required_approvals: int = 1
    approved_by: list[str] = Field(default_factory=list)
    escalated: bool = False
    can_decide: bool
    why_not: str | None = None
    """Why this approver may not decide it (shown read-only), or None."""

    @property
    def path(self) -> str:
        return f"/items/{segment(self.workflow_id)}/{self.kind}/{segment(self.ref)}"


class Silent(BaseModel):
    """A conversation visibility lists as waiting that did not answer its status query."""

    workflow_id: str
    genie: str | None
    user: str | None
    why: str


@dataclass
class Listing:
    items: list[Item]
    silent: list[Silent]
    genies: list[str]
    skills: list[str]
    """Every genie and skill (or connector) seen, for the filters."""
    not_listed: int = 0
    """Waiting conversations past the listing's limit: visibility counts them, but they
    were not read, so their items are not shown."""


def segment(value: str) -> str:
    """``value`` as one URL path segment."""
    return quote(value, safe="")


def safe_url(url: str | None) -> str | None:
    """An auth link only if it is plain http(s): a genie's link is never ``javascript:``."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def may_decide(me: Identity, approvers: list[str]) -> str | None:
    """Why ``me`` may not decide in a conversation with these approvers, or None."""
    if not approvers or me.name in approvers:
        return None
    who = ", ".join(approvers[:10]) + (" and others" if len(approvers) > 10 else "")
    return f"only {who} may decide in this conversation (you are {me.name})"


def _why_not(
    me: Identity, st: ConversationStatus, p: PendingApproval | PendingConnection
) -> str | None:
    """Why ``me`` may not decide ``p``, as far as the status tells (None: go ahead)."""
    if isinstance(p, PendingApproval):
        if me.name in p.approved_by:
            return "you approved it already; a second, different approver must approve too"
        if p.rule is not None:
            return None  # the rule's approvers are not in the status: the workflow decides
    return may_decide(me, st.approvers)


def can_decide(why_not: str | None, p: PendingApproval | PendingConnection) -> bool:
    """The one rule for acting on an item: deciding it, and seeing or refreshing a
    connection's auth link."""
    return why_not is None and p.decision is None


def shown_status(st: ConversationStatus, items: list[Item]) -> ConversationStatus:
    """``st`` as ``items``' viewer may see it: a connection's auth link only where they
    may decide it, and only if it is http(s)."""
    allowed = {i.ref for i in items if i.kind == "connection" and i.can_decide}
    connections = [
        c.model_copy(update={"auth_url": safe_url(c.auth_url) if c.attempt_id in allowed else None})
        for c in st.pending_connections
    ]
    return st.model_copy(update={"pending_connections": connections})


def build_items(
    wid: str,
    genie: str | None,
    user: str | None,
    st: ConversationStatus,
    turns: dict[int, TurnRecord],
    me: Identity,
) -> list[Item]:
    out: list[Item] = []
    pending: list[PendingApproval | PendingConnection] = [
        *st.pending_approvals,
        *st.pending_connections,
    ]
    for p in pending:
        rec = turns.get(p.turn)
        why_not = _why_not(me, st, p)
        common: dict[str, Any] = {
            "workflow_id": wid,
            "genie": st.genie_handle or genie,
            # The status has the user id itself; the search attribute may be a keyed hash.
            "user": st.user_id or user,
            "turn": p.turn,
            "user_message": rec.text if rec else None,
            "genie_messages": list(rec.messages) if rec else [],
            "requested_at": p.requested_at,
            "deadline": p.deadline,
            "decision": p.decision,
            "note": p.note,
            "approvers": st.approvers,
            "escalated": p.escalated,
            "can_decide": can_decide(why_not, p),
            "why_not": why_not,
        }
        if isinstance(p, PendingApproval):
            out.append(
                Item(
                    kind="skill",
                    ref=p.call_id,
                    title=p.skill_name or p.skill_id or "(unnamed skill)",
                    skill_id=p.skill_id,
                    parameters=p.skill_parameters,
                    parameters_shortened=p.parameters_shortened,
                    rule=p.rule,
                    required_approvals=p.required_approvals,
                    approved_by=p.approved_by,
                    **common,
                )
            )
        else:
            out.append(
                Item(
                    kind="connection",
                    ref=p.attempt_id,
                    title=p.connector_name or "(unnamed connector)",
                    # An auth link is a credential: only for those who may decide it.
                    auth_url=safe_url(p.auth_url) if common["can_decide"] else None,
                    auth_expires_at=p.auth_expires_at,
                    **common,
                )
            )
    return out


@dataclass
class _Row:
    """One conversation visibility listed: its status and paused turns, or why it was
    silent."""

    wid: str
    genie: str | None
    user: str | None
    status: ConversationStatus | None
    turns: dict[int, TurnRecord]
    why: str | None


def _turns_of(st: ConversationStatus) -> set[int]:
    return {p.turn for p in st.pending_approvals} | {c.turn for c in st.pending_connections}


@dataclass
class Reader:
    """Queries with deadlines, and the little caching that keeps a polled page cheap."""

    api: GenieConversations
    query_timeout: float = 3.0
    max_listed: int = MAX_LISTED
    _turns: dict[tuple[str, int], tuple[float, TurnRecord | None]] = field(default_factory=dict)
    _silent: dict[str, tuple[float, str]] = field(default_factory=dict)
    silent_for: float = SILENT_CACHE_SECONDS
    _rechecks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _listing: tuple[float, list[_Row], int] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _query(self, wid: str, call: Callable[[timedelta], Awaitable[T]]) -> T:
        try:
            return await call(timedelta(seconds=self.query_timeout))
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"no conversation with workflow id {wid}") from None
            if e.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                why = f"its worker did not answer within {self.query_timeout:g}s"
            else:
                why = f"Temporal answered {e.status.name if e.status else 'an error'}"
            raise Unavailable(why) from None
        except WorkflowQueryFailedError:
            raise Unavailable("the conversation could not answer the query") from None

    async def status(self, wid: str) -> ConversationStatus:
        h = self.api.handle(wid)
        return await self._query(
            wid,
            lambda t: h.query("status", result_type=ConversationStatus, rpc_timeout=t),
        )

    async def transcript(self, wid: str, since_turn: int | None = None) -> Transcript:
        h = self.api.handle(wid)
        req = TranscriptQuery(since_turn=since_turn)
        return await self._query(
            wid,
            lambda t: h.query("transcript", req, result_type=Transcript, rpc_timeout=t),
        )

    async def turns(self, wid: str, numbers: set[int]) -> dict[int, TurnRecord]:
        """The records of these turns (cached briefly); missing ones are left out."""
        now = time.monotonic()
        found: dict[int, TurnRecord] = {}
        wanted = set()
        for n in numbers:
            cached = self._turns.get((wid, n))
            if cached is not None and cached[0] > now:
                if cached[1] is not None:
                    found[n] = cached[1]
            else:
                wanted.add(n)
        if wanted:
            try:
                tr = await self.transcript(wid, since_turn=min(wanted))
            except (Unavailable, NotFound):
                return found
            by_number = {t.turn: t for t in tr.turns}
            for n in wanted:
                self._turns[(wid, n)] = (now + TURN_CACHE_SECONDS, by_number.get(n))
                if n in by_number:
                    found[n] = by_number[n]
        self._forget(now)
        return found

    def _forget(self, now: float) -> None:
        if len(self._turns) > 4 * self.max_listed:
            self._turns = {k: v for k, v in self._turns.items() if v[0] > now}
        if len(self._silent) > 4 * self.max_listed:
            self._silent = {k: v for k, v in self._silent.items() if v[0] > now}

    async def items(self, wid: str, me: Identity) -> tuple[ConversationStatus, list[Item]]:
        """One conversation's status and its pending items with their context, as ``me``
        may see them (``shown_status``)."""
        st = await self.status(wid)
        turns = await self.turns(wid, _turns_of(st))
        items = build_items(wid, None, None, st, turns, me)
        return shown_status(st, items), items

    def invalidate(self) -> None:
        """Forget the shared listing (a decision was just sent through this inbox)."""
        self._listing = None

    async def _rows(self, max_age: float) -> tuple[list[_Row], int]:
        """What visibility lists and each conversation answered, and how many waiting
        conversations were past the limit, fetched by one request at a time; a fetch
        that started at most ``max_age`` seconds before this call is reused (0: only one
        that started after it)."""
        asked = time.monotonic()
        async with self._lock:
            cached = self._listing
            if cached is not None and cached[0] >= asked - max_age:
                return cached[1], cached[2]
            started = time.monotonic()
            rows, not_listed = await self._fetch_rows()
            self._listing = (started, rows, not_listed)
            return rows, not_listed

    async def _fetch_rows(self) -> tuple[list[_Row], int]:
        listed: list[tuple[str, str | None, str | None]] = []
        not_listed = 0
        try:
            async for wf in self.api.client.list_workflows(PENDING_QUERY, limit=self.max_listed):
                sa = wf.typed_search_attributes
                listed.append((wf.id, sa.get(GENIE_HANDLE), sa.get(GENIE_USER_ID)))
            if len(listed) >= self.max_listed:
                # A full page: say how many more wait, so none waits unseen.
                total = (await self.api.client.count_workflows(PENDING_QUERY)).count
                not_listed = max(total - len(listed), 0)
        except RPCError as e:
            status = e.status.name if e.status else "an error"
            raise Unavailable(f"Temporal's visibility answered {status}") from None
        gate = asyncio.Semaphore(CONCURRENT_QUERIES)
        now = time.monotonic()

        async def one(wid: str, g: str | None, u: str | None) -> _Row | None:
            silent = self._silent.get(wid)
            if silent is not None:
                if silent[0] <= now:
                    self._recheck(wid)
                return _Row(wid, g, u, None, {}, silent[1])
            async with gate:
                try:
                    st = await self.status(wid)
                except NotFound:
                    return None
                except Unavailable as e:
                    self._silent[wid] = (time.monotonic() + self.silent_for, str(e))
                    return _Row(wid, g, u, None, {}, str(e))
                numbers = _turns_of(st)
                turns = await self.turns(wid, numbers) if numbers else {}
            self._silent.pop(wid, None)
            return _Row(wid, g, u, st, turns, None)

        rows = [r for r in await asyncio.gather(*(one(*row) for row in listed)) if r]
        return rows, not_listed

    def _recheck(self, wid: str) -> None:
        """Ask a silent conversation again, in the background (at most
        ``CONCURRENT_QUERIES`` at once): when it answers, the next listing shows its items."""
        if wid in self._rechecks or len(self._rechecks) >= CONCURRENT_QUERIES:
            return
        self._rechecks[wid] = asyncio.create_task(self._rechecked(wid))

    async def _rechecked(self, wid: str) -> None:
        try:
            await self.status(wid)
        except NotFound:
            self._silent.pop(wid, None)
        except Unavailable as e:
            self._silent[wid] = (time.monotonic() + self.silent_for, str(e))
        except Exception as e:  # never an unretrieved task error; asked again later
            self._silent[wid] = (time.monotonic() + self.silent_for, type(e).__name__)
        else:
            self._silent.pop(wid, None)
            self._listing = None  # it answers: the next refresh lists its items
        finally:
            self._rechecks.pop(wid, None)

    async def pending(
        self,
        me: Identity,
        *,
        genie: str | None = None,
        skill: str | None = None,
        max_age: float = 0.0,
    ) -> Listing:
        """Every pending item across conversations, soonest deadline first, as ``me``
        may act on them; ``Unavailable`` if Temporal cannot list them. ``max_age``: a
        listing fetched that long ago will do (the polling pages share one)."""
        items: list[Item] = []
        silent: list[Silent] = []
        rows, not_listed = await self._rows(max_age)
        for r in rows:
            if r.status is not None:
                items += build_items(r.wid, r.genie, r.user, r.status, r.turns, me)
            else:
                silent.append(
                    Silent(workflow_id=r.wid, genie=r.genie, user=r.user, why=r.why or "")
                )
        genies = sorted({i.genie for i in items if i.genie})
        skills = sorted({i.title for i in items})
        if genie:
            items = [i for i in items if i.genie == genie]
            silent = [s for s in silent if s.genie == genie]
        if skill:
            items = [i for i in items if i.title == skill]
        far = datetime.max.replace(tzinfo=UTC)
        items.sort(key=lambda i: (i.deadline or far, i.workflow_id, i.ref))
        return Listing(
            items=items, silent=silent, genies=genies, skills=skills, not_listed=not_listed
        )
