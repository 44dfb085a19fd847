"""Real services for the browser tests: the dev server with its Web UI on, and Chromium.

Chromium is Debian's package (``/usr/bin/chromium``), driven by Playwright's bundled
driver; Playwright's own browser download (``playwright install``) is never used.
``make test`` installs the package when it is missing and the user is root; otherwise
these tests fail with the command to run (they are never skipped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from genie_codec import genie_data_converter
from tests.services import free_port, temporal_cli, wait_http_ok
from workflows import ALL_SEARCH_ATTRIBUTES

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
TIMEOUT_MS = 30_000
"""For each page load and element: generous, since the UI's first render can take
seconds on a busy machine (the tests run no slower for it when the machine is quiet)."""
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
"""Screenshots of every step (git-ignored), to look at when a test fails."""


@pytest.fixture(scope="session")
def ui_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
async def temporal_env(ui_port: int) -> AsyncIterator[WorkflowEnvironment]:
    """Overrides the suite's dev server for these tests: the same server, Web UI on."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=list(ALL_SEARCH_ATTRIBUTES),
        data_converter=genie_data_converter,
        dev_server_log_level="error",
        ui=True,
        ui_port=ui_port,
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def web_ui(temporal_env: WorkflowEnvironment, ui_port: int) -> str:
    """The Web UI's base URL, once it answers."""
    url = f"http://127.0.0.1:{ui_port}"
    wait_http_ok(url)
    return url


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `apt-get install -y chromium` as root "
            "(`make test` does it for you when run as root)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh page; a screenshot of where it stood is saved when the test fails."""
    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    yield page
    if request.node.stash.get(_FAILED, False):
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failed.png"))
    await context.close()


class Shots:
    """Numbered full-page screenshots of one test under ``ARTIFACTS``."""

    def __init__(self, page: Page, test_name: str) -> None:
        self.page = page
        self.prefix = test_name
        self.n = 0
        ARTIFACTS.mkdir(exist_ok=True)
        for old in ARTIFACTS.glob(f"{test_name}-*.png"):
            old.unlink()

    async def __call__(self, step: str) -> Path:
        self.n += 1
        path = ARTIFACTS / f"{self.prefix}-{self.n:02d}-{step}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shots(page: Page, request: pytest.FixtureRequest) -> Shots:
    return Shots(page, request.node.name)
