"""Gauges of approvals waiting for a human, counted through Temporal visibility.

How many approvals wait now, how old the oldest is and whether any outlived its deadline
are facts across conversations, which no per-workflow counter can give. So each worker
counts them every ``SAMPLE_EVERY`` through visibility, from the search attributes the
workflow keeps (``GenieState``, ``GenieAwaitingSince``, ``GenieDeadline``), for the
running conversations of its own task queue, and sets gauges on the Temporal runtime's
meter: they are served on the same ``/metrics`` as the SDK's metrics.

Every worker of a task queue exports the same values, so aggregate them with ``max()``,
never ``sum()``. A sample costs at most six visibility calls (five counts and one listing
of the oldest age band), whatever the number of conversations.
"""

from __future__ import annotations

import asyncio
import logging
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
MAX_LISTED: Final = 10_000
"""At most this many conversations are read to find the oldest (from the oldest band)."""
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
    oldest_seconds: float
    past_deadline: int


async def sample_pending(client: Client, task_queue: str, now: datetime) -> PendingSample:
    """Count the approvals waiting on ``task_queue``'s running conversations."""
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
    oldest = 0.0
    # The oldest approval is in the oldest non-empty band, usually a short list.
    band = next((AGE_BANDS[i][1] for i in reversed(range(len(AGE_BANDS))) if at_least[i]), None)
    if band is not None:
        seen = 0
        async for wf in client.list_workflows(older_than(band), limit=MAX_LISTED):
            since = wf.typed_search_attributes.get(GENIE_AWAITING_SINCE)
            if since is not None:
                oldest = max(oldest, (now - since).total_seconds())
            seen += 1
        if seen >= MAX_LISTED:
            log.warning("more than %d approvals wait; the oldest age is a lower bound", seen)
    past = await client.count_workflows(
        f"{waiting} AND {GENIE_DEADLINE.name} <= {_at(now - DEADLINE_GRACE)}"
    )
    return PendingSample(by_age=by_age, oldest_seconds=oldest, past_deadline=past.count)


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
