"""SIGKILL the worker mid-stream, restart it, and time until the turn completes anyway.

Run: ``.venv/bin/python -m bench.recovery [--runs 10] [--kill-after 1.0]``

Each run: a new conversation gets ``delay:20 steps:150`` (153 SSE events over ~3 s); once
the stream is ``--kill-after`` seconds in, the worker subprocess is SIGKILLed (no
shutdown hook runs, nothing checkpoints) and a new one is started at once. We then wait
for the turn (``wait_turn``, ``completion``) and check that the reply has every text
exactly once. The pending activity is polled (``describe``) to split the time into:

- **detect**: kill -> the server times the dead attempt out and starts the retry on the
  new worker. The floor is ``STREAM_HEARTBEAT_TIMEOUT`` (10 s) counted from the last
  heartbeat the *server* saw: the SDK throttles heartbeats to 80 % of the timeout (8 s),
  so the server's view is 0-8 s old at the kill. Then the retry's 1 s initial interval.
- **resume**: the retry re-attaches to the run from its heartbeat cursor (E8) and
  finishes; the simulator kept running the genie meanwhile, so this is mostly replay.

Worker start-up (spawn -> metrics endpoint up) runs in parallel with detection.

The floor is Temporal's own detection, per run: the heartbeat timeout minus the age of
the server's last heartbeat at the kill, plus the retry's 1 s initial interval (what any
heartbeating activity with these settings waits before another worker may retry it).

Target: p50 <= 15 s with default settings.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState

from bench._stack import GENIE, USER, BenchStack, log, median, pct, table, verdict, write_result
from workflows.conversation import STREAM_HEARTBEAT_TIMEOUT

NAME = "recovery"
STEPS = 150
DELAY_MS = 20
TARGET_P50_S = 15.0


async def _stream_activity(stack: BenchStack, wid: str) -> Any:
    desc = await stack.api.handle(wid).describe()
    for pa in desc.raw_description.pending_activities:
        if pa.activity_type.name == "stream_segment":
            return pa
    return None


async def _one(stack: BenchStack, i: int, kill_after: float) -> dict[str, Any]:
    wid = stack.new_id("r")
    text = f"delay:{DELAY_MS} steps:{STEPS}"
    acc = await stack.api.send(wid, text, start_with=(GENIE, USER))
    # Wait until the stream activity is running, then let it stream a while.
    t_wait = time.monotonic()
    while True:
        pa = await _stream_activity(stack, wid)
        if pa is not None and pa.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
            break
        if time.monotonic() - t_wait > 30:
            raise RuntimeError(f"run {i}: the stream activity never started")
        await asyncio.sleep(0.05)
    t_stream = time.monotonic()
    await asyncio.sleep(kill_after)
    pa = await _stream_activity(stack, wid)
    hb_age = None
    if pa is not None and pa.HasField("last_heartbeat_time"):
        hb = pa.last_heartbeat_time.ToDatetime().replace(tzinfo=UTC)
        hb_age = (datetime.now(UTC) - hb).total_seconds()
    t_kill = time.monotonic()
    kill_wall = datetime.now(UTC)
    stack.kill_worker()
    restart = asyncio.create_task(stack.start_worker())
    # Watch the pending activity for the server timing the dead attempt out (attempt 2).
    t_timeout = None
    waiter = asyncio.create_task(stack.api.wait(wid, acc.turn, wait_for="completion"))
    while not waiter.done():
        pa = await _stream_activity(stack, wid)
        if t_timeout is None and pa is not None and pa.attempt > 1:
            t_timeout = time.monotonic()
        await asyncio.wait({waiter}, timeout=0.05)
    res = waiter.result()
    t_done = time.monotonic()
    startup = await restart
    # The retry's start and the completion, from the server's event times.
    retry_started = completed = None
    for e in (await stack.api.handle(wid).fetch_history()).events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            if e.activity_task_started_event_attributes.attempt > 1:
                retry_started = e.event_time.ToDatetime().replace(tzinfo=UTC)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED and retry_started:
            completed = e.event_time.ToDatetime().replace(tzinfo=UTC)
    expected = [f"step {k} of {STEPS}" for k in range(1, STEPS + 1)]
    ok = res.status == "completed" and res.messages[:-1] == expected

    def since_kill(at: datetime | None) -> float | None:
        return round((at - kill_wall).total_seconds(), 2) if at else None

    row = {
        "run": i,
        "recovery_s": round(t_done - t_kill, 2),
        "timed_out_s": round(t_timeout - t_kill, 2) if t_timeout else None,
        "retry_started_s": since_kill(retry_started),
        "activity_completed_s": since_kill(completed),
        "worker_startup_s": round(startup, 2),
        "server_heartbeat_age_at_kill_s": round(hb_age, 2) if hb_age is not None else None,
        "streamed_before_kill_s": round(t_kill - t_stream, 2),
        "status": res.status,
        "texts_exactly_once": ok,
    }
    log(
        f"  run {i + 1}: completed {row['recovery_s']:.2f}s after the kill (attempt timed "
        f"out at {row['timed_out_s']}s, retry started {row['retry_started_s']}s, activity "
        f"done {row['activity_completed_s']}s; worker up in {row['worker_startup_s']}s; "
        f"server's heartbeat {row['server_heartbeat_age_at_kill_s']}s old at kill), "
        f"{res.status}, texts exactly once: {ok}"
    )
    return row


async def main(runs: int, kill_after: float) -> None:
    log(
        f"{NAME}: {runs} runs of SIGKILL {kill_after:.1f}s into a {STEPS + 3}-event stream "
        f"(delay:{DELAY_MS} steps:{STEPS}); heartbeat timeout "
        f"{STREAM_HEARTBEAT_TIMEOUT.total_seconds():.0f}s"
    )
    rows: list[dict[str, Any]] = []
    async with BenchStack(NAME) as stack:
        await stack.api.ask(stack.new_id("warm"), "hello", start_with=(GENIE, USER))
        for i in range(runs):
            rows.append(await _one(stack, i, kill_after))

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in rows if r[key] is not None]

    def stats(xs: list[float]) -> list[object]:
        if not xs:
            return ["-", "-", "-"]
        return [f"{median(xs):.2f}", f"{pct(xs, 0.95):.2f}", f"{min(xs):.2f}-{max(xs):.2f}"]

    rec = col("recovery_s")
    hb_timeout = STREAM_HEARTBEAT_TIMEOUT.total_seconds()
    floor = [hb_timeout - r["server_heartbeat_age_at_kill_s"] + 1.0 for r in rows
             if r["server_heartbeat_age_at_kill_s"] is not None]  # fmt: skip
    bad = sum(1 for r in rows if not r["texts_exactly_once"])
    met = median(rec) <= TARGET_P50_S and bad == 0
    t_rows: list[list[object]] = [
        ["server's last heartbeat, age at kill", *stats(col("server_heartbeat_age_at_kill_s")),
         "SDK sends <= 1 per 0.8 x timeout"],
        ["kill -> attempt timed out", *stats(col("timed_out_s")),
         f"{hb_timeout:.0f}s - heartbeat age"],
        ["kill -> retry started", *stats(col("retry_started_s")), "+ 1s retry interval"],
        ["kill -> activity completed", *stats(col("activity_completed_s")),
         "resume from cursor (E8)"],
        ["kill -> turn completed (wait_turn)", *stats(rec),
         f"p50 <= {TARGET_P50_S:.0f}s: {verdict(met)}"],
        ["floor: timeout - heartbeat age + 1s retry", *stats(floor),
         f"turn completed / floor, p50: {median(rec) / median(floor):.2f}x" if floor else ""],
        ["worker start-up (in parallel)", *stats(col("worker_startup_s")), ""],
        ["turns with every text exactly once", f"{runs - bad}/{runs}", "", "", ""],
    ]  # fmt: skip
    text_table = table(
        f"recovery: SIGKILL of the worker {kill_after:.1f}s into a stream, seconds "
        f"(n={runs}, STREAM_HEARTBEAT_TIMEOUT={STREAM_HEARTBEAT_TIMEOUT.total_seconds():.0f}s)",
        ["phase", "p50", "p95", "range", "target / note"],
        t_rows,
    )
    write_result(
        NAME,
        {
            "steps": STEPS,
            "delay_ms": DELAY_MS,
            "kill_after_s": kill_after,
            "heartbeat_timeout_s": STREAM_HEARTBEAT_TIMEOUT.total_seconds(),
            "runs": rows,
            "recovery_p50_s": round(median(rec), 2),
            "recovery_p95_s": round(pct(rec, 0.95), 2),
            "floor_p50_s": round(median(floor), 2) if floor else None,
            "ratio_to_floor": round(median(rec) / median(floor), 3) if floor else None,
            "target_p50_s": TARGET_P50_S,
            "met": met,
        },
        text_table,
    )


def cli() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--kill-after", type=float, default=1.0, help="seconds into the stream")
    a = p.parse_args()
    asyncio.run(main(a.runs, a.kill_after))


if __name__ == "__main__":
    cli()
