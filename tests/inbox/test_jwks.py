"""The identity provider's key set (``genie_config.jwks``), against a real local JWKS
endpoint whose behaviour each test switches, and through the inbox's ``Authenticator``.

The endpoint counts the requests that reach it: that count, not the client's own view, is
what the throttle and single-flight assertions hold against. Time is a clock the test
moves, so "after the refresh interval" takes no waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

import inbox._auth
from genie_config.jwks import (
    KeySetClient,
    KeySetUnavailable,
    UnknownSigningKey,
    parse_key_set,
)
from inbox._auth import Authenticator, Unauthenticated
from inbox._settings import load_inbox_config
from tests.inbox.helpers import AUDIENCE, ISSUER

KEY_1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
TIMEOUT = 0.5
"""The client's fetch timeout in these tests; a slow endpoint sleeps well past it."""


class IdP:
    """A JWKS endpoint on a real HTTP server in a thread. ``mode``: ``up``; ``down``
    (503); ``slow`` (answers after ``slow_seconds``); ``huge`` (over a megabyte, no
    declared length); ``gzip`` (a compressed bomb); ``garbage`` (not JSON); ``redirect``
    (302 to itself)."""

    def __init__(self) -> None:
        self.keys: dict[str, RSAPrivateKey] = {}
        self.mode = "up"
        self.delay = 0.0
        """Seconds before an ``up`` answer, to let concurrent callers pile up."""
        self.slow_seconds = 3.0
        self.fetches = 0
        self._lock = threading.Lock()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # OSError: the client gave up (timed out), as it does with a slow IdP.
                with contextlib.suppress(OSError):
                    idp._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def document(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.fetches += 1
            mode = self.mode
        if mode == "down":
            h.send_error(503)
            return
        if mode == "slow":
            time.sleep(self.slow_seconds)
        if mode == "redirect":
            h.send_response(302)
            h.send_header("Location", self.url)
            h.end_headers()
            return
        if mode == "gzip":  # 64 MiB of spaces in 64 KiB: refused, never inflated
            data = gzip.compress(b'{"keys": [], "pad": "' + b" " * (64 << 20), 9)
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Encoding", "gzip")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        if mode == "huge":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.end_headers()  # no Content-Length: the client must count as it reads
            h.wfile.write(b'{"keys": [], "pad": "')
            for _ in range(40):
                h.wfile.write(b"x" * 65536)
            return
        time.sleep(self.delay)
        body = b"<html>sign in</html>" if mode == "garbage" else json.dumps(self.document())
        data = body.encode() if isinstance(body, str) else body
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> Iterator[IdP]:
    server = IdP()
    server.keys["k1"] = KEY_1
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def closed_port_url() -> str:
    """A URL nothing listens on: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks"


def client_for(url: str, clock: Clock, **kwargs: Any) -> KeySetClient:
    options: dict[str, Any] = {
        "timeout": TIMEOUT,
        "refresh_interval": 300.0,
        "min_interval": 30.0,
        "max_stale": 3600.0,
        **kwargs,
    }
    return KeySetClient(url, clock=clock, **options)


def signed(key: RSAPrivateKey, kid: str | None, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "email": "alice@example.test",
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(body, key, algorithm="RS256", headers=headers)


async def verified(client: KeySetClient, token: str) -> dict[str, Any]:
    key = (await client.signing_key(token)).key
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER
    )
    return claims


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "genie_config.jwks" and r.levelno == level]


# -- the key-set client ------------------------------------------------------------------


async def test_a_token_signed_with_a_published_key_verifies(idp: IdP, clock: Clock) -> None:
    client = client_for(idp.url, clock)
    assert (await verified(client, signed(KEY_1, "k1")))["sub"] == "user-123"
    assert (await verified(client, signed(KEY_1, "k1", sub="bob")))["sub"] == "bob"
    assert idp.fetches == 1, "a second token with a known kid fetched again"
    with pytest.raises(jwt.InvalidSignatureError):
        await verified(client, signed(KEY_2, "k1"))  # a forgery naming a real kid
    with pytest.raises(UnknownSigningKey):
        await client.signing_key(signed(KEY_1, None))
    assert idp.fetches == 1


@pytest.mark.parametrize("failure", ["down", "slow"])
async def test_a_known_key_still_verifies_quickly_while_the_idp_is_down(
    idp: IdP, clock: Clock, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    caplog.set_level(logging.INFO, logger="genie_config.jwks")
    client = client_for(idp.url, clock)
    token = signed(KEY_1, "k1")
    await verified(client, token)
    idp.mode = failure
    for _ in range(3):
        clock.now += 301  # past the refresh interval (and the throttle) each time
        started = time.monotonic()
        assert (await verified(client, token))["sub"] == "user-123"
        assert time.monotonic() - started < 0.2, "a known key waited for the refresh"
        assert client.wait_idle(TIMEOUT * 3 + 3)
    assert idp.fetches == 4, "one background refresh per interval, no more"
    warned = records(caplog, logging.WARNING)
    assert len(warned) == 1, "one line per failure streak"
    assert "using the one fetched" in warned[0].getMessage()
    assert token not in caplog.text and "k1" not in caplog.text

    # Back up: the next refresh succeeds, and says so; failing again starts a new streak.
    idp.mode = "up"
    clock.now += 301
    await verified(client, token)
    assert client.wait_idle(5)
    assert any("fetched again" in r.getMessage() for r in records(caplog, logging.INFO))
    idp.mode = "down"
    clock.now += 301
    await verified(client, token)
    assert client.wait_idle(5)
    assert len(records(caplog, logging.WARNING)) == 2


async def test_the_last_good_key_set_is_trusted_for_a_bounded_time(
    idp: IdP, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(idp.url, clock, max_stale=3600.0)
    token = signed(KEY_1, "k1")
    await verified(client, token)
    idp.mode = "down"
    clock.now += 3000
    await verified(client, token)
    assert client.wait_idle(5)
    clock.now += 601  # 3601 s since the last good fetch
    with pytest.raises(KeySetUnavailable):
        await client.signing_key(token)
    assert any("over 3600 s old" in r.getMessage() for r in records(caplog, logging.ERROR))
    idp.mode = "up"
    clock.now += 31
    assert (await verified(client, token))["sub"] == "user-123"


async def test_a_flood_of_unknown_kids_costs_the_idp_one_fetch_per_interval(
    idp: IdP, clock: Clock
) -> None:
    client = client_for(idp.url, clock)
    await verified(client, signed(KEY_1, "k1"))
    tokens = [signed(KEY_2, uuid.uuid4().hex) for _ in range(200)]

    async def attempt(token: str) -> BaseException | None:
        try:
            await client.signing_key(token)
        except UnknownSigningKey as e:
            return e
        return None

    started = time.monotonic()
    outcomes = await asyncio.gather(*(attempt(t) for t in tokens))
    assert all(isinstance(o, UnknownSigningKey) for o in outcomes)
    assert time.monotonic() - started < 1.0
    assert idp.fetches == 1, "unknown kids within the throttle reached the IdP"

    clock.now += 31
    outcomes = await asyncio.gather(*(attempt(t) for t in tokens))
    assert all(isinstance(o, UnknownSigningKey) for o in outcomes)
    assert idp.fetches == 2, "200 unknown kids after the throttle: one shared fetch"
    assert (await verified(client, signed(KEY_1, "k1")))["sub"] == "user-123"


async def test_concurrent_first_use_shares_one_fetch(idp: IdP, clock: Clock) -> None:
    idp.delay = 0.3
    client = client_for(idp.url, clock)
    tokens = [signed(KEY_1, "k1", sub=f"user-{n}") for n in range(50)]
    claims = await asyncio.gather(*(verified(client, t) for t in tokens))
    assert [c["sub"] for c in claims] == [f"user-{n}" for n in range(50)]
    assert idp.fetches == 1


async def test_an_idp_down_from_the_start_is_a_prompt_refusal(clock: Clock) -> None:
    client = client_for(closed_port_url(), clock)
    token = signed(KEY_1, "k1")
    started = time.monotonic()
    with pytest.raises(KeySetUnavailable):
        await client.signing_key(token)
    with pytest.raises(KeySetUnavailable):
        await client.signing_key(token)  # throttled: no second attempt, no wait
    assert time.monotonic() - started < TIMEOUT + 0.5


async def test_a_slow_idp_from_the_start_is_refused_after_the_short_timeout(
    idp: IdP, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    idp.mode = "slow"
    client = client_for(idp.url, clock)
    token = signed(KEY_1, "k1")
    started = time.monotonic()
    with pytest.raises(KeySetUnavailable):
        await client.signing_key(token)
    assert time.monotonic() - started < TIMEOUT * 3 + 0.5
    assert len(records(caplog, logging.ERROR)) == 1
    assert "timed out" in caplog.text and token not in caplog.text
    # Within the throttle: refused at once, the IdP not asked again.
    with pytest.raises(KeySetUnavailable):
        await client.signing_key(token)
    assert idp.fetches == 1
    # After it, the next request tries again, and the IdP is back.
    idp.mode = "up"
    clock.now += 31
    assert (await verified(client, token))["sub"] == "user-123"
    assert idp.fetches == 2


async def test_a_rotated_key_is_picked_up_after_the_throttle(idp: IdP, clock: Clock) -> None:
    client = client_for(idp.url, clock)
    old, new = signed(KEY_1, "k1"), signed(KEY_2, "k2")
    await verified(client, old)
    idp.keys["k2"] = KEY_2
    with pytest.raises(UnknownSigningKey):
        await client.signing_key(new)  # within the throttle of the first fetch
    assert idp.fetches == 1
    clock.now += 31
    assert (await verified(client, new))["sub"] == "user-123"
    assert idp.fetches == 2

    # The old key retired at the IdP: trusted until the next refresh, not after.
    del idp.keys["k1"]
    await verified(client, old)
    clock.now += 301
    await verified(client, old)  # answered from the cache; the refresh runs behind it
    assert client.wait_idle(5)
    with pytest.raises(UnknownSigningKey):
        await client.signing_key(old)
    assert (await verified(client, new))["sub"] == "user-123"


@pytest.mark.parametrize("mode", ["huge", "gzip", "garbage", "redirect", "down"])
async def test_an_unusable_answer_is_refused_cleanly(
    idp: IdP, clock: Clock, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    idp.mode = mode
    client = client_for(idp.url, clock, timeout=3.0)
    token = signed(KEY_1, "k1")
    with pytest.raises(KeySetUnavailable):
        await client.signing_key(token)
    assert idp.fetches == 1, "followed a redirect" if mode == "redirect" else "fetched twice"
    reason = {
        "huge": "over 1048576 bytes",
        "gzip": "Content-Encoding 'gzip'",
        "garbage": "not JSON",
        "redirect": "HTTP 302",
    }
    assert reason.get(mode, "HTTP 503") in caplog.text
    assert "sign in" not in caplog.text and "xxxx" not in caplog.text  # never the body

    # A bad answer after a good one: the good one stays.
    idp.mode = "up"
    clock.now += 31
    await verified(client, token)
    idp.mode = mode
    clock.now += 301
    await verified(client, token)
    assert client.wait_idle(5)
    assert (await verified(client, token))["sub"] == "user-123"


def test_only_public_signing_keys_with_a_kid_are_kept() -> None:
    good = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY_1.public_key()))
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY_2))
    document = {
        "keys": [
            {**good, "kid": "rsa"},
            {**good, "kid": "enc", "use": "enc"},
            {**good},  # no kid
            {**good, "kid": "hmac-alg", "alg": "HS256"},
            {**private, "kid": "private"},
            {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "oct"},
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            "not a key",
        ]
    }
    assert list(parse_key_set(json.dumps(document).encode())) == ["rsa"]


# -- through the inbox ----------------------------------------------------------------


@pytest.fixture
def made() -> list[KeySetClient]:
    """The key-set clients the code under test made (to wait for their fetches)."""
    return []


@pytest.fixture
def inbox_auth(
    idp: IdP, clock: Clock, made: list[KeySetClient], no_genie_env: pytest.MonkeyPatch
) -> Authenticator:
    def make(url: str) -> KeySetClient:
        made.append(KeySetClient(url, clock=clock, timeout=TIMEOUT))
        return made[-1]

    no_genie_env.setattr(inbox._auth, "KeySetClient", make)
    config = load_inbox_config(
        auth="jwt",
        jwt_jwks_url=idp.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_algorithms="RS256",
        jwt_name_claim="email",
    )
    return Authenticator(config)


async def test_the_inbox_keeps_approvers_in_while_the_idp_is_down(
    idp: IdP, clock: Clock, inbox_auth: Authenticator, made: list[KeySetClient]
) -> None:
    token = signed(KEY_1, "k1", groups=["approvers"])
    who = await inbox_auth.verify_token(token, via="bearer")
    assert (who.name, who.groups, who.method) == ("alice@example.test", ("approvers",), "jwt")
    idp.mode = "slow"
    clock.now += 301
    started = time.monotonic()
    assert (await inbox_auth.verify_token(token)).name == "alice@example.test"
    assert time.monotonic() - started < 0.5
    # Still every check: a token for another audience is refused as before.
    with pytest.raises(Unauthenticated, match="audience"):
        await inbox_auth.verify_token(signed(KEY_1, "k1", aud="elsewhere"))
    # An unknown kid: the existing refusal, and the IdP not asked per request.
    assert made[0].wait_idle(5)
    fetched = idp.fetches
    assert fetched == 2
    for _ in range(20):
        with pytest.raises(Unauthenticated, match=r"^no trusted key matches the token$"):
            await inbox_auth.verify_token(signed(KEY_2, uuid.uuid4().hex))
    assert idp.fetches == fetched


async def test_the_inbox_refuses_promptly_when_the_idp_never_answered(
    idp: IdP, inbox_auth: Authenticator
) -> None:
    idp.mode = "down"
    token = signed(KEY_1, "k1")
    started = time.monotonic()
    with pytest.raises(Unauthenticated) as e:
        await inbox_auth.verify_token(token, via="bearer")
    assert str(e.value) == "no trusted key matches the token"
    assert time.monotonic() - started < 3.0
    assert idp.fetches == 1
