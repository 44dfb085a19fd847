"""The Python API for backends: a thin typed facade over the workflow's handlers.

Every call is one Temporal client call (or a short loop of them), with pydantic models
in and out. Refusals from validators surface as ``Refused`` carrying the workflow's error
type (``workflows.errors``), so callers branch on ``e.type``, never on message text.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from genie_telemetry import annotate, caller_span
from workflows import (
    DEFAULT_TASK_QUEUE,
    TERMINAL_TURN_STATUSES,
    AuditEntry,
    AuthLink,
    ConnectionDecision,
    ConversationPolicy,
    ConversationStart,
    ConversationStatus,
    DecisionProof,
    DecisionRecorded,
    EndConversation,
    GenieConversation,
    MessageAccepted,
    PendingApproval,
    PendingConnection,
    RefreshAuthLink,
    SendMessage,
    SkillDecision,
    Transcript,
    TranscriptQuery,
    TurnResult,
    WaitTurn,
)
from workflows._decisions import invalid_input, message_refusal
from workflows.errors import CONVERSATION_ENDED
from workflows.search_attributes import (
    GENIE_AWAITING_SINCE,
    GENIE_HANDLE,
    GENIE_STATE,
)

M = TypeVar("M", bound=BaseModel)
STREAM_ACTIVITY = "stream_segment"
PENDING_QUERY_TIMEOUT = 5.0
"""Seconds ``pending`` waits for one conversation's status (its worker may be gone)."""
PENDING_LIMIT = 200
"""Waiting conversations ``pending`` reads; it says how many more wait, if any."""
PENDING_QUERY = (
    'ExecutionStatus = "Running" AND GenieState IN ("awaiting_approval", "awaiting_connection")'
)
"""The visibility query for conversations waiting for a human (the inbox's too)."""
SEND_RETRIES = 3
SIGNAL_CONFIRM_SECONDS = 10.0
"""How long a decision sent by signal (``_decide_by_signal``) waits for its audit entry."""
DECISION_UNCONFIRMED = "DecisionUnconfirmed"
"""A decision went by signal, and the audit trail did not show its outcome in time."""
"""Times a message is sent again when the server did not answer in time (a busy server
can accept an update and lose the answer). Safe: every message carries a key the
workflow remembers (``client_message_id``), so a retry gets the same turn back. A wait
(``wait_turn``) is retried for as long as it takes: it only reads."""


