"""One conversation that cannot be read must not hide the others from ``pending``.

A conversation whose status query fails (a worker that cannot replay it: a payload key
it lacks, a non-determinism bug) is stood for by a small workflow on its own worker that
marks itself ``awaiting_approval`` and fails every query. The real console script lists
the readable conversations and names the unreadable one on stderr.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tests.cli.test_geniectl import _started, cli_env, geniectl  # noqa: F401 (fixture)
from workflows.search_attributes import GENIE_STATE


@workflow.defn(name="UnreadableConversation")
class Unreadable:
    @workflow.run
    async def run(self) -> None:
        workflow.upsert_search_attributes([GENIE_STATE.value_set("awaiting_approval")])
        await workflow.wait_condition(lambda: False)

    @workflow.query
    def status(self) -> Any:
        raise RuntimeError("this worker cannot read the conversation")


async def test_an_unreadable_conversation_is_named_and_the_others_still_listed(
    temporal_env: WorkflowEnvironment,
    cli_env: dict[str, str],  # noqa: F811
) -> None:
    client = temporal_env.client
    tq = f"unreadable-{uuid.uuid4()}"
    bad = f"unreadable-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=tq, workflows=[Unreadable], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        handle = await client.start_workflow(Unreadable.run, id=bad, task_queue=tq)
        try:
            wid = await _started(cli_env)
            sent = await geniectl(cli_env, "send", wid, "confirm:send_email")
            assert sent.code == 0, sent.stderr
            deadline = time.monotonic() + 30
            while True:
                r = await geniectl(cli_env, "pending", "--json")
                if r.code == 0 and wid in r.stdout and bad in r.stderr:
                    break
                assert time.monotonic() < deadline, (r.code, r.stdout, r.stderr)
                await asyncio.sleep(0.3)
            assert "Traceback" not in r.stderr
            assert bad not in r.stdout  # JSON on stdout stays the readable items
            table = await geniectl(cli_env, "pending")
            assert table.code == 0 and wid in table.stdout, table.stderr
            assert f"could not read {bad}" in table.stderr
        finally:
            await handle.terminate()
