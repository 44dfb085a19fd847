"""How the workflow calls the API: one activity per step, options defined once per kind.

Two layers of retries, each bounded in *time*, never in attempts alone:

- Temporal's own retry policy rides out blips inside one scheduled activity (about a
  minute and a half of backing-off attempts; see ``_KINDS``).
- When that is spent on an error that may heal (5xx, 429, network, timeouts), the
  workflow itself keeps going: it records "API unreachable since …" for the details
  card and ``status``, sleeps a durable, backing-off timer (30 s doubling to 5 min; past
  an hour, a twelfth of the outage so far: ``_backoff``) and
  schedules the step again, until ``policy.api_outage_timeout`` (default 1 h) has passed
  since the first failure. A worker restart, a deploy or a Temporal restart in between
  loses nothing: the timer and the step are in history.

A credential the API does not accept yet (``CredentialSettling``: a new or rotated key
on its way to the API gateway) is retried the same way, every 10 s, for the settle
window the worker reports (``GENIE_AUTH_SETTLE_SECONDS``) counted from the first refusal
in workflow time, with "API key not accepted yet since …" on the card; past the window
it is final (``CredentialNotAccepted``, reported as ``CredentialRefused``).

An error the API calls final (4xx, a refused attachment, malformed data that stays
malformed) is raised at once. Every call can also be cut short by the conversation
ending (``cancel_when``): the running activity is cancelled — it heartbeats, so the
cancellation reaches it within seconds — and ``StepCancelled`` is raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from workflows._backoff import age_ruled
from workflows._patches import PATCH_OUTAGE_BY_AGE
from workflows.models import ErrorInfo

with workflow.unsafe.imports_passed_through():
    from activities import CREDENTIAL_ADVICE, CREDENTIAL_REFUSED, CREDENTIAL_SETTLING
    from activities._options import AUTH_RETRY_EVERY

T = TypeVar("T")


@dataclass(frozen=True)
class _Kind:
    start_to_close: timedelta
    heartbeat: timedelta
    retry: RetryPolicy


# Every activity heartbeats while its call is in flight, so a worker that dies mid-call
# (say, right after the API applied a decision) is noticed in seconds; the retry then
# finds the work done (the activities reconcile with the API before repeating a write).
_HEARTBEAT = timedelta(seconds=10)
_BLIP = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=7,  # 1+2+4+8+16+30 s of waiting between attempts: ~1.5 min
)
CONTROL = _Kind(timedelta(seconds=60), _HEARTBEAT, _BLIP)
"""Short, idempotent calls: create, post a decision, reject a connection."""
UPLOAD = _Kind(timedelta(minutes=5), _HEARTBEAT, _BLIP)
"""An attachment: fetching a URL may take the operator's ``attachment_timeout_seconds``
(up to ``MAX_ATTACHMENT_TIMEOUT_SECONDS``, 4 minutes), and the upload (E7) follows. With
CONTROL's minute, any fetch slower than that was cut and fetched again on each retry."""
STREAM = _Kind(timedelta(hours=2), _HEARTBEAT, _BLIP)
"""A stream segment lasts as long as the genie works, so it is bounded by heartbeats;
a retry resumes from the heartbeat cursor."""
PROBE = _Kind(timedelta(seconds=60), _HEARTBEAT, RetryPolicy(maximum_attempts=2))
"""Best-effort look-ups (has the user connected? a fresh auth link): the next probe,
or a human, decides; never ridden through an outage."""

LINK = _Kind(
    timedelta(seconds=60),
    _HEARTBEAT,
    RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3),
)
"""A fresh auth link, asked for by an update whose caller is waiting: a few quick tries."""

OUTAGE_FIRST_WAIT = timedelta(seconds=30)
OUTAGE_MAX_WAIT = timedelta(minutes=5)
SETTLE_RETRY_EVERY = timedelta(seconds=AUTH_RETRY_EVERY)
"""Between attempts while the worker's credential may be settling (advice from production)."""


class StepCancelled(Exception):
    """The conversation is ending; the step was cancelled (or never scheduled)."""


class OutageExceeded(Exception):
    """The API kept failing for longer than ``api_outage_timeout``; ``cause`` says how."""

    def __init__(self, cause: ActivityError, since: datetime) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.since = since


class CredentialNotAccepted(OutageExceeded):
    """The API kept refusing the worker's credential for the whole settle window."""

    def __init__(self, cause: ActivityError, since: datetime, window: timedelta) -> None:
        super().__init__(cause, since)
        self.window = window


def settle_window(e: ActivityError) -> timedelta | None:
    """The settle window of a ``CredentialSettling`` failure; None for any other error."""
    cause = e.cause
    if not isinstance(cause, ApplicationError) or cause.type != CREDENTIAL_SETTLING:
        return None
    details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
    seconds = details.get("settle_seconds")
    # Bounded, so a malformed detail can neither wedge nor stretch the wait.
    if not isinstance(seconds, int | float) or not 0 < seconds <= 3600:
        seconds = 60
    return timedelta(seconds=seconds)


def heals(e: ActivityError) -> bool:
    """Could the same step succeed later? True for exhausted retries of a retryable
    error and for timeouts; False for errors the activity marked final."""
    if isinstance(e.cause, ApplicationError) and e.cause.non_retryable:
        return False
    return e.retry_state in (RetryState.MAXIMUM_ATTEMPTS_REACHED, RetryState.TIMEOUT)


