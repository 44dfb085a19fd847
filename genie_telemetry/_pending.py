"""Gauges of approvals waiting for a human, counted through Temporal visibility.

How many approvals wait now, how old the oldest is and whether any outlived its deadline
are facts across conversations, which no per-workflow counter can give. So each worker
counts them every ``SAMPLE_EVERY`` through visibility, from the search attributes the
workflow keeps (``GenieState``, ``GenieAwaitingSince``, ``GenieDeadline``), for the
running conversations of its own task queue, and sets gauges on the Temporal runtime's
meter: they are served on the same ``/metrics`` as the SDK's metrics.

Every worker of a task queue exports the same values, so aggregate them with ``max()``,
never ``sum()``. A sample is made of counts only, whatever the number of conversations:
five for the bands and the deadline, and about log2(age range in seconds) more to find
the oldest age (``oldest_age``; under 20 while the oldest is under a day old). It lists no
workflows: listing the oldest band read every waiting conversation into the worker, each
30 s, which with thousands waiting in one band cost the worker seconds of CPU a sample.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import Runtime

from workflows.search_attributes import GENIE_AWAITING_SINCE, GENIE_DEADLINE

log = logging.getLogger("genie_worker.pending")

SAMPLE_EVERY: Final = timedelta(seconds=30)
DEADLINE_GRACE: Final = timedelta(minutes=1)
"""A wait counts as past its deadline only this long after it: the timer, the workflow
task that acts on it and the visibility update take a moment."""
AGE_BANDS: Final = (
    ("under_5m", timedelta(0)),
    ("5m_to_1h", timedelta(minutes=5)),
    ("1h_to_24h", timedelta(hours=1)),
    ("over_24h", timedelta(hours=24)),
)
"""The ``age`` label of ``genie_pending_approvals``: each band from its bound up to the
next one's."""
MAX_AGE: Final = timedelta(days=3650)
"""The oldest age looked for; an approval waiting longer is reported as this old."""
WORKFLOW_TYPE: Final = "GenieConversation"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _at(t: datetime) -> str:
    return _quoted(t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


@dataclass(frozen=True)
class PendingSample:
    """One sample: approvals per age band, the oldest one's age, and how many are past
    their deadline."""

    by_age: dict[str, int]
    oldest_seconds: int
    past_deadline: int


async def sample_pending(client: Client, task_queue: str, now: datetime) -> PendingSample:
    """Count the approvals waiting on ``task_queue``'s running conversations."""
    now = now.replace(microsecond=0)  # visibility compares whole seconds (``_at``)
    waiting = (
        f"WorkflowType = {_quoted(WORKFLOW_TYPE)} AND ExecutionStatus = 'Running' "
        f"AND TaskQueue = {_quoted(task_queue)} AND GenieState = 'awaiting_approval'"
    )

    def older_than(age: timedelta) -> str:
        if not age:
            return waiting
        return f"{waiting} AND {GENIE_AWAITING_SINCE.name} <= {_at(now - age)}"

    # Cumulative counts (waiting at least each bound), then the bands between them;
    # visibility is read at slightly different moments, so a difference may dip below 0.
    at_least = [(await client.count_workflows(older_than(b))).count for _, b in AGE_BANDS]
    by_age = {
        name: max(0, n - (at_least[i + 1] if i + 1 < len(at_least) else 0))
        for i, ((name, _), n) in enumerate(zip(AGE_BANDS, at_least, strict=True))
    }
    oldest = 0
    # The oldest approval is in the oldest non-empty band: bisect within it.
    nonempty = [i for i, n in enumerate(at_least) if n]
    if nonempty:
        i = nonempty[-1]
        lo = int(AGE_BANDS[i][1].total_seconds())
        hi = int(AGE_BANDS[i + 1][1].total_seconds()) if i + 1 < len(AGE_BANDS) else None

        async def waiting_at_least(age: int) -> bool:
            return (await client.count_workflows(older_than(timedelta(seconds=age)))).count > 0

        oldest = await oldest_age(waiting_at_least, lo, hi)
    past = await client.count_workflows(
        f"{waiting} AND {GENIE_DEADLINE.name} <= {_at(now - DEADLINE_GRACE)}"
    )
    return PendingSample(by_age=by_age, oldest_seconds=oldest, past_deadline=past.count)


async def oldest_age(
    waiting_at_least: Callable[[int], Awaitable[bool]], lo: int, hi: int | None
) -> int:
    """The greatest whole-second age ``a`` for which ``waiting_at_least(a)`` holds.

    Given that it holds at ``lo`` and, when ``hi`` is given, not at ``hi``. With no
    ``hi`` (the open last band) the step doubles until it fails, up to ``MAX_AGE``.
    Visibility times are whole seconds, so the answer is exact to the second in about
    log2(hi - lo) calls.
    """
    if hi is None:
        cap, step = int(MAX_AGE.total_seconds()), max(lo, 1)
        while hi is None:
            probe = min(lo + step, cap)
            if probe <= lo:
                return lo
            if await waiting_at_least(probe):
                lo, step = probe, step * 2
            else:
                hi = probe
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await waiting_at_least(mid):
            lo = mid
        else:
            hi = mid
    return lo


class PendingGauges:
    """The gauges, refreshed every ``every`` by a background task of the worker process.

    ``start`` returns at once; ``stop`` ends the task. Without a runtime (metrics off)
    both do nothing. A failed sample is logged and counted
    (``genie_pending_sample_failures``) and the gauges keep their last values.
    """

    def __init__(
        self, client: Client, meter: MetricMeter, task_queue: str, every: timedelta
    ) -> None:
        self._client, self._task_queue, self._every = client, task_queue, every
        meter = meter.with_additional_attributes(
            {"namespace": client.namespace, "task_queue": task_queue}
        )
        self._by_age = meter.create_gauge(
            "genie_pending_approvals", "skill confirmations waiting for a human, by age"
        )
        self._oldest = meter.create_gauge_float(
            "genie_oldest_pending_approval_seconds", "age of the oldest waiting approval"
        )
        self._past = meter.create_gauge(
            "genie_approvals_past_deadline",
            "approvals still waiting a minute after their deadline (stuck conversations)",
        )
        self._failures = meter.create_counter(
            "genie_pending_sample_failures", "visibility samples that failed"
        )
        self._failures.add(0)  # the series exists before the first failure
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls,
        client: Client,
        runtime: Runtime | None,
        task_queue: str,
        every: timedelta = SAMPLE_EVERY,
    ) -> PendingGauges | None:
        if runtime is None:
            return None
        gauges = cls(client, runtime.metric_meter, task_queue, every)
        gauges._task = asyncio.create_task(gauges._run(), name="genie-pending-gauges")
        return gauges

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as e:  # visibility down or rate-limited: try next time
                self._failures.add(1)
                log.warning("counting pending approvals failed: %s", e)
            await asyncio.sleep(self._every.total_seconds())

    async def refresh(self) -> None:
        s = await sample_pending(self._client, self._task_queue, datetime.now(UTC))
        for age, n in s.by_age.items():
            self._by_age.set(n, {"age": age})
        self._oldest.set(s.oldest_seconds)
        self._past.set(s.past_deadline)
