"""One turn of a conversation: send, stream, and the human waits in between.

``TurnRunner`` is the I/O half of ``GenieConversation`` (the handlers and queries are in
``conversation.py``). A turn is a sequence of stream segments; each ends at a pause for a
human or at the end of the genie's run. At a pause the runner waits in *workflow* time,
holding no activity, socket or worker memory, until a decision is recorded, the deadline
passes, or the conversation ends; then it posts the decision and streams on.

Both human waits use one deadline helper (``_until``): the deadline is a hard line in
workflow time, and the handlers refuse any decision recorded at or after it
(``DeadlineExpired``), so a decision and a fired timer handled in the same workflow task
can never both count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities import DECISION_REFUSED, GenieActivities
    from activities.models import (
        MAX_TURN_MESSAGE_CHARS,
        ConnectionRequest,
        CreateConversationInput,
        PostSkillDecisionInput,
        ProbeConnectionInput,
        RejectConnectionInput,
        SkillConfirmation,
        SkillVerdict,
        StreamSegmentInput,
        StreamSegmentResult,
        UploadAttachmentInput,
        bounded_parameters,
    )
    from genie_api import PauseStatus, RunCursor

from workflows import _decisions as rules
from workflows._backoff import age_ruled, doubled_interval
from workflows._notices import Notices
from workflows._patches import (
    PATCH_DECISION_WITH_STREAM,
    PATCH_EARLY_ITEM_RULE,
    PATCH_PROBE_BY_AGE,
    patched,
)
from workflows._policy import ItemPolicy, for_connection, for_skill
from workflows._state import ConversationData
from workflows._steps import (
    CONTROL,
    PROBE,
    STREAM,
    UPLOAD,
    CredentialNotAccepted,
    OutageExceeded,
    StepCancelled,
    Steps,
    error_info,
)
from workflows.models import (
    AuditKind,
    ConversationPolicy,
    ConversationStart,
    DecisionProgress,
    PendingApproval,
    PendingConnection,
    TurnRecord,
)

VERIFY_DELAYS = (timedelta(seconds=2), timedelta(seconds=5))
"""After a human says a connection is done, the run may take a moment to move on:
probe again after these delays before calling the claim false."""


class ApprovalTimeoutFailure(Exception):
    """``on_approval_timeout="fail"``: unwinds the turn so ``run`` can fail the workflow."""


class TurnRunner(Notices):
    """The run loop's I/O; state lives in ``self._d`` (one ``ConversationData``)."""

    _d: ConversationData
    _start: ConversationStart
    _policy: ConversationPolicy
    _steps: Steps
    _roll_pause: bool
    """Set by ``_watch_pause_growth`` once a pause took the run's history to its bound:
    the pause continues as new (``_carry_pause``) as soon as it is only waiting."""
    _probe_every: timedelta | None = None
    """The connection probe interval reached, carried by a pause rollover."""

    async def _carry_pause(self, cursor: RunCursor) -> None:
        """Continue as new in this pause (``GenieConversation``); returns only if an end
        arrived meanwhile."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def _ending(self) -> bool:
        return self._d.ending

    def _patched(self, patch_id: str) -> bool:
        """Whether this run takes the change ``patch_id`` (``_patches``): settled by the
        conversation's patch level, else asked with ``workflow.patched``."""
        return patched(self._d.patch_level, patch_id)

    async def _until(self, cond: Callable[[], bool], deadline: datetime, summary: str) -> bool:
        """Wait for ``cond`` until ``deadline`` in workflow time; whether it holds."""
        remaining = deadline - workflow.now()
        if remaining > timedelta(0) and not cond():
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(cond, timeout=remaining, timeout_summary=summary)
        return cond()

    # ------------------------------------------------------------------ API steps

    async def _create_conversation(self) -> str:
        created = await self._steps.call(
            CONTROL,
            GenieActivities.create_conversation,
            CreateConversationInput(**self._scope()),
            summary="create conversation (E1)",
        )
        return created.conversation_id

    async def _upload(self, turn: TurnRecord) -> str:
        assert self._d.conversation_id is not None and turn.attachment_uri is not None
        up = await self._steps.call(
            UPLOAD,
            GenieActivities.upload_attachment,
            UploadAttachmentInput(
                **self._scope(),
                conversation_id=self._d.conversation_id,
                attachment_uri=turn.attachment_uri,
            ),
            summary=f"turn {turn.turn}: upload attachment (E7)",
            turn=turn.turn,
            cancel_when=self._ending,
        )
        return up.file_id

    async def _segment(
        self,
        turn: TurnRecord,
        mode: Literal["send", "resume"],
        *,
        file_id: str | None = None,
        cursor: RunCursor | None = None,
        decision: SkillVerdict | None = None,
    ) -> StreamSegmentResult:
        assert self._d.conversation_id is not None
        what = "send and stream (E5)" if mode == "send" else "resume stream (E8/E9)"
        if decision is not None:
            verdict = "approval" if decision.approved else "rejection"
            what = f"post {verdict} for {decision.call_id} (E10), resume stream (E8/E9)"
        inp = StreamSegmentInput(
            **self._scope(),
            conversation_id=self._d.conversation_id,
            turn=turn.turn,
            mode=mode,
            message=turn.text if mode == "send" else None,
            file_id=file_id,
            cursor=cursor,
            previous_run_id=self._d.last_run_id,
            messages_so_far=turn.message_count,
            decision=decision,
        )
        return await self._steps.call(
            STREAM,
            GenieActivities.stream_segment,
            inp,
            summary=f"turn {turn.turn}: {what}",
            turn=turn.turn,
            cancel_when=self._ending,
            # Carrying a decision, any failure goes back to ``_await_skill`` at once.
            ride_outage=decision is None,
            again=inp.model_copy(update={"may_have_posted": True}) if mode == "send" else None,
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

    async def _post(
        self, turn: TurnRecord, item: Any, activity: Any, arg: Any, summary: str
    ) -> str | None:
        """Post ``item``'s decision; None once the API confirmed it, else why it did not.

        Retries ride out outages (``Steps``) while the card shows the last error; a final
        refusal, or an outage longer than the policy allows, hands the item back.
        """
        progress: DecisionProgress = item.decision

        def on_retry(info: Any) -> None:
            progress.attempts += 1
            progress.last_error = f"{info.type}: {info.message}"[:500]
            self._refresh_details()

        try:
            # Ending, a decision (often the end's own rejection) gets the activity's
            # own retries but no outage riding, so an end is never held for long.
            await self._steps.call(
                CONTROL,
                activity,
                arg,
                summary=summary,
                turn=turn.turn,
                on_retry=on_retry,
                ride_outage=lambda: not self._d.ending,
            )
        except CredentialNotAccepted as e:
            info = error_info(e, turn=turn.turn, at=workflow.now())
            return info.message
        except OutageExceeded as e:
            info = error_info(e, turn=turn.turn, at=workflow.now())
            return f"the API stayed unreachable past api_outage_timeout ({info.message})"
        except ActivityError as e:
            return _refusal(turn, e)
        return None

    # ------------------------------------------------------------------ skill confirmation

    async def _await_skill(
        self, turn: TurnRecord, conf: SkillConfirmation, cursor: RunCursor
    ) -> tuple[bool, StreamSegmentResult | None]:
        """Wait for a decision on ``conf`` and get it applied: whether the turn goes on
        (False if the conversation ends), and the segment that followed the decision
        when the decision was posted by it (``_post_and_resume``)."""
        d, now = self._d, workflow.now()
        item = for_skill(self._policy, conf.skill_name)
        # Bounded again: segments recorded before the activity bounded them replay.
        params, shortened = bounded_parameters(conf.skill_parameters)
        p = PendingApproval(
            call_id=conf.call_id,
            kind=conf.kind,
            skill_name=conf.skill_name,
            skill_id=conf.skill_id,
            skill_parameters=params,
            parameters_shortened=conf.parameters_shortened or shortened,
            turn=turn.turn,
            requested_at=now,
            deadline=now + item.timeout,
            required_approvals=item.required_approvals,
            rule=item.rule,
            approvers=list(item.approvers),
            approver_groups=list(item.approver_groups),
        )
        d.approvals.append(p)
        # The item's own rule over an early decision changes what follows only where the
        # decision breaks it, so only there is the patch asked (and its marker recorded).
        applies = not rules.early_meets_rule(d, conf.call_id, item) and self._patched(
            PATCH_EARLY_ITEM_RULE
        )
        rules.take_early(d, conf.call_id, item if applies else None, now)
        if item.auto is not None and p.decision is None:
            self._auto_decide(p, item)
        self._notify(item.notify, "decided_by_policy" if item.auto else "pause", p)
        return await self._decide_skill_item(turn, p, item, cursor)

    async def _decide_skill_item(
        self,
        turn: TurnRecord,
        p: PendingApproval,
        item: ItemPolicy,
        cursor: RunCursor,
    ) -> tuple[bool, StreamSegmentResult | None]:
        """The wait for ``p``'s decision and its posting: from the pause's start, or in
        the run that a pause rollover started (``_resume_pause``)."""
        d = self._d
        timed_out = False
        while True:
            self._awaiting(turn, "awaiting_approval")
            await self._until(
                lambda: p.decision is not None or d.ending or self._roll_pause,
                p.deadline,
                f"approval of {p.skill_name or 'skill'} ({p.call_id})",
            )
            if self._rolling(p):
                await self._carry_pause(cursor)  # returns only if an end arrived meanwhile
                continue
            if self._escalate(p, p.call_id, item):
                continue
            if p.decision is None:
                timed_out = self._policy_decision(p, p.call_id, "rejected", "approval")
            else:
                self._count("genie_approvals", {"decision": p.decision.verdict})
            self._awaiting(turn, None)
            progress = p.decision
            assert progress is not None and d.conversation_id is not None
            verdict = SkillVerdict(
                call_id=p.call_id,
                approved=progress.verdict == "approved",
                reason=progress.reason,
                kind=p.kind,
            )
            failure: str | None = None
            tried = False  # whether a resume segment may have posted the decision
            if (
                not d.ending
                and not (timed_out and item.on_timeout == "fail")
                and self._patched(PATCH_DECISION_WITH_STREAM)
            ):
                resumed = await self._post_and_resume(turn, verdict, cursor)
                if isinstance(resumed, StreamSegmentResult):
                    self._settle(d.approvals, p, p.call_id, progress, None)
                    return True, resumed
                failure, tried = resumed, True
            if failure is None:
                failure = await self._post(
                    turn,
                    p,
                    GenieActivities.post_skill_decision,
                    PostSkillDecisionInput(
                        **self._scope(),
                        conversation_id=d.conversation_id,
                        **verdict.model_dump(),
                        genie_run_id=cursor.genie_run_id,
                        messages_seen=turn.message_count,
                        may_have_posted=tried,
                    ),
                    f"turn {turn.turn}: post {progress.verdict} for {p.call_id} (E10)",
                )
            if self._settle(d.approvals, p, p.call_id, progress, failure):
                break
        if timed_out and item.on_timeout == "fail":
            raise ApprovalTimeoutFailure
        return not d.ending, None

    async def _post_and_resume(
        self, turn: TurnRecord, verdict: SkillVerdict, cursor: RunCursor
    ) -> StreamSegmentResult | str | None:
        """Post the decision and stream on in one activity: the segment that followed,
        the API's final refusal of the decision (as ``_post`` words it: the item is handed
        back, never posted again unasked), or None to post it on its own.

        The common case costs one activity and one workflow task fewer than posting and
        then resuming. Any other failure of that activity (the API unreachable, the stream
        failing after the post, the conversation ending) returns None, and the decision
        is posted by ``_post`` as before, with its outage riding and its refusals, told
        that it may have been posted (``may_have_posted``): if the run is past the pause
        it is not posted again, and counts as applied. The turn then resumes as after any
        posted decision. Called only where ``PATCH_DECISION_WITH_STREAM`` applies: runs
        recorded before it post with ``post_skill_decision`` alone.
        """
        try:
            return await self._segment(turn, "resume", cursor=cursor, decision=verdict)
        except ActivityError as e:
            refused = isinstance(e.cause, ApplicationError) and e.cause.type == DECISION_REFUSED
            return _refusal(turn, e) if refused else None
        except StepCancelled:
            return None

    def _auto_decide(self, p: PendingApproval, item: ItemPolicy) -> None:
        """The rule decides at once; audited as ``policy:<match>``, still notified."""
        verdict: Literal["approved", "rejected"] = (
            "approved" if item.auto == "approve" else "rejected"
        )
        actor, now = f"policy:{item.rule}", workflow.now()
        p.decision = DecisionProgress(
            verdict=verdict, actor=actor, via="policy", reason=item.auto_reason, at=now
        )
        rules.system_event(
            self._d, "skill_decision", p.call_id, actor, verdict, item.auto_reason, "policy", now
        )

    def _rolling(self, item: PendingApproval | PendingConnection) -> bool:
        """Whether the pause on ``item`` moves to a new run now: its history reached the
        bound while the pause only waits (no decision to post, no end, no deadline to
        act on: those go first, in this run)."""
        return (
            self._roll_pause
            and item.decision is None
            and not self._d.ending
            and workflow.now() < item.deadline
        )

    async def _resume_pause(
        self, turn: TurnRecord, cursor: RunCursor
    ) -> tuple[bool, StreamSegmentResult | None]:
        """In a run a pause rollover started: wait for the carried item as the last run
        did (its deadline, escalation and decision are in the item), then go on as any
        pause does. Notifications the last run was still sending are sent again, with
        the same ``webhook-id``."""
        d = self._d
        every, d.pause_probe_every = d.pause_probe_every, None
        for p in d.approvals:
            if p.turn == turn.turn:
                self._notify_again(p)
                item = for_skill(self._policy, p.skill_name)
                return await self._decide_skill_item(turn, p, item, cursor)
        for c in d.connections:
            if c.turn == turn.turn:
                self._notify_again(c)
                item_c = for_connection(self._policy, c.connector_name)
                go_on = await self._decide_connection_item(turn, c, item_c, cursor, every)
                return go_on, None
        return not d.ending, None  # nothing of this turn waits (never carried so): stream on

    def _escalate(self, item: Any, ref: str, policy: ItemPolicy) -> bool:
        """At the first deadline under ``escalate``: tell the escalation endpoints and
        wait ``escalation_timeout`` more. Whether it escalated (and so waits again)."""
        if item.decision is not None or self._d.ending or item.escalated:
            return False
        if policy.on_timeout != "escalate":
            return False
        now = workflow.now()
        item.escalated = True
        item.deadline = now + policy.escalation_timeout
        rules.system_event(
            self._d,
            "escalation",
            ref,
            "policy",
            None,
            f"no decision in time; waiting {policy.escalation_timeout} more",
            "policy",
            now,
        )
        self._notify(policy.escalate_to, "escalation", item)
        return True

    def _awaiting(
        self, turn: TurnRecord, state: Literal["awaiting_approval", "awaiting_connection"] | None
    ) -> None:
        turn.status = state or "running"
        self._set_state(state or "running")

    def _policy_decision(self, item: Any, ref: str, verdict: Any, what: str) -> bool:
        """Nobody decided before the deadline, or the conversation is ending: the policy
        decides (a rejection). Whether it was the deadline."""
        d = self._d
        timed_out = not d.ending
        reason = f"{what} timed out" if timed_out else f"conversation ended: {d.end_reason}"
        now = workflow.now()
        item.decision = DecisionProgress(
            verdict=verdict, actor="policy", via="policy", reason=reason, at=now
        )
        if timed_out:
            self._count(f"genie_{what}_timeouts")
            kind: AuditKind = "approval_timeout" if what == "approval" else "connection_timeout"
            rules.system_event(d, kind, ref, "policy", verdict, reason, "policy", now)
        return timed_out

    def _settle(
        self, items: list[Any], item: Any, ref: str, progress: DecisionProgress, failure: str | None
    ) -> bool:
        """After a post: applied (True), or handed back to be decided again (False)."""
        if failure is None:
            items.remove(item)
            rules.applied(self._d, ref, progress, workflow.now())
            return True
        rules.refused_by_api(item, self._d, failure, workflow.now())
        if progress.via == "policy":
            # Nobody is left to decide again: the turn fails with the reason.
            items.remove(item)
            raise OutageOrRefusal(failure)
        return False

    # ------------------------------------------------------------------ runtime connection

    async def _await_connection(
        self, turn: TurnRecord, req: ConnectionRequest, cursor: RunCursor
    ) -> bool:
        """Wait until the user has authenticated (or not); False if the conversation ends.

        A human's "done" is believed only if the API does not still show the run parked
        on this connection; a false one puts the item back, with a note.
        """
        d, now, aid = self._d, workflow.now(), req.attempt_id
        item = for_connection(self._policy, req.connector_name)
        c = PendingConnection(
            attempt_id=aid,
            connector_name=req.connector_name,
            auth_url=req.auth_url,
            auth_expires_at=req.auth_expires_at,
            turn=turn.turn,
            requested_at=now,
            deadline=now + item.timeout,
        )
        d.connections.append(c)
        self._notify(item.notify, "pause", c)
        return await self._decide_connection_item(turn, c, item, cursor)

    async def _decide_connection_item(
        self,
        turn: TurnRecord,
        c: PendingConnection,
        item: ItemPolicy,
        cursor: RunCursor,
        probe_every: timedelta | None = None,
    ) -> bool:
        """The wait for ``c`` and what follows it: from the pause's start, or in the run
        that a pause rollover started (``_resume_pause``, with the probe interval the
        last run reached)."""
        d, aid = self._d, c.attempt_id
        while True:
            self._awaiting(turn, "awaiting_connection")
            await self._wait_connection(turn, c, cursor, probe_every)
            probe_every = None  # the carried interval counts once; an escalation restarts
            if self._rolling(c) and aid not in d.detected:
                await self._carry_pause(cursor)  # returns only if an end arrived meanwhile
                continue
            if self._escalate(c, aid, item):
                continue
            self._awaiting(turn, None)
            timed_out = False
            if aid in d.detected:
                d.detected.remove(aid)
                c.decision = DecisionProgress(
                    verdict="done", actor="api", via="api", at=workflow.now()
                )
            elif c.decision is None:
                timed_out = self._policy_decision(c, aid, "reject", "connection")
            progress = c.decision
            assert progress is not None
            if progress.via == "api":
                failure = None
            elif progress.verdict == "done":
                failure = await self._verify_done(turn, aid, cursor)
            else:
                failure = await self._post(
                    turn,
                    c,
                    GenieActivities.reject_connection,
                    RejectConnectionInput(**self._scope(), attempt_id=aid, reason=progress.reason),
                    f"turn {turn.turn}: reject connection {aid} (E12)",
                )
            if self._settle(d.connections, c, aid, progress, failure):
                if timed_out and item.on_timeout == "fail":
                    raise ApprovalTimeoutFailure  # rejected at the API first, as for skills
                return not d.ending

    async def _wait_connection(
        self,
        turn: TurnRecord,
        c: PendingConnection,
        cursor: RunCursor,
        probe_every: timedelta | None = None,
    ) -> None:
        """Until a decision, the deadline, an end or a pause rollover. Production does
        not reliably send ``runtime_connection.auth_success``, so the API is also probed
        on a backing-off timer for a user who connected without anyone saying so."""
        d, aid = self._d, c.attempt_id
        interval = probe_every or self._policy.connection_poll_interval
        self._probe_every = interval

        def settled() -> bool:
            return c.decision is not None or aid in d.detected or d.ending or self._roll_pause

        while not settled() and workflow.now() < c.deadline:
            if interval <= timedelta(0):
                await self._until(settled, c.deadline, f"connection {aid}")
                return
            tick = min(c.deadline, workflow.now() + interval)
            if await self._until(settled, tick, f"connection {aid}") or tick >= c.deadline:
                return
            moved = await self._probe(turn, aid, cursor) == PauseStatus.MOVED_ON
            if moved and c.decision is None:
                d.detected.append(aid)
                rules.system_event(
                    d,
                    "connection_detected",
                    aid,
                    "api",
                    "done",
                    "the run moved on",
                    "api",
                    workflow.now(),
                )
            waited = workflow.now() - c.requested_at
            interval = age_ruled(
                doubled_interval(interval), waited, self._patched, PATCH_PROBE_BY_AGE
            )
            self._probe_every = interval

    async def _verify_done(self, turn: TurnRecord, aid: str, cursor: RunCursor) -> str | None:
        """None if the API does not contradict "done"; else why the claim is false."""
        for delay in (timedelta(0), *VERIFY_DELAYS):
            if delay:
                await workflow.sleep(delay, summary=f"verify connection {aid}")
            if await self._probe(turn, aid, cursor) != PauseStatus.PARKED:
                return None
        return "the API still waits for this connection (the run is parked on it)"

    async def _probe(self, turn: TurnRecord, aid: str, cursor: RunCursor) -> PauseStatus:
        """Where the run stands on ``aid``, per the API; ``unknown`` if it cannot say."""
        assert self._d.conversation_id is not None
        try:
            probe = await self._steps.call(
                PROBE,
                GenieActivities.probe_connection,
                ProbeConnectionInput(
                    **self._scope(),
                    conversation_id=self._d.conversation_id,
                    attempt_id=aid,
                    genie_run_id=cursor.genie_run_id,
                    messages_so_far=turn.message_count,
                ),
                summary=f"turn {turn.turn}: has the user connected? (E3)",
                ride_outage=False,
            )
        except ActivityError:
            # A failed probe is just a probe: the next one, or a human, decides.
            return PauseStatus.UNKNOWN
        return probe.status


class OutageOrRefusal(Exception):
    """A policy decision (timeout, end) could not be applied: the turn fails with this."""


def _refusal(turn: TurnRecord, e: ActivityError) -> str:
    """Why the API did not take a decision, for the item's note and the audit."""
    info = error_info(e, turn=turn.turn, at=workflow.now())
    code = f" ({info.status} {info.error_code})" if info.status else ""
    return f"the API refused it{code}: {info.message}"
