"""The Headless API client: one pooled ``httpx.AsyncClient`` for every endpoint E1-E14."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

from genie_api._errors import ProtocolError
from genie_api._events import GenieEvent
from genie_api._http import logger
from genie_api._models import (
    AuthLinkStatus,
    Conversation,
    ConversationDetail,
    ConversationPage,
    EventPage,
    MessagePage,
    SendAck,
    UploadedFile,
)
from genie_api._sse import open_event_stream
from genie_api._transport import ClientLimits, ClientTimeouts, Transport, format_timestamp

__all__ = ["ClientLimits", "ClientTimeouts", "GenieClient", "format_timestamp"]

MAX_EVENT_PAGES = 200
"""Default bound on the E9 pages one :meth:`GenieClient.iter_event_pages` call reads."""


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()


class GenieClient(Transport):
    """Async client for the Workato genie Headless API.

    One instance serves many conversations and users concurrently (the user is chosen
    per call with ``user_id``); share it for the life of the process and close it with
    ``aclose()`` or ``async with``.

    Args:
        base_url: API host, e.g. ``https://genie-api.workato.com`` (paths are added).
        auth: :class:`ApiKeyAuth` or :class:`OAuthAuth`.
        timeouts: See :class:`ClientTimeouts`.
        transport: Custom httpx transport (tests, proxies).
        max_connections: Connection pool size; every open stream holds one.

    Writes (messages, uploads, decisions) are never retried by this client: the API has
    no idempotency key, so a retry decision belongs to the caller. Errors are the typed
    :class:`~genie_api.GenieAPIError` subclasses.
    """

    # ------------------------------------------------------------------ E1-E4

    async def create_conversation(self, genie_handle: str, *, user_id: str | None) -> Conversation:
        """E1 ``POST /conversations``: start a conversation."""
        ctx = self._ctx("create_conversation", genie_handle)
        body = await self._request(
            "POST", self._path(genie_handle, "conversations"), ctx, user_id=user_id, json={}
        )
        return self._validate(Conversation, body, ctx)

    async def list_conversations(
        self,
        genie_handle: str,
        *,
        user_id: str | None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ConversationPage:
        """E2 ``GET /conversations``: one page of the user's conversations."""
        ctx = self._ctx("list_conversations", genie_handle)
        body = await self._request(
            "GET",
            self._path(genie_handle, "conversations"),
            ctx,
            user_id=user_id,
            params={"limit": limit, "cursor": cursor},
        )
        return self._validate(ConversationPage, body, ctx)

    async def get_conversation(
        self, genie_handle: str, conversation_id: str, *, user_id: str | None
    ) -> ConversationDetail:
        """E3 ``GET /conversations/{id}``: the conversation with ``state`` and ``last_event``."""
        ctx = self._ctx("get_conversation", genie_handle, conversation_id)
        body = await self._request(
            "GET",
            self._path(genie_handle, "conversations", conversation_id),
            ctx,
            user_id=user_id,
        )
        if isinstance(body, dict) and "conversation_id" not in body:
            body = {**body, "conversation_id": conversation_id}
        return self._validate(ConversationDetail, body, ctx)

    async def delete_conversation(
        self, genie_handle: str, conversation_id: str, *, user_id: str | None
    ) -> None:
        """E4 ``DELETE /conversations/{id}``."""
        ctx = self._ctx("delete_conversation", genie_handle, conversation_id)
        await self._request(
            "DELETE",
            self._path(genie_handle, "conversations", conversation_id),
            ctx,
            user_id=user_id,
        )

    # ------------------------------------------------------------------ E5-E7

    @staticmethod
    def _message_body(message: str, file_id: str | None, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"message": message, "stream": stream}
        if file_id:
            body["file_id"] = file_id
        return body

    async def send_message(
        self,
        genie_handle: str,
        conversation_id: str,
        message: str,
        *,
        user_id: str | None,
        file_id: str | None = None,
    ) -> SendAck:
        """E5 ``POST …/messages`` with ``stream: false``.

        Returns the acknowledgement (``genie_run_id`` when the server sends one; an empty
        body gives an empty :class:`SendAck`). Not retried: a repeat would start a second
        run or answer 409.
        """
        ctx = self._ctx("send_message", genie_handle, conversation_id)
        body = await self._request(
            "POST",
            self._path(genie_handle, "conversations", conversation_id, "messages"),
            ctx,
            user_id=user_id,
            json=self._message_body(message, file_id, stream=False),
        )
        return self._validate(SendAck, body, ctx)

    @asynccontextmanager
    async def stream_message(
        self,
        genie_handle: str,
        conversation_id: str,
        message: str,
        *,
        user_id: str | None,
        file_id: str | None = None,
    ) -> AsyncGenerator[AsyncIterator[GenieEvent], None]:
        """E5 ``POST …/messages`` with ``stream: true``: the new run's events.

        Use as ``async with client.stream_message(...) as events: async for e in events``.
        Yields every event including ``system.ping``; ends after ``processing.finished``
        or when the server closes the stream. Entering raises the typed HTTP error (or a
        retryable :class:`ProtocolError` for a 200 that is not an event stream) before any
        event; iterating may raise :class:`TransportError` or :class:`ProtocolError`.
        For resumable consumption use :class:`~genie_api.RunReader`.
        """
        ctx = self._ctx("send_message", genie_handle, conversation_id)
        headers = await self._auth.headers(user_id)
        async with open_event_stream(
            self._http,
            "POST",
            self._path(genie_handle, "conversations", conversation_id, "messages"),
            headers=headers,
            ctx=ctx,
            timeout=self._stream_timeout,
            open_within=self._timeouts.total,
            max_error_body_bytes=self._limits.max_error_body_bytes,
            max_event_chars=self._limits.max_event_chars,
            json=self._message_body(message, file_id, stream=True),
        ) as events:
            self._accepted()
            yield events

    async def list_messages(
        self,
        genie_handle: str,
        conversation_id: str,
        *,
        user_id: str | None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MessagePage:
        """E6 ``GET …/messages``: message history, newest first."""
        ctx = self._ctx("list_messages", genie_handle, conversation_id)
        body = await self._request(
            "GET",
            self._path(genie_handle, "conversations", conversation_id, "messages"),
            ctx,
            user_id=user_id,
            params={"limit": limit, "cursor": cursor},
        )
        return self._validate(MessagePage, body, ctx)

    async def upload_file(
        self,
        genie_handle: str,
        conversation_id: str,
        *,
        user_id: str | None,
        filename: str,
        content: bytes,
        content_type: str | None = None,
    ) -> UploadedFile:
        """E7 ``POST …/upload`` (multipart part ``file``): returns the ``file_id``."""
        ctx = self._ctx("upload", genie_handle, conversation_id)
        body = await self._request(
            "POST",
            self._path(genie_handle, "conversations", conversation_id, "upload"),
            ctx,
            user_id=user_id,
            files={"file": (filename, content, content_type or "application/octet-stream")},
        )
        return self._validate(UploadedFile, body, ctx)

    # ------------------------------------------------------------------ E8-E9

    @asynccontextmanager
    async def reconnect_run(
        self,
        genie_handle: str,
        conversation_id: str,
        genie_run_id: str,
        *,
        user_id: str | None,
        last_event_id: str | None = None,
    ) -> AsyncGenerator[AsyncIterator[GenieEvent], None]:
        """E8 ``GET …/genie-runs/{run}``: re-attach to a run's stream.

        Replays the run's events after ``last_event_id`` (from the start without it),
        then follows live. Same iteration contract as :meth:`stream_message`.
        """
        ctx = self._ctx("reconnect", genie_handle, conversation_id, genie_run_id)
        headers = await self._auth.headers(user_id)
        if last_event_id:
            if not _header_safe(last_event_id):
                # The id came from the server. Non-ASCII would fail as a bare
                # UnicodeEncodeError inside httpx, a line break would be a header
                # injection; E9 (RunReader's fallback) does not need the id.
                raise ProtocolError(
                    f"the server's event id cannot be sent as Last-Event-ID on "
                    f"{ctx.describe()} ({len(last_event_id)} chars, not printable ASCII)",
                    retryable=False,
                    **ctx.error_kwargs(),
                )
            headers["Last-Event-ID"] = last_event_id
        async with open_event_stream(
            self._http,
            "GET",
            self._path(genie_handle, "conversations", conversation_id, "genie-runs", genie_run_id),
            headers=headers,
            ctx=ctx,
            timeout=self._stream_timeout,
            open_within=self._timeouts.total,
            max_error_body_bytes=self._limits.max_error_body_bytes,
            max_event_chars=self._limits.max_event_chars,
        ) as events:
            self._accepted()
            yield events

    async def list_events(
        self,
        genie_handle: str,
        *,
        user_id: str | None,
        conversation_id: str,
        since_created_at: datetime | None = None,
        limit: int | None = None,
    ) -> EventPage:
        """E9 ``GET /conversations/events``: one page of persisted events, oldest first."""
        ctx = self._ctx("events", genie_handle, conversation_id)
        body = await self._request(
            "GET",
            self._path(genie_handle, "conversations", "events"),
            ctx,
            user_id=user_id,
            params={
                "conversation_id": conversation_id,
                "since_created_at": (
                    format_timestamp(since_created_at) if since_created_at is not None else None
                ),
                "limit": limit,
            },
        )
        return self._validate(EventPage, body, ctx)

    async def iter_event_pages(
        self,
        genie_handle: str,
        *,
        user_id: str | None,
        conversation_id: str,
        since_created_at: datetime | None = None,
        limit: int | None = None,
        max_pages: int = MAX_EVENT_PAGES,
    ) -> AsyncIterator[EventPage]:
        """Page E9 from ``since_created_at`` until there is no further page.

        Yields each page as it arrives; stops if the cursor does not advance, and after
        ``max_pages`` pages (logged): a server whose cursor creeps forward a microsecond
        a page would otherwise keep a caller paging forever. A caller that needs more
        continues from its own position (``RunReader`` does, from its cursor). Production
        answers without a paging field, so a *full* page (``limit`` events) without
        ``next_since_created_at`` is followed by a page from its newest ``created_at``.
        Whether ``since_created_at`` is inclusive is unknown: an event may then come twice,
        and callers dedupe (``RunReader`` does, by ``event_id``).
        """
        since = since_created_at
        for _ in range(max_pages):
            page = await self.list_events(
                genie_handle,
                user_id=user_id,
                conversation_id=conversation_id,
                since_created_at=since,
                limit=limit,
            )
            yield page
            nxt = page.next_since_created_at
            if nxt is None and limit is not None and len(page.events) >= limit:
                nxt = max((e.created_at for e in page.events if e.created_at), default=None)
            if nxt is None or not page.events or (since is not None and nxt <= since):
                return
            since = nxt
        logger.warning(
            "stopped paging the events of conversation %s after %d pages",
            conversation_id,
            max_pages,
        )

    # ------------------------------------------------------------------ E10-E14

    async def decide_skill(
        self,
        genie_handle: str,
        conversation_id: str,
        call_id: str,
        *,
        user_id: str | None,
        approved: bool,
        reason: str | None = None,
    ) -> None:
        """E10 ``POST …/skill_approval/{call_id}``: approve or reject a paused skill call.

        ``reason`` is sent as ``rejection_reason`` when rejecting.
        """
        ctx = self._ctx("skill_approval", genie_handle, conversation_id)
        body: dict[str, Any] = {"resolution": "approved" if approved else "rejected"}
        if not approved and reason:
            body["rejection_reason"] = reason
        await self._request(
            "POST",
            self._path(genie_handle, "conversations", conversation_id, "skill_approval", call_id),
            ctx,
            user_id=user_id,
            json=body,
        )

    async def get_auth_link(
        self, genie_handle: str, attempt_id: str, *, user_id: str | None
    ) -> AuthLinkStatus:
        """E11 ``POST /runtime_connection/{attempt_id}/link``: a fresh one-time auth link."""
        ctx = self._ctx("auth_link", genie_handle)
        body = await self._request(
            "POST",
            self._path(genie_handle, "runtime_connection", attempt_id, "link"),
            ctx,
            user_id=user_id,
        )
        return self._validate(AuthLinkStatus, body, ctx)

    async def reject_connection(
        self,
        genie_handle: str,
        attempt_id: str,
        *,
        user_id: str | None,
        reason: str | None = None,
    ) -> None:
        """E12 ``POST /runtime_connection/{attempt_id}/reject``: decline the connection."""
        ctx = self._ctx("connection_reject", genie_handle)
        await self._request(
            "POST",
            self._path(genie_handle, "runtime_connection", attempt_id, "reject"),
            ctx,
            user_id=user_id,
            json={"reason": reason} if reason else {},
        )

    async def business_approval(
        self,
        genie_handle: str,
        conversation_id: str,
        call_id: str,
        *,
        user_id: str | None,
        approved: bool,
    ) -> None:
        """E13 ``POST …/business_approval/{call_id}`` (known from an unofficial SDK only)."""
        ctx = self._ctx("business_approval", genie_handle, conversation_id)
        await self._request(
            "POST",
            self._path(
                genie_handle, "conversations", conversation_id, "business_approval", call_id
            ),
            ctx,
            user_id=user_id,
            json={"resolution": "approved" if approved else "rejected"},
        )

    async def feedback(
        self,
        genie_handle: str,
        conversation_id: str,
        genie_run_id: str,
        *,
        user_id: str | None,
        reaction: Literal["positive", "negative"],
        comment: str | None = None,
    ) -> None:
        """E14: rate a completed run (path unconfirmed; known from an unofficial SDK only)."""
        ctx = self._ctx("feedback", genie_handle, conversation_id, genie_run_id)
        body: dict[str, Any] = {"reaction": reaction}
        if comment:
            body["comment"] = comment
        await self._request(
            "POST",
            self._path(
                genie_handle,
                "conversations",
                conversation_id,
                "genie-runs",
                genie_run_id,
                "feedback",
            ),
            ctx,
            user_id=user_id,
            json=body,
        )
