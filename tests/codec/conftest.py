"""Clients and workers with the payload codec, on the suite's dev server and simulator."""

from __future__ import annotations

from collections.abc import Iterable

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from genie_codec import build_data_converter, new_key, parse_keys
from genie_stack._services import NAMESPACE

K1 = new_key("k1")
K2 = new_key("k2")
"""Fresh keys per test session: ``id:base64`` lines as GENIE_PAYLOAD_KEYS holds them."""


def address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def codec_client(env: WorkflowEnvironment, *keys: str, **kwargs: object) -> Client:
    """A client of the suite's server whose data converter encrypts with ``keys[0]``."""
    converter = build_data_converter(parse_keys(",".join(keys)))
    return await Client.connect(
        address(env),
        namespace=NAMESPACE,
        data_converter=converter,
        **kwargs,  # type: ignore[arg-type]
    )


async def raw_events(client: Client, workflow_id: str) -> list[HistoryEvent]:
    """Every event of every run, as the server stores them (no codec applied)."""
    events: list[HistoryEvent] = []
    runs = [w.run_id async for w in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    latest = (await client.get_workflow_handle(workflow_id).describe()).run_id
    for run_id in {*runs, latest}:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        events.extend(history.events)
    return events


def leaks(events: Iterable[HistoryEvent], secrets: Iterable[str]) -> list[str]:
    """The secrets found in the events' bytes (payload data is raw bytes there)."""
    blob = b"".join(e.SerializeToString() for e in events)
    return [s for s in secrets if s.encode() in blob]
