"""How the simulator copes with many concurrent SSE streams.

Starts ``python -m genie_sim`` on a free port and creates N conversations. Each then
sends ``confirm:go delay:<ms> steps:<k>`` with ``stream: true``, so every stream first
pauses on its confirmation card: once all N streams are open at the same time (the
barrier), every call is approved and the N runs stream their ``steps`` concurrently. All
events are consumed with httpx + httpx-sse in this one event loop.

Prints progress, a summary table, and writes ``bench/results/sim_concurrency.json``.

Run: ``.venv/bin/python -m bench.sim_concurrency [--streams 500] [--steps 20] [--delay-ms 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from bench._stack import cpu_seconds, proc_status_kib
from genie_stack import Simulator

if importlib.util.find_spec("sniffio") is None:
    # httpcore retries `import sniffio` on every lock it creates when sniffio is absent
    # (encode/httpcore#1103) and failed imports are not cached: that alone made the
    # client, not the simulator, the bottleneck. A None entry makes the import fail fast;
    # httpcore then assumes asyncio, exactly as it would have.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "sim_concurrency.json"
API_KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {API_KEY}", "X-IDP-User-Id": "bench-user"}
STREAMS_PER_CLIENT = 10
"""httpcore's pool does O(requests x connections) work per request; small pools avoid it."""


