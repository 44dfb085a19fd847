"""The retry budget of a turn's stream: stated once, and only the server may pace retries.

``activities/_options.py`` states the budget in its module docstring, naming the limits
with their values; the first tests hold that text to the code, so neither can change
without the other. The rest prove the rule that made a one-minute outage fail a turn:
an activity's next-retry delay comes from the server's ``Retry-After`` or from nowhere,
never from the reader's own reconnect pacing (which would replace the workflow's
back-off and spend its attempts within a minute).
"""

from __future__ import annotations

import re
from contextlib import aclosing
from datetime import timedelta

import pytest

import activities._options as options
from activities._errors import to_application_error
from genie_api import (
    GenieClient,
    RateLimitedError,
    ResumePolicy,
    RunReader,
    StreamResumeError,
)
from tests.services import SimProcess

from .conftest import FAST_POLICY, GENIE

_STATED = re.compile(r"``([\w.]+)`` = ([\d.]+) ?s?\b")


def _stated() -> dict[str, float]:
    doc = options.__doc__ or ""
    return {name: float(value) for name, value in _STATED.findall(doc)}


def _actual(name: str) -> float:
    owner, _, attr = name.rpartition(".")
    value = getattr(ResumePolicy(), attr) if owner == "ResumePolicy" else getattr(options, name)
    assert isinstance(value, int | float), name
    return float(value)


def test_budget_docstring_names_every_limit_with_its_value() -> None:
    stated = _stated()
    assert set(stated) == {
        "ResumePolicy.initial_backoff",
        "ResumePolicy.max_backoff",
        "ResumePolicy.max_attempts",
        "MAX_MALFORMED_RETRIES",
        "MAX_SERVER_RETRY_DELAY",
        "MIN_SERVER_RETRY_DELAY",
        "HEARTBEAT_EVERY",
        "HEARTBEAT_IDLE_EVERY",
    }
    for name, value in stated.items():
        assert _actual(name) == value, f"{name} is {_actual(name)}, the docstring says {value}"


def test_budget_docstring_states_the_readers_waiting_time() -> None:
    """ "About N s of waiting" before a reader hands over: the back-offs between tries."""
    policy = ResumePolicy()
    waits = [
        min(policy.max_backoff, policy.initial_backoff * 2 ** (k - 1))
        for k in range(1, policy.max_attempts)
    ]
    match = re.search(r"about (\d+) s of\s+waiting", options.__doc__ or "")
    assert match is not None
    assert int(match.group(1)) == round(sum(waits))


async def _give_up(sim: SimProcess, client: GenieClient, cid: str, user: str) -> StreamResumeError:
    """Cut the stream after 3 events with E8 and E9 failing until the reader gives up."""
    sim.fault(endpoint="send_message", drop_after_events=3, conversation_id=cid)
    reader = RunReader(client, GENIE, cid, user_id=user, policy=FAST_POLICY)

    async def drain() -> None:
        async with aclosing(reader.send("steps:8")) as events:
            async for _ in events:
                pass

    with pytest.raises(StreamResumeError) as info:
        await drain()
    return info.value


async def test_reader_pacing_never_becomes_a_retry_delay(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    sim.fault(endpoint="reconnect", status=503, times=1000, conversation_id=conversation_id)
    sim.fault(endpoint="events", status=502, times=1000, conversation_id=conversation_id)
    err = await _give_up(sim, client, conversation_id, user_id)
    assert err.retry_after is None
    failure = to_application_error(err)
    assert failure.non_retryable is False
    assert failure.next_retry_delay is None  # the workflow's back-off decides


async def test_a_servers_retry_after_is_passed_on(
    sim: SimProcess, client: GenieClient, conversation_id: str, user_id: str
) -> None:
    for endpoint in ("reconnect", "events"):
        sim.fault(
            endpoint=endpoint,
            status=429,
            retry_after=2,
            times=1000,
            conversation_id=conversation_id,
        )
    err = await _give_up(sim, client, conversation_id, user_id)
    assert err.retry_after == 2.0
    assert to_application_error(err).next_retry_delay == timedelta(seconds=2)


@pytest.mark.parametrize("asked", [1e-6, 0.001, 0.5])
def test_a_tiny_retry_after_is_raised_to_a_second(asked: float) -> None:
    """``retry_after_ms: 0.001`` made a one-microsecond delay: a peer asking it every time
    would have had the retries come back to back."""
    err = RateLimitedError("slow down", status=429, retry_after=asked)
    delay = to_application_error(err).next_retry_delay
    assert delay == timedelta(seconds=options.MIN_SERVER_RETRY_DELAY)


def test_a_bogus_retry_after_is_capped() -> None:
    err = RateLimitedError("slow down", status=429, retry_after=86_400.0)
    delay = to_application_error(err).next_retry_delay
    assert delay == timedelta(seconds=options.MAX_SERVER_RETRY_DELAY)
