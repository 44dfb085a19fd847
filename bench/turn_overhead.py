"""What durability adds to one plain turn: the workflow vs the bare client, same simulator.

Run: ``.venv/bin/python -m bench.turn_overhead [--turns 100] [--text hello]``

Four sequences, interleaved turn by turn (the order rotating) so machine noise hits all
alike:

- **durable**: ``GenieConversations.ask(wid, text, start_with=(genie, user))`` on one
  conversation: one update (update-with-start, ``USE_EXISTING``) that queues the turn and
  returns its reply. Behind it: the Temporal dev server, the worker subprocess, the
  ``stream_segment`` activity, the simulator.
- **bare**: ``RunReader.send(text)`` on one conversation with the bare ``GenieClient`` in
  this process, to ``processing.finished``.

Also measured (fewer rounds): the *first* turn of a fresh conversation both ways (durable:
workflow start + ``create_conversation`` activity + stream; bare: E1 + E5; floors:
update-with-start, E1 + E5 in the one activity).

Target: added p50 <= 40 ms for the sequential turns.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable

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


async def _floor(stack: BenchStack, wid: str, conv: str | None, text: str, local: bool) -> float:
    t0 = time.perf_counter()
    await stack.floor_turn(wid, conv, text, local=local)
    return (time.perf_counter() - t0) * 1000


async def _bare_first(stack: BenchStack, text: str) -> float:
    t0 = time.perf_counter()
    conv = await stack.bare_conversation()
    await stack.bare_turn(conv, text)
    return (time.perf_counter() - t0) * 1000


def _row(
    name: str, d: list[float], b: list[float], fa: list[float], fb: list[float], target: str
) -> list[object]:
    added = median(d) - median(b)
    return [
        name,
        len(d),
        f"{median(b):.1f}",
        f"{median(fa):.1f} / {median(fb):.1f}",
        f"{median(d):.1f} / {pct(d, 0.95):.1f}",
        f"{added:+.1f}",
        f"{median(fa) - median(b):+.1f}",
        f"{median(d) / median(b):.2f}x",
        f"{median(d) / median(fa):.2f}x / {median(d) / median(fb):.2f}x",
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
        fa_wid, fb_wid = stack.new_id("floor-a"), stack.new_id("floor-b")
        fa_conv = (await stack.floor_turn(fa_wid, None, text)).conversation_id
        fb_conv = (await stack.floor_turn(fb_wid, None, text, local=True)).conversation_id
        runs: dict[str, Callable[[], Awaitable[float]]] = {
            "durable": lambda: _durable(stack, wid, text),
            "bare": lambda: _bare(stack, conv, text),
            "floor_a": lambda: _floor(stack, fa_wid, fa_conv, text, False),
            "floor_b": lambda: _floor(stack, fb_wid, fb_conv, text, True),
        }
        log("  warm-up (5 turns each way)")
        for _ in range(5):
            for run in runs.values():
                await run()
        ms: dict[str, list[float]] = {k: [] for k in runs}
        durable, bare = ms["durable"], ms["bare"]
        pids = {"worker": stack.worker_pid, "server": stack.temporal_pid, "sim": stack.sim_pid}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.monotonic()
        order = list(runs)
        for i in range(turns):
            # Rotate which goes first, so none always runs right after another.
            for k in order[i % 4 :] + order[: i % 4]:
                ms[k].append(await runs[k]())
            if (i + 1) % 25 == 0:
                log(
                    f"  {i + 1}/{turns} turns ({time.monotonic() - t0:.1f}s): p50 durable "
                    f"{median(durable):.1f} ms, bare {median(bare):.1f} ms, floor (a) "
                    f"{median(ms['floor_a']):.1f}, floor (b) {median(ms['floor_b']):.1f}"
                )
        # Both paths' CPU (and the floors' server share): per round of four turns.
        cpu_ms = {k: (cpu_seconds(p) - cpu0[k]) * 1000 / turns for k, p in pids.items()}
        path = await _critical_path(stack, wid, turns)
        log(f"  first turn of a fresh conversation, {first_turns} each way")
        first_d: list[float] = []
        first_b: list[float] = []
        first_fa: list[float] = []
        first_fb: list[float] = []
        for _ in range(first_turns):
            first_d.append(await _durable(stack, stack.new_id("first"), text))
            first_b.append(await _bare_first(stack, text))
            first_fa.append(await _floor(stack, stack.new_id("ffa"), None, text, False))
            first_fb.append(await _floor(stack, stack.new_id("ffb"), None, text, True))
        metrics = await stack.metrics()
        rss = stack.worker_rss_mib()

    added = median(durable) - median(bare)
    fa, fb = ms["floor_a"], ms["floor_b"]
    rows = [
        _row(
            "next turn (1 update)",
            durable,
            bare,
            fa,
            fb,
            f"added p50 <= {TARGET_ADDED_P50_MS:.0f}: {verdict(added <= TARGET_ADDED_P50_MS)}",
        ),
        _row("first turn (start + E1)", first_d, first_b, first_fa, first_fb, "(info)"),
    ]
    text_table = table(
        f"turn_overhead: plain turn {text!r} (3 SSE events), ms per turn, p50 unless named",
        ["turn", "n", "bare", "floor a / b", "durable p50 / p95", "added vs bare",
         "floor a adds", "durable/bare", "durable/floor a / b", "target"],
        rows,
    )  # fmt: skip
    client = [d - s for d, s in zip(durable, path["server"], strict=False)]
    text_table += (
        f"\n  where a durable next turn's time goes (p50 ms, server event times): workflow "
        f"task 1 {median(path['wft1']):.1f}, stream activity {median(path['activity']):.1f} "
        f"(bare turn {median(bare):.1f}), workflow task 2 {median(path['wft2']):.1f}; "
        f"update arrival -> completion {median(path['server']):.1f}, client/RPC rest "
        f"{median(client):.1f}"
        f"\n  CPU per round of four turns (ms): server {cpu_ms['server']:.1f} (all but the "
        f"bare turn), worker {cpu_ms['worker']:.1f} (ours only), simulator "
        f"{cpu_ms['sim']:.1f} (all four); "
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
            "floor_a_ms": [round(x, 2) for x in fa],
            "floor_b_ms": [round(x, 2) for x in fb],
            "first_turn_floor_a_ms": [round(x, 2) for x in first_fa],
            "first_turn_floor_b_ms": [round(x, 2) for x in first_fb],
            "p50_ms": {
                "bare": round(median(bare), 2),
                "floor_a": round(median(fa), 2),
                "floor_b": round(median(fb), 2),
                "durable": round(median(durable), 2),
            },
            "ratio_durable_to": {
                "bare": round(median(durable) / median(bare), 3),
                "floor_a": round(median(durable) / median(fa), 3),
                "floor_b": round(median(durable) / median(fb), 3),
            },
            "added_p50_ms": round(added, 2),
            "added_p95_ms": round(pct(durable, 0.95) - pct(bare, 0.95), 2),
            "target_added_p50_ms": TARGET_ADDED_P50_MS,
            "met": added <= TARGET_ADDED_P50_MS,
            "worker_rss_mib": round(rss, 1),
            "critical_path_p50_ms": {k: round(median(v), 2) for k, v in path.items()},
            "client_rpc_rest_p50_ms": round(median(client), 2),
            "cpu_ms_per_round_of_four": {k: round(v, 2) for k, v in cpu_ms.items()},
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
