"""How often activities heartbeat, and the retry budget of one turn's stream, stated once.

A turn's stream (the E5 post, then E8/E9 after every cut) is retried at three nested
levels. Only the outermost is counted in time, and only it can fail a turn for an outage:

1. **Within one activity attempt** ``genie_api.RunReader`` re-attaches after every cut,
   backing off from ``ResumePolicy.initial_backoff`` = 0.2 s, doubling up to
   ``ResumePolicy.max_backoff`` = 5.0 s (±20 % jitter). After
   ``ResumePolicy.max_attempts`` = 5 consecutive tries without a new event (about 3 s of
   waiting, plus the calls' own time) it hands over: ``StreamResumeError`` carries the
   cursor and the attempt ends, losing nothing. Any new event resets the count, so a run
   that keeps streaming never hands over.
2. **Malformed data** (a garbled frame, an unparseable event) ends the attempt too; the
   next one starts over from the cursor, at most ``MAX_MALFORMED_RETRIES`` = 3 times per
   segment (counted in the heartbeat, so across attempts). The same bytes coming back a
   fourth time are not an outage: the turn fails with the protocol error.
3. **Activity attempts** are governed by the workflow's retry policy for stream segments:
   unlimited attempts with capped exponential back-off, bounded in time by the
   conversation's outage budget (see ``workflows/``). A failed attempt sets its own
   next-retry delay only when the server asked for one (``Retry-After`` or
   ``retry_after_ms`` on an error answer such as 429/503), raised to at least
   ``MIN_SERVER_RETRY_DELAY`` = 1 s and capped at ``MAX_SERVER_RETRY_DELAY`` = 300 s; the
   client's own reconnect pacing never replaces the workflow's back-off.

Combined: a turn's stream rides out an API outage of any length within the workflow's
outage budget, resuming from its cursor without re-posting; it fails at once on a final
answer (4xx; a rejected credential once it cannot be still settling, see
``DEFAULT_AUTH_SETTLE_SECONDS``) and after 3 malformed-data retries in one segment.
Segments heartbeat every ``HEARTBEAT_EVERY`` = 1.0 s while they make progress and every
``HEARTBEAT_IDLE_EVERY`` = 3.0 s while they wait, and control calls every second once they
take longer than one, whatever the API does, so a dead worker is noticed within the
workflow's heartbeat timeout.
"""

from __future__ import annotations

import math
from datetime import timedelta

__all__ = [
    "AUTH_RETRY_EVERY",
    "DEFAULT_AUTH_SETTLE_SECONDS",
    "HEARTBEAT_EVERY",
    "HEARTBEAT_IDLE_EVERY",
    "MAX_MALFORMED_RETRIES",
    "MAX_SERVER_RETRY_DELAY",
    "MIN_SERVER_RETRY_DELAY",
    "server_retry_delay",
]

HEARTBEAT_EVERY = 1.0
"""Seconds between heartbeats. The SDK throttles what reaches the server anyway; this
bounds how often a stream segment serialises its progress snapshot on a fast stream."""

HEARTBEAT_IDLE_EVERY = 3.0
"""Seconds between a stream segment's heartbeats while its progress does not change (a
genie thinking, a silent stream). Each heartbeat that reaches the server is a billable
action on Temporal Cloud, so one per second of silence buys nothing; one every 3 s keeps
the worker's liveness well inside the 10 s heartbeat timeout, and lets an end cancel the
segment within seconds (a cancellation reaches an activity on a heartbeat's answer)."""

MAX_MALFORMED_RETRIES = 3
"""How many times a segment starts over from its cursor after malformed data (a garbled
SSE frame, an unparseable body). The client calls such data final because the same bytes
would come back on the same stream; but the run is intact server-side and E8 replays it
from the last good event, so a one-off corruption must not cost the turn. Data that stays
malformed fails the turn after this many retries, with the protocol error as the cause."""

MAX_SERVER_RETRY_DELAY = 300.0
"""Cap, in seconds, on a server-requested wait used as an activity's next-retry delay,
so a bogus ``Retry-After`` cannot park a conversation for hours."""

MIN_SERVER_RETRY_DELAY = 1.0
"""Floor, in seconds, on a server-requested wait (other than none): ``Retry-After:
0.000001`` made a one-microsecond delay, and a peer answering it every time would have
its retries come back to back, as fast as the worker and server can go."""


def server_retry_delay(seconds: float | None) -> timedelta | None:
    """A peer's asked-for wait as an activity's next-retry delay: between
    ``MIN_SERVER_RETRY_DELAY`` and ``MAX_SERVER_RETRY_DELAY``; ``None`` (the workflow's
    back-off) for no wait, zero, or one that is not a finite positive number."""
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return timedelta(seconds=min(max(seconds, MIN_SERVER_RETRY_DELAY), MAX_SERVER_RETRY_DELAY))


DEFAULT_AUTH_SETTLE_SECONDS = 60.0
"""How long a 401/403 to a credential this worker has never had accepted is retried, from
the step's first refusal in workflow time (``GENIE_AUTH_SETTLE_SECONDS``): a new or rotated key is
reported to reach the API gateway within about a minute (``activities._errors``)."""

AUTH_RETRY_EVERY = 10.0
"""Seconds between attempts while a credential may be settling (the advice reported
from production is to retry about every 10 s)."""