class Refused(Exception):
    """The conversation refused a request; ``type`` is a ``workflows.errors`` constant."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message


class NotFound(Exception):
    """No conversation (open or closed) has this workflow id."""


class PendingItem(BaseModel):
    """One conversation waiting for a human, as the approvals inbox lists it."""

    workflow_id: str
    genie_handle: str | None
    user_id: str | None
    state: str
    awaiting_since: datetime | None
    approvals: list[PendingApproval]
    connections: list[PendingConnection]


def new_workflow_id() -> str:
    return f"genie-conv-{uuid.uuid4()}"


def static_summary(genie_handle: str, user_id: str) -> str:
    return f"Genie {genie_handle} · user {user_id}"


class GenieConversations:
    """Start, drive and decide genie conversations.

    Every update, query and signal is called by its contract name (``docs/contract.md``)
    with an explicit result type: the same wire calls a client in any other language
    makes, so this facade exercises exactly the public contract.
    """

    def __init__(self, client: Client, *, task_queue: str = DEFAULT_TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    def handle(self, workflow_id: str) -> WorkflowHandle[GenieConversation, Any]:
        return self.client.get_workflow_handle_for(GenieConversation.run, workflow_id)

    async def _update(
        self,
        workflow_id: str,
        name: str,
        arg: BaseModel,
        result: type[M],
        *,
        retries: int | None = 0,
    ) -> M:
        """Run an update; ``retries`` more times (None: without end) when the server did
        not answer in time. Only for updates that are safe to repeat: a wait, or a
        message carrying its ``client_message_id``."""
        handle = self.handle(workflow_id)
        res = await _call(
            workflow_id, lambda: handle.execute_update(name, arg, result_type=result), retries
        )
        return _typed(res, result)

    def _start_options(
        self,
        workflow_id: str,
        genie_handle: str,
        user_id: str,
        policy: ConversationPolicy | None,
        first_message: SendMessage | None = None,
        create_at_start: bool = False,
    ) -> dict[str, Any]:
        """What both a plain start and an update-with-start send: one definition, so the
        two ways of starting a conversation cannot drift apart."""
        return {
            "arg": _model(
                ConversationStart,
                genie_handle=genie_handle,
                user_id=user_id,
                policy=policy,
                first_message=first_message,
                create_at_start=create_at_start,
            ),
            "id": workflow_id,
            "task_queue": self.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "search_attributes": _start_attributes(genie_handle, user_id),
            "static_summary": static_summary(genie_handle, user_id),
        }

    async def start(
        self,
        genie_handle: str,
        user_id: str,
        *,
        workflow_id: str | None = None,
        policy: ConversationPolicy | None = None,
        first_message: SendMessage | None = None,
        create_at_start: bool = False,
    ) -> str:
        """Start a conversation (or attach to the open one with this id); its workflow id.

        The API conversation is created with the first accepted message, or at once with
        ``create_at_start``."""
        # Only None picks a new id: "" is a caller's mistake, not a request for a fresh one.
        wid = workflow_id if workflow_id is not None else new_workflow_id()
        opts = self._start_options(
            wid, genie_handle, user_id, policy, first_message, create_at_start
        )
        await self.client.start_workflow(GenieConversation.run, **opts)
        return wid

    async def send(
        self,
        workflow_id: str,
        text: str,
        *,
        client_message_id: str | None = None,
        attachment_uri: str | None = None,
        start_with: tuple[str, str] | None = None,
        policy: ConversationPolicy | None = None,
        wait_for: Literal["none", "attention", "completion"] = "none",
    ) -> MessageAccepted:
        """Queue a message. With ``start_with=(genie_handle, user_id)`` the conversation is
        started first if it does not exist (update-with-start), in one round trip."""
        msg = _model(
            SendMessage,
            text=text,
            # Always a key: if the server's answer is lost (a timeout under load), the
            # message is sent again, and the workflow answers the retry with the same turn.
            client_message_id=client_message_id or f"auto-{uuid.uuid4()}",
            attachment_uri=attachment_uri,
            wait_for=wait_for,
        )
        # The rules the workflow's validator applies to any message: checked here first,
        # so a refused first message starts no workflow and creates nothing at the API.
        refusal = message_refusal(msg)
        if refusal is not None:
            raise Refused(refusal.type, refusal.message)
        if start_with is None:
            sent = await self._update(
                workflow_id, "send_message", msg, MessageAccepted, retries=SEND_RETRIES
            )
            annotate(workflow_id=workflow_id, turn=sent.turn)  # on the caller's span, if any
            return sent

        def with_start() -> Awaitable[MessageAccepted]:
            # A fresh operation per try (one is single-use); USE_EXISTING makes the start
            # idempotent and the message key the message.
            op = WithStartWorkflowOperation(
                GenieConversation.run, **self._start_options(workflow_id, *start_with, policy)
            )
            return self.client.execute_update_with_start_workflow(
                "send_message", msg, start_workflow_operation=op, result_type=MessageAccepted
            )

        res = await _call(workflow_id, with_start, SEND_RETRIES)
        sent = _typed(res, MessageAccepted)
        annotate(workflow_id=workflow_id, genie_handle=start_with[0], turn=sent.turn)
        return sent

    async def wait(
        self,
        workflow_id: str,
        turn: int,
        *,
        wait_for: Literal["attention", "completion"] = "attention",
        timeout_seconds: float | None = None,
        seen: list[str] | None = None,
    ) -> TurnResult:
        """The turn once it ends (or, with ``attention``, needs a human for a pause not
        in ``seen``).

        One ``wait_turn`` update, however long it takes: the server holds it open and
        the SDK long-polls for its result, so waiting a day costs the same few history
        events as waiting a second. The workflow may continue as new meanwhile; the
        update then returns early and we ask the new run, so callers never see the seam.
        """
        req = _model(
            WaitTurn, turn=turn, timeout_seconds=timeout_seconds, wait_for=wait_for, seen=seen or []
        )
        while True:
            res = await self._update(workflow_id, "wait_turn", req, TurnResult, retries=None)
            if _settled(res, wait_for, req.seen) or timeout_seconds is not None:
                return res

    async def live_messages(self, workflow_id: str) -> tuple[str, list[str]] | None:
        """The running stream segment's messages so far, from its heartbeat: (segment
        key, messages). Read through describe, so it adds nothing to history."""
        desc = await self.handle(workflow_id).describe()
        for pa in desc.raw_description.pending_activities:
            if pa.activity_type.name != STREAM_ACTIVITY or not pa.heartbeat_details.payloads:
                continue
            values = await self.client.data_converter.decode(pa.heartbeat_details.payloads)
            progress = values[0] if values else None
            if isinstance(progress, dict) and isinstance(progress.get("messages"), list):
                return pa.activity_id, [str(m) for m in progress["messages"]]
        return None

    async def ask(
        self,
        workflow_id: str,
        text: str,
        *,
        client_message_id: str | None = None,
        attachment_uri: str | None = None,
        start_with: tuple[str, str] | None = None,
        policy: ConversationPolicy | None = None,
        wait_for: Literal["attention", "completion"] = "attention",
    ) -> TurnResult:
        """Send a message and wait for the reply (or the first pause for a human).

        One update does both; only if the workflow continued as new meanwhile does a
        second call (``wait``) follow the conversation into its next run. With traces on,
        one span holds both, and the turn's activities hang from it.
        """
        with caller_span("GenieConversations.ask", workflow_id=workflow_id):
            accepted = await self.send(
                workflow_id,
                text,
                client_message_id=client_message_id,
                attachment_uri=attachment_uri,
                start_with=start_with,
                policy=policy,
                wait_for=wait_for,
            )
            res = accepted.result
            if res is not None and _settled(res, wait_for, []):
                return res
            return await self.wait(workflow_id, accepted.turn, wait_for=wait_for)

    async def approve(
        self,
        workflow_id: str,
        call_id: str,
        *,
        approver: str,
        reason: str | None = None,
        proof: DecisionProof | None = None,
        wait_for: Literal["none", "attention", "completion"] = "none",
    ) -> DecisionRecorded:
        """``proof``: the inbox's signature, where the deployment requires one.
        ``wait_for``: also wait for the turn, returned in ``DecisionRecorded.result``
        (None when the run takes no more updates and the decision went by signal)."""
        return await self._decide_skill(
            workflow_id, call_id, True, approver, reason, proof, wait_for
        )

    async def reject(
        self,
        workflow_id: str,
        call_id: str,
        *,
        approver: str,
        reason: str | None = None,
        proof: DecisionProof | None = None,
        wait_for: Literal["none", "attention", "completion"] = "none",
    ) -> DecisionRecorded:
        return await self._decide_skill(
            workflow_id, call_id, False, approver, reason, proof, wait_for
        )

    async def _decide_skill(
        self,
        workflow_id: str,
        call_id: str,
        approved: bool,
        approver: str,
        reason: str | None,
        proof: DecisionProof | None,
        wait_for: Literal["none", "attention", "completion"],
    ) -> DecisionRecorded:
        d = _model(
            SkillDecision,
            call_id=call_id,
            approved=approved,
            approver=approver,
            reason=reason,
            proof=proof,
            wait_for=wait_for,
        )
        try:
            recorded = await self._update(workflow_id, "decide_skill", d, DecisionRecorded)
        except RPCError as e:
            if not _updates_spent(e):
                raise
            return await self._decide_by_signal(
                workflow_id, "skill_decision", d.model_copy(update={"wait_for": "none"}), e
            )
        res = recorded.result
        if wait_for == "none" or res is None or _settled(res, wait_for, [call_id]):
            return recorded
        # The run continued as new while we waited: follow the turn into the next one.
        res = await self.wait(workflow_id, res.turn, wait_for=wait_for, seen=[call_id])
        return recorded.model_copy(update={"result": res})

    async def connect_done(
        self,
        workflow_id: str,
        attempt_id: str,
        *,
        actor: str,
        reason: str | None = None,
        proof: DecisionProof | None = None,
    ) -> DecisionRecorded:
        return await self._decide_connection(workflow_id, attempt_id, "done", actor, reason, proof)

    async def connect_reject(
        self,
        workflow_id: str,
        attempt_id: str,
        *,
        actor: str,
        reason: str | None = None,
        proof: DecisionProof | None = None,
    ) -> DecisionRecorded:
        return await self._decide_connection(
            workflow_id, attempt_id, "reject", actor, reason, proof
        )

    async def _decide_connection(
        self,
        workflow_id: str,
        attempt_id: str,
        action: Literal["done", "reject"],
        actor: str,
        reason: str | None,
        proof: DecisionProof | None,
    ) -> DecisionRecorded:
        d = _model(
            ConnectionDecision,
            attempt_id=attempt_id,
            action=action,
            actor=actor,
            reason=reason,
            proof=proof,
        )
        try:
            return await self._update(workflow_id, "decide_connection", d, DecisionRecorded)
        except RPCError as e:
            if not _updates_spent(e):
                raise
            return await self._decide_by_signal(workflow_id, "connection_decision", d, e)

    async def _decide_by_signal(
        self,
        workflow_id: str,
        signal: Literal["skill_decision", "connection_decision"],
        d: SkillDecision | ConnectionDecision,
        refused_update: RPCError,
    ) -> DecisionRecorded:
        """The server takes no more updates in this run (its per-run limits; a turn can be
        long): send the decision by its audited signal twin instead, and read its outcome
        from the audit trail, which records every signalled decision, taken or refused."""
        ref, actor = (
            (d.call_id, d.approver) if isinstance(d, SkillDecision) else (d.attempt_id, d.actor)
        )

        def mine(st: ConversationStatus) -> tuple[list[AuditEntry], int]:
            entries = [
                a for a in st.audit if a.kind == signal and a.actor == actor and a.via == "signal"
            ]
            taken = [a for a in entries if a.accepted and a.ref == ref]
            return taken, sum(a.count for a in entries if not a.accepted)

        taken_before, refused_before = mine(await self.status(workflow_id))
        try:
            await self.handle(workflow_id).signal(signal, d)
        except RPCError as e:
            raise _translate(e, workflow_id) from None
        deadline = asyncio.get_running_loop().time() + SIGNAL_CONFIRM_SECONDS
        while True:
            st = await self.status(workflow_id)
            taken, refused = mine(st)
            if len(taken) > len(taken_before):
                entry = taken[-1]
                return DecisionRecorded(
                    id=ref, decision=entry.decision or "", decided_by=actor, decided_at=entry.at
                )
            if refused > refused_before:
                why = next(
                    (a for a in reversed(st.audit) if a.kind == signal and a.actor == actor),
                    None,
                )
                kind, _, message = ((why.refusal if why else None) or "Refused: ?").partition(": ")
                raise Refused(kind, message)
            if asyncio.get_running_loop().time() > deadline:
                raise Refused(
                    DECISION_UNCONFIRMED,
                    f"the server took no more updates for this run ({refused_update.message}); "
                    f"the decision was sent as the {signal} signal, and its outcome is not "
                    "in the audit trail yet: read the status",
                )
            await asyncio.sleep(0.2)

    async def auth_link(self, workflow_id: str, attempt_id: str) -> AuthLink:
        req = _model(RefreshAuthLink, attempt_id=attempt_id)
        return await self._update(workflow_id, "refresh_auth_link", req, AuthLink)

    async def status(self, workflow_id: str) -> ConversationStatus:
        try:
            res = await self.handle(workflow_id).query("status", result_type=ConversationStatus)
        except RPCError as e:
            raise _translate(e, workflow_id) from None
        return _typed(res, ConversationStatus)

    async def transcript(self, workflow_id: str, since_turn: int | None = None) -> Transcript:
        try:
            req = _model(TranscriptQuery, since_turn=since_turn)
            res = await self.handle(workflow_id).query("transcript", req, result_type=Transcript)
        except RPCError as e:
            raise _translate(e, workflow_id) from None
        return _typed(res, Transcript)

    async def end(self, workflow_id: str, reason: str | None = None) -> None:
        try:
            await self.handle(workflow_id).signal(
                "end_conversation", _model(EndConversation, reason=reason)
            )
        except RPCError as e:
            raise _translate(e, workflow_id) from None

    async def pending(
        self,
        *,
        limit: int = PENDING_LIMIT,
        query_timeout: float = PENDING_QUERY_TIMEOUT,
        on_unreadable: Callable[[str, Exception], None] | None = None,
        on_not_listed: Callable[[int], None] | None = None,
    ) -> list[PendingItem]:
        """Every open conversation waiting for a human, oldest wait first.

        Listed from search attributes (no worker needed), then all queried at once for
        what they wait on, each within ``query_timeout`` seconds: a conversation whose
        worker is gone, or that moved on in between, is left out rather than holding up
        the list. So is one whose status cannot be read (its query fails, its payloads
        need a key this client lacks): ``on_unreadable`` is told its id and why, so that
        one broken conversation neither hides the others nor goes unmentioned. At most
        ``limit`` are read (visibility's order: the most recently started first); when
        more wait, ``on_not_listed`` is told how many were left out.
        """
        listed = [wf async for wf in self.client.list_workflows(PENDING_QUERY, limit=limit)]
        if on_not_listed is not None and len(listed) >= limit:
            more = (await self.client.count_workflows(PENDING_QUERY)).count - len(listed)
            if more > 0:
                on_not_listed(more)

        async def one(wf: Any) -> PendingItem | None:
            try:
                st = await asyncio.wait_for(self.status(wf.id), query_timeout)
            except (NotFound, TimeoutError, RPCError):
                return None
            except Exception as e:  # WorkflowQueryFailedError, PayloadDecryptError, ...
                if on_unreadable is not None:
                    on_unreadable(wf.id, e)
                return None
            if not (st.pending_approvals or st.pending_connections):
                return None
            sa = wf.typed_search_attributes
            return PendingItem(
                workflow_id=wf.id,
                genie_handle=sa.get(GENIE_HANDLE),
                user_id=st.user_id,
                state=st.state,
                awaiting_since=st.awaiting_since or sa.get(GENIE_AWAITING_SINCE),
                approvals=st.pending_approvals,
                connections=st.pending_connections,
            )

        found = await asyncio.gather(*(one(wf) for wf in listed))
        items = [i for i in found if i is not None]
        items.sort(key=lambda i: i.awaiting_since or datetime.max.replace(tzinfo=UTC))
        return items


def _typed(value: object, model: type[M]) -> M:
    # Holds with the pydantic data converter; anything else is a misconfigured client.
    if not isinstance(value, model):
        raise TypeError(
            f"expected {model.__name__}, got {type(value).__name__}: connect with "
            "temporalio.contrib.pydantic.pydantic_data_converter"
        )
    return value


def _settled(res: TurnResult, wait_for: str, seen: list[str]) -> bool:
    if res.status in TERMINAL_TURN_STATUSES:
        return True
    waiting = [p.call_id for p in res.pending.approvals if p.decision is None] + [
        c.attempt_id for c in res.pending.connections if c.decision is None
    ]
    return wait_for == "attention" and any(i not in seen for i in waiting)


def _model(model: type[M], **fields: Any) -> M:
    """Build a message, refusing bad input here, before anything is sent or started."""
    try:
        return model(**fields)
    except ValidationError as e:
        refusal = invalid_input(e)
        raise Refused(refusal.type, refusal.message) from None


def _start_attributes(genie_handle: str, user_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(GENIE_HANDLE, genie_handle),
            SearchAttributePair(GENIE_STATE, "starting"),
        ]
    )


R = TypeVar("R")


async def _call(workflow_id: str, call: Callable[[], Awaitable[R]], retries: int | None) -> R:
    """``call()``, again up to ``retries`` times (None: without end) when the server did
    not answer in time; the API's refusals as ``Refused``/``NotFound``."""
    timeouts = 0
    while True:
        try:
            return await call()
        except WorkflowUpdateRPCTimeoutOrCancelledError as e:
            timeouts += 1
            if not _server_timed_out(e) or (retries is not None and timeouts > retries):
                raise
        except (WorkflowUpdateFailedError, RPCError) as e:
            raise _translate(e, workflow_id) from None


def _updates_spent(e: RPCError) -> bool:
    """The server's per-run update limits refused the call: 10 in flight
    (``RESOURCE_EXHAUSTED``) or 2,000 in all (``FAILED_PRECONDITION``)."""
    text = e.message.lower()
    return (
        e.status in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.FAILED_PRECONDITION)
        and "limit" in text
        and "updates" in text
    )


def _server_timed_out(e: WorkflowUpdateRPCTimeoutOrCancelledError) -> bool:
    """The server did not answer in time, as opposed to the caller cancelling the call
    (which the SDK reports with the same error, caused by ``CancelledError``)."""
    if isinstance(e.__cause__, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or not task.cancelling()


def _translate(e: Exception, workflow_id: str) -> Exception:
    if isinstance(e, WorkflowUpdateFailedError) and isinstance(e.cause, ApplicationError):
        return Refused(e.cause.type or "ApplicationError", e.cause.message)
    if isinstance(e, RPCError):
        # An update to a closed workflow is NOT_FOUND too; tell the two apart.
        if "already completed" in e.message:
            return Refused(CONVERSATION_ENDED, "the conversation has ended")
        if e.status == RPCStatusCode.NOT_FOUND:
            return NotFound(f"no conversation with workflow id {workflow_id}")
    return e
