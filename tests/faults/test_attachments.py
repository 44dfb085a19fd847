"""SSRF through attachments, against the real worker process with its default settings.

The fault worker sets only ``GENIE_ATTACHMENT_DIRS``: no attachment hosts, no plain http,
no private networks. A client that names the worker's own loopback (a stand-in for a
cloud metadata service) as its attachment, directly, disguised, or behind a redirect,
must get a failed turn of type ``AttachmentRefused``, while the server behind that URL
sees no request at all and nothing is uploaded to the genie. The conversation carries on.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from activities import ATTACHMENT_REFUSED
from tests.activities.loopback_server import CREDENTIALS, LOOPBACK, LoopbackServer
from tests.faults._harness import GENIE, USER, Conversation, FaultStack, case, cases_of

ROW = "attachments"


def _uploads(stack: FaultStack) -> int:
    requests = stack.sim.stats()["requests"]
    assert isinstance(requests, dict)
    return int(requests.get("upload", 0))


async def _refused_turns(
    stack: FaultStack, conv: Conversation, srv: LoopbackServer, uris: list[str]
) -> list[str]:
    """One turn per URI: each fails ``AttachmentRefused`` and reaches nobody."""
    messages = []
    for uri in uris:
        result = await stack.api.ask(conv.wid, "summarise the attachment", attachment_uri=uri)
        assert result.status == "failed", result
        assert result.error is not None and result.error.type == ATTACHMENT_REFUSED, result
        assert CREDENTIALS.decode() not in result.error.message
        messages.append(result.error.message)
    assert srv.seen == [], f"the worker fetched {srv.seen}"
    return messages


async def _carries_on(stack: FaultStack, conv: Conversation, refused: int) -> None:
    """A plain turn after the refusals completes; no refused turn posted anything."""
    result = await stack.api.ask(conv.wid, "still there?", wait_for="completion")
    assert result.turn == refused + 1, result
    await stack.check_turn(conv, result)  # exactly one message POST in the conversation
    page = await stack.genie.list_messages(GENIE, conv.conversation_id, user_id=USER)
    assert not any((m.model_extra or {}).get("file_id") for m in page.messages), page
    # Refusals are final: each upload activity ran once, no retry.
    attempts = [a for a in await stack.activity_attempts(conv) if a.activity == "upload_attachment"]
    assert [a.attempt for a in attempts] == [1] * refused, attempts
    await stack.check_secrets(conv)


@case(ROW, "http://127.0.0.1:PORT/latest/meta-data/iam, plainly and disguised")
async def case_loopback_metadata(stack: FaultStack) -> None:
    conv = await stack.conversation()
    uploads = _uploads(stack)
    with LoopbackServer() as srv:
        path = "/latest/meta-data/iam"
        uris = [
            f"{srv.base_url}{path}",
            f"http://[::ffff:{LOOPBACK}]:{srv.port}{path}",  # IPv4-mapped IPv6
            f"http://2130706433:{srv.port}{path}",  # 127.0.0.1 as one decimal number
            f"https://files.example.com@{LOOPBACK}:{srv.port}{path}",  # userinfo, not host
            f"https://{LOOPBACK}:{srv.port}{path}",
        ]
        messages = await _refused_turns(stack, conv, srv, uris)
    assert _uploads(stack) == uploads
    await _carries_on(stack, conv, len(uris))
    stack.record(
        "loopback_metadata",
        "every form (plain, IPv4-mapped, decimal, userinfo, https) failed the turn "
        f"AttachmentRefused ({messages[0]!r}); the server saw 0 requests, 0 uploads, "
        "1 attempt each; the next turn completed",
    )


@case(ROW, "an allowed-looking https URL that redirects to 127.0.0.1")
async def case_redirect_to_loopback(stack: FaultStack) -> None:
    conv = await stack.conversation()
    uploads = _uploads(stack)
    with LoopbackServer() as srv:
        target = quote(f"{srv.base_url}/latest/meta-data/iam", safe="")
        uris = [
            # Refused by its text (no host is allowed by default): never resolved, never
            # asked, so its redirect is never seen.
            f"https://files.example.com/report.pdf?next={target}",
            f"{srv.base_url}/redirect?to={target}",
        ]
        messages = await _refused_turns(stack, conv, srv, uris)
    assert "GENIE_ATTACHMENT_HOSTS is empty" in messages[0], messages
    assert _uploads(stack) == uploads
    await _carries_on(stack, conv, len(uris))
    stack.record(
        "redirect_to_loopback",
        f"refused before any request ({messages[0]!r}); the server saw 0 requests, "
        "0 uploads; the next turn completed",
    )


@pytest.mark.parametrize("case_id", cases_of(__name__))
async def test_attachment(launched: dict[str, asyncio.Task[None]], case_id: str) -> None:
    await launched[case_id]
