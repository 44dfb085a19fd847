"""``geniectl dev`` as a new user meets it: encrypted by default with a development key,
readable in the Web UI through the codec server, ciphertext to anyone without it.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright's bundled driver, as in
``tests/browser``; the page is waited on element by element, never for network idleness.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, Route, async_playwright, expect

from genie_stack import free_ports
from geniectl._dev import DEMO_MESSAGE, DEMO_USER
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from tests.cli.test_geniectl import GENIECTL, geniectl
from tests.codec.test_processes import _payloads, _temporal


@dataclass
class DevStack:
    stdout: str
    temporal: str
    ui: str
    codec: str
    state_dir: Path
    workflow_id: str


async def _read_until(stream: asyncio.StreamReader, needle: str, within: float) -> str:
    seen = ""
    async with asyncio.timeout(within):
        while needle not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {needle!r}:\n{seen}")
            seen += line.decode()
    return seen


@pytest.fixture
async def dev_stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    names = ("temporal", "ui", "sim", "metrics", "inbox", "codec")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    args = ["dev", "--demo", "--state-dir", str(tmp_path)]
    args += [a for name, port in ports.items() for a in (f"--{name}-port", str(port))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENIE_", "TEMPORAL_"))}
    proc = await asyncio.create_subprocess_exec(
        GENIECTL,
        *args,
        env={**env, "COLUMNS": "300"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        shown = await _read_until(proc.stdout, "Approve it in the inbox:", within=90)
        wid = next(w for w in shown.split() if w.startswith("demo-") and len(w) == 13)
        yield DevStack(
            stdout=shown,
            temporal=f"127.0.0.1:{ports['temporal']}",
            ui=f"http://127.0.0.1:{ports['ui']}",
            codec=f"http://127.0.0.1:{ports['codec']}",
            state_dir=tmp_path,
            workflow_id=wid,
        )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.communicate(), 60)
            except TimeoutError:
                proc.kill()
    assert proc.returncode == 0


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get install -y chromium` as root")
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1440, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        yield await context.new_page()
        await browser.close()


@pytest.mark.slow
async def test_dev_encrypts_and_the_web_ui_decodes_through_the_codec_server(
    dev_stack: DevStack, page: Page
) -> None:
    out, wid = dev_stack.stdout, dev_stack.workflow_id
    assert f"Payload codec    {dev_stack.codec}" in out
    assert "encrypted with a DEVELOPMENT key, generated in" in out
    key_file = dev_stack.state_dir / "payload-keys"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "DEVELOPMENT" in key_file.read_text()

    # `temporal workflow show` without the codec: ciphertext, the dev key's id on it.
    raw = await _temporal(
        "workflow", "show", "-w", wid, "-o", "json", "--address", dev_stack.temporal
    )
    data, encodings = _payloads(raw.stdout)
    assert DEMO_MESSAGE.encode() not in data and DEMO_USER.encode() not in data
    assert b"binary/encrypted" in encodings and b"dev-" in encodings

    # geniectl in "another terminal", configured with nothing but the address.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENIE_", "TEMPORAL_"))}
    hist = await geniectl({**env, "TEMPORAL_ADDRESS": dev_stack.temporal}, "history", wid)
    assert hist.code == 0 and DEMO_MESSAGE in hist.stdout, hist.stderr

    # The Web UI (started with --ui-codec-endpoint) shows the payloads decoded...
    url = f"{dev_stack.ui}/namespaces/default/workflows/{wid}"
    await page.goto(url)
    await expect(page.get_by_text(f'"user_id": "{DEMO_USER}"')).to_be_visible()
    await expect(page.get_by_text("turn 1: send and stream (E5)")).to_be_visible()
    await page.screenshot(path=str(dev_stack.state_dir / "decoded.png"), full_page=True)

    # ...and, when the codec server cannot be reached, the ciphertext it stores.
    async def unreachable(route: Route) -> None:
        await route.abort()

    await page.route(lambda u: u.startswith(dev_stack.codec), unreachable)
    await page.goto(f"{url}?fresh={uuid.uuid4().hex}")
    await expect(page.get_by_text('"encryption-key-id"').first).to_be_visible()
    assert await page.get_by_text(f'"user_id": "{DEMO_USER}"').count() == 0
