"""A versioned deploy while conversations wait (Worker Versioning on the dev server).

Version A (``worker.py``, build ``A``) starts conversations; one parks on an approval.
Version B (the same worker running ``_conversation_b``, whose turns start with an extra
timer, so A's histories would not replay on it) is deployed and made current. Then:
new conversations run on B; the parked one finishes its turn on A and moves to B at the
continue-as-new after it; an idle one runs its next turn on A and moves after it; no
workflow task fails anywhere; A shows as draining, then drained, and is retired.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from genie_stack import TemporalDevServer, WorkerProcess, worker_env
from genie_stack._services import temporal_cli
from geniectl import GenieConversations
from tests.services import SIM_API_KEY, SimProcess
from tests.versioning._conversation_b import MARK_SUMMARY, GenieConversationB
from tests.workflow.helpers import GENIE, USER, eventually
from workflows import ConversationPolicy, GenieConversation
from workflows._state import ConversationData
from workflows.models import ConversationStart, TurnResult

A, B = "A", "B"
WITHIN = 60.0
"""Seconds for anything that waits on the server's deployment bookkeeping (the machine
is shared and slow; nothing here is a timing assertion)."""


@dataclass
class Deploy:
    """One worker deployment on its own task queue, driven with the ``temporal`` CLI
    exactly as docs/deployment.md tells an operator to."""

    client: Client
    sim: SimProcess
    logs: Path
    name: str
    task_queue: str

    def worker(self, build_id: str | None, module: str = "worker") -> WorkerProcess:
        """A worker of version ``build_id``; None: an unversioned one."""
        versioned = (
            {"worker_deployment_name": self.name, "worker_build_id": build_id}
            if build_id is not None
            else {}
        )
        env = worker_env(
            temporal_address=self.client.service_client.config.target_host,
            api_base_url=self.sim.base_url,
            api_key=SIM_API_KEY,
            task_queue=self.task_queue,
            settings={**versioned, "workflow_sandbox": True},
            inherit=False,
        )
        return WorkerProcess(
            env=env,
            argv=("-m", module),
            log_path=self.logs / f"worker-{build_id or 'unversioned'}.log",
        )

    async def cli(self, *args: str) -> Any:
        """``temporal worker deployment <args>`` on this deployment."""
        # `describe` names the deployment with --name, the version commands with this.
        name = "--name" if args[0] == "describe" else "--deployment-name"
        return await self.temporal("worker", "deployment", *args, name, self.name)

    async def temporal(self, *args: str) -> Any:
        """``temporal <args>`` against the test server, its JSON output parsed."""
        proc = await asyncio.create_subprocess_exec(
            temporal_cli(),
            *args,
            "--address",
            self.client.service_client.config.target_host,
            "--namespace",
            self.client.namespace,
            "--output",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"temporal {' '.join(args[:3])}: {err.decode()[-500:]}")
        return json.loads(out) if out.strip() else None

    async def override_auto_upgrade(self, wid: str) -> None:
        """Move a pinned conversation's run to the current target, as an operator would."""
        await self.temporal(
            "workflow",
            "update-options",
            "--workflow-id",
            wid,
            "--versioning-override-behavior",
            "auto_upgrade",
        )

    async def set_current(self, build_id: str) -> None:
        # The version exists once its worker has polled; until then the CLI refuses it.
        async def attempt() -> bool:
            try:
                await self.cli("set-current-version", "--build-id", build_id, "--yes")
            except RuntimeError:
                return False
            return True

        await eventually(attempt, bool, within=WITHIN, what=f"{build_id} to become current")

    async def drainage(self, build_id: str) -> str:
        info = await self.cli("describe-version", "--build-id", build_id)
        return str((info.get("drainageInfo") or {}).get("drainageStatus", "")).lower()

    async def running_on(self, build_id: str) -> set[str]:
        """The running conversations pinned to a version, as the docs list them."""
        query = (
            f'TemporalWorkerDeploymentVersion="{self.name}:{build_id}" '
            'AND ExecutionStatus="Running"'
        )
        return {w.id async for w in self.client.list_workflows(query)}

    async def delete(self, build_id: str) -> str:
        """Delete a version: "" once done, else why the server refused."""
        try:
            await self.cli("delete-version", "--build-id", build_id)
        except RuntimeError as e:
            return str(e)
        return ""


