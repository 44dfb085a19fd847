"""What durability adds to one plain turn: the workflow vs the bare client, same simulator.

Run: ``.venv/bin/python -m bench.turn_overhead [--turns 100] [--text hello]``

Two sequences, interleaved turn by turn so machine noise hits both alike:

- **durable**: ``GenieConversations.ask(wid, text, start_with=(genie, user))`` on one
  conversation: one update (update-with-start, ``USE_EXISTING``) that queues the turn and
  returns its reply. Behind it: the Temporal dev server, the worker subprocess, the
  ``stream_segment`` activity, the simulator.
- **bare**: ``RunReader.send(text)`` on one conversation with the bare ``GenieClient`` in
  this process, to ``processing.finished``.

Also measured (fewer rounds): the *first* turn of a fresh conversation both ways (durable:
workflow start + ``create_conversation`` activity + stream; bare: E1 + E5).

Target: added p50 <= 40 ms for the sequential turns.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from temporalio.api.enums.v1 import EventType

from bench._stack import (
    GENIE,
    USER,
    BenchStack,
    cpu_seconds,
    log,
    median,
    pct,
    table,
    verdict,
    write_result,
)

NAME = "turn_overhead"
TARGET_ADDED_P50_MS = 40.0


async def _durable(stack: BenchStack, wid: str, text: str) -> float:
    t0 = time.perf_counter()
    res = await stack.api.ask(wid, text, start_with=(GENIE, USER))
    dt = (time.perf_counter() - t0) * 1000
    if res.status != "completed":
        raise RuntimeError(f"durable turn {res.turn} ended {res.status}: {res.error}")
    return dt


async def _bare(stack: BenchStack, conv: str, text: str) -> float:
    t0 = time.perf_counter()
    await stack.bare_turn(conv, text)
    return (time.perf_counter() - t0) * 1000


async def _bare_first(stack: BenchStack, text: str) -> float:
    t0 = time.perf_counter()
    conv = await stack.bare_conversation()
    await stack.bare_turn(conv, text)
    return (time.perf_counter() - t0) * 1000


def _row(name: str, d: list[float], b: list[float], target: str) -> list[object]:
    added = median(d) - median(b)
    return [
        name,
        len(d),
        f"{median(b):.1f}",
        f"{pct(b, 0.95):.1f}",
        f"{median(d):.1f}",
        f"{pct(d, 0.95):.1f}",
        f"{added:+.1f}",
        f"{pct(d, 0.95) - pct(b, 0.95):+.1f}",
        f"{median(d) / median(b):.2f}x",
        target,
    ]


async def _critical_path(stack: BenchStack, wid: str, last: int) -> dict[str, list[float]]:
    """Per turn, from the server's event times: where the durable turn's time goes.

    A turn is: workflow task 1 (the update arrives, the turn is queued, the stream
    activity is scheduled), the activity (the same work as the bare turn), workflow task
    2 (the reply is recorded and returned as the update's result).
    """
    hist = await stack.api.handle(wid).fetch_history()
    ev = [(e.event_type, e.event_time.ToDatetime()) for e in hist.events]
    out: dict[str, list[float]] = {"wft1": [], "activity": [], "wft2": [], "server": []}
    for i, (et, at) in enumerate(ev):
        if et != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        sched1 = next(
            t for k, t in reversed(ev[:i]) if k == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
        )
        done1 = next(
            t for k, t in reversed(ev[:i]) if k == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        )
        rest = ev[i:]
        act_done = next(t for k, t in rest if k == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        sched2 = next(t for k, t in rest if k == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED)
        done2 = next(t for k, t in rest if k == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        upd = next(
            t for k, t in rest if k == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
        )
        out["wft1"].append((done1 - sched1).total_seconds() * 1000)
        out["activity"].append((act_done - at).total_seconds() * 1000)
        out["wft2"].append((done2 - sched2).total_seconds() * 1000)
        out["server"].append((upd - sched1).total_seconds() * 1000)
    return {k: v[-last:] for k, v in out.items()}


async def main(turns: int, first_turns: int, text: str) -> None:
    log(f"{NAME}: {turns} sequential turns of {text!r} each way, interleaved")
    async with BenchStack(NAME) as stack:
        wid = stack.new_id("seq")
        conv = await stack.bare_conversation()
        log("  warm-up (5 turns each way)")
        for _ in range(5):
            await _durable(stack, wid, text)
            await _bare(stack, conv, text)
        durable: list[float] = []
        bare: list[float] = []
        pids = {"worker": stack.worker_pid, "server": stack.temporal_pid, "sim": stack.sim_pid}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.monotonic()
        for i in range(turns):
            # Alternate which goes first, so neither always runs right after the other.
            if i % 2:
                bare.append(await _bare(stack, conv, text))
                durable.append(await _durable(stack, wid, text))
            else:
                durable.append(await _durable(stack, wid, text))
                bare.append(await _bare(stack, conv, text))
            if (i + 1) % 25 == 0:
                log(
                    f"  {i + 1}/{turns} turns ({time.monotonic() - t0:.1f}s): p50 durable "
                    f"{median(durable):.1f} ms, bare {median(bare):.1f} ms"
                )
        cpu_ms = {k: (cpu_seconds(p) - cpu0[k]) * 1000 / turns for k, p in pids.items()}
        path = await _critical_path(stack, wid, turns)
        log(f"  first turn of a fresh conversation, {first_turns} each way")
        first_d: list[float] = []
        first_b: list[float] = []
        for _ in range(first_turns):
            first_d.append(await _durable(stack, stack.new_id("first"), text))
            first_b.append(await _bare_first(stack, text))
        metrics = await stack.metrics()
        rss = stack.worker_rss_mib()

    added = median(durable) - median(bare)
    rows = [
        _row(
            "next turn (1 update)",
            durable,
            bare,
            f"added p50 <= {TARGET_ADDED_P50_MS:.0f}: {verdict(added <= TARGET_ADDED_P50_MS)}",
        ),
        _row("first turn (start + E1)", first_d, first_b, "(info)"),
    ]
    text_table = table(
        f"turn_overhead: plain turn {text!r} (3 SSE events), ms per turn",
        ["turn", "n", "bare p50", "bare p95", "durable p50", "durable p95", "added p50",
         "added p95", "ratio", "target"],
        rows,
    )  # fmt: skip
    client = [d - s for d, s in zip(durable, path["server"], strict=False)]
    text_table += (
        f"\n  where a durable next turn's time goes (p50 ms, server event times): workflow "
        f"task 1 {median(path['wft1']):.1f}, stream activity {median(path['activity']):.1f} "
        f"(bare turn {median(bare):.1f}), workflow task 2 {median(path['wft2']):.1f}; "
        f"update arrival -> completion {median(path['server']):.1f}, client/RPC rest "
        f"{median(client):.1f}"
        f"\n  CPU per next turn (ms): server {cpu_ms['server']:.1f}, worker "
        f"{cpu_ms['worker']:.1f}, simulator {cpu_ms['sim']:.1f} (both paths); "
        f"load average at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    sched = {
        k: v
        for k, v in metrics.items()
        if "schedule_to_start" in k and ("_sum" in k or "_count" in k)
    }
    write_result(
        NAME,
        {
            "text": text,
            "turns": turns,
            "durable_ms": [round(x, 2) for x in durable],
            "bare_ms": [round(x, 2) for x in bare],
            "first_turn_durable_ms": [round(x, 2) for x in first_d],
            "first_turn_bare_ms": [round(x, 2) for x in first_b],
            "added_p50_ms": round(added, 2),
            "added_p95_ms": round(pct(durable, 0.95) - pct(bare, 0.95), 2),
            "target_added_p50_ms": TARGET_ADDED_P50_MS,
            "met": added <= TARGET_ADDED_P50_MS,
            "worker_rss_mib": round(rss, 1),
            "critical_path_p50_ms": {k: round(median(v), 2) for k, v in path.items()},
            "client_rpc_rest_p50_ms": round(median(client), 2),
            "cpu_ms_per_next_turn": {k: round(v, 2) for k, v in cpu_ms.items()},
            "worker_schedule_to_start_metrics": sched,
        },
        text_table,
    )


def cli() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--turns", type=int, default=100)
    p.add_argument("--first-turns", type=int, default=20)
    p.add_argument("--text", default="hello")
    a = p.parse_args()
    asyncio.run(main(a.turns, a.first_turns, a.text))


if __name__ == "__main__":
    cli()
