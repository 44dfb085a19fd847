"""Server-Sent Events: opening a run stream (E5/E8) and turning frames into typed events.

Framing is left to httpx-sse (``aconnect_sse`` / ``EventSource``), which handles ``\\r\\n``,
multi-line ``data`` and comments. What it does not do, and this module adds:

* status and content-type checks before any byte is read, so HTTP errors become typed
  exceptions built from the JSON error body and a 200 that is not ``text/event-stream``
  becomes a retryable :class:`ProtocolError`;
* ``type`` taken from inside ``data`` (the SSE ``event:`` name only as a fallback), and
  the SSE ``id`` deliberately ignored: it is sticky across frames (``system.ping`` has no
  ``id:`` and would inherit the previous one), so ``event_id`` inside ``data`` is used;
* a literal ``[DONE]`` and empty frames are skipped;
* malformed data raises :class:`ProtocolError` naming the conversation, the run and the
  offending line; transport failures raise :class:`TransportError`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pydantic_core
from httpx_sse import EventSource, aconnect_sse
from pydantic import ValidationError

from genie_api._errors import ProtocolError, truncate
from genie_api._events import _REGISTRY, GenieEvent, UnknownEvent
from genie_api._http import RequestContext, error_from_response, logger, transport_error

_FINISHED = "processing.finished"

# The schema validators' own ``validate_json``: what ``Model.model_validate_json`` calls,
# minus a Python wrapper frame per event.
_VALIDATE_JSON: dict[str, Callable[[str], Any]] = {
    name: cls.__pydantic_validator__.validate_json for name, cls in _REGISTRY.items()
}
_DEFAULT_SSE_EVENT = "message"  # httpx-sse's name for a frame without ``event:``


def _malformed(ctx: RequestContext, reason: str, line: str) -> ProtocolError:
    return ProtocolError(
        f"malformed SSE data on {ctx.describe()}: {reason}; "
        f"line: {truncate(ctx.redact(line), 200)!r}",
        retryable=False,
        **ctx.error_kwargs(),
    )


def decode_frame(data: str, sse_event: str, ctx: RequestContext) -> GenieEvent | None:
    """Turn one SSE frame's ``data`` into a typed event.

    Args:
        data: The frame's joined ``data`` lines.
        sse_event: The frame's ``event:`` name (httpx-sse reports ``"message"`` if absent).
        ctx: Call context for error messages.

    Returns:
        The event, or ``None`` for frames that carry nothing (empty data, ``[DONE]``).

    Raises:
        ProtocolError: ``data`` is not a JSON object, has no type, or has invalid fields.
    """
    # Fast path, taken by practically every frame: the ``event:`` name names a known type,
    # so the model is built straight from the JSON text in one pass (no intermediate dict).
    # Anything unusual (no/other ``type`` in data, invalid JSON) falls through to the
    # careful path below, which decides and reports precisely.
    validate = _VALIDATE_JSON.get(sse_event)
    if validate is not None and data:
        try:
            event: GenieEvent = validate(data)
        except ValidationError:
            pass
        else:
            if event.type == sse_event:
                return event
    if not data or data.isspace() or data == "[DONE]":
        if sse_event and sse_event != _DEFAULT_SSE_EVENT and not data:
            # ``event: system.ping`` with no data still says something.
            obj: Any = {"type": sse_event}
        else:
            return None
    else:
        try:
            obj = pydantic_core.from_json(data)
        except ValueError as exc:
            raise _malformed(ctx, f"data is not JSON ({exc})", f"data: {data}") from None
        if not isinstance(obj, dict):
            raise _malformed(ctx, "data is not a JSON object", f"data: {data}")
    event_type = obj.get("type")
    if not isinstance(event_type, str) or not event_type:
        if sse_event and sse_event != _DEFAULT_SSE_EVENT:
            obj["type"] = event_type = sse_event
        else:
            raise _malformed(ctx, "event has no 'type'", f"data: {data}")
    try:
        return _REGISTRY.get(event_type, UnknownEvent).model_validate(obj)
    except ValidationError as exc:
        reason = f"invalid {event_type!r} event ({exc.error_count()} field error(s): "
        reason += ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()) + ")"
        raise _malformed(ctx, reason, f"data: {data}") from None


async def iter_events(source: EventSource, ctx: RequestContext) -> AsyncGenerator[GenieEvent, None]:
    """Yield typed events from an open stream until ``processing.finished`` or EOF.

    ``ctx.genie_run_id`` is filled in from the first event that names the run, so later
    errors can name it.

    Raises:
        ProtocolError: Malformed data (not retryable).
        TransportError: The connection failed or timed out mid-stream (retryable).
    """
    try:
        async for sse in source.aiter_sse():
            event = decode_frame(sse.data, sse.event, ctx)
            if event is None:
                continue
            if ctx.genie_run_id is None and event.genie_run_id is not None:
                ctx.genie_run_id = event.genie_run_id
            yield event
            if event.type == _FINISHED:
                # The server closes after this; do not wait on a proxy that keeps it open.
                return
    except httpx.HTTPError as exc:
        raise transport_error(exc, ctx) from exc


@asynccontextmanager
async def open_event_stream(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    ctx: RequestContext,
    timeout: httpx.Timeout,  # noqa: ASYNC109 - httpx's per-phase timeouts, not a deadline
    json: Any = None,
) -> AsyncIterator[AsyncIterator[GenieEvent]]:
    """Open an SSE request and yield an iterator of typed events.

    Everything that can go wrong before the first byte of the body (connect errors,
    HTTP error statuses, a non-SSE 200) raises here, on entry, so callers can tell
    "never opened" apart from "broke mid-stream".
    """
    stack = AsyncExitStack()
    try:
        source = await stack.enter_async_context(
            aconnect_sse(http, method, url, headers=headers, json=json, timeout=timeout)
        )
        response = source.response
        if response.status_code >= 300:
            await response.aread()
            raise error_from_response(response, ctx)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            content = await response.aread()
            snippet = ctx.redact(content[:200].decode("utf-8", "replace"))
            raise ProtocolError(
                f"expected text/event-stream from {ctx.describe()}, got HTTP "
                f"{response.status_code} {ctype or 'without content-type'}: "
                f"{truncate(snippet, 120)!r}",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
                retryable=True,
                **ctx.error_kwargs(),
            )
    except httpx.HTTPError as exc:
        await stack.aclose()
        raise transport_error(exc, ctx) from exc
    except BaseException:
        await stack.aclose()
        raise
    logger.debug("stream opened: %s", ctx.describe())
    async with stack:
        events = iter_events(source, ctx)
        try:
            yield events
        finally:
            await events.aclose()
