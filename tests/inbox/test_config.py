"""The inbox's configuration, its commands, and the pieces that need no server.

A bad setting stops ``geniectl inbox`` with one line naming it and never the value (some
are secrets); ``geniectl keygen`` prints a key pair the worker and the inbox agree on.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from genie_config import ConfigError, GenieSettings
from genie_stack import free_port
from inbox._auth import Identity
from inbox._data import safe_url
from inbox._explain import explain
from inbox._session import Session, SessionCodec
from inbox._settings import load_inbox_config
from workflows import errors
from workflows.signing import public_key_text

GENIECTL = str(Path(sys.executable).parent / "geniectl")
SECRETISH = "s3cr3t-value-that-must-not-leak"
DEV = {"GENIE_INBOX_AUTH": "dev", "GENIE_INBOX_ALLOW_DEV": "true"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GENIE_INBOX_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"GENIE_INBOX_AUTH": "dev"}, "GENIE_INBOX_ALLOW_DEV=true"),
        ({"GENIE_INBOX_AUTH": "sso"}, "GENIE_INBOX_AUTH:"),
        ({}, "GENIE_INBOX_JWT_PUBLIC_KEY"),
        (
            {"GENIE_INBOX_JWT_JWKS_URL": "https://idp.test/jwks", "GENIE_INBOX_JWT_ISSUER": "i"},
            "GENIE_INBOX_JWT_AUDIENCE must be set",
        ),
        ({"GENIE_INBOX_JWT_PUBLIC_KEY": SECRETISH}, "GENIE_INBOX_JWT_ISSUER must be set"),
        (
            {
                "GENIE_INBOX_JWT_PUBLIC_KEY": SECRETISH,
                "GENIE_INBOX_JWT_ISSUER": "i",
                "GENIE_INBOX_JWT_AUDIENCE": "a",
            },
            "not a PEM public key",
        ),
        ({"GENIE_INBOX_JWT_ALGORITHMS": "HS256"}, "only public-key algorithms"),
        ({"GENIE_INBOX_AUTH": "proxy"}, "GENIE_INBOX_TRUSTED_PROXIES"),
        (
            {"GENIE_INBOX_AUTH": "proxy", "GENIE_INBOX_TRUSTED_PROXIES": "10.0.0.0/8,nope"},
            "'nope' is not an address or CIDR",
        ),
        (
            {**DEV, "GENIE_INBOX_SIGNING_KEY": SECRETISH},
            "GENIE_INBOX_SIGNING_KEY: not base64 of a raw 32-byte Ed25519 private key",
        ),
        (
            {**DEV, "GENIE_INBOX_SESSION_SECRET": "short-" + SECRETISH[:5]},
            "GENIE_INBOX_SESSION_SECRET: use at least 32",
        ),
        (
            {**DEV, "GENIE_INBOX_SIGNING_KEY_FILE": "/nonexistent/key"},
            "GENIE_INBOX_SIGNING_KEY_FILE: cannot read /nonexistent/key",
        ),
        ({"GENIE_INBOX_PORT": "99999"}, "GENIE_INBOX_PORT:"),
    ],
)
def test_a_bad_setting_is_one_line_that_names_it_and_never_the_value(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as e:
        load_inbox_config()
    message = str(e.value)
    assert says in message and "\n" not in message
    assert SECRETISH not in message and SECRETISH[:5] not in message.replace("GENIE", "")


def test_the_keys_load_from_files_and_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / "key.pem").write_bytes(pem)
    monkeypatch.setenv("GENIE_INBOX_AUTH", "dev")
    monkeypatch.setenv("GENIE_INBOX_ALLOW_DEV", "1")
    monkeypatch.setenv("GENIE_INBOX_SIGNING_KEY_FILE", str(tmp_path / "key.pem"))
    monkeypatch.setenv("GENIE_INBOX_SIGNING_KEY_ID", "k9")
    config = load_inbox_config()
    assert config.signing_key is not None and config.signing_key_id == "k9"
    assert public_key_text(config.signing_key) == public_key_text(key)
    assert config.session_secret_generated and len(config.session_secret) == 32
    monkeypatch.setenv("GENIE_INBOX_SIGNING_KEY", "x")
    with pytest.raises(ConfigError, match="are both set"):
        load_inbox_config()


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_geniectl_inbox_refuses_bad_configuration_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENIE_INBOX_")}
    env.update(GENIE_INBOX_AUTH="dev", GENIE_INBOX_SIGNING_KEY=SECRETISH)
    code, out, err = await _run(GENIECTL, "inbox", "--port", "1", env=env)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "GENIE_INBOX_ALLOW_DEV" in err, err
    code, out, _ = await _run(sys.executable, "-m", "inbox", "--help", env=env)
    assert code == 0 and "--port" in out
    # Configured, but Temporal is not there: said in one line, before serving anything.
    env.update(GENIE_INBOX_ALLOW_DEV="true", GENIE_INBOX_SIGNING_KEY="")
    env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"
    code, out, err = await _run(GENIECTL, "inbox", "--port", str(free_port()), env=env)
    assert code == 2 and out == "", err
    assert err.strip().count("\n") == 0 and "cannot connect to Temporal at 127.0.0.1:" in err


async def test_keygen_prints_a_pair_the_worker_and_inbox_agree_on(tmp_path: Path) -> None:
    env = dict(os.environ)
    code, out, _ = await _run(GENIECTL, "keygen", "--key-id", "prod-1", env=env)
    assert code == 0
    lines = dict(line.split("=", 1) for line in out.splitlines() if not line.startswith("#"))
    assert lines["GENIE_INBOX_SIGNING_KEY_ID"] == "prod-1"
    private = Ed25519PrivateKey.from_private_bytes(
        base64.b64decode(lines["GENIE_INBOX_SIGNING_KEY"])
    )
    assert lines["GENIE_DECISION_KEYS"] == f"prod-1:{public_key_text(private)}"
    # The worker's own setting parses the printed line.
    assert GenieSettings(decision_keys=lines["GENIE_DECISION_KEYS"]).decision_keys == {
        "prod-1": public_key_text(private)
    }
    # To a file: private to its owner, never overwritten.
    path = tmp_path / "inbox.key"
    code, out, _ = await _run(GENIECTL, "keygen", "--private-key-file", str(path), env=env)
    assert code == 0 and "GENIE_INBOX_SIGNING_KEY=" not in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"GENIE_INBOX_SIGNING_KEY_FILE={path}" in out
    code, _, err = await _run(GENIECTL, "keygen", "--private-key-file", str(path), env=env)
    assert code == 2 and "File exists" in err


def test_the_session_cookie_resists_tampering_and_ages_out() -> None:
    codec = SessionCodec(b"k" * 32, max_age_seconds=60)
    s = Session()
    s.login(dev_name="alice")
    cookie = codec.dump(s)
    assert cookie is not None
    back = codec.load(cookie)
    assert (back.dev_name, back.csrf, back.dirty) == ("alice", s.csrf, False)
    version, payload, mac = cookie.split(".")
    forged_payload = base64.urlsafe_b64encode(b'{"c":"x","i":9999999999,"d":"mallory"}')
    for bad in (
        f"{version}.{forged_payload.decode().rstrip('=')}.{mac}",
        f"{version}.{payload}.{mac[:-2]}AA",
        "v2." + cookie[3:],
        "garbage",
        "",
    ):
        fresh = codec.load(bad)
        assert fresh.dev_name is None and fresh.dirty and fresh.csrf != s.csrf
    assert SessionCodec(b"o" * 32, 60).load(cookie).dev_name is None  # another secret
    s.issued = int(time.time()) - 120
    assert codec.load(codec.dump(s)).dev_name is None  # too old
    # The CSRF check compares whole tokens only.
    assert s.check_csrf(s.csrf) and not s.check_csrf(s.csrf[:-1]) and not s.check_csrf(None)


def test_auth_links_are_only_http_and_refusals_read_as_sentences() -> None:
    assert safe_url("https://a.test/x?y=1") == "https://a.test/x?y=1"
    for bad in ("javascript:alert(1)", "data:text/html,x", "//a.test", "http://", "", None):
        assert safe_url(bad) is None, bad
    me = Identity("alice", (), "jwt", "bearer")
    for type, words, status in (
        (errors.ALREADY_DECIDED, "Someone decided this before you", 409),
        (errors.DEADLINE_EXPIRED, "deadline for this decision has passed", 409),
        (errors.APPROVER_NOT_ALLOWED, "You (alice) are not among those who may", 403),
        (errors.SECOND_APPROVER_REQUIRED, "second approval from someone else", 409),
        (errors.INVALID_SIGNATURE, "signed by a trusted inbox", 403),
        (errors.UNKNOWN_CALL_ID, "not waiting for this decision", 404),
        (errors.CONVERSATION_ENDED, "has ended", 410),
        (errors.INVALID_INPUT, "malformed", 422),
        ("SomethingNew", "(SomethingNew)", 409),
    ):
        ex = explain(type, "detail", me=me, ref="call_1")
        assert words in ex.sentence and ex.http_status == status, type


def test_the_compose_service_is_a_valid_inbox_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The inbox service in docker-compose.yml: only with its profile, every name a
    setting, and its defaults plus what docs/inbox.md asks for load as a configuration."""
    from inbox._app import create_app
    from inbox._settings import InboxSettings
    from tests.deploy.helpers import COMPOSE_FILE, active_services, interpolate, load_yaml
    from tests.deploy.helpers import environment as env_of

    compose = interpolate(load_yaml(COMPOSE_FILE), {})
    assert "inbox" not in active_services(compose, set())
    service = active_services(compose, {"inbox"})["inbox"]
    assert service["entrypoint"] == ["python", "-m", "inbox"]
    assert service["ports"] == ["127.0.0.1:8234:8234"]
    env = env_of(service)
    fields = {f"GENIE_INBOX_{name.upper()}" for name in InboxSettings.model_fields}
    names = {n for n in env if n.startswith("GENIE_INBOX_")}
    assert names <= fields, sorted(names - fields)
    # Temporal's address and the payload keys (the inbox reads encrypted conversations).
    assert set(env) - names == {
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "GENIE_TASK_QUEUE",
        "GENIE_PAYLOAD_KEY_FILE",
    }
    assert "/healthz" in service["healthcheck"]["test"][3]
    routes = {getattr(r, "path", None) for r in create_app(load_inbox_config(**_DEV)).routes}
    assert "/healthz" in routes

    # As shipped: refused with the one line saying what to configure.
    key_file = tmp_path / "genie_inbox_signing_key"
    env["GENIE_INBOX_SIGNING_KEY_FILE"] = str(key_file)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"GENIE_INBOX_AUTH=jwt needs .*JWKS_URL"):
        load_inbox_config()
    # Configured as the guide says: the provider, and a key from `geniectl keygen`.
    raw = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    key_file.write_text(base64.b64encode(raw).decode() + "\n")
    monkeypatch.setenv("GENIE_INBOX_JWT_JWKS_URL", "https://idp.example.test/jwks")
    monkeypatch.setenv("GENIE_INBOX_JWT_ISSUER", "https://idp.example.test/")
    monkeypatch.setenv("GENIE_INBOX_JWT_AUDIENCE", "genie-inbox")
    config = load_inbox_config()
    assert config.signing_key_id == "inbox-1" and config.settings.secure_cookies is True


_DEV = {"auth": "dev", "allow_dev": True}
