"""Finding the oldest waiting approval by counts alone (``oldest_age``), without a server.

The predicate stands for visibility's count ("any approval waiting at least this many
seconds?") over a fixed set of ages; the gauges' end-to-end values are checked against a
real server in ``tests/ops/test_dashboards.py``.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from genie_telemetry._pending import AGE_BANDS, MAX_AGE, oldest_age

BOUNDS = [int(b.total_seconds()) for _, b in AGE_BANDS]


def _oldest(ages: list[int]) -> tuple[int, int, list[int]]:
    """``oldest_age`` as ``sample_pending`` calls it: within the oldest non-empty band.
    Returns the answer, how many counts it took, and the ages it asked about."""
    asked: list[int] = []

    async def waiting_at_least(age: int) -> bool:
        asked.append(age)
        return any(a >= age for a in ages)

    i = max(j for j, b in enumerate(BOUNDS) if any(a >= b for a in ages))
    hi = BOUNDS[i + 1] if i + 1 < len(BOUNDS) else None
    return asyncio.run(oldest_age(waiting_at_least, BOUNDS[i], hi)), len(asked), asked


@pytest.mark.parametrize("oldest", [0, 1, 299, 300, 301, 3599, 3600, 7200, 86_399, 86_400])
def test_exact_at_band_edges(oldest: int) -> None:
    assert _oldest([0, oldest // 2, oldest])[0] == oldest


def test_exact_for_random_ages_in_few_counts() -> None:
    rng = random.Random(7)
    for _ in range(300):
        ages = [rng.randrange(0, 40 * 86_400) for _ in range(rng.randrange(1, 50))]
        found, counts, _ = _oldest(ages)
        assert found == max(ages)
        assert counts <= 48  # log2 of the band, or doubling then bisecting past a day


def test_under_a_day_needs_few_counts() -> None:
    # 1h..24h is 82,800 s wide: 17 halvings, whatever the number of conversations.
    assert _oldest([5000] * 10_000)[1] <= 17
    assert _oldest([42] * 10_000)[1] <= 9


def test_capped_at_max_age() -> None:
    cap = int(MAX_AGE.total_seconds())
    found, counts, asked = _oldest([cap * 3])
    assert found == cap
    assert max(asked) == cap and counts < 20


def test_just_under_the_cap_is_exact() -> None:
    cap = int(MAX_AGE.total_seconds())
    assert _oldest([cap - 1])[0] == cap - 1
