"""``GENIE_API_REGION``: the workspace's data centre names the Headless API host.

Credentials are scoped to a data centre, so a worker must call its workspace's host.
Either the region or a full ``GENIE_API_BASE_URL`` is set; both, naming different hosts,
stop the worker at start-up with one line naming both settings.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from genie_config import ConfigError, load_settings
from genie_config._settings import API_REGIONS, region_base_url
from tests.services import REPO_ROOT


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GENIE_API_REGION", "GENIE_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("us", "https://genie-api.workato.com/"),
        ("eu", "https://genie-api.eu.workato.com/"),
        ("jp", "https://genie-api.jp.workato.com/"),
        ("sg", "https://genie-api.sg.workato.com/"),
        ("au", "https://genie-api.au.workato.com/"),
        ("in", "https://genie-api.in.workato.com/"),
        ("il", "https://genie-api.il.workato.com/"),
        (" EU ", "https://genie-api.eu.workato.com/"),
    ],
)
def test_region_names_the_host(monkeypatch: pytest.MonkeyPatch, region: str, host: str) -> None:
    monkeypatch.setenv("GENIE_API_REGION", region)
    settings = load_settings()
    assert str(settings.api_base_url) == host
    assert settings.api_region == region.strip().lower()
    assert region_base_url(region) == host.rstrip("/")


def test_every_region_is_a_workato_genie_api_host() -> None:
    assert set(API_REGIONS) == {"us", "eu", "jp", "sg", "au", "in", "il"}
    for url in API_REGIONS.values():
        assert url.startswith("https://genie-api.") and url.endswith(".workato.com")


def test_without_a_region_the_base_url_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_API_BASE_URL", "https://proxy.example.com/genie")
    assert str(load_settings().api_base_url) == "https://proxy.example.com/genie"
    monkeypatch.setenv("GENIE_API_REGION", "")  # empty means unset
    assert str(load_settings().api_base_url) == "https://proxy.example.com/genie"


def test_region_and_the_same_base_url_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_API_REGION", "eu")
    monkeypatch.setenv("GENIE_API_BASE_URL", "https://GENIE-API.eu.workato.com")
    assert str(load_settings().api_base_url) == "https://genie-api.eu.workato.com/"


@pytest.mark.parametrize("url", ["https://genie-api.workato.com", "http://127.0.0.1:8787", "x"])
def test_region_and_another_base_url_conflict(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("GENIE_API_REGION", "jp")
    monkeypatch.setenv("GENIE_API_BASE_URL", url)
    with pytest.raises(ConfigError) as conflict:
        load_settings()
    text = str(conflict.value)
    assert "GENIE_API_REGION=jp" in text and "GENIE_API_BASE_URL" in text
    assert "set only one" in text
    assert "\n" not in text


def test_an_unknown_region_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_API_REGION", "mars")
    with pytest.raises(ConfigError) as unknown:
        load_settings()
    assert str(unknown.value).startswith("GENIE_API_REGION: 'mars' is not a data centre")
    with pytest.raises(ValueError, match="unknown data centre"):
        region_base_url("mars")


def test_the_worker_stops_at_start_up_on_a_conflict() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "GENIE_API_KEY": "k",
        "GENIE_API_REGION": "eu",
        "GENIE_API_BASE_URL": "https://genie-api.workato.com",
    }
    done = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "configuration error" in done.stderr
    assert "GENIE_API_REGION=eu" in done.stderr


def test_auth_settle_seconds_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().auth_settle_seconds == 60.0
    monkeypatch.setenv("GENIE_AUTH_SETTLE_SECONDS", "15")
    assert load_settings().auth_settle_seconds == 15.0
    monkeypatch.setenv("GENIE_AUTH_SETTLE_SECONDS", "-1")
    with pytest.raises(ConfigError, match="GENIE_AUTH_SETTLE_SECONDS"):
        load_settings()
