"""``python -m tests.telemetry._replay HISTORY.json...``: replay histories the way a
worker with traces on (``OTEL_*`` in the environment) replays them after a restart:
the same provider and plugins as ``worker.py``, the sandboxed runner. Exit 0 when all
replay deterministically."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from genie_telemetry import setup_tracing, shutdown_tracing, temporal_plugins
from workflows import GenieConversation


async def replay(paths: list[Path]) -> None:
    assert setup_tracing("genie-replay"), "run with OTEL_* set: this replays with traces on"
    replayer = Replayer(
        workflows=[GenieConversation],
        data_converter=pydantic_data_converter,
        plugins=temporal_plugins(),
    )
    for path in paths:
        await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))


if __name__ == "__main__":
    asyncio.run(replay([Path(p) for p in sys.argv[1:]]))
    shutdown_tracing()
