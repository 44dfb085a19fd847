"""Turns end to end: real dev server, real worker, real simulator over HTTP/SSE."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from genie_config._settings import MAX_ATTACHMENT_TIMEOUT_SECONDS
from geniectl import Refused
from tests.services import SimProcess
from tests.workflow.helpers import GENIE, USER, convs, start, wait_state
from workflows import errors


async def test_plain_turn_returns_the_reply_and_posts_once(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    result = await api.ask(wid, "hello there")
    assert result.status == "completed"
    assert result.reply == "You said: hello there"
    assert result.messages == ["You said: hello there"]
    st = await api.status(wid)
    assert st.state == "idle" and st.turn == 1 and st.conversation_id
    conv = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["message_posts"] == 1 and conv["messages_accepted"] == 1


async def test_queued_turns_run_one_at_a_time_in_order(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    # Sent concurrently: the API would answer 409 to overlapping runs, so the workflow
    # must serialise them.
    accepted = await asyncio.gather(*(api.send(wid, f"m{i} delay:20") for i in range(3)))
    assert sorted(a.turn for a in accepted) == [1, 2, 3]
    results = [await api.wait(wid, t, wait_for="completion") for t in (1, 2, 3)]
    by_turn = {a.turn: a for a in accepted}
    for r in results:
        assert r.status == "completed"
        assert r.reply is not None and r.reply.startswith("You said: m")
    assert len({r.reply for r in results}) == 3
    st = await api.status(wid)
    conv = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["messages_accepted"] == 3 and conv["message_posts"] == 3
    assert by_turn[1].duplicate is False


async def test_repeated_client_message_id_returns_the_original_turn(
    client: Client, task_queue: str, sim: SimProcess
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    first = await api.send(wid, "once", client_message_id="req-1")
    again = await api.send(wid, "once", client_message_id="req-1")
    assert (first.turn, first.duplicate) == (1, False)
    assert (again.turn, again.duplicate) == (1, True)
    await api.wait(wid, 1, wait_for="completion")
    st = await api.status(wid)
    assert st.turn == 1
    assert sim.stats()["conversations"][st.conversation_id]["messages_accepted"] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "error_type"),
    [
        ("", errors.EMPTY_MESSAGE),
        ("   ", errors.EMPTY_MESSAGE),
        ("x" * 12_289, errors.MESSAGE_TOO_LONG),
    ],
)
async def test_invalid_messages_are_refused_with_a_type(
    client: Client, task_queue: str, text: str, error_type: str
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    with pytest.raises(Refused) as e:
        await api.send(wid, text)
    assert e.value.type == error_type
    assert (await api.status(wid)).turn == 0


async def test_message_of_exactly_the_limit_is_accepted(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    result = await api.ask(wid, "y" * 12_288)
    assert result.status == "completed"


async def test_update_with_start_creates_then_reuses_the_conversation(
    client: Client, task_queue: str
) -> None:
    api = convs(client, task_queue)
    wid = f"test-{uuid.uuid4()}"
    r1 = await api.ask(wid, "first", start_with=(GENIE, USER))
    r2 = await api.ask(wid, "second", start_with=(GENIE, USER))
    assert (r1.turn, r1.reply) == (1, "You said: first")
    assert (r2.turn, r2.reply) == (2, "You said: second")
    desc = await api.handle(wid).describe()
    assert await desc.static_summary() == f"Genie {GENIE} · user {USER}"


async def test_attachment_is_uploaded_then_referenced(
    client: Client, task_queue: str, sim: SimProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    path = tmp_path_factory.getbasetemp() / f"report-{uuid.uuid4()}.txt"
    path.write_text("quarterly numbers")
    result = await api.ask(wid, "summarise the attachment", attachment_uri=path.as_uri())
    assert result.status == "completed"
    assert sim.stats()["requests"]["upload"] >= 1  # type: ignore[index]
    # The upload has the time the slowest fetch an operator may allow needs, and more.
    history = await api.handle(wid).fetch_history()
    (upload,) = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "upload_attachment"
    ]
    given = upload.start_to_close_timeout.ToTimedelta()
    assert given >= timedelta(seconds=MAX_ATTACHMENT_TIMEOUT_SECONDS + 30), given


async def test_attachment_outside_allowed_dirs_fails_the_turn_not_the_conversation(
    client: Client, task_queue: str
) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    result = await api.ask(wid, "read this", attachment_uri=Path("/etc/hostname").as_uri())
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "AttachmentRefused"
    # The conversation carries on.
    assert (await api.ask(wid, "still there?")).status == "completed"
    assert (await api.status(wid)).last_error is not None


async def test_end_conversation_completes_the_workflow(client: Client, task_queue: str) -> None:
    api = convs(client, task_queue)
    wid = await start(api)
    await api.ask(wid, "hi")
    await api.end(wid, "done for today")
    outcome = await api.handle(wid).result()
    assert outcome.turns == 1 and outcome.ended_reason == "done for today"
    with pytest.raises(Refused) as e:
        await api.send(wid, "too late")
    assert e.value.type == errors.CONVERSATION_ENDED


async def test_api_refusal_on_create_fails_the_workflow_with_the_api_code(
    client: Client, task_queue: str
) -> None:
    api = convs(client, task_queue)
    wid = await api.start("gin-noclient-x", USER, workflow_id=f"test-{uuid.uuid4()}")
    # Nothing is created at the API until the first message is accepted.
    assert (await api.status(wid)).conversation_id is None
    await api.send(wid, "hello")
    with pytest.raises(WorkflowFailureError) as e:
        await api.handle(wid).result()
    cause = e.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == errors.CONVERSATION_CREATE_FAILED
    st = await wait_state(api, wid, "failed")
    assert st.last_error is not None and st.last_error.status == 406
    assert st.last_error.error_code == "chat_interface_not_configured"


async def test_a_lost_answer_to_a_send_is_retried_as_the_same_turn(
    client: Client, task_queue: str, sim: SimProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load the server can accept an update and the client's call still time out.
    The one odd response is mocked (the server's answer is dropped after the real update
    ran): the retry must be answered with the same turn, and the API sees one post."""
    api = convs(client, task_queue)
    wid = await start(api)
    real = WorkflowHandle.execute_update
    lost: list[str] = []

    async def answer_lost_once(
        self: WorkflowHandle[Any, Any], update: Any, *a: Any, **kw: Any
    ) -> Any:
        res = await real(self, update, *a, **kw)
        if update in ("send_message", "wait_turn") and update not in lost:
            lost.append(update)
            err = WorkflowUpdateRPCTimeoutOrCancelledError()
            err.__cause__ = RPCError("deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")
            raise err
        return res

    monkeypatch.setattr(WorkflowHandle, "execute_update", answer_lost_once)
    result = await api.ask(wid, "asked once", wait_for="completion")
    assert lost == ["send_message", "wait_turn"] or lost == ["send_message"], lost
    assert result.status == "completed" and result.reply == "You said: asked once"
    st = await api.status(wid)
    assert st.turn == 1, st
    conv = sim.stats()["conversations"][st.conversation_id]  # type: ignore[index]
    assert conv["message_posts"] == 1 and conv["messages_accepted"] == 1


async def test_a_cancelled_ask_is_not_retried(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK reports a caller's cancellation with the same error as a timeout: that
    one must propagate, never be sent again."""
    api = convs(client, task_queue)
    wid = await start(api)
    calls = 0

    async def cancelled(self: WorkflowHandle[Any, Any], update: Any, *a: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        err = WorkflowUpdateRPCTimeoutOrCancelledError()
        err.__cause__ = asyncio.CancelledError()
        raise err

    monkeypatch.setattr(WorkflowHandle, "execute_update", cancelled)
    with pytest.raises(WorkflowUpdateRPCTimeoutOrCancelledError):
        await api.send(wid, "never sent twice")
    assert calls == 1