class Gate:
    """Lets every stream through once all of them have paused (or failed before pausing)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.release = asyncio.Event()

    def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.total:
            self.all_arrived.set()


@dataclass
class Tally:
    """Counters shared by the stream tasks (and read by the progress thread)."""

    created: int = 0
    opened: int = 0
    paused: int = 0
    approved: int = 0
    completed: int = 0
    events: int = 0
    pings: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    peak_open_streams: int = 0

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)


def report_progress(sim_url: str, tally: Tally, started: float, stop: threading.Event) -> None:
    """Print progress every second from a thread, so a busy event loop cannot delay it."""
    with httpx.Client(timeout=5) as admin:
        while not stop.wait(1.0):
            try:
                open_now = int(admin.get(f"{sim_url}/_sim/stats").json()["open_streams"])
                tally.peak_open_streams = max(tally.peak_open_streams, open_now)
            except httpx.HTTPError:
                open_now = -1
            print(
                f"  t={time.monotonic() - started:5.1f}s created={tally.created:4d} "
                f"open={tally.opened:4d} paused={tally.paused:4d} approved={tally.approved:4d} "
                f"completed={tally.completed:4d} events={tally.events:6d} "
                f"server_open_streams={open_now:4d} errors={tally.errors}",
                flush=True,
            )


async def one_stream(
    client: httpx.AsyncClient,
    base: str,
    message: str,
    expected: int,
    gate: Gate,
    tally: Tally,
) -> None:
    """Create a conversation, stream one run through its confirmation, count its events."""
    arrived = False
    try:
        r = await client.post(f"{base}/conversations", headers=HEADERS, json={})
        r.raise_for_status()
        cid = r.json()["conversation_id"]
        tally.created += 1
        url = f"{base}/conversations/{cid}/messages"
        body = {"message": message, "stream": True}
        async with aconnect_sse(client, "POST", url, headers=dict(HEADERS), json=body) as source:
            if source.response.status_code != 200:
                tally.error(f"status {source.response.status_code}")
                return
            tally.opened += 1
            seen = 0
            last = ""
            async for sse in source.aiter_sse():
                if sse.event == "system.ping":
                    tally.pings += 1
                    continue
                seen += 1
                tally.events += 1
                last = sse.event
                if sse.event == "skill.confirmation_required":
                    tally.paused += 1
                    arrived = True
                    gate.arrive()
                    await gate.release.wait()
                    call_id = json.loads(sse.data)["call_id"]
                    decision = await client.post(
                        f"{base}/conversations/{cid}/skill_approval/{call_id}",
                        headers=HEADERS,
                        json={"resolution": "approved"},
                    )
                    decision.raise_for_status()
                    tally.approved += 1
        if last == "processing.finished" and seen == expected:
            tally.completed += 1
        else:
            tally.error(f"stream ended after {seen}/{expected} events, last {last!r}")
    except (httpx.HTTPError, ValueError, KeyError) as e:
        tally.error(f"{type(e).__name__}: {e}")
    finally:
        if not arrived:
            gate.arrive()


async def run(
    streams: int, steps: int, delay_ms: int, sim_url: str, sim_pid: int, tally: Tally
) -> dict[str, float]:
    """Run the benchmark; returns phase timings and measurements taken at the barrier."""
    base = f"{sim_url}/api/v1/genies/gin-bench/chat"
    message = f"confirm:go delay:{delay_ms} steps:{steps}"
    # started, confirmation_required, running, completed, k steps, final reply, finished
    expected = 2 + 2 + steps + 2
    shards = max(1, streams // STREAMS_PER_CLIENT)
    per_client = -(-streams // shards) + 2
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    timeout = httpx.Timeout(60.0, connect=30.0, pool=60.0)
    tls = ssl.create_default_context()  # unused over http://, but built once, not per client
    clients = [httpx.AsyncClient(limits=limits, timeout=timeout, verify=tls) for _ in range(shards)]
    gate = Gate(streams)
    started = time.monotonic()
    tasks = [
        asyncio.create_task(one_stream(clients[i % shards], base, message, expected, gate, tally))
        for i in range(streams)
    ]
    measured: dict[str, float] = {}
    try:
        await gate.all_arrived.wait()
        measured["open_seconds"] = time.monotonic() - started
        async with httpx.AsyncClient(timeout=10) as admin:
            stats = (await admin.get(f"{sim_url}/_sim/stats")).json()
        measured["open_streams_at_barrier"] = stats["open_streams"]
        measured["rss_at_barrier_kib"] = proc_status_kib(sim_pid, "VmRSS")
        print(
            f"  barrier: {stats['open_streams']} streams open on the simulator after "
            f"{measured['open_seconds']:.2f}s; simulator RSS "
            f"{measured['rss_at_barrier_kib'] / 1024:.1f} MiB",
            flush=True,
        )
        released = time.monotonic()
        gate.release.set()
        await asyncio.gather(*tasks)
        measured["stream_seconds"] = time.monotonic() - released
    finally:
        measured["wall_seconds"] = time.monotonic() - started
        for client in clients:
            await client.aclose()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--delay-ms", type=int, default=50)
    args = parser.parse_args()

    sim = Simulator(api_key=API_KEY)
    sim.start_sync(within=20)
    sim_url = sim.base_url
    print(
        f"simulator pid {sim.pid} on {sim_url}; {args.streams} streams of "
        f"'confirm:go delay:{args.delay_ms} steps:{args.steps}'",
        flush=True,
    )
    tally = Tally()
    stop = threading.Event()
    reporter = threading.Thread(
        target=report_progress, args=(sim_url, tally, time.monotonic(), stop), daemon=True
    )
    reporter.start()
    try:
        cpu_before = cpu_seconds(sim.pid)
        measured = asyncio.run(
            run(args.streams, args.steps, args.delay_ms, sim_url, sim.pid, tally)
        )
        sim_cpu = cpu_seconds(sim.pid) - cpu_before
        rss_kib = proc_status_kib(sim.pid, "VmHWM")
    finally:
        stop.set()
        reporter.join()
        sim.stop()

    expected_events = args.streams * (args.steps + 6)
    wall = measured["wall_seconds"]
    result = {
        "streams_requested": args.streams,
        "message": f"confirm:go delay:{args.delay_ms} steps:{args.steps}",
        "streams_opened": tally.opened,
        "streams_completed": tally.completed,
        "open_streams_at_barrier": int(measured.get("open_streams_at_barrier", 0)),
        "events_received": tally.events,
        "events_expected": expected_events,
        "pings_received": tally.pings,
        "wall_seconds": round(wall, 3),
        "open_all_seconds": round(measured.get("open_seconds", 0.0), 3),
        "stream_after_barrier_seconds": round(measured.get("stream_seconds", 0.0), 3),
        "events_per_second": round(tally.events / wall, 1) if wall else 0.0,
        "sim_cpu_seconds": round(sim_cpu, 2),
        "sim_rss_at_barrier_mib": round(measured.get("rss_at_barrier_kib", 0) / 1024, 1),
        "sim_peak_rss_mib": round(rss_kib / 1024, 1),
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    rows = [
        ("streams opened", f"{tally.opened} / {args.streams}"),
        ("open at once (server, at barrier)", f"{result['open_streams_at_barrier']}"),
        ("streams completed", f"{tally.completed}"),
        ("events received", f"{tally.events} / {expected_events}"),
        ("wall time", f"{wall:.2f} s"),
        ("  opening all streams", f"{result['open_all_seconds']:.2f} s"),
        ("  streaming after approval", f"{result['stream_after_barrier_seconds']:.2f} s"),
        ("simulator CPU time", f"{result['sim_cpu_seconds']:.2f} s"),
        ("simulator peak RSS (VmHWM)", f"{result['sim_peak_rss_mib']} MiB"),
        ("errors", f"{tally.errors}"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    for sample in tally.error_samples:
        print(f"  error: {sample}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")
    if tally.errors or tally.completed != args.streams:
        sys.exit(1)


if __name__ == "__main__":
    main()
