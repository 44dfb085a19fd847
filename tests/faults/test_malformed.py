"""Malformed input from the API: garbage frames, unknown events, events without ids, HTML."""

from __future__ import annotations

import asyncio

import pytest

from activities._stream import MAX_MALFORMED_RETRIES
from tests.faults._harness import FaultStack, case, cases_of

TEXT = "delay:50 steps:5"
EXPECTED = [f"step {i} of 5" for i in range(1, 6)] + [f"You said: {TEXT}"]
RESUMED = "attempt 2 after GenieProtocol"
"""The segment's history when it started over once from its cursor after bad data."""
NO_IDS = "[sim: event without ids]"
"""The text of the simulator's injected ``missing_ids`` event (never in E6)."""


async def _turn(
    stack: FaultStack,
    faults: list[tuple[str, dict[str, object]]],
    *,
    refused_posts: int = 0,
    extra: tuple[str, ...] = (),
) -> list[str]:
    conv = await stack.conversation()
    for endpoint, spec in faults:
        stack.fault(conv, endpoint, **spec)
    accepted = await stack.api.send(conv.wid, TEXT)
    result = await stack.finish(conv, accepted.turn)
    await stack.check_turn(conv, result, refused_posts=refused_posts, extra_messages=extra)
    assert [m for m in result.messages if m not in extra] == EXPECTED
    left = stack.faults_left(conv)
    assert all(f["times"] >= 100 for f in left), f"faults never hit: {left}"
    await stack.check_secrets(conv)
    segs = [a for a in await stack.activity_attempts(conv) if a.activity == "stream_segment"]
    return [
        f"attempt {a.attempt}" + (f" after {a.previous_failure}" if a.previous_failure else "")
        for a in segs
    ]


@case("malformed", "non-JSON `data:` line on the E5 stream after 2 events")
async def case_non_json_e5(stack: FaultStack) -> None:
    how = await _turn(stack, [("send_message", {"malformed": "non_json", "after_events": 2})])
    assert how == [RESUMED], how
    stack.record(
        "non_json_e5",
        f"completed: the segment resumed from its cursor via E8 ({'; '.join(how)}); "
        "6/6 messages once, in order; 1 POST",
    )


@case("malformed", "non-JSON `data:` line on an E8 re-attachment")
async def case_non_json_e8(stack: FaultStack) -> None:
    how = await _turn(
        stack,
        [
            ("send_message", {"drop_after_events": 2}),
            ("reconnect", {"malformed": "non_json", "after_events": 1}),
        ],
    )
    assert how == [RESUMED], how
    stack.record(
        "non_json_e8",
        f"completed: resumed from the cursor ({'; '.join(how)}); 6/6 messages once, in order",
    )


@case("malformed", "JSON `data:` without a `type`")
async def case_no_type(stack: FaultStack) -> None:
    how = await _turn(stack, [("send_message", {"malformed": "no_type", "after_events": 2})])
    assert how == [RESUMED], how
    stack.record("no_type", f"completed: resumed from the cursor ({'; '.join(how)}); 6/6 messages")


@case("malformed", "unknown event type")
async def case_unknown_event(stack: FaultStack) -> None:
    how = await _turn(stack, [("send_message", {"malformed": "unknown_event", "after_events": 2})])
    assert how == ["attempt 1"], how
    stack.record("unknown_event", "ignored; completed in one segment, 6/6 messages once, in order")


@case("malformed", "an `agent.message` without `event_id`/`seq_num`")
async def case_missing_ids(stack: FaultStack) -> None:
    await _turn(
        stack,
        [("send_message", {"malformed": "missing_ids", "after_events": 2})],
        extra=(NO_IDS,),
    )
    stack.record(
        "missing_ids",
        "completed; the 6 messages of the API's history once, in order; the id-less event "
        "was passed through once at its stream position (it cannot be de-duplicated)",
    )


@case("malformed", "200 with an HTML body for E5 (the API did nothing)")
async def case_html_e5(stack: FaultStack) -> None:
    how = await _turn(stack, [("send_message", {"html_200": True})], refused_posts=1)
    assert how == [RESUMED], how
    stack.record(
        "html_e5",
        f"retried ({'; '.join(how)}); E3 showed no run, so the message was posted again: "
        "1 accepted, completed",
    )


@case("malformed", "200 with an HTML body for E5 after the API accepted the message")
async def case_html_e5_accepted(stack: FaultStack) -> None:
    how = await _turn(stack, [("send_message", {"html_200": True, "after_request": True})])
    assert how == [RESUMED], how
    stack.record(
        "html_e5_accepted",
        f"retried ({'; '.join(how)}); E3 named the accepted run, which was resumed: 1 POST",
    )


@case("malformed", "200 with an HTML body for E9 (E8 down, stream cut)")
async def case_html_e9(stack: FaultStack) -> None:
    await _turn(
        stack,
        [
            ("send_message", {"drop_after_events": 2}),
            ("reconnect", {"status": 503, "times": 1000}),
            ("events", {"html_200": True, "times": 2}),
        ],
    )
    stack.record("html_e9", "E9 retried past the HTML pages; completed from E9, 6/6 messages")


@case("malformed", "non-JSON `data:` on every stream of the run (E5 and each E8)")
async def case_non_json_always(stack: FaultStack) -> None:
    conv = await stack.conversation()
    stack.fault(conv, "send_message", malformed="non_json", after_events=2)
    stack.fault(conv, "reconnect", malformed="non_json", after_events=0, times=1000)
    accepted = await stack.api.send(conv.wid, TEXT)
    result = await stack.finish(conv, accepted.turn)
    # Bounded: the turn fails with the protocol error as its cause, not retried for ever.
    assert result.status == "failed", result
    st = await stack.api.status(conv.wid)
    assert st.last_error is not None and st.last_error.type == "GenieProtocol", st.last_error
    assert conv.conversation_id in st.last_error.message, st.last_error
    segs = [a for a in await stack.activity_attempts(conv) if a.activity == "stream_segment"]
    assert [a.attempt for a in segs] == [MAX_MALFORMED_RETRIES + 1], segs
    # Not stuck: the next turn is sent at once. Had the failed turn's run still been active
    # at the API, its post would meet 409 conversation_busy and wait for that run to end;
    # this run is short, so the production row pins that path with one that lasts 15 s.
    nxt = await stack.api.ask(conv.wid, "hello again", wait_for="completion")
    await stack.check_turn(conv, nxt, turns=2)
    await stack.check_secrets(conv)
    stack.record(
        "non_json_always",
        f"turn failed after {MAX_MALFORMED_RETRIES + 1} attempts with last_error "
        f"{st.last_error.type}: {st.last_error.message[:60]}…; the next turn, sent at once, "
        "completed",
    )


@pytest.mark.parametrize("case_id", cases_of(__name__))
async def test_malformed(launched: dict[str, asyncio.Task[None]], case_id: str) -> None:
    await launched[case_id]
