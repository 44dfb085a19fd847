"""Temporal's own floor: the smallest workflows that do the same work as ours.

``python -m bench._floor`` is a worker process (run by ``BenchStack`` on its own task
queue, ``FLOOR_TASK_QUEUE``, on the same dev server as our worker) with two workflow types
and no sandbox, the same runner our worker uses:

- ``FloorTurns`` (floors a and b): parked on ``wait_condition`` until the ``done`` signal;
  its ``turn`` update runs one activity that does exactly the bare client's turn against
  the simulator (``RunReader.send`` to ``processing.finished``, E1 first when there is no
  conversation yet) and returns. ``local=True`` runs it as a *local* activity instead.
  No heartbeats, no search attributes, no timers, no state: what a turn cannot do without.
- ``FloorDecision`` (floor c): started with a run already parked on a confirmation at the
  simulator (parked by the bench with the bare client); its ``decide`` signal runs one
  activity (E10, then the run resumed from the cursor to ``processing.finished``) and the
  workflow completes.

A figure of ours divided by its floor is what our workflow adds beyond Temporal's own
round trips for the same work; the floor divided by the bare client is what Temporal
itself costs. The bench side (``park_bare``, ``bare_decide``) lives here too, so the
floor and the bare baseline share one definition of "the same work".
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

from genie_api import ApiKeyAuth, GenieClient, RunCursor, RunReader, SkillConfirmationRequired

FLOOR_TASK_QUEUE = "bench-floor"
READY_LINE = "worker polling task queue"
"""What ``WorkerProcess`` waits for in the log (the same line ``worker.py`` logs)."""
GENIE = "gin-bench"
USER = "bench-user"
TIMEOUT = timedelta(seconds=120)


@dataclass
class FloorTurn:
    conversation_id: str | None
    text: str


@dataclass
class FloorReply:
    conversation_id: str
    events: int


@dataclass
class FloorPark:
    """A run parked on a confirmation at the simulator, and where its reader stopped."""

    conversation_id: str
    call_id: str
    cursor: dict[str, Any]


# ---------------------------------------------------------------- the bare work


async def bare_turn(genie: GenieClient, conversation_id: str | None, text: str) -> FloorReply:
    """The bare client's turn (E1 first if needed), to ``processing.finished``."""
    if conversation_id is None:
        conversation_id = (await genie.create_conversation(GENIE, user_id=USER)).conversation_id
    reader = RunReader(genie, GENIE, conversation_id, user_id=USER)
    n = 0
    async with aclosing(reader.send(text)) as events:
        async for _ in events:
            n += 1
    if not reader.finished:
        raise RuntimeError(f"run in {conversation_id} ended unfinished after {n} events")
    return FloorReply(conversation_id, n)


async def park_bare(genie: GenieClient, text: str = "please confirm:send_email") -> FloorPark:
    """A new conversation whose run waits on a skill confirmation (read up to it)."""
    conv = (await genie.create_conversation(GENIE, user_id=USER)).conversation_id
    reader = RunReader(genie, GENIE, conv, user_id=USER)
    async with aclosing(reader.send(text)) as events:
        async for ev in events:
            if isinstance(ev, SkillConfirmationRequired) and ev.call_id:
                return FloorPark(conv, ev.call_id, reader.cursor.model_dump(mode="json"))
    raise RuntimeError(f"run in {conv} ended without a confirmation")


async def bare_decide(genie: GenieClient, park: FloorPark) -> int:
    """E10 approve, then the run resumed from the cursor to ``processing.finished``."""
    await genie.decide_skill(GENIE, park.conversation_id, park.call_id, user_id=USER, approved=True)
    cursor = RunCursor.model_validate(park.cursor)
    reader = RunReader(genie, GENIE, park.conversation_id, user_id=USER, cursor=cursor)
    n = 0
    async with aclosing(reader.resume()) as events:
        async for _ in events:
            n += 1
    if not reader.finished:
        raise RuntimeError(f"resumed run in {park.conversation_id} ended unfinished")
    return n


# ---------------------------------------------------------------- activities


class FloorActivities:
    def __init__(self, genie: GenieClient) -> None:
        self._genie = genie

    @activity.defn(name="floor_turn")
    async def turn(self, req: FloorTurn) -> FloorReply:
        return await bare_turn(self._genie, req.conversation_id, req.text)

    @activity.defn(name="floor_decide")
    async def decide(self, park: FloorPark) -> int:
        return await bare_decide(self._genie, park)


# ---------------------------------------------------------------- workflows


@workflow.defn(name="FloorTurns")
class FloorTurns:
    @workflow.init
    def __init__(self, local: bool) -> None:
        self._local = local
        self._done = False

    @workflow.run
    async def run(self, local: bool) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.update
    async def turn(self, req: FloorTurn) -> FloorReply:
        if self._local:
            return await workflow.execute_local_activity_method(
                FloorActivities.turn, req, start_to_close_timeout=TIMEOUT
            )
        return await workflow.execute_activity_method(
            FloorActivities.turn, req, start_to_close_timeout=TIMEOUT
        )

    @workflow.signal
    def done(self) -> None:
        self._done = True

    @workflow.update
    def ready(self) -> None:
        """Nothing: with update-with-start, a start that returns once the run's first
        workflow task is done (parked), as ours returns once parked."""


@workflow.defn(name="FloorDecision")
class FloorDecision:
    def __init__(self) -> None:
        self._decided = False

    @workflow.run
    async def run(self, park: FloorPark) -> int:
        await workflow.wait_condition(lambda: self._decided)
        return await workflow.execute_activity_method(
            FloorActivities.decide, park, start_to_close_timeout=TIMEOUT
        )

    @workflow.signal
    def decide(self) -> None:
        self._decided = True

    @workflow.update
    def ready(self) -> None:
        """As ``FloorTurns.ready``: the bench starts a run parked, not merely queued."""


# ---------------------------------------------------------------- the process


async def _serve() -> None:
    from genie_stack import connect  # the pydantic data converter, as every client here

    client = await connect(os.environ["TEMPORAL_ADDRESS"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    genie = GenieClient(os.environ["FLOOR_API_BASE_URL"], ApiKeyAuth(os.environ["FLOOR_API_KEY"]))
    acts = FloorActivities(genie)
    # Sized as worker.py sizes ours, so the floor differs only in what the workflow does.
    worker = Worker(
        client,
        task_queue=os.environ.get("FLOOR_TASK_QUEUE", FLOOR_TASK_QUEUE),
        workflows=[FloorTurns, FloorDecision],
        activities=[acts.turn, acts.decide],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=1000,
        max_concurrent_workflow_tasks=200,
        # As many as our worker caches (the bench passes it), so that with more runs
        # parked than cached the floor wakes evicted runs exactly as ours does.
        max_cached_workflows=int(os.environ.get("FLOOR_MAX_CACHED_WORKFLOWS", "400")),
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(20),
    )
    async with genie, worker:
        logging.getLogger("bench.floor").warning(READY_LINE + " %s", worker.task_queue)
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
