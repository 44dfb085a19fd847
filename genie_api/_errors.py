"""Typed errors of the Headless API client.

Every failure the client reports is a :class:`GenieAPIError` subclass carrying what a
caller needs to decide what to do next: the HTTP status, the API's ``error_code`` /
``error_message`` / ``request_id``, a ``retry_after`` hint in seconds and a ``retryable``
flag. The classification follows the API's documented error shape (see
``docs/headless-api.md``): 429, 5xx, transport failures and interrupted streams are
retryable; client errors are not.

Secrets never reach these objects: the client redacts the credential from every text it
copies from a response before it builds an error (see ``GenieClient``). Conversation
content never reaches ``str(err)``: the text names the call, the status and the API's
codes, never the server's free text nor a malformed payload, because a server or a
gateway may echo the request (the user's message) back. The server's own words stay in
:attr:`GenieAPIError.error_message`, which callers must not log. Every field copied from
a peer is bounded, so a 10 MB error body cannot become a 10 MB log line or Temporal
failure.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from genie_api._reader import RunCursor

__all__ = [
    "AUTH_FAILED",
    "CALL_NOT_FOUND",
    "CHAT_INTERFACE_NOT_CONFIGURED",
    "CONNECTION_ALREADY_RESOLVED",
    "CONVERSATION_BUSY",
    "FILE_TOO_LARGE",
    "INVALID_FILE_ID",
    "INVALID_LAST_EVENT_ID",
    "MESSAGE_EMPTY",
    "MESSAGE_TOO_LONG",
    "RUN_NOT_FOUND",
    "SKILL_CALL_ALREADY_RESOLVED",
    "USER_NONACTIVE_OR_MISSING",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GenieAPIError",
    "NotAcceptableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitedError",
    "ServerError",
    "StreamResumeError",
    "TransportError",
    "UnprocessableError",
    "error_class_for_status",
    "parse_retry_after",
]

# Known ``error_code`` values ([DOC] for the auth ones; the rest are what the simulator
# contract uses and what production is believed to send). Compare ``err.error_code``
# against these instead of repeating string literals.
AUTH_FAILED = "auth_failed"
USER_NONACTIVE_OR_MISSING = "user_nonactive_or_missing"
CHAT_INTERFACE_NOT_CONFIGURED = "chat_interface_not_configured"
CONVERSATION_BUSY = "conversation_busy"
MESSAGE_TOO_LONG = "message_too_long"
MESSAGE_EMPTY = "message_empty"
INVALID_FILE_ID = "invalid_file_id"
INVALID_LAST_EVENT_ID = "invalid_last_event_id"
RUN_NOT_FOUND = "run_not_found"
SKILL_CALL_ALREADY_RESOLVED = "skill_call_already_resolved"
CALL_NOT_FOUND = "call_not_found"
CONNECTION_ALREADY_RESOLVED = "connection_already_resolved"
FILE_TOO_LARGE = "file_too_large"

_MAX_TEXT = 300
# Bounds on what an error holds. The text ends up in log lines and in Temporal failures
# (workflow history); the API's fields are short codes and ids when the peer is sane.
_MAX_MESSAGE = 1000
_MAX_CODE = 100
_MAX_REQUEST_ID = 200


def truncate(text: str, limit: int = _MAX_TEXT) -> str:
    """Shorten ``text`` for an error message, marking the cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} chars)"


