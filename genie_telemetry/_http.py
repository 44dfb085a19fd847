"""Spans for the Headless API requests (``opentelemetry-instrumentation-httpx``).

What the instrumentation records per request: method, the URL (path and query; it
strips user:password and known signature parameters, and the API puts no secret in a
URL: ids, a cursor, a timestamp), host, port, status code and an error type. Never the
body (the message text, skill parameters) and, by default, no header. An operator who
opts into header capture (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_*``) still
never gets the API key or the user id: they are overwritten here, whatever
``..._SANITIZE_FIELDS`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from genie_telemetry._ids import activity_ids
from genie_telemetry._tracing import tracing_on

if TYPE_CHECKING:
    from opentelemetry.trace import Span

SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-idp-user-id"}
)
"""Headers whose values never reach a span (the API key, the end user's id)."""
_REDACTED = ["[REDACTED]"]
_API_PREFIX = "/api/v1/genies/"
_ROUTE_WORDS = frozenset(
    {
        "chat",
        "conversations",
        "messages",
        "upload",
        "genie-runs",
        "events",
        "skill_approval",
        "business_approval",
        "runtime_connection",
        "link",
        "reject",
        "feedback",
    }
)
"""Fixed path segments of the Headless API; any other segment is an id."""


def instrument_http(client: httpx.AsyncClient) -> None:
    """Trace each request of ``client`` (a no-op when traces are off)."""
    if not tracing_on():
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(
        client, request_hook=_on_request, response_hook=_on_response
    )


def route(path: str) -> str:
    """``/api/v1/genies/gin-1/chat/conversations/c-9/messages`` ->
    ``/genies/{genie}/chat/conversations/{id}/messages``: a span name that groups."""
    if not path.startswith(_API_PREFIX):
        return "/" + path.lstrip("/").split("?", 1)[0].split("/", 1)[0]
    parts = path[len(_API_PREFIX) :].split("?", 1)[0].split("/")
    named = ["{genie}", *(p if p in _ROUTE_WORDS else "{id}" for p in parts[1:])]
    return "/genies/" + "/".join(named)


async def _on_request(span: Span, request: Any) -> None:
    # Async: the instrumentation calls only async hooks for an AsyncClient.
    if not span.is_recording():
        return
    method = request.method.decode() if isinstance(request.method, bytes) else str(request.method)
    span.update_name(f"{method} {route(httpx.URL(request.url).path)}")
    ids = activity_ids()
    if ids:
        span.set_attributes(ids)
    _redact(span, "http.request.header.")


async def _on_response(span: Span, request: Any, response: Any) -> None:
    if span.is_recording():
        _redact(span, "http.response.header.")


def _redact(span: Span, prefix: str) -> None:
    """Overwrite any captured sensitive header (the instrumentation set it already)."""
    recorded: Mapping[str, object] = getattr(span, "attributes", None) or {}
    for name in SENSITIVE_HEADERS:
        key = prefix + name.replace("-", "_")
        if key in recorded:
            span.set_attribute(key, _REDACTED)
