"""Backing-off waits that stay bounded (``workflows._backoff``): connection probes, outages."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

import pytest

from workflows._backoff import (
    AGE_SHARE,
    MAX_CONNECTION_POLL,
    by_age,
    next_probe_interval,
    probe_offsets,
)
from workflows._steps import OUTAGE_FIRST_WAIT, OUTAGE_MAX_WAIT

FIRST = timedelta(seconds=15)  # the policy's default connection_poll_interval
SERVER_EVENT_LIMIT = 51_200
EVENTS_PER_PROBE = 12  # a timer, an activity, two workflow tasks (and a little spare)


def test_the_first_hour_doubles_to_five_minutes_as_before() -> None:
    offsets = probe_offsets(FIRST, timedelta(hours=1))
    gaps = [b - a for a, b in pairwise(offsets)]
    assert gaps[:5] == [timedelta(seconds=s) for s in (30, 60, 120, 240, 300)]
    assert set(gaps[4:]) == {MAX_CONNECTION_POLL}
    assert len(offsets) == 15


@pytest.mark.parametrize("days", [1, 16, 366, 732])
def test_a_pause_of_any_length_stays_far_below_the_server_event_limit(days: int) -> None:
    """A year's deadline, and another year of escalation: about 140 probes, where probing
    every five minutes would reach the server's limit (which terminates the run) in 16."""
    offsets = probe_offsets(FIRST, timedelta(days=days))
    assert len(offsets) * EVENTS_PER_PROBE < 2_000 < SERVER_EVENT_LIMIT
    every_five_minutes = timedelta(days=days) / MAX_CONNECTION_POLL
    assert len(offsets) < every_five_minutes / 5


def test_a_user_who_connects_is_noticed_within_a_twelfth_of_the_time_waited() -> None:
    offsets = probe_offsets(FIRST, timedelta(days=366))
    for at, following in pairwise(offsets):
        assert following - at <= max(MAX_CONNECTION_POLL, at / AGE_SHARE)


def test_intervals_never_shrink() -> None:
    offsets = probe_offsets(FIRST, timedelta(days=30))
    gaps = [b - a for a, b in pairwise(offsets)]
    assert gaps == sorted(gaps)


@pytest.mark.parametrize(
    ("previous", "waited", "expected"),
    [
        (timedelta(seconds=15), timedelta(seconds=15), timedelta(seconds=30)),
        (MAX_CONNECTION_POLL, timedelta(minutes=30), MAX_CONNECTION_POLL),
        (MAX_CONNECTION_POLL, timedelta(hours=1), MAX_CONNECTION_POLL),
        (MAX_CONNECTION_POLL, timedelta(hours=24), timedelta(hours=2)),
        (timedelta(days=1), timedelta(days=1), timedelta(hours=2)),  # a large first poll
    ],
)
def test_next_interval(previous: timedelta, waited: timedelta, expected: timedelta) -> None:
    assert next_probe_interval(previous, waited) == expected


def test_no_probes_when_disabled_or_later_than_the_horizon() -> None:
    assert probe_offsets(timedelta(0), timedelta(days=1)) == []
    assert probe_offsets(timedelta(seconds=-1), timedelta(days=1)) == []
    assert probe_offsets(timedelta(days=2), timedelta(days=1)) == []


def test_a_year_long_outage_stays_far_below_the_event_limit_and_its_first_hour_as_before() -> None:
    """The outage retries of ``_steps``: 30 s doubling to five minutes, then the age rule.
    Each retry also spends the activity's own ~1.5 min of attempts (not in history)."""
    wait, down, retries = OUTAGE_FIRST_WAIT, timedelta(0), 0
    while down < timedelta(days=366):
        down += timedelta(seconds=90) + max(wait, by_age(down))
        wait = min(wait * 2, OUTAGE_MAX_WAIT)
        retries += 1
    assert retries * EVENTS_PER_PROBE < 2_000 < SERVER_EVENT_LIMIT
    wait, down = OUTAGE_FIRST_WAIT, timedelta(0)
    while down < timedelta(hours=1):  # unchanged within the default api_outage_timeout
        assert max(wait, by_age(down)) == wait
        down += timedelta(seconds=90) + wait
        wait = min(wait * 2, OUTAGE_MAX_WAIT)
