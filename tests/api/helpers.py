"""Shared helpers for the simulator-backed tests."""

from __future__ import annotations

from genie_api import GenieClient, GenieEvent

from .conftest import GENIE


async def stream_all(
    client: GenieClient, conversation_id: str, message: str, user_id: str | None
) -> list[GenieEvent]:
    """Send ``message`` with E5 streaming and collect every event (pings included)."""
    async with client.stream_message(GENIE, conversation_id, message, user_id=user_id) as events:
        return [e async for e in events]


async def persisted_run(
    client: GenieClient, conversation_id: str, run_id: str, user_id: str | None
) -> list[GenieEvent]:
    """Ground truth: every persisted event of one run, from E9, oldest first."""
    out: list[GenieEvent] = []
    async for page in client.iter_event_pages(
        GENIE, user_id=user_id, conversation_id=conversation_id, limit=500
    ):
        out.extend(e for e in page.events if e.genie_run_id == run_id)
    return out


def types(events: list[GenieEvent]) -> list[str]:
    """The event types, pings left out."""
    return [e.type for e in events if e.type != "system.ping"]
