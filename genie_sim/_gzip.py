"""``--gzip``: every answer compressed, as a gateway or CDN in front of the API may do.

Whether the live API compresses is not known; a client that asks for ``gzip`` (ours asks
for ``gzip, deflate``) must cope if it does, streams included. Each body chunk is
compressed and sync-flushed on its own, so an SSE event is readable as soon as it is
sent, as a well-behaved streaming gateway does; the last chunk ends the gzip member.
Answers that carry no body (204, 304, HEAD) and requests that do not accept gzip are
left as they are.
"""

from __future__ import annotations

import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NO_BODY = frozenset({204, 304})


def accepts_gzip(scope: Scope) -> bool:
    """Whether the request's ``Accept-Encoding`` names gzip (without ``q=0``)."""
    for name, value in scope.get("headers", ()):
        if name.lower() != b"accept-encoding":
            continue
        for item in value.decode("latin-1").split(","):
            coding, _, params = item.strip().partition(";")
            if coding.strip().lower() == "gzip" and params.replace(" ", "") != "q=0":
                return True
    return False


class GzipAnswers:
    """ASGI middleware compressing each answer for clients that accept gzip."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD" or not accepts_gzip(scope):
            await self.app(scope, receive, send)
            return
        compressor: zlib._Compress | None = None

        async def compressed(message: Message) -> None:
            nonlocal compressor
            if message["type"] == "http.response.start":
                if message["status"] in _NO_BODY:
                    await send(message)
                    return
                compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                headers = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if k.lower() not in (b"content-length", b"content-encoding")
                ]
                headers += [(b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and compressor is not None:
                more = message.get("more_body", False)
                body = compressor.compress(message.get("body", b""))
                body += compressor.flush(zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH)
                message = {**message, "body": body}
            await send(message)

        await self.app(scope, receive, compressed)
