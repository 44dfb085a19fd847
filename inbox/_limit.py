"""A per-identity rate limit on the POSTs that reach a workflow (decisions, link refreshes).

Every decision the inbox sends is an update, and the conversation records each one in
its history, refused ones too (the audit trail needs them). Without a limit one logged-in
person could send refused decisions as fast as the inbox answers and grow a conversation
towards Temporal's history limit, where it would be terminated. So each identity gets a
token bucket: ``burst`` requests at once, then ``per_second`` more each second; a request
with no token left is answered 429 and never reaches the workflow.

The buckets live in this process's memory (one inbox process; a deployment that runs
several gets one limit per process, still bounded). The map of buckets is bounded too:
past ``max_identities`` it first forgets the buckets that have refilled completely (a
full bucket is the same as none), then the least recently used.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_IDENTITIES = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float
    """When ``tokens`` was last brought up to date (monotonic seconds)."""


class RateLimiter:
    """Token buckets keyed by identity; ``take(key)`` is 0 (go ahead) or the seconds to
    wait before a token is back."""

    def __init__(
        self,
        burst: int,
        per_second: float,
        *,
        max_identities: int = MAX_IDENTITIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_second <= 0 or max_identities < 1:
            raise ValueError("burst >= 1, per_second > 0 and max_identities >= 1")
        self.burst = burst
        self.per_second = per_second
        self.max_identities = max_identities
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, b: _Bucket, now: float) -> float:
        return min(float(self.burst), b.tokens + (now - b.at) * self.per_second)

    def take(self, key: str) -> float:
        """Spend one of ``key``'s tokens: 0.0 if there was one, else the seconds until
        there is (nothing is spent then)."""
        now = self._clock()
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(tokens=float(self.burst), at=now)
            self._bound(now)
            self._buckets[key] = b
        else:
            self._buckets.move_to_end(key)
        b.tokens, b.at = self._level(b, now), now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.per_second

    def _bound(self, now: float) -> None:
        """Make room for one more bucket."""
        if len(self._buckets) < self.max_identities:
            return
        full = [k for k, b in self._buckets.items() if self._level(b, now) >= self.burst]
        for k in full:
            del self._buckets[k]
        while len(self._buckets) >= self.max_identities:
            self._buckets.popitem(last=False)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
