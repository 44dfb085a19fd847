"""Real processes for the fault suite, and the checks every fault case ends with.

The suite exists to show that durability holds against the real thing, so nothing here is
a test double: ``genie_stack``'s Temporal dev server on a SQLite file (``DevServer``,
restartable on the same file), the simulator, the worker as a child process
(``WorkerProcess``: SIGKILL, SIGTERM, restart) with its output captured to a file, and,
test-only, a small TCP proxy between the worker and the simulator that can withhold the
answer to one request (the only way to place a crash *after* the API accepted a message
but *before* the worker learned anything about it).

Waiting is always a bounded poll of a condition (``wait_until``), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from temporalio.api.enums.v1 import TimeoutType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client

from genie_api import GenieClient, Message
from genie_stack import TemporalDevServer, free_port
from genie_stack import WorkerProcess as WorkerProcess
from genie_stack import connect as connect
from genie_stack import worker_env as stack_worker_env
from geniectl import GenieConversations
from tests.services import REPO_ROOT, SIM_API_KEY, SimProcess
from workflows import ConversationPolicy, TurnRecord, TurnResult
from workflows.search_attributes import GENIE_CONVERSATION_ID, GENIE_STATE

T = TypeVar("T")

DevServer = TemporalDevServer
"""The Temporal dev server as the fault modules know it (``db_path=`` for a SQLite file)."""

GENIE = "gin-faults"
USER = "fault-user"
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "faults.json"
"""Observed outcomes of the last run (git-ignored); ``python -m tests.faults.report``
renders them into ``docs/fault-tolerance.md``."""

SILENCE_CHECK_SECONDS = 2.0
"""The worker's ``GENIE_STREAM_SILENCE_CHECK_SECONDS``: short, so E3 checks happen in tests."""
GRACEFUL_SHUTDOWN_SECONDS = 5.0
QUERY_EVERY = 0.1
"""Poll interval for workflow queries: each is a task for the worker, which serves every
case of a module at once on two cores, so they are polled gently."""


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    within: float = 30.0,
    what: str = "condition",
    every: float = 0.02,
) -> T:
    """Poll ``probe`` until ``check`` holds; fail with the last value after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(every)


# ---------------------------------------------------------------------- the proxy


class HoldingProxy:
    """A loopback TCP proxy (worker -> simulator) that can withhold one request's answer.

    ``hold(marker)`` makes the proxy forward a request whose bytes contain ``marker`` to
    the simulator (so the API performs it) and then drop everything the simulator sends
    back on that connection. The worker is left waiting for an answer that never comes:
    the API has accepted its message, and the worker has learned nothing, not even the
    run id. It runs on its own thread so the tests' event loop can never delay traffic.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._markers: set[bytes] = set()
        self.held: set[bytes] = set()
        """Markers whose request has been seen (and whose answer is being withheld)."""
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="holding-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HoldingProxy:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def hold(self, marker: bytes) -> None:
        with self._lock:
            self._markers.add(marker)

    def release(self, marker: bytes) -> None:
        """Stop matching ``marker`` (connections already held stay held until closed)."""
        with self._lock:
            self._markers.discard(marker)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
            self._started.set()

        self._loop.run_until_complete(boot())
        self._loop.run_forever()

    def _match(self, data: bytes) -> bytes | None:
        with self._lock:
            for m in self._markers:
                if m in data:
                    self.held.add(m)
                    return m
        return None

    async def _connection(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            cw.close()
            return
        held = False

        async def up() -> None:
            nonlocal held
            tail = b""
            while data := await cr.read(65536):
                # Decide before forwarding, so no byte of the answer can slip through.
                if not held and self._match(tail + data) is not None:
                    held = True
                tail = data[-1024:]
                uw.write(data)
                await uw.drain()

        async def down() -> None:
            while data := await ur.read(65536):
                if held:
                    continue  # the simulator answered; the worker never hears it
                cw.write(data)
                await cw.drain()

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (uw, cw):
            w.close()


# ---------------------------------------------------------------------- the stack


@dataclass
class Conversation:
    """A conversation started by a case: its workflow id and the API's conversation id."""

    wid: str
    conversation_id: str


@dataclass(frozen=True)
class ActivityAttempt:
    activity: str
    attempt: int
    previous_failure: str | None


def _failure_kind(failure: Failure) -> str:
    """``GenieRateLimited``, ``WorkerShutdown``, ``timeout:heartbeat``, …"""
    if failure.HasField("application_failure_info") and failure.application_failure_info.type:
        return failure.application_failure_info.type
    if failure.HasField("timeout_failure_info"):
        name = TimeoutType.Name(failure.timeout_failure_info.timeout_type)
        return "timeout:" + name.removeprefix("TIMEOUT_TYPE_").lower()
    return failure.message[:80]


@dataclass
class Observation:
    case: str
    outcome: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultStack:
    """Everything a fault case needs, shared by the whole session (starting it is slow)."""

    sim: SimProcess
    proxy: HoldingProxy
    temporal: DevServer
    worker: WorkerProcess
    client: Client
    api: GenieConversations
    genie: GenieClient
    """Straight to the simulator (not through the proxy): the ground truth (E3, E6)."""
    attachments: Path
    observations: dict[str, Observation] = field(default_factory=dict)

    @property
    def worker_task_queue(self) -> str:
        """The task queue the session's worker polls."""
        return self.api.task_queue

    def record(self, case: str, outcome: str, **data: Any) -> None:
        """What a case observed, for ``bench/results/faults.json`` and the docs table."""
        self.observations[case] = Observation(case, outcome, data)

    # -- driving --------------------------------------------------------------------

    async def conversation(self, *, policy: ConversationPolicy | None = None) -> Conversation:
        """Start a conversation and wait until the API has created it (E1)."""
        # Created at start: cases scope simulator faults to the conversation before they
        # send its first message.
        wid = await self.api.start(
            GENIE,
            USER,
            workflow_id=f"fault-{uuid.uuid4().hex[:12]}",
            policy=policy,
            create_at_start=True,
        )
        # Read from the server (search attributes), not by query: a query is a task for
        # the worker, which is busy enough running every case of the module at once.
        handle = self.api.handle(wid)
        desc = await wait_until(
            handle.describe,
            lambda d: d.typed_search_attributes.get(GENIE_STATE) == "idle",
            what=f"{wid} to create its conversation",
            every=0.05,
        )
        conversation_id = desc.typed_search_attributes.get(GENIE_CONVERSATION_ID)
        assert conversation_id is not None
        return Conversation(wid, conversation_id)

    async def paused(
        self, text: str = "confirm:send_email", policy: ConversationPolicy | None = None
    ) -> tuple[Conversation, str]:
        """A new conversation whose first turn waits for a skill decision; its call id."""
        conv = await self.conversation(policy=policy)
        res = await self.api.ask(conv.wid, text)
        assert res.status == "awaiting_approval", res
        return conv, res.pending.approvals[0].call_id

    def fault(self, conv: Conversation | None, endpoint: str, **spec: object) -> None:
        """Inject a simulator fault, scoped to ``conv`` unless it is None."""
        if conv is not None:
            spec["conversation_id"] = conv.conversation_id
        self.sim.fault(endpoint=endpoint, **spec)

    def faults_left(self, conv: Conversation) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.sim.base_url}/_sim/faults", timeout=5)
        r.raise_for_status()
        faults: list[dict[str, Any]] = r.json()["faults"]
        return [f for f in faults if f.get("conversation_id") == conv.conversation_id]

    def conv_stats(self, conv: Conversation) -> dict[str, Any]:
        """The simulator's counters for this conversation (``/_sim/stats``)."""
        convs = self.sim.stats()["conversations"]
        assert isinstance(convs, dict)
        stats: dict[str, Any] = convs[conv.conversation_id]
        return stats

    async def conv_stats_async(self, conv: Conversation) -> dict[str, Any]:
        """``conv_stats`` for ``wait_until`` (one loopback GET; blocking it is harmless)."""
        return self.conv_stats(conv)

    async def finish(self, conv: Conversation, turn: int, within: float = 60.0) -> TurnResult:
        """The turn once it has ended, or an assertion naming where it is stuck."""
        try:
            async with asyncio.timeout(within):
                return await self.api.wait(conv.wid, turn, wait_for="completion")
        except TimeoutError:
            st = await self.api.status(conv.wid)
            raise AssertionError(
                f"turn {turn} of {conv.wid} did not end within {within}s: state={st.state} "
                f"last_error={st.last_error}\nworker log tail:\n{self.worker.log_tail()}"
            ) from None

    async def activity_attempts(self, conv: Conversation) -> list[ActivityAttempt]:
        """Each activity of the workflow's history: its type, the attempt that completed
        (or failed) it, and why the attempt before it failed, if any."""
        types: dict[int, str] = {}
        out: list[ActivityAttempt] = []
        async for ev in self.api.handle(conv.wid).fetch_history_events():
            if ev.HasField("activity_task_scheduled_event_attributes"):
                types[ev.event_id] = ev.activity_task_scheduled_event_attributes.activity_type.name
            elif ev.HasField("activity_task_started_event_attributes"):
                a = ev.activity_task_started_event_attributes
                why = _failure_kind(a.last_failure) if a.HasField("last_failure") else None
                out.append(ActivityAttempt(types[a.scheduled_event_id], a.attempt, why))
        return out

    async def turn_record(self, conv: Conversation, turn: int) -> TurnRecord:
        transcript = await self.api.transcript(conv.wid, since_turn=turn)
        return next(t for t in transcript.turns if t.turn == turn)

    async def genie_messages(self, conv: Conversation, run_id: str) -> list[str]:
        """The run's ``agent.message`` texts per the API's own history (E6), oldest first."""
        page = await self.genie.list_messages(GENIE, conv.conversation_id, user_id=USER, limit=200)
        mine: list[Message] = [
            m for m in reversed(page.messages) if m.source == "genie" and m.genie_run_id == run_id
        ]
        return [m.content or "" for m in mine]

    # -- the invariants every case ends with ----------------------------------------

    async def check_turn(
        self,
        conv: Conversation,
        result: TurnResult,
        *,
        turns: int = 1,
        refused_posts: int = 0,
        extra_messages: tuple[str, ...] = (),
    ) -> TurnRecord:
        """Completed, every message of the run once and in order, one POST per turn.

        ``refused_posts``: POSTs the API refused before performing them (an injected 5xx,
        429 or HTML answer); they show in ``message_posts`` but started nothing.
        ``extra_messages``: texts the stream carried that are not in the API's history
        (only the simulator's injected id-less event).
        """
        assert result.status == "completed", (result, await self.api.status(conv.wid))
        rec = await self.turn_record(conv, result.turn)
        assert rec.genie_run_id is not None, rec
        truth = await self.genie_messages(conv, rec.genie_run_id)
        assert truth, f"the API has no genie message for run {rec.genie_run_id}"
        delivered = [m for m in result.messages if m not in extra_messages]
        assert delivered == truth, f"delivered {result.messages!r}, the API has {truth!r}"
        assert len(result.messages) == len(truth) + len(extra_messages), result.messages
        assert result.reply == truth[-1]
        stats = self.conv_stats(conv)
        assert stats["messages_accepted"] == turns, stats
        assert stats["message_posts"] == turns + refused_posts, stats
        assert len(stats["runs"]) == turns, stats
        return rec

    async def check_decisions(
        self, conv: Conversation, applied: dict[str, int], posts: dict[str, int] | None = None
    ) -> None:
        """Each decision applied once at the API; ``posts`` also counts refused tries."""
        stats = self.conv_stats(conv)
        assert stats["skill_decisions_applied"] == applied, stats
        assert stats["skill_decision_posts"] == (posts or applied), stats

    async def check_secrets(self, *convs: Conversation) -> None:
        """The API key is in no workflow history and nowhere in the worker's output."""
        for conv in convs:
            history = await self.api.handle(conv.wid).fetch_history()
            assert SIM_API_KEY not in history.to_json(), f"API key in history of {conv.wid}"
        log = self.worker.log_text()
        assert log, "the worker log is empty: nothing was captured"
        assert SIM_API_KEY not in log, "API key in the worker's output"


