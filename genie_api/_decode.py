"""Content decoding in bounded steps, for every body the client reads.

httpx undoes ``Content-Encoding`` one network chunk at a time with no bound on the
output: a 64 KiB chunk of a gzip bomb becomes 64 MiB before any limit of ours sees it.
Here the raw bytes are inflated with ``zlib``'s ``max_length``, so no step yields more
than :data:`STEP` bytes, and the size limits downstream (a body's bytes, an SSE frame's
chars) stop a bomb after at most one step beyond them.

What is decoded: ``identity``, ``gzip`` (also ``x-gzip``, and gzip members one after the
other) and ``deflate`` (zlib-wrapped, as RFC 9110 says, or raw, as some servers send it).
What is refused, as a non-retryable :class:`ProtocolError` naming the coding: any other
coding (``br``, ``zstd``, ``compress``, …) and a stack of codings (``gzip, gzip``), which
the client never asks for and would only multiply the expansion; corrupt compressed data
is refused the same way. Compressed data that stops before its end is the body cut
short, as by a dropped connection: a retryable :class:`TransportError`.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING

import httpx

from genie_api._errors import ProtocolError, TransportError, truncate

if TYPE_CHECKING:  # _http imports this module
    from genie_api._http import RequestContext

__all__ = ["ACCEPT_ENCODING", "STEP", "BoundedDecoder", "aiter_decoded", "content_coding"]

STEP = 64 * 1024
"""Most bytes one decoding step yields, whatever the peer's compression ratio."""

ACCEPT_ENCODING = "gzip, deflate"
"""What the client asks for: the codings :class:`BoundedDecoder` decodes."""

_ALIASES = {"x-gzip": "gzip"}
_DECODED = frozenset({"gzip", "deflate"})
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS


class DecodeError(ValueError):
    """The compressed data is corrupt or ends early (the reason holds no content)."""


class EndedEarly(DecodeError):
    """The body ended before its compressed data did: cut short on the way, as a dropped
    connection cuts a plain body, not malformed."""


def _refused(
    response: httpx.Response,
    ctx: RequestContext,
    what: str,
    kind: type[ProtocolError | TransportError] = ProtocolError,
) -> ProtocolError | TransportError:
    """``kind`` naming the answer and ``what`` is wrong with it: by default a final
    :class:`ProtocolError`; a :class:`TransportError` (retryable) for a cut-short body."""
    return kind(
        f"HTTP {response.status_code} {what} from {ctx.describe()}",
        status=response.status_code,
        request_id=response.headers.get("x-request-id"),
        retryable=kind is TransportError,
        **ctx.error_kwargs(),
    )


def content_coding(response: httpx.Response, ctx: RequestContext) -> str | None:
    """The one coding of ``response``'s body: ``"gzip"``, ``"deflate"`` or ``None``.

    Raises:
        ProtocolError: A coding the client does not decode, or more than one (not
            retryable: the same answer would come again).
    """
    tokens = response.headers.get_list("content-encoding", split_commas=True)
    codings = [_ALIASES.get(t, t) for t in (t.strip().lower() for t in tokens)]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    # The peer's own words, so redacted and cut, though a coding name is all they should be.
    named = truncate(ctx.redact(", ".join(codings)), 80)
    if len(codings) > 1:
        raise _refused(response, ctx, f"with stacked content encodings {named!r}")
    if codings[0] not in _DECODED:
        raise _refused(response, ctx, f"with unsupported content encoding {named!r}")
    return codings[0]


class BoundedDecoder:
    """Undo one content coding incrementally, ``step`` bytes of output at most per piece."""

    def __init__(self, coding: str | None, step: int = STEP) -> None:
        if coding is not None and coding not in _DECODED:
            raise ValueError(f"no bounded decoder for {coding!r}")
        self._coding = coding
        self._step = step
        self._inflater: zlib._Decompress | None = None
        self._head = b""  # deflate: the first bytes, until they tell zlib from raw

    def _start(self, data: bytes) -> zlib._Decompress:
        if self._coding == "gzip":
            return zlib.decompressobj(_GZIP_WBITS)
        # RFC 9110's deflate is zlib-wrapped; some servers send raw deflate. A zlib header
        # names method 8 in its low nibble and makes a multiple of 31 with its flag byte.
        cmf, flg = data[0], data[1]
        wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
        return zlib.decompressobj(_ZLIB_WBITS if wrapped else _RAW_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in pieces of at most ``step`` bytes.

        Raises:
            DecodeError: Corrupt compressed data, or data after the end of a deflate
                stream.
        """
        step = self._step
        if self._coding is None:
            for at in range(0, len(data), step):
                yield data[at : at + step]
            return
        if self._inflater is None:
            if self._coding == "deflate" and len(self._head) + len(data) < 2:
                self._head += data
                return
            data, self._head = self._head + data, b""
            if not data:
                return
            self._inflater = self._start(data)
        while True:
            inflater = self._inflater
            if inflater.eof:
                if not data:
                    return
                if self._coding != "gzip":
                    raise DecodeError(f"data after the end of the {self._coding} stream")
                self._inflater = inflater = zlib.decompressobj(_GZIP_WBITS)  # next member
            try:
                out = inflater.decompress(data, step)
            except zlib.error as exc:
                reason = truncate(str(exc), 80)
                raise DecodeError(f"corrupt {self._coding} data ({reason})") from None
            if inflater.eof:
                # What follows the end; ``unconsumed_tail`` may still hold it too.
                data = inflater.unused_data
            else:
                left = inflater.unconsumed_tail
                if not out and len(left) == len(data):
                    raise DecodeError(f"{self._coding} data that does not decode")
                data = left
            if out:
                yield out
            # Less than a full step with all input taken: nothing is held back in zlib.
            if not data and len(out) < step and not inflater.eof:
                return

    def end(self) -> None:
        """Check the body ended where the compressed data ends.

        Raises:
            EndedEarly: The compressed data stops short of its end.
        """
        if self._coding is None:
            return
        if self._head or (self._inflater is not None and not self._inflater.eof):
            raise EndedEarly(f"{self._coding} data that ends early")


async def aiter_decoded(
    response: httpx.Response, ctx: RequestContext, *, step: int = STEP
) -> AsyncGenerator[bytes, None]:
    """``response``'s body with its content coding undone, ``step`` bytes at most a piece.

    Raises:
        ProtocolError: An encoding the client does not decode, or corrupt compressed data
            (not retryable).
        TransportError: Compressed data that stops before its end (retryable).
    """
    coding = content_coding(response, ctx)
    try:
        body = response.content
    except httpx.ResponseNotRead:
        pass
    else:
        # Read already, so decoded already: only an answer built in memory, as a mock
        # transport's, comes this way; a network answer is read here, raw, first.
        for piece in BoundedDecoder(None, step).feed(body):
            yield piece
        return
    decoder = BoundedDecoder(coding, step)
    raw = response.aiter_raw()
    try:
        async for chunk in raw:
            for piece in decoder.feed(chunk):
                yield piece
        decoder.end()
    except EndedEarly as exc:
        # Retryable, as a connection dropped mid-body: a stream resumes from its cursor.
        raise _refused(response, ctx, f"body with {exc}", TransportError) from None
    except DecodeError as exc:
        raise _refused(response, ctx, f"body with {exc}") from None
    finally:
        await raw.aclose()  # type: ignore[attr-defined]
