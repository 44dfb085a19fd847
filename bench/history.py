"""What one turn adds to the workflow history, for short and long SSE streams.

Run: ``.venv/bin/python -m bench.history``

Four turns, each on its own conversation after a warm-up turn ("hello"), counting the
history events and bytes (serialized protobuf size) the turn adds:

- plain, 10 SSE events (``steps:7``) and 1,000 SSE events (``steps:997``): one ``ask``
  (one update, ``wait_for="attention"``);
- approval, 10 SSE events (``confirm:send_email steps:4``) and 1,000 (``… steps:994``):
  ``ask`` (returns at the pause), then ``approve`` with ``wait_for="completion"`` (one
  ``decide_skill`` update that returns the finished turn).

Floor (a): one turn of 10 SSE events through the minimal ``FloorTurns`` workflow (one
update running one activity), counted the same way.

Targets: the same count for 10 and 1,000 SSE events; <= 15 events per plain turn.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench._stack import GENIE, USER, BenchStack, log, table, verdict, write_result

NAME = "history"
TARGET_PLAIN_EVENTS = 15
CASES = [
    ("plain", 10, "steps:7"),
    ("plain", 1000, "steps:997"),
    ("approval", 10, "please confirm:send_email steps:4"),
    ("approval", 1000, "please confirm:send_email steps:994"),
]


async def _history(stack: BenchStack, wid: str) -> list[Any]:
    hist = await stack.api.handle(wid).fetch_history()
    return list(hist.events)


async def _case(stack: BenchStack, kind: str, sse: int, text: str) -> dict[str, Any]:
    wid = stack.new_id(f"h-{kind}-{sse}")
    await stack.api.ask(wid, "hello", start_with=(GENIE, USER))
    before = await _history(stack, wid)
    t0 = time.monotonic()
    res = await stack.api.ask(wid, text)
    if kind == "approval":
        if res.status != "awaiting_approval":
            raise RuntimeError(f"{kind}/{sse}: expected a pause, got {res.status}")
        # Approve and wait in one update, as a backend would: no wait_turn of its own.
        rec = await stack.api.approve(
            wid, res.pending.approvals[0].call_id, approver="bench", wait_for="completion"
        )
        if rec.result is None:
            raise RuntimeError(f"{kind}/{sse}: the approval returned no turn")
        res = rec.result
    took = time.monotonic() - t0
    if res.status != "completed":
        raise RuntimeError(f"{kind}/{sse}: turn ended {res.status}: {res.error}")
    after = await _history(stack, wid)
    added = after[len(before) :]
    # The SSE events of the run, per the simulator: started, the texts, finished (+ the
    # confirmation, skill.running and skill.completed for an approval turn).
    sse_events = len(res.messages) + 2 + (3 if kind == "approval" else 0)
    types = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in added)
    row = {
        "kind": kind,
        "sse_events": sse_events,
        "text": text,
        "history_events": len(added),
        "history_bytes": sum(e.ByteSize() for e in added),
        "largest_event_bytes": max(e.ByteSize() for e in added),
        "turn_seconds": round(took, 2),
        "event_types": dict(types.most_common()),
    }
    log(
        f"  {kind:8s} {sse_events:5d} SSE events: +{row['history_events']} history events, "
        f"+{row['history_bytes']:,} bytes ({took:.2f}s)"
    )
    return row


async def _floor_case(stack: BenchStack) -> dict[str, Any]:
    wid = stack.new_id("h-floor")
    conv = (await stack.floor_turn(wid, None, "hello")).conversation_id
    before = await _history(stack, wid)
    reply = await stack.floor_turn(wid, conv, "steps:7")
    added = (await _history(stack, wid))[len(before) :]
    types = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in added)
    log(f"  floor (a) {reply.events:5d} SSE events: +{len(added)} history events")
    return {
        "kind": "floor (a)",
        "sse_events": reply.events,
        "text": "steps:7",
        "history_events": len(added),
        "history_bytes": sum(e.ByteSize() for e in added),
        "largest_event_bytes": max(e.ByteSize() for e in added),
        "event_types": dict(types.most_common()),
    }


async def main() -> None:
    log(f"{NAME}: history added per turn, plain and approval, 10 and 1,000 SSE events")
    rows: list[dict[str, Any]] = []
    async with BenchStack(NAME) as stack:
        for kind, sse, text in CASES:
            rows.append(await _case(stack, kind, sse, text))
        floor = await _floor_case(stack)

    by = {(r["kind"], r["sse_events"] >= 100): r for r in rows}
    t_rows: list[list[object]] = []
    met_all = True
    for kind in ("plain", "approval"):
        short, long_ = by[(kind, False)], by[(kind, True)]
        same = short["history_events"] == long_["history_events"]
        ok = same and (kind != "plain" or long_["history_events"] <= TARGET_PLAIN_EVENTS)
        met_all = met_all and ok
        target = "same count" + (f", <= {TARGET_PLAIN_EVENTS}" if kind == "plain" else "")
        for r in (short, long_):
            t_rows.append(
                [
                    f"{kind} turn",
                    r["sse_events"],
                    r["history_events"],
                    f"{r['history_bytes']:,}",
                    f"{r['largest_event_bytes']:,}",
                    f"{target}: {verdict(ok)}" if r is long_ else "",
                ]
            )
    plain_events = by[("plain", False)]["history_events"]
    t_rows.append(
        [
            "floor (a): update -> activity",
            floor["sse_events"],
            floor["history_events"],
            f"{floor['history_bytes']:,}",
            f"{floor['largest_event_bytes']:,}",
            f"plain turn / floor: {plain_events / floor['history_events']:.2f}x",
        ]
    )
    text_table = table(
        "history: events and bytes one turn adds (after a warm-up turn)",
        ["turn", "SSE events", "history events", "history bytes", "largest event B", "target"],
        t_rows,
    )
    write_result(
        NAME,
        {
            "cases": rows,
            "floor_a": floor,
            "target_plain_events": TARGET_PLAIN_EVENTS,
            "met": met_all,
        },
        text_table,
    )


def cli() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    cli()
