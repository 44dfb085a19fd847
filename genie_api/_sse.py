"""Server-Sent Events: opening a run stream (E5/E8) and turning frames into typed events.

Framing is left to httpx-sse (its line and field decoders), which handles ``\\r\\n``,
multi-line ``data`` and comments. What it does not do, and this module adds:

* status and content-type checks before any byte is read, so HTTP errors become typed
  exceptions built from the JSON error body and a 200 that is not ``text/event-stream``
  becomes a retryable :class:`ProtocolError`; opening (status line, headers, an error
  body) has a deadline and an error body a size limit;
* the body read raw and its ``Content-Encoding`` undone in bounded steps (see
  :mod:`genie_api._decode`; a coding the client does not decode is refused on opening),
  then decoded as UTF-8, so a compressed bomb stops at the frame bound below;
* bounds on the peer: a frame (or a line that never ends) over ``max_event_chars`` is a
  :class:`ProtocolError`, and a stream that completes no frame within its read timeout
  is a :class:`TransportError` even while bytes trickle in (httpx's read timeout counts
  per read, so one byte every 40 s would never trip it);
* ``type`` taken from inside ``data`` (the SSE ``event:`` name only as a fallback), and
  the SSE ``id`` deliberately ignored: it is sticky across frames (``system.ping`` has no
  ``id:`` and would inherit the previous one), so ``event_id`` inside ``data`` is used;
* a literal ``[DONE]`` and empty frames are skipped;
* malformed data raises :class:`ProtocolError` naming the conversation, the run, the
  event id and what is wrong, never the data itself (it is conversation content);
  transport failures raise :class:`TransportError`.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pydantic_core
from httpx_sse import ServerSentEvent, aconnect_sse

# The decoders behind ``EventSource.aiter_sse``, used directly so each frame's size and
# arrival can be bounded; httpx-sse is pinned below 0.5 in pyproject.toml.
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from pydantic import ValidationError

from genie_api._decode import aiter_decoded, content_coding
from genie_api._errors import ProtocolError, TransportError, truncate
from genie_api._events import _REGISTRY, GenieEvent, UnknownEvent, invalid_event
from genie_api._http import (
    RequestContext,
    error_from_response,
    logger,
    read_error_body,
    transport_error,
)

_FINISHED = "processing.finished"

# The schema validators' own ``validate_json``: what ``Model.model_validate_json`` calls,
# minus a Python wrapper frame per event.
_VALIDATE_JSON: dict[str, Callable[[str], Any]] = {
    name: cls.__pydantic_validator__.validate_json for name, cls in _REGISTRY.items()
}
_DEFAULT_SSE_EVENT = "message"  # httpx-sse's name for a frame without ``event:``


def _malformed(ctx: RequestContext, reason: str, data: str, obj: Any = None) -> ProtocolError:
    # What is wrong and where, never the data: it is the conversation (a message, a
    # skill's parameters), and this text reaches logs and Temporal failures.
    where = ""
    if isinstance(obj, dict) and isinstance(obj.get("event_id"), str):
        where = f" in event {truncate(ctx.redact(obj['event_id']), 100)}"
    return ProtocolError(
        f"malformed SSE data on {ctx.describe()}{where}: {reason} ({len(data)} chars)",
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
            raise _malformed(ctx, f"data is not JSON ({truncate(str(exc), 100)})", data) from None
        if not isinstance(obj, dict):
            raise _malformed(ctx, "data is not a JSON object", data)
    event_type = obj.get("type")
    if not isinstance(event_type, str) or not event_type:
        if sse_event and sse_event != _DEFAULT_SSE_EVENT:
            obj["type"] = event_type = sse_event
        else:
            raise _malformed(ctx, "event has no 'type'", data, obj)
    try:
        return _REGISTRY.get(event_type, UnknownEvent).model_validate(obj)
    except ValidationError as exc:
        raise _malformed(ctx, invalid_event(event_type, exc), data, obj) from None


def _oversize(ctx: RequestContext, limit: int) -> ProtocolError:
    return ProtocolError(
        f"SSE frame over {limit} chars on {ctx.describe()}",
        retryable=False,
        **ctx.error_kwargs(),
    )


async def _texts(response: httpx.Response, ctx: RequestContext) -> AsyncGenerator[str, None]:
    """The stream's text, at most :data:`~genie_api._decode.STEP` chars a piece.

    SSE is UTF-8 whatever the content type says; a sequence split across pieces is
    joined, an invalid one becomes U+FFFD.
    """
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    pieces = aiter_decoded(response, ctx)
    try:
        async for piece in pieces:
            text = utf8.decode(piece)
            if text:
                yield text
        text = utf8.decode(b"", True)
        if text:
            yield text
    finally:
        await pieces.aclose()


async def _frames(
    response: httpx.Response, ctx: RequestContext, *, max_chars: int, idle: float | None
) -> AsyncGenerator[ServerSentEvent, None]:
    """The stream's SSE frames, as ``EventSource.aiter_sse`` gives them, but bounded.

    Raises:
        ProtocolError: A frame, or a line not yet ended, holds more than ``max_chars``.
        TransportError: No frame (nor comment line, a keep-alive) for ``idle`` seconds.
    """
    loop = asyncio.get_running_loop()
    lines = SSELineDecoder()
    fields = SSEDecoder()
    chunks = _texts(response, ctx)
    pending = 0  # chars of the line that has not ended yet
    frame = 0  # chars of the frame's ended lines

    def next_deadline() -> float | None:
        return None if idle is None else loop.time() + idle

    def idle_error() -> TransportError:
        return TransportError(
            f"no complete SSE frame within {idle or 0:g} s on {ctx.describe()}",
            retryable=True,
            **ctx.error_kwargs(),
        )

    deadline = next_deadline()
    first = True
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    text = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise idle_error() from None
            if first and text:
                # The SSE spec ignores one leading byte order mark; the UTF-8 decoder
                # keeps it, and the first field name would then not match.
                first = False
                text = text.removeprefix("\ufeff")
                if not text:
                    continue
            ended = lines.decode(text)
            if ended:
                pending = len(text) - 1 - max(text.rfind("\n"), text.rfind("\r"))
            else:
                pending += len(text)
            for line in ended:
                if not line:
                    frame = 0
                elif line.startswith(":"):
                    deadline = next_deadline()  # a comment: the peer's keep-alive
                else:
                    frame += len(line) + 1
                    if frame > max_chars:
                        raise _oversize(ctx, max_chars)
                sse = fields.decode(line)
                if sse is not None:
                    yield sse
                    deadline = next_deadline()  # counted from when we read again
            if frame + pending > max_chars:
                raise _oversize(ctx, max_chars)
            if deadline is not None and loop.time() > deadline:
                # Steps inflated from bytes already read need not suspend, so the timeout
                # above may not fire while, say, a compressed run of blank lines unpacks.
                raise idle_error()
        for line in lines.flush():
            sse = fields.decode(line)
            if sse is not None:
                yield sse
    finally:
        await chunks.aclose()


async def iter_events(
    response: httpx.Response, ctx: RequestContext, *, max_chars: int, idle: float | None
) -> AsyncGenerator[GenieEvent, None]:
    """Yield typed events from an open stream until ``processing.finished`` or EOF.

    ``ctx.genie_run_id`` is filled in from the first event that names the run, so later
    errors can name it.

    Raises:
        ProtocolError: Malformed data or an oversized frame (not retryable).
        TransportError: The connection failed, timed out or completed no frame within
            ``idle`` seconds mid-stream (retryable).
    """
    frames = _frames(response, ctx, max_chars=max_chars, idle=idle)
    try:
        async for sse in frames:
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
    finally:
        await frames.aclose()


@asynccontextmanager
async def open_event_stream(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    ctx: RequestContext,
    timeout: httpx.Timeout,  # noqa: ASYNC109 - httpx's per-phase timeouts, not a deadline
    open_within: float,
    max_error_body_bytes: int,
    max_event_chars: int,
    json: Any = None,
) -> AsyncIterator[AsyncIterator[GenieEvent]]:
    """Open an SSE request and yield an iterator of typed events.

    Everything that can go wrong before the first byte of the body (connect errors,
    HTTP error statuses, a non-SSE 200, no headers within ``open_within`` seconds)
    raises here, on entry, so callers can tell "never opened" apart from "broke
    mid-stream". ``timeout.read`` is also the longest wait for a complete frame.
    """
    stack = AsyncExitStack()
    try:
        async with asyncio.timeout(open_within):
            source = await stack.enter_async_context(
                aconnect_sse(http, method, url, headers=headers, json=json, timeout=timeout)
            )
            response = source.response
            if response.status_code >= 300:
                content = await read_error_body(response, max_error_body_bytes, ctx)
                raise error_from_response(response, ctx, content)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            # The body is not read: its size is the peer's choice, and a page may echo
            # the request.
            raise ProtocolError(
                f"expected text/event-stream from {ctx.describe()}, got HTTP "
                f"{response.status_code} {truncate(ctype, 100) or 'without content-type'}",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
                retryable=True,
                **ctx.error_kwargs(),
            )
        content_coding(response, ctx)  # one the client cannot decode is refused on entry
    except TimeoutError:
        await stack.aclose()
        raise TransportError(
            f"stream not open within {open_within:g} s on {ctx.describe()}",
            retryable=True,
            **ctx.error_kwargs(),
        ) from None
    except httpx.HTTPError as exc:
        await stack.aclose()
        raise transport_error(exc, ctx) from exc
    except BaseException:
        await stack.aclose()
        raise
    logger.debug("stream opened: %s", ctx.describe())
    async with stack:
        events = iter_events(response, ctx, max_chars=max_event_chars, idle=timeout.read)
        try:
            yield events
        finally:
            await events.aclose()
