"""Traces on the real stack: ``worker.py`` and ``geniectl`` as processes, the simulator over
HTTP, the dev server, and an OTLP/HTTP receiver standing in for a collector.

One ``geniectl ask`` (with a pause approved from another ``geniectl``) must arrive as one
connected trace: the command's span -> the update -> the workflow's handling -> each
activity of that turn -> each HTTP request to the simulator; ids on the spans, never the
message, the skill's parameters, the reason, the user id or the API key. With no
``OTEL_*`` set, nothing is exported and no exporter exists.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from genie_config import connect_temporal
from genie_stack import WorkerProcess, worker_env
from genie_telemetry import _tracing, tracing_requested
from geniectl import GenieConversations, NotFound
from tests.cli.test_geniectl import geniectl
from tests.services import REPO_ROOT, SIM_API_KEY, SimProcess
from tests.telemetry._receiver import OtlpReceiver, ReceivedSpan
from tests.workflow.helpers import eventually
from workflows import GenieConversation

pytestmark = pytest.mark.slow

GENIE = "gin-traced"
USER = f"idp-user-{uuid.uuid4().hex[:12]}"
"""The end user's identity (personal data): it must reach no span."""
OTLP_DEFAULT_PORT = 4318
"""Where an OTLP/HTTP exporter sends when no endpoint is configured."""


