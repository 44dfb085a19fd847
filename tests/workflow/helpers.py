"""Small helpers for driving conversations in tests through the public Python API."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio.client import Client, WorkflowHistory

from geniectl import GenieConversations
from workflows import ConversationPolicy, ConversationStatus

T = TypeVar("T")

GENIE = "gin-test-genie"
USER = "user-1"


def patch_markers(history: WorkflowHistory) -> list[str]:
    """The ids of the ``workflow.patched`` markers the run recorded, in order."""
    return [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in history.events
        if e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]


def timer_waits(
    history: WorkflowHistory, since: float, summary: bytes = b""
) -> list[tuple[float, timedelta]]:
    """Each timer whose summary holds ``summary``: seconds after ``since`` (a timestamp)
    it started, and how long it was set for."""
    return [
        (
            e.event_time.ToDatetime().timestamp() - since,
            e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta(),
        )
        for e in history.events
        if e.HasField("timer_started_event_attributes") and summary in e.user_metadata.summary.data
    ]


def convs(client: Client, task_queue: str) -> GenieConversations:
    return GenieConversations(client, task_queue=task_queue)


async def start(
    api: GenieConversations, *, policy: ConversationPolicy | None = None, user: str = USER
) -> str:
    return await api.start(GENIE, user, workflow_id=f"test-{uuid.uuid4()}", policy=policy)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    within: float = 20.0,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``check`` holds (for state only visible by asking)."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.05)


async def wait_state(
    api: GenieConversations, wid: str, state: str, within: float = 20.0
) -> ConversationStatus:
    return await eventually(
        lambda: api.status(wid), lambda s: s.state == state, within=within, what=state
    )
