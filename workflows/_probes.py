"""When a pending runtime connection is probed at the API.

The live API may never send ``runtime_connection.auth_success``, so a run parked on a
connection is probed (E3, then E6) for a user who connected without anyone saying so.
Each probe adds about a dozen history events (a timer, an activity, two workflow
tasks), and a turn cannot continue as new while it waits, so the schedule must stay
bounded however long the pause's deadline is (up to a year with escalation):
a pause probed every five minutes for its whole wait would reach the server's limit of
51,200 events, which terminates the run, after about 16 days.

So the interval doubles up to five minutes, and past that a probe waits a twelfth of
how long the pause has already waited: a user who connects is noticed within about 8%
of the time they took, and a year-long pause is probed about 120 times in all
(``probe_offsets``). Pure, so the workflow, its tests and the bench share one schedule.
"""

from __future__ import annotations

from datetime import timedelta

MAX_CONNECTION_POLL = timedelta(minutes=5)
"""Where doubling stops; until a pause has waited an hour, probes are this far apart."""
PROBE_AGE_SHARE = 12
"""Past ``MAX_CONNECTION_POLL``, a probe waits ``1 / PROBE_AGE_SHARE`` of the time waited."""


def doubled_interval(previous: timedelta) -> timedelta:
    """The schedule before the age rule: doubling, capped at ``MAX_CONNECTION_POLL``."""
    return min(previous * 2, MAX_CONNECTION_POLL)


def next_probe_interval(previous: timedelta, waited: timedelta) -> timedelta:
    """The wait before the next probe, after one ``waited`` into the pause."""
    return max(doubled_interval(previous), waited / PROBE_AGE_SHARE)


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
