"""The stream segment: read one run from the message POST (or a cursor) to a pause or end.

Durability rules this file implements (how long it keeps trying is stated once, in
``activities/_options.py``):

- Progress (the run cursor plus this segment's messages so far) is heartbeated as one
  consistent snapshot, so a retry resumes exactly after the last event it accounts for.
- The user message is posted at most once per turn. A retry that has no run id does not
  know whether the previous attempt's POST landed, so it asks the API first
  (``RunInspector.run_newer_than``): any run newer than the previous turn's is this
  turn's, because the workflow is the conversation's only sender.
- When the stream says nothing for a while, or the reader gives up on it, the segment
  asks whether the run ended without the stream saying so (production's
  runtime-connection quirk; ``RunInspector.check_run``), and if so completes it from the
  message history (E6). Only the run's own evidence counts, never a coarse ``idle``; a
  pause the stream never delivered (E3 shows the run parked on it) ends the segment at
  that pause instead.
- ``409 conversation_busy`` on the post: if the active run is this turn's (an earlier
  attempt's post landed) it is resumed; if it is an earlier turn's, the segment fails
  retryably and waits for it to end (``RunInspector.busy_run``), never finally.
- A 401/403 to a credential this worker has never had accepted goes to the workflow,
  which retries while the key may still be settling (``credential_refusal``).
- On worker shutdown the segment checkpoints and fails fast with a retryable error, so
  another worker resumes it at once instead of after a heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._errors import (
    BUSY_WITH_EARLIER_RUN,
    DECISION_NOT_POSTED,
    DECISION_REFUSED,
    STREAM_STALLED,
    WORKER_SHUTDOWN,
    credential_refusal,
    to_application_error,
)
from activities._options import (
    DEFAULT_AUTH_SETTLE_SECONDS,
    HEARTBEAT_EVERY,
    HEARTBEAT_IDLE_EVERY,
    MAX_MALFORMED_RETRIES,
)
from activities._progress import SegmentProgress, require, restore
from activities.models import (
    MAX_AUTH_URL_CHARS,
    MAX_NAME_CHARS,
    MAX_SKILL_ERROR_CHARS,
    MAX_SKILL_EVENTS,
    MAX_TURN_MESSAGE_CHARS,
    ConnectionRequest,
    SegmentOutcome,
    SkillActivity,
    SkillConfirmation,
    StreamSegmentInput,
    StreamSegmentResult,
    bounded_parameters,
)
from genie_api import (
    CONVERSATION_BUSY,
    AgentMessage,
    BusinessApprovalRequired,
    ConflictError,
    GenieAPIError,
    GenieClient,
    GenieEvent,
    ProcessingFinished,
    ProtocolError,
    RunCheck,
    RunCursor,
    RunInspector,
    RunReader,
    RuntimeConnectionAuthRequired,
    SkillCompleted,
    SkillConfirmationRequired,
    SkillFailed,
    SkillRunning,
    SkillStopped,
    StreamResumeError,
)

log = logging.getLogger("genie_worker.stream")

# MAX_MALFORMED_RETRIES lives in activities/_options.py; re-exported for its old importers.
__all__ = ["MAX_MALFORMED_RETRIES", "run_segment"]


class StreamSegment:
    """One attempt of the ``stream_segment`` activity."""

    def __init__(
        self,
        client: GenieClient,
        inp: StreamSegmentInput,
        *,
        silence_check_seconds: float,
        auth_settle_seconds: float = DEFAULT_AUTH_SETTLE_SECONDS,
    ) -> None:
        self._client = client
        self._silence_check = silence_check_seconds
        self._auth_settle = auth_settle_seconds
        self._inp = inp
        info = activity.info()
        restored = restore(info.heartbeat_details)
        self._resumed_from_heartbeat = restored is not None
        self._p = restored or SegmentProgress(
            cursor=inp.cursor or RunCursor(conversation_id=inp.conversation_id)
        )
        # A heartbeat written before ``delivered`` existed counts only its messages.
        self._p.delivered = max(self._p.delivered, len(self._p.messages))
        self._attempt = info.attempt
        # Whether an earlier attempt (or activity) of this turn may have posted already.
        self._may_have_posted = (
            self._attempt > 1 or self._resumed_from_heartbeat or inp.may_have_posted
        )
        self._events_at_start = self._p.events
        self._last_event_at = time.monotonic()
        # The first heartbeat waits HEARTBEAT_EVERY: the SDK sends a first heartbeat at
        # once, and a short turn (most of them) would pay a billable action for a
        # checkpoint nobody reads. A worker dying in that second costs a retry from the
        # input cursor, which reconciles before posting (``may_have_posted``).
        self._last_beat = time.monotonic()
        self._beaten = (self._p.events, self._p.reconnects)
        self._runs = RunInspector(
            client, inp.genie_handle, inp.conversation_id, user_id=inp.user_id
        )

    async def post_decision(self, post: Callable[[], Awaitable[object]]) -> None:
        """Post the decision this segment carries, unless an earlier attempt did.

        A failure ends the segment before it streams, final: the API's refusal as it is
        (``DecisionRefusedByApi``: the workflow hands the item back), anything else as
        ``DecisionNotPosted``, and the workflow posts the decision on its own at once,
        with the retries, outage riding and refusals of ``post_skill_decision``.

        Not checkpointed on its own: the next heartbeat (or a failure's) carries
        ``decision_posted``, and a retry that finds none asks the API whether the run
        moved past the pause before posting again (``_post_verdict``), since production
        answers a repeated decision with a 409 that does not say "already resolved".
        """
        if self._p.decision_posted:
            return
        try:
            await post()
        except ApplicationError as e:
            if e.type == DECISION_REFUSED:
                raise
            raise _not_posted(e) from None
        except Exception as e:
            raise _not_posted(e) from None
        self._p.decision_posted = True

    async def run(self) -> StreamSegmentResult:
        consumer = asyncio.create_task(self._consume())
        watcher = asyncio.create_task(self._watch())
        try:
            done, _ = await asyncio.wait({consumer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            try:
                return await next(iter(done))
            except StreamResumeError as e:
                # Before handing over: the run may have ended, or parked on a pause, where
                # no stream shows it (production); then no later attempt would see more.
                # The watcher stops first, so no two checks add the same messages.
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                check = await self._check_api()
                if isinstance(check, StreamSegmentResult):
                    return check
                if check is not None:
                    raise StreamResumeError(
                        f"{e.message}; {check}", cursor=e.cursor, **_resume_kwargs(e)
                    ) from None
                raise
        except GenieAPIError as e:
            refusal = credential_refusal(
                e,
                accepted_before=self._client.credential_accepted,
                settle_seconds=self._auth_settle,
            )
            if refusal is not None:
                self._beat(force=True)
                raise refusal from None
            retry = None
            if (
                isinstance(e, ProtocolError)
                and not e.retryable
                and self._p.malformed < MAX_MALFORMED_RETRIES
            ):
                # Counted in the heartbeat, so the bound holds across attempts.
                self._p.malformed += 1
                retry = True
                log.warning(
                    "turn %s of %s: malformed data from the API (%s); resuming from the "
                    "cursor (retry %d of %d)",
                    self._inp.turn,
                    self._inp.conversation_id,
                    e,
                    self._p.malformed,
                    MAX_MALFORMED_RETRIES,
                )
            self._beat(force=True)
            raise to_application_error(
                e, retryable=retry, genie_run_id=self._p.cursor.genie_run_id
            ) from None
        except BaseException:
            # Cancellation or a crash path: leave the freshest cursor behind for the retry.
            self._beat(force=True)
            raise
        finally:
            for t in (consumer, watcher):
                t.cancel()
            await asyncio.gather(consumer, watcher, return_exceptions=True)
            self._record_metrics()

    def _record_metrics(self) -> None:
        """Per attempt: what ops watch to see streams struggling (served on /metrics)."""
        meter = activity.metric_meter()
        meter.create_counter("genie_stream_events", "run events consumed by stream segments").add(
            self._p.events - self._events_at_start
        )
        meter.create_counter(
            "genie_stream_reconnects", "E8 re-attachments and E9 fallbacks after a cut"
        ).add(self._p.reconnects)
        if self._attempt > 1:
            meter.create_counter(
                "genie_stream_segment_retries", "stream segments resumed by a new attempt"
            ).add(1)

    # ------------------------------------------------------------------ reading

    async def _consume(self) -> StreamSegmentResult:
        reader, events = await self._open()
        while True:
            try:
                async for ev in events:
                    self._p.cursor = reader.cursor
                    self._p.reconnects = reader.reconnects
                    self._last_event_at = time.monotonic()
                    self._p.events += 1
                    outcome = self._apply(ev)
                    if outcome is not None:
                        return self._result(outcome, ev)
                    self._beat()
            except ConflictError as e:
                if e.error_code != CONVERSATION_BUSY or reader.cursor.genie_run_id is not None:
                    raise
                # The post was refused: the conversation runs another run. Ours? Resume it.
                reader, events = await self._resume_busy(e)
                continue
            # A reader ends only after processing.finished; anything else is a client bug.
            raise ApplicationError(
                "the run stream ended without processing.finished", type=STREAM_STALLED
            )

    async def _resume_busy(self, e: ConflictError) -> tuple[RunReader, AsyncIterator[GenieEvent]]:
        """After ``409 conversation_busy`` on the post: resume the active run if it is this
        turn's; otherwise fail retryably until the earlier turn's run has ended."""
        inp = self._inp
        assert inp.message is not None
        busy = await self._runs.busy_run(
            inp.message, previous_run_id=inp.previous_run_id, may_have_posted=self._may_have_posted
        )
        if busy.ours and busy.run_id is not None:
            log.info(
                "turn %s of %s: busy with this turn's own run %s; resuming it, not re-posting",
                inp.turn,
                inp.conversation_id,
                busy.run_id,
            )
            self._p.cursor = self._p.cursor.model_copy(update={"genie_run_id": busy.run_id})
            reader = self._reader()
            return reader, reader.resume()
        run = f"run {busy.run_id}" if busy.run_id else "a run"
        log.warning(
            "turn %s of %s: the conversation is busy with %s of an earlier turn (state %s, "
            "last event %s); waiting for it to end before posting",
            inp.turn,
            inp.conversation_id,
            run,
            busy.state,
            busy.last_event_type,
        )
        raise ApplicationError(
            f"the conversation is busy with {run} of an earlier turn (state "
            f"{busy.state or '?'}, last event {busy.last_event_type or 'none'}); this "
            f"turn's message is posted once that run has ended [request_id="
            f"{e.request_id or 'none'}]",
            {
                "status": e.status,
                "error_code": e.error_code,
                "request_id": e.request_id,
                "endpoint": e.endpoint,
                "genie_run_id": busy.run_id,
            },
            type=BUSY_WITH_EARLIER_RUN,
            non_retryable=False,
        )

    async def _open(self) -> tuple[RunReader, AsyncIterator[GenieEvent]]:
        """Post the message, or resume the run an earlier attempt (or segment) started."""
        inp = self._inp
        if inp.mode == "send" and self._p.cursor.genie_run_id is None:
            if self._may_have_posted:
                run_id = await self._runs.run_newer_than(inp.previous_run_id, text=inp.message)
                if run_id is not None:
                    log.info(
                        "turn %s of %s: message already posted (run %s); resuming, not re-posting",
                        inp.turn,
                        inp.conversation_id,
                        run_id,
                    )
                    self._p.cursor = self._p.cursor.model_copy(update={"genie_run_id": run_id})
            if self._p.cursor.genie_run_id is None:
                assert inp.message is not None, "send mode needs the message"
                reader = self._reader()
                return reader, reader.send(inp.message, file_id=inp.file_id)
        reader = self._reader()
        return reader, reader.resume()

    def _reader(self) -> RunReader:
        inp = self._inp
        return RunReader(
            self._client,
            inp.genie_handle,
            inp.conversation_id,
            user_id=inp.user_id,
            cursor=self._p.cursor,
        )

    def _apply(self, ev: GenieEvent) -> SegmentOutcome | None:
        if isinstance(ev, AgentMessage):
            self._add_message(ev.message or "")
        elif isinstance(ev, SkillRunning | SkillCompleted | SkillStopped | SkillFailed):
            self._add_skill(ev)
        elif isinstance(ev, SkillConfirmationRequired):
            return "confirmation_required"
        elif isinstance(ev, BusinessApprovalRequired):
            return "business_approval_required"
        elif isinstance(ev, RuntimeConnectionAuthRequired):
            return "auth_required"
        elif isinstance(ev, ProcessingFinished):
            return "finished"
        return None

    def _add_message(self, text: str) -> None:
        msgs = self._p.messages
        if len(text) > MAX_TURN_MESSAGE_CHARS:  # one message alone: keep its start
            text = text[: MAX_TURN_MESSAGE_CHARS - 1] + "…"
            self._p.truncated = True
        msgs.append(text)
        self._p.delivered += 1
        # Bound what history carries; the reply (the last message) always survives.
        total = sum(map(len, msgs))
        while len(msgs) > 1 and total > MAX_TURN_MESSAGE_CHARS:
            total -= len(msgs.pop(0))
            self._p.truncated = True

    def _add_skill(self, ev: SkillRunning | SkillCompleted | SkillStopped | SkillFailed) -> None:
        error = None
        if isinstance(ev, SkillFailed) and ev.error is not None:
            error = str(ev.error)[:MAX_SKILL_ERROR_CHARS]
        status = ev.type.removeprefix("skill.")
        assert status in ("running", "completed", "stopped", "failed")
        self._p.skills.append(
            SkillActivity(
                status=status,
                skill_name=_name(ev.skill_name),
                skill_id=ev.skill_id,
                error=error,
            )
        )
        del self._p.skills[:-MAX_SKILL_EVENTS]

    def _result(self, outcome: SegmentOutcome, ev: GenieEvent | None) -> StreamSegmentResult:
        confirmation = connection = None
        if isinstance(ev, SkillConfirmationRequired | BusinessApprovalRequired):
            params, shortened = bounded_parameters(getattr(ev, "skill_parameters", None) or {})
            confirmation = SkillConfirmation(
                call_id=require(ev, "call_id"),
                kind="business" if isinstance(ev, BusinessApprovalRequired) else "skill",
                skill_name=_name(getattr(ev, "skill_name", None)),
                skill_id=getattr(ev, "skill_id", None),
                skill_parameters=params,
                parameters_shortened=shortened,
            )
        elif isinstance(ev, RuntimeConnectionAuthRequired):
            link = ev.auth_link
            connection = ConnectionRequest(
                attempt_id=require(ev, "runtime_connection_attempt_id"),
                connector_name=_name(link.connector_name if link else None),
                auth_url=link.url if link and len(link.url or "") <= MAX_AUTH_URL_CHARS else None,
                auth_expires_at=link.expires_at if link else None,
            )
        return StreamSegmentResult(
            outcome=outcome,
            cursor=self._p.cursor,
            messages=self._p.messages,
            skills=self._p.skills,
            messages_truncated=self._p.truncated,
            confirmation=confirmation,
            connection=connection,
            events=self._p.events,
            reconnects=self._p.reconnects,
        )

    # ------------------------------------------------------------------ watching

    async def _watch(self) -> StreamSegmentResult:
        """Heartbeat, notice worker shutdown, and check the API when the stream is silent."""
        shutdown = asyncio.create_task(activity.wait_for_worker_shutdown())
        try:
            while True:
                await asyncio.wait({shutdown}, timeout=HEARTBEAT_EVERY)
                if shutdown.done():
                    self._beat(force=True)
                    raise ApplicationError(
                        "the worker is shutting down; the stream resumes from its cursor "
                        "on another worker",
                        type=WORKER_SHUTDOWN,
                    )
                self._beat(idle=True)
                silent = time.monotonic() - self._last_event_at
                if silent >= self._silence_check:
                    self._last_event_at = time.monotonic()
                    check = await self._check_api()
                    if isinstance(check, StreamSegmentResult):
                        return check
        finally:
            shutdown.cancel()

    async def _check_api(self) -> StreamSegmentResult | str | None:
        """Ask the API about the run when its stream cannot tell (``check_run``).

        Returns:
            The segment's result if the run ended, or waits on a pause the stream never
            delivered; else why it is not taken as ended (for the log and the error a
            give-up raises); ``None`` when the check itself failed or no run is known.
        """
        inp, cursor = self._inp, self._p.cursor
        run_id = cursor.genie_run_id
        if run_id is None:
            return None
        events_before = self._p.events
        try:
            check = await self._runs.check_run(
                run_id,
                messages_seen=inp.messages_so_far + self._p.delivered,
                seen_event_id=cursor.last_event_id,
                seen_seq_num=cursor.last_seq_num,
            )
        except GenieAPIError as e:
            # A failed check is only a check: the stream (or the next check) still decides.
            log.info("state check for %s failed (%s); still streaming", inp.conversation_id, e)
            return None
        if self._p.events != events_before:
            return None  # the stream moved on meanwhile: it decides, not this older view
        if check.pause is not None:
            return self._unseen_pause(check)
        end = check.end
        if end is None:
            why = check.why_not_ended(run_id)
            log.info("turn %s of %s: %s; still waiting", inp.turn, inp.conversation_id, why)
            return why
        for text in end.new_messages:
            self._add_message(text)
        log.warning(
            "turn %s of %s: run %s ended without the stream saying so (%s); reply taken "
            "from the message history (E6)",
            inp.turn,
            inp.conversation_id,
            run_id,
            end.evidence,
        )
        result = self._result("finished", None)
        result.recovered_from_history = True
        return result

    def _unseen_pause(self, check: RunCheck) -> StreamSegmentResult | str:
        """The run waits on a pause no stream delivered: end the segment at it, as if the
        stream had (its genie messages before it come from E6)."""
        inp, ev = self._inp, check.pause
        assert ev is not None
        outcome = self._apply(ev)
        ref = "runtime_connection_attempt_id" if outcome == "auth_required" else "call_id"
        if outcome is None or outcome == "finished" or not getattr(ev, ref, None):
            # A summary without the id a decision needs cannot be acted on: keep waiting.
            return f"run {self._p.cursor.genie_run_id} waits on {ev.type} {ev.event_id}"
        for text in check.new_messages:
            self._add_message(text)
        self._p.cursor = self._p.cursor.model_copy(
            update={
                "last_event_id": ev.event_id or self._p.cursor.last_event_id,
                "last_seq_num": ev.seq_num or self._p.cursor.last_seq_num,
                "last_created_at": ev.created_at or self._p.cursor.last_created_at,
            }
        )
        log.warning(
            "turn %s of %s: run %s waits on %s %s that no stream delivered; taken from the "
            "conversation state (E3)",
            inp.turn,
            inp.conversation_id,
            self._p.cursor.genie_run_id,
            ev.type,
            ev.event_id,
        )
        result = self._result(outcome, ev)
        result.recovered_from_history = True
        return result

    def _beat(self, *, force: bool = False, idle: bool = False) -> None:
        """Checkpoint the progress: at most every HEARTBEAT_EVERY while it changes, every
        HEARTBEAT_IDLE_EVERY while it does not (``idle``: the watcher's tick), and at once
        when ``force``d (a failure, cancellation or shutdown leaves the freshest cursor)."""
        now = time.monotonic()
        since = now - self._last_beat
        changed = (self._p.events, self._p.reconnects) != self._beaten
        if (
            force
            or (since >= HEARTBEAT_EVERY and (changed or not idle))
            or (since >= HEARTBEAT_IDLE_EVERY)
        ):
            self._last_beat = now
            self._beaten = (self._p.events, self._p.reconnects)
            activity.heartbeat(self._p.model_dump(mode="json"))


def _name(value: str | None) -> str | None:
    """A name or id from the genie, cut to ``MAX_NAME_CHARS``."""
    return value if value is None or len(value) <= MAX_NAME_CHARS else value[:MAX_NAME_CHARS]


def _not_posted(e: Exception) -> ApplicationError:
    return ApplicationError(
        f"the decision was not posted: {type(e).__name__}: {e}"[:2000],
        type=DECISION_NOT_POSTED,
        non_retryable=True,
    )


def _resume_kwargs(e: StreamResumeError) -> dict[str, Any]:
    return {
        "conversation_id": e.conversation_id,
        "genie_run_id": e.genie_run_id,
        "retry_after": e.retry_after,
    }


async def run_segment(
    client: GenieClient,
    inp: StreamSegmentInput,
    *,
    silence_check_seconds: float,
    auth_settle_seconds: float = DEFAULT_AUTH_SETTLE_SECONDS,
    post_first: Callable[[], Awaitable[object]] | None = None,
) -> StreamSegmentResult:
    """``post_first``: posts the input's decision (``StreamSegmentInput.decision``)."""
    segment = StreamSegment(
        client,
        inp,
        silence_check_seconds=silence_check_seconds,
        auth_settle_seconds=auth_settle_seconds,
    )
    if post_first is not None:
        await segment.post_decision(post_first)
    try:
        return await segment.run()
    except StreamResumeError as e:
        raise to_application_error(e) from None
