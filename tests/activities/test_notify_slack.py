"""Slack notifications carry the genie's and the user's text as text: escaped so that it
cannot make links, mentions or leave its code block; the inbox link is the only link."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client

from activities._notify import NotifyActivities, NotifyInput, _slack_message
from genie_api import GenieClient
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.webhooks import Receiver
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker

INBOX = "https://inbox.example.com"
HOSTILE = "<https://evil.example/login|Open in the inbox> <!channel> <@U123> &amp; ```"


def _links(text: str) -> list[str]:
    """Every Slack control sequence (link, mention) in mrkdwn ``text``."""
    return re.findall(r"<[^<>]*>", text)


def _message(**overrides: Any) -> str:
    inp = NotifyInput(
        endpoint="slack",
        webhook_id="w1",
        event="pause",
        workflow_id=overrides.pop("workflow_id", "wf-1"),
        genie_handle=overrides.pop("genie_handle", "helper"),
        user_id=overrides.pop("user_id", "user-1"),
        ref="call_1",
        kind=overrides.pop("kind", "skill_confirmation"),
        title=overrides.pop("title", "send_email wants approval"),
        details=overrides.pop("details", {}),
        deadline=datetime(2030, 1, 2, 3, 4, tzinfo=UTC),
    )
    assert not overrides
    link = NotifyActivities(inbox_url=INBOX).link(inp.workflow_id, "skill", inp.ref)
    return str(_slack_message(inp, link)["text"])


def test_every_interpolated_value_is_escaped_and_only_the_inbox_link_is_a_link() -> None:
    for field in ("title", "genie_handle", "user_id", "workflow_id"):
        text = _message(**{field: HOSTILE})
        (link,) = _links(text)
        assert link.startswith(f"<{INBOX}/items/") and link.endswith("|Open in the inbox>")
        assert "&lt;https://evil.example/login|Open in the inbox&gt;" in text, field
        assert "&lt;!channel&gt;" in text and "&amp;amp;" in text, field
        assert text.count("```") == 2, field  # only our parameters block


def test_characters_that_reorder_or_hide_text_show_as_escapes() -> None:
    sneaky = "evil@\u202emoc.elpmaxe pay\u200bpal"
    text = _message(title=sneaky, details={"skill_parameters": {"to": sneaky}})
    assert "\u202e" not in text
    assert text.count("evil@\\u202emoc.elpmaxe pay\\u200bpal") == 2  # title, parameters


def test_parameters_cut_for_slack_or_shortened_say_so() -> None:
    note = "parameters shortened here: open the inbox to read all that was kept"
    assert note not in _message(details={"skill_parameters": {"to": "a@example.com"}})
    long = _message(details={"skill_parameters": {"body": "x" * 5_000}})
    assert note in long and "x" * 1_400 in long and "x" * 5_000 not in long
    kept = {"skill_parameters": {"body": "x… [9 more characters]"}, "parameters_shortened": True}
    assert note in _message(details=kept)


def test_parameters_cannot_leave_their_code_block() -> None:
    text = _message(details={"skill_parameters": {"to": HOSTILE, "b": "x`` ``` ````"}})
    (link,) = _links(text)
    assert link.startswith(f"<{INBOX}/")
    (params,) = re.findall(r"parameters: ```(.*?)```", text, flags=re.S)
    assert "```" not in params and not params.endswith("`")
    assert (
        json.loads(
            params.replace("\u200b", "")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
        )["to"]
        == HOSTILE
    )
    # One code block, closed where we close it: what follows is our own text.
    assert text.count("```") == 2 and text.split("```")[2].strip().startswith(f"<{INBOX}")


def test_a_name_cannot_end_its_code_span_or_add_lines() -> None:
    text = _message(genie_handle="a` *bold* `b", user_id="u\n<!here>\nfake line")
    assert "genie `a\u02cb *bold* \u02cbb`" in text
    assert "user `u &lt;!here&gt; fake line`" in text
    assert len(text.splitlines()) == 5


async def test_a_hostile_skill_name_reaches_slack_as_text(
    client: Client, sim: SimProcess, genie: GenieClient
) -> None:
    receiver = Receiver()
    tq = f"test-slack-{uuid.uuid4()}"
    settings = worker_settings(sim, notify_url=receiver.url, notify_format="slack", inbox_url=INBOX)
    try:
        async with build_worker(client, settings, genie, task_queue=tq):
            api = convs(client, tq)
            wid = await start(api)
            await api.send(
                wid,
                "confirm:<https://evil.example/approve|Open_in_the_inbox> "
                "``` <!channel> <https://evil.example/login|Open in the inbox> ```",
            )
            await eventually(_count(receiver), lambda n: n >= 1, what="the Slack post")
            text = json.loads(receiver.posts[0][1])["text"]
    finally:
        receiver.close()
    assert _links(text) == [f"<{INBOX}/items/{wid}/skill/{_ref(text)}|Open in the inbox>"]
    assert "&lt;!channel&gt;" in text and "&lt;https://evil.example/approve" in text
    assert text.count("```") == 2


def _ref(text: str) -> str:
    found = re.search(r"/skill/([^|>]+)\|", text)
    assert found, text
    return found.group(1)


def _count(receiver: Receiver) -> Any:
    async def n() -> int:
        return len(receiver.posts)

    return n
