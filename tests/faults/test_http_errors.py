"""Every endpoint the worker calls answers 503, then 429 with ``Retry-After: 1``.

Each fault is scoped to its case's conversation, except E1's (the conversation does not
exist yet), which runs alone first. Where the API performed a request and only its answer
was lost (``after_request``), the repeat must be recognised, not re-done.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.faults._harness import GENIE, USER, Conversation, FaultStack, case, cases_of

FLAKY = "503, then 429 + Retry-After: 1"


def _flaky(stack: FaultStack, conv: Conversation | None, endpoint: str) -> None:
    """The next two calls of ``endpoint`` fail: 503, then 429 asking for a 1 s wait."""
    stack.fault(conv, endpoint, status=503)
    stack.fault(conv, endpoint, status=429, retry_after=1)


def _requests(stack: FaultStack, endpoint: str) -> int:
    requests = stack.sim.stats()["requests"]
    assert isinstance(requests, dict)
    return int(requests[endpoint])


async def _attempts(stack: FaultStack, conv: Conversation, activity: str) -> str:
    """How the activity's last attempt came about, from the workflow history."""
    tries = [a for a in await stack.activity_attempts(conv) if a.activity == activity]
    return ", ".join(
        f"attempt {a.attempt}" + (f" after {a.previous_failure}" if a.previous_failure else "")
        for a in tries
    )


async def _no_faults_left(stack: FaultStack, conv: Conversation) -> None:
    left = stack.faults_left(conv)
    assert not left, f"the injected faults were never hit: {left}"


@case("http_errors", f"E1 create conversation: {FLAKY}")
async def case_e1_create(stack: FaultStack) -> None:
    before = _requests(stack, "create_conversation")
    _flaky(stack, None, "create_conversation")
    conv = await stack.conversation()
    assert _requests(stack, "create_conversation") - before == 3
    result = await stack.api.ask(conv.wid, "hello", wait_for="completion")
    await stack.check_turn(conv, result)
    await stack.check_secrets(conv)
    how = await _attempts(stack, conv, "create_conversation")
    stack.record(
        "e1_create",
        f"conversation created on the 3rd call ({how}); the turn then completed, 1 POST",
    )


@case("http_errors", f"E5 send message: {FLAKY} (refused, nothing started)")
async def case_e5_send(stack: FaultStack) -> None:
    conv = await stack.conversation()
    _flaky(stack, conv, "send_message")
    result = await stack.api.ask(conv.wid, "steps:2", wait_for="completion")
    await stack.check_turn(conv, result, refused_posts=2)
    await _no_faults_left(stack, conv)
    await stack.check_secrets(conv)
    how = await _attempts(stack, conv, "stream_segment")
    stack.record(
        "e5_send",
        f"completed; the two refused POSTs were repeated, 1 message accepted ({how})",
    )


@case(
    "http_errors",
    f"E5 answer lost (503 after the API accepted), then E3: {FLAKY}",
)
async def case_e3_reconcile(stack: FaultStack) -> None:
    conv = await stack.conversation()
    stack.fault(conv, "send_message", status=503, after_request=True)
    _flaky(stack, conv, "get_conversation")
    result = await stack.api.ask(conv.wid, "steps:2", wait_for="completion")
    # One POST only: the retry asked E3 (until it answered) instead of posting again.
    await stack.check_turn(conv, result)
    await _no_faults_left(stack, conv)
    await stack.check_secrets(conv)
    how = await _attempts(stack, conv, "stream_segment")
    stack.record(
        "e3_reconcile",
        f"completed; the retry found the accepted message's run via E3 once E3 answered "
        f"({how}): 1 POST, not re-posted",
    )


@case("http_errors", f"E6 messages (finding the run after a cut before any event): {FLAKY}")
async def case_e6_discover(stack: FaultStack) -> None:
    conv = await stack.conversation()
    stack.fault(conv, "send_message", drop_after_events=0)
    _flaky(stack, conv, "list_messages")
    result = await stack.api.ask(conv.wid, "steps:2", wait_for="completion")
    await stack.check_turn(conv, result)
    await _no_faults_left(stack, conv)
    await stack.check_secrets(conv)
    stack.record("e6_discover", "completed; the reader retried E6 until it named the run, 1 POST")


@case("http_errors", f"E7 upload: {FLAKY}")
async def case_e7_upload(stack: FaultStack) -> None:
    conv = await stack.conversation()
    path = stack.attachments / f"{conv.conversation_id}.txt"
    path.write_text("quarterly numbers\n")
    _flaky(stack, conv, "upload")
    accepted = await stack.api.send(conv.wid, "summarise this", attachment_uri=path.as_uri())
    result = await stack.finish(conv, accepted.turn)
    await stack.check_turn(conv, result)
    page = await stack.genie.list_messages(GENIE, conv.conversation_id, user_id=USER)
    (user_msg,) = [m for m in page.messages if m.source == "user"]
    assert (user_msg.model_extra or {}).get("file_id"), user_msg
    await _no_faults_left(stack, conv)
    await stack.check_secrets(conv)
    how = await _attempts(stack, conv, "upload_attachment")
    stack.record("e7_upload", f"completed with the file attached ({how}), 1 POST")


