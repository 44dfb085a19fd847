"""Injected faults (``POST /_sim/faults``), consumed by the next matching requests."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from starlette.responses import Response

from ._errors import error_response
from ._stats import ENDPOINTS

MalformedKind = Literal["non_json", "no_type", "unknown_event", "missing_ids"]
MALFORMED_KINDS: tuple[MalformedKind, ...] = ("non_json", "no_type", "unknown_event", "missing_ids")

_DEFAULT_CODES = {
    401: "auth_failed",
    403: "access_denied",
    404: "not_found",
    409: "conflict",
    422: "unprocessable_entity",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "upstream_unavailable",
    504: "gateway_timeout",
}

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1><p>genie_sim html_200 fault</p></body></html>"
)


@dataclass(slots=True)
class Fault:
    """One injected fault. Exactly one of ``status``, ``drop_after_events``, ``malformed``,
    ``html_200`` selects its kind.

    Attributes:
        fault_id: Index in injection order, for the admin answer.
        endpoint: Endpoint name (see ``_stats.ENDPOINTS``).
        times: How many more matching requests it applies to.
        conversation_id: Only requests about this conversation match, if set.
        status: Answer with this HTTP status and an error body.
        retry_after: Seconds for ``Retry-After`` / ``retry_after_ms``.
        error_code: ``error_code`` of the error body (defaults by status).
        after_request: Perform the request first, then answer with the fault.
        drop_after_events: Cut the connection after k delivered events.
        malformed: Inject a malformed frame after ``after_events`` events.
        after_events: See ``malformed``.
        html_200: Answer ``200 text/html`` with an HTML page.
        for_seconds: Apply to every matching request for this long (an outage), instead
            of ``times`` requests.
    """

    fault_id: int
    endpoint: str
    times: int = 1
    conversation_id: str | None = None
    status: int | None = None
    retry_after: float | None = None
    error_code: str | None = None
    after_request: bool = False
    drop_after_events: int | None = None
    malformed: MalformedKind | None = None
    after_events: int = 0
    html_200: bool = False
    for_seconds: float | None = None
    expires_at: float | None = None
    """Monotonic deadline of a ``for_seconds`` fault."""

    @property
    def replaces_answer(self) -> bool:
        """Whether the answer is replaced by an error or an HTML page."""
        return self.status is not None or self.html_200

    def answer(self, request_id: str) -> Response:
        """The response that replaces the real answer (status or ``html_200`` faults)."""
        if self.html_200:
            return Response(
                HTML_PAGE,
                status_code=200,
                media_type="text/html; charset=utf-8",
                headers={"X-Request-Id": request_id},
            )
        assert self.status is not None
        headers: dict[str, str] = {}
        extra: dict[str, object] = {}
        if self.retry_after is not None:
            # Retry-After must be whole seconds (RFC 9110); the exact value is in the body.
            headers["Retry-After"] = str(math.ceil(self.retry_after))
            extra["retry_after_ms"] = round(self.retry_after * 1000)
        code = self.error_code or _DEFAULT_CODES.get(self.status, "simulated_fault")
        return error_response(
            self.status,
            code,
            f"Simulated fault ({self.status}).",
            request_id,
            headers=headers,
            extra=extra,
        )

    def public(self) -> dict[str, object]:
        """The fault as JSON for the admin API."""
        return asdict(self)


def _opt_int(spec: Mapping[str, object], key: str, *, minimum: int) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}")
    return value


def parse_fault(spec: Mapping[str, object], fault_id: int) -> Fault:
    """Validate a ``POST /_sim/faults`` body.

    Raises:
        ValueError: The body is not a valid fault (the admin answer is a ``400``).
    """
    known = {f for f in Fault.__dataclass_fields__ if f not in ("fault_id", "expires_at")}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown fault fields: {sorted(unknown)}")
    endpoint = spec.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {list(ENDPOINTS)}")
    times = _opt_int(spec, "times", minimum=1) or 1
    conversation_id = spec.get("conversation_id")
    if conversation_id is not None and not isinstance(conversation_id, str):
        raise ValueError("conversation_id must be a string")
    status = _opt_int(spec, "status", minimum=400)
    if status is not None and status > 599:
        raise ValueError("status must be 400..599")
    retry_after = spec.get("retry_after")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after < 0
    ):
        raise ValueError("retry_after must be a non-negative number of seconds")
    error_code = spec.get("error_code")
    if error_code is not None and not isinstance(error_code, str):
        raise ValueError("error_code must be a string")
    after_request = spec.get("after_request", False)
    html_200 = spec.get("html_200", False)
    if not isinstance(after_request, bool) or not isinstance(html_200, bool):
        raise ValueError("after_request and html_200 must be booleans")
    drop = _opt_int(spec, "drop_after_events", minimum=0)
    malformed = spec.get("malformed")
    if malformed is not None and malformed not in MALFORMED_KINDS:
        raise ValueError(f"malformed must be one of {list(MALFORMED_KINDS)}")
    after_events = _opt_int(spec, "after_events", minimum=0) or 0
    for_seconds = spec.get("for_seconds")
    if for_seconds is not None and (
        isinstance(for_seconds, bool)
        or not isinstance(for_seconds, int | float)
        or for_seconds <= 0
    ):
        raise ValueError("for_seconds must be a positive number of seconds")
    kinds = [status is not None, drop is not None, malformed is not None, html_200]
    if sum(kinds) != 1:
        raise ValueError("exactly one of status, drop_after_events, malformed, html_200")
    if retry_after is not None and status is None:
        raise ValueError("retry_after needs status")
    if after_request and status is None and not html_200:
        raise ValueError("after_request needs status or html_200")
    return Fault(
        fault_id=fault_id,
        endpoint=endpoint,
        times=times,
        conversation_id=conversation_id,
        status=status,
        retry_after=float(retry_after) if retry_after is not None else None,
        error_code=error_code,
        after_request=after_request,
        drop_after_events=drop,
        malformed=malformed,
        after_events=after_events,
        html_200=html_200,
        for_seconds=float(for_seconds) if for_seconds is not None else None,
        expires_at=time.monotonic() + float(for_seconds) if for_seconds is not None else None,
    )


class FaultBook:
    """The active faults, oldest first."""

    __slots__ = ("_faults", "_next_id")

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, spec: Mapping[str, object]) -> Fault:
        """Validate and add a fault.

        Raises:
            ValueError: Invalid fault.
        """
        fault = parse_fault(spec, self._next_id)
        self._next_id += 1
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget every fault."""
        self._faults.clear()

    def take(self, endpoint: str, conversation_id: str | None) -> Fault | None:
        """Consume one use of the oldest fault matching this request, if any."""
        now = time.monotonic()
        self._faults = [f for f in self._faults if f.expires_at is None or f.expires_at > now]
        for fault in self._faults:
            if fault.endpoint != endpoint:
                continue
            if fault.conversation_id is not None and fault.conversation_id != conversation_id:
                continue
            if fault.expires_at is not None:
                return fault  # an outage: every request until it expires
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    def active(self) -> list[dict[str, object]]:
        """The remaining faults as JSON."""
        return [f.public() for f in self._faults]
