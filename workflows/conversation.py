"""``GenieConversation``: one Headless API conversation as one durable workflow.

The shape (see ``shared/DESIGN.md`` "How a turn flows"):

- Handlers only *record* things (a queued turn, a decision); the ``run`` loop does all
  the I/O, one turn at a time, because the API answers 409 to a second message while a
  run is active. That keeps handlers free of locks and the command order deterministic.
- The network lives in short activities. A stream segment reads the run until it ends or
  pauses; at a pause the activity returns and the *workflow* waits for the human, with a
  finite timeout, holding no activity slot, socket or worker memory.
- History holds ids, cursors, final texts and decisions, never SSE events; the workflow
  continues as new between turns, carrying the queue, dedupe keys and audit tail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities import GenieActivities
    from activities.models import (
        MAX_TURN_MESSAGE_CHARS,
        AuthLinkInput,
        ConnectionRequest,
        CreateConversationInput,
        PostSkillDecisionInput,
        ProbeConnectionInput,
        RejectConnectionInput,
        SkillConfirmation,
        StreamSegmentInput,
        StreamSegmentResult,
        UploadAttachmentInput,
    )
    from genie_api import RunCursor

from workflows import errors
from workflows._ui import details_card
from workflows.models import (
    MAX_MESSAGE_CHARS,
    AuditEntry,
    AuthLink,
    CarriedState,
    ConnectionDecision,
    ConversationOutcome,
    ConversationStart,
    ConversationState,
    ConversationStatus,
    DecisionRecorded,
    EndConversation,
    ErrorInfo,
    MessageAccepted,
    PendingApproval,
    PendingConnection,
    PendingWork,
    RefreshAuthLink,
    SendMessage,
    SkillDecision,
    Transcript,
    TranscriptQuery,
    TurnRecord,
    TurnResult,
    Via,
    WaitTurn,
)
from workflows.search_attributes import (
    GENIE_AWAITING_SINCE,
    GENIE_CONVERSATION_ID,
    GENIE_HANDLE,
    GENIE_STATE,
    GENIE_USER_ID,
)

WORKFLOW_TYPE = "GenieConversation"
MAX_QUEUED_TURNS = 100
"""More waiting turns than this is a caller bug; refuse rather than grow history."""
RETAINED_TURNS = 20
"""Finished turns kept in state (and carried over continue-as-new) for ``transcript``."""
AUDIT_TAIL = 200
DECIDED_IDS_TAIL = 500
MAX_CONNECTION_POLL = timedelta(minutes=5)

# Control calls are short and idempotent (or made idempotent by the activity: a decision
# the API already has counts as done), so they retry on their own for a few minutes.
_CONTROL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
_CONTROL_TIMEOUT = timedelta(seconds=60)
# They heartbeat while their call is in flight, so a worker that dies mid-call (say, right
# after the API applied a decision) is noticed in seconds, not at the start-to-close
# timeout; the retry then finds the decision already applied and counts it as done.
_CONTROL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# A stream segment may last as long as the genie works, so it is bounded by heartbeats,
# not by its duration: a dead worker is noticed within STREAM_HEARTBEAT_TIMEOUT and the
# retry resumes from the heartbeat cursor. Attempts are bounded so an API that stays
# broken ends the turn with a clear ``last_error`` instead of retrying forever.
STREAM_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
_STREAM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=20,
)
_STREAM_TIMEOUT = timedelta(hours=2)


class _ApprovalTimeoutFailure(Exception):
    """``on_approval_timeout="fail"``: unwinds the turn so ``run`` can fail the workflow."""


@workflow.defn(name=WORKFLOW_TYPE)
class GenieConversation:
    """A durable conversation with one genie, for one user."""

    @workflow.init
    def __init__(self, start: ConversationStart) -> None:
        # Handlers may run before ``run`` starts (update-with-start), so every piece of
        # state they touch is set up here.
        self._start = start
        self._policy = start.policy
        carried = start.carried
        self._conversation_id: str | None = carried.conversation_id if carried else None
        self._state: ConversationState = "starting"
        self._awaiting_since: datetime | None = None
        self._next_turn = carried.next_turn if carried else 1
        self._queue: list[TurnRecord] = list(carried.queue) if carried else []
        self._turns: dict[int, TurnRecord] = {}
        if carried:
            for t in [*carried.recent_turns, *carried.queue]:
                self._turns[t.turn] = t
        self._current: TurnRecord | None = None
        self._client_ids: dict[str, int] = dict(carried.client_message_ids) if carried else {}
        self._approvals: dict[str, PendingApproval] = {}
        self._connections: dict[str, PendingConnection] = {}
        self._skill_decisions: dict[str, tuple[SkillDecision, Via]] = {}
        """call_id -> (decision, via). Holds early decisions until their pause shows up."""
        self._connection_decisions: dict[str, tuple[ConnectionDecision, Via]] = {}
        self._connection_detected: set[str] = set()
        self._decided: dict[str, str] = {}
        """call_id / attempt_id -> the decision taken, for ``AlreadyDecided``."""
        if carried:
            self._decided.update(dict.fromkeys(carried.decided_ids, "decided"))
        self._audit: list[AuditEntry] = list(carried.audit) if carried else []
        self._last_error: ErrorInfo | None = carried.last_error if carried else None
        self._last_run_id: str | None = carried.last_run_id if carried else None
        self._runs = carried.runs if carried else 1
        self._turns_this_run = 0
        self._end_reason: str | None = None
        self._ended = False
        self._draining = False
        if start.first_message is not None and carried is None:
            self._enqueue(start.first_message)

    # ------------------------------------------------------------------ run loop

    @workflow.run
    async def run(self, start: ConversationStart) -> ConversationOutcome:
        if self._conversation_id is None:
            await self._create_conversation()
        self._set_state("idle")
        while True:
            if not await self._wait_for_work():
                break
            turn = self._queue.pop(0)
            await self._run_turn(turn)
            if self._end_reason is not None:
                break
            if self._should_continue_as_new():
                # Let in-flight updates (a wait_turn, a decision) finish first; they see
                # ``_draining`` and return. Then re-check: an end may have arrived while
                # draining, and it must not be carried into a fresh run.
                self._draining = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._end_reason is None:
                    workflow.continue_as_new(
                        ConversationStart(
                            genie_handle=self._start.genie_handle,
                            user_id=self._start.user_id,
                            policy=self._policy,
                            carried=self._carry(),
                        )
                    )
                break
        return await self._finish()

    async def _create_conversation(self) -> None:
        try:
            created = await workflow.execute_activity_method(
                GenieActivities.create_conversation,
                CreateConversationInput(
                    genie_handle=self._start.genie_handle, user_id=self._start.user_id
                ),
                start_to_close_timeout=_CONTROL_TIMEOUT,
                heartbeat_timeout=_CONTROL_HEARTBEAT_TIMEOUT,
                retry_policy=_CONTROL_RETRY,
                summary="create conversation (E1)",
            )
        except ActivityError as e:
            self._last_error = _error_info(e, turn=None, at=workflow.now())
            for t in self._queue:
                t.status, t.error = "failed", self._last_error
            self._queue.clear()
            self._set_state("failed")
            raise ApplicationError(
                f"the Headless API did not create the conversation: {self._last_error.message}",
                self._last_error.model_dump(mode="json"),
                type=errors.CONVERSATION_CREATE_FAILED,
                non_retryable=True,
            ) from e
        self._conversation_id = created.conversation_id
        workflow.upsert_search_attributes(
            [
                GENIE_CONVERSATION_ID.value_set(created.conversation_id),
                GENIE_HANDLE.value_set(self._start.genie_handle),
                GENIE_USER_ID.value_set(self._start.user_id),
            ]
        )

    async def _wait_for_work(self) -> bool:
        """Wait for a queued turn; False when the conversation should end."""
        ready: Callable[[], bool] = lambda: bool(self._queue) or self._end_reason is not None  # noqa: E731
        if not ready():
            try:
                await workflow.wait_condition(
                    ready,
                    timeout=self._policy.idle_timeout,
                    timeout_summary="idle timeout" if self._policy.idle_timeout else None,
                )
            except TimeoutError:
                self._end_reason = "idle timeout"
        return self._end_reason is None

    def _should_continue_as_new(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            or self._turns_this_run >= self._policy.max_turns_per_run
        )

    async def _finish(self) -> ConversationOutcome:
        for t in self._queue:
            t.status = "cancelled"
        self._queue.clear()
        self._ended = True
        self._set_state("ended")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ConversationOutcome(
            conversation_id=self._conversation_id,
            turns=self._next_turn - 1,
            ended_reason=self._end_reason,
        )

    # ------------------------------------------------------------------ one turn

    async def _run_turn(self, turn: TurnRecord) -> None:
        assert self._conversation_id is not None
        self._current = turn
        self._turns_this_run += 1
        turn.status, turn.started_at = "running", workflow.now()
        self._set_state("running")
        try:
            file_id = await self._upload(turn) if turn.attachment_uri else None
            seg = await self._segment(turn, "send", file_id=file_id)
            while True:
                self._absorb(turn, seg)
                if seg.outcome == "finished":
                    turn.status = "completed"
                    break
                if seg.confirmation is not None:
                    if not await self._await_skill(turn, seg.confirmation):
                        turn.status = "cancelled"
                        break
                    seg = await self._segment(turn, "resume", cursor=seg.cursor)
                elif seg.connection is not None:
                    if not await self._await_connection(turn, seg.connection, seg.cursor):
                        turn.status = "cancelled"
                        break
                    seg = await self._segment(
                        turn, "resume", cursor=seg.cursor, after_connection=True
                    )
                else:  # pragma: no cover - the activity always names what it paused on
                    raise ApplicationError(f"segment paused without a reason: {seg.outcome}")
        except ActivityError as e:
            turn.status = "failed"
            turn.error = self._last_error = _error_info(e, turn=turn.turn, at=workflow.now())
            self._count("genie_turn_failures")
        except _ApprovalTimeoutFailure:
            turn.status = "failed"
            turn.error = self._last_error = ErrorInfo(
                type=errors.APPROVAL_TIMED_OUT,
                message="a skill confirmation timed out and policy.on_approval_timeout is 'fail'",
                turn=turn.turn,
                at=workflow.now(),
            )
            self._close_turn(turn)
            self._set_state("failed")
            raise ApplicationError(
                turn.error.message,
                turn.error.model_dump(mode="json"),
                type=errors.APPROVAL_TIMED_OUT,
                non_retryable=True,
            ) from None
        self._close_turn(turn)
        self._count("genie_turns", {"status": turn.status})
        self._set_state("idle")

    def _close_turn(self, turn: TurnRecord) -> None:
        turn.finished_at = workflow.now()
        if turn.genie_run_id:
            self._last_run_id = turn.genie_run_id
        self._current = None
        # Early decisions whose pause never came belong to no call: audit them as refused.
        for call_id, (d, via) in list(self._skill_decisions.items()):
            if call_id not in self._approvals:
                del self._skill_decisions[call_id]
                self._audit_add(
                    AuditEntry(
                        at=workflow.now(),
                        kind="skill_decision",
                        ref=call_id,
                        actor=d.approver,
                        decision=_verdict(d),
                        reason=d.reason,
                        via=via,
                        accepted=False,
                        refusal=f"{errors.UNKNOWN_CALL_ID}: turn {turn.turn} ended without "
                        "a confirmation with this call id",
                    )
                )

    async def _upload(self, turn: TurnRecord) -> str:
        assert self._conversation_id is not None
        assert turn.attachment_uri is not None
        up = await workflow.execute_activity_method(
            GenieActivities.upload_attachment,
            UploadAttachmentInput(
                genie_handle=self._start.genie_handle,
                user_id=self._start.user_id,
                conversation_id=self._conversation_id,
                attachment_uri=turn.attachment_uri,
            ),
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=_CONTROL_HEARTBEAT_TIMEOUT,
            retry_policy=_CONTROL_RETRY,
            summary=f"turn {turn.turn}: upload attachment (E7)",
        )
        return up.file_id

    async def _segment(
        self,
        turn: TurnRecord,
        mode: str,
        *,
        file_id: str | None = None,
        cursor: RunCursor | None = None,
        after_connection: bool = False,
    ) -> StreamSegmentResult:
        assert self._conversation_id is not None
        what = "send and stream (E5)" if mode == "send" else "resume stream (E8/E9)"
        return await workflow.execute_activity_method(
            GenieActivities.stream_segment,
            StreamSegmentInput(
                genie_handle=self._start.genie_handle,
                user_id=self._start.user_id,
                conversation_id=self._conversation_id,
                turn=turn.turn,
                mode="send" if mode == "send" else "resume",
                message=turn.text if mode == "send" else None,
                file_id=file_id,
                cursor=cursor,
                previous_run_id=self._last_run_id,
                after_connection=after_connection,
                messages_so_far=turn.message_count,
            ),
            start_to_close_timeout=_STREAM_TIMEOUT,
            heartbeat_timeout=STREAM_HEARTBEAT_TIMEOUT,
            retry_policy=_STREAM_RETRY,
            summary=f"turn {turn.turn}: {what}",
        )

    def _absorb(self, turn: TurnRecord, seg: StreamSegmentResult) -> None:
        turn.genie_run_id = seg.cursor.genie_run_id or turn.genie_run_id
        if seg.messages:
            turn.message_count += len(seg.messages)
            turn.messages.extend(seg.messages)
            turn.reply = seg.messages[-1]
        turn.messages_truncated = turn.messages_truncated or seg.messages_truncated
        # Keep the turn's texts bounded across segments too (the reply always survives).
        while len(turn.messages) > 1 and sum(map(len, turn.messages)) > MAX_TURN_MESSAGE_CHARS:
            turn.messages.pop(0)
            turn.messages_truncated = True

    # ------------------------------------------------------------------ human waits

    async def _await_skill(self, turn: TurnRecord, conf: SkillConfirmation) -> bool:
        """Wait for a decision on ``conf`` and post it; False if the conversation ends."""
        now = workflow.now()
        pending = PendingApproval(
            call_id=conf.call_id,
            kind=conf.kind,
            skill_name=conf.skill_name,
            skill_id=conf.skill_id,
            skill_parameters=conf.skill_parameters,
            turn=turn.turn,
            requested_at=now,
            deadline=now + self._policy.approval_timeout,
        )
        self._approvals[conf.call_id] = pending
        turn.status = "awaiting_approval"
        self._set_state("awaiting_approval")
        timed_out = False
        try:
            await workflow.wait_condition(
                lambda: conf.call_id in self._skill_decisions or self._end_reason is not None,
                timeout=self._policy.approval_timeout,
                timeout_summary=f"approval of {conf.skill_name or 'skill'} ({conf.call_id})",
            )
        except TimeoutError:
            timed_out = True
        ending = conf.call_id not in self._skill_decisions
        if timed_out and ending:
            reason = "approval timed out"
            timeout_decision = SkillDecision(
                call_id=conf.call_id, approved=False, approver="policy", reason=reason
            )
            self._skill_decisions[conf.call_id] = (timeout_decision, "policy")
            self._audit_add(
                AuditEntry(
                    at=workflow.now(),
                    kind="approval_timeout",
                    ref=conf.call_id,
                    actor="policy",
                    decision="rejected",
                    reason=reason,
                    via="policy",
                )
            )
            self._count("genie_approval_timeouts")
            ending = False
        elif ending:
            self._skill_decisions[conf.call_id] = (
                SkillDecision(
                    call_id=conf.call_id,
                    approved=False,
                    approver="system",
                    reason=f"conversation ended: {self._end_reason}",
                ),
                "policy",
            )
        decision, via = self._skill_decisions.pop(conf.call_id)
        del self._approvals[conf.call_id]
        self._decided[conf.call_id] = _verdict(decision)
        self._trim_decided()
        if via != "policy" or timed_out:
            self._count("genie_approvals", {"decision": _verdict(decision)})
        turn.status = "running"
        self._set_state("running")
        await self._post_skill_decision(turn, conf, decision)
        if timed_out and self._policy.on_approval_timeout == "fail":
            raise _ApprovalTimeoutFailure
        return not ending

    async def _post_skill_decision(
        self, turn: TurnRecord, conf: SkillConfirmation, d: SkillDecision
    ) -> None:
        assert self._conversation_id is not None
        await workflow.execute_activity_method(
            GenieActivities.post_skill_decision,
            PostSkillDecisionInput(
                genie_handle=self._start.genie_handle,
                user_id=self._start.user_id,
                conversation_id=self._conversation_id,
                call_id=conf.call_id,
                approved=d.approved,
                reason=d.reason,
                kind=conf.kind,
            ),
            start_to_close_timeout=_CONTROL_TIMEOUT,
            heartbeat_timeout=_CONTROL_HEARTBEAT_TIMEOUT,
            retry_policy=_CONTROL_RETRY,
            summary=f"turn {turn.turn}: post {_verdict(d)} for {conf.call_id} (E10)",
        )

    async def _await_connection(
        self, turn: TurnRecord, req: ConnectionRequest, cursor: RunCursor
    ) -> bool:
        """Wait until the user has authenticated (or not); False if the conversation ends.

        Nobody may tell us the user finished: production does not reliably emit
        ``runtime_connection.auth_success``. So besides waiting for a decision, the
        workflow probes the API on a backing-off timer.
        """
        assert self._conversation_id is not None
        now = workflow.now()
        pending = PendingConnection(
            attempt_id=req.attempt_id,
            connector_name=req.connector_name,
            auth_url=req.auth_url,
            auth_expires_at=req.auth_expires_at,
            turn=turn.turn,
            requested_at=now,
            deadline=now + self._policy.connection_timeout,
        )
        aid = req.attempt_id
        self._connections[aid] = pending
        turn.status = "awaiting_connection"
        self._set_state("awaiting_connection")
        interval = self._policy.connection_poll_interval
        settled: Callable[[], bool] = lambda: (  # noqa: E731
            aid in self._connection_decisions
            or aid in self._connection_detected
            or self._end_reason is not None
        )
        timed_out = False
        while not settled():
            remaining = pending.deadline - workflow.now()
            if remaining <= timedelta(0):
                timed_out = True
                break
            wait = min(remaining, interval) if interval > timedelta(0) else remaining
            try:
                await workflow.wait_condition(
                    settled, timeout=wait, timeout_summary=f"connection {aid}"
                )
            except TimeoutError:
                if interval > timedelta(0) and wait < remaining:
                    await self._probe_connection(turn, aid, cursor)
                    interval = min(interval * 2, MAX_CONNECTION_POLL)
        del self._connections[aid]
        action, reason = "done", None
        if aid in self._connection_decisions:
            d, _via = self._connection_decisions.pop(aid)
            action, reason = d.action, d.reason
        elif aid in self._connection_detected:
            self._connection_detected.discard(aid)
        elif timed_out:
            action, reason = "reject", "connection timed out"
            self._audit_add(
                AuditEntry(
                    at=workflow.now(),
                    kind="connection_timeout",
                    ref=aid,
                    actor="policy",
                    decision="reject",
                    reason=reason,
                    via="policy",
                )
            )
            self._count("genie_connection_timeouts")
        else:
            action, reason = "reject", f"conversation ended: {self._end_reason}"
        self._decided[aid] = action
        self._trim_decided()
        turn.status = "running"
        self._set_state("running")
        if action == "reject":
            await workflow.execute_activity_method(
                GenieActivities.reject_connection,
                RejectConnectionInput(
                    genie_handle=self._start.genie_handle,
                    user_id=self._start.user_id,
                    attempt_id=aid,
                    reason=reason,
                ),
                start_to_close_timeout=_CONTROL_TIMEOUT,
                heartbeat_timeout=_CONTROL_HEARTBEAT_TIMEOUT,
                retry_policy=_CONTROL_RETRY,
                summary=f"turn {turn.turn}: reject connection {aid} (E12)",
            )
        return self._end_reason is None

    async def _probe_connection(self, turn: TurnRecord, aid: str, cursor: RunCursor) -> None:
        assert self._conversation_id is not None
        try:
            probe = await workflow.execute_activity_method(
                GenieActivities.probe_connection,
                ProbeConnectionInput(
                    genie_handle=self._start.genie_handle,
                    user_id=self._start.user_id,
                    conversation_id=self._conversation_id,
                    attempt_id=aid,
                    genie_run_id=cursor.genie_run_id,
                    messages_so_far=turn.message_count,
                ),
                start_to_close_timeout=_CONTROL_TIMEOUT,
                heartbeat_timeout=_CONTROL_HEARTBEAT_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary=f"turn {turn.turn}: has the user connected? (E3)",
            )
        except ActivityError:
            return  # a failed probe is just a probe: the next one, or the human, decides
        if probe.resolved and aid in self._connections:
            self._connection_detected.add(aid)
            self._audit_add(
                AuditEntry(
                    at=workflow.now(),
                    kind="connection_detected",
                    ref=aid,
                    actor="api",
                    decision="done",
                    reason=f"run moved on ({probe.last_event_type})",
                    via="api",
                )
            )

    # ------------------------------------------------------------------ updates & signals

    @workflow.update(description="Queue a user message; returns its turn (and, if asked, waits).")
    async def send_message(self, msg: SendMessage) -> MessageAccepted:
        duplicate = bool(msg.client_message_id and msg.client_message_id in self._client_ids)
        if duplicate:
            assert msg.client_message_id is not None
            turn = self._client_ids[msg.client_message_id]
        else:
            turn = self._enqueue(msg).turn
        result = None
        if msg.wait_for != "none" and turn in self._turns:
            result = await self._await_turn(turn, msg.wait_for, None)
        return MessageAccepted(turn=turn, duplicate=duplicate, result=result)

    @send_message.validator
    def _validate_send(self, msg: SendMessage) -> None:
        if msg.client_message_id and msg.client_message_id in self._client_ids:
            return  # a retry of an accepted message is answered, never refused
        if self._end_reason is not None or self._ended:
            _refuse(errors.CONVERSATION_ENDED, "the conversation has ended")
        if not msg.text.strip():
            _refuse(errors.EMPTY_MESSAGE, "the message text is empty")
        if len(msg.text) > MAX_MESSAGE_CHARS:
            _refuse(
                errors.MESSAGE_TOO_LONG,
                f"the message has {len(msg.text)} characters; the limit is {MAX_MESSAGE_CHARS}",
            )
        if len(self._queue) >= MAX_QUEUED_TURNS:
            _refuse(errors.QUEUE_FULL, f"{len(self._queue)} turns are already waiting")

    @workflow.update(description="Wait until a turn ends or first needs a human.")
    async def wait_turn(self, req: WaitTurn) -> TurnResult:
        return await self._await_turn(req.turn, req.wait_for, req.timeout_seconds)

    async def _await_turn(self, n: int, wait_for: str, timeout_seconds: float | None) -> TurnResult:
        def ready() -> bool:
            # While draining for continue-as-new, answer now: the caller asks the next run.
            t = self._turns.get(n)
            if t is None or self._draining:
                return True
            if t.status in ("completed", "failed", "cancelled"):
                return True
            return wait_for == "attention" and t.status.startswith("awaiting_")

        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(ready, timeout=timeout_seconds)
        return self._turn_result(n)

    @wait_turn.validator
    def _validate_wait(self, req: WaitTurn) -> None:
        if req.turn not in self._turns:
            first = min(self._turns, default=self._next_turn)
            _refuse(
                errors.UNKNOWN_TURN,
                f"turn {req.turn} is not known here (turns {first}..{self._next_turn - 1} "
                "are; older ones are in the API's message history)",
            )

    @workflow.update(description="Approve or reject a skill confirmation (validated).")
    async def decide_skill(self, d: SkillDecision) -> DecisionRecorded:
        self._record_skill_decision(d, "update")
        # An early decision (its pause not seen yet) completes when the pause shows up
        # and takes it, or fails when the turn ends without one.
        await workflow.wait_condition(lambda: d.call_id not in self._skill_decisions)
        if self._decided.get(d.call_id) != _verdict(d) or d.call_id in self._approvals:
            raise ApplicationError(
                f"no confirmation with call id {d.call_id} appeared in turn",
                type=errors.UNKNOWN_CALL_ID,
            )
        return DecisionRecorded(
            id=d.call_id, decision=_verdict(d), decided_by=d.approver, decided_at=workflow.now()
        )

    @decide_skill.validator
    def _validate_decide_skill(self, d: SkillDecision) -> None:
        refusal = self._skill_refusal(d)
        if refusal:
            _refuse(*refusal)

    @workflow.signal(
        description="Approve or reject a skill confirmation; invalid ones are audited."
    )
    def skill_decision(self, d: SkillDecision) -> None:
        refusal = self._skill_refusal(d)
        if refusal:
            self._audit_refusal(
                "skill_decision", d.call_id, d.approver, _verdict(d), d.reason, refusal
            )
            return
        self._record_skill_decision(d, "signal")

    @workflow.update(description="Say a runtime connection is done, or reject it (validated).")
    def decide_connection(self, d: ConnectionDecision) -> DecisionRecorded:
        self._record_connection_decision(d, "update")
        return DecisionRecorded(
            id=d.attempt_id, decision=d.action, decided_by=d.actor, decided_at=workflow.now()
        )

    @decide_connection.validator
    def _validate_decide_connection(self, d: ConnectionDecision) -> None:
        refusal = self._connection_refusal(d)
        if refusal:
            _refuse(*refusal)

    @workflow.signal(description="Connection done/reject; invalid ones are audited.")
    def connection_decision(self, d: ConnectionDecision) -> None:
        refusal = self._connection_refusal(d)
        if refusal:
            self._audit_refusal(
                "connection_decision", d.attempt_id, d.actor, d.action, d.reason, refusal
            )
            return
        self._record_connection_decision(d, "signal")

    @workflow.update(description="Fetch a fresh auth link for a pending connection (E11).")
    async def refresh_auth_link(self, req: RefreshAuthLink) -> AuthLink:
        link = await workflow.execute_activity_method(
            GenieActivities.get_auth_link,
            AuthLinkInput(
                genie_handle=self._start.genie_handle,
                user_id=self._start.user_id,
                attempt_id=req.attempt_id,
            ),
            start_to_close_timeout=_CONTROL_TIMEOUT,
            heartbeat_timeout=_CONTROL_HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary=f"fresh auth link for {req.attempt_id} (E11)",
        )
        pending = self._connections.get(req.attempt_id)
        if pending is not None:
            if link.status == "authorized":
                self._connection_detected.add(req.attempt_id)
            else:
                pending.auth_url, pending.auth_expires_at = link.url, link.expires_at
                self._refresh_details()
        return AuthLink(attempt_id=req.attempt_id, **link.model_dump())

    @refresh_auth_link.validator
    def _validate_refresh(self, req: RefreshAuthLink) -> None:
        if req.attempt_id not in self._connections:
            _refuse(errors.UNKNOWN_ATTEMPT_ID, self._attempt_unknown_reason(req.attempt_id))

    @workflow.signal(description="End the conversation after the current step.")
    def end_conversation(self, req: EndConversation) -> None:
        if self._end_reason is None and not self._ended:
            self._end_reason = req.reason or "ended by request"
            self._audit_add(
                AuditEntry(
                    at=workflow.now(),
                    kind="end_conversation",
                    reason=self._end_reason,
                    via="signal",
                )
            )

    @workflow.query(description="Where the conversation stands and what it waits for.")
    def status(self) -> ConversationStatus:
        return ConversationStatus(
            state=self._state,
            conversation_id=self._conversation_id,
            genie_handle=self._start.genie_handle,
            user_id=self._start.user_id,
            turn=self._next_turn - 1,
            queued_turns=len(self._queue),
            pending_approvals=list(self._approvals.values()),
            pending_connections=list(self._connections.values()),
            awaiting_since=self._awaiting_since,
            last_error=self._last_error,
            audit=list(self._audit),
            ended_reason=self._end_reason,
        )

    @workflow.query(description="Recent turns with the user's text and the genie's replies.")
    def transcript(self, req: TranscriptQuery) -> Transcript:
        since = req.since_turn or 0
        turns = [t for n, t in sorted(self._turns.items()) if n >= since]
        return Transcript(turns=turns, first_retained_turn=min(self._turns, default=0))

    # ------------------------------------------------------------------ handler helpers

    def _enqueue(self, msg: SendMessage) -> TurnRecord:
        rec = TurnRecord(
            turn=self._next_turn,
            text=msg.text,
            client_message_id=msg.client_message_id,
            attachment_uri=msg.attachment_uri,
            queued_at=workflow.now(),
        )
        self._next_turn += 1
        self._queue.append(rec)
        self._turns[rec.turn] = rec
        if msg.client_message_id:
            self._client_ids[msg.client_message_id] = rec.turn
        self._refresh_details()
        return rec

    def _skill_refusal(self, d: SkillDecision) -> tuple[str, str] | None:
        if not d.approver.strip():
            return errors.INVALID_DECISION, "the approver is empty"
        if self._ended or self._end_reason is not None:
            return errors.CONVERSATION_ENDED, "the conversation has ended"
        if self._policy.approvers and d.approver not in self._policy.approvers:
            return (
                errors.APPROVER_NOT_ALLOWED,
                f"{d.approver!r} may not decide in this conversation",
            )
        if d.call_id in self._decided or d.call_id in self._skill_decisions:
            prior = self._decided.get(d.call_id) or "a decision is pending delivery"
            return errors.ALREADY_DECIDED, f"call {d.call_id} was already decided ({prior})"
        if d.call_id in self._approvals:
            return None
        if self._current is not None and self._current.status == "running":
            return None  # may be early: kept until the pause shows up or the turn ends
        waiting = ", ".join(self._approvals) or "none"
        return (
            errors.UNKNOWN_CALL_ID,
            f"no pending confirmation has call id {d.call_id} (pending: {waiting})",
        )

    def _record_skill_decision(self, d: SkillDecision, via: Via) -> None:
        self._skill_decisions[d.call_id] = (d, via)
        self._audit_add(
            AuditEntry(
                at=workflow.now(),
                kind="skill_decision",
                ref=d.call_id,
                actor=d.approver,
                decision=_verdict(d),
                reason=d.reason,
                via=via,
            )
        )

    def _connection_refusal(self, d: ConnectionDecision) -> tuple[str, str] | None:
        if not d.actor.strip():
            return errors.INVALID_DECISION, "the actor is empty"
        if self._ended or self._end_reason is not None:
            return errors.CONVERSATION_ENDED, "the conversation has ended"
        if self._policy.approvers and d.actor not in self._policy.approvers:
            return errors.APPROVER_NOT_ALLOWED, f"{d.actor!r} may not decide in this conversation"
        if d.attempt_id in self._decided or d.attempt_id in self._connection_decisions:
            return errors.ALREADY_DECIDED, f"attempt {d.attempt_id} was already decided"
        if d.attempt_id not in self._connections:
            return errors.UNKNOWN_ATTEMPT_ID, self._attempt_unknown_reason(d.attempt_id)
        return None

    def _attempt_unknown_reason(self, attempt_id: str) -> str:
        waiting = ", ".join(self._connections) or "none"
        return f"no pending connection has attempt id {attempt_id} (pending: {waiting})"

    def _record_connection_decision(self, d: ConnectionDecision, via: Via) -> None:
        self._connection_decisions[d.attempt_id] = (d, via)
        self._audit_add(
            AuditEntry(
                at=workflow.now(),
                kind="connection_decision",
                ref=d.attempt_id,
                actor=d.actor,
                decision=d.action,
                reason=d.reason,
                via=via,
            )
        )

    def _audit_refusal(
        self,
        kind: Any,
        ref: str,
        actor: str,
        decision: str,
        reason: str | None,
        refusal: tuple[str, str],
    ) -> None:
        self._audit_add(
            AuditEntry(
                at=workflow.now(),
                kind=kind,
                ref=ref,
                actor=actor,
                decision=decision,
                reason=reason,
                via="signal",
                accepted=False,
                refusal=f"{refusal[0]}: {refusal[1]}",
            )
        )

    def _audit_add(self, entry: AuditEntry) -> None:
        self._audit.append(entry)
        del self._audit[:-AUDIT_TAIL]

    def _trim_decided(self) -> None:
        while len(self._decided) > DECIDED_IDS_TAIL:
            del self._decided[next(iter(self._decided))]

    def _turn_result(self, n: int) -> TurnResult:
        t = self._turns[n]
        return TurnResult(
            turn=n,
            status=t.status,
            reply=t.reply,
            messages=list(t.messages),
            messages_truncated=t.messages_truncated,
            pending=PendingWork(
                approvals=[p for p in self._approvals.values() if p.turn == n],
                connections=[c for c in self._connections.values() if c.turn == n],
            ),
            error=t.error,
        )

    def _carry(self) -> CarriedState:
        assert self._conversation_id is not None
        finished = [t for n, t in sorted(self._turns.items()) if t.status not in ("queued",)]
        return CarriedState(
            conversation_id=self._conversation_id,
            next_turn=self._next_turn,
            queue=list(self._queue),
            recent_turns=finished[-RETAINED_TURNS:],
            client_message_ids=self._client_ids,
            decided_ids=list(self._decided),
            audit=self._audit,
            last_error=self._last_error,
            last_run_id=self._last_run_id,
            runs=self._runs + 1,
        )

    # ------------------------------------------------------------------ visibility

    def _set_state(self, state: ConversationState) -> None:
        previous, self._state = self._state, state
        awaiting = state in ("awaiting_approval", "awaiting_connection")
        if state != previous or not awaiting:
            self._awaiting_since = workflow.now() if awaiting else None
        if state != previous:
            # One upsert per transition, never per event: each is a history event.
            workflow.upsert_search_attributes(
                [
                    GENIE_STATE.value_set(state),
                    GENIE_AWAITING_SINCE.value_set(self._awaiting_since)
                    if self._awaiting_since
                    else GENIE_AWAITING_SINCE.value_unset(),
                ]
            )
        self._refresh_details()

    def _refresh_details(self) -> None:
        workflow.set_current_details(
            details_card(
                workflow_id=workflow.info().workflow_id,
                state=self._state,
                genie_handle=self._start.genie_handle,
                conversation_id=self._conversation_id,
                turn=self._next_turn - 1,
                queued=len(self._queue),
                since=self._awaiting_since,
                approvals=list(self._approvals.values()),
                connections=list(self._connections.values()),
                last_error=self._last_error,
            )
        )

    def _count(self, name: str, attrs: dict[str, str] | None = None) -> None:
        counter = workflow.metric_meter().create_counter(name)
        counter.add(1, attrs or {})


def _refuse(error_type: str, message: str) -> NoReturn:
    raise ApplicationError(message, type=error_type, non_retryable=True)


def _verdict(d: SkillDecision) -> str:
    return "approved" if d.approved else "rejected"


def _error_info(e: ActivityError, *, turn: int | None, at: datetime) -> ErrorInfo:
    """Flatten an activity failure into what ops need: type, code, request id."""
    cause = e.cause
    if isinstance(cause, ApplicationError):
        details: dict[str, Any] = {}
        if cause.details and isinstance(cause.details[0], dict):
            details = cause.details[0]
        return ErrorInfo(
            type=cause.type or "ApplicationError",
            message=cause.message,
            status=details.get("status"),
            error_code=details.get("error_code"),
            request_id=details.get("request_id"),
            turn=turn,
            at=at,
        )
    message = str(cause) if cause is not None else str(e)
    return ErrorInfo(type=type(cause or e).__name__, message=message, turn=turn, at=at)
