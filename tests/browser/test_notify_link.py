"""From a webhook to a decision: the link in a pause's notification opens the inbox item,
which asks who you are and a click, and never decides on GET (link scanners prefetch).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from genie_api import GenieClient
from genie_stack import InboxProcess, inbox_env
from tests.browser.conftest import Shots
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.webhooks import SECRET, Receiver
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker


@pytest.fixture
async def inbox(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[InboxProcess]:
    env = inbox_env(
        temporal_address=temporal_env.client.service_client.config.target_host,
        settings={"auth": "dev", "allow_dev": True, "refresh_seconds": 1},
        inherit=False,
    )
    async with InboxProcess(env=env, log_path=tmp_path / "inbox.log") as process:
        yield process


async def test_the_webhook_link_opens_the_item_and_one_click_approves(
    client: Client,
    sim: SimProcess,
    genie: GenieClient,
    inbox: InboxProcess,
    page: Page,
    shots: Shots,
) -> None:
    receiver = Receiver()
    tq = f"test-link-{uuid.uuid4()}"
    settings = worker_settings(
        sim, notify_url=receiver.url, notify_secret=SECRET, inbox_url=inbox.url
    )
    try:
        async with build_worker(client, settings, genie, task_queue=tq):
            api = convs(client, tq)
            wid = await start(api)
            turn = (await api.send(wid, "please confirm:send_email")).turn
            events = await eventually(
                lambda: _events(receiver), lambda e: len(e) == 1, what="the webhook"
            )
            link = events[0]["data"]["link"]
            assert link.startswith(f"{inbox.url}/items/{wid}/skill/")
            # A link scanner's GET decides nothing.
            async with httpx.AsyncClient() as http:
                await http.get(link)
            assert (await api.status(wid)).pending_approvals[0].decision is None

            await page.goto(link)
            await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
            await page.get_by_label("Name").fill("alice")
            await page.get_by_role("button", name="Log in").click()
            decide = page.locator("section.decide")
            await expect(decide.get_by_role("button", name="Approve")).to_be_visible()
            await shots("webhook-link-item")
            await decide.get_by_role("button", name="Approve").click()
            await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
            done = await api.wait(wid, turn, wait_for="completion")
            assert done.status == "completed"
    finally:
        receiver.close()


async def _events(receiver: Receiver) -> list[dict[str, Any]]:
    return receiver.events()
