"""Short, single-call activities: create, upload, decide, link, reject, probe."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import unquote, urlparse

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._errors import ATTACHMENT_REFUSED, to_application_error
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
    UploadAttachmentInput,
    UploadAttachmentResult,
)
from genie_api import ConflictError, GenieAPIError, GenieClient

SelfT = TypeVar("SelfT")
InT = TypeVar("InT")
OutT = TypeVar("OutT")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""The API's upload limit; larger files are refused before any bytes are sent."""
PAUSE_EVENTS = frozenset({"runtime_connection.auth_required"})
HEARTBEAT_EVERY = 1.0
"""Seconds between heartbeats while a call is in flight (the workflow gives these
activities a heartbeat timeout, so a dead worker is noticed quickly)."""


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
    def __init__(self, client: GenieClient, *, attachment_dirs: list[Path] | None = None) -> None:
        self._client = client
        # file:// attachments are read from the worker's disk, so only from directories
        # the operator listed: a workflow input must not be able to read arbitrary files.
        self._attachment_dirs = [d.resolve() for d in attachment_dirs or []]

    @activity.defn(name="create_conversation")
    @_heartbeating
    async def create_conversation(self, inp: CreateConversationInput) -> CreateConversationResult:
        try:
            conv = await self._client.create_conversation(inp.genie_handle, user_id=inp.user_id)
        except GenieAPIError as e:
            raise to_application_error(e) from None
        return CreateConversationResult(conversation_id=conv.conversation_id)

    @activity.defn(name="upload_attachment")
    @_heartbeating
    async def upload_attachment(self, inp: UploadAttachmentInput) -> UploadAttachmentResult:
        filename, content = await self._read_attachment(inp.attachment_uri)
        try:
            up = await self._client.upload_file(
                inp.genie_handle,
                inp.conversation_id,
                user_id=inp.user_id,
                filename=filename,
                content=content,
            )
        except GenieAPIError as e:
            raise to_application_error(e) from None
        return UploadAttachmentResult(
            file_id=up.file_id, filename=filename, size_bytes=len(content)
        )

    async def _read_attachment(self, uri: str) -> tuple[str, bytes]:
        parsed = urlparse(uri)
        if parsed.scheme in ("http", "https"):
            async with httpx.AsyncClient(timeout=30, follow_redirects=True) as http:
                try:
                    async with http.stream("GET", uri) as r:
                        r.raise_for_status()
                        chunks: list[bytes] = []
                        size = 0
                        async for chunk in r.aiter_bytes():
                            size += len(chunk)
                            if size > MAX_UPLOAD_BYTES:
                                _refuse(f"{uri} is larger than {MAX_UPLOAD_BYTES} bytes")
                            chunks.append(chunk)
                except httpx.HTTPStatusError as e:
                    _refuse(f"GET {uri} answered {e.response.status_code}")
                except httpx.TransportError as e:
                    raise ApplicationError(f"GET {uri} failed: {e!r}") from None
            return Path(parsed.path).name or "attachment", b"".join(chunks)
        if parsed.scheme in ("file", ""):
            # Disk reads of up to 20 MB would stall every stream on this event loop.
            return await asyncio.to_thread(self._read_file, Path(unquote(parsed.path)))
        _refuse(f"unsupported attachment scheme {parsed.scheme!r} (use file:// or https://)")

    def _read_file(self, path: Path) -> tuple[str, bytes]:
        path = path.resolve()
        if not any(path.is_relative_to(d) for d in self._attachment_dirs):
            _refuse(f"{path} is outside GENIE_ATTACHMENT_DIRS")
        if not path.is_file():
            _refuse(f"{path} is not a readable file")
        if path.stat().st_size > MAX_UPLOAD_BYTES:
            _refuse(f"{path} is larger than {MAX_UPLOAD_BYTES} bytes")
        return path.name, path.read_bytes()

    @activity.defn(name="post_skill_decision")
    @_heartbeating
    async def post_skill_decision(self, inp: PostSkillDecisionInput) -> PostDecisionResult:
        try:
            if inp.kind == "business":
                await self._client.business_approval(
                    inp.genie_handle,
                    inp.conversation_id,
                    inp.call_id,
                    user_id=inp.user_id,
                    approved=inp.approved,
                )
            else:
                await self._client.decide_skill(
                    inp.genie_handle,
                    inp.conversation_id,
                    inp.call_id,
                    user_id=inp.user_id,
                    approved=inp.approved,
                    reason=inp.reason,
                )
        except ConflictError:
            # The API already has a decision for this call: an earlier attempt's POST
            # landed and only its answer was lost. Posting is done.
            return PostDecisionResult(already_resolved=True)
        except GenieAPIError as e:
            raise to_application_error(e) from None
        return PostDecisionResult()

    @activity.defn(name="get_auth_link")
    @_heartbeating
    async def get_auth_link(self, inp: AuthLinkInput) -> AuthLinkResult:
        try:
            st = await self._client.get_auth_link(
                inp.genie_handle, inp.attempt_id, user_id=inp.user_id
            )
        except GenieAPIError as e:
            raise to_application_error(e) from None
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
        except ConflictError:
            return PostDecisionResult(already_resolved=True)
        except GenieAPIError as e:
            raise to_application_error(e) from None
        return PostDecisionResult()

    @activity.defn(name="probe_connection")
    @_heartbeating
    async def probe_connection(self, inp: ProbeConnectionInput) -> ProbeConnectionResult:
        """Has the run moved past the connection, though nobody told us?

        E3 first: its last event names the run's progress. Production may leave E3
        looking parked (or read ``idle`` while parked), so when E3 is inconclusive, E6
        decides: a genie message of this run beyond those seen before the pause.
        """
        try:
            conv = await self._client.get_conversation(
                inp.genie_handle, inp.conversation_id, user_id=inp.user_id
            )
            last = conv.last_event
            last_type = last.type if last is not None else None
            same_run = last is not None and last.genie_run_id in (None, inp.genie_run_id)
            if same_run and last_type not in PAUSE_EVENTS:
                return ProbeConnectionResult(
                    resolved=True, state=conv.state, last_event_type=last_type
                )
            if inp.genie_run_id is None:
                return ProbeConnectionResult(
                    resolved=False, state=conv.state, last_event_type=last_type
                )
            page = await self._client.list_messages(
                inp.genie_handle, inp.conversation_id, user_id=inp.user_id, limit=100
            )
        except GenieAPIError as e:
            raise to_application_error(e) from None
        replies = [
            m for m in page.messages if m.source == "genie" and m.genie_run_id == inp.genie_run_id
        ]
        return ProbeConnectionResult(
            resolved=len(replies) > inp.messages_so_far,
            state=conv.state,
            last_event_type=last_type,
        )


def _refuse(message: str) -> NoReturn:
    raise ApplicationError(message, type=ATTACHMENT_REFUSED, non_retryable=True)
