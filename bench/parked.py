"""What a conversation waiting for a human costs the worker, and how fast decisions drain.

Run: ``.venv/bin/python -m bench.parked [--p 1000,5000] [--park-budget 80] [--approve-budget 20]``

One worker subprocess. Conversations are started with ``confirm:send_email`` through
``GenieConversations.ask`` (update-with-start, ``wait_for="attention"``), so each returns
once its workflow is parked on the approval: its stream activity has ended, and it holds
no activity slot or socket, only (up to ``GENIE_MAX_CACHED_WORKFLOWS``) a cached workflow.

Parking is cumulative: at each checkpoint P the worker's VmRSS is read and compared with
the idle worker (after a warm-up of a few conversations). Then every parked conversation is
approved (``decide_skill`` update) and waited on to completion (``wait_turn``), and
decisions/s to completion are reported.

This box cannot always park thousands within the time budget: the script then stops at the
budget, prints the P it really parked, and extrapolates nothing.

Targets: RSS <= +50 MB over idle at P = 5,000; >= 50 decisions/s to completion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field

from bench._stack import (
    GENIE,
    USER,
    BenchStack,
    cpu_seconds,
    log,
    median,
    table,
    ticker,
    verdict,
    write_result,
)
from genie_config import GenieSettings

NAME = "parked"
TEXT = "please confirm:send_email"
TARGET_RSS_DELTA_MB = 50.0
TARGET_RSS_AT = 5000
TARGET_DECISIONS_PER_S = 50.0
IN_FLIGHT = 100


@dataclass
class Parked:
    calls: dict[str, str] = field(default_factory=dict)  # workflow id -> call id
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(text)


async def _park_one(stack: BenchStack, parked: Parked) -> None:
    wid = stack.new_id("p")
    t0 = time.monotonic()
    try:
        res = await stack.api.ask(wid, TEXT, start_with=(GENIE, USER))
    except Exception as e:
        parked.fail(f"{type(e).__name__}: {e}")
        return
    if res.status != "awaiting_approval" or not res.pending.approvals:
        parked.fail(f"{res.status}: {res.error}")
        return
    parked.latencies.append(time.monotonic() - t0)
    parked.calls[wid] = res.pending.approvals[0].call_id


async def _park_until(stack: BenchStack, parked: Parked, p: int, deadline: float) -> None:
    """Park conversations (IN_FLIGHT at a time) until ``p`` are parked or the deadline."""
    sem = asyncio.Semaphore(IN_FLIGHT)
    tasks: list[asyncio.Task[None]] = []

    async def one() -> None:
        try:
            await _park_one(stack, parked)
        finally:
            sem.release()

    launched = len(parked.calls) + parked.failed
    while launched < p + parked.failed and time.monotonic() < deadline:
        await sem.acquire()
        if time.monotonic() >= deadline:
            sem.release()
            break
        tasks.append(asyncio.create_task(one()))
        launched += 1
    await asyncio.gather(*tasks)


async def _settle_rss(stack: BenchStack, seconds: float = 2.0) -> float:
    await asyncio.sleep(seconds)
    return stack.worker_rss_mib()


async def main(ps: list[int], park_budget: float, approve_budget: float) -> None:
    log(
        f"{NAME}: park up to {ps} conversations on {TEXT!r} (cumulative), then approve all; "
        f"budgets {park_budget:.0f}s parking, {approve_budget:.0f}s approving"
    )
    async with BenchStack(NAME) as stack:
        rss_start = stack.worker_rss_mib()
        log("  warm-up: park and approve 20 conversations")
        warm = Parked()
        await _park_until(stack, warm, 20, time.monotonic() + 60)
        await asyncio.gather(
            *(stack.api.approve(w, c, approver="bench") for w, c in warm.calls.items())
        )
        rss_idle = await _settle_rss(stack)
        log(f"  idle worker RSS {rss_idle:.1f} MiB (at start {rss_start:.1f} MiB)")
        pids = {"worker": stack.worker_pid, "temporal": stack.temporal_pid, "sim": stack.sim_pid}
        cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}

        parked = Parked()
        checkpoints: list[dict[str, float | int | bool]] = []
        t_park = time.monotonic()
        deadline = t_park + park_budget

        samples: list[tuple[int, float]] = []

        def park_progress() -> str:
            el = time.monotonic() - t_park
            samples.append((len(parked.calls), round(stack.worker_rss_mib(), 1)))
            return (
                f"    parked {len(parked.calls)} ({len(parked.calls) / el:.0f}/s), "
                f"{parked.failed} failed, {el:.0f}s, worker RSS {stack.worker_rss_mib():.0f} MiB"
            )

        async with ticker(5.0, park_progress):
            for p in ps:
                await _park_until(stack, parked, p, deadline)
                rss = await _settle_rss(stack)
                n = len(parked.calls)
                el = time.monotonic() - t_park - 2.0 * (len(checkpoints) + 1)
                cp = {
                    "requested": p,
                    "parked": n,
                    "reached": n >= p,
                    "rss_mib": round(rss, 1),
                    "delta_mib": round(rss - rss_idle, 1),
                    "kib_per_parked": round((rss - rss_idle) * 1024 / n, 1) if n else 0.0,
                    "park_seconds": round(el, 1),
                    "parked_per_s": round(n / el, 1) if el > 0 else 0.0,
                }
                checkpoints.append(cp)
                log(
                    f"  checkpoint P={p}: {n} parked ({'reached' if n >= p else 'BUDGET OUT'})"
                    f", worker RSS {rss:.1f} MiB = idle {cp['delta_mib']:+.1f} MiB"
                )
                if n < p:
                    break
        park_cpu = {k: round(cpu_seconds(v) - cpu0[k], 1) for k, v in pids.items()}
        metrics = await stack.metrics()

        # ---- approve everything, wait for every turn to complete
        total = len(parked.calls)
        done = 0
        failed = 0
        errors: list[str] = []
        decided = 0
        sem = asyncio.Semaphore(IN_FLIGHT)
        t_appr = time.monotonic()
        stop_at = t_appr + approve_budget
        latencies: list[float] = []

        async def approve(wid: str, call_id: str) -> None:
            nonlocal done, failed, decided
            t0 = time.monotonic()
            try:
                await stack.api.approve(wid, call_id, approver="bench")
                decided += 1
                res = await stack.api.wait(wid, 1, wait_for="completion")
                if res.status != "completed":
                    raise RuntimeError(f"turn ended {res.status}: {res.error}")
                done += 1
                latencies.append(time.monotonic() - t0)
            except Exception as e:
                failed += 1
                if len(errors) < 5:
                    errors.append(f"{type(e).__name__}: {e}")
            finally:
                sem.release()

        def appr_progress() -> str:
            el = time.monotonic() - t_appr
            rate = done / el
            return f"    approved {decided}, completed {done}/{total} ({rate:.0f}/s), {el:.0f}s"

        cpu1 = {k: cpu_seconds(v) for k, v in pids.items()}
        tasks: list[asyncio.Task[None]] = []
        async with ticker(5.0, appr_progress):
            for wid, call_id in parked.calls.items():
                await sem.acquire()
                if time.monotonic() >= stop_at:
                    sem.release()
                    break
                tasks.append(asyncio.create_task(approve(wid, call_id)))
            await asyncio.gather(*tasks)
        appr_s = time.monotonic() - t_appr
        appr_cpu = {k: round(cpu_seconds(v) - cpu1[k], 1) for k, v in pids.items()}
        rss_after = stack.worker_rss_mib()
        hwm = stack.worker_hwm_mib()

    cache_size = GenieSettings().max_cached_workflows  # the worker inherits our GENIE_*
    rate = done / appr_s if appr_s else 0.0
    log(f"  approvals: {done} completed of {len(tasks)} launched in {appr_s:.1f}s, {failed} failed")
    for e in parked.errors + errors:
        log(f"    failure: {e}")
    rows: list[list[object]] = []
    met_rss: bool | None = None
    for cp in checkpoints:
        note = "(info)"
        if cp["requested"] == TARGET_RSS_AT:
            if cp["reached"]:
                met_rss = float(cp["delta_mib"]) <= TARGET_RSS_DELTA_MB
                note = f"<= +{TARGET_RSS_DELTA_MB:.0f} MiB: {verdict(met_rss)}"
            else:
                note = f"NOT REACHED: {cp['parked']} parked in the {park_budget:.0f}s budget"
        rows.append(
            [
                f"parked P={cp['requested']}",
                cp["parked"],
                f"{rss_idle:.0f} -> {cp['rss_mib']:.0f} ({float(cp['delta_mib']):+.0f})",
                f"{cp['kib_per_parked']:.0f}",
                f"{cp['parked_per_s']:.1f}/s",
                note,
            ]
        )
    reached = {int(cp["requested"]) for cp in checkpoints}
    for p in ps:
        if p in reached:
            continue
        # Never started: the budget was spent before the previous checkpoint was reached.
        n = len(parked.calls)
        note = "(info)"
        if p == TARGET_RSS_AT:
            note = f"NOT REACHED: budget spent at {n} parked; nothing extrapolated"
        rows.append([f"parked P={p}", "not run", "", "", "", note])
    met_rate = rate >= TARGET_DECISIONS_PER_S
    rows.append(
        [
            "approve all -> completed",
            done,
            f"-> {rss_after:.0f} (VmHWM {hwm:.0f})",
            "",
            f"{rate:.1f}/s",
            f">= {TARGET_DECISIONS_PER_S:.0f}/s: {verdict(met_rate)}",
        ]
    )
    text_table = table(
        f"parked: conversations awaiting approval in one worker (max_cached_workflows "
        f"{cache_size}); idle RSS {rss_idle:.0f} MiB; park p50 {median(parked.latencies):.2f}s",
        ["phase", "n", "worker RSS MiB", "KiB/conv", "rate", "target"],
        rows,
    )
    cache = {k: v for k, v in metrics.items() if "sticky_cache" in k}
    write_result(
        NAME,
        {
            "text": TEXT,
            "requested": ps,
            "park_budget_s": park_budget,
            "approve_budget_s": approve_budget,
            "worker_rss_start_mib": round(rss_start, 1),
            "worker_rss_idle_mib": round(rss_idle, 1),
            "checkpoints": checkpoints,
            "max_cached_workflows": cache_size,
            "rss_samples_parked_mib": samples,
            "park_failed": parked.failed,
            "park_cpu_seconds": park_cpu,
            "approved_completed": done,
            "approve_launched": len(tasks),
            "approve_failed": failed,
            "approve_seconds": round(appr_s, 2),
            "decisions_per_s": round(rate, 1),
            "approve_latency_p50_s": round(median(latencies), 2),
            "approve_cpu_seconds": appr_cpu,
            "worker_rss_after_mib": round(rss_after, 1),
            "worker_vmhwm_mib": round(hwm, 1),
            "failure_samples": parked.errors + errors,
            "sticky_cache_metrics": cache,
            "targets": {
                "rss_delta_mb": TARGET_RSS_DELTA_MB,
                "at_p": TARGET_RSS_AT,
                "decisions_per_s": TARGET_DECISIONS_PER_S,
            },
            "met": {"rss": met_rss, "decisions_per_s": met_rate},
            "cpus": os.cpu_count(),
        },
        text_table,
    )


def cli() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--p", default="1000,5000", help="comma-separated checkpoints (cumulative)")
    p.add_argument("--park-budget", type=float, default=80.0, help="seconds for parking")
    p.add_argument("--approve-budget", type=float, default=20.0, help="seconds for approving")
    a = p.parse_args()
    asyncio.run(main([int(x) for x in a.p.split(",")], a.park_budget, a.approve_budget))


if __name__ == "__main__":
    cli()
