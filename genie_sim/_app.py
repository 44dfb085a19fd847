"""The Starlette application: Headless API routes (E1-E14) and ``/_sim`` admin routes."""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import html
import itertools
import json
import math
import uuid
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._clock import iso, parse_iso
from ._config import MAX_MESSAGE_CHARS, MAX_UPLOAD_BYTES, SimConfig
from ._errors import ApiError, bad_request, error_response
from ._faults import Fault
from ._gzip import GzipAnswers
from ._multipart import boundary_of, find_part
from ._runner import run_script
from ._script import parse_script
from ._store import (
    ConnectionAttempt,
    Conversation,
    Decision,
    Event,
    Run,
    Store,
    UploadedFile,
    dumps,
)
from ._streams import SseStream

API_PREFIX = "/api/v1/genies/{genie_handle}/chat"
REQUEST_ID_KEY = "genie_sim.request_id"
_UPLOAD_SLACK_BYTES = 1024 * 1024
"""Multipart framing allowance on top of the 20 MB file limit."""


class RequestIdMiddleware:
    """Give every request an id and every response an ``X-Request-Id`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope[REQUEST_ID_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    """The id given by :class:`RequestIdMiddleware`."""
    return cast(str, request.scope.get(REQUEST_ID_KEY) or str(uuid.uuid4()))


class _CutConnection:
    """Start a response, then drop the connection (``drop_after_events`` on a JSON answer)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        # Returning without the body makes uvicorn close the transport mid-response.


def authenticate(request: Request, store: Store) -> str:
    """Check ``Authorization`` / ``X-IDP-User-Id`` and return the calling user id.

    Raises:
        ApiError: ``401 auth_failed`` or ``401 user_nonactive_or_missing``; while the key
            settles (``--auth-settle-seconds``), ``403 access_denied`` and ``401
            auth_failed`` in turn.
    """
    config = store.config
    header = request.headers.get("authorization", "")
    token = header[7:] if header.startswith("Bearer ") else ""
    if not token or token.strip() != token or " " in token:
        raise ApiError(401, "auth_failed", "Authentication failed.")
    if hmac.compare_digest(token.encode(), store.api_key.encode()):
        if store.settling():
            # The gateway has not learnt the new key yet: it answers as for a wrong key,
            # or with access_denied, until the configuration reaches it.
            store.settle_refusals += 1
            if store.settle_refusals % 2:
                raise ApiError(403, "access_denied", "Access denied.")
            raise ApiError(401, "auth_failed", "Authentication failed.")
        user = request.headers.get("x-idp-user-id", "").strip()
        if not user or "@" in user or user.startswith("inactive"):
            raise ApiError(
                401, "user_nonactive_or_missing", "User is not active or does not exist."
            )
        return user
    oauth_user = config.oauth_tokens.get(token)
    if oauth_user is None:
        raise ApiError(401, "auth_failed", "Authentication failed.")
    return oauth_user


