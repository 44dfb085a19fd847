"""GENIE_WORKER_DEPLOYMENT_NAME / GENIE_WORKER_BUILD_ID: off unless both are set, refused
at start-up when half set or malformed, and what the worker then polls as."""

from __future__ import annotations

import pytest
from temporalio.common import VersioningBehavior

from genie_config import ConfigError, load_settings
from worker import deployment_config


@pytest.fixture(autouse=True)
def _clean_env(no_genie_env: pytest.MonkeyPatch) -> None:
    no_genie_env.setenv("GENIE_API_KEY", "k")


def test_unset_or_empty_is_an_unversioned_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    assert deployment_config(load_settings()) is None
    # docker-compose.yml passes both as empty strings by default.
    monkeypatch.setenv("GENIE_WORKER_DEPLOYMENT_NAME", "")
    monkeypatch.setenv("GENIE_WORKER_BUILD_ID", " ")
    assert deployment_config(load_settings()) is None


def test_both_set_make_a_versioned_worker_that_pins_conversations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENIE_WORKER_DEPLOYMENT_NAME", " genie-worker ")
    monkeypatch.setenv("GENIE_WORKER_BUILD_ID", "2026-12-02-3f9c1e7")
    config = deployment_config(load_settings())
    assert config is not None and config.use_worker_versioning
    assert (config.version.deployment_name, config.version.build_id) == (
        "genie-worker",
        "2026-12-02-3f9c1e7",
    )
    assert config.default_versioning_behavior == VersioningBehavior.PINNED


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GENIE_WORKER_DEPLOYMENT_NAME": "genie-worker"}, "set both"),
        ({"GENIE_WORKER_BUILD_ID": "b1"}, "set both"),
        (
            {"GENIE_WORKER_DEPLOYMENT_NAME": "genie.worker", "GENIE_WORKER_BUILD_ID": "b1"},
            "GENIE_WORKER_DEPLOYMENT_NAME: ",
        ),
        (
            {"GENIE_WORKER_DEPLOYMENT_NAME": "genie-worker", "GENIE_WORKER_BUILD_ID": "b 1"},
            "GENIE_WORKER_BUILD_ID: ",
        ),
        (
            {"GENIE_WORKER_DEPLOYMENT_NAME": "genie-worker", "GENIE_WORKER_BUILD_ID": "b" * 256},
            "GENIE_WORKER_BUILD_ID: ",
        ),
    ],
)
def test_half_set_or_malformed_stops_the_worker_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()
