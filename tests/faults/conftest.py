"""The fault suite's session: one simulator, proxy, Temporal dev server and worker process.

Starting those is the slow part, so every case shares them; cases keep out of each other's
way by scoping simulator faults to their own conversation. Each test module launches its
selected cases concurrently (``launched``), so a case that has to sit out a timeout does
not make the others wait. At the end of the session, what each case observed is merged
into ``bench/results/faults.json`` for ``python -m tests.faults.report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest

from genie_api import ApiKeyAuth, GenieClient
from genie_stack import LocalStack
from geniectl import GenieConversations
from tests.faults._harness import (
    CASES,
    RESULTS_PATH,
    DevServer,
    FaultStack,
    HoldingProxy,
    WorkerProcess,
    connect,
    dump_json,
    worker_env,
)
from tests.services import SIM_API_KEY, SimProcess

_STACKS: list[FaultStack] = []
_RESULTS: dict[str, str] = {}
_SECONDS = [0.0]
"""Time spent in fault-suite tests (setup, call, teardown), also inside a full run."""
_HERE = Path(__file__).parent


PRODUCTION_SIM_ARGS = (
    "--profile",
    "production",
    "--ping-interval",
    "0.5",
    "--auth-settle-seconds",
    "0",
)
"""The production stack's simulator: every behaviour reported from the live API
(``docs/simulator.md``), with short pings. The credential settle window is opened by the
cases that test it (``POST /_sim/rotate_key``), so that the harness's own checks, which
use the same key, are not refused at random."""


@contextlib.asynccontextmanager
async def _fault_stack(
    base: Path, sim_args: tuple[str, ...], **settings: object
) -> AsyncIterator[FaultStack]:
    sim = SimProcess(args=sim_args, log_path=base / "sim.log")
    temporal = DevServer(db_path=base / "temporal.db", log_path=base / "temporal.log")
    # The worker reaches the simulator only through the proxy; the checks go around it.
    proxy = HoldingProxy(sim.port).start()
    attachments = base / "attachments"
    attachments.mkdir()
    task_queue = f"faults-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        env=worker_env(
            api_base_url=proxy.base_url,
            temporal_address=temporal.address,
            task_queue=task_queue,
            attachments=attachments,
            extra_settings=settings,
        ),
        log_path=base / "worker.log",
    )
    local = LocalStack(temporal, sim.service, worker)
    try:
        await local.start()
        client = await connect(temporal.address)
        async with GenieClient(sim.base_url, ApiKeyAuth(SIM_API_KEY)) as genie:
            s = FaultStack(
                sim=sim,
                proxy=proxy,
                temporal=temporal,
                worker=worker,
                client=client,
                api=GenieConversations(client, task_queue=task_queue),
                genie=genie,
                attachments=attachments,
            )
            _STACKS.append(s)
            yield s
    finally:
        local.stop()
        proxy.stop()


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultStack]:
    async with _fault_stack(tmp_path_factory.mktemp("faults"), ("--ping-interval", "0.5")) as s:
        yield s


@pytest.fixture(scope="session")
async def production_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultStack]:
    """A second stack whose simulator runs ``--profile production`` (``test_production``)."""
    base = tmp_path_factory.mktemp("faults-production")
    # GENIE_AUTH_SETTLE_SECONDS: short, so a wrong key fails within the case's patience
    # (where the worker reads it; otherwise the 60 s default applies).
    async with _fault_stack(base, PRODUCTION_SIM_ARGS, auth_settle_seconds=20) as s:
        yield s


@pytest.fixture(scope="module")
async def launched(
    request: pytest.FixtureRequest, stack: FaultStack
) -> AsyncIterator[dict[str, asyncio.Task[None]]]:
    """Start every selected case of the requesting module at once; tests await their own."""
    module = request.module
    wanted = [
        str(item.callspec.params["case_id"])
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is module
        and "launched" in item.fixturenames
        and hasattr(item, "callspec")
        and "case_id" in item.callspec.params
    ]
    tasks: dict[str, asyncio.Task[None]] = {}
    for cid in wanted:
        run = CASES[cid].run
        assert run is not None, f"{cid} is driven by its module, not launched"
        tasks[cid] = asyncio.create_task(run(stack), name=cid)
    yield tasks
    for t in tasks.values():
        t.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    # Faults a failed case left behind must not leak into the next module.
    stack.sim.clear_faults()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if item.path.is_relative_to(_HERE):
        _SECONDS[0] += report.duration
    case_id = getattr(item, "callspec", None) and item.callspec.params.get("case_id")  # type: ignore[attr-defined]
    if isinstance(case_id, str) and (report.when == "call" or report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
        if report.when == "call" or case_id not in _RESULTS:
            _RESULTS[case_id] = outcome
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RESULTS:
        return
    previous: dict[str, Any] = {}
    last: dict[str, Any] = {}
    if RESULTS_PATH.exists():
        try:
            last = json.loads(RESULTS_PATH.read_text())
            previous = {c["id"]: c for c in last["cases"]}
        except (ValueError, KeyError, TypeError):
            previous, last = {}, {}
    observations = {k: v for s in _STACKS for k, v in s.observations.items()}
    cases: list[dict[str, Any]] = []
    for cid, c in CASES.items():
        if cid not in _RESULTS:
            if cid in previous:
                cases.append(previous[cid])
            continue
        obs = observations.get(cid)
        cases.append(
            {
                "id": cid,
                "row": c.row,
                "where": c.where,
                "result": _RESULTS[cid],
                "outcome": obs.outcome if obs else "(no observation recorded)",
                "data": obs.data if obs else {},
            }
        )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # Cases of modules this session did not collect keep their last observation, so a
    # run of one module (pytest tests/faults/test_malformed.py) does not erase the rest;
    # the page then still dates its table by the last run of the whole suite.
    carried = [c for cid, c in previous.items() if cid not in CASES]
    if carried and "generated_at" in last and "suite_seconds" in last:
        head = {
            "generated_at": last["generated_at"],
            "suite_seconds": last["suite_seconds"],
            "partly_rerun_at": now,
        }
    else:
        head = {"generated_at": now, "suite_seconds": round(_SECONDS[0], 1)}
    dump_json(RESULTS_PATH, {**head, "cases": cases + carried})
