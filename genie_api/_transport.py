"""The HTTP core under ``GenieClient``: one pooled ``httpx.AsyncClient``, auth headers per
user, typed errors, and response validation. The endpoints live in ``_client``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from genie_api._auth import ApiKeyAuth, OAuthAuth
from genie_api._decode import ACCEPT_ENCODING
from genie_api._errors import ProtocolError, TransportError, truncate
from genie_api._http import (
    RequestContext,
    body_too_large,
    error_from_response,
    logger,
    parse_json_body,
    read_body,
    read_error_body,
    transport_error,
)
from genie_telemetry import instrument_http

__all__ = ["ClientLimits", "ClientTimeouts", "Transport", "format_timestamp"]

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
        stream_read: Longest time an SSE stream may go without a complete frame (or
            comment line). The server pings about every 15-30 s, so a longer gap means a
            dead connection, or a peer trickling bytes that never make a frame: the
            read times out and :class:`RunReader` re-attaches. (A consumer that must
            prove liveness meanwhile, like a Temporal activity, heartbeats from its own
            timer.)
        total: Longest a whole REST call may take, body included, and longest a stream
            may take to open (up to its status and headers, or its error body). httpx's
            timeouts count per read, so a peer sending a byte just inside ``read``
            would otherwise hold a call open forever.
    """

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 10.0
    stream_read: float = 45.0
    total: float = 120.0

    def rest(self) -> httpx.Timeout:
        """Timeouts for ordinary requests."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)

    def stream(self) -> httpx.Timeout:
        """Timeouts for SSE requests."""
        return httpx.Timeout(
            connect=self.connect, read=self.stream_read, write=self.write, pool=self.pool
        )


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Bounds on what the client keeps from one answer of the API.

    Attributes:
        max_body_bytes: A REST success body. A larger one is a non-retryable
            :class:`ProtocolError`.
        max_error_body_bytes: The body of an error answer, REST or stream, read only to
            type the error. A larger one is dropped and the error is typed from its
            status alone. An API error is a few hundred bytes of JSON and a gateway's
            page a few KiB; at the body limit, a thousand calls failing at once could
            each hold 16 MiB of a peer's page.
        max_event_chars: One SSE frame (all its lines). A larger frame, or a line that
            never ends, is a non-retryable :class:`ProtocolError`. One event ends up in
            one activity result (a pause with its parameters, the genie's reply), and
            Temporal refuses a payload over 2 MB, so 1 Mi chars leaves room for the rest.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_error_body_bytes: int = 64 * 1024
    max_event_chars: int = 1024 * 1024


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


class Transport:
    """Connection, auth and error mapping shared by every endpoint method."""

    def __init__(
        self,
        base_url: str,
        auth: ApiKeyAuth | OAuthAuth,
        *,
        timeouts: ClientTimeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 1000,
        limits: ClientLimits | None = None,
    ) -> None:
        self._auth = auth
        self._credential_accepted = False
        self._timeouts = timeouts or ClientTimeouts()
        self._limits = limits or ClientLimits()
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
            # Only codings decoded in bounded steps; httpx would add br and zstd once their
            # packages are installed, and inflate those without bound.
            headers={"User-Agent": _USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
            follow_redirects=False,
        )
        instrument_http(self._http)  # a span per request when OTEL_* turn traces on

    @property
    def base_url(self) -> str:
        """The API host this client talks to."""
        return self._base_url

    @property
    def credential_accepted(self) -> bool:
        """Whether the API has answered a call of this client with a 2xx at least once.

        A new or rotated key is refused (401/403) for up to about a minute while it
        reaches the API gateway; once it has been accepted, a refusal no longer means
        "still settling" (see ``activities._errors.credential_refusal``).
        """
        return self._credential_accepted

    def _accepted(self) -> None:
        self._credential_accepted = True

    @property
    def timeouts(self) -> ClientTimeouts:
        """The configured timeouts."""
        return self._timeouts

    @property
    def limits(self) -> ClientLimits:
        """The configured size limits."""
        return self._limits

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
        limit = self._limits.max_body_bytes
        try:
            async with asyncio.timeout(self._timeouts.total):
                async with self._http.stream(
                    method, path, headers=headers, json=json, params=params or None, files=files
                ) as response:
                    if response.status_code >= 300:
                        content: bytes | None = await read_error_body(
                            response, self._limits.max_error_body_bytes, ctx
                        )
                    else:
                        content = await read_body(response, limit, ctx)
        except TimeoutError:
            logger.debug("%s exceeded %.0f s", ctx.describe(), self._timeouts.total)
            raise TransportError(
                f"no complete answer within {self._timeouts.total:g} s on {ctx.describe()}",
                retryable=True,
                **ctx.error_kwargs(),
            ) from None
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
            raise error_from_response(response, ctx, content or b"")
        self._credential_accepted = True
        if content is None:
            raise body_too_large(response, ctx, limit)
        return parse_json_body(response, ctx, content)

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