class _DevServer(TemporalDevServer):
    """The stack's dev server, forgetting a stopped worker's pollers after seconds
    instead of 5 minutes: the server refuses to delete a version it still sees polled."""

    def command(self) -> list[str]:
        return [*super().command(), "--dynamic-config-value", f'{POLLER_TTL}="5s"']


POLLER_TTL = "matching.PollerHistoryTTL"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    dev = _DevServer(log_path=tmp_path_factory.mktemp("temporal") / "temporal.log")
    await dev.start()
    try:
        yield await dev.connect()
    finally:
        dev.stop()


@pytest.fixture
def deploy(server: Client, sim: SimProcess, tmp_path: Path) -> Deploy:
    tag = uuid.uuid4().hex[:8]
    return Deploy(server, sim, tmp_path, f"genie-test-{tag}", f"versioned-{tag}")


async def _runs(client: Client, wid: str) -> list[list[HistoryEvent]]:
    """Every run of a conversation, oldest first, each as its history's events."""
    runs: list[list[HistoryEvent]] = []
    run_id: str | None = None  # None: the latest run
    while True:
        history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        runs.insert(0, list(history.events))
        started = history.events[0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return runs
        run_id = started.continued_execution_run_id


def _builds(events: list[HistoryEvent]) -> set[str]:
    """The build ids of the workers that completed this run's workflow tasks."""
    return {
        e.workflow_task_completed_event_attributes.deployment_version.build_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    }


def _failed_tasks(events: list[HistoryEvent]) -> list[str]:
    return [
        e.workflow_task_failed_event_attributes.failure.message
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def _marks(client: Client, events: list[HistoryEvent]) -> int:
    """How many of B's turn-start timers this run has."""
    n = 0
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED and e.user_metadata.HasField(
            "summary"
        ):
            summary = client.data_converter.payload_converter.from_payload(
                e.user_metadata.summary, str
            )
            n += summary == MARK_SUMMARY
    return n


async def _pinned_to(client: Client, wid: str) -> str | None:
    """The build id the conversation's current run is pinned to (None: not pinned yet; a
    run that continued as new onto the target version is until its first task ends)."""
    info = (await client.get_workflow_handle(wid).describe()).raw_description
    v = info.workflow_execution_info.versioning_info
    if v.behavior != VersioningBehavior.VERSIONING_BEHAVIOR_PINNED:
        return None
    return v.deployment_version.build_id


async def test_a_deploy_moves_waiting_conversations_at_their_seams_without_a_task_failure(
    deploy: Deploy,
) -> None:
    api = GenieConversations(deploy.client, task_queue=deploy.task_queue)

    async def start(name: str) -> str:
        return await api.start(GENIE, USER, workflow_id=f"{deploy.name}-{name}")

    async def pinned(wid: str, build: str) -> None:
        # The server records a run's version when its first workflow task completes,
        # which a describe right after the reply can still miss on a loaded machine.
        await eventually(
            lambda: _pinned_to(deploy.client, wid),
            lambda b: b == build,
            within=WITHIN,
            what=f"{wid} to be pinned to {build}",
        )

    worker_a = deploy.worker(A)
    worker_b = deploy.worker(B, module="tests.versioning._worker_b")
    async with worker_a:
        assert f"worker deployment version {deploy.name}:{A}" in worker_a.log_since_start()
        await deploy.set_current(A)

        # On A: one conversation idle after a turn, one parked on an approval.
        idle = await start("idle")
        assert (await api.ask(idle, "hello", wait_for="completion")).status == "completed"
        parked = await start("parked")
        paused = await api.ask(parked, "please confirm:send_email")
        assert paused.status == "awaiting_approval", paused
        (approval,) = paused.pending.approvals
        await pinned(idle, A)
        await pinned(parked, A)

        # Deploy B and make it current: A keeps its pinned runs and is draining.
        async with worker_b:
            await deploy.set_current(B)
            await eventually(
                lambda: deploy.drainage(A),
                lambda s: "draining" in s,
                within=WITHIN,
                what="A to be draining",
            )

            # Ops can list who is still on A (docs/deployment.md, step 4).
            await eventually(
                lambda: deploy.running_on(A),
                lambda ids: ids == {idle, parked},
                within=WITHIN,
                what="the conversations on A to be listed",
            )

            # A new conversation runs on B (its turn starts with B's timer).
            fresh = await start("fresh")
            assert (await api.ask(fresh, "hi", wait_for="completion")).status == "completed"
            await pinned(fresh, B)

            # The parked one is still on A, mid-turn; approved, it finishes the turn
            # there, then continues as new onto B.
            assert await _pinned_to(deploy.client, parked) == A
            await api.approve(parked, approval.call_id, approver="ops")
            done = await api.wait(parked, paused.turn, wait_for="completion")
            assert done.status == "completed" and done.reply and "send_email" in done.reply
            await eventually(
                lambda: _pinned_to(deploy.client, parked),
                lambda b: b == B,
                within=WITHIN,
                what="the parked conversation to move to B",
            )

            # The idle one runs its next turn where it is, on A, then moves to B.
            again = await api.ask(idle, "again", wait_for="completion")
            assert again.status == "completed" and again.reply == "You said: again"
            await eventually(
                lambda: _pinned_to(deploy.client, idle),
                lambda b: b == B,
                within=WITHIN,
                what="the idle conversation to move to B",
            )

            # Nothing pinned to A is left: A drains.
            await eventually(
                lambda: deploy.drainage(A),
                lambda s: s.endswith("drained"),
                within=WITHIN,
                what="A to be drained",
            )

            assert await deploy.running_on(A) == set()

            # Retire A: stop its workers (a clean exit), then delete the drained version.
            assert await worker_a.terminate() == 0
            await eventually(
                lambda: deploy.delete(A),
                lambda refusal: not refusal,
                within=WITHIN,
                what="delete A",
            )
            listed = await deploy.cli("describe")
            assert [v["BuildID"] for v in listed["versionSummaries"]] == [B], listed

            # B alone carries on with both moved conversations.
            for wid in (parked, idle):
                later = await api.ask(wid, "after the deploy", wait_for="completion")
                assert later.reply == "You said: after the deploy", later

    # Which version ran what, from the histories: each run on one version, the turns
    # started before the deploy on A, every later one on B (B's timer).
    parked_runs = await _runs(deploy.client, parked)
    idle_runs = await _runs(deploy.client, idle)
    fresh_runs = await _runs(deploy.client, fresh)
    assert [_builds(r) for r in parked_runs] == [{A}, {B}]
    assert [_builds(r) for r in idle_runs] == [{A}, {B}]
    assert [_builds(r) for r in fresh_runs] == [{B}]
    assert [await _marks(deploy.client, r) for r in parked_runs] == [0, 1]
    assert [await _marks(deploy.client, r) for r in idle_runs] == [0, 1]
    assert [await _marks(deploy.client, r) for r in fresh_runs] == [1]
    for run in (*parked_runs, *idle_runs, *fresh_runs):
        assert _failed_tasks(run) == []
    await _replays_only_on_its_own_version(parked_runs[0], parked_runs[1])
    logs = worker_a.log_text() + worker_b.log_text()
    assert "nondetermin" not in logs.lower(), logs[-3000:]


async def _replays_only_on_its_own_version(
    on_a: list[HistoryEvent], on_b: list[HistoryEvent]
) -> None:
    """Each run replays on its own version's code, and A's would not on B's: the pin is
    what kept the parked conversation from a non-determinism error."""
    a = WorkflowHistory("a", on_a)
    b = WorkflowHistory("b", on_b)
    await Replayer(
        workflows=[GenieConversation], data_converter=pydantic_data_converter
    ).replay_workflow(a)
    on_b_code = Replayer(workflows=[GenieConversationB], data_converter=pydantic_data_converter)
    await on_b_code.replay_workflow(b)
    with pytest.raises(NondeterminismError):
        await on_b_code.replay_workflow(a)


async def test_a_pause_that_rolls_over_stays_on_its_version_until_its_turn_ends(
    deploy: Deploy,
) -> None:
    """A versioned worker rolls a long pause over (its deployment allows it), and the
    next run is pinned to the same build: the code that carried the pause resumes it,
    even once a newer version is current. The conversation moves only when the turn
    ends, as any turn does."""
    api = GenieConversations(deploy.client, task_queue=deploy.task_queue)
    worker_a = deploy.worker(A)
    worker_b = deploy.worker(B, module="tests.versioning._worker_b")
    async with worker_a:
        await deploy.set_current(A)
        wid = f"{deploy.name}-long-pause"
        paused = await _park(api, wid)
        (approval,) = paused.pending.approvals
        async with worker_b:
            await deploy.set_current(B)
            await _roll_over(api, wid, paused.turn)
            await eventually(
                lambda: _pinned_to(deploy.client, wid),
                lambda b: b == A,
                within=WITHIN,
                what="the carried pause's run to be pinned to A",
            )
            rec = await api.approve(wid, approval.call_id, approver="ops", wait_for="completion")
            assert rec.result is not None and rec.result.status == "completed", rec
            await eventually(
                lambda: _pinned_to(deploy.client, wid),
                lambda b: b == B,
                within=WITHIN,
                what="the conversation to move to B after its turn",
            )
    runs = await _runs(deploy.client, wid)
    assert [_builds(r) for r in runs] == [{A}, {A}, {B}], [_builds(r) for r in runs]
    for run in runs:
        assert _failed_tasks(run) == []


async def test_leaving_worker_versioning_moves_conversations_to_unversioned_workers(
    deploy: Deploy,
) -> None:
    """An operator leaves Worker Versioning (docs/deployment.md): unversioned workers
    become the target. An idle conversation on A runs its next turn there and moves after
    it, as in any deploy. A pause that rolled over on A, moved at once by the operator's
    override, still ends its turn, on an unversioned worker, and carries on there."""
    api = GenieConversations(deploy.client, task_queue=deploy.task_queue)
    worker_a = deploy.worker(A)
    plain = deploy.worker(None)
    async with worker_a:
        await deploy.set_current(A)
        idle = await api.start(GENIE, USER, workflow_id=f"{deploy.name}-idle")
        assert (await api.ask(idle, "hello", wait_for="completion")).status == "completed"
        wid = f"{deploy.name}-leaving"
        paused = await _park(api, wid)
        (approval,) = paused.pending.approvals
        await _roll_over(api, wid, paused.turn)
        async with plain:
            await deploy.cli("set-current-version", "--unversioned", "--yes")
            await deploy.override_auto_upgrade(wid)
            rec = await api.approve(wid, approval.call_id, approver="ops", wait_for="completion")
            assert rec.result is not None and rec.result.status == "completed", rec
            later = await api.ask(wid, "after leaving", wait_for="completion")
            assert later.reply == "You said: after leaving", later
            for text in ("on A", "unversioned"):
                done = await api.ask(idle, text, wait_for="completion")
                assert done.reply == f"You said: {text}", done
    idle_runs = await _runs(deploy.client, idle)
    assert [_builds(r) for r in idle_runs] == [{A}, {""}]
    runs = await _runs(deploy.client, wid)
    # The pause rolled over on A, marking the next run to move when its turn ends; that
    # run ended the turn on an unversioned worker and continued as new once more there.
    assert len(runs) == 3, [_builds(r) for r in runs]
    assert _builds(runs[0]) == {A}
    assert _carried(deploy.client, runs[1]).upgrade_after_turn
    assert _builds(runs[2]) == {""}
    for run in (*runs, *idle_runs):
        assert _failed_tasks(run) == []


async def _park(api: GenieConversations, wid: str) -> TurnResult:
    """A conversation parked on an approval, whose pause rolls over at 50 events."""
    await api.start(
        GENIE,
        USER,
        workflow_id=wid,
        policy=ConversationPolicy(max_history_events_per_run=50, approvers=["ops"]),
    )
    paused = await api.ask(wid, "please confirm:send_email")
    assert paused.status == "awaiting_approval", paused
    return paused


async def _roll_over(api: GenieConversations, wid: str, turn: int) -> None:
    """Poll the parked turn until its pause continues as new."""
    handle = api.handle(wid)
    first = (await handle.describe()).run_id
    for _ in range(50):
        if (await handle.describe()).run_id != first:
            return
        await api.wait(wid, turn, timeout_seconds=0)
    raise AssertionError("the pause never continued as new")


def _carried(client: Client, events: list[HistoryEvent]) -> ConversationData:
    """The state a run started with (it continued from another)."""
    started = events[0].workflow_execution_started_event_attributes
    start = client.data_converter.payload_converter.from_payload(
        started.input.payloads[0], ConversationStart
    )
    assert start.carried is not None
    return start.carried
