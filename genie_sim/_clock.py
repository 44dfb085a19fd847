"""The simulator clock, timestamps and monotonic ids."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Clock:
    """Real UTC time plus an offset that ``POST /_sim/clock`` moves forward.

    Times are integers of microseconds since the epoch so that comparisons (E9 paging,
    retention) are exact.
    """

    __slots__ = ("_last_stamp_us", "_offset_us")

    def __init__(self) -> None:
        self._offset_us = 0
        self._last_stamp_us = 0

    def now_us(self) -> int:
        """Current simulator time in microseconds since the epoch."""
        return time.time_ns() // 1000 + self._offset_us

    def stamp(self) -> int:
        """A ``created_at`` strictly greater than every previous stamp.

        Two events produced within the same microsecond (or after the offset moved) still
        get distinct, ordered timestamps, which E9 paging by ``created_at`` relies on.
        """
        us = max(self.now_us(), self._last_stamp_us + 1)
        self._last_stamp_us = us
        return us

    @property
    def offset_us(self) -> int:
        """How far the simulator clock is ahead of real time, in microseconds."""
        return self._offset_us

    @property
    def last_stamp_us(self) -> int:
        """The latest :meth:`stamp` handed out (0 before the first)."""
        return self._last_stamp_us

    def restore(self, offset_us: int, last_stamp_us: int) -> None:
        """Continue a saved clock: same offset, stamps strictly after ``last_stamp_us``."""
        if offset_us < 0:
            raise ValueError("the simulator clock offset cannot be negative")
        self._offset_us = offset_us
        self._last_stamp_us = max(self._last_stamp_us, last_stamp_us)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("the simulator clock only moves forward")
        self._offset_us += round(seconds * 1_000_000)

    @property
    def offset_seconds(self) -> float:
        """How far the simulator clock is ahead of real time."""
        return self._offset_us / 1_000_000


def iso(us: int) -> str:
    """Format microseconds since the epoch as ISO-8601 UTC with microseconds and ``Z``."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> int:
    """Parse an ISO-8601 timestamp into microseconds since the epoch.

    Accepts ``Z`` or an offset, any number of fraction digits (extra ones are truncated,
    since clients may echo nanosecond-precision values), and naive values as UTC.

    Raises:
        ValueError: ``text`` is not an ISO-8601 timestamp.
    """
    value = text.strip()
    if "." in value:
        head, _, rest = value.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0:
            raise ValueError(f"invalid timestamp: {text!r}")
        value = head + "." + rest[:digits][:6].ljust(6, "0") + rest[digits:]
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class IdFactory:
    """Opaque ids that sort in creation order, within and across simulator processes.

    An id is ``<prefix>_`` + 11 hex digits of the process start time in ms + 12 hex digits
    of a process-wide counter. The counter is never reset (not even by ``/_sim/reset``) so
    a client that outlives a reset never sees an id twice; ``--state-file`` carries both
    parts over a restart (:meth:`restore`).
    """

    __slots__ = ("_boot", "_next")

    def __init__(self) -> None:
        self._boot = f"{time.time_ns() // 1_000_000:011x}"
        self._next = 1

    def new(self, prefix: str) -> str:
        """Return a fresh id such as ``evt_019a2b3c4d5000000000001f``."""
        n = self._next
        self._next = n + 1
        return f"{prefix}_{self._boot}{n:012x}"

    @property
    def boot(self) -> str:
        """The 11 hex digits every id of this factory starts with."""
        return self._boot

    @property
    def next_counter(self) -> int:
        """The counter value the next id will carry."""
        return self._next

    def restore(self, boot: str, next_counter: int) -> None:
        """Continue a saved factory, so ids keep sorting after every id it handed out.

        Raises:
            ValueError: ``boot`` is not 11 hex digits or ``next_counter`` is not positive.
        """
        if len(boot) != 11 or any(c not in "0123456789abcdef" for c in boot):
            raise ValueError(f"invalid id prefix {boot!r}")
        if next_counter < 1:
            raise ValueError("the id counter must be positive")
        self._boot = boot
        self._next = next_counter