@case("http_errors", f"E8 reconnect (stream interrupted after 2 events): {FLAKY}")
async def case_e8_reconnect(stack: FaultStack) -> None:
    conv = await stack.conversation()
    _flaky(stack, conv, "reconnect")
    result = await stack.api.ask(conv.wid, "delay:300 steps:4 interrupt:2", wait_for="completion")
    await stack.check_turn(conv, result)
    await _no_faults_left(stack, conv)
    await stack.check_secrets(conv)
    stack.record("e8_reconnect", "completed; the reader went on through E9 while E8 failed, 1 POST")


@case("http_errors", f"E9 events (E8 down, stream cut after 3 events): {FLAKY}")
async def case_e9_events(stack: FaultStack) -> None:
    conv = await stack.conversation()
    stack.fault(conv, "send_message", drop_after_events=3)
    stack.fault(conv, "reconnect", status=503, times=1000)
    _flaky(stack, conv, "events")
    result = await stack.api.ask(conv.wid, "delay:50 steps:5", wait_for="completion")
    await stack.check_turn(conv, result)
    left = stack.faults_left(conv)
    assert [f["endpoint"] for f in left] == ["reconnect"], left
    await stack.check_secrets(conv)
    how = await _attempts(stack, conv, "stream_segment")
    stack.record("e9_events", f"completed from E9 once it answered ({how}), 1 POST")


@case("http_errors", f"E10 skill decision: {FLAKY}")
async def case_e10_decision(stack: FaultStack) -> None:
    conv, call = await stack.paused()
    _flaky(stack, conv, "skill_approval")
    await stack.api.approve(conv.wid, call, approver="ops")
    result = await stack.finish(conv, 1)
    await stack.check_turn(conv, result)
    await stack.check_decisions(conv, {call: 1}, posts={call: 3})
    await stack.check_secrets(conv)
    how = await _attempts(stack, conv, "post_skill_decision")
    stack.record(
        "e10_decision", f"completed; the decision applied once after 2 refused posts ({how})"
    )


@case("http_errors", "E10 answer lost: 503 after the API applied the decision")
async def case_e10_answer_lost(stack: FaultStack) -> None:
    conv, call = await stack.paused()
    stack.fault(conv, "skill_approval", status=503, after_request=True)
    await stack.api.approve(conv.wid, call, approver="ops")
    result = await stack.finish(conv, 1)
    await stack.check_turn(conv, result)
    # The resume segment's post landed, its answer did not: the workflow's own post was
    # told it may have been made, saw the run past the pause (E3) and did not repeat it.
    await stack.check_decisions(conv, {call: 1}, posts={call: 1})
    assert f"for call {call}: the run moved past the pause" in stack.worker.log_text()
    await stack.check_secrets(conv)
    stack.record(
        "e10_answer_lost",
        "completed; before posting again the workflow saw the run past the pause (E3) and "
        "counted the decision as done: posted once, applied once",
    )


async def _connecting(stack: FaultStack) -> tuple[Conversation, str]:
    conv = await stack.conversation()
    res = await stack.api.ask(conv.wid, "connect:jira")
    assert res.status == "awaiting_connection", res
    return conv, res.pending.connections[0].attempt_id


@case("http_errors", f"E11 fresh auth link: {FLAKY}")
async def case_e11_auth_link(stack: FaultStack) -> None:
    conv, attempt = await _connecting(stack)
    _flaky(stack, conv, "auth_link")
    link = await stack.api.auth_link(conv.wid, attempt)
    assert link.status == "auth_required" and link.url, link
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(link.url)).status_code == 200
    await stack.api.connect_done(conv.wid, attempt, actor="ops")
    result = await stack.finish(conv, 1)
    await stack.check_turn(conv, result)
    assert stack.conv_stats(conv)["auth_link_posts"] == {attempt: 3}
    await stack.check_secrets(conv)
    how = await _attempts(stack, conv, "get_auth_link")
    stack.record("e11_auth_link", f"link returned ({how}); connection completed the turn")


@case("http_errors", f"E12 reject connection: {FLAKY}")
async def case_e12_reject(stack: FaultStack) -> None:
    conv, attempt = await _connecting(stack)
    _flaky(stack, conv, "connection_reject")
    await stack.api.connect_reject(conv.wid, attempt, actor="ops", reason="not now")
    result = await stack.finish(conv, 1)
    await stack.check_turn(conv, result)
    assert stack.conv_stats(conv)["connection_reject_posts"] == {attempt: 3}
    await stack.check_secrets(conv)
    how = await _attempts(stack, conv, "reject_connection")
    stack.record("e12_reject", f"rejection delivered ({how}); the turn completed")


@pytest.mark.parametrize("case_id", ["e1_create"])
async def test_e1_alone(stack: FaultStack, case_id: str) -> None:
    """E1's fault cannot be scoped to a conversation: it runs before the others start."""
    await case_e1_create(stack)


@pytest.mark.parametrize("case_id", [c for c in cases_of(__name__) if c != "e1_create"])
async def test_http_error(launched: dict[str, asyncio.Task[None]], case_id: str) -> None:
    await launched[case_id]
