"""The genie-worker process: ``python worker.py``.

Reads ``GENIE_*`` and ``TEMPORAL_*`` settings (a bad one stops it before connecting, with
one line naming the setting), connects to Temporal with the pydantic data converter,
serves Prometheus metrics when ``GENIE_METRICS_PORT`` is set, and runs the
``GenieConversation`` workflow and its activities until SIGTERM/SIGINT. On shutdown,
in-flight stream segments checkpoint their cursor and hand over to another worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import NoReturn

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import (
    PollerBehaviorSimpleMaximum,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkerDeploymentConfig,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import GenieActivities, UrlPolicy, UserIdPolicy
from genie_api import ApiKeyAuth, GenieClient
from genie_codec import EncryptionCodec
from genie_config import (
    ConfigError,
    GenieSettings,
    connect_temporal,
    load_deployment,
    load_settings,
    temporal_connect_config,
)
from genie_config._settings import data_converter
from genie_telemetry import setup_tracing, shutdown_tracing
from genie_telemetry._pending import PendingGauges
from workflows import GenieConversation
from workflows.search_attributes import ALL_SEARCH_ATTRIBUTES, cli_type

log = logging.getLogger("genie_worker")

PASSTHROUGH = (
    "workflows.models",
    "workflows.errors",
    "workflows.search_attributes",
    "workflows._ui",
)
"""Workflow-side modules that hold only data definitions and pure functions: the sandbox
(when on) shares them instead of re-importing them per workflow run."""
WORKFLOW_TASK_POLLERS = 20
"""Concurrent workflow-task polls (the SDK splits them between the shared and the sticky
queue, 1:4); the SDK default is 5."""


def build_worker(
    client: Client, settings: GenieSettings, genie: GenieClient, *, task_queue: str | None = None
) -> Worker:
    """The worker with every workflow and activity, sized for many IO-bound streams."""
    deployment, endpoints = load_deployment(settings)
    activities = GenieActivities(
        genie,
        attachment_dirs=list(settings.attachment_dirs),
        attachment_urls=UrlPolicy(
            hosts=tuple(settings.attachment_hosts),
            allow_http=settings.attachment_allow_http,
            allow_private_networks=settings.attachment_allow_private_networks,
            timeout_seconds=settings.attachment_timeout_seconds,
        ),
        user_ids=UserIdPolicy(
            pattern=settings.user_id_pattern, allowed=frozenset(settings.user_ids)
        ),
        silence_check_seconds=settings.stream_silence_check_seconds,
        deployment=deployment,
        notify_endpoints=endpoints,
        auth_settle_seconds=settings.auth_settle_seconds,
        user_hash_key=(
            settings.user_id_hash_key.get_secret_value().encode()
            if settings.user_id_hash_key
            else None
        ),
    )
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[GenieConversation],
        activities=activities.all(),
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        max_cached_workflows=settings.max_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=settings.graceful_shutdown_seconds),
        workflow_runner=workflow_runner(sandboxed=settings.workflow_sandbox),
        # A new conversation's first workflow task comes from the shared queue, which the
        # SDK's default 5 pollers serve with one poller; a burst of starts queued there.
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(WORKFLOW_TASK_POLLERS),
        # A stream segment's heartbeat carries the messages so far, which `geniectl ask`
        # and the Python API read through describe to show progress live. The SDK would
        # otherwise hold heartbeats back to 80% of the heartbeat timeout (8 s). Heartbeats
        # are server calls, not history events, so this costs no history.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        deployment_config=deployment_config(settings),
    )


HEARTBEAT_THROTTLE = timedelta(seconds=1)
HISTOGRAM_BUCKETS = {
    # Milliseconds, as every latency on /metrics: a turn takes seconds to minutes, and
    # one that waits for a human hours to days (the SDK's default tops out at 10 s).
    "genie_turn_latency": [
        *(1000 * s for s in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)),
        *(3_600_000 * h for h in (1, 4, 24, 72)),
    ],
}


def deployment_config(settings: GenieSettings) -> WorkerDeploymentConfig | None:
    """Worker Versioning, when ``GENIE_WORKER_DEPLOYMENT_NAME``/``_BUILD_ID`` are set;
    unset: ``None``, the unversioned worker of every deploy before it.

    Conversations are PINNED to the version that started them (and move at a turn's
    end, see ``GenieConversation._upgrade_due``). Set here rather than on the workflow
    definition because an unversioned worker must not name a behaviour at all: the
    server refuses its workflow task completions ("versioning behavior cannot be
    specified without deployment options").
    """
    if settings.worker_deployment_name is None or settings.worker_build_id is None:
        return None
    version = WorkerDeploymentVersion(
        deployment_name=settings.worker_deployment_name, build_id=settings.worker_build_id
    )
    log.info("worker deployment version %s:%s", version.deployment_name, version.build_id)
    return WorkerDeploymentConfig(
        version=version,
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


def workflow_runner(*, sandboxed: bool) -> WorkflowRunner:
    """The sandbox (optional) or the plain runner (the default).

    The SDK's sandbox re-imports workflow code per workflow run. Even with our data-only
    modules passed through it cost 2.5x the worker CPU per conversation and timed out
    turns in a burst of 500 on 2 cores (bench/concurrency.py: 70.6 s and 2 failed vs
    40.7 s and none). Determinism is still enforced where it is cheap: every test worker
    runs sandboxed, and recorded histories replay in the sandbox (tests/workflow).
    ``GENIE_WORKFLOW_SANDBOX=true`` buys the runtime guard in production for that CPU.
    """
    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


class NamespaceNotReady(Exception):
    """The namespace lacks a search attribute the workflow writes: every workflow task
    that upserted it would fail, in a loop, until someone registered it."""


async def check_search_attributes(client: Client) -> None:
    """Refuse to start on a namespace without our search attributes registered (a new
    one, like ``GenieDeadline``, must be registered before the code that writes it is
    deployed). If the caller may not list them (an API key without that permission),
    say so and go on: the deploy procedure is then the only guard."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as e:
        log.warning(
            "could not list the namespace's search attributes (%s); make sure %s are "
            "registered", e.status.name, ", ".join(k.name for k in ALL_SEARCH_ATTRIBUTES),
        )  # fmt: skip
        return
    known = {**listed.system_attributes, **listed.custom_attributes}
    missing = [k for k in ALL_SEARCH_ATTRIBUTES if k.name not in known]
    if missing:
        how = "; ".join(
            f"temporal operator search-attribute create --namespace {client.namespace} "
            f"--name {k.name} --type {cli_type(k)}"
            for k in missing
        )
        raise NamespaceNotReady(
            f"namespace {client.namespace!r} has no search attribute "
            f"{', '.join(k.name for k in missing)}, which conversations write; register "
            f"it before starting this worker: {how}"
        )


def genie_client(settings: GenieSettings) -> GenieClient:
    return GenieClient(str(settings.api_base_url), ApiKeyAuth(settings.api_key_value()))


async def serve(settings: GenieSettings, stop: asyncio.Event) -> None:
    runtime = None
    if settings.metrics_port:
        bind = f"{settings.metrics_host}:{settings.metrics_port}"
        runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(
                    bind_address=bind, histogram_bucket_overrides=HISTOGRAM_BUCKETS
                )
            )
        )
        log.info("metrics on http://%s/metrics", bind)
    client = await connect_temporal(runtime=runtime)
    await check_search_attributes(client)
    async with genie_client(settings) as genie:
        worker = build_worker(client, settings, genie)
        log.info(
            "worker polling task queue %r on %s (namespace %s), Headless API %s",
            settings.task_queue, client.service_client.config.target_host,
            client.namespace, settings.api_base_url,
        )  # fmt: skip
        codec = client.data_converter.payload_codec
        if isinstance(codec, EncryptionCodec):
            log.info(
                "payloads encrypted with key %s (decrypting with %s)",
                codec.keys.encrypting, ", ".join(codec.keys.ids),
            )  # fmt: skip
        run = asyncio.create_task(worker.run())
        pending = PendingGauges.start(client, runtime, settings.task_queue)  # with metrics
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            log.info(
                "shutting down (up to %ss for in-flight work)", settings.graceful_shutdown_seconds
            )
            await worker.shutdown()
        await run
        if pending is not None:
            await pending.stop()
    log.info("worker stopped")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings()
        settings.api_key_value()  # fail now, not at the first activity
        load_deployment(settings)
        # The payload keys too (GENIE_PAYLOAD_KEYS): a bad one stops the worker here.
        data_converter(settings, target_host=temporal_connect_config()["target_host"])
    except ConfigError as e:
        print(f"genie-worker: configuration error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO; keep our log about conversations, not sockets.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:  # traces (OTEL_*; off unless set), before any client or worker exists
        setup_tracing("genie-worker")
    except ConfigError as e:
        print(f"genie-worker: configuration error: {e}", file=sys.stderr)
        return 2

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(_main())
    except NamespaceNotReady as e:
        print(f"genie-worker: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"genie-worker: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. the Temporal server is unreachable
        print(f"genie-worker: cannot connect to Temporal: {e}", file=sys.stderr)
        return 2
    return 0


def _exit_now(code: int) -> NoReturn:
    """Leave without interpreter finalization, once everything is flushed.

    The Temporal SDK's Rust threads may still call into Python while the interpreter
    finalizes, which aborts the process with SIGABRT ("PyGILState_Release: thread state
    must be current", temporalio/sdk-python#300) after an otherwise clean shutdown; an
    orchestrator then sees a crash instead of exit code 0. By the time ``main`` returns
    the worker has drained and closed everything, so skipping finalization loses nothing.
    """
    shutdown_tracing()  # export the spans still batched: os._exit skips atexit
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
