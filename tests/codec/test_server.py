"""The codec server as the Web UI and the CLI call it: protocol, CORS and auth."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from genie_codec import EncryptionCodec, parse_keys
from genie_codec.server import codec_app, load_codec_config
from genie_config import ConfigError
from tests.codec.conftest import K1, K2

UI = "http://127.0.0.1:8233"
TOKEN = "codec-token-0123456789abcdef"
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"text": "hello 9e2f"}')
RSA = generate_private_key(public_exponent=65537, key_size=2048)


def _body(*payloads: Payload) -> dict[str, Any]:
    return json_format.MessageToDict(Payloads(payloads=list(payloads)))


def _payloads(data: dict[str, Any]) -> list[Payload]:
    out = Payloads()
    json_format.ParseDict(data, out)
    return list(out.payloads)


@pytest.fixture
def codec_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("GENIE_PAYLOAD_KEY_FILE",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GENIE_PAYLOAD_KEYS", f"{K2},{K1}")
    monkeypatch.setenv("GENIE_CODEC_UI_ORIGINS", UI)
    monkeypatch.setenv("GENIE_CODEC_TOKEN", TOKEN)
    pem = tmp_path / "idp.pem"
    pem.write_bytes(RSA.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("GENIE_CODEC_JWT_PUBLIC_KEY_FILE", str(pem))
    monkeypatch.setenv("GENIE_CODEC_JWT_ISSUER", "https://idp.example.com/")
    monkeypatch.setenv("GENIE_CODEC_JWT_AUDIENCE", "temporal-ui")
    return tmp_path


def _client(peer: str = "203.0.113.9", **overrides: Any) -> httpx.AsyncClient:
    app = codec_app(load_codec_config(**overrides))
    transport = httpx.ASGITransport(app=app, client=(peer, 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://codec.test")


@pytest.fixture
async def remote(codec_env: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The server as seen from another machine (not loopback)."""
    async with _client() as c:
        yield c


def _ui_headers(**extra: str) -> dict[str, str]:
    return {"Origin": UI, "X-Namespace": "default", **extra}


