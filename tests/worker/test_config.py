"""``python worker.py`` with bad settings: one line naming the setting, before connecting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import REPO_ROOT, free_port

SECRET = "s3cr3t-key-that-must-not-be-echoed"


def run_worker(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GENIE_", "TEMPORAL_"))}
    # Nothing listens here: a worker that got past configuration would fail to connect,
    # and the test would see a connection error instead of the configuration line.
    base["TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "worker.py")],
        env={**base, "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({}, "GENIE_API_KEY or GENIE_API_KEY_FILE must be set"),
        ({"GENIE_API_KEY": "   "}, "GENIE_API_KEY: the API key is empty"),
        ({"GENIE_API_KEY": SECRET, "GENIE_METRICS_PORT": "http"}, "GENIE_METRICS_PORT:"),
        ({"GENIE_API_KEY": SECRET, "GENIE_METRICS_PORT": "70000"}, "GENIE_METRICS_PORT:"),
        ({"GENIE_API_KEY": SECRET, "GENIE_API_BASE_URL": "not a url"}, "GENIE_API_BASE_URL:"),
        ({"GENIE_API_KEY": SECRET, "GENIE_LOG_LEVEL": "LOUD"}, "GENIE_LOG_LEVEL:"),
        ({"GENIE_API_KEY": SECRET, "GENIE_TASK_QUEUE": ""}, "GENIE_TASK_QUEUE:"),
        ({"GENIE_API_KEY_FILE": "/nonexistent/key"}, "GENIE_API_KEY_FILE: cannot read"),
        (
            {"GENIE_API_KEY": SECRET, "GENIE_USER_ID_PATTERN": "[a-"},
            "GENIE_USER_ID_PATTERN: Value error, not a valid regular expression",
        ),
        (
            {"GENIE_API_KEY": SECRET, "GENIE_ATTACHMENT_HOSTS": "files.example.com,https://x"},
            "GENIE_ATTACHMENT_HOSTS:",
        ),
        (
            {"GENIE_API_KEY": SECRET, "GENIE_ATTACHMENT_ALLOW_PRIVATE_NETWORKS": "maybe"},
            "GENIE_ATTACHMENT_ALLOW_PRIVATE_NETWORKS:",
        ),
        (
            {"GENIE_API_KEY": SECRET, "GENIE_API_KEY_FILE": "/etc/hostname"},
            "GENIE_API_KEY and GENIE_API_KEY_FILE are both set",
        ),
    ],
)
def test_bad_config_stops_with_one_line_naming_the_setting(
    tmp_path: Path, env: dict[str, str], setting: str
) -> None:
    r = run_worker(tmp_path, **env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("genie-worker: configuration error: ")
    assert setting in lines[0]
    assert SECRET not in r.stderr + r.stdout


@pytest.mark.parametrize("content", [None, "this is = = not toml ["])
def test_bad_temporal_profile_is_named(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "temporal.toml"
    if content is not None:
        path.write_text(content)
    r = run_worker(tmp_path, GENIE_API_KEY=SECRET, TEMPORAL_CONFIG_FILE=str(path))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("genie-worker: configuration error: TEMPORAL_")
    assert len(r.stderr.strip().splitlines()) == 1


def test_unreachable_temporal_is_one_clear_line(tmp_path: Path) -> None:
    r = run_worker(tmp_path, GENIE_API_KEY=SECRET)
    assert r.returncode == 2
    assert "cannot connect to Temporal" in r.stderr
    assert SECRET not in r.stderr + r.stdout
