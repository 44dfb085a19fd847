"""Fixtures for the ``genie_api`` tests: clients on the shared simulator, fresh users."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from genie_api import ApiKeyAuth, ClientTimeouts, GenieClient, ResumePolicy
from tests.services import SimProcess, running_sim

GENIE = "gin-apitest-01"

FAST_POLICY = ResumePolicy(
    max_attempts=5, initial_backoff=0.005, max_backoff=0.05, max_server_wait=0.05
)
"""Quick retries so recovery tests finish fast; ``max_server_wait`` caps the simulator's
``retry_after_ms`` (100 ms) — honouring it exactly is covered by a unit test."""

TEST_TIMEOUTS = ClientTimeouts(connect=5, read=10, write=10, pool=5, stream_read=10)


@pytest.fixture
def user_id() -> str:
    """A fresh end user per test, so conversations never leak between tests."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(sim: SimProcess) -> AsyncIterator[GenieClient]:
    """An API-key client on the shared simulator."""
    async with GenieClient(sim.base_url, ApiKeyAuth(sim.api_key), timeouts=TEST_TIMEOUTS) as c:
        yield c


@pytest.fixture
async def conversation_id(client: GenieClient, user_id: str) -> str:
    """A new conversation of ``user_id`` with :data:`GENIE`."""
    return (await client.create_conversation(GENIE, user_id=user_id)).conversation_id


@pytest.fixture(scope="module")
def result_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """A simulator that wraps every JSON success body as ``{"result": …}``."""
    log = tmp_path_factory.mktemp("sim-result") / "sim.log"
    with running_sim("--envelope", "result", "--ping-interval", "0.5", log_path=log) as sim:
        yield sim


@pytest.fixture(scope="module")
def oauth_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """A simulator that also accepts the OAuth access token ``tok`` for ``user-1``."""
    log = tmp_path_factory.mktemp("sim-oauth") / "sim.log"
    with running_sim("--oauth-token", "tok=user-1", log_path=log) as sim:
        yield sim