def worker_env(
    *,
    api_base_url: str,
    temporal_address: str,
    task_queue: str,
    attachments: Path,
    api_key: str = SIM_API_KEY,
    extra_settings: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """The worker's environment: ours, with no GENIE_/TEMPORAL_ leaking in from the shell."""
    return stack_worker_env(
        temporal_address=temporal_address,
        api_base_url=api_base_url,
        api_key=api_key,
        task_queue=task_queue,
        settings={
            "stream_silence_check_seconds": SILENCE_CHECK_SECONDS,
            "graceful_shutdown_seconds": GRACEFUL_SHUTDOWN_SECONDS,
            "attachment_dirs": [attachments],
            # DEBUG: the secret check covers everything the worker could ever log.
            "log_level": "DEBUG",
            **(extra_settings or {}),
        },
        inherit=False,
    )


def dump_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------------- cases and rows

ROWS: dict[str, tuple[str, str]] = {
    "sigkill": (
        "worker killed with SIGKILL, then restarted",
        "after the message POST but before the first heartbeat; mid-stream; just after a "
        "confirmation pause; after the decision POST but before the resume segment",
    ),
    "sigterm": ("worker stopped with SIGTERM (a deploy)", "mid-stream"),
    "stream_cut": (
        "stream cut by the simulator after k events",
        "every k of a 10-event run; once, and on every attempt",
    ),
    "stream_interrupted": ("`system.stream_interrupted`", "mid-run, with `retry_after_ms`"),
    "http_errors": ("5xx, then 429 with `Retry-After`", "on each endpoint"),
    "e8_failing": ("E8 (reconnect) failing", "recovery must come from E9"),
    "temporal_restart": (
        "Temporal dev server restarted on its SQLite file",
        "mid-conversation and while awaiting approval",
    ),
    "decisions": (
        "decisions",
        "duplicated, late (after timeout), for an unknown call id, for another conversation, "
        "from an approver not allowed",
    ),
    "malformed": (
        "malformed input from the API",
        "non-JSON `data:`, unknown event type, missing ids, a 200 with an HTML body",
    ),
    "attachments": (
        "attachment URI naming the worker's own network (SSRF), default settings",
        "a loopback metadata URL plainly, IPv4-mapped, decimal, behind userinfo, over https; "
        "an allowed-looking URL, and one redirecting to loopback",
    ),
    "trust": (
        "decisions and input at the edge of the contract, long API outages",
        "decisions during an outage, refused, or after the deadline; malformed or oversized "
        "start input, updates and signals; an end mid-stream; the API down mid-stream",
    ),
    "waiting": (
        "callers waiting a long time on a paused conversation",
        "`geniectl ask`, the Python API's wait, two callers at once",
    ),
    "production": (
        "the live API's reported behaviour (`genie_sim --profile production`)",
        "a key still settling, a wrong or revoked key, a pause only E3 shows after a resumed "
        "connection, auth link 404, a lost decision answer whose repeat is a 409 with an "
        "unknown code, 409 busy after a failed turn, parallel skills, id-less pings; and a "
        "subset of the rows above",
    ),
}
"""The rows of the fault table (issue 5), in order; every case belongs to one."""


CaseFn = Callable[[FaultStack], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Case:
    id: str
    row: str
    where: str
    run: CaseFn | None
    """``None`` for cases a module drives together (one SIGKILL, one server restart)."""


CASES: dict[str, Case] = {}


def case(row: str, where: str) -> Callable[[CaseFn], CaseFn]:
    """Register ``case_<id>(stack)`` as one fault case of table row ``row``."""

    def register(fn: CaseFn) -> CaseFn:
        register_case(fn.__name__.removeprefix("case_"), row, where, fn)
        return fn

    return register


def register_case(cid: str, row: str, where: str, run: CaseFn | None = None) -> str:
    """Register a case (``run=None``: driven by its module); returns its id."""
    assert row in ROWS, row
    assert cid not in CASES, cid
    CASES[cid] = Case(cid, row, where, run)
    return cid


def cases_of(module: str) -> list[str]:
    """Case ids registered (with a runner) by a test module (``__name__``)."""
    return [c.id for c in CASES.values() if c.run is not None and c.run.__module__ == module]
