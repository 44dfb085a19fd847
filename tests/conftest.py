"""Session-wide fixtures: a real simulator process (and, later, a real Temporal dev server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import SimProcess, running_sim


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
