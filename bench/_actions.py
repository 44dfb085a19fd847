"""Temporal Cloud billable actions, counted from a history slice.

The rules are Temporal's (https://docs.temporal.io/cloud/actions, read 2026-12):

- workflow started: client start, update-with-start that starts, continue-as-new, child;
- timer started (also the implicit timer of a ``wait_condition`` with a timeout);
- search-attribute upsert: one per ``UpsertWorkflowSearchAttributes`` command, however
  many attributes it sets; attributes given at start, and ``TemporalChangeVersion``,
  are free;
- signal; update (accepted or rejected; a rejected one leaves no event, so it is not
  counted here); query (no event either: not counted; this bench sends none);
- activity started or retried: each attempt (the started event carries the attempt);
- markers: all markers of one workflow task count as one action (local activities, and
  the marker ``workflow.patched`` records);
- child workflow: two (start + execution); workflow options updated: one;
- activity heartbeat: one per heartbeat that reaches the server. Heartbeats are not in
  history: ``bench.actions`` counts them from the server's own RPC counter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from temporalio.api.enums.v1 import EventType as E

FREE_ATTRIBUTES = {"TemporalChangeVersion"}

ORDER = [
    "workflow started",
    "update",
    "signal",
    "activity attempt",
    "markers (per workflow task)",
    "timer started",
    "search-attribute upsert",
    "child workflow",
    "workflow options updated",
    "activity heartbeat",
]
"""Every billable action this bench names, in table order."""


def actions_in(events: Iterable[Any]) -> Counter[str]:
    """Billable actions of these history events, by name (heartbeats excluded)."""
    out: Counter[str] = Counter()
    marker_tasks: set[int] = set()
    for e in events:
        t = e.event_type
        if t in (E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,):
            out["workflow started"] += 1
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            out["update"] += 1
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            out["signal"] += 1
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            out["activity attempt"] += max(1, e.activity_task_started_event_attributes.attempt)
        elif t == E.EVENT_TYPE_MARKER_RECORDED:
            marker_tasks.add(e.marker_recorded_event_attributes.workflow_task_completed_event_id)
        elif t == E.EVENT_TYPE_TIMER_STARTED:
            out["timer started"] += 1
        elif t == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            attrs = e.upsert_workflow_search_attributes_event_attributes.search_attributes
            if set(attrs.indexed_fields) - FREE_ATTRIBUTES:
                out["search-attribute upsert"] += 1
        elif t == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            out["child workflow"] += 2
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED:
            out["workflow options updated"] += 1
    if marker_tasks:
        out["markers (per workflow task)"] = len(marker_tasks)
    return out


def billable_total(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k in ORDER)


def pending_timers(events: Iterable[Any]) -> list[float]:
    """Durations (seconds) of the timers started and neither fired nor cancelled."""
    started: dict[int, float] = {}
    for e in events:
        if e.event_type == E.EVENT_TYPE_TIMER_STARTED:
            a = e.timer_started_event_attributes
            started[e.event_id] = a.start_to_fire_timeout.ToTimedelta().total_seconds()
        elif e.event_type == E.EVENT_TYPE_TIMER_FIRED:
            started.pop(e.timer_fired_event_attributes.started_event_id, None)
        elif e.event_type == E.EVENT_TYPE_TIMER_CANCELED:
            started.pop(e.timer_canceled_event_attributes.started_event_id, None)
    return sorted(started.values())
