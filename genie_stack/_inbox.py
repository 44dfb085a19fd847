"""The approvers' inbox as a child process, and the environment that configures it."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from genie_stack._ports import free_port
from genie_stack._process import Child
from genie_stack._services import NAMESPACE, _answers, _env_value
from inbox._settings import InboxSettings
from workflows import DEFAULT_TASK_QUEUE


@dataclass(kw_only=True)
class InboxProcess(Child):
    """``python -m inbox`` on ``host:port`` with exactly the environment ``env`` (see
    ``inbox_env``); healthy once ``/healthz`` answers."""

    name: ClassVar[str] = "inbox"
    env: dict[str, str]
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "inbox", "--host", self.host, "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return self.env

    def healthy(self) -> bool:
        return _answers(f"{self.url}/healthz")


def _inbox_env(setting: str) -> str:
    """The variable an ``InboxSettings`` field is read from (``GENIE_INBOX_`` + its name)."""
    if setting not in InboxSettings.model_fields:
        raise KeyError(f"InboxSettings has no setting {setting!r}")
    return (InboxSettings.model_config.get("env_prefix", "") + setting).upper()


def inbox_env(
    *,
    temporal_address: str,
    task_queue: str = DEFAULT_TASK_QUEUE,
    settings: Mapping[str, object] | None = None,
    extra: Mapping[str, str] | None = None,
    inherit: bool = True,
) -> dict[str, str]:
    """The whole environment of a stack's inbox.

    This process's environment (with ``inherit=False``, without any ``GENIE_*`` or
    ``TEMPORAL_*`` of it); then where Temporal is, the task queue, and the
    ``GENIE_INBOX_*`` settings, each named by its ``InboxSettings`` field
    (``{"auth": "dev", "allow_dev": True}``); last ``extra``, passed through as given.
    """
    env = {
        k: v for k, v in os.environ.items() if inherit or not k.startswith(("GENIE_", "TEMPORAL_"))
    }
    env.update(
        TEMPORAL_ADDRESS=temporal_address,
        TEMPORAL_NAMESPACE=NAMESPACE,
        GENIE_TASK_QUEUE=task_queue,
        PYTHONUNBUFFERED="1",
    )
    env.update({_inbox_env(k): _env_value(v) for k, v in (settings or {}).items() if v is not None})
    env.update(extra or {})
    return env