class GenieAPIError(Exception):
    """Base class of every error raised by :mod:`genie_api`.

    Attributes:
        status: HTTP status code, or ``None`` when no response was received.
        error_code: The API's machine-readable ``error_code`` (e.g. ``"auth_failed"``).
        error_message: The API's human-readable ``error_message``.
        request_id: ``request_id`` from the body or the ``X-Request-Id`` header.
        retry_after: Seconds the server asked us to wait (``Retry-After`` header or
            ``retry_after_ms`` in the body), if any. Only ever the server's ask, never
            a pace the client chose, so a caller may honour it as is.
        retryable: Whether repeating the same call later may succeed.
        conversation_id: The conversation the call concerned, where known.
        genie_run_id: The run the call concerned, where known.
        endpoint: Short endpoint name (``"send_message"``, ``"reconnect"``, …).
    """

    default_retryable: ClassVar[bool] = False
    error_type: ClassVar[str] = "GenieAPIError"
    """Stable name for classification (e.g. a Temporal ``ApplicationError`` type)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        conversation_id: str | None = None,
        genie_run_id: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        # Bounded here, once for every path that builds an error, whatever the peer sent.
        message = truncate(message, _MAX_MESSAGE)
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = _bounded(error_code, _MAX_CODE)
        self.error_message = _bounded(error_message, _MAX_TEXT)
        self.request_id = _bounded(request_id, _MAX_REQUEST_ID)
        self.retry_after = _wait(retry_after)
        self.retryable = self.default_retryable if retryable is None else retryable
        self.conversation_id = conversation_id
        self.genie_run_id = genie_run_id
        self.endpoint = endpoint

    def _kwargs(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "request_id": self.request_id,
            "retry_after": self.retry_after,
            "retryable": self.retryable,
            "conversation_id": self.conversation_id,
            "genie_run_id": self.genie_run_id,
            "endpoint": self.endpoint,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default Exception pickling;
        # errors may cross process boundaries (Temporal, multiprocessing).
        return (_rebuild_error, (type(self), self.message, self._kwargs()))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        for key in ("status", "error_code", "request_id", "retryable"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _bounded(value: str | None, limit: int) -> str | None:
    return None if value is None else truncate(value, limit)


def _wait(seconds: float | None) -> float | None:
    """A server-asked wait as a caller can use it: finite and not negative, else none.

    ``NaN`` and infinity parse from JSON (``retry_after_ms``) and from ``Retry-After``;
    neither is an ask anyone can honour, and ``NaN`` defeats every ``min``/``max`` cap.
    """
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, float(seconds))


def _rebuild_error(cls: type[GenieAPIError], message: str, kwargs: dict[str, Any]) -> Any:
    extra = kwargs.pop("_extra", {})
    err = cls.__new__(cls)
    GenieAPIError.__init__(err, message, **kwargs)
    err.__dict__.update(extra)
    return err


class BadRequestError(GenieAPIError):
    """400: the request was invalid (e.g. message too long, unknown ``file_id``)."""

    error_type = "GenieBadRequest"


class AuthenticationError(GenieAPIError):
    """401: bad credential (``auth_failed``) or user not allowed (``user_nonactive_or_missing``)."""

    error_type = "GenieAuthentication"


class PermissionDeniedError(GenieAPIError):
    """403: access denied (also seen transiently right after provisioning)."""

    error_type = "GeniePermissionDenied"


class NotFoundError(GenieAPIError):
    """404: unknown conversation, run, call or attempt."""

    error_type = "GenieNotFound"


class NotAcceptableError(GenieAPIError):
    """406: the genie has no custom chat interface / client attached."""

    error_type = "GenieNotAcceptable"


class ConflictError(GenieAPIError):
    """409: the conversation is busy, or the decision was already made."""

    error_type = "GenieConflict"


class PayloadTooLargeError(GenieAPIError):
    """413: upload over the size limit."""

    error_type = "GeniePayloadTooLarge"


class UnprocessableError(GenieAPIError):
    """422: validation failed."""

    error_type = "GenieUnprocessable"


class RateLimitedError(GenieAPIError):
    """429: rate limited; honour :attr:`retry_after`."""

    default_retryable = True
    error_type = "GenieRateLimited"


class ServerError(GenieAPIError):
    """5xx: the server (or a gateway in front of it) failed."""

    default_retryable = True
    error_type = "GenieServerError"


class TransportError(GenieAPIError):
    """No (complete) HTTP response: connect/read/write errors and timeouts."""

    default_retryable = True
    error_type = "GenieTransport"


class ProtocolError(GenieAPIError):
    """A response that does not follow the protocol.

    Malformed SSE data is not retryable (the same bytes will come back); an HTML or
    otherwise non-JSON body on a 200, or a 200 that is not an event stream, is (a
    gateway hiccup), and is raised with ``retryable=True``.
    """

    error_type = "GenieProtocol"


class StreamResumeError(GenieAPIError):
    """Resuming a run's stream failed too many times in a row.

    Retryable: a later attempt (e.g. the next activity attempt) may resume from
    :attr:`cursor`, which holds everything needed to continue without loss. Its
    ``retry_after`` is set only when the last failure was an HTTP answer that asked for
    a wait; otherwise the caller's own back-off applies.
    """

    default_retryable = True
    error_type = "GenieStreamResume"

    def __init__(self, message: str, *, cursor: RunCursor | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.cursor = cursor

    def _kwargs(self) -> dict[str, Any]:
        kwargs = super()._kwargs()
        kwargs["_extra"] = {"cursor": self.cursor}
        return kwargs


_BY_STATUS: dict[int, type[GenieAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    406: NotAcceptableError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: RateLimitedError,
}


def error_class_for_status(status: int) -> type[GenieAPIError]:
    """Return the exception class for an HTTP error status."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    if status >= 500:
        return ServerError
    return GenieAPIError


def default_retryable_for_status(status: int) -> bool:
    """Whether an HTTP error status is worth retrying (429, 408, 5xx)."""
    return status in (408, 429) or status >= 500


def parse_retry_after(header: str | None, body: Mapping[str, Any] | None = None) -> float | None:
    """Compute the server's back-off hint in seconds.

    The body's ``retry_after_ms`` wins when present: it is more precise than the
    ``Retry-After`` header, which RFC 9110 limits to whole seconds.

    Args:
        header: The ``Retry-After`` header value: delta-seconds or an HTTP date.
        body: The parsed error body, which may carry ``retry_after_ms``.

    Returns:
        Seconds to wait (finite, never negative), or ``None`` when the server gave no
        usable hint (``NaN`` or infinity count as none).
    """
    if body is not None:
        ms = body.get("retry_after_ms")
        if isinstance(ms, int | float) and not isinstance(ms, bool):
            try:
                wait = _wait(float(ms) / 1000.0)
            except OverflowError:  # a JSON integer too large for a float
                wait = None
            if wait is not None:
                return wait
    if header:
        value = header.strip()
        try:
            return _wait(float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return _wait(when.timestamp() - time.time())
    return None
