"""Streams that break: cut after k events, interrupted by the server, E8 refusing.

The run is always the same 10 events (``steps:7``: processing.started, 7 steps, the final
reply, processing.finished), spread over ~half a second so that cuts land while the run
is live as well as after it has finished server-side.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.faults._harness import CaseFn, FaultStack, case, cases_of, register_case

TEN_EVENTS = "delay:50 steps:7"
"""1 + 7 + 1 + 1 = 10 events."""
EXPECTED = [f"step {i} of 7" for i in range(1, 8)] + [f"You said: {TEN_EVENTS}"]


async def _ten_event_turn(
    stack: FaultStack, *, cut_after: int, every_attempt: bool, cid: str
) -> None:
    conv = await stack.conversation()
    stack.fault(conv, "send_message", drop_after_events=cut_after)
    if every_attempt:
        stack.fault(conv, "reconnect", drop_after_events=cut_after, times=1000)
    accepted = await stack.api.send(conv.wid, TEN_EVENTS)
    result = await stack.finish(conv, accepted.turn)
    await stack.check_turn(conv, result)
    assert result.messages == EXPECTED
    await stack.check_secrets(conv)
    resumes = _resumes(stack, conv.conversation_id)
    paths = " then ".join(dict.fromkeys(resumes)) or "nothing"
    stack.record(
        cid,
        f"completed; {len(result.messages)}/8 messages once, in order; 1 POST; "
        f"recovered via {paths}",
        group="on every attempt" if every_attempt else "once",
        k=cut_after,
    )


def _resumes(stack: FaultStack, conversation_id: str) -> list[str]:
    """The recovery paths the worker's client logged for this conversation (E8, E9, E6)."""
    pat = re.compile(
        rf"resuming run \S+ of conversation {re.escape(conversation_id)} via (E\d \w+)"
    )
    return pat.findall(stack.worker.log_text())


def _cut_case(k: int, every: bool, cid: str) -> CaseFn:
    async def run(stack: FaultStack) -> None:
        await _ten_event_turn(stack, cut_after=k, every_attempt=every, cid=cid)

    return run


for _k in range(10):
    for _every in (False, True):
        _cid = f"cut_{'every_attempt' if _every else 'once'}_k{_k}"
        _where = f"{'on every attempt' if _every else 'once'}, after {_k} events"
        register_case(_cid, "stream_cut", _where, _cut_case(_k, _every, _cid))


@case("stream_interrupted", "mid-run: each stream ends after 3 events, retry_after_ms=100")
async def case_interrupted(stack: FaultStack) -> None:
    conv = await stack.conversation()
    text = "delay:50 steps:6 interrupt:3"
    accepted = await stack.api.send(conv.wid, text)
    result = await stack.finish(conv, accepted.turn)
    await stack.check_turn(conv, result)
    assert result.messages == [f"step {i} of 6" for i in range(1, 7)] + [f"You said: {text}"]
    await stack.check_secrets(conv)
    waits = re.findall(
        rf"conversation {conv.conversation_id} via E8 reconnect in ([0-9.]+)s \(failures 0/\d+\)"
        r": stream interrupted",
        stack.worker.log_text(),
    )
    # 9 events, 3 per stream: E5 and two E8 re-attachments, each after the server's wait.
    assert len(waits) == 2, waits
    assert all(float(w) >= 0.1 for w in waits), waits
    stack.record(
        "interrupted",
        f"completed; {len(result.messages)}/7 messages once, in order; 1 POST; re-attached "
        f"with E8 {len(waits)}x, each after the server's retry_after_ms "
        f"(waited {', '.join(w + ' s' for w in waits)})",
    )


@case("e8_failing", "E8 answers 503 on every attempt; stream cut after 3 events")
async def case_e8_down(stack: FaultStack) -> None:
    conv = await stack.conversation()
    stack.fault(conv, "send_message", drop_after_events=3)
    stack.fault(conv, "reconnect", status=503, times=1000)
    text = "delay:150 steps:7"
    accepted = await stack.api.send(conv.wid, text)
    result = await stack.finish(conv, accepted.turn)
    await stack.check_turn(conv, result)
    assert result.messages == [f"step {i} of 7" for i in range(1, 8)] + [f"You said: {text}"]
    await stack.check_secrets(conv)
    resumes = _resumes(stack, conv.conversation_id)
    assert "E9 events" in resumes, resumes
    stack.record(
        "e8_down",
        f"completed from E9 while the run was live; {len(result.messages)}/8 messages once, "
        f"in order; 1 POST; {resumes.count('E9 events')} E9 polls",
    )


@case("e8_failing", "E8 answers 404 run_not_found on every attempt; stream cut after 3 events")
async def case_e8_not_found(stack: FaultStack) -> None:
    conv = await stack.conversation()
    stack.fault(conv, "send_message", drop_after_events=3)
    stack.fault(conv, "reconnect", status=404, error_code="run_not_found", times=1000)
    text = "delay:150 steps:7"
    accepted = await stack.api.send(conv.wid, text)
    result = await stack.finish(conv, accepted.turn)
    await stack.check_turn(conv, result)
    assert result.messages == [f"step {i} of 7" for i in range(1, 8)] + [f"You said: {text}"]
    await stack.check_secrets(conv)
    resumes = _resumes(stack, conv.conversation_id)
    assert "E9 events" in resumes, resumes
    stack.record(
        "e8_not_found",
        f"completed from E9 ({resumes.count('E9 events')} polls); 8/8 messages once, in "
        "order; 1 POST",
    )


@pytest.mark.parametrize("case_id", cases_of(__name__))
async def test_stream_fault(launched: dict[str, asyncio.Task[None]], case_id: str) -> None:
    await launched[case_id]
