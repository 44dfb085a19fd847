"""The operator's view in a real browser: the Temporal Web UI finds a paused conversation
and shows its details card as intended.

The UI builds its pages after the ``load`` event and keeps a long poll open, so these
tests wait for elements (``expect(...).to_be_visible()``), never for network idleness.
Screenshots of each step go to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from markdown_it import MarkdownIt
from playwright.async_api import Page, expect
from temporalio.client import Client

from tests.browser.conftest import Shots
from tests.workflow.helpers import convs, eventually, start
from workflows._ui import MAX_CARD_BYTES, details_card
from workflows.models import ErrorInfo, PendingApproval, PendingConnection

AWAITING = 'GenieState="awaiting_approval"'
CARD_FRAME = "#user-metadata-current-details"
"""The frame in which the User Metadata tab renders the current details markdown."""


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def test_a_paused_conversation_is_listed_and_its_card_is_a_list(
    client: Client, task_queue: str, web_ui: str, page: Page, shots: Shots
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    accepted = await api.send(wid, "please confirm:send_email")
    res = await api.wait(wid, accepted.turn)
    assert res.status == "awaiting_approval", res
    (pending,) = res.pending.approvals
    # Visibility is eventually consistent: the page shows what the server lists.
    await eventually(
        lambda: _list(client, f'{AWAITING} AND WorkflowId="{wid}"'),
        lambda ids: ids == [wid],
        what="visibility",
    )

    await page.goto(f"{web_ui}/namespaces/default/workflows?query={quote(AWAITING)}")
    link = page.get_by_role("link", name=wid)
    await expect(link).to_be_visible()
    await shots("filtered-list")

    await link.click()
    tab = page.get_by_role("tab", name="User Metadata")
    await expect(tab).to_be_visible()
    await tab.click()
    card = page.frame_locator(CARD_FRAME)
    await expect(card.get_by_role("heading", name="Awaiting approval")).to_be_visible()
    items = card.locator("ul > li")
    for text in (
        f"call id: {pending.call_id}",
        f"deadline: {_utc(pending.deadline)}",
        f"approve: geniectl approve {wid} {pending.call_id} --approver <you>",
    ):
        await expect(items.filter(has_text=text)).to_be_visible()
    await expect(
        card.get_by_text("Who may decide: anyone with access to this namespace")
    ).to_be_visible()
    # Nothing list-like is left as literal text in a paragraph (the bug this guards).
    for paragraph in await card.locator("p").all_inner_texts():
        assert not paragraph.lstrip().startswith("- ") and "\n- " not in paragraph, paragraph
    await shots("user-metadata")


async def test_the_ui_renders_every_part_of_the_card(web_ui: str, page: Page, shots: Shots) -> None:
    """Every block the card can hold, and a card at its size bound, through the page the
    User Metadata tab frames: the UI's parser sees the same lists as CommonMark does."""
    t0 = datetime(2026, 1, 2, 12, 0, 3, tzinfo=UTC)
    approval = PendingApproval(
        call_id="call_1",
        skill_name="send_email",
        skill_parameters={"to": "bob@example.com", "body": "*not bold* <b>x</b>"},
        turn=1,
        requested_at=t0,
        deadline=t0 + timedelta(days=1),
    )
    connection = PendingConnection(
        attempt_id="att_1",
        connector_name="gmail",
        auth_url="https://auth.example.com/start?x=1&y=(2)",
        auth_expires_at=t0 + timedelta(minutes=10),
        turn=1,
        requested_at=t0,
        deadline=t0 + timedelta(hours=1),
    )
    text = details_card(
        workflow_id="wf-1",
        state="awaiting_approval",
        genie_handle="gin-1",
        conversation_id="conv-1",
        turn=1,
        queued=2,
        since=t0,
        approvals=[approval],
        connections=[connection],
        last_error=ErrorInfo(type="ApiError", message="*503* from <upstream>", error_code="E1"),
        approvers=["alice", "bob_smith"],
        decision_notes={"call_1": "approved by alice, posting to the API, retrying"},
        api_note="API unreachable since 12:00:03 UTC, retrying",
    )
    frame = await _render(page, web_ui, text)
    await expect(frame.get_by_role("heading", name="Awaiting approval")).to_be_visible()
    await expect(frame.locator("ul")).to_have_count(_count_lists(text))
    await expect(frame.locator("ul > li")).to_have_count(text.count("\n- "))
    for shown in (
        "progress: approved by alice, posting to the API, retrying",
        "call id: call_1",
        "attempt id: att_1",
    ):
        await expect(frame.locator("li").filter(has_text=shown)).to_be_visible()
    await expect(frame.get_by_text("Who may decide: alice, bob_smith")).to_be_visible()
    await expect(frame.get_by_text("API: API unreachable since 12:00:03 UTC")).to_be_visible()
    await expect(
        frame.get_by_text("Last error: ApiError E1: *503* from <upstream>")
    ).to_be_visible()
    await expect(frame.get_by_role("link", name="open the auth link")).to_have_attribute(
        "href", "https://auth.example.com/start?x=1&y=(2)"
    )
    await expect(frame.locator("em, b")).to_have_count(0)
    await shots("full-card")

    megabyte = {"b": "x" * 10**6}  # one object shared by every item
    many = [
        approval.model_copy(update={"call_id": f"call_{i}", "skill_parameters": megabyte})
        for i in range(10_000)
    ]
    big = details_card(
        workflow_id="w" * 1_000, state="awaiting_approval", genie_handle="gin-1", approvals=many
    )
    assert MAX_CARD_BYTES // 2 < len(big.encode()) <= MAX_CARD_BYTES
    frame = await _render(page, web_ui, big)
    await expect(frame.get_by_text("more waiting")).to_be_visible()
    await expect(frame.locator("ul")).to_have_count(_count_lists(big))
    await shots("bounded-card")


async def _render(page: Page, web_ui: str, markdown: str) -> Page:
    """Open ``markdown`` in the page the User Metadata tab frames for current details."""
    query = urlencode({"content": markdown, "theme": "light", "compact": "false"})
    await page.goto(f"{web_ui}/render?{query}")
    return page


def _count_lists(markdown: str) -> int:
    return sum(t.type == "bullet_list_open" for t in MarkdownIt("commonmark").parse(markdown))


async def _list(client: Client, query: str) -> list[str]:
    return [wf.id async for wf in client.list_workflows(query)]
