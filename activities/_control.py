"""Short, single-call activities: create, upload, decide, link, reject, probe."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._attachments import AttachmentReader, UrlPolicy
from activities._errors import (
    CREDENTIAL_SETTLING,
    DECISION_REFUSED,
    credential_refusal,
    decision_refused,
    to_application_error,
)
from activities._options import DEFAULT_AUTH_SETTLE_SECONDS, HEARTBEAT_EVERY
from activities._users import UserIdPolicy
from activities.models import (
    AuthLinkInput,
    AuthLinkResult,
    CreateConversationInput,
    CreateConversationResult,
    PostDecisionResult,
    PostSkillDecisionInput,
    ProbeConnectionInput,
    ProbeConnectionResult,
    RejectConnectionInput,
    SkillVerdict,
    UploadAttachmentInput,
    UploadAttachmentResult,
    _Scope,
)
from genie_api import (
    CONNECTION_ALREADY_RESOLVED,
    CONVERSATION_BUSY,
    SKILL_CALL_ALREADY_RESOLVED,
    ConflictError,
    EventType,
    GenieAPIError,
    GenieClient,
    Pause,
    PauseStatus,
    RunInspector,
)

log = logging.getLogger("genie_worker.decisions")

SelfT = TypeVar("SelfT")
InT = TypeVar("InT")
OutT = TypeVar("OutT")


def _heartbeating(
    fn: Callable[[SelfT, InT], Awaitable[OutT]],
) -> Callable[[SelfT, InT], Awaitable[OutT]]:
    """Heartbeat every HEARTBEAT_EVERY seconds for as long as the activity runs.

    Without it a worker that dies mid-call (say, right after the API applied a decision)
    is noticed only at the start-to-close timeout; with it, at the workflow's short
    heartbeat timeout, and the retry then finds the work done.
    """

    @functools.wraps(fn)
    async def run(self: SelfT, inp: InT) -> OutT:
        async def beat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_EVERY)
                activity.heartbeat()

        beating = asyncio.create_task(beat())
        try:
            return await fn(self, inp)
        finally:
            beating.cancel()

    return run


class ControlActivities:
    def __init__(
        self,
        client: GenieClient,
        *,
        attachment_dirs: list[Path] | None = None,
        attachment_urls: UrlPolicy | None = None,
        user_ids: UserIdPolicy | None = None,
        auth_settle_seconds: float = DEFAULT_AUTH_SETTLE_SECONDS,
    ) -> None:
        self._client = client
        self._auth_settle = auth_settle_seconds
        # Attachments are read with the worker's disk and network position, so only from
        # sources the operator allowed (activities/_attachments.py has the rules).
        self._attachments = AttachmentReader(attachment_dirs or [], attachment_urls)
        self._users = user_ids or UserIdPolicy()

    def _api_error(self, e: GenieAPIError) -> ApplicationError:
        """The activity failure for a client error: a credential that may still be
        settling goes to the workflow to retry (``credential_refusal``), the rest as
        classified."""
        refusal = credential_refusal(
            e, accepted_before=self._client.credential_accepted, settle_seconds=self._auth_settle
        )
        return refusal or to_application_error(e)

    def _settle_decision(
        self, e: GenieAPIError, already_resolved: str, what: str
    ) -> PostDecisionResult:
        refusal = credential_refusal(
            e, accepted_before=self._client.credential_accepted, settle_seconds=self._auth_settle
        )
        if refusal is not None and refusal.type == CREDENTIAL_SETTLING:
            raise refusal from None
        return _settle(e, already_resolved, what)

    @activity.defn(name="create_conversation")
    @_heartbeating
    async def create_conversation(self, inp: CreateConversationInput) -> CreateConversationResult:
        # The service key lets the worker act as any user it names: name only allowed ones.
        self._users.check(inp.user_id)
        try:
            conv = await self._client.create_conversation(inp.genie_handle, user_id=inp.user_id)
        except GenieAPIError as e:
            raise self._api_error(e) from None
        return CreateConversationResult(conversation_id=conv.conversation_id)

    @activity.defn(name="upload_attachment")
    @_heartbeating
    async def upload_attachment(self, inp: UploadAttachmentInput) -> UploadAttachmentResult:
        self._users.check(inp.user_id)
        filename, content = await self._attachments.read(inp.attachment_uri)
        try:
            up = await self._client.upload_file(
                inp.genie_handle,
                inp.conversation_id,
                user_id=inp.user_id,
                filename=filename,
                content=content,
            )
        except GenieAPIError as e:
            raise self._api_error(e) from None
        return UploadAttachmentResult(
            file_id=up.file_id, filename=filename, size_bytes=len(content)
        )

    @activity.defn(name="post_skill_decision")
    @_heartbeating
    async def post_skill_decision(self, inp: PostSkillDecisionInput) -> PostDecisionResult:
        return await self._post_verdict(
            inp,
            inp.conversation_id,
            inp,
            run_id=inp.genie_run_id,
            messages_seen=inp.messages_seen,
            may_have_posted=inp.may_have_posted,
        )

    async def _post_verdict(
        self,
        scope: _Scope,
        conversation_id: str,
        v: SkillVerdict,
        *,
        run_id: str | None,
        messages_seen: int,
        may_have_posted: bool = False,
    ) -> PostDecisionResult:
        """E10 (or E13 for a business approval); also the first step of a ``resume``
        segment that carries the decision.

        Production answers a repeated decision with a 409 that does not say "already
        resolved", so the conversation state decides what a repeat means:

        - before posting again (a retry, or ``may_have_posted``), a run that moved past
          the pause means the earlier post landed: nothing is posted;
        - after a refusal, a run that moved past the pause means the call was resolved
          already (by our lost post, or by someone else): there is nothing left to decide.
        """
        what = "business approval" if v.kind == "business" else "skill decision"
        pause = Pause(
            EventType.BUSINESS_APPROVAL_REQUIRED
            if v.kind == "business"
            else EventType.SKILL_CONFIRMATION_REQUIRED,
            v.call_id,
        )
        runs = RunInspector(
            self._client, scope.genie_handle, conversation_id, user_id=scope.user_id
        )

        async def resolved(*, conflict: bool) -> bool:
            try:
                check = await runs.pause_status(run_id, pause, messages_seen=messages_seen)
            except GenieAPIError:
                return False  # only a check: the post (or its refusal) stands
            # Another pause as the newest event may have been raised beside this one; only
            # the API's 409 to this post (the call is in no state to decide) makes it proof.
            return check.status == PauseStatus.MOVED_ON and (conflict or not check.by_other_pause)

        if (may_have_posted or activity.info().attempt > 1) and await resolved(conflict=False):
            log.info(
                "%s for call %s: the run moved past the pause; an earlier attempt's post "
                "landed, not posting again",
                what,
                v.call_id,
            )
            return PostDecisionResult(outcome="already_resolved")
        try:
            if v.kind == "business":
                await self._client.business_approval(
                    scope.genie_handle,
                    conversation_id,
                    v.call_id,
                    user_id=scope.user_id,
                    approved=v.approved,
                )
            else:
                await self._client.decide_skill(
                    scope.genie_handle,
                    conversation_id,
                    v.call_id,
                    user_id=scope.user_id,
                    approved=v.approved,
                    reason=v.reason,
                )
        except GenieAPIError as e:
            # E13 has no documented code of its own; a call id is resolved once either way.
            try:
                return self._settle_decision(
                    e, SKILL_CALL_ALREADY_RESOLVED, f"{what} for call {v.call_id}"
                )
            except ApplicationError as refusal:
                if refusal.type != DECISION_REFUSED or not await resolved(
                    conflict=isinstance(e, ConflictError)
                ):
                    raise
                log.info(
                    "%s for call %s: refused (HTTP %s %s), but the run moved past the pause: "
                    "resolved already",
                    what,
                    v.call_id,
                    e.status,
                    e.error_code,
                )
                return PostDecisionResult(outcome="already_resolved")
        return PostDecisionResult(outcome="applied")

    @activity.defn(name="get_auth_link")
    @_heartbeating
    async def get_auth_link(self, inp: AuthLinkInput) -> AuthLinkResult:
        try:
            st = await self._client.get_auth_link(
                inp.genie_handle, inp.attempt_id, user_id=inp.user_id
            )
        except GenieAPIError as e:
            raise self._api_error(e) from None
        link = st.auth_link
        return AuthLinkResult(
            status="authorized" if st.status == "authorized" else "auth_required",
            url=link.url if link else None,
            expires_at=link.expires_at if link else None,
            connector_name=link.connector_name if link else None,
        )

    @activity.defn(name="reject_connection")
    @_heartbeating
    async def reject_connection(self, inp: RejectConnectionInput) -> PostDecisionResult:
        try:
            await self._client.reject_connection(
                inp.genie_handle, inp.attempt_id, user_id=inp.user_id, reason=inp.reason
            )
        except GenieAPIError as e:
            return self._settle_decision(
                e, CONNECTION_ALREADY_RESOLVED, f"connection rejection for {inp.attempt_id}"
            )
        return PostDecisionResult(outcome="applied")

    @activity.defn(name="probe_connection")
    @_heartbeating
    async def probe_connection(self, inp: ProbeConnectionInput) -> ProbeConnectionResult:
        """Is the run still parked on this connection attempt, or has it moved on?

        For the workflow's two questions: has the user connected without anyone telling
        us, and, when a human says "done", is it true? ``RunInspector.pause_status``
        holds the rules (E3, then E6, for production's quirks).
        """
        runs = RunInspector(
            self._client, inp.genie_handle, inp.conversation_id, user_id=inp.user_id
        )
        pause = Pause(EventType.RUNTIME_CONNECTION_AUTH_REQUIRED, inp.attempt_id)
        try:
            check = await runs.pause_status(
                inp.genie_run_id, pause, messages_seen=inp.messages_so_far
            )
        except GenieAPIError as e:
            raise self._api_error(e) from None
        return ProbeConnectionResult(
            status=check.status, state=check.state, last_event_type=check.last_event_type
        )


def _settle(e: GenieAPIError, already_resolved: str, what: str) -> PostDecisionResult:
    """What a failed decision post means: done already, try again later, or refused.

    Of the answers alone, only the documented already-resolved code proves the API has a
    resolution for the id (typically ours, from an attempt whose answer was lost); a
    skill decision also asks the conversation state (``_post_verdict``). Every other 409
    is not that: ``conversation_busy`` says the run is busy, so the post is retried; any other
    code, and every other final answer, means the decision was not applied, and the
    workflow must show that rather than carry on as if it had been.

    Raises:
        ApplicationError: Retryable for ``conversation_busy`` and retryable errors
            (429, 5xx, transport); non-retryable ``DECISION_REFUSED`` otherwise.
    """
    if isinstance(e, ConflictError):
        if e.error_code == already_resolved:
            return PostDecisionResult(outcome="already_resolved")
        if e.error_code == CONVERSATION_BUSY:
            raise to_application_error(e, retryable=True) from None
        raise decision_refused(e, what) from None
    if e.retryable:
        raise to_application_error(e) from None
    raise decision_refused(e, what) from None