def _id_token(**claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": "ops@example.com",
        "iss": "https://idp.example.com/",
        "aud": "temporal-ui",
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(body, RSA, algorithm="RS256")


async def test_encode_then_decode_round_trips_per_the_protocol(
    remote: httpx.AsyncClient,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    enc = await remote.post("/encode", json=_body(PLAIN), headers=auth)
    assert enc.status_code == 200, enc.text
    (sealed,) = _payloads(enc.json())
    assert sealed.metadata["encryption-key-id"] == b"k2" and b"9e2f" not in sealed.data
    # Only the last path segment counts: the endpoint may sit at any depth.
    dec = await remote.post("/ns/default/decode", json=enc.json(), headers=auth)
    assert dec.status_code == 200 and _payloads(dec.json()) == [PLAIN]
    old = EncryptionCodec(parse_keys(K1)).encrypt(PLAIN)
    dec = await remote.post("/decode", json=_body(old, PLAIN), headers=auth)
    assert _payloads(dec.json()) == [PLAIN, PLAIN]
    empty = await remote.post("/decode", json={}, headers=auth)
    assert empty.json() == {"payloads": []}


async def test_a_payload_it_cannot_decrypt_comes_back_as_it_was(
    remote: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    foreign = EncryptionCodec(parse_keys("k9:" + K1.partition(":")[2])).encrypt(PLAIN)
    dec = await remote.post(
        "/decode", json=_body(foreign, PLAIN), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert dec.status_code == 200
    assert _payloads(dec.json()) == [foreign, PLAIN]
    assert "key 'k9'" in caplog.text


async def test_the_web_ui_origin_gets_cors_headers_others_are_refused(
    remote: httpx.AsyncClient,
) -> None:
    pre = await remote.options(
        "/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == UI
    assert "X-Namespace" in pre.headers["access-control-allow-headers"]
    ok = await remote.post(
        "/decode", json=_body(PLAIN), headers=_ui_headers(Authorization=f"Bearer {TOKEN}")
    )
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == UI
    for origin in ("https://evil.example.com", "http://127.0.0.1:9999", "null"):
        pre = await remote.options("/decode", headers={"Origin": origin})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
        bad = await remote.post(
            "/decode",
            json=_body(PLAIN),
            headers={"Origin": origin, "Authorization": f"Bearer {TOKEN}"},
        )
        assert bad.status_code == 403, origin
        assert "access-control-allow-origin" not in bad.headers


async def test_requests_without_valid_credentials_are_refused(
    remote: httpx.AsyncClient,
) -> None:
    sealed = EncryptionCodec(parse_keys(K2)).encrypt(PLAIN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {_id_token(aud='another-app')}"},
        {"Authorization": f"Bearer {_id_token(exp=int(time.time()) - 3600)}"},
        {"Authorization": "Bearer " + jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")},
    ):
        r = await remote.post("/decode", json=_body(sealed), headers=_ui_headers(**headers))
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        # The UI can read why (CORS headers on the refusal), but gets nothing decoded.
        assert r.headers["access-control-allow-origin"] == UI
        assert "9e2f" not in r.text


async def test_the_web_uis_access_token_is_accepted(remote: httpx.AsyncClient) -> None:
    """TEMPORAL_CODEC_PASS_ACCESS_TOKEN: the UI forwards the user's token as a bearer."""
    sealed = EncryptionCodec(parse_keys(K2)).encrypt(PLAIN)
    r = await remote.post(
        "/decode",
        json=_body(sealed),
        headers=_ui_headers(Authorization=f"Bearer {_id_token()}"),
    )
    assert r.status_code == 200 and _payloads(r.json()) == [PLAIN]


async def test_development_mode_serves_loopback_callers_only(
    codec_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `geniectl dev` runs: its Web UI sends no credentials."""
    for name in ("TOKEN", "JWT_PUBLIC_KEY_FILE", "JWT_ISSUER", "JWT_AUDIENCE"):
        monkeypatch.delenv(f"GENIE_CODEC_{name}")
    monkeypatch.setenv("GENIE_CODEC_ANONYMOUS_FROM", "loopback")
    sealed = EncryptionCodec(parse_keys(K2)).encrypt(PLAIN)
    async with _client(peer="127.0.0.1") as local:
        r = await local.post("/decode", json=_body(sealed), headers=_ui_headers())
        assert r.status_code == 200 and _payloads(r.json()) == [PLAIN]
    async with _client(peer="::1") as local6:
        assert (await local6.post("/decode", json=_body(sealed))).status_code == 200
    async with _client(peer="192.168.1.20") as lan:
        r = await lan.post("/decode", json=_body(sealed), headers=_ui_headers())
        assert r.status_code == 401


async def test_namespaces_and_body_size_are_limited(codec_env: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with _client(namespaces="genie-prod", max_body_bytes=2048) as c:
        r = await c.post("/decode", json=_body(PLAIN), headers={**auth, "X-Namespace": "other"})
        assert r.status_code == 403
        ok = {**auth, "X-Namespace": "genie-prod"}
        assert (await c.post("/decode", json=_body(PLAIN), headers=ok)).status_code == 200
        big = Payload(metadata={"encoding": b"json/plain"}, data=b"x" * 4096)
        assert (await c.post("/decode", json=_body(big), headers=ok)).status_code == 413
        r = await c.post("/decode", content=b"not json", headers=ok)
        assert r.status_code == 400
        assert (await c.post("/other", json={}, headers=ok)).status_code == 404
        assert (await c.get("/healthz")).text == "ok"


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"GENIE_CODEC_TOKEN": None, "GENIE_CODEC_JWT_PUBLIC_KEY_FILE": None}, "decrypts for"),
        ({"GENIE_CODEC_TOKEN": "short"}, "at least 16 characters"),
        ({"GENIE_CODEC_JWT_AUDIENCE": None}, "GENIE_CODEC_JWT_AUDIENCE must be set"),
        ({"GENIE_CODEC_JWT_ALGORITHMS": "HS256"}, "only public-key algorithms"),
        ({"GENIE_CODEC_UI_ORIGINS": "http://ui.example.com/path"}, "is not an origin"),
        ({"GENIE_CODEC_ANONYMOUS_FROM": "everyone"}, "not 'loopback' or a CIDR"),
        ({"GENIE_PAYLOAD_KEYS": None}, "needs the payload keys"),
    ],
)
def test_configuration_errors_are_one_line(
    codec_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str | None],
    error: str,
) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as e:
        load_codec_config()
    assert error in str(e.value) and "\n" not in str(e.value)
    assert json.dumps(str(e.value))  # printable


def test_the_configuration_prints_no_token(codec_env: Path) -> None:
    config = load_codec_config()
    assert config.tokens == (TOKEN,)
    assert TOKEN not in repr(config) and TOKEN not in str(config)


async def test_a_chunked_body_is_refused_before_it_is_held_whole(codec_env: Path) -> None:
    """No Content-Length: the server must stop reading at its limit, not after."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 1
            yield b" " * 4096

    async with _client(max_body_bytes=16 * 1024) as c:
        r = await c.post("/decode", content=chunks(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 413
    assert sent <= 8, f"{sent} chunks of 4 KiB read for a 16 KiB limit"


async def test_a_small_request_cannot_make_a_huge_answer(codec_env: Path) -> None:
    """Compressed payloads inflate: copies of one (any caller can /encode it) must not
    make a 300 KB request answer 300 MB, nor one payload beyond the decoded bound."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    zeros = Payload(metadata={"encoding": b"json/plain"}, data=bytes(3_000_000))
    async with _client(max_decoded_bytes=8 * 1024 * 1024) as c:
        enc = await c.post("/encode", json=_body(zeros), headers=auth)
        (sealed,) = enc.json()["payloads"]
        assert len(sealed["data"]) < 20_000  # it compressed
        one = await c.post("/decode", json={"payloads": [sealed]}, headers=auth)
        assert one.status_code == 200 and _payloads(one.json()) == [zeros]
        many = await c.post("/decode", json={"payloads": [sealed] * 40}, headers=auth)
        assert many.status_code == 413 and "GENIE_CODEC_MAX_DECODED_BYTES" in many.text
        assert len(many.content) < 1000
    async with _client(max_decoded_bytes=1024 * 1024) as c:
        big = await c.post("/decode", json={"payloads": [sealed]}, headers=auth)
        assert big.status_code == 413


async def test_the_number_of_payloads_is_bounded(codec_env: Path) -> None:
    """Empty payloads cost nothing to send and much to convert (2.8 million fit in
    8 MiB: tens of seconds and gigabytes to encode)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with _client(max_payloads=10) as c:
        for op in ("encode", "decode"):
            ok = await c.post(f"/{op}", json={"payloads": [{}] * 10}, headers=auth)
            assert ok.status_code == 200 and len(ok.json()["payloads"]) == 10
            r = await c.post(f"/{op}", json={"payloads": [{}] * 11}, headers=auth)
            assert r.status_code == 413 and "over 10 payloads" in r.text
        for body in (b"[" * 100_000 + b"]" * 100_000, b"[]", b'{"payloads": 3}', b"\xff"):
            r = await c.post("/decode", content=body, headers=auth)
            assert r.status_code == 400, body[:20]


async def test_hostile_key_ids_are_neither_repeated_nor_logged_one_by_one(
    remote: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A key id comes from the caller: a long one is described, not copied into the log,
    and a thousand distinct ones are a few lines, not a thousand."""
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def forged(kid: bytes) -> Payload:
        return Payload(
            metadata={"encoding": b"binary/encrypted", "encryption-key-id": kid}, data=b"0" * 40
        )

    caplog.set_level(logging.INFO, logger="genie_codec")
    r = await remote.post("/decode", json=_body(forged(b"X" * 100_000)), headers=auth)
    assert r.status_code == 200
    assert "XXXXXXXXXX" not in caplog.text and "100000 characters" in caplog.text
    caplog.clear()
    many = [forged(f"k{i}".encode()) for i in range(1000)]
    r = await remote.post("/decode", json=_body(*many), headers=auth)
    assert r.status_code == 200 and _payloads(r.json()) == many
    assert len(caplog.records) <= 8, len(caplog.records)
    assert max(len(rec.getMessage()) for rec in caplog.records) < 1000


async def test_every_decode_is_logged_with_who_asked_and_nothing_it_decoded(
    remote: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genie_codec.access")
    sealed = EncryptionCodec(parse_keys(K2)).encrypt(PLAIN)
    for auth in (f"Bearer {TOKEN}", f"Bearer {_id_token()}", "Bearer wrong-token-0123456789"):
        await remote.post(
            "/decode", json=_body(sealed, PLAIN), headers=_ui_headers(Authorization=auth)
        )
    await remote.post("/encode", json=_body(PLAIN), headers={"Authorization": f"Bearer {TOKEN}"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "genie_codec.access"]
    assert [(e["op"], e["principal"], e["status"]) for e in lines] == [
        ("decode", "token 1", 200),
        ("decode", "jwt ops@example.com", 200),
        ("decode", None, 401),
        ("encode", "token 1", 200),
    ]
    first = lines[0]
    assert first["peer"] == "203.0.113.9" and first["origin"] == UI
    assert first["namespace"] == "default" and first["payloads"] == 2
    assert first["key_ids"] == {"k2": 1} and first["left_encrypted"] == 0
    assert "9e2f" not in caplog.text and TOKEN not in caplog.text
