"""The worker refuses a namespace without the search attributes conversations write.

Upserting an unregistered search attribute fails the workflow task, again and again, for
every conversation: a new attribute deployed before it was registered would wedge them
all. The worker checks at start instead, and says what to run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from genie_stack import TemporalDevServer
from tests.worker.test_config import SECRET, run_worker


@dataclass(kw_only=True)
class _WithoutDeadline(TemporalDevServer):
    """A dev server whose namespace predates ``GenieDeadline``."""

    def command(self) -> list[str]:
        cmd = super().command()
        at = cmd.index("GenieDeadline=Datetime")
        return cmd[: at - 1] + cmd[at + 1 :]


async def test_a_missing_search_attribute_stops_the_worker_naming_the_command(
    tmp_path: Path,
) -> None:
    async with _WithoutDeadline(log_path=tmp_path / "temporal.log") as server:
        r = await asyncio.to_thread(
            run_worker, tmp_path, GENIE_API_KEY=SECRET, TEMPORAL_ADDRESS=server.address
        )
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "has no search attribute GenieDeadline" in line, r.stderr
    assert "temporal operator search-attribute create --namespace default" in line
    assert "--name GenieDeadline --type Datetime" in line
    assert SECRET not in r.stderr + r.stdout
