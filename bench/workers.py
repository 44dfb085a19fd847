"""More than one worker: 1 vs 3 worker processes on one task queue, and one SIGKILLed.

Run: ``.venv/bin/python -m bench.workers [--c 1000] [--steps 18] [--delay-ms 20]``

Rounds of C new conversations at once, each one turn of ``delay:20 steps:18`` (21 SSE
events; ``GenieConversations.ask`` with update-with-start), on one stack:

1. **floor (a)**: the same C through the minimal ``FloorTurns`` workflow (one worker);
2. **1 worker**;
3. **3 workers** (two more ``python -m worker`` processes on the same task queue);
4. **3 workers, one SIGKILLed** once a third of the turns have completed; it is not
   restarted, the other two must finish. **Time to drain**: from the kill to the last
   turn completed.

Ground truth from the simulator (``/_sim/stats``) for the conversations each round
created: a **lost turn** is one that did not come back ``completed`` with every text,
also when asked again after the round (``wait_turn``: a client call that gave up, e.g.
an update whose workflow task was on the killed worker, is counted apart as a **client
error** if the turn did complete); a
**duplicate post** is a second ``POST /messages`` in a conversation (``message_posts``
> 1) or a message accepted twice; an **orphan** is a conversation created with no message
(a create retried after the kill would leave one).

Where the time goes: CPU seconds per process (``/proc/<pid>/stat``) over each round,
shown as cores busy (CPU s / wall s), with the machine's total from ``/proc/stat``; the
rest is other processes on the machine (other engineers' tests).

Targets: 0 lost turns and 0 duplicate posts with a worker killed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from bench._stack import (
    GENIE,
    USER,
    BenchStack,
    cpu_seconds,
    log,
    machine_cpu,
    median,
    pct,
    table,
    ticker,
    verdict,
    write_result,
)

NAME = "workers"


@dataclass
class Round:
    name: str
    c: int
    done: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    killed_at: float | None = None
    drain_s: float | None = None
    sim: dict[str, int] = field(default_factory=dict)
    gave_up: list[tuple[str, str]] = field(default_factory=list)
    """(workflow id, error) of asks that raised: checked again after the round."""
    client_errors: int = 0

    def fail(self, text: str) -> None:
        self.lost += 1
        if len(self.errors) < 5:
            self.errors.append(text)

    def cores(self) -> dict[str, float]:
        return {k: round(v / self.wall, 2) for k, v in self.cpu.items()} if self.wall else {}


async def _one(stack: BenchStack, r: Round, text: str, texts: int, floor: bool, t0: float) -> None:
    s = time.monotonic()
    wid = stack.new_id("wf" if floor else "w")
    try:
        if floor:
            reply = await stack.floor_turn(wid, None, text)
            ok, why = reply.events == texts + 2, f"{reply.events} events"
        else:
            res = await stack.api.ask(wid, text, start_with=(GENIE, USER))
            ok = res.status == "completed" and len(res.messages) == texts
            why = f"{res.status} with {len(res.messages)} texts: {res.error}"
    except Exception as e:
        if not floor:
            r.gave_up.append((wid, f"{type(e).__name__}: {e}"))
            return
        ok, why = False, f"{type(e).__name__}: {e}"
    if not ok:
        r.fail(why)
        return
    r.done += 1
    now = time.monotonic()
    r.latencies.append(now - s)
    r.finished_at.append(now - t0)


async def _sim_counts(stack: BenchStack, before: set[str]) -> tuple[dict[str, int], set[str]]:
    convs: dict[str, Any] = (await stack.sim_stats())["conversations"]
    new = {k: v for k, v in convs.items() if k not in before}
    out = {
        "conversations": len(new),
        "duplicate_posts": sum(1 for v in new.values() if v["message_posts"] > 1),
        "accepted_twice": sum(1 for v in new.values() if v["messages_accepted"] > 1),
        "orphans": sum(1 for v in new.values() if v["message_posts"] == 0),
    }
    return out, set(convs)


async def _round(
    stack: BenchStack, name: str, c: int, text: str, texts: int, *, floor: bool, kill: bool,
    seen: set[str],
) -> tuple[Round, set[str]]:  # fmt: skip
    r = Round(name, c)
    pids = stack.pids()
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    busy0, _ = machine_cpu()
    t0 = time.monotonic()
    killed_cpu: dict[str, float] = {}

    async def killer() -> None:
        while r.done < c // 3:  # noqa: ASYNC110 (a count of finished tasks: polled)
            await asyncio.sleep(0.05)
        victim = stack.extra_workers[-1]
        role = f"worker{len(stack.extra_workers) + 1}"
        killed_cpu[role] = cpu_seconds(victim.pid) - cpu0[role]
        victim.kill()
        r.killed_at = time.monotonic() - t0
        log(f"    SIGKILLed {role} at {r.killed_at:.1f}s, {r.done}/{c} turns done")

    def progress() -> str:
        return f"    {name}: {r.done}/{c} done, {r.lost} lost, {time.monotonic() - t0:.0f}s"

    k = asyncio.create_task(killer()) if kill else None
    async with ticker(5.0, progress):
        await asyncio.gather(*(_one(stack, r, text, texts, floor, t0) for _ in range(c)))
    r.wall = time.monotonic() - t0
    if k is not None:
        if not k.done():
            k.cancel()
        if r.killed_at is not None and r.finished_at:
            r.drain_s = round(max(r.finished_at) - r.killed_at, 2)
    r.cpu = {role: round(cpu_seconds(p) - cpu0[role], 2) for role, p in pids.items()}
    r.cpu.update({role: round(v, 2) for role, v in killed_cpu.items()})
    r.machine_busy = round(machine_cpu()[0] - busy0, 2)

    async def again(wid: str) -> bool:
        try:
            res = await asyncio.wait_for(stack.api.wait(wid, 1, wait_for="completion"), 120)
        except Exception:
            return False
        return res.status == "completed" and len(res.messages) == texts

    checked = await asyncio.gather(*(again(wid) for wid, _ in r.gave_up))
    for (_, err), ok in zip(r.gave_up, checked, strict=True):
        if ok:
            r.client_errors += 1
            log(f"    client error, turn completed anyway: {err}")
        else:
            r.fail(f"{err} (and not completed when asked again)")
    r.sim, seen = await _sim_counts(stack, seen)
    log(
        f"  {name}: {c / r.wall:.1f} conv/s, wall {r.wall:.1f}s, lost {r.lost}, client errors "
        f"{r.client_errors}, sim {r.sim}, "
        f"cores {r.cores()}"
    )
    for e in r.errors:
        log(f"    lost: {e}")
    return r, seen


def _bottleneck(r: Round) -> str:
    cores = r.cores()
    workers = sum(v for k, v in cores.items() if "worker" in k)
    parts = {
        "server": cores.get("server", 0.0),
        "workers": workers,
        "simulator": cores.get("simulator", 0.0),
        "bench client": cores.get("bench", 0.0),
    }
    ours = sum(cores.values())
    machine = r.machine_busy / r.wall if r.wall else 0.0
    n = os.cpu_count() or 1
    top = max(parts, key=lambda k: parts[k])
    return (
        f"{top} ({parts[top]:.2f} of {n} cores; machine {machine:.2f} busy, "
        f"{max(0.0, machine - ours):.2f} of it other processes)"
    )


async def main(c: int, steps: int, delay_ms: int) -> None:
    text = f"delay:{delay_ms} steps:{steps}"
    texts = steps + 1
    log(f"{NAME}: {c} conversations x one turn {text!r}: floor, 1 worker, 3, 3 with a kill")
    rounds: list[Round] = []
    async with BenchStack(NAME) as stack:
        log("  warm-up: 20 conversations")
        seen: set[str] = set()
        _, seen = await _round(stack, "warm-up", 20, text, texts, floor=False, kill=False,
                               seen=seen)  # fmt: skip
        r, seen = await _round(stack, "floor (a), 1 floor worker", c, text, texts, floor=True,
                               kill=False, seen=seen)  # fmt: skip
        rounds.append(r)
        r, seen = await _round(stack, "1 worker", c, text, texts, floor=False, kill=False,
                               seen=seen)  # fmt: skip
        rounds.append(r)
        await stack.add_worker()
        await stack.add_worker()
        log(f"  3 workers: pids {stack.pids()}")
        r, seen = await _round(stack, "3 workers", c, text, texts, floor=False, kill=False,
                               seen=seen)  # fmt: skip
        rounds.append(r)
        r, seen = await _round(stack, "3 workers, one SIGKILLed", c, text, texts, floor=False,
                               kill=True, seen=seen)  # fmt: skip
        rounds.append(r)

    floor, one, three, killed = rounds
    lost_ok = killed.lost == 0
    dup = killed.sim.get("duplicate_posts", 0) + killed.sim.get("accepted_twice", 0)
    dup_ok = dup == 0
    rows: list[list[object]] = []
    for r in rounds:
        cores = r.cores()
        workers = sum(v for k, v in cores.items() if "worker" in k)
        target = ""
        if r is killed:
            target = f"0 lost: {verdict(lost_ok)}; 0 dup: {verdict(dup_ok)}"
        rows.append(
            [
                r.name,
                f"{r.wall:.1f}",
                f"{r.c / r.wall:.1f}",
                f"{r.wall / floor.wall:.2f}x" if r is not floor else "1.00x",
                f"{one.wall / r.wall:.2f}x" if r is not floor else "",
                f"{median(r.latencies):.1f}/{pct(r.latencies, 0.95):.1f}",
                f"{r.lost}/{r.client_errors}",
                f"{r.sim.get('duplicate_posts', 0)}/{r.sim.get('orphans', 0)}",
                "" if r.drain_s is None else f"{r.drain_s:.1f}",
                f"{cores.get('server', 0):.2f}/{workers:.2f}/{cores.get('simulator', 0):.2f}"
                f"/{cores.get('bench', 0):.2f}",
                target,
            ]
        )
    text_table = table(
        f"workers: {c} new conversations x one turn {text!r} ({steps + 3} SSE events)",
        ["round", "wall s", "conv/s", "vs floor", "speed-up vs 1", "p50/p95 s",
         "lost/client err",
         "dup posts/orphans", "drain s", "cores srv/wrk/sim/bench", "target"],
        rows,
    )  # fmt: skip
    text_table += "\n  bottleneck (most CPU) per round: " + "; ".join(
        f"{r.name}: {_bottleneck(r)}" for r in rounds
    )
    write_result(
        NAME,
        {
            "text": text,
            "c": c,
            "rounds": [
                {
                    "name": r.name,
                    "wall_s": round(r.wall, 2),
                    "conversations_per_s": round(r.c / r.wall, 2),
                    "ratio_to_floor": round(r.wall / floor.wall, 3),
                    "latency_p50_s": round(median(r.latencies), 2),
                    "latency_p95_s": round(pct(r.latencies, 0.95), 2),
                    "lost": r.lost,
                    "lost_samples": r.errors,
                    "client_errors_turn_completed": r.client_errors,
                    "client_error_samples": [e for _, e in r.gave_up][:5],
                    "sim": r.sim,
                    "killed_at_s": r.killed_at,
                    "drain_s": r.drain_s,
                    "cpu_seconds": r.cpu,
                    "cores": r.cores(),
                    "machine_busy_cores": round(r.machine_busy / r.wall, 2) if r.wall else None,
                    "bottleneck": _bottleneck(r),
                }
                for r in rounds
            ],
            "speedup_3_vs_1": round(one.wall / three.wall, 3),
            "met": {"lost": lost_ok, "duplicates": dup_ok},
        },
        text_table,
    )


def cli() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--c", type=int, default=1000, help="conversations per round")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--delay-ms", type=int, default=20)
    a = p.parse_args()
    asyncio.run(main(a.c, a.steps, a.delay_ms))


if __name__ == "__main__":
    cli()
