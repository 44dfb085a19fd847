"""The approver's view in a real browser: a pause appears in the inbox by itself, one
approval later the waiting ``geniectl ask`` prints the genie's reply; and the README's
first command, ``geniectl dev --demo``, approved with one click in the inbox it prints.

The inbox runs as a process (genie_stack's ``InboxProcess``, development identity) on
this package's dev server; the conversation is started by ``geniectl ask`` as a user of
the CLI would, and waits in that process while the browser decides. Screenshots of the
pending, item and outcome pages go to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from temporalio.testing import WorkflowEnvironment

from genie_stack import InboxProcess, free_ports, inbox_env
from tests.browser.conftest import Shots

GENIECTL = str(Path(sys.executable).parent / "geniectl")


@pytest.fixture
async def inbox(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[InboxProcess]:
    address = temporal_env.client.service_client.config.target_host
    env = inbox_env(
        temporal_address=address,
        settings={"auth": "dev", "allow_dev": True, "refresh_seconds": 1},
        inherit=False,
    )
    async with InboxProcess(env=env, log_path=tmp_path / "inbox.log") as process:
        yield process


async def test_a_pause_appears_by_itself_and_one_approval_lets_ask_print_the_reply(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    inbox: InboxProcess,
    page: Page,
    shots: Shots,
) -> None:
    await page.goto(f"{inbox.url}/pending")
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(page.get_by_text("Development mode, not authenticated")).to_be_visible()
    await page.get_by_label("Name").fill("alice")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Waiting for a decision")).to_be_visible()
    # Marks this very document: still there later means the page was never reloaded.
    await page.evaluate("window.__sameDocument = true")

    wid = f"browser-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "GENIE_TASK_QUEUE": task_queue,
        "COLUMNS": "200",
    }
    ask = await asyncio.create_subprocess_exec(
        GENIECTL,
        "ask",
        wid,
        "Please email the Q3 report to the team. confirm:send_email",
        "--genie",
        "gin-browser",
        "--user",
        "u-browser",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        item = page.locator(f'article[data-workflow-id="{wid}"]')
        await expect(item).to_be_visible()
        assert await page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        await expect(item.get_by_role("heading", name="Run skill send_email")).to_be_visible()
        await expect(
            item.get_by_text("Please email the Q3 report to the team.").first
        ).to_be_visible()
        await expect(item.get_by_text("gin-browser")).to_be_visible()
        await shots("inbox-pending")

        await item.get_by_role("link", name="Run skill send_email").click()
        decide = page.locator("section.decide")
        await expect(decide.get_by_role("button", name="Approve")).to_be_visible()
        await expect(page.get_by_label("Reason for rejecting")).to_be_visible()
        await shots("inbox-item")

        await decide.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
        await expect(page.get_by_text("Recorded as approved by alice")).to_be_visible()
        await shots("inbox-outcome")

        out, err = await asyncio.wait_for(ask.communicate(), 60)
    finally:
        if ask.returncode is None:
            ask.kill()
            await ask.wait()
    text = out.decode()
    assert ask.returncode == 0, err.decode() + text
    assert "awaiting_approval" in text and "Skills run: send_email" in text, text


async def _line_with(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"output ended before {needle!r}:\n" + "".join(seen))
        line = raw.decode()
        seen.append(line)
        if needle in line:
            return line


async def test_geniectl_dev_demo_is_approved_with_one_click_in_the_inbox(
    tmp_path: Path, page: Page, shots: Shots
) -> None:
    """What a new user does after `make run`: open the inbox URL the stack prints, see the
    demo's pending approval with its context, click Approve, and the demo prints the
    genie's reply."""
    ports = [str(p) for p in free_ports(6)]
    flags = [
        "--temporal-port",
        "--ui-port",
        "--sim-port",
        "--metrics-port",
        "--inbox-port",
        "--codec-port",
    ]
    dev = await asyncio.create_subprocess_exec(
        GENIECTL,
        "dev",
        "--demo",
        "--exit-after-demo",
        "--state-dir",
        str(tmp_path),
        *(a for pair in zip(flags, ports, strict=True) for a in pair),
        env={**os.environ, "COLUMNS": "300"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    seen: list[str] = []
    try:
        assert dev.stdout is not None
        async with asyncio.timeout(90):
            inbox_line = await _line_with(dev.stdout, "Approvals inbox", seen)
            inbox = inbox_line.split("Approvals inbox", 1)[1].split()[0]
            assert inbox == f"http://127.0.0.1:{ports[4]}"
            link_line = await _line_with(dev.stdout, "Approve it in the inbox:", seen)
        link = link_line.split("Approve it in the inbox:", 1)[1].split()[0]
        assert link.startswith(f"{inbox}/items/demo-") and "/skill/call_" in link

        await page.goto(inbox)  # the URL as printed; no login in development mode
        item = page.locator("article.item", has_text="send_email")
        await expect(item).to_be_visible()
        await expect(item.locator(".said.user")).to_contain_text("Please email the Q3 report")
        await shots("dev-demo-pending")
        await item.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("heading", name="Approved")).to_be_visible()

        async with asyncio.timeout(60):
            await _line_with(dev.stdout, "the genie replied", seen)
            await dev.wait()
        assert dev.returncode == 0, "".join(seen)
        assert any("Skills run: send_email" in line for line in seen), "".join(seen)
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(dev.wait(), 60)
            except TimeoutError:
                dev.kill()
                await dev.wait()