def error_info(e: BaseException, *, turn: int | None, at: datetime) -> ErrorInfo:
    """Flatten an activity failure into what ops need: type, code, request id."""
    cause = e.cause if isinstance(e, ActivityError | OutageExceeded) else e
    if isinstance(cause, ActivityError):
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        details: dict[str, Any] = {}
        if cause.details and isinstance(cause.details[0], dict):
            details = cause.details[0]
        if isinstance(e, CredentialNotAccepted):
            answer = f"HTTP {details.get('status')} {details.get('error_code') or ''}".strip()
            return ErrorInfo(
                type=CREDENTIAL_REFUSED,
                message=(
                    f"the Headless API refused the worker's credential ({answer}) for "
                    f"{e.window.total_seconds():g} s from the first refusal at "
                    f"{e.since:%H:%M:%S} UTC, longer than a new or rotated key needs to "
                    f"reach the API gateway (GENIE_AUTH_SETTLE_SECONDS). {CREDENTIAL_ADVICE} "
                    f"[request_id={details.get('request_id') or 'none'}]"
                )[:2000],
                status=details.get("status"),
                error_code=details.get("error_code"),
                request_id=details.get("request_id"),
                turn=turn,
                at=at,
            )
        return ErrorInfo(
            type=cause.type or "ApplicationError",
            message=cause.message[:2000],
            status=details.get("status"),
            error_code=details.get("error_code"),
            request_id=details.get("request_id"),
            turn=turn,
            at=at,
        )
    message = str(cause) if cause is not None else str(e)
    return ErrorInfo(type=type(cause or e).__name__, message=message[:2000], turn=turn, at=at)


class Steps:
    """Runs activities for one workflow, riding out outages as described above."""

    def __init__(
        self,
        *,
        outage_timeout: Callable[[], timedelta],
        on_outage: Callable[[datetime | None, ErrorInfo | None], None],
        patched: Callable[[str], bool],
    ) -> None:
        self._outage_timeout = outage_timeout
        self._on_outage = on_outage
        self._patched = patched  # the conversation's ``TurnRunner._patched``
        self.unreachable_since: datetime | None = None

    async def call(
        self,
        kind: _Kind,
        activity: Callable[..., Awaitable[T]],
        arg: Any,
        *,
        summary: str,
        turn: int | None = None,
        cancel_when: Callable[[], bool] | None = None,
        ride_outage: bool | Callable[[], bool] = True,
        on_retry: Callable[[ErrorInfo], None] | None = None,
        again: Any = None,
    ) -> T:
        """Run ``activity(arg)``; ``again`` is the argument when the step is scheduled
        again after an outage (e.g. a send that must first ask whether it was posted).
        ``ride_outage`` may be a callable, asked after each failure: a step that must
        not outlive an ending conversation stops riding once it ends."""
        wait = OUTAGE_FIRST_WAIT
        settling_since: datetime | None = None
        while True:
            if cancel_when is not None and cancel_when():
                raise StepCancelled
            handle = workflow.start_activity_method(
                activity,
                arg,
                start_to_close_timeout=kind.start_to_close,
                heartbeat_timeout=kind.heartbeat,
                retry_policy=kind.retry,
                summary=summary,
            )
            try:
                if cancel_when is not None:
                    await workflow.wait_condition(lambda h=handle: h.done() or cancel_when())  # type: ignore[misc]
                    if not handle.done():
                        handle.cancel()
                result: T = await handle
            except ActivityError as e:
                if cancel_when is not None and cancel_when():
                    raise StepCancelled from None
                now = workflow.now()
                riding = ride_outage() if callable(ride_outage) else ride_outage
                window = settle_window(e)
                if window is None or not riding:
                    if not heals(e):  # a settling key is never healed by Temporal's retries
                        if self.unreachable_since is not None:
                            self._set(None, None)  # a final answer: the API is reachable
                        raise
                    if not riding:
                        raise
                # Both waits are durable timers, visible in the UI; an end cuts them short.
                if window is not None:
                    settling_since = settling_since or now
                    since, limit, pause = settling_since, window, SETTLE_RETRY_EVERY
                    what = "API key not accepted yet"
                else:
                    since, limit = self.unreachable_since or now, self._outage_timeout()
                    aged = age_ruled(wait, now - since, self._patched, PATCH_OUTAGE_BY_AGE)
                    pause = min(aged, limit)
                    wait = min(wait * 2, OUTAGE_MAX_WAIT)
                    what = "API unreachable"
                if now - since >= limit:
                    self._set(None, None)
                    if window is not None:
                        raise CredentialNotAccepted(e, since, window) from None
                    raise OutageExceeded(e, since) from None
                info = error_info(e, turn=turn, at=now)
                self._set(since, info)
                if on_retry is not None:
                    on_retry(info)
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: _stop(cancel_when, ride_outage),
                        timeout=pause,
                        timeout_summary=f"{what} since {since:%H:%M:%S}: retry {summary}",
                    )
                arg = again if again is not None else arg
                continue
            if self.unreachable_since is not None:
                self._set(None, None)
            return result

    def _set(self, since: datetime | None, info: ErrorInfo | None) -> None:
        self.unreachable_since = since
        self._on_outage(since, info)


def _stop(cancel_when: Callable[[], bool] | None, ride_outage: bool | Callable[[], bool]) -> bool:
    """Whether a step waiting out an outage should stop waiting now."""
    if cancel_when is not None and cancel_when():
        return True
    return callable(ride_outage) and not ride_outage()
