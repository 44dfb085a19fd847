"""C conversations at once through one worker process vs the bare client in one event loop.

Run: ``.venv/bin/python -m bench.concurrency [--c 100,500,1000] [--steps 18] [--delay-ms 20]``

Each conversation is one new conversation with one turn, ``delay:20 steps:18``: 21 SSE
events (started, 18 messages, the reply, finished), the last 20 of them 20 ms apart. (The
simulator applies directives in order, so ``steps:18 delay:20`` would send the 18 steps at
once and delay only the last two events.)

- **bare**: C tasks in this process's event loop, each E1 (create) then ``RunReader.send``
  to ``processing.finished``, on one shared ``GenieClient``.
- **durable**: C concurrent ``GenieConversations.ask(new id, text, start_with=…)``: workflow
  start (update-with-start), ``create_conversation`` and ``stream_segment`` activities on
  the one worker subprocess, the reply returned by the update.
- **floor (a)**: C concurrent update-with-starts of the minimal ``FloorTurns`` workflow
  (its own worker process, same server), each running one activity that does the bare
  conversation's work (E1, then the turn).

The three run one after the other for each C (bare, floor, durable).

Wall time is first request to last reply. Worker memory is sampled from
``/proc/<pid>/status`` every 100 ms (VmRSS) and VmHWM is read at the end. A turn that does
not come back ``completed`` with all 19 texts counts as failed.

Targets at C = 500: wall-time ratio <= 1.5, worker peak RSS <= 400 MB, zero failed turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    median,
    pct,
    table,
    ticker,
    verdict,
    write_result,
)

NAME = "concurrency"
TARGET_RATIO = 1.5
TARGET_RSS_MB = 400.0
TARGET_AT = 500


@dataclass
class Round:
    c: int
    mode: str
    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    peak_rss_mib: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def fail(self, text: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(text)


async def _bare_one(stack: BenchStack, text: str, expected: int, r: Round) -> None:
    t0 = time.monotonic()
    try:
        conv = await stack.bare_conversation()
        n = await stack.bare_turn(conv, text)
        if n != expected:
            r.fail(f"{n} events, expected {expected}")
            return
    except Exception as e:  # a failed turn is a result, not a crash
        r.fail(f"{type(e).__name__}: {e}")
        return
    r.latencies.append(time.monotonic() - t0)
    r.done += 1


async def _durable_one(stack: BenchStack, text: str, texts: int, r: Round) -> None:
    t0 = time.monotonic()
    try:
        res = await stack.api.ask(stack.new_id("c"), text, start_with=(GENIE, USER))
        if res.status != "completed" or len(res.messages) != texts:
            r.fail(f"{res.status} with {len(res.messages)} texts: {res.error}")
            return
    except Exception as e:
        r.fail(f"{type(e).__name__}: {e}")
        return
    r.latencies.append(time.monotonic() - t0)
    r.done += 1


async def _floor_one(stack: BenchStack, text: str, expected: int, r: Round) -> None:
    t0 = time.monotonic()
    try:
        reply = await stack.floor_turn(stack.new_id("f"), None, text)
        if reply.events != expected:
            r.fail(f"{reply.events} events, expected {expected}")
            return
    except Exception as e:
        r.fail(f"{type(e).__name__}: {e}")
        return
    r.latencies.append(time.monotonic() - t0)
    r.done += 1


async def _round(stack: BenchStack, c: int, mode: str, text: str, steps: int) -> Round:
    r = Round(c, mode)
    pids = {"worker": stack.worker_pid, "temporal": stack.temporal_pid, "sim": stack.sim_pid}
    pids["bench"] = os.getpid()
    if stack.floor_worker is not None:
        pids["floor"] = stack.floor_worker.pid
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            r.peak_rss_mib = max(r.peak_rss_mib, stack.worker_rss_mib())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    t0 = time.monotonic()

    def progress() -> str:
        return (
            f"    {mode} C={c}: {r.done} done, {r.failed} failed, "
            f"{time.monotonic() - t0:.1f}s, worker RSS {stack.worker_rss_mib():.0f} MiB"
        )

    sampler = asyncio.create_task(sample())
    if mode == "bare":
        coros = [_bare_one(stack, text, steps + 3, r) for _ in range(c)]
    elif mode == "floor":
        coros = [_floor_one(stack, text, steps + 3, r) for _ in range(c)]
    else:
        coros = [_durable_one(stack, text, steps + 1, r) for _ in range(c)]
    async with ticker(2.0, progress):
        await asyncio.gather(*coros)
    r.wall = time.monotonic() - t0
    stop.set()
    await sampler
    r.cpu = {k: round(cpu_seconds(p) - cpu0[k], 2) for k, p in pids.items()}
    log(
        f"  {mode:7s} C={c:5d}: wall {r.wall:6.2f}s, p50 {median(r.latencies):.2f}s, "
        f"failed {r.failed}, worker peak RSS {r.peak_rss_mib:.0f} MiB, CPU s {r.cpu}"
    )
    for e in r.errors:
        log(f"    failure: {e}")
    return r


async def main(cs: list[int], steps: int, delay_ms: int, budget: float) -> None:
    text = f"delay:{delay_ms} steps:{steps}"
    log(f"{NAME}: C in {cs}, one turn {text!r} ({steps + 3} SSE events) per conversation")
    rounds: list[tuple[Round, Round, Round]] = []
    skipped: list[int] = []
    async with BenchStack(NAME) as stack:
        idle_rss = stack.worker_rss_mib()
        log("  warm-up: 20 conversations each way")
        await _round(stack, 20, "bare", text, steps)
        await _round(stack, 20, "floor", text, steps)
        await _round(stack, 20, "durable", text, steps)
        warm_rss = stack.worker_rss_mib()
        started = time.monotonic()
        rate = 0.0  # durable conversations/s of the last round
        for c in cs:
            left = budget - (time.monotonic() - started)
            if rate and c / rate * 1.9 > left:
                log(
                    f"  C={c} skipped: at the {rate:.1f} conversations/s just measured it "
                    f"would need ~{c / rate * 1.9:.0f}s (three ways) and {left:.0f}s of the "
                    f"{budget:.0f}s budget are left; run with --c {c} to measure it"
                )
                skipped.append(c)
                continue
            bare = await _round(stack, c, "bare", text, steps)
            floor = await _round(stack, c, "floor", text, steps)
            durable = await _round(stack, c, "durable", text, steps)
            rounds.append((bare, floor, durable))
            rate = c / durable.wall
        hwm = stack.worker_hwm_mib()
        final_rss = stack.worker_rss_mib()

    rows: list[list[object]] = []
    data_rounds: list[dict[str, Any]] = []
    met: bool | None = None
    for bare, floor, durable in rounds:
        ratio = durable.wall / bare.wall if bare.wall else float("nan")
        f_ratio = durable.wall / floor.wall if floor.wall else float("nan")
        note = "(info)"
        if durable.c == TARGET_AT:
            ok_ratio = ratio <= TARGET_RATIO
            ok_rss = durable.peak_rss_mib <= TARGET_RSS_MB
            ok_fail = durable.failed == 0 and bare.failed == 0
            met = ok_ratio and ok_rss and ok_fail
            note = (
                f"ratio<={TARGET_RATIO}: {verdict(ok_ratio)}; RSS<={TARGET_RSS_MB:.0f}: "
                f"{verdict(ok_rss)}; 0 failed: {verdict(ok_fail)}"
            )
        rows.append(
            [
                durable.c,
                f"{bare.wall:.2f}",
                f"{floor.wall:.2f}",
                f"{durable.wall:.2f}",
                f"{ratio:.2f}x",
                f"{f_ratio:.2f}x",
                f"{median(bare.latencies):.2f}/{pct(bare.latencies, 0.95):.2f}",
                f"{median(durable.latencies):.2f}/{pct(durable.latencies, 0.95):.2f}",
                f"{durable.c / durable.wall:.0f}",
                f"{durable.peak_rss_mib:.0f}",
                f"{bare.failed}/{floor.failed}/{durable.failed}",
                f"{durable.cpu.get('worker', 0):.1f}/{durable.cpu.get('temporal', 0):.1f}",
                note,
            ]
        )
        data_rounds.append(
            {
                "c": durable.c,
                "bare_wall_s": round(bare.wall, 3),
                "floor_wall_s": round(floor.wall, 3),
                "durable_wall_s": round(durable.wall, 3),
                "ratio": round(ratio, 3),
                "ratio_to_floor": round(f_ratio, 3),
                "floor_latency_p50_s": round(median(floor.latencies), 3),
                "floor_failed": floor.failed,
                "cpu_seconds_floor": floor.cpu,
                "bare_latency_p50_s": round(median(bare.latencies), 3),
                "durable_latency_p50_s": round(median(durable.latencies), 3),
                "durable_latency_p95_s": round(pct(durable.latencies, 0.95), 3),
                "durable_conversations_per_s": round(durable.c / durable.wall, 1),
                "worker_peak_rss_mib": round(durable.peak_rss_mib, 1),
                "bare_failed": bare.failed,
                "durable_failed": durable.failed,
                "failure_samples": bare.errors + floor.errors + durable.errors,
                "cpu_seconds_bare": bare.cpu,
                "cpu_seconds_durable": durable.cpu,
            }
        )
    for c in skipped:
        rows.append(
            [
                c,
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "skipped: over the time budget",
            ]
        )
    text_table = table(
        f"concurrency: C new conversations x one turn {text!r}, one worker; "
        f"worker RSS idle {idle_rss:.0f} MiB, VmHWM {hwm:.0f} MiB",
        ["C", "bare s", "floor a s", "durable s", "/bare", "/floor", "bare p50/p95 s",
         "durable p50/p95 s", "conv/s", "peak RSS MiB", "failed b/f/d", "CPU s worker/server",
         "target (C=500)"],
        rows,
    )  # fmt: skip
    write_result(
        NAME,
        {
            "text": text,
            "events_per_turn": steps + 3,
            "worker_rss_idle_mib": round(idle_rss, 1),
            "worker_rss_after_warmup_mib": round(warm_rss, 1),
            "worker_rss_final_mib": round(final_rss, 1),
            "worker_vmhwm_mib": round(hwm, 1),
            "rounds": data_rounds,
            "skipped_over_budget": skipped,
            "budget_s": budget,
            "targets": {"ratio": TARGET_RATIO, "peak_rss_mb": TARGET_RSS_MB, "at_c": TARGET_AT},
            "met": met,
        },
        text_table,
    )


def cli() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--c", default="100,500,1000", help="comma-separated conversation counts")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--delay-ms", type=int, default=20)
    p.add_argument(
        "--budget", type=float, default=100.0, help="seconds; a C that would overrun is skipped"
    )
    a = p.parse_args()
    asyncio.run(main([int(x) for x in a.c.split(",")], a.steps, a.delay_ms, a.budget))


if __name__ == "__main__":
    cli()
