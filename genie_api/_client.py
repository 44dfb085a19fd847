"""The Headless API client: one pooled ``httpx.AsyncClient`` for every endpoint E1-E14."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from genie_api._auth import ApiKeyAuth, OAuthAuth
from genie_api._errors import ProtocolError, truncate
from genie_api._events import GenieEvent
from genie_api._http import (
    RequestContext,
    error_from_response,
    logger,
    parse_json_body,
    transport_error,
)
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

__all__ = ["ClientTimeouts", "GenieClient", "format_timestamp"]

_M = TypeVar("_M", bound=BaseModel)

_USER_AGENT = "genie-worker-genie_api/0.1"


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Timeouts in seconds.

    Attributes:
        connect: Establishing a connection.
        read: Waiting for the next bytes of an ordinary (non-streaming) response.
        write: Sending the request body.
        pool: Waiting for a free pooled connection.
        stream_read: Longest silence tolerated on an SSE stream. The server pings about
            every 15-30 s, so a longer silence means a dead connection: the read times
            out and :class:`RunReader` re-attaches. (A consumer that must prove liveness
            meanwhile, like a Temporal activity, heartbeats from its own timer.)
    """

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 10.0
    stream_read: float = 45.0

    def rest(self) -> httpx.Timeout:
        """Timeouts for ordinary requests."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)

    def stream(self) -> httpx.Timeout:
        """Timeouts for SSE requests."""
        return httpx.Timeout(
            connect=self.connect, read=self.stream_read, write=self.write, pool=self.pool
        )


def format_timestamp(value: datetime) -> str:
    """Format a timestamp as the API writes them: UTC, microseconds, ``Z``.

    Naive datetimes are taken to be UTC.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _q(segment: str) -> str:
    # Ids are opaque: never let one add a path segment or a query.
    return quote(segment, safe="")


class GenieClient:
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

    def __init__(
        self,
        base_url: str,
        auth: ApiKeyAuth | OAuthAuth,
        *,
        timeouts: ClientTimeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 1000,
    ) -> None:
        self._auth = auth
        self._timeouts = timeouts or ClientTimeouts()
        self._stream_timeout = self._timeouts.stream()
        self._base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=self._timeouts.rest(),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=min(max_connections, 200),
            ),
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        """The API host this client talks to."""
        return self._base_url

    @property
    def timeouts(self) -> ClientTimeouts:
        """The configured timeouts."""
        return self._timeouts

    def __repr__(self) -> str:
        return f"GenieClient(base_url={self._base_url!r}, auth={self._auth!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # ------------------------------------------------------------------ internals

    def redact(self, text: str) -> str:
        """Replace any credential in ``text`` with ``***``."""
        for secret in self._auth.secrets():
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text

    def _ctx(
        self,
        endpoint: str,
        genie_handle: str,
        conversation_id: str | None = None,
        genie_run_id: str | None = None,
    ) -> RequestContext:
        return RequestContext(
            endpoint=endpoint,
            genie_handle=genie_handle,
            conversation_id=conversation_id,
            genie_run_id=genie_run_id,
            redact=self.redact,
        )

    @staticmethod
    def _path(genie_handle: str, *segments: str) -> str:
        tail = "/".join(_q(s) for s in segments)
        return f"/api/v1/genies/{_q(genie_handle)}/chat/{tail}"

    async def _request(
        self,
        method: str,
        path: str,
        ctx: RequestContext,
        *,
        user_id: str | None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: Any = None,
    ) -> Any:
        headers = await self._auth.headers(user_id)
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method, path, headers=headers, json=json, params=params or None, files=files
            )
        except httpx.HTTPError as exc:
            logger.debug("%s failed: %s", ctx.describe(), type(exc).__name__)
            raise transport_error(exc, ctx) from exc
        logger.debug(
            "%s %s -> %d in %.1f ms",
            method,
            ctx.endpoint,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        if response.status_code >= 300:
            raise error_from_response(response, ctx)
        return parse_json_body(response, ctx)

    @staticmethod
    def _validate(model: type[_M], body: Any, ctx: RequestContext) -> _M:
        try:
            return model.model_validate({} if body is None else body)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) or "<body>" for e in exc.errors())
            raise ProtocolError(
                f"unexpected {model.__name__} body from {ctx.describe()}: "
                f"invalid or missing {truncate(fields, 120)}",
                retryable=False,
                **ctx.error_kwargs(),
            ) from None
        except ProtocolError as exc:  # an embedded event without a type, …
            raise ProtocolError(
                f"{exc.message} in {model.__name__} from {ctx.describe()}",
                retryable=False,
                **ctx.error_kwargs(),
            ) from None

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
            json=self._message_body(message, file_id, stream=True),
        ) as events:
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
            headers["Last-Event-ID"] = last_event_id
        async with open_event_stream(
            self._http,
            "GET",
            self._path(genie_handle, "conversations", conversation_id, "genie-runs", genie_run_id),
            headers=headers,
            ctx=ctx,
            timeout=self._stream_timeout,
        ) as events:
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
    ) -> AsyncIterator[EventPage]:
        """Page E9 from ``since_created_at`` until the server reports no further page.

        Yields each page as it arrives; stops if the server's cursor does not advance.
        """
        since = since_created_at
        while True:
            page = await self.list_events(
                genie_handle,
                user_id=user_id,
                conversation_id=conversation_id,
                since_created_at=since,
                limit=limit,
            )
            yield page
            nxt = page.next_since_created_at
            if nxt is None or not page.events or (since is not None and nxt <= since):
                return
            since = nxt

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
