"""Backing-off waits that stay bounded however long they last.

Each retry or probe adds about a dozen history events (a timer, an activity, two
workflow tasks) and two billable actions. A wait that stayed at a five-minute cap for a
long deadline (the policy allows a year, plus escalation) would cost about 100,000
actions a year, and, for a step retried through an outage (which cannot continue as
new while its step is in flight; a pause can), reach the server's 51,200 events in
about 16 days. So past
its cap, a wait is ``1 / AGE_SHARE`` of the time already waited: a year costs about 120
waits in all, and whatever the wait was for is noticed within about 8% of the time it
took. Two waits use the rule:

- probes of a pending runtime connection: the live API may never send
  ``runtime_connection.auth_success``, so a run parked on a connection is probed (E3,
  then E6) for a user who connected without anyone saying so; the interval doubles from
  the policy's ``connection_poll_interval`` up to five minutes (``probe_offsets``);
- retries of a step while the API is unreachable (``_steps``): 30 s doubling to five
  minutes, for as long as ``api_outage_timeout`` allows.

The schedule is pure, so the workflow, its tests and the bench share it; ``age_ruled``
is where a workflow applies the rule, asking its patch only where the rule
changes a wait (so runs recorded before it replay their old waits, and a wait that
never reaches its cap records no marker).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

MAX_CONNECTION_POLL = timedelta(minutes=5)
"""Where doubling stops; until a pause has waited an hour, probes are this far apart."""
AGE_SHARE = 12
"""Past its cap, a wait is ``1 / AGE_SHARE`` of the time already waited."""


def by_age(waited: timedelta) -> timedelta:
    """The wait the age rule asks for, ``waited`` into a pause or an outage."""
    return waited / AGE_SHARE


def age_ruled(
    wait: timedelta, waited: timedelta, patched: Callable[[str], bool], patch_id: str
) -> timedelta:
    """``wait``, or the age rule's longer wait where this run may take it (``patch_id``,
    asked with the conversation's ``TurnRunner._patched``)."""
    aged = by_age(waited)
    if aged > wait and patched(patch_id):
        return aged
    return wait


def doubled_interval(previous: timedelta) -> timedelta:
    """The schedule before the age rule: doubling, capped at ``MAX_CONNECTION_POLL``."""
    return min(previous * 2, MAX_CONNECTION_POLL)


def next_probe_interval(previous: timedelta, waited: timedelta) -> timedelta:
    """The wait before the next probe, after one ``waited`` into the pause."""
    return max(doubled_interval(previous), by_age(waited))


def probe_offsets(first: timedelta, horizon: timedelta) -> list[timedelta]:
    """When a pause nobody settles is probed, from its start, before ``horizon``."""
    if first <= timedelta(0):
        return []
    offsets: list[timedelta] = []
    at, interval = first, first
    while at < horizon:
        offsets.append(at)
        interval = next_probe_interval(interval, at)
        at += interval
    return offsets