def _without_otel(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


def _otel(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export promptly, the test waits for it
    }


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    try:
        yield r
    finally:
        r.stop()


async def _worker(
    temporal_env: WorkflowEnvironment, sim: SimProcess, log: Path, extra: dict[str, str]
) -> tuple[WorkerProcess, str]:
    tq = f"test-traces-{uuid.uuid4()}"
    env = worker_env(
        temporal_address=temporal_env.client.service_client.config.target_host,
        api_base_url=sim.base_url,
        api_key=SIM_API_KEY,
        task_queue=tq,
        settings={"workflow_sandbox": True},
        inherit=False,
    )
    worker = WorkerProcess(log_path=log, env={**_without_otel(env), **extra})
    await worker.start()
    return worker, tq


@pytest.fixture
async def traced_worker(
    temporal_env: WorkflowEnvironment, sim: SimProcess, receiver: OtlpReceiver, tmp_path: Path
) -> AsyncIterator[tuple[WorkerProcess, str]]:
    extra = {
        **_otel(receiver),
        # Header capture switched on for every header: the API key and the user id
        # must still never arrive (genie_telemetry overwrites them).
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": ".*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE": ".*",
    }
    worker, tq = await _worker(temporal_env, sim, tmp_path / "worker.log", extra)
    try:
        assert "traces on: service genie-worker" in worker.log_since_start()
        yield worker, tq
    finally:
        worker.stop()


def _cli_env(temporal_env: WorkflowEnvironment, task_queue: str) -> dict[str, str]:
    return {
        **_without_otel(dict(os.environ)),
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "GENIE_TASK_QUEUE": task_queue,
        "COLUMNS": "200",
    }


async def _ask_with_an_approval(
    temporal_env: WorkflowEnvironment, env: dict[str, str], wid: str, text: str, reason: str
) -> str:
    """``geniectl ask`` that pauses for send_email, approved by ``geniectl approve``;
    the call id."""
    ask = asyncio.create_task(geniectl(env, "ask", wid, text, "--genie", GENIE, "--user", USER))
    api = GenieConversations(temporal_env.client)

    async def pending() -> list[str]:
        try:
            return [p.call_id for p in (await api.status(wid)).pending_approvals]
        except NotFound:  # the ask has not started the conversation yet
            return []

    call_id = (await eventually(pending, bool, within=60, what="the pause"))[0]
    ok = await geniectl(env, "approve", wid, call_id, "--approver", "ops", "--reason", reason)
    assert ok.code == 0, ok.stderr
    done = await ask
    assert done.code == 0, done.stderr
    assert "completed" in done.stdout
    return call_id


def _chain(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    """``span`` and its ancestors up to the root; fails on a parent that never arrived."""
    out = [span]
    while out[-1].parent_id:
        parent = by_id.get(out[-1].parent_id)
        assert parent is not None, f"{out[-1].name}: its parent {out[-1].parent_id} never came"
        out.append(parent)
    return out


async def test_one_ask_is_one_connected_trace_with_ids_and_no_content(
    temporal_env: WorkflowEnvironment,
    traced_worker: tuple[WorkerProcess, str],
    receiver: OtlpReceiver,
) -> None:
    _, tq = traced_worker
    env = {**_cli_env(temporal_env, tq), **_otel(receiver)}
    wid = f"traced-{uuid.uuid4()}"
    marker = f"secret-plans-{uuid.uuid4().hex[:8]}"
    reason = f"reasoning-{uuid.uuid4().hex[:8]}"
    call_id = await _ask_with_an_approval(
        temporal_env, env, wid, f"please confirm:send_email {marker}", reason
    )

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {s.name for s in spans}
        http = [s for s in spans if s.service == "genie-worker" and s.name.startswith("POST ")]
        return (
            "geniectl ask" in names
            and any("skill_approval" in s.name for s in http)
            and sum(s.name == "RunActivity:stream_segment" for s in spans) >= 2
        )

    async def received() -> list[ReceivedSpan]:
        return receiver.received()

    try:
        spans = await eventually(received, complete, within=60, what="the ask's spans")
    except AssertionError:
        got = sorted(f"{s.service}: {s.name}" for s in receiver.received())
        raise AssertionError(
            "the ask's spans did not all arrive; got:\n" + "\n".join(got)
        ) from None
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if s.name == "geniectl ask"]
    assert root.service == "geniectl" and not root.parent_id
    assert root.attributes["genie.workflow_id"] == wid
    assert root.attributes["genie.turn"] == 1 and root.attributes["genie.handle"] == GENIE

    # Everything the turn did, on the worker, is in the ask's trace, linked to its root.
    worker_spans = [s for s in spans if s.service == "genie-worker" and s.trace_id == root.trace_id]
    http = [
        s
        for s in worker_spans
        if s.attributes.get("http.request.method", s.attributes.get("http.method"))
    ]
    assert {s.name for s in http} >= {
        "POST /genies/{genie}/chat/conversations",
        "POST /genies/{genie}/chat/conversations/{id}/messages",
        "POST /genies/{genie}/chat/conversations/{id}/skill_approval/{id}",
    }, sorted(s.name for s in http)
    send = next(s for s in http if s.name.endswith("/messages"))
    names = [s.name for s in _chain(send, by_id)]
    assert names[1:] == [
        "RunActivity:stream_segment",
        "StartActivity:stream_segment",
        "HandleUpdate:send_message",
        "StartUpdateWithStartWorkflow:GenieConversation",
        "geniectl ask",
    ], names
    conversation_id = send.attributes["genie.conversation_id"]
    assert conversation_id.startswith("conv_")
    for s in http:  # each request: in the trace, with the ids of its activity's input
        assert _chain(s, by_id)[-1] is root
        assert s.attributes["genie.handle"] == GENIE
        if not s.name.endswith("/conversations"):  # created by this request
            assert s.attributes["genie.conversation_id"] == conversation_id
        if "/skill_approval/" in s.name:
            assert s.attributes["genie.call_id"] == call_id
        elif s.name.endswith(("/messages", "}")):  # the send, the resume (E8)
            assert s.attributes["genie.turn"] == 1
    # The resume segment posts the decision first, so it names the call id too, and the
    # decision's request hangs from it.
    (decision,) = [
        s
        for s in worker_spans
        if s.name == "RunActivity:stream_segment" and "genie.call_id" in s.attributes
    ]
    assert decision.attributes["genie.call_id"] == call_id
    assert decision.attributes["genie.conversation_id"] == conversation_id
    post = next(s for s in http if "/skill_approval/" in s.name)
    assert _chain(post, by_id)[1] is decision
    resumed = [s for s in worker_spans if s.name == "RunActivity:stream_segment"]
    assert len(resumed) >= 2, "the send and the resume after the approval"

    # Header capture was on, and the credentials were overwritten, not dropped silently.
    assert send.attributes["http.request.header.authorization"] == ["[REDACTED]"]
    assert send.attributes["http.request.header.x_idp_user_id"] == ["[REDACTED]"]

    # Nothing in any span, of any process or trace, holds content or a secret.
    everything = receiver.received()
    for s in everything:
        for text in s.texts():
            for forbidden in (marker, reason, USER, SIM_API_KEY, "send_email " + marker):
                assert forbidden not in text, f"{forbidden!r} in span {s.name!r}: {text[:200]}"


async def test_a_traced_history_replays_with_traces_on_and_off(
    temporal_env: WorkflowEnvironment,
    traced_worker: tuple[WorkerProcess, str],
    receiver: OtlpReceiver,
    tmp_path: Path,
) -> None:
    """Traces change no command: a conversation recorded with traces on replays without
    them, and it and the pinned histories recorded without them replay with them (as a
    restarted traced worker would), exporting nothing while replaying."""
    _, tq = traced_worker
    env = {**_cli_env(temporal_env, tq), **_otel(receiver)}
    wid = f"traced-{uuid.uuid4()}"
    await _ask_with_an_approval(temporal_env, env, wid, "please confirm:send_email", "ok")
    r = await geniectl(env, "ask", wid, "and again")
    assert r.code == 0, r.stderr
    handle = temporal_env.client.get_workflow_handle(wid)
    await handle.signal("end_conversation", {"reason": "done"})
    await handle.result()
    history = await handle.fetch_history()
    await Replayer(
        workflows=[GenieConversation], data_converter=pydantic_data_converter
    ).replay_workflow(history)

    traced = tmp_path / f"{wid}.json"
    traced.write_text(history.to_json())
    pinned = sorted((REPO_ROOT / "tests" / "workflow" / "histories").glob("*.json"))
    before = len(receiver.received())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.telemetry._replay",
        str(traced),
        *map(str, pinned),
        env={**_without_otel(dict(os.environ)), **_otel(receiver)},
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()[-3000:]
    replayed = [s for s in receiver.received()[before:] if s.service == "genie-replay"]
    assert replayed == [], [s.name for s in replayed]


async def test_without_otel_variables_nothing_is_exported(
    temporal_env: WorkflowEnvironment, sim: SimProcess, tmp_path: Path
) -> None:
    # Where an exporter with the SDK's defaults would send: it must hear nothing.
    default_collector = OtlpReceiver(OTLP_DEFAULT_PORT).start()
    try:
        worker, tq = await _worker(temporal_env, sim, tmp_path / "worker.log", {})
        try:
            wid = f"untraced-{uuid.uuid4()}"
            r = await geniectl(
                _cli_env(temporal_env, tq), "ask", wid, "hello", "--genie", GENIE, "--user", USER
            )
            assert r.code == 0, r.stderr
            log = worker.log_since_start()
        finally:
            worker.stop()  # a worker that had batched spans would flush them now
        assert "traces on" not in log
        assert "You said: hello" in r.stdout
        assert default_collector.requests == 0
    finally:
        default_collector.stop()


async def test_no_exporter_and_no_plugin_without_otel_variables(
    temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setattr(_tracing, "_state", _tracing._State())
    client = await connect_temporal()
    assert list(client.config()["plugins"]) == []
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not [t for t in threading.enumerate() if "Otel" in t.name or "OTLP" in t.name]


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_which_variables_turn_traces_on(env: dict[str, str], on: bool) -> None:
    assert tracing_requested(env) is on


async def test_a_failure_reaches_traces_by_its_type_never_its_message(
    temporal_env: WorkflowEnvironment, receiver: OtlpReceiver
) -> None:
    """Failure messages are encrypted payloads in history (an API error may quote a
    message, a refusal names an approver); the SDK's spans would carry them in clear as
    a status description and an exception event. Only the type may arrive."""
    secret = f"quoted-user-text-{uuid.uuid4().hex[:8]}"
    env = {**_without_otel(dict(os.environ)), **_otel(receiver)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.telemetry._failing",
        temporal_env.client.service_client.config.target_host,
        temporal_env.client.namespace,
        secret,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()[-3000:]
    spans = [s for s in receiver.received() if s.service == "genie-failing"]
    failed = [s for s in spans if s.name == "RunActivity:quote"]
    assert failed and all(s.status_message.startswith("ApplicationError") for s in failed), [
        (s.name, s.status_message) for s in spans
    ]
    exceptions = [attrs for s in spans for name, attrs in s.events if name == "exception"]
    assert exceptions, "the workflow's failure is recorded as an exception event"
    assert all(e.get("exception.type") for e in exceptions)
    for s in spans:
        for text in s.texts():
            assert secret not in text, f"in span {s.name!r}: {text[:300]}"
