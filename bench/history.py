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

Then what waking a long conversation costs: a worker that no longer caches a
conversation replays its current run before the next message or decision can go on.
After ``WAKE_TURNS`` plain turns, the conversation's largest run (a run is largest just
before it continues as new) is replayed in-process by the SDK's ``Replayer``, the code
path of a cache miss: median worker CPU of ``WAKE_REPLAYS`` replays. For ours with the
default ``max_history_events_per_run``, ours with the bound off (one run for all the
turns, as before the bound), and floor (a) after as many turns.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from bench._floor import FloorTurns
from bench._stack import GENIE, USER, BenchStack, log, median, table, verdict, write_result
from workflows import ConversationPolicy, GenieConversation

NAME = "history"
TARGET_PLAIN_EVENTS = 15
CASES = [
    ("plain", 10, "steps:7"),
    ("plain", 1000, "steps:997"),
    ("approval", 10, "please confirm:send_email steps:4"),
    ("approval", 1000, "please confirm:send_email steps:994"),
]
WAKE_TURNS = 60
WAKE_REPLAYS = 15
UNBOUNDED = ConversationPolicy(max_history_events_per_run=50_000)


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


async def _replay_cpu_ms(history: WorkflowHistory, workflow: type) -> float:
    """Median CPU ms of replaying ``history`` (the worker's work on a cache miss)."""
    replayer = Replayer(
        workflows=[workflow],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    await replayer.replay_workflow(history)  # warm: imports, first adapters
    took = []
    for _ in range(WAKE_REPLAYS):
        t0 = time.process_time()
        await replayer.replay_workflow(history)
        took.append((time.process_time() - t0) * 1000)
    return median(took)


async def _wake_case(
    stack: BenchStack, label: str, policy: ConversationPolicy | None
) -> dict[str, Any]:
    """After the turns, the largest run of the conversation: what a wake replays at most
    (a run is at its largest just before it continues as new)."""
    wid = stack.new_id("h-wake")
    await stack.api.start(GENIE, USER, workflow_id=wid, policy=policy)
    run_id = (await stack.api.handle(wid).describe()).run_id
    for i in range(WAKE_TURNS):
        res = await stack.api.ask(wid, f"turn {i}")
        if res.status != "completed":
            raise RuntimeError(f"wake/{label}: turn {i} ended {res.status}: {res.error}")
    runs: list[WorkflowHistory] = []
    while run_id:
        runs.append(await stack.client.get_workflow_handle(wid, run_id=run_id).fetch_history())
        last = runs[-1].events[-1]
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    largest = max(runs, key=lambda h: len(h.events))
    ms = await _replay_cpu_ms(largest, GenieConversation)
    log(f"  wake {label}: {len(runs)} runs, the largest {len(largest.events)} events, {ms:.1f} ms")
    return {"label": label, "runs": len(runs), "events": len(largest.events), "replay_cpu_ms": ms}


async def _wake_floor(stack: BenchStack) -> dict[str, Any]:
    wid = stack.new_id("h-wake-floor")
    conv = (await stack.floor_turn(wid, None, "turn 0")).conversation_id
    for i in range(1, WAKE_TURNS):
        await stack.floor_turn(wid, conv, f"turn {i}")
    history = await stack.client.get_workflow_handle(wid).fetch_history()
    ms = await _replay_cpu_ms(history, FloorTurns)
    log(f"  wake floor (a): {len(history.events)} events, {ms:.1f} ms")
    return {"label": "floor (a)", "runs": 1, "events": len(history.events), "replay_cpu_ms": ms}


async def main() -> None:
    log(f"{NAME}: history added per turn, plain and approval, 10 and 1,000 SSE events")
    rows: list[dict[str, Any]] = []
    async with BenchStack(NAME) as stack:
        for kind, sse, text in CASES:
            rows.append(await _case(stack, kind, sse, text))
        floor = await _floor_case(stack)
        wake = [
            await _wake_case(stack, "ours", None),
            await _wake_case(stack, "ours, bound off", UNBOUNDED),
            await _wake_floor(stack),
        ]

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
    floor_ms = wake[-1]["replay_cpu_ms"]
    text_table += "\n\n" + table(
        f"waking a conversation after {WAKE_TURNS} plain turns: replay of its largest run "
        f"(worker CPU, median of {WAKE_REPLAYS})",
        ["conversation", "runs", "events in largest run", "replay CPU ms", "/ floor (a)"],
        [
            [
                w["label"],
                w["runs"],
                w["events"],
                f"{w['replay_cpu_ms']:.1f}",
                f"{w['replay_cpu_ms'] / floor_ms:.2f}x",
            ]
            for w in wake
        ],
    )
    write_result(
        NAME,
        {
            "cases": rows,
            "floor_a": floor,
            "wake": wake,
            "wake_turns": WAKE_TURNS,
            "target_plain_events": TARGET_PLAIN_EVENTS,
            "met": met_all,
        },
        text_table,
    )


def cli() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    cli()
