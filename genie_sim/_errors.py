"""The API's error shape: ``{"error_code", "error_message", "request_id"}``, never wrapped."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response


class ApiError(Exception):
    """An error answer of the Headless API.

    Attributes:
        status: HTTP status code.
        code: ``error_code`` of the body.
        message: ``error_message`` of the body.
        headers: Extra response headers (e.g. ``Retry-After``).
        extra: Extra body fields (e.g. ``retry_after_ms``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self, request_id: str) -> Response:
        """Render this error as a JSON response carrying ``request_id``."""
        return error_response(
            self.status, self.code, self.message, request_id, headers=self.headers, extra=self.extra
        )


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> Response:
    """Build the documented error body; ``X-Request-Id`` always matches ``request_id``."""
    body: dict[str, object] = {
        "error_code": code,
        "error_message": message,
        "request_id": request_id,
        **(extra or {}),
    }
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={**(headers or {}), "X-Request-Id": request_id},
    )


def bad_request(message: str, code: str = "invalid_request") -> ApiError:
    """A ``400`` for a malformed request."""
    return ApiError(400, code, message)


def conversation_not_found() -> ApiError:
    """The conversation does not exist or belongs to another user."""
    return ApiError(404, "conversation_not_found", "Conversation not found.")
