"""A stream segment's result fits Temporal's payload limit whatever the genie sends.

The result of the ``stream_segment`` activity is a payload in history: over 2 MB the
activity can never complete, and the turn is retried against the same answer forever.
The simulator only sends what its scripts say, so this test feeds the activity one
hostile answer through ``httpx.MockTransport`` (a mocked peer, on purpose: a single
event stream no real genie should send): a reply of 300,000 four-byte characters, then
a confirmation whose skill name and parameters are each hundreds of kilobytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from temporalio.testing import ActivityEnvironment

from activities._stream import run_segment
from activities.models import (
    MAX_NAME_CHARS,
    MAX_PARAMETER_BYTES,
    MAX_TURN_MESSAGE_CHARS,
    StreamSegmentInput,
    StreamSegmentResult,
)
from genie_api import ApiKeyAuth, GenieClient
from genie_codec import genie_data_converter

PAYLOAD_LIMIT = 2 * 1024 * 1024


def _frame(n: int, **fields: Any) -> bytes:
    event = {
        "event_id": f"evt_{n}",
        "conversation_id": "conv_1",
        "genie_run_id": "run_1",
        "seq_num": n,
        "created_at": datetime(2026, 12, 3, tzinfo=UTC).isoformat(),
        **fields,
    }
    return f"id: evt_{n}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def _hostile(request: httpx.Request) -> httpx.Response:
    if request.method != "POST":
        return httpx.Response(404, json={"error_code": "not_found"})
    body = b"".join(
        [
            _frame(1, type="agent.message", message="😀" * 300_000),
            _frame(
                2,
                type="skill.confirmation_required",
                call_id="call_1",
                skill_name="s" * 200_000,
                skill_id="skill_1",
                skill_parameters={"body": "😀" * 200_000},
            ),
        ]
    )
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


async def _segment(genie: Callable[[httpx.Request], httpx.Response]) -> StreamSegmentResult:
    """One ``send`` segment against the mocked genie."""
    client = GenieClient(
        "http://genie.test", ApiKeyAuth("k" * 32), transport=httpx.MockTransport(genie)
    )
    inp = StreamSegmentInput(
        genie_handle="gin-1",
        user_id="u1",
        conversation_id="conv_1",
        turn=1,
        mode="send",
        message="hello",
    )
    async with client:
        result: StreamSegmentResult = await ActivityEnvironment().run(
            run_segment, client, inp, silence_check_seconds=30
        )
    return result


async def test_a_hostile_genie_cannot_make_a_segment_result_too_large() -> None:
    result = await _segment(_hostile)
    size = len(result.model_dump_json().encode())
    assert size < PAYLOAD_LIMIT // 2, size
    assert result.outcome == "confirmation_required"
    (reply,) = result.messages
    assert len(reply) == MAX_TURN_MESSAGE_CHARS and reply.startswith("😀") and reply[-1] == "…"
    assert result.messages_truncated
    conf = result.confirmation
    assert conf is not None and conf.call_id == "call_1"
    assert conf.skill_name == "s" * MAX_NAME_CHARS
    # The key survives; the value says how much of it is left out.
    assert list(conf.skill_parameters) == ["body"] and conf.parameters_shortened
    assert conf.skill_parameters["body"].startswith("😀" * 100)
    assert conf.skill_parameters["body"].endswith(" more characters]")
    kept = json.dumps(conf.skill_parameters, ensure_ascii=False).encode()
    assert len(kept) <= MAX_PARAMETER_BYTES


def _nested(depth: int) -> Any:
    tree: Any = "leaf"
    for _ in range(depth):
        tree = {"n": tree}
    return tree


async def _segment_with_parameters(params: dict[str, Any]) -> StreamSegmentResult:
    def genie(request: httpx.Request) -> httpx.Response:
        body = _frame(
            1, type="skill.confirmation_required", call_id="call_1", skill_parameters=params
        )
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return await _segment(genie)


async def test_parameters_nested_too_deep_to_read_back_are_cut_at_the_depth_bound() -> None:
    """A genie's parameters nested 198 deep, as deep as an event can be and still be read:
    inside the segment's result they are deeper than pydantic's JSON parser goes, so the
    result, in history, could not be read by the workflow, on any retry. The activity
    keeps ``MAX_PARAMETER_DEPTH`` levels and says so."""
    result = await _segment_with_parameters({"to": "a@example.com", "tree": _nested(198)})
    conf = result.confirmation
    assert conf is not None and conf.parameters_shortened
    assert conf.skill_parameters["to"] == "a@example.com"
    assert "nested too deep to show" in json.dumps(conf.skill_parameters)
    converter = genie_data_converter.payload_converter
    (back,) = converter.from_payloads(converter.to_payloads([result]), [StreamSegmentResult])
    assert back == result
