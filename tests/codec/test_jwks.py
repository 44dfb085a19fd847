"""The codec server's check of the Web UI's access token against a JWKS URL: a real local
identity provider (``tests.inbox.test_jwks.IdP``) that goes down, slows down or is
flooded with unknown ``kid``\\ s, and requests through the server's own app."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

import genie_codec.server
from genie_codec.server import codec_app, load_codec_config
from genie_config.jwks import KeySetClient
from tests.codec.conftest import K1, K2
from tests.codec.test_server import PLAIN, UI, _body
from tests.inbox.test_jwks import TIMEOUT, Clock, IdP, closed_port_url

IDP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ISSUER = "https://idp.example.com/"
AUDIENCE = "temporal-ui"


@pytest.fixture
def idp() -> Iterator[IdP]:
    server = IdP()
    server.keys["ui-1"] = IDP_KEY
    yield server
    server.stop()


@pytest.fixture
def made() -> list[KeySetClient]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks_env(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, made: list[KeySetClient]
) -> pytest.MonkeyPatch:
    """The codec server's settings with the Web UI's tokens checked against a JWKS URL
    (set by each test); its key-set client on the test's clock and short timeout."""
    for name in list(os.environ):
        if name.startswith("GENIE_CODEC_") or name == "GENIE_PAYLOAD_KEY_FILE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("GENIE_PAYLOAD_KEYS", f"{K2},{K1}")
    monkeypatch.setenv("GENIE_CODEC_UI_ORIGINS", UI)
    monkeypatch.setenv("GENIE_CODEC_JWT_ISSUER", ISSUER)
    monkeypatch.setenv("GENIE_CODEC_JWT_AUDIENCE", AUDIENCE)

    def make(url: str) -> KeySetClient:
        made.append(KeySetClient(url, clock=clock, timeout=TIMEOUT))
        return made[-1]

    monkeypatch.setattr(genie_codec.server, "KeySetClient", make)
    return monkeypatch


async def _codec(jwks_env: pytest.MonkeyPatch, url: str) -> httpx.AsyncClient:
    jwks_env.setenv("GENIE_CODEC_JWT_JWKS_URL", url)
    app = codec_app(load_codec_config())
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://codec.test")


@pytest.fixture
async def codec(jwks_env: pytest.MonkeyPatch, idp: IdP) -> AsyncIterator[httpx.AsyncClient]:
    async with await _codec(jwks_env, idp.url) as c:
        yield c


def _token(key: RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "ops@example.com", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    return jwt.encode({**body, **claims}, key, algorithm="RS256", headers={"kid": kid})


async def _encode(codec: httpx.AsyncClient, token: str) -> httpx.Response:
    headers = {"Origin": UI, "X-Namespace": "default", "Authorization": f"Bearer {token}"}
    return await codec.post("/encode", json=_body(PLAIN), headers=headers)


async def test_the_web_uis_token_verifies_against_the_jwks(
    codec: httpx.AsyncClient, idp: IdP, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genie_codec.access")
    r = await _encode(codec, _token(IDP_KEY, "ui-1"))
    assert r.status_code == 200, r.text
    entry = json.loads([x for x in caplog.records if x.name == "genie_codec.access"][-1].msg)
    assert entry["principal"] == "jwt ops@example.com"
    # Issuer and audience are still checked, as with a PEM key.
    assert (await _encode(codec, _token(IDP_KEY, "ui-1", aud="other"))).status_code == 401
    assert (await _encode(codec, _token(IDP_KEY, "ui-1", iss="https://x/"))).status_code == 401
    assert (await _encode(codec, _token(STRANGER, "ui-1"))).status_code == 401
    assert idp.fetches == 1


async def test_an_idp_outage_neither_locks_users_out_nor_slows_requests(
    codec: httpx.AsyncClient, idp: IdP, clock: Clock, made: list[KeySetClient]
) -> None:
    token = _token(IDP_KEY, "ui-1")
    assert (await _encode(codec, token)).status_code == 200
    idp.mode = "slow"
    clock.now += 301
    started = time.monotonic()
    answers = await asyncio.gather(*(_encode(codec, token) for _ in range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert time.monotonic() - started < 1.0
    assert made[0].wait_idle(5)
    assert idp.fetches == 2, "20 requests during an expiry: one refresh"


async def test_unknown_kids_are_refused_without_hammering_the_idp(
    codec: httpx.AsyncClient, idp: IdP, clock: Clock
) -> None:
    assert (await _encode(codec, _token(IDP_KEY, "ui-1"))).status_code == 200
    forged = [_token(STRANGER, uuid.uuid4().hex) for _ in range(200)]
    started = time.monotonic()
    answers = await asyncio.gather(*(_encode(codec, t) for t in forged))
    assert {a.status_code for a in answers} == {401}
    assert answers[0].json() == {"error": "the bearer token is not accepted here"}
    assert time.monotonic() - started < 3.0
    assert idp.fetches == 1
    clock.now += 31
    answers = await asyncio.gather(*(_encode(codec, t) for t in forged))
    assert {a.status_code for a in answers} == {401}
    assert idp.fetches == 2


async def test_an_idp_down_from_the_start_is_a_prompt_401(
    jwks_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genie_codec.server")
    token = _token(IDP_KEY, "ui-1")
    async with await _codec(jwks_env, closed_port_url()) as codec:
        started = time.monotonic()
        r = await _encode(codec, token)
        assert time.monotonic() - started < TIMEOUT + 0.5
    assert r.status_code == 401
    assert r.json() == {"error": "the bearer token is not accepted here"}
    assert "JWT refused (KeySetUnavailable)" in caplog.text
    assert token not in caplog.text
