"""The attachment and user-id settings: safe defaults, parsing, and errors at load time."""

from __future__ import annotations

import pytest

from genie_config import ConfigError, GenieSettings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(no_genie_env: pytest.MonkeyPatch) -> None:
    no_genie_env.setenv("GENIE_API_KEY", "k")


def test_defaults_allow_no_url_attachments_and_any_user() -> None:
    s = load_settings()
    assert s.attachment_hosts == []
    assert s.attachment_allow_http is False
    assert s.attachment_allow_private_networks is False
    assert s.attachment_timeout_seconds == 30.0
    assert s.user_id_pattern is None
    assert s.user_ids == []


def test_attachment_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "GENIE_ATTACHMENT_HOSTS", " Files.Example.COM. , *.CDN.example.com,,[::1], 10.0.0.8 ,*"
    )
    monkeypatch.setenv("GENIE_ATTACHMENT_ALLOW_HTTP", "true")
    monkeypatch.setenv("GENIE_ATTACHMENT_ALLOW_PRIVATE_NETWORKS", "1")
    monkeypatch.setenv("GENIE_ATTACHMENT_TIMEOUT_SECONDS", "12.5")
    s = load_settings()
    assert s.attachment_hosts == ["files.example.com", "*.cdn.example.com", "::1", "10.0.0.8", "*"]
    assert s.attachment_allow_http and s.attachment_allow_private_networks
    assert s.attachment_timeout_seconds == 12.5


def test_user_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_USER_ID_PATTERN", r"u-[0-9]+")
    monkeypatch.setenv("GENIE_USER_IDS", "u-1, u-2,,")
    s = load_settings()
    assert s.user_id_pattern is not None and s.user_id_pattern.fullmatch("u-12")
    assert s.user_ids == ["u-1", "u-2"]


def test_an_empty_pattern_is_no_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_USER_ID_PATTERN", "")
    assert load_settings().user_id_pattern is None


def test_settings_built_in_code_are_checked_too() -> None:
    s = GenieSettings(attachment_hosts=["A.example.com."], user_id_pattern="x+")
    assert s.attachment_hosts == ["a.example.com"]
    assert s.user_id_pattern is not None and s.user_id_pattern.pattern == "x+"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GENIE_USER_ID_PATTERN", "[a-", "not a valid regular expression"),
        ("GENIE_USER_ID_PATTERN", "(?P<x", "not a valid regular expression"),
        ("GENIE_ATTACHMENT_HOSTS", "https://files.example.com", "is not a host name"),
        ("GENIE_ATTACHMENT_HOSTS", "files.example.com/path", "is not a host name"),
        ("GENIE_ATTACHMENT_HOSTS", "a b.example.com", "is not a host name"),
        ("GENIE_ATTACHMENT_HOSTS", "*.", "is not a host name"),
        ("GENIE_ATTACHMENT_HOSTS", "files.*.example.com", "is not a host name"),
        ("GENIE_ATTACHMENT_HOSTS", "2130706433", "standard form"),
        ("GENIE_ATTACHMENT_HOSTS", "0x7f.1", "standard form"),
        ("GENIE_ATTACHMENT_ALLOW_HTTP", "maybe", "valid boolean"),
        ("GENIE_ATTACHMENT_ALLOW_PRIVATE_NETWORKS", "sure", "valid boolean"),
        ("GENIE_ATTACHMENT_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("GENIE_ATTACHMENT_TIMEOUT_SECONDS", "1000", "less than or equal to 240"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as e:
        load_settings()
    text = str(e.value)
    assert text.startswith(f"{name}: ") and message in text, text
    assert "\n" not in text
