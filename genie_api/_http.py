"""HTTP plumbing shared by the REST calls and the streams: context, body and error mapping."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pydantic_core

from genie_api._decode import aiter_decoded
from genie_api._errors import (
    GenieAPIError,
    ProtocolError,
    TransportError,
    default_retryable_for_status,
    error_class_for_status,
    parse_retry_after,
    truncate,
)

logger = logging.getLogger("genie_api")


def _no_redaction(text: str) -> str:
    return text


@dataclass(slots=True)
class RequestContext:
    """What a call is about, for error messages and log lines (never headers)."""

    endpoint: str
    genie_handle: str | None = None
    conversation_id: str | None = None
    genie_run_id: str | None = None
    redact: Callable[[str], str] = field(default=_no_redaction, repr=False)

    def describe(self) -> str:
        """``"send_message (conversation conv_1, run run_2)"`` style description."""
        parts = []
        if self.conversation_id:
            parts.append(f"conversation {self.conversation_id}")
        parts.append(f"run {self.genie_run_id}" if self.genie_run_id else "run unknown")
        return f"{self.endpoint} ({', '.join(parts)})"

    def error_kwargs(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "genie_run_id": self.genie_run_id,
            "endpoint": self.endpoint,
        }


def _json_or_none(content: bytes) -> Any:
    if not content:
        return None
    try:
        return pydantic_core.from_json(content)
    except ValueError:
        return None


async def read_body(response: httpx.Response, limit: int, ctx: RequestContext) -> bytes | None:
    """Read a streamed response's body, or ``None`` (and stop reading) past ``limit`` bytes.

    httpx's ``aread`` keeps whatever the peer sends, and its decoders inflate a network
    chunk with no bound on the output; a broken or hostile server (or a gateway's error
    page, or a gzip bomb) could fill memory with one answer. The body is decoded here in
    bounded steps (:mod:`genie_api._decode`) and ``limit`` counts decoded bytes, so a
    compressed body cannot expand past it by more than one step either.

    Raises:
        ProtocolError: A content coding the client does not decode, or corrupt
            compressed data (not retryable).
    """
    chunks: list[bytes] = []
    size = 0
    pieces = aiter_decoded(response, ctx)
    try:
        async for piece in pieces:
            size += len(piece)
            if size > limit:
                return None
            chunks.append(piece)
    finally:
        await pieces.aclose()
    return b"".join(chunks)


async def read_error_body(response: httpx.Response, limit: int, ctx: RequestContext) -> bytes:
    """Read an error answer's body for :func:`error_from_response`, or ``b""`` if it is
    over ``limit`` bytes or cannot be decoded: the status alone then types the error, as
    a 503 must stay a retryable 503 whatever its page is wrapped in."""
    try:
        return await read_body(response, limit, ctx) or b""
    except ProtocolError:
        return b""


def _field(value: Any, ctx: RequestContext, limit: int) -> str | None:
    if value is None:
        return None
    return truncate(ctx.redact(value if isinstance(value, str) else str(value)), limit)


def error_from_response(
    response: httpx.Response, ctx: RequestContext, content: bytes | None = None
) -> GenieAPIError:
    """Build the typed error for an HTTP error response.

    The documented body is ``{"error_code", "error_message", "request_id"}``; a nested
    ``{"error": {...}}`` and a non-JSON body (e.g. a gateway's HTML page) are tolerated.

    Args:
        response: The answer.
        ctx: Call context.
        content: The body as read by :func:`read_body` (``None``: ``response.content``,
            which must have been read; ``b""`` for a body too large to keep or to decode).

    The error's text holds the status, the ``error_code`` and the ``request_id``, never
    the server's ``error_message``: a server or gateway may echo the request, and the
    request may be the user's message. That text is kept in ``err.error_message``.
    """
    status = response.status_code
    if content is None:
        content = response.content
    body = _json_or_none(content)
    fields: Mapping[str, Any] = {}
    if isinstance(body, Mapping):
        nested = body.get("error")
        fields = nested if isinstance(nested, Mapping) else body
    error_code = fields.get("error_code") or fields.get("code")
    error_message = fields.get("error_message") or fields.get("message")
    request_id = fields.get("request_id") or response.headers.get("x-request-id")
    if error_message is None and not isinstance(body, Mapping) and content:
        # A page, not JSON: its start (the cut is far beyond what is kept, so a
        # credential it splits is cut away again below, after redaction).
        error_message = content[:2000].decode("utf-8", "replace").strip()
    # Every field is redacted, not just the message: callers copy the code and the
    # request id into workflow state, and an echo of the request can land in any of
    # them. Redacted before truncated, so a cut cannot leave a credential's prefix.
    error_code = _field(error_code, ctx, 100)
    error_message = _field(error_message, ctx, 300)
    request_id = _field(request_id, ctx, 200)
    retry_after = parse_retry_after(
        response.headers.get("retry-after"), fields if isinstance(fields, Mapping) else None
    )
    cls = error_class_for_status(status)
    text = f"HTTP {status} from {ctx.describe()}"
    if error_code:
        text += f": {error_code}"
    if request_id:
        text += f" [request_id={request_id}]"
    return cls(
        text,
        status=status,
        error_code=error_code,
        error_message=error_message,
        request_id=request_id,
        retry_after=retry_after,
        retryable=default_retryable_for_status(status),
        **ctx.error_kwargs(),
    )


def transport_error(exc: httpx.HTTPError, ctx: RequestContext) -> TransportError:
    """Wrap an httpx transport failure (no complete response) as a retryable error."""
    # str(exc) holds no headers; it may hold the URL, which has no secrets but is redacted
    # anyway in case a caller put a token into a path segment.
    detail = ctx.redact(str(exc)) or type(exc).__name__
    return TransportError(
        f"{type(exc).__name__} on {ctx.describe()}: {truncate(detail, 200)}",
        retryable=True,
        **ctx.error_kwargs(),
    )


def unwrap_envelope(body: Any) -> Any:
    """Remove the observed gateway envelope ``{"result": …}`` if present."""
    if isinstance(body, dict) and "result" in body:
        inner = body["result"]
        if isinstance(inner, dict | list) or inner is None:
            return inner
    return body


def body_too_large(response: httpx.Response, ctx: RequestContext, limit: int) -> ProtocolError:
    """The error for a success body over the client's size limit (the same answer would
    come again, so not retryable)."""
    return ProtocolError(
        f"HTTP {response.status_code} body over {limit} bytes from {ctx.describe()}",
        status=response.status_code,
        request_id=response.headers.get("x-request-id"),
        retryable=False,
        **ctx.error_kwargs(),
    )


def parse_json_body(
    response: httpx.Response, ctx: RequestContext, content: bytes | None = None
) -> Any:
    """Decode a success body: ``None`` when empty, else JSON with the envelope removed.

    ``content`` is the body as read by :func:`read_body` (``None``: ``response.content``).

    Raises:
        ProtocolError: The body is not JSON (e.g. an HTML page from a gateway on a 200);
            retryable, since such hiccups are transient. Its text says what came (type,
            size), not what it said: a page may echo the request.
    """
    if content is None:
        content = response.content
    if not content or not content.strip():
        return None
    try:
        body = pydantic_core.from_json(content)
    except ValueError:
        ctype = response.headers.get("content-type", "?")
        raise ProtocolError(
            f"non-JSON body ({truncate(ctype, 100)}, {len(content)} bytes) with HTTP "
            f"{response.status_code} from {ctx.describe()}",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
            retryable=True,
            **ctx.error_kwargs(),
        ) from None
    return unwrap_envelope(body)
