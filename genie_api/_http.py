"""HTTP plumbing shared by the REST calls and the streams: context, body and error mapping."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pydantic_core

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


def error_from_response(response: httpx.Response, ctx: RequestContext) -> GenieAPIError:
    """Build the typed error for an HTTP error response whose body has been read.

    The documented body is ``{"error_code", "error_message", "request_id"}``; a nested
    ``{"error": {...}}`` and a non-JSON body (e.g. a gateway's HTML page) are tolerated.
    """
    status = response.status_code
    body = _json_or_none(response.content)
    fields: Mapping[str, Any] = {}
    if isinstance(body, Mapping):
        nested = body.get("error")
        fields = nested if isinstance(nested, Mapping) else body
    error_code = fields.get("error_code") or fields.get("code")
    error_message = fields.get("error_message") or fields.get("message")
    request_id = fields.get("request_id") or response.headers.get("x-request-id")
    if not isinstance(error_code, str):
        error_code = None if error_code is None else str(error_code)
    if not isinstance(error_message, str):
        if error_message is None and not isinstance(body, Mapping) and response.content:
            error_message = truncate(response.text.strip(), 200)
        else:
            error_message = None if error_message is None else str(error_message)
    if error_message is not None:
        error_message = ctx.redact(error_message)
    retry_after = parse_retry_after(
        response.headers.get("retry-after"), fields if isinstance(fields, Mapping) else None
    )
    cls = error_class_for_status(status)
    text = f"HTTP {status} from {ctx.describe()}"
    if error_code:
        text += f": {error_code}"
    if error_message:
        text += f" — {error_message}"
    if request_id:
        text += f" [request_id={request_id}]"
    return cls(
        text,
        status=status,
        error_code=error_code,
        error_message=error_message,
        request_id=str(request_id) if request_id is not None else None,
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


def parse_json_body(response: httpx.Response, ctx: RequestContext) -> Any:
    """Decode a success body: ``None`` when empty, else JSON with the envelope removed.

    Raises:
        ProtocolError: The body is not JSON (e.g. an HTML page from a gateway on a 200);
            retryable, since such hiccups are transient.
    """
    content = response.content
    if not content or not content.strip():
        return None
    try:
        body = pydantic_core.from_json(content)
    except ValueError:
        ctype = response.headers.get("content-type", "?")
        snippet = ctx.redact(content[:200].decode("utf-8", "replace"))
        raise ProtocolError(
            f"non-JSON body ({ctype}) with HTTP {response.status_code} from "
            f"{ctx.describe()}: {truncate(snippet, 120)!r}",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
            retryable=True,
            **ctx.error_kwargs(),
        ) from None
    return unwrap_envelope(body)