@dataclass(slots=True)
class Ctx:
    """One authenticated API request."""

    request: Request
    store: Store
    request_id: str
    user_id: str

    @property
    def handle(self) -> str:
        """The ``genie_handle`` path parameter."""
        return cast(str, self.request.path_params["genie_handle"])

    def param(self, name: str) -> str:
        """A path parameter."""
        return cast(str, self.request.path_params[name])

    @property
    def base_url(self) -> str:
        """Where the client reached us (auth links point back here)."""
        return str(self.request.base_url).rstrip("/")

    def conversation(self) -> Conversation:
        """The path's conversation, if visible to this user."""
        return self.store.visible_conversation(
            self.handle, self.param("conversation_id"), self.user_id
        )

    def raw_json(self, text: str, status: int = 200) -> Response:
        """A JSON success answer from pre-encoded text, enveloped if configured."""
        if self.store.config.envelope == "result":
            text = f'{{"result":{text}}}'
        return Response(text, status_code=status, media_type="application/json")

    def json(self, body: object, status: int = 200) -> Response:
        """A JSON success answer, enveloped if configured."""
        return self.raw_json(dumps(body), status)

    async def body_json(self) -> dict[str, Any]:
        """The request body as a JSON object (an empty body reads as ``{}``).

        Raises:
            ApiError: ``400 invalid_request`` for non-JSON or non-object bodies.
        """
        raw = await self.request.body()
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise bad_request("Request body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise bad_request("Request body must be a JSON object.")
        return value

    def int_query(self, name: str, default: int, maximum: int) -> int:
        """A positive integer query parameter, clamped to ``maximum``."""
        raw = self.request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise bad_request(f"{name} must be an integer.") from None
        if value < 1:
            raise bad_request(f"{name} must be at least 1.")
        return min(value, maximum)


Answer = Response | SseStream | _CutConnection
Handler = Callable[[Ctx], Awaitable[Answer]]


def _encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(f"c:{value}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> str | None:
    """Decode an opaque cursor; anything we did not issue is a ``400 invalid_cursor``."""
    if not cursor:
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        text = raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith("c:") or len(text) < 3:
        raise bad_request("Invalid cursor.", "invalid_cursor")
    return text[2:]


def _conversation_summary(conv: Conversation) -> dict[str, object]:
    return {
        "conversation_id": conv.conversation_id,
        "topic": conv.topic,
        "created_at": iso(conv.created_us),
        "last_updated_at": iso(conv.updated_us),
    }


def _require_resolution(body: dict[str, Any]) -> tuple[bool, str | None]:
    resolution = body.get("resolution")
    if resolution not in ("approved", "rejected"):
        raise bad_request('resolution must be "approved" or "rejected".')
    reason = body.get("rejection_reason", body.get("reason"))
    if reason is not None and not isinstance(reason, str):
        raise bad_request("rejection_reason must be a string.")
    return resolution == "approved", reason


def _html(status: int, title: str, text: str) -> HTMLResponse:
    # The text can carry a connector name taken from a user's message.
    title, text = html.escape(title), html.escape(text)
    return HTMLResponse(
        f"<!DOCTYPE html><html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p></body></html>",
        status_code=status,
    )


class _Api:
    """Route handlers over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- plumbing ---------------------------------------------------------------------------

    def route(self, path: str, method: str, endpoint: str, handler: Handler) -> Route:
        """A Headless API route: stats, auth, faults and error rendering around ``handler``."""
        store = self.store

        async def serve(request: Request) -> Response:
            request_id = request_id_of(request)
            store.stats.requests[endpoint] += 1
            try:
                user = authenticate(request, store)
                conv_id = self._conversation_id_of(endpoint, request)
                self._count_post(endpoint, request, conv_id, user)
                fault = store.faults.take(endpoint, conv_id)
                if fault is not None and fault.replaces_answer and not fault.after_request:
                    return fault.answer(request_id)
                answer: Answer
                try:
                    answer = await handler(Ctx(request, store, request_id, user))
                except ApiError as e:
                    answer = e.response(request_id)
            except ApiError as e:
                return e.response(request_id)
            if fault is not None:
                answer = self._apply_fault(fault, answer, request_id)
            # Streams and cuts are ASGI callables like Response; Starlette only calls them.
            return cast(Response, answer)

        return Route(API_PREFIX + path, serve, methods=[method])

    def _apply_fault(self, fault: Fault, answer: Answer, request_id: str) -> Answer:
        if fault.replaces_answer:  # after_request: the work is done, the answer is lost
            return fault.answer(request_id)
        if isinstance(answer, SseStream):
            answer.fault = fault
            return answer
        if fault.drop_after_events is not None:
            return _CutConnection()
        if (
            fault.malformed == "non_json"
            and isinstance(answer, Response)
            and 200 <= answer.status_code < 300
            and answer.body
        ):
            return Response(
                b'{"result": tru', status_code=answer.status_code, media_type="application/json"
            )
        return answer

    def _conversation_id_of(self, endpoint: str, request: Request) -> str | None:
        """Which conversation a request is about (for fault filters and post counters)."""
        if endpoint == "events":
            return request.query_params.get("conversation_id") or None
        if endpoint in ("auth_link", "connection_reject"):
            attempt = self.store.attempts.get(request.path_params["attempt_id"])
            return attempt.run.conversation.conversation_id if attempt else None
        return cast(str | None, request.path_params.get("conversation_id"))

    def _count_post(self, endpoint: str, request: Request, conv_id: str | None, user: str) -> None:
        if conv_id is None or endpoint not in (
            "send_message",
            "skill_approval",
            "auth_link",
            "connection_reject",
            "feedback",
        ):
            return
        conv = self.store.conversations.get(conv_id)
        if (
            conv is None
            or conv.user_id != user
            or conv.genie_handle != request.path_params["genie_handle"]
        ):
            return
        stats = self.store.stats.conversation(conv_id)
        if endpoint == "send_message":
            stats.message_posts += 1
        elif endpoint == "skill_approval":
            stats.skill_decision_posts[request.path_params["call_id"]] += 1
        elif endpoint == "auth_link":
            stats.auth_link_posts[request.path_params["attempt_id"]] += 1
        elif endpoint == "connection_reject":
            stats.connection_reject_posts[request.path_params["attempt_id"]] += 1
        else:
            stats.feedback_posts += 1

    def _visible_attempt(self, ctx: Ctx) -> ConnectionAttempt:
        attempt = self.store.attempts.get(ctx.param("attempt_id"))
        if attempt is None:
            raise ApiError(404, "connection_not_found", "Runtime connection attempt not found.")
        conv = attempt.run.conversation
        if conv.user_id != ctx.user_id or conv.genie_handle != ctx.handle:
            raise ApiError(404, "connection_not_found", "Runtime connection attempt not found.")
        return attempt

    @staticmethod
    def _run_of(conv: Conversation, run_id: str) -> Run:
        run = conv.runs.get(run_id)
        if run is None:
            raise ApiError(404, "run_not_found", "Genie run not found.")
        return run

    # -- E1..E4 -----------------------------------------------------------------------------

    async def create_conversation(self, ctx: Ctx) -> Answer:
        """E1 ``POST /conversations``."""
        if ctx.handle.startswith("gin-noclient"):
            raise ApiError(
                406,
                "chat_interface_not_configured",
                "The genie has no custom chat interface client attached.",
            )
        conv = self.store.create_conversation(ctx.handle, ctx.user_id)
        return ctx.json(_conversation_summary(conv), 201)

    async def list_conversations(self, ctx: Ctx) -> Answer:
        """E2 ``GET /conversations``: newest first, ``limit``/``cursor``."""
        limit = ctx.int_query("limit", 20, 100)
        before = _decode_cursor(ctx.request.query_params.get("cursor"))
        mine = sorted(
            (
                c
                for c in self.store.conversations.values()
                if c.user_id == ctx.user_id and c.genie_handle == ctx.handle
            ),
            key=lambda c: c.conversation_id,
            reverse=True,
        )
        candidates = [c for c in mine if before is None or c.conversation_id < before]
        page = candidates[:limit]
        body: dict[str, object] = {
            "list": [_conversation_summary(c) for c in page],
            "total_count": len(mine),
        }
        if len(candidates) > limit:
            body["cursor"] = _encode_cursor(page[-1].conversation_id)
        return ctx.json(body)

    async def get_conversation(self, ctx: Ctx) -> Answer:
        """E3 ``GET /conversations/{id}``: ``state`` and ``last_event``."""
        conv = ctx.conversation()
        last = conv.last_event
        body: dict[str, object] = {
            **_conversation_summary(conv),
            "genie_handle": conv.genie_handle,
            "state": self.store.state_of(conv),
            "last_event": json.loads(last.json) if last is not None else None,
            "updated_at": iso(conv.updated_us),
        }
        if self.store.config.omit_conversation_id:
            del body["conversation_id"]  # observed in production
        return ctx.json(body)

    async def delete_conversation(self, ctx: Ctx) -> Answer:
        """E4 ``DELETE /conversations/{id}``: ``204``; stops its run and streams."""
        self.store.delete_conversation(ctx.conversation())
        return Response(status_code=204)

    # -- E5..E9 -----------------------------------------------------------------------------

    async def send_message(self, ctx: Ctx) -> Answer:
        """E5 ``POST /conversations/{id}/messages``: SSE (``stream: true``) or ``202``."""
        conv = ctx.conversation()
        body = await ctx.body_json()
        message = body.get("message")
        if message is None or (isinstance(message, str) and not message.strip()):
            raise bad_request("Message must not be empty.", "message_empty")
        if not isinstance(message, str):
            raise bad_request("message must be a string.")
        if len(message) > MAX_MESSAGE_CHARS:
            raise bad_request(
                f"Message is longer than {MAX_MESSAGE_CHARS} characters.", "message_too_long"
            )
        file_id = body.get("file_id")
        if (
            file_id is not None
            and file_id != ""
            and (not isinstance(file_id, str) or file_id not in conv.files)
        ):
            raise bad_request("Unknown file_id.", "invalid_file_id")
        stream = body.get("stream")
        if stream is None:
            # Not documented; follow what the client asked for with its Accept header.
            stream = "text/event-stream" in ctx.request.headers.get("accept", "")
        if not isinstance(stream, bool):
            raise bad_request("stream must be a boolean.")
        if conv.active_run is not None:
            raise ApiError(409, "conversation_busy", "The conversation has a run in progress.")
        run = self.store.start_run(
            conv, message, parse_script(message), file_id or None, ctx.base_url
        )
        if stream:
            return SseStream(self.store, run, 0, ctx.request_id)
        return ctx.json({"conversation_id": conv.conversation_id, "genie_run_id": run.run_id}, 202)

    async def list_messages(self, ctx: Ctx) -> Answer:
        """E6 ``GET /conversations/{id}/messages``: newest first, ``limit``/``cursor``."""
        conv = ctx.conversation()
        limit = ctx.int_query("limit", 50, 200)
        before = _decode_cursor(ctx.request.query_params.get("cursor"))
        newest_first = reversed(conv.messages)
        candidates = (m for m in newest_first if before is None or m.message_id < before)
        page = list(itertools.islice(candidates, limit + 1))
        more = len(page) > limit
        page = page[:limit]
        return ctx.json(
            {
                "messages": [m.as_json() for m in page],
                "total_count": len(conv.messages),
                "cursor": _encode_cursor(page[-1].message_id) if more else None,
            }
        )

    async def upload(self, ctx: Ctx) -> Answer:
        """E7 ``POST /conversations/{id}/upload``: multipart part ``file`` -> ``file_id``."""
        conv = ctx.conversation()
        boundary = boundary_of(ctx.request.headers.get("content-type", ""))
        if boundary is None:
            raise bad_request("Expected multipart/form-data with a boundary.")
        # Read (and, past the limit, discard) the whole body: answering before the client
        # has finished sending would make it see a broken pipe instead of the 413.
        chunks: list[bytes] = []
        size = 0
        cap = MAX_UPLOAD_BYTES + _UPLOAD_SLACK_BYTES
        async for chunk in ctx.request.stream():
            size += len(chunk)
            if size <= cap:
                chunks.append(chunk)
        if size > cap:
            raise ApiError(413, "file_too_large", "The file exceeds the 20 MB limit.")
        part = find_part(b"".join(chunks), boundary, "file")
        if part is None:
            raise bad_request('Missing multipart part "file".')
        if len(part.content) > MAX_UPLOAD_BYTES:
            raise ApiError(413, "file_too_large", "The file exceeds the 20 MB limit.")
        record = UploadedFile(
            file_id=self.store.ids.new("file"),
            filename=part.filename,
            content_type=part.content_type,
            size=len(part.content),
        )
        conv.files[record.file_id] = record
        return ctx.json(
            {"file_id": record.file_id, "filename": record.filename, "size": record.size}
        )

    async def reconnect(self, ctx: Ctx) -> Answer:
        """E8 ``GET /conversations/{id}/genie-runs/{run}``: replay after ``Last-Event-ID``."""
        conv = ctx.conversation()
        run = self._run_of(conv, ctx.param("genie_run_id"))
        if self.store.run_expired(run):
            raise ApiError(404, "run_not_found", "Genie run not found or its events expired.")
        last_event_id = ctx.request.headers.get("last-event-id", "").strip()
        start = 0
        if last_event_id:
            position = run.index.get(last_event_id)
            if position is None:
                raise bad_request(
                    "Last-Event-ID is not an event of this run.", "invalid_last_event_id"
                )
            start = position + 1
        return SseStream(self.store, run, start, ctx.request_id)

    async def events(self, ctx: Ctx) -> Answer:
        """E9 ``GET /conversations/events``: persisted events after ``since_created_at``."""
        query = ctx.request.query_params
        limit = ctx.int_query("limit", 100, 500)
        since_raw = query.get("since_created_at")
        lower = self.store.retention_cutoff_us()
        if since_raw:
            try:
                lower = max(lower, parse_iso(since_raw))
            except ValueError:
                raise bad_request("since_created_at must be an ISO-8601 timestamp.") from None
        conv_id = query.get("conversation_id")
        if conv_id:
            convs = [self.store.visible_conversation(ctx.handle, conv_id, ctx.user_id)]
        else:
            convs = [
                c
                for c in self.store.conversations.values()
                if c.user_id == ctx.user_id and c.genie_handle == ctx.handle
            ]

        def after(conv: Conversation) -> Iterator[Event]:
            events = conv.events
            return (events[i] for i in range(bisect_right(conv.event_times, lower), len(events)))

        merged = heapq.merge(*(after(c) for c in convs), key=lambda e: e.created_us)
        page = list(itertools.islice(merged, limit + 1))
        text = '{"events":[' + ",".join(e.json for e in page[:limit]) + "]"
        if len(page) > limit and self.store.config.events_paging:
            text += f',"next_since_created_at":"{iso(page[limit - 1].created_us)}"'
        return ctx.raw_json(text + "}")

    # -- E10..E14 ---------------------------------------------------------------------------

    async def skill_approval(self, ctx: Ctx) -> Answer:
        """E10 ``POST /conversations/{id}/skill_approval/{call_id}``: ``200`` empty body."""
        conv = ctx.conversation()
        call = self.store.calls.get(ctx.param("call_id"))
        if call is None or call.run.conversation is not conv:
            raise ApiError(404, "call_not_found", "Skill call not found.")
        approved, reason = _require_resolution(await ctx.body_json())
        if call.resolved:
            repeat = self.store.config.repeat_decision
            if repeat == "409":
                raise ApiError(409, "invalid_state", "The skill call is not awaiting approval.")
            if repeat == "400":
                raise bad_request("The skill call is not awaiting approval.")
            if repeat == "200":
                return Response(status_code=200)  # nothing is applied a second time
            raise ApiError(
                409, "skill_call_already_resolved", "This skill call was already resolved."
            )
        self.store.apply_decision(call, Decision(approved, reason))
        return Response(status_code=200)

    async def auth_link(self, ctx: Ctx) -> Answer:
        """E11 ``POST /runtime_connection/{attempt}/link``: a fresh one-time auth link."""
        if self.store.config.auth_link_404:
            raise ApiError(404, "not_found", "Not Found")  # observed in production
        attempt = self._visible_attempt(ctx)
        if attempt.status == "authorized":
            return ctx.json({"status": "authorized"})
        if attempt.status == "rejected":
            raise ApiError(
                409, "connection_already_resolved", "This connection request was declined."
            )
        link = self.store.issue_link(attempt, ctx.base_url)
        return ctx.json({"status": "auth_required", "auth_link": link})

    async def connection_reject(self, ctx: Ctx) -> Answer:
        """E12 ``POST /runtime_connection/{attempt}/reject``: ``204``."""
        attempt = self._visible_attempt(ctx)
        await ctx.body_json()
        if attempt.status != "pending":
            raise ApiError(
                409, "connection_already_resolved", "This connection request is already resolved."
            )
        self.store.reject_connection(attempt)
        return Response(status_code=204)

    async def business_approval(self, ctx: Ctx) -> Answer:
        """E13: no script produces business approvals, so every call id is unknown."""
        ctx.conversation()
        _require_resolution(await ctx.body_json())
        raise ApiError(404, "call_not_found", "Business approval call not found.")

    async def feedback(self, ctx: Ctx) -> Answer:
        """E14 ``POST /conversations/{id}/genie-runs/{run}/feedback``: ``204``."""
        run = self._run_of(ctx.conversation(), ctx.param("genie_run_id"))
        body = await ctx.body_json()
        reaction = body.get("reaction")
        if reaction not in ("positive", "negative"):
            raise bad_request('reaction must be "positive" or "negative".')
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise bad_request("comment must be a string.")
        run.feedback = {"reaction": reaction, "comment": comment}
        return Response(status_code=204)

    # -- admin ------------------------------------------------------------------------------

    async def admin_health(self, request: Request) -> Response:
        """``GET /_sim/health``."""
        return Response('{"ok":true}', media_type="application/json")

    async def admin_stats(self, request: Request) -> Response:
        """``GET /_sim/stats``."""
        return Response(dumps(self.store.snapshot()), media_type="application/json")

    async def admin_faults(self, request: Request) -> Response:
        """``POST`` adds a fault, ``DELETE`` clears all, ``GET`` lists them."""
        faults = self.store.faults
        if request.method == "DELETE":
            faults.clear()
            return Response('{"ok":true}', media_type="application/json")
        if request.method == "GET":
            return Response(dumps({"faults": faults.active()}), media_type="application/json")
        try:
            spec = json.loads(await request.body())
            if not isinstance(spec, dict):
                raise ValueError("fault must be a JSON object")
            fault = faults.add(spec)
        except ValueError as e:
            return error_response(400, "invalid_fault", str(e), request_id_of(request))
        return Response(dumps(fault.public()), status_code=201, media_type="application/json")

    async def admin_reset(self, request: Request) -> Response:
        """``POST /_sim/reset``."""
        self.store.reset()
        return Response('{"ok":true}', media_type="application/json")

    async def admin_clock(self, request: Request) -> Response:
        """``POST /_sim/clock`` ``{"advance_seconds": N}``; ``GET`` reads the clock."""
        clock = self.store.clock
        if request.method == "POST":
            try:
                body = json.loads(await request.body())
                seconds = body["advance_seconds"]
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    raise TypeError("advance_seconds must be a number")
                if not math.isfinite(seconds) or seconds < 0:
                    raise ValueError("advance_seconds must be a finite number >= 0")
            except (ValueError, KeyError, TypeError) as e:
                return error_response(400, "invalid_request", str(e), request_id_of(request))
            self.store.advance_clock(float(seconds))
        return Response(
            dumps({"now": iso(clock.now_us()), "offset_seconds": clock.offset_seconds}),
            media_type="application/json",
        )

    async def admin_rotate_key(self, request: Request) -> Response:
        """``POST /_sim/rotate_key`` ``{"api_key"?, "settle_seconds"?}``: a key rotation.

        The new key (or, without ``api_key``, the same one, as if re-issued) is refused
        with transient ``403``/``401`` answers for ``settle_seconds`` (default
        ``--auth-settle-seconds``); a replaced key is refused for good at once.
        """
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise TypeError("body must be a JSON object")
            unknown = set(body) - {"api_key", "settle_seconds"}
            if unknown:
                raise ValueError(f"unknown fields: {sorted(unknown)}")
            key = body.get("api_key")
            if key is not None and (not isinstance(key, str) or not key or " " in key):
                raise ValueError("api_key must be a non-empty string without spaces")
            settle = body.get("settle_seconds", self.store.config.auth_settle_seconds)
            if isinstance(settle, bool) or not isinstance(settle, int | float):
                raise TypeError("settle_seconds must be a number")
            if not math.isfinite(settle) or settle < 0:
                raise ValueError("settle_seconds must be a finite number >= 0")
        except (ValueError, TypeError) as e:
            return error_response(400, "invalid_request", str(e), request_id_of(request))
        self.store.rotate_key(key, float(settle))
        return Response(
            dumps({"ok": True, "settle_seconds": float(settle)}), media_type="application/json"
        )

    async def admin_connect(self, request: Request) -> Response:
        """``GET /_sim/connect/{attempt}?token=``: the auth link a user opens."""
        attempt = self.store.attempts.get(request.path_params["attempt_id"])
        if attempt is None:
            return _html(404, "Unknown connection request", "This link is not valid.")
        if attempt.status != "pending":
            return _html(409, "Already used", f"This connection request is {attempt.status}.")
        expires = attempt.tokens.get(request.query_params.get("token", ""))
        if expires is None:
            return _html(404, "Invalid link", "This link is not valid.")
        if expires <= self.store.clock.now_us():
            return _html(410, "Link expired", "Ask the genie for a new link.")
        self.store.complete_connection(attempt)
        return _html(
            200, "Connected", f"Connected to {attempt.connector}. You can close this window."
        )

    def routes(self) -> list[BaseRoute]:
        """Every route; ``/conversations/events`` precedes ``/conversations/{id}``."""
        conv = "/conversations/{conversation_id}"
        run = conv + "/genie-runs/{genie_run_id}"
        api = self.route
        return [
            api("/conversations", "POST", "create_conversation", self.create_conversation),
            api("/conversations", "GET", "list_conversations", self.list_conversations),
            api("/conversations/events", "GET", "events", self.events),
            api(conv, "GET", "get_conversation", self.get_conversation),
            api(conv, "DELETE", "delete_conversation", self.delete_conversation),
            api(conv + "/messages", "POST", "send_message", self.send_message),
            api(conv + "/messages", "GET", "list_messages", self.list_messages),
            api(conv + "/upload", "POST", "upload", self.upload),
            api(run, "GET", "reconnect", self.reconnect),
            api(run + "/feedback", "POST", "feedback", self.feedback),
            api(conv + "/skill_approval/{call_id}", "POST", "skill_approval", self.skill_approval),
            api(
                conv + "/business_approval/{call_id}",
                "POST",
                "business_approval",
                self.business_approval,
            ),
            api("/runtime_connection/{attempt_id}/link", "POST", "auth_link", self.auth_link),
            api(
                "/runtime_connection/{attempt_id}/reject",
                "POST",
                "connection_reject",
                self.connection_reject,
            ),
            Route("/_sim/health", self.admin_health, methods=["GET"]),
            Route("/_sim/stats", self.admin_stats, methods=["GET"]),
            Route("/_sim/faults", self.admin_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/reset", self.admin_reset, methods=["POST"]),
            Route("/_sim/clock", self.admin_clock, methods=["GET", "POST"]),
            Route("/_sim/rotate_key", self.admin_rotate_key, methods=["POST"]),
            Route("/_sim/connect/{attempt_id}", self.admin_connect, methods=["GET"]),
        ]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        str(exc.detail),
        request_id_of(request),
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "Internal error.", request_id_of(request))


def create_app(config: SimConfig) -> Starlette:
    """Build the simulator application.

    Args:
        config: Simulator configuration.

    Returns:
        A Starlette app; its :class:`~genie_sim._store.Store` is ``app.state.store``.
    """
    store = Store(config, run_script)
    api = _Api(store)
    app = Starlette(
        routes=api.routes(),
        middleware=[
            *([Middleware(GzipAnswers)] if config.gzip else []),
            Middleware(RequestIdMiddleware),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.store = store
    return app
