"""Temporal Cloud billable actions per turn and per hour parked, next to the floor's.

Run: ``.venv/bin/python -m bench.actions [--window 50]``

Each case runs alone on the stack (nothing else in flight), on a conversation that has
had a warm-up turn, and is counted two ways:

- **from history**: the events the case added, by Temporal's rules (``bench._actions``),
  plus **heartbeats**, which are not in history: the server's own count of
  ``RecordActivityTaskHeartbeat`` calls (its ``service_requests`` counter), i.e. only
  the heartbeats that reached the server after the SDK's throttling;
- **the server's ``action`` counter** (self-hosted Temporal counts actions by type too),
  as a cross-check of the total.

Cases: a plain turn (3 SSE events, and a 3 s stream of 153), an approval turn (ask,
approve, wait), a connection turn (ask, the user opens the auth link, connect_done,
wait), the first turn of a new conversation, and ``--window`` seconds of an idle
conversation, one parked on an approval and one parked on a connection (measured
together, each from its own history; the heartbeats of that window are all the
connection's, the only one with activities). Per hour parked is the window scaled to an
hour, plus the pending timers that would fire within it; for a connection, the probe
schedule (``connection_poll_interval`` doubling to 5 min) sets the count of probes in
the first hour. Floors: (a) one update running one activity, (b) the same with a local
activity, (c) one signal running one activity, then the workflow completes.

Targets: <= 6 actions per plain turn; 0 per hour parked.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError, RPCStatusCode

from bench._actions import ORDER, actions_in, billable_total, pending_timers
from bench._floor import FLOOR_TASK_QUEUE, FloorDecision, park_bare
from bench._stack import GENIE, USER, BenchStack, log, table, verdict, write_result
from workflows._backoff import MAX_CONNECTION_POLL, probe_offsets
from workflows.models import ConversationPolicy

NAME = "actions"
TARGET_PLAIN = 6
TARGET_PARKED_PER_HOUR = 0
HEARTBEAT = "activity heartbeat"


async def _events(stack: BenchStack, wid: str, *, may_not_exist: bool = False) -> list[Any]:
    try:
        return list((await stack.client.get_workflow_handle(wid).fetch_history()).events)
    except RPCError as e:
        if may_not_exist and e.status == RPCStatusCode.NOT_FOUND:
            return []  # a case that starts the workflow
        raise


def _diff(a: dict[str, float], b: dict[str, float]) -> dict[str, int]:
    return {k: round(v - a.get(k, 0.0)) for k, v in b.items() if round(v - a.get(k, 0.0))}


async def _case(
    stack: BenchStack, name: str, wids: list[str], body: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """Run ``body`` alone; what it added to each workflow's history, and the heartbeats
    and server-counted actions meanwhile."""
    before = {w: len(await _events(stack, w, may_not_exist=True)) for w in wids}
    m0 = await stack.server_metrics()
    t0 = time.monotonic()
    await body()
    took = time.monotonic() - t0
    m1 = await stack.server_metrics()
    per_wf: dict[str, Counter[str]] = {}
    types: Counter[str] = Counter()
    timers: dict[str, list[float]] = {}
    for w in wids:
        evs = await _events(stack, w)
        added = evs[before.get(w, 0) :]
        per_wf[w] = actions_in(added)
        types.update(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in added)
        timers[w] = pending_timers(evs)
    counts: Counter[str] = Counter()
    for c in per_wf.values():
        counts.update(c)
    rpc = _diff(m0["service_requests"], m1["service_requests"])
    heartbeats = rpc.get("RecordActivityTaskHeartbeat", 0)
    if heartbeats:
        counts[HEARTBEAT] = heartbeats
    server = _diff(m0["action"], m1["action"])
    row = {
        "case": name,
        "seconds": round(took, 2),
        "actions": dict(counts),
        "total": billable_total(counts),
        "server_action_counter": server,
        "server_action_total": sum(server.values()),
        "history_event_types": dict(types),
        "pending_timers_s": timers,
        "per_workflow": {w: dict(c) for w, c in per_wf.items()},
    }
    log(f"  {name}: {row['total']} actions {dict(counts)} (server counter {sum(server.values())})")
    return row


def _probes_in_first_hour(policy: ConversationPolicy) -> int:
    """Probe ticks of a pending connection within an hour (or its timeout, if sooner)."""
    horizon = min(timedelta(hours=1), policy.connection_timeout)
    return len(probe_offsets(policy.connection_poll_interval, horizon))


async def _warm(stack: BenchStack, prefix: str) -> str:
    wid = stack.new_id(prefix)
    res = await stack.api.ask(wid, "hello", start_with=(GENIE, USER))
    assert res.status == "completed", res
    return wid


async def main(window: float) -> None:
    log(f"{NAME}: billable actions per case, from history + heartbeat RPCs; window {window}s")
    rows: list[dict[str, Any]] = []
    async with BenchStack(NAME) as stack:
        api = stack.api

        async def completed(coro: Awaitable[Any]) -> Any:
            res = await coro
            if getattr(res, "status", "completed") != "completed":
                raise RuntimeError(f"turn ended {res.status}: {res.error}")
            return res

        # ---- turns
        wid = await _warm(stack, "plain")
        rows.append(await _case(stack, "plain turn, 3 SSE events", [wid],
                                lambda: completed(api.ask(wid, "hello"))))  # fmt: skip
        rows.append(await _case(stack, "plain turn, 153 SSE events over ~3 s", [wid],
                                lambda: completed(api.ask(wid, "delay:20 steps:150"))))  # fmt: skip

        wid_a = await _warm(stack, "approval")

        async def approval_turn() -> None:
            res = await api.ask(wid_a, "please confirm:send_email")
            assert res.status == "awaiting_approval", res
            call_id = res.pending.approvals[0].call_id
            rec = await api.approve(wid_a, call_id, approver="bench", wait_for="completion")
            assert rec.result is not None and rec.result.status == "completed", rec

        rows.append(
            await _case(stack, "approval turn (ask, approve, wait)", [wid_a], approval_turn)
        )

        wid_c = await _warm(stack, "connection")

        async def connection_turn() -> None:
            res = await api.ask(wid_c, "connect:jira")
            assert res.status == "awaiting_connection", res
            conn = res.pending.connections[0]
            assert conn.auth_url, conn
            async with httpx.AsyncClient(timeout=10) as h:
                (await h.get(conn.auth_url)).raise_for_status()
            await api.connect_done(wid_c, conn.attempt_id, actor="bench")
            await completed(api.wait(wid_c, res.turn, wait_for="completion"))

        rows.append(await _case(stack, "connection turn (ask, link, done, wait)", [wid_c],
                                connection_turn))  # fmt: skip

        wid_f = stack.new_id("first")

        def first() -> Awaitable[Any]:
            return completed(api.ask(wid_f, "hello", start_with=(GENIE, USER)))

        rows.append(await _case(stack, "first turn of a new conversation", [wid_f], first))

        # ---- floors
        fa, fb = stack.new_id("floor-a"), stack.new_id("floor-b")
        ca = (await stack.floor_turn(fa, None, "hello")).conversation_id
        cb = (await stack.floor_turn(fb, None, "hello", local=True)).conversation_id
        rows.append(await _case(stack, "floor (a): update -> activity", [fa],
                                lambda: stack.floor_turn(fa, ca, "hello")))  # fmt: skip
        rows.append(await _case(stack, "floor (b): update -> local activity", [fb],
                                lambda: stack.floor_turn(fb, cb, "hello", local=True)))  # fmt: skip
        park = await park_bare(stack.genie)
        fc = stack.new_id("floor-c")
        handle = await stack.client.start_workflow(
            FloorDecision.run, park, id=fc, task_queue=FLOOR_TASK_QUEUE
        )

        async def floor_decide() -> None:
            await handle.signal(FloorDecision.decide)
            await handle.result()

        rows.append(await _case(stack, "floor (c): signal -> activity -> complete", [fc],
                                floor_decide))  # fmt: skip

        # ---- parked and idle, one window
        wid_i = await _warm(stack, "idle")
        wid_pa = await _warm(stack, "parked-approval")
        pa = await api.ask(wid_pa, "please confirm:send_email")
        assert pa.status == "awaiting_approval", pa
        wid_pc = await _warm(stack, "parked-connection")
        pc = await api.ask(wid_pc, "connect:jira")
        assert pc.status == "awaiting_connection", pc
        log(f"  parked and idle: watching for {window:.0f}s")
        win = await _case(stack, f"window of {window:.0f}s", [wid_i, wid_pa, wid_pc],
                          lambda: asyncio.sleep(window))  # fmt: skip
        await api.approve(wid_pa, pa.pending.approvals[0].call_id, approver="bench")
        await api.connect_reject(wid_pc, pc.pending.connections[0].attempt_id, actor="bench")

    policy = ConversationPolicy()
    probes_per_hour = _probes_in_first_hour(policy)
    hourly: list[dict[str, Any]] = []
    for label, w in (("idle conversation", wid_i), ("parked on an approval", wid_pa),
                     ("parked on a connection", wid_pc)):  # fmt: skip
        counts = Counter(win["per_workflow"][w])
        if w == wid_pc and win["actions"].get(HEARTBEAT):
            counts[HEARTBEAT] = win["actions"][HEARTBEAT]
        in_window = billable_total(counts)
        timers = win["pending_timers_s"][w]
        firing = sum(1 for s in timers if s <= 3600)
        if w == wid_pc:
            ticks = max(1, counts.get("timer started", 0))
            per_tick = in_window / ticks if in_window else 0.0
            per_hour = round(per_tick * probes_per_hour)
            how = (
                f"{in_window} actions in {ticks} probe(s) of the window = {per_tick:.1f} per "
                f"probe x {probes_per_hour} probes in the first hour"
                f" ({policy.connection_poll_interval.total_seconds():.0f}s doubling to "
                f"{MAX_CONNECTION_POLL.total_seconds():.0f}s)"
            )
        else:
            per_hour = round(in_window * 3600 / window) + firing
            how = (
                f"{in_window} in {window:.0f}s, pending timers "
                f"{', '.join(f'{s:.0f}s' for s in timers) or 'none'}"
            )
        hourly.append({"case": label, "in_window": dict(counts), "per_hour": per_hour,
                       "how": how, "pending_timers_s": timers})  # fmt: skip

    # ---- the table
    names = [n for n in ORDER if any(n in r["actions"] for r in rows)]
    by = {r["case"]: r for r in rows}
    plain = by["plain turn, 3 SSE events"]
    met_plain = plain["total"] <= TARGET_PLAIN
    parked_row = next(h for h in hourly if h["case"] == "parked on an approval")
    met_parked = parked_row["per_hour"] <= TARGET_PARKED_PER_HOUR
    t_rows: list[list[object]] = []
    for r in rows:
        target = ""
        if r is plain:
            target = f"<= {TARGET_PLAIN}: {verdict(met_plain)}"
        t_rows.append(
            [r["case"], *(r["actions"].get(n, "") for n in names), r["total"],
             r["server_action_total"], target]
        )  # fmt: skip
    short = {
        "workflow started": "start",
        "update": "update",
        "signal": "signal",
        "activity attempt": "activity",
        "markers (per workflow task)": "markers",
        "timer started": "timer",
        "search-attribute upsert": "SA upsert",
        "child workflow": "child",
        "workflow options updated": "options",
        HEARTBEAT: "heartbeat",
    }
    text = table(
        "actions: Temporal Cloud billable actions per case (history + heartbeat RPCs)",
        ["case", *(short[n] for n in names), "total", "server counter", "target"],
        t_rows,
    )
    h_rows = []
    for h in hourly:
        target = ""
        if h["case"] == "parked on an approval":
            target = f"{TARGET_PARKED_PER_HOUR}/h: {verdict(met_parked)}"
        elif h["case"] == "parked on a connection":
            target = f"{TARGET_PARKED_PER_HOUR}/h: {verdict(h['per_hour'] == 0)}"
        h_rows.append([h["case"], h["per_hour"], h["how"], target])
    text += "\n\n" + table(
        f"actions per hour, idle or parked (a {window:.0f}s window, scaled)",
        ["conversation", "actions/h", "from", "target"],
        h_rows,
    )
    cuts = _cuts(plain, by, hourly)
    text += "\n\nwhat would cut the rest:\n" + "\n".join(f"  - {c}" for c in cuts)
    write_result(
        NAME,
        {
            "window_s": window,
            "cases": rows,
            "window": win,
            "per_hour": hourly,
            "probes_in_first_hour": probes_per_hour,
            "targets": {"plain_turn": TARGET_PLAIN, "parked_per_hour": TARGET_PARKED_PER_HOUR},
            "met": {"plain_turn": met_plain, "parked_per_hour": met_parked},
            "cuts": cuts,
            "rules": "https://docs.temporal.io/cloud/actions",
        },
        text,
    )


def _cuts(
    plain: dict[str, Any], by: dict[str, dict[str, Any]], hourly: list[dict[str, Any]]
) -> list[str]:
    """What the counts say could go, with the numbers (workflow changes are not ours)."""
    a = plain["actions"]
    out = []
    upserts = a.get("search-attribute upsert", 0)
    if upserts:
        out.append(
            f"plain turn: {upserts} search-attribute upsert(s); a turn shorter than the "
            f"policy's running_shown_after should write none (GenieState shows running "
            f"only if it lasts): look for the transition that still upserts"
        )
    long_upserts = by["plain turn, 153 SSE events over ~3 s"]["actions"].get(
        "search-attribute upsert", 0
    )
    if long_upserts:
        out.append(
            f"plain turn over ~3 s: {long_upserts} search-attribute upserts (GenieState "
            f"running once it lasts the policy's running_shown_after, then idle): the "
            f"price of ops finding long and stuck turns in visibility"
        )
    hb = a.get(HEARTBEAT, 0)
    long_hb = by["plain turn, 153 SSE events over ~3 s"]["actions"].get(HEARTBEAT, 0)
    if hb:
        out.append(
            f"plain turn: {hb} heartbeat(s) on a 3-event stream, {long_hb} on a 3 s one: the "
            f"SDK sends the first heartbeat at once and then one per throttle interval "
            f"(worker.py: 1 s). Heartbeating only once a segment has run longer than the "
            f"interval (none for a turn under 1 s) saves {hb} per short turn; a throttle at "
            f"the SDK default (8 s) would cut the 3 s turn to 1"
        )
    timers = a.get("timer started", 0)
    shown_after = ConversationPolicy().running_shown_after.total_seconds()
    if timers:
        out.append(
            f"plain turn: {timers} timer(s) started: the one that would show GenieState "
            f"running if the turn lasted (the policy's running_shown_after, {shown_after:.0f} "
            f"s by default), cancelled when it ends; one action in place of the two upserts "
            f"it replaced, and no visibility write"
        )
    local = by["floor (b): update -> local activity"]["total"]
    floor_a = by["floor (a): update -> activity"]["total"]
    out.append(
        f"floors: an update running one activity costs {floor_a}, with a local activity "
        f"{local}: a fast path as a local activity costs the same as the regular activity "
        f"but no heartbeats"
    )
    for h in hourly:
        if h["per_hour"]:
            out.append(
                f"{h['case']}: {h['per_hour']} per hour ({h['how']}); each probe is a timer "
                f"and an activity. Probing only while someone waits, or a longer first "
                f"interval, is the lever"
            )
    return out


def cli() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--window", type=float, default=50.0, help="seconds parked/idle to watch")
    a = p.parse_args()
    asyncio.run(main(a.window))


if __name__ == "__main__":
    cli()
