"""``python -m tests.telemetry._failing ADDRESS NAMESPACE SECRET``: a workflow whose activity
fails with ``SECRET`` in its message (as an API error quoting a user's text would), run
by a worker with the worker's tracing (``setup_tracing``, ``temporal_plugins``). The
workflow fails with that error too. Exit 0 once it has failed and the spans are out."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from genie_telemetry import setup_tracing, shutdown_tracing, temporal_plugins


@activity.defn
async def quote(secret: str) -> None:
    raise ApplicationError(
        f"HTTP 400 from send_message — {secret!r} is not allowed", type="X", non_retryable=True
    )


@workflow.defn(sandboxed=False)
class Failing:
    @workflow.run
    async def run(self, secret: str) -> None:
        await workflow.execute_activity(quote, secret, start_to_close_timeout=timedelta(seconds=10))


async def main(address: str, namespace: str, secret: str) -> None:
    assert setup_tracing("genie-failing"), "run with OTEL_* set"
    client = await Client.connect(address, namespace=namespace, plugins=temporal_plugins())
    tq = f"failing-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=tq,
        workflows=[Failing],
        activities=[quote],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        try:
            await client.execute_workflow(
                Failing.run,
                secret,
                id=f"failing-{uuid.uuid4()}",
                task_queue=tq,
            )
        except WorkflowFailureError:
            pass
        else:
            raise AssertionError("the workflow was meant to fail")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
    shutdown_tracing()
