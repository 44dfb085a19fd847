"""The approver's view in a real browser: a pause appears in the inbox by itself, one
approval later the waiting ``geniectl ask`` prints the genie's reply; and the README's
first command, ``geniectl dev --demo``, approved with one click in the inbox it prints;
and an approver on a phone, who sees every parameter without scrolling sideways and
approves with one tap.

The inbox runs as a process (genie_stack's ``InboxProcess``, development identity) on
this package's dev server; the conversation is started by ``geniectl ask`` as a user of
the CLI would, and waits in that process while the browser decides. Screenshots of the
pending, item and outcome pages go to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, ViewportSize, expect
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from genie_stack import InboxProcess, free_ports, inbox_env
from geniectl import GenieConversations
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
        await expect(page).to_have_title(re.compile(r"^\(\d+\) Pending · Genie approvals$"))
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


async def test_a_tab_in_the_background_counts_what_waits_in_its_title(
    browser: Browser, client: Client, task_queue: str, inbox: InboxProcess
) -> None:
    """The approver has the inbox open in a tab they are not looking at: a new pause still
    reaches the tab's title, "(n) Pending", without a reload."""
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{inbox.url}/pending")
        await page.get_by_label("Name").fill("alice")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("heading", name="Waiting for a decision")).to_be_visible()
        before = await page.title()
        # What the browser reports for a tab in the background.
        await page.evaluate(
            "Object.defineProperty(document, 'hidden', {get: () => true});"
            "Object.defineProperty(document, 'visibilityState', {get: () => 'hidden'});"
            "window.__sameDocument = true"
        )
        api = GenieConversations(client, task_queue=task_queue)
        wid = f"tab-{uuid.uuid4().hex[:8]}"
        paused = await api.ask(wid, "confirm:send_email", start_with=("gin-tab", "u-tab"))
        assert paused.status == "awaiting_approval", paused
        await expect(page).not_to_have_title(before)
        assert re.fullmatch(r"\(\d+\) Pending · Genie approvals", await page.title())
        assert await page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        await expect(page.locator(f'article[data-workflow-id="{wid}"]')).to_be_attached()
    finally:
        await context.close()


PHONE: ViewportSize = {"width": 390, "height": 844}
"""A common phone's viewport in CSS pixels: an approver often opens the link from chat."""
TAIL = "TAIL-legal@example.com"


async def test_an_approver_on_a_phone_sees_every_parameter_and_approves_with_one_tap(
    browser: Browser,
    client: Client,
    task_queue: str,
    inbox: InboxProcess,
) -> None:
    """On a phone's screen nothing is cut off at the side, so the end of a long parameter
    (here the recipient, after a long unbroken URL) is on screen without scrolling the
    block sideways; the buttons are big enough to tap, and one tap approves."""
    api = GenieConversations(client, task_queue=task_queue)
    wid = f"phone-{uuid.uuid4().hex[:8]}"
    # One unbroken 150-character URL (the simulator's genie keeps 200 characters).
    url = f"https://files.example.com/{'a' * 100}/contract.pdf"
    text = f"Forward {url} to {TAIL} confirm:send_email"
    paused = await api.ask(wid, text, start_with=("gin-phone", "u-phone"))
    assert paused.status == "awaiting_approval", paused

    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = await context.new_page()
    shots = Shots(page, "phone")
    try:
        await page.goto(f"{inbox.url}/pending")
        await page.get_by_label("Name").fill("alice")
        await page.get_by_role("button", name="Log in").tap()
        item = page.locator(f'article[data-workflow-id="{wid}"]')
        await expect(item).to_be_visible()
        await _fits_the_screen(page)
        await shots("pending")

        await item.get_by_role("link", name="Run skill send_email").tap()
        decide = page.locator("section.decide")
        approve = decide.get_by_role("button", name="Approve")
        await expect(approve).to_be_visible()
        await _fits_the_screen(page)
        await _wholly_on_screen(page, page.locator("dl.param-list pre").first, TAIL)
        box = await approve.bounding_box()
        assert box is not None and box["height"] >= 44, box  # a finger's size, not a cursor's
        await shots("item")

        await approve.tap()
        await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
        await shots("outcome")

        await page.goto(f"{inbox.url}/conversations/{wid}")
        await expect(page.get_by_role("cell", name="alice").first).to_be_visible()
        await _fits_the_screen(page)  # the audit table scrolls in its own box
        await shots("conversation")
    finally:
        await context.close()


async def _fits_the_screen(page: Page) -> None:
    """The page itself never scrolls sideways."""
    wide, screen = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert wide <= screen, f"{page.url} is {wide}px wide on a {screen}px screen"


async def _wholly_on_screen(page: Page, block: Locator, needle: str) -> None:
    """``needle``, inside ``block``, lies within the block's visible box and the screen."""
    await expect(block).to_contain_text(needle)
    where = await block.evaluate(
        """(el, needle) => {
            const node = el.firstChild, at = node.textContent.indexOf(needle);
            const range = document.createRange();
            range.setStart(node, at);
            range.setEnd(node, at + needle.length);
            const r = range.getBoundingClientRect(), b = el.getBoundingClientRect();
            return {left: r.left, right: r.right, blockLeft: b.left, blockRight: b.right,
                    clipped: el.scrollWidth > el.clientWidth, screen: window.innerWidth};
        }""",
        needle,
    )
    assert not where["clipped"], where
    assert where["blockLeft"] <= where["left"] and where["right"] <= where["blockRight"], where
    assert where["right"] <= where["screen"], where
