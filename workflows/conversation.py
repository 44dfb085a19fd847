"""``GenieConversation``: one Headless API conversation as one durable workflow.

The shape:

- Handlers only *record* (a queued turn, a decision) after the rules in ``_decisions``
  allow it; the ``run`` loop does all the I/O (``_turn.TurnRunner``), one turn at a
  time, because the API answers 409 to a second message while a run is active. That
  keeps handlers free of locks and the command order deterministic.
- Every input is validated against the bounds in ``models`` before it touches state.
  Invalid start input fails the workflow at once (``InvalidInput``); invalid updates are
  refused by their validators; invalid signals are audited and dropped. No input can
  make a workflow task fail in a loop.
- All state is one ``ConversationData``; continue-as-new (between turns only) carries it
  whole. Reads (queries) never write history; a caller waiting on a turn costs one
  update however long it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any, NoReturn

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import _decisions as rules
from workflows import errors
from workflows._inputs import (
    ConnectionInput,
    LinkInput,
    SendInput,
    SkillInput,
    StartInput,
    WaitInput,
)
from workflows._patches import (
    NEWEST_LEVEL,
    PATCH_BOUNDED_HISTORY,
    PATCH_DEPLOYMENT,
    PATCH_IDLE_ROLLOVER,
    PATCH_PAUSE_ROLLOVER,
    PATCH_RUNNING_WHEN_LONG,
    ask_level,
)
from workflows._policy import for_skill
from workflows._state import (
    MAX_LINK_REFRESHES,
    MAX_WAITERS,
    REFUSALS_RECORDED_PER_RUN,
    ConversationData,
    bounded_for_carry,
    fit_status,
    remember_client_id,
    retain_finished,
    transcript,
    turn_result,
    unanswered,
)
from workflows._steps import LINK, STREAM, OutageExceeded, StepCancelled, Steps, error_info
from workflows._turn import ApprovalTimeoutFailure, OutageOrRefusal, TurnRunner
from workflows.models import (
    TERMINAL_TURN_STATUSES,
    AuthLink,
    ConversationOutcome,
    ConversationPolicy,
    ConversationStart,
    ConversationStatus,
    DecisionRecorded,
    EndConversation,
    ErrorInfo,
    MessageAccepted,
    SendMessage,
    Transcript,
    TranscriptQuery,
    TurnRecord,
    TurnResult,
)
from workflows.search_attributes import (
    GENIE_CONVERSATION_ID,
    GENIE_HANDLE,
    GENIE_STATE,
    GENIE_USER_ID,
)
from workflows.signing import SigningPolicy

with workflow.unsafe.imports_passed_through():
    from activities import GenieActivities
    from activities.models import AuthLinkInput, DeploymentInput, StreamSegmentResult
    from genie_api import RunCursor
    from genie_telemetry import turn_context, turn_trace

WORKFLOW_TYPE = "GenieConversation"
STREAM_HEARTBEAT_TIMEOUT = STREAM.heartbeat
"""A worker that dies mid-stream is noticed within this; the retry resumes the cursor."""
IDLE_HISTORY_CAP = 2_000
"""History events at which an idle or paused run continues as new whatever its policy's
bound: an accepted update adds at least two, so it rolls over before the server's budget
of 2,000 updates per run is spent."""
QUERY_BUDGET_BYTES = 1_000_000
"""A query answer stays under this (the server's payload limit is 2 MB)."""


# PINNED under Worker Versioning: a run stays on the version that started it, so a
# conversation parked for days is never replayed on code that came later; it moves at the
# end of its next turn (``_upgrade_due``). The behaviour is the versioned worker's default
# (worker.deployment_config), not declared here: the server fails every workflow task of
# an unversioned worker whose completions name a behaviour.
@workflow.defn(name=WORKFLOW_TYPE)
class GenieConversation(TurnRunner):
    """A durable conversation with one genie, for one user."""

    @workflow.init
    def __init__(self, start: StartInput) -> None:
        # Handlers may run before ``run`` starts (update-with-start), so every piece of
        # state they touch is set up here.
        self._start = start
        # Until the deployment's default is read (before any pause), the built-in one.
        self._policy = start.policy or ConversationPolicy()
        self._start_refusal: rules.Refusal | None = None
        if start.carried is not None and workflow.info().continued_run_id is None:
            # A state only continue-as-new may hand over (it holds the trusted signing
            # keys, what was decided, the audit): from a client, it is refused, unused.
            self._start_refusal = rules.Refusal(
                errors.INVALID_INPUT, "carried: set only by continue-as-new, never by a client"
            )
            start = start.model_copy(update={"carried": None, "first_message": None})
            self._start = start
        self._d = start.carried or ConversationData()
        self._turns_this_run = 0
        self._draining = False
        # Calls waiting in ``_await_turn`` now; replay rebuilds it, as it does their updates.
        self._waiting = 0
        self._idle = False  # in ``_wait_for_work``
        self._idle_began = workflow.now()
        self._roll_over = False  # set by ``_watch_idle_growth``
        self._roll_pause = False  # set by ``_watch_pause_growth``
        self._delivery_tasks: set[asyncio.Task[None]] = set()
        self._steps = Steps(
            outage_timeout=lambda: self._policy.api_outage_timeout,
            on_outage=self._on_outage,
            patched=self._patched,
        )
        if start.first_message is not None and start.carried is None:
            self._start_refusal = rules.send_refusal(self._d, start.first_message)
            if self._start_refusal is None:
                self._enqueue(start.first_message)

    # ------------------------------------------------------------------ run loop

    @workflow.run
    async def run(self, start: StartInput) -> ConversationOutcome:
        d = self._d
        if self._start_refusal is not None:
            _refuse(self._start_refusal)  # a bad first message fails the start, visibly
        if d.patch_level is None:
            d.patch_level = ask_level()  # once per conversation: no site below asks again
        if d.running_when_long is None:
            # Asked once per conversation, in its first task: a run recorded before it is
            # told False and keeps upserting every transition (until its next run).
            d.running_when_long = self._patched(PATCH_RUNNING_WHEN_LONG)
        # Conversations recorded before the deployment look-up replay without it.
        user_value = start.user_id
        if d.signing is None and self._patched(PATCH_DEPLOYMENT):
            user_value = await self._load_deployment(explicit_policy=start.policy is not None)
        if start.carried is None:
            # Visible for filtering from the first task, however the workflow was started;
            # the user id as the deployment wants it searchable (plain, or a keyed hash).
            attrs = [
                GENIE_HANDLE.value_set(start.genie_handle),
                GENIE_USER_ID.value_set(user_value),
            ]
            if d.running_when_long and not start.create_at_start:
                attrs.append(GENIE_STATE.value_set("idle"))  # one upsert, not two
            workflow.upsert_search_attributes(attrs)
        if start.create_at_start and d.conversation_id is None:
            await self._create()
        if d.state == "starting":
            self._set_state("idle")
        watches = [
            asyncio.create_task(self._watch_idle_growth()),
            asyncio.create_task(self._watch_pause_growth()),
        ]
        # A turn carried in its pause (a pause rollover) goes on before any queued one.
        carried = d.current
        while carried is not None or await self._wait_for_work():
            if carried is not None:
                turn, carried = carried, None
            elif not d.queue:  # woken only to roll over (_watch_idle_growth)
                d.idle_since = self._idle_began
                await self._continue_as_new(start)
                continue  # an end arrived meanwhile
            else:
                d.idle_since = None
                turn = d.queue.pop(0)
            with turn_context(d.trace_parents.pop(turn.turn, None)):  # the asker's trace
                await self._run_turn(turn)
            if d.ending:
                break
            if d.upgrade_after_turn or self._upgrade_due() or self._should_continue_as_new():
                await self._continue_as_new(start)
        for watch in watches:
            watch.cancel()
        return await self._finish()

    async def _watch_idle_growth(self) -> None:
        """Continue as new from the idle wait once the run's history reached its bound
        (at most ``IDLE_HISTORY_CAP``): with no turn to end, a conversation that callers
        keep polling would otherwise grow until the server refuses every update (2,000
        per run), new messages included.

        A task of its own whose wait issues no command, so the idle wait's own commands
        are unchanged; its patch is asked only when it fires (taken with the patch level
        since levels), and a run recorded before it is told False there and keeps waiting
        as it did."""
        d = self._d
        # Not the server's suggestion: it also comes when a newer worker version is the
        # target, and an idle conversation moves to it after its next turn, not before.
        await workflow.wait_condition(
            lambda: (
                self._idle
                and not d.queue
                and not d.ending
                and workflow.info().get_current_history_length()
                >= min(self._policy.max_history_events_per_run, IDLE_HISTORY_CAP)
            )
        )
        if self._patched(PATCH_IDLE_ROLLOVER):
            self._roll_over = True

    async def _watch_pause_growth(self) -> None:
        """Continue as new from a pause once the run's history reached its bound (at most
        ``IDLE_HISTORY_CAP``), as ``_watch_idle_growth`` does between turns: while a human
        takes days, polls, refused decisions, signals and connection probes would
        otherwise grow one run until the server refuses every update (2,000 per run) and
        then ends the run (51,200 events). The pause moves whole (``_carry_pause``): its
        item, deadline and escalation are in state, and its stream cursor goes along.

        Its patch is asked only when it fires; a run recorded before it is told False
        there, so it waits in its pause as it recorded (and no later pause of that run
        rolls over). So is the deployment (``_may_roll_over``): where it says no, the run
        keeps its pauses as before, and decisions fall back to signals if a caller spends
        the server's updates."""
        d = self._d
        await workflow.wait_condition(
            lambda: (
                d.state in ("awaiting_approval", "awaiting_connection")
                and workflow.info().get_current_history_length()
                >= min(self._policy.max_history_events_per_run, IDLE_HISTORY_CAP)
            )
        )
        if self._patched(PATCH_PAUSE_ROLLOVER) and await self._may_roll_over():
            self._roll_pause = True

    async def _may_roll_over(self) -> bool:
        """Whether this worker's deployment lets a pause continue as new (the look-up
        again, as a local activity, so the answer is in history). A release before the
        rollover would take the next run's carried pause for an idle conversation and
        never resume it, so an unversioned fleet opts in once no such worker is left."""
        try:
            dep = await workflow.execute_local_activity_method(
                GenieActivities.deployment,
                DeploymentInput(user_id=self._start.user_id),
                start_to_close_timeout=timedelta(seconds=10),
                summary="may this pause continue as new?",
            )
        except ActivityError:
            return False
        return dep.pause_rollover

    async def _carry_pause(self, cursor: RunCursor) -> None:
        """Continue as new in the pause the turn waits in; the next run waits for the
        same item and streams on from ``cursor`` (``TurnRunner._resume_pause``). Returns
        only if an end arrived meanwhile: the pause is then decided here, by the policy.

        On this worker version whatever the target: a rollover is the run's own
        bookkeeping, and the conversation moves at the end of the turn. A versioned run
        marks the next one (``upgrade_after_turn``) to move then unasked: the server does
        not tell a run that inherited its pin that the target changed (seen on the dev
        server), so without the mark it would stay on this version turn after turn.
        """
        d = self._d
        d.pause_cursor, d.pause_probe_every = cursor, self._probe_every
        version = workflow.info().get_current_deployment_version()
        d.upgrade_after_turn = version is not None and bool(version.deployment_name)
        await self._continue_as_new(self._start, upgrade=False)
        d.pause_cursor = d.pause_probe_every = None
        d.upgrade_after_turn = False

    async def _continue_as_new(self, start: ConversationStart, *, upgrade: bool = True) -> None:
        """Between turns, or in a pause (``_carry_pause``): carry the whole state into a
        new run (and, between turns when a newer worker version is the target, onto it).
        Returns only if an end arrived meanwhile."""
        d = self._d
        # Let in-flight updates (a wait_turn, a decision) finish first; they see
        # ``_draining`` and return. An end that arrives meanwhile is not carried.
        self._draining = True
        self.stop_deliveries()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if d.ending:
            return
        d.runs += 1
        d.refusals_this_run = 0  # the next run's history starts empty
        # Between turns, a turn carried in a pause has ended: onto the target, whatever
        # the server says (in a pause, ``_carry_pause`` set the flag for the next run).
        moving = upgrade and d.upgrade_after_turn
        if upgrade:
            d.upgrade_after_turn = False
        if d.running_when_long is False:
            d.running_when_long = None  # recorded before the patch: the next run asks again
        if d.patch_level != NEWEST_LEVEL:
            d.patch_level = None  # recorded before the newest level: the next run asks
        bounded_for_carry(d)
        workflow.continue_as_new(
            ConversationStart(
                genie_handle=start.genie_handle,
                user_id=start.user_id,
                policy=self._policy,
                # As data: the sandbox may hold a second copy of the class.
                carried=d.model_dump(),
            ),
            # The next run starts on the task queue's target version instead of
            # inheriting this run's pin; left unset, it would stay on the old one.
            initial_versioning_behavior=(
                workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE
                if moving or (upgrade and self._upgrade_due())
                else None
            ),
        )

    async def _load_deployment(self, *, explicit_policy: bool) -> str:
        """The worker's deployment settings, once per conversation: a local activity, so
        what it answered is in history (replay-safe) and carried across continue-as-new.
        A conversation started without a policy takes the deployment's default. Returns
        the user id as the ``GenieUserId`` search attribute may hold it."""
        dep = await workflow.execute_local_activity_method(
            GenieActivities.deployment,
            DeploymentInput(user_id=self._start.user_id),
            start_to_close_timeout=timedelta(seconds=10),
            summary="deployment settings",
        )
        d = self._d
        d.signing = SigningPolicy(keys=dep.keys, max_age=timedelta(seconds=dep.max_age_seconds))
        d.endpoints = list(dep.endpoints)
        if not explicit_policy and dep.default_policy is not None:
            self._policy = ConversationPolicy.model_validate(dep.default_policy)
            d.policy_source = "deployment"
        self._refresh_details()
        return dep.user_search_value or self._start.user_id

    async def _wait_for_work(self) -> bool:
        """Wait for a queued turn; False when the conversation should end."""
        d = self._d
        timeout = self._policy.idle_timeout
        if timeout is not None and d.idle_since is not None:
            # Rolled over while idle: the idle time so far counts (carried, not reset).
            timeout = max(d.idle_since + timeout - workflow.now(), timedelta(seconds=1))
        self._idle_began = d.idle_since or workflow.now()
        self._idle = True
        try:
            await workflow.wait_condition(
                lambda: bool(d.queue) or d.ending or self._roll_over,
                timeout=timeout,
                timeout_summary="idle timeout" if timeout else None,
            )
        except TimeoutError:
            d.end_reason = "idle timeout"
        finally:
            self._idle = False
        return not d.ending

    def _upgrade_due(self) -> bool:
        """A newer worker version is this run's target (Worker Versioning, PINNED runs).

        Asked at the end of each turn only. A turn parked on an approval or a connection
        finishes on the version it started on (its stream cursor, pending decisions and
        timers belong to that code); the conversation moves when the turn ends. The
        server refreshes the flag as a workflow task starts but wakes no run for it, so
        an idle conversation runs its next turn where it is and moves after it. At most
        one continue-as-new per turn: if the next run cannot leave this version (an
        operator's pinned override), nothing loops.

        Why no ``workflow.patched``: the server records this flag in each workflow
        task's started event, and replay reads it from there. It is False in every
        history an unversioned worker wrote and whenever the run's own version is still
        the target, so those histories take exactly the branches they took before. When
        it is True, the continue-as-new it adds is in the history too.
        """
        return workflow.info().is_target_worker_deployment_version_changed()

    def _should_continue_as_new(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            or self._turns_this_run >= self._policy.max_turns_per_run
            or self._history_bound_reached()
        )

    def _history_bound_reached(self) -> bool:
        """The run's history reached ``max_history_events_per_run``.

        A worker that no longer caches the conversation (evicted, restarted, another
        worker) replays the whole run before its next message or decision can go on, at
        about a millisecond of worker CPU per event; the server's own suggestion comes
        only at thousands of events. Its patch is asked only once the bound is reached
        (taken with the patch level since levels); a run recorded before the bound
        existed is told False there and replays its recorded path.
        """
        bound = self._policy.max_history_events_per_run
        return workflow.info().get_current_history_length() >= bound and self._patched(
            PATCH_BOUNDED_HISTORY
        )

    async def _finish(self) -> ConversationOutcome:
        d = self._d
        for t in d.queue:
            t.status = "cancelled"
            retain_finished(d, t)
        d.queue.clear()
        self._set_state("ended")
        self.stop_deliveries()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ConversationOutcome(
            conversation_id=d.conversation_id, turns=d.next_turn - 1, ended_reason=d.end_reason
        )

    async def _run_turn(self, turn: TurnRecord) -> None:
        d = self._d
        d.current = turn
        self._turns_this_run += 1
        # A turn carried in its pause resumes there: it was sent, and it is waiting.
        cursor, d.pause_cursor = d.pause_cursor, None
        if cursor is None:
            turn.status, turn.started_at = "running", workflow.now()
            self._set_state("running")
        try:
            seg: StreamSegmentResult | None = None
            if cursor is None:
                if d.conversation_id is None:
                    await self._create()
                file_id = await self._upload(turn) if turn.attachment_uri else None
                seg = await self._segment(turn, "send", file_id=file_id)
            while True:
                resumed = None
                if seg is None:
                    assert cursor is not None
                    go_on, resumed = await self._resume_pause(turn, cursor)
                else:
                    self._absorb(turn, seg)
                    if seg.outcome == "finished":
                        turn.status = "completed"
                        break
                    cursor = seg.cursor
                    if seg.confirmation is not None:
                        go_on, resumed = await self._await_skill(turn, seg.confirmation, cursor)
                    else:
                        assert seg.connection is not None, "a pause names what it waits for"
                        go_on = await self._await_connection(turn, seg.connection, cursor)
                if not go_on:
                    turn.status = "cancelled"
                    break
                seg = resumed or await self._segment(turn, "resume", cursor=cursor)
        except StepCancelled:
            turn.status = "cancelled"
            d.left_at_api = (
                f"ended during turn {turn.turn}: the genie's run "
                f"{turn.genie_run_id or '(not started)'} may still be active at the API"
            )
        except (ActivityError, OutageExceeded, OutageOrRefusal) as e:
            turn.status = "failed"
            turn.error = d.last_error = error_info(e, turn=turn.turn, at=workflow.now())
            self._count("genie_turn_failures")
        except ApprovalTimeoutFailure:
            turn.status = "failed"
            turn.error = d.last_error = ErrorInfo(
                type=errors.APPROVAL_TIMED_OUT,
                message="a pause timed out and its policy says 'fail'",
                turn=turn.turn,
                at=workflow.now(),
            )
            self._close_turn(turn)
            self._set_state("failed")
            raise ApplicationError(
                turn.error.message, type=errors.APPROVAL_TIMED_OUT, non_retryable=True
            ) from None
        self._close_turn(turn)
        self._turn_finished(turn)
        self._set_state("idle")

    async def _create(self) -> None:
        """Create the API conversation: lazily, for the first turn, so a conversation
        whose first message is refused creates nothing at the API."""
        d = self._d
        try:
            d.conversation_id = await self._create_conversation()
        except (ActivityError, OutageExceeded) as e:
            d.last_error = error_info(e, turn=None, at=workflow.now())
            for t in [*d.queue, d.current]:
                if t is not None:
                    t.status, t.error = "failed", d.last_error
            self._set_state("failed")
            raise ApplicationError(
                f"the Headless API did not create the conversation: {d.last_error.message}",
                d.last_error.model_dump(mode="json"),
                type=errors.CONVERSATION_CREATE_FAILED,
                non_retryable=True,
            ) from e
        workflow.upsert_search_attributes([GENIE_CONVERSATION_ID.value_set(d.conversation_id)])

    def _close_turn(self, turn: TurnRecord) -> None:
        d = self._d
        turn.finished_at = workflow.now()
        if turn.genie_run_id:
            d.last_run_id = turn.genie_run_id
        d.current = None
        retain_finished(d, turn)
        rules.drop_unused_early(d, turn.turn, workflow.now())

    # ------------------------------------------------------------------ messages

    @workflow.update(description="Queue a user message; returns its turn (and, if asked, waits).")
    async def send_message(self, msg: SendInput) -> MessageAccepted:
        known = self._d.client_ids.get(msg.client_message_id or "")
        turn = known if known is not None else self._enqueue(msg).turn
        result = None
        # A repeat of a send whose turn is no longer kept is answered without it.
        if msg.wait_for != "none" and self._d.turn(turn) is not None:
            result = await self._await_turn(turn, msg.wait_for, None, [])
        return MessageAccepted(turn=turn, duplicate=known is not None, result=result)

    @send_message.validator
    def _validate_send(self, msg: SendInput) -> None:
        _require(msg, SendInput)
        self._refuse_waiter(msg.wait_for)
        if msg.client_message_id and msg.client_message_id in self._d.client_ids:
            # A retry of an accepted message is answered, never refused for the state of
            # the conversation; but its shape is checked, as it enters history again.
            if (shape := rules.message_refusal(msg)) is not None:
                _refuse(shape)
            return
        refusal = rules.send_refusal(self._d, msg)
        if refusal is not None:
            _refuse(refusal)

    @workflow.update(description="Wait until a turn ends or needs a human (one update).")
    async def wait_turn(self, req: WaitInput) -> TurnResult:
        return await self._await_turn(req.turn, req.wait_for, req.timeout_seconds, req.seen)

    @wait_turn.validator
    def _validate_wait(self, req: WaitInput) -> None:
        _require(req, WaitInput)
        self._refuse_waiter(req.wait_for)
        if self._d.turn(req.turn) is None:
            first = self._d.first_known_turn()
            _refuse(
                rules.Refusal(
                    errors.UNKNOWN_TURN,
                    f"turn {req.turn} is not known here (turns {first}..{self._d.next_turn - 1} "
                    "are; older ones are in the API's message history)",
                )
            )

    async def _await_turn(
        self, n: int, wait_for: str, timeout_seconds: float | None, seen: list[str]
    ) -> TurnResult:
        def ready() -> bool:
            # While draining for continue-as-new, answer now: the caller asks the next run.
            t = self._d.turn(n)
            if t is None or self._draining or t.status in TERMINAL_TURN_STATUSES:
                return True
            if wait_for != "attention" or not t.status.startswith("awaiting_"):
                return False
            return any(i not in seen for i in unanswered(self._d, n))

        timeout = timedelta(seconds=timeout_seconds) if timeout_seconds is not None else None
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    ready, timeout=timeout, timeout_summary=f"wait for turn {n}"
                )
        finally:
            self._waiting -= 1
        if self._d.turn(n) is None:
            # Finished longer ago than the retained turns (a late retry of an old send).
            _refuse(rules.Refusal(errors.UNKNOWN_TURN, f"turn {n} is no longer kept here"))
        return turn_result(self._d, n)

    def _refuse_waiter(self, wait_for: str) -> None:
        """Each waiting call holds one of the server's few in-flight updates per run (10):
        beyond ``MAX_WAITERS`` a call that would wait is refused, so decisions and messages
        always find room."""
        if wait_for != "none" and self._waiting >= MAX_WAITERS:
            _refuse(
                rules.Refusal(
                    errors.TOO_MANY_WAITERS,
                    f"{self._waiting} calls already wait on this conversation; wait once "
                    "and share the answer, or read the status query",
                )
            )

    def _enqueue(self, msg: SendMessage) -> TurnRecord:
        d = self._d
        rec = TurnRecord(
            turn=d.next_turn,
            text=msg.text,
            client_message_id=msg.client_message_id,
            attachment_uri=msg.attachment_uri,
            queued_at=workflow.now(),
        )
        d.next_turn += 1
        d.queue.append(rec)
        if (traced := turn_trace(rec.turn)) is not None:
            d.trace_parents[rec.turn] = traced
        if msg.client_message_id:
            remember_client_id(d, msg.client_message_id, rec.turn)
        self._refresh_details()
        return rec

    # ------------------------------------------------------------------ decisions

    @workflow.update(description="Approve or reject a skill confirmation; refusals are audited.")
    async def decide_skill(self, d: SkillInput) -> DecisionRecorded:
        # Refused here, not in a validator: a validator's rejection leaves no event in
        # history, so an audit entry it wrote would vanish on replay. Accepted first, a
        # refused decision is in history and in the audit trail for good.
        refusal = rules.check_skill(self._d, self._policy, d, "update", workflow.now(), _wid())
        if refusal is not None:
            _refuse(refusal)
        rules.record_skill(self._d, d, "update", workflow.now())
        self._refresh_details()
        if d.call_id in self._d.early:
            # Early (opted in): answered when the pause shows up and takes it, or refused
            # when the turn ends without one.
            await workflow.wait_condition(lambda: d.call_id not in self._d.early)
            shown = self._d.approval(d.call_id)
            if shown is None and d.call_id not in self._d.decided:
                _refuse(
                    rules.Refusal(errors.UNKNOWN_CALL_ID, "no confirmation with this call id came")
                )
            if shown is not None and shown.decision is None and d.approver not in shown.approved_by:
                # The item's own rule turned it away when the pause came (take_early).
                refused = rules.early_refusal(self._d, for_skill(self._policy, shown.skill_name), d)
                _refuse(refused or rules.Refusal(errors.ALREADY_DECIDED, "not taken"))
        recorded = DecisionRecorded(
            id=d.call_id,
            decision=rules.verdict(d),
            decided_by=d.approver,
            decided_at=workflow.now(),
        )
        pending, current = self._d.approval(d.call_id), self._d.current
        turn = pending.turn if pending else current.turn if current else None
        if d.wait_for == "none" or turn is None or self._d.turn(turn) is None:
            return recorded
        # The caller has seen this pause: with "attention", only another one answers.
        result = await self._await_turn(turn, d.wait_for, None, [d.call_id])
        return recorded.model_copy(update={"result": result})

    @decide_skill.validator
    def _validate_decide_skill(self, d: SkillInput) -> None:
        _require(d, SkillInput)
        self._refuse_waiter(d.wait_for)
        if self._d.refusals_this_run >= REFUSALS_RECORDED_PER_RUN:
            self._refuse_unrecorded(
                rules.skill_refusal(self._d, self._policy, d, workflow.now(), _wid())
            )

    def _refuse_unrecorded(self, refusal: rules.Refusal | None) -> None:
        """Past ``REFUSALS_RECORDED_PER_RUN``, a refused decision update is turned away by
        its validator, which leaves no event (and no audit entry) behind."""
        if refusal is not None:
            _refuse(
                rules.Refusal(
                    refusal.type,
                    f"{refusal.message} (not recorded: this run has recorded "
                    f"{self._d.refusals_this_run} refusals)",
                )
            )

    @workflow.signal(description="Approve or reject a skill confirmation; refusals are audited.")
    def skill_decision(self, raw: Any = None, *extra: Any) -> None:
        # Decoded leniently (``Any``, any number of payloads) so that even a malformed
        # signal is audited: a handler that raised would fail every replay of it.
        if rules.skill_signal(self._d, self._policy, _one(raw, extra), workflow.now(), _wid()):
            self._refresh_details()

    @workflow.update(description="Connection done/reject; refusals are audited.")
    def decide_connection(self, d: ConnectionInput) -> DecisionRecorded:
        refusal = rules.check_connection(self._d, self._policy, d, "update", workflow.now(), _wid())
        if refusal is not None:
            _refuse(refusal)  # in the handler, for a durable audit (see decide_skill)
        rules.record_connection(self._d, d, "update", workflow.now())
        self._refresh_details()
        return DecisionRecorded(
            id=d.attempt_id, decision=d.action, decided_by=d.actor, decided_at=workflow.now()
        )

    @decide_connection.validator
    def _validate_decide_connection(self, d: ConnectionInput) -> None:
        _require(d, ConnectionInput)
        if self._d.refusals_this_run >= REFUSALS_RECORDED_PER_RUN:
            self._refuse_unrecorded(
                rules.connection_refusal(self._d, self._policy, d, workflow.now(), _wid())
            )

    @workflow.signal(description="Connection done/reject; refusals are audited.")
    def connection_decision(self, raw: Any = None, *extra: Any) -> None:
        if rules.connection_signal(self._d, self._policy, _one(raw, extra), workflow.now(), _wid()):
            self._refresh_details()

    @workflow.update(description="Fetch a fresh auth link for a pending connection (E11).")
    async def refresh_auth_link(self, req: LinkInput) -> AuthLink:
        if (asked := self._d.connection(req.attempt_id)) is not None:
            asked.link_refreshes += 1
        try:
            link = await self._steps.call(
                LINK,
                GenieActivities.get_auth_link,
                AuthLinkInput(**self._scope(), attempt_id=req.attempt_id),
                summary=f"fresh auth link for {req.attempt_id} (E11)",
                ride_outage=False,
            )
        except ActivityError as e:
            info = error_info(e, turn=None, at=workflow.now())
            if info.status == 404:
                return AuthLink(attempt_id=req.attempt_id, status="unavailable")
            _refuse(rules.Refusal(info.type, f"the API did not give a link: {info.message}"))
        pending = self._d.connection(req.attempt_id)
        if pending is not None:
            if link.status == "authorized":
                if pending.decision is None and req.attempt_id not in self._d.detected:
                    self._d.detected.append(req.attempt_id)
            else:
                pending.auth_url, pending.auth_expires_at = link.url, link.expires_at
            self._refresh_details()
        return AuthLink(attempt_id=req.attempt_id, **link.model_dump())

    @refresh_auth_link.validator
    def _validate_refresh(self, req: LinkInput) -> None:
        _require(req, LinkInput)
        pending = self._d.connection(req.attempt_id)
        if pending is None:
            _refuse(
                rules.Refusal(
                    errors.UNKNOWN_ATTEMPT_ID, rules.unknown_attempt(self._d, req.attempt_id)
                )
            )
        if pending.link_refreshes >= MAX_LINK_REFRESHES:
            _refuse(
                rules.Refusal(
                    errors.LINK_REFRESHES_EXHAUSTED,
                    f"{pending.link_refreshes} fresh links were fetched for attempt "
                    f"{req.attempt_id} already; use the last one, or decide the connection",
                )
            )

    @workflow.signal(description="End the conversation: now, cancelling any running step.")
    def end_conversation(self, raw: Any = None, *extra: Any) -> None:
        d = self._d
        try:
            req = EndConversation.model_validate(_one(raw, extra) or {})
        except ValidationError as e:
            rules.audit_refusal(
                d,
                "end_conversation",
                None,
                None,
                None,
                "signal",
                rules.invalid_input(e),
                workflow.now(),
            )
            return
        if not d.ending and d.state not in ("ended", "failed"):
            d.end_reason = req.reason or "ended by request"
            rules.system_event(
                d, "end_conversation", None, "client", None, d.end_reason, "signal", workflow.now()
            )

    # ------------------------------------------------------------------ queries

    @workflow.query(description="Where the conversation stands and what it waits for.")
    def status(self) -> ConversationStatus:
        d = self._d
        st = ConversationStatus(
            state=d.state,
            conversation_id=d.conversation_id,
            genie_handle=self._start.genie_handle,
            user_id=self._start.user_id,
            turn=d.next_turn - 1,
            queued_turns=len(d.queue),
            pending_approvals=list(d.approvals),
            pending_connections=list(d.connections),
            awaiting_since=d.awaiting_since,
            last_error=d.last_error,
            api_unreachable_since=d.api_unreachable_since,
            audit=rules.audit_trail(d),
            audit_dropped=d.audit_dropped,
            approvers=list(self._policy.approvers),
            notifications=list(d.deliveries.values()),
            ended_reason=d.end_reason,
        )
        return fit_status(st, QUERY_BUDGET_BYTES)

    @workflow.query(description="Recent turns with the user's text and the genie's replies.")
    def transcript(self, req: TranscriptQuery | None = None) -> Transcript:
        # The input is optional, so `temporal workflow query --name transcript` works.
        since = (req.since_turn if req else None) or 0
        return transcript(self._d, since, QUERY_BUDGET_BYTES)


def _wid() -> str:
    return workflow.info().workflow_id


def _require(value: object, model: type) -> None:
    """An update's input is its model. The SDK hands a ``null`` payload to the handler as
    None whatever the type, and a wrong number of payloads as they come; refused here,
    in the validator, they never reach the handler (where an error fails the task)."""
    if not isinstance(value, model):
        name = model.__mro__[1].__name__  # the public model, not its _Typed subclass
        _refuse(
            rules.Refusal(
                errors.INVALID_INPUT, f"expected one {name} object, got {type(value).__name__}"
            )
        )


def _one(raw: object, extra: tuple[object, ...]) -> object:
    """A signal's one payload; more than one is kept as a list, which no model accepts, so
    it is audited as invalid input like any other malformed signal."""
    return [raw, *extra] if extra else raw


def _refuse(refusal: rules.Refusal) -> NoReturn:
    raise ApplicationError(refusal.message, type=refusal.type, non_retryable=True)
