"""The codec server: ``/encode`` and ``/decode`` for the Temporal Web UI and CLI.

Temporal's codec-server protocol: ``POST …/encode`` or ``POST …/decode`` (only the last
path segment counts), a JSON ``Payloads`` message (protobuf JSON) in, the same shape out;
the caller names the namespace in ``X-Namespace``. The Web UI calls it from the browser
(``fetch``) with ``Content-Type: application/json`` and ``X-Namespace``, plus
``Authorization: Bearer <the user's access token>`` only when it is configured to pass
the token (``TEMPORAL_CODEC_PASS_ACCESS_TOKEN``, HTTPS endpoints only); the ``temporal``
CLI sends ``--codec-auth`` as the ``Authorization`` header.

Who may decode (``GENIE_CODEC_*``):

- ``TOKEN`` / ``TOKEN_FILE``: a shared bearer token (the CLI, scripts);
- ``JWT_JWKS_URL`` or ``JWT_PUBLIC_KEY_FILE`` with ``JWT_ISSUER`` and ``JWT_AUDIENCE``:
  the Web UI's pass-through access token, verified against the identity provider;
- ``ANONYMOUS_FROM``: addresses that need no credentials (``loopback``, or CIDRs): what
  ``geniectl dev`` uses, since its UI sends none. Never behind a reverse proxy on the
  same host, which would make every request look local.

Browsers may call it only from ``UI_ORIGINS`` (exact origins): a request with any other
``Origin`` is refused (403) before anything is decoded, and only allowed origins get
CORS headers. Requests without ``Origin`` (CLI, curl) are not browser requests; they
still need credentials.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
import jwt
from google.protobuf import json_format
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from genie_codec._codec import (
    EncryptionCodec,
    PayloadDecryptError,
    PayloadTooLargeError,
    key_id_of,
)
from genie_codec._keys import KEY_ID, PayloadKeyConfigError, load_keys
from genie_config import ConfigError, load_settings
from genie_config.jwks import KeySetClient

log = logging.getLogger("genie_codec.server")
access_log = logging.getLogger("genie_codec.access")
"""One JSON line per ``/encode`` or ``/decode`` request: who, from where, what."""

DEFAULT_PORT = 8235
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
LOOPBACK = ("127.0.0.0/8", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CodecServerSettings(BaseSettings):
    """``GENIE_CODEC_*``: where the codec server listens and whom it serves."""

    model_config = SettingsConfigDict(env_prefix="GENIE_CODEC_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    ui_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins of the Web UI (``https://temporal-ui.example.com``), comma-separated."""
    token: SecretStr | None = None
    token_file: Path | None = None
    jwt_jwks_url: AnyHttpUrl | None = None
    jwt_public_key_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["RS256"])
    anonymous_from: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """``loopback`` and/or CIDRs whose requests need no credentials."""
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Namespaces (``X-Namespace``) served; empty: any."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_payloads: int = Field(default=10_000, ge=1)
    """Payloads per request: each costs CPU and memory whatever its size."""
    max_decoded_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """What one ``/decode`` may answer in all: compressed payloads inflate."""

    @field_validator("ui_origins", "jwt_algorithms", "anonymous_from", "namespaces", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("ui_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ValueError(f"{origin[:80]!r} is not an origin (scheme://host[:port])")
        return [o.lower() for o in v]

    @field_validator("jwt_algorithms")
    @classmethod
    def _algorithms(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a.upper().startswith("HS") or a.lower() == "none"]
        if bad:
            raise ValueError(f"only public-key algorithms (not {', '.join(bad)})")
        return v


@dataclass(frozen=True)
class CodecServerConfig:
    codec: EncryptionCodec
    origins: frozenset[str]
    tokens: tuple[str, ...] = field(default=(), repr=False)
    """The bearer tokens themselves: never in a repr (a logged or printed config)."""
    anonymous: tuple[Network, ...] = ()
    jwt_key: Any = None
    jwks: KeySetClient | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256",)
    namespaces: frozenset[str] = frozenset()
    max_body_bytes: int = 8 * 1024 * 1024
    max_payloads: int = 10_000
    max_decoded_bytes: int = 64 * 1024 * 1024
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    methods: list[str] = field(default_factory=list)
    """How requests may authenticate, for the start-up line."""


def load_codec_config(**overrides: Any) -> CodecServerConfig:
    """``GENIE_CODEC_*`` and the payload keys; ``ConfigError`` (one line) if unusable."""
    try:
        s = CodecServerSettings(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        name = "GENIE_CODEC_" + str(err["loc"][0]).upper() if err["loc"] else "GENIE_CODEC_*"
        raise ConfigError(f"{name}: {err['msg'].removeprefix('Value error, ')}") from None
    genie = load_settings()
    try:
        keys = load_keys(
            genie.payload_keys.get_secret_value() if genie.payload_keys else None,
            genie.payload_key_file,
        )
    except PayloadKeyConfigError as e:
        raise ConfigError(str(e)) from None
    if keys is None:
        raise ConfigError(
            "the codec server needs the payload keys: set GENIE_PAYLOAD_KEYS or "
            "GENIE_PAYLOAD_KEY_FILE (as the worker has them)"
        )
    codec = EncryptionCodec(keys, compress_min_bytes=genie.payload_compress_min_bytes)
    methods: list[str] = []
    tokens = _tokens(s)
    if tokens:
        methods.append("bearer token")
    jwt_key, jwks = _jwt(s)
    if jwt_key is not None or jwks is not None:
        methods.append("JWT")
    anonymous: list[Network] = []
    for item in s.anonymous_from:
        for cidr in LOOPBACK if item.lower() == "loopback" else (item,):
            try:
                anonymous.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise ConfigError(
                    f"GENIE_CODEC_ANONYMOUS_FROM: {item[:60]!r} is not 'loopback' or a CIDR"
                ) from None
    if anonymous:
        methods.append("anonymous from " + ", ".join(map(str, anonymous)))
    if not methods:
        raise ConfigError(
            "the codec server decrypts for whoever may call it: set GENIE_CODEC_TOKEN "
            "(or _TOKEN_FILE), GENIE_CODEC_JWT_* for the Web UI's access token, or "
            "GENIE_CODEC_ANONYMOUS_FROM=loopback (development)"
        )
    return CodecServerConfig(
        codec=codec,
        origins=frozenset(s.ui_origins),
        tokens=tokens,
        anonymous=tuple(anonymous),
        jwt_key=jwt_key,
        jwks=jwks,
        jwt_issuer=s.jwt_issuer,
        jwt_audience=s.jwt_audience,
        jwt_algorithms=tuple(s.jwt_algorithms),
        namespaces=frozenset(s.namespaces),
        max_body_bytes=s.max_body_bytes,
        max_payloads=s.max_payloads,
        max_decoded_bytes=s.max_decoded_bytes,
        host=s.host,
        port=s.port,
        methods=methods,
    )


def _tokens(s: CodecServerSettings) -> tuple[str, ...]:
    if s.token is not None and s.token_file is not None:
        raise ConfigError("GENIE_CODEC_TOKEN and GENIE_CODEC_TOKEN_FILE are both set; set one")
    if s.token is not None:
        text, source = s.token.get_secret_value(), "GENIE_CODEC_TOKEN"
    elif s.token_file is not None:
        source = "GENIE_CODEC_TOKEN_FILE"
        try:
            text = s.token_file.read_text()
        except OSError as e:
            raise ConfigError(f"{source}: cannot read {s.token_file} ({e.strerror})") from None
    else:
        return ()
    # Several (comma- or newline-separated) so the token can rotate without downtime.
    tokens = tuple(t.strip() for t in text.replace(",", "\n").splitlines() if t.strip())
    if not tokens or any(len(t) < 16 for t in tokens):
        raise ConfigError(f"{source}: a token must have at least 16 characters")
    return tokens


def _jwt(s: CodecServerSettings) -> tuple[Any, KeySetClient | None]:
    if s.jwt_jwks_url is None and s.jwt_public_key_file is None:
        return None, None
    if s.jwt_jwks_url is not None and s.jwt_public_key_file is not None:
        raise ConfigError("set GENIE_CODEC_JWT_JWKS_URL or GENIE_CODEC_JWT_PUBLIC_KEY_FILE")
    if not s.jwt_issuer or not s.jwt_audience:
        raise ConfigError(
            "GENIE_CODEC_JWT_ISSUER and GENIE_CODEC_JWT_AUDIENCE must be set with a JWT key: "
            "a token for another application must not decrypt payloads"
        )
    if s.jwt_jwks_url is not None:
        # Fetched rarely, the last good key set kept when the provider does not answer.
        return None, KeySetClient(str(s.jwt_jwks_url))
    assert s.jwt_public_key_file is not None
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(s.jwt_public_key_file.read_bytes()), None
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"GENIE_CODEC_JWT_PUBLIC_KEY_FILE: {s.jwt_public_key_file} is not a readable "
            f"PEM public key ({type(e).__name__})"
        ) from None


# ---------------------------------------------------------------------------- the app


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


MAX_LOGGED_FAILURES = 5
"""Distinct decryption failures logged per request; the rest are counted."""
CONVERSIONS_AT_ONCE = 2
"""Requests converted at the same time: each may hold ``max_decoded_bytes``."""


def codec_app(config: CodecServerConfig) -> Starlette:
    # Conversions are CPU-bound: in threads, so /healthz and refusals stay prompt, and
    # few at once, so concurrent large requests do not multiply the memory they take.
    limiter = anyio.CapacityLimiter(CONVERSIONS_AT_ONCE)

    async def endpoint(request: Request) -> Response:
        origin = request.headers.get("origin")
        cors = _cors(config, origin)
        op = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        entry: dict[str, Any] = {
            "op": op[:20],
            "peer": request.client.host if request.client else None,
            "origin": _clip(origin),
            "namespace": _clip(request.headers.get("x-namespace")),
            "principal": None,
        }
        response: Response | None = None
        try:
            if origin is not None and not cors:
                raise _Refused(403, f"origin {origin[:100]} may not call this codec server")
            if request.method == "OPTIONS":
                response = Response(status_code=204, headers=cors)
                return response
            if op not in ("encode", "decode"):
                raise _Refused(404, "only …/encode and …/decode")
            entry["principal"] = await _authorize(config, request)
            response = await _convert(config, request, op, cors, limiter, entry)
            return response
        except _Refused as e:
            extra = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
            entry["refused"] = e.message[:200]
            response = JSONResponse({"error": e.message}, e.status, headers={**cors, **extra})
            return response
        finally:
            # Who asked to decode (or encode) what: one line per request, whatever its
            # outcome, written before the answer leaves (an exception is a 500).
            if request.method == "POST":
                entry["status"] = response.status_code if response is not None else 500
                access_log.info(json.dumps(entry, separators=(",", ":")))

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{path:path}", endpoint, methods=["POST", "OPTIONS"]),
        ]
    )


def _clip(value: str | None, limit: int = 200) -> str | None:
    return None if value is None else value[:limit]


def _cors(config: CodecServerConfig, origin: str | None) -> dict[str, str]:
    if origin is None or origin.lower() not in config.origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


async def _authorize(config: CodecServerConfig, request: Request) -> str:
    """Who the caller is, for the access log: ``token <n>`` (the n-th configured token,
    never the token), ``jwt <sub>`` or ``anonymous``; else ``_Refused(401)``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if header and scheme.lower() == "bearer" and token:
        for n, t in enumerate(config.tokens, 1):
            if hmac.compare_digest(token.encode(), t.encode()):
                return f"token {n}"
        if config.jwt_key is not None or config.jwks is not None:
            claims = await _valid_jwt(config, token)
            if claims is not None:
                return f"jwt {str(claims.get('sub', '(no sub)'))[:200]}"
        raise _Refused(401, "the bearer token is not accepted here")
    if _anonymous_ok(config, request):
        return "anonymous"
    raise _Refused(401, "credentials required (Authorization: Bearer …)")


def _anonymous_ok(config: CodecServerConfig, request: Request) -> bool:
    if not config.anonymous or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(peer in net for net in config.anonymous)


async def _valid_jwt(config: CodecServerConfig, token: str) -> dict[str, Any] | None:
    """The token's claims if it is valid here, else None."""
    try:
        key = config.jwt_key
        if config.jwks is not None:
            key = (await config.jwks.signing_key(token)).key
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(config.jwt_algorithms),
            audience=config.jwt_audience,
            issuer=config.jwt_issuer,
            leeway=30,
            options={"require": ["exp", "iss", "aud"]},
        )
    except (jwt.PyJWTError, jwt.PyJWKClientError, ValueError) as e:
        log.info("codec server: JWT refused (%s)", type(e).__name__)
        return None
    return claims


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit``: a chunked body declares
    no length, and must not be held whole before it is measured."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refused(413, f"the body is over {limit} bytes")
    return bytes(body)


async def _convert(
    config: CodecServerConfig,
    request: Request,
    op: str,
    cors: dict[str, str],
    limiter: anyio.CapacityLimiter,
    entry: dict[str, Any],
) -> Response:
    namespace = request.headers.get("x-namespace", "")
    if config.namespaces and namespace not in config.namespaces:
        raise _Refused(403, f"namespace {namespace[:100]!r} is not served here")
    body = await _read_body(request, config.max_body_bytes)
    answer = await anyio.to_thread.run_sync(_run, config, op, body, entry, limiter=limiter)
    return Response(answer, media_type="application/json", headers=cors)


def _run(config: CodecServerConfig, op: str, body: bytes, entry: dict[str, Any]) -> bytes:
    """Parse, convert and render one request (in a worker thread); the JSON answer."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting too deep for json
        data = None
    if not isinstance(data, dict):
        raise _Refused(400, "the body is not a JSON Payloads message")
    items = data.get("payloads")
    if isinstance(items, list) and len(items) > config.max_payloads:
        raise _Refused(
            413, f"over {config.max_payloads} payloads in one request; send fewer at a time"
        )
    payloads = Payloads()
    try:
        json_format.ParseDict(data, payloads, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError):
        raise _Refused(400, "the body is not a JSON Payloads message") from None
    entry["payloads"] = len(payloads.payloads)
    out = Payloads()
    if op == "encode":
        out.payloads.extend(config.codec.encrypt(p) for p in payloads.payloads)
    else:
        _decode_into(config, payloads, out, entry)
    answer = json_format.MessageToDict(out)
    answer.setdefault("payloads", [])  # protobuf JSON leaves out an empty list
    return json.dumps(answer, separators=(",", ":")).encode()


def _decode_into(
    config: CodecServerConfig, payloads: Payloads, out: Payloads, entry: dict[str, Any]
) -> None:
    budget = config.max_decoded_bytes
    failed: Counter[str] = Counter()
    key_ids: Counter[str] = Counter()
    for p in payloads.payloads:
        kid = key_id_of(p)
        if kid is not None:
            key_ids[kid if KEY_ID.fullmatch(kid) else "(not a key id)"] += 1
        try:
            # The budget bounds inflation too: a small request must not answer gigabytes.
            plain = config.codec.decrypt(p, max_bytes=budget)
        except PayloadTooLargeError:
            raise _Refused(413, _too_much(config)) from None
        except PayloadDecryptError as e:
            # The caller shows this one as it is (encrypted); the others still decode.
            failed[str(e)] += 1
            plain = p
        budget -= plain.ByteSize()
        if budget < 0:
            raise _Refused(413, _too_much(config))
        out.payloads.append(plain)
    entry["key_ids"] = dict(key_ids.most_common(MAX_LOGGED_FAILURES))
    entry["left_encrypted"] = failed.total()
    for message, n in failed.most_common(MAX_LOGGED_FAILURES):
        log.warning("codec server: %d payload(s) left encrypted: %s", n, message)
    if len(failed) > MAX_LOGGED_FAILURES:
        rest = failed.total() - sum(n for _, n in failed.most_common(MAX_LOGGED_FAILURES))
        log.warning("codec server: %d more payload(s) left encrypted, for other reasons", rest)


def _too_much(config: CodecServerConfig) -> str:
    return (
        f"the decoded payloads are over {config.max_decoded_bytes} bytes "
        "(GENIE_CODEC_MAX_DECODED_BYTES); ask for fewer at a time"
    )


def serve(config: CodecServerConfig) -> None:
    import uvicorn

    log.info(
        "codec server on http://%s:%s (UI origins: %s; auth: %s; keys: %s)",
        config.host,
        config.port,
        ", ".join(sorted(config.origins)) or "none",
        "; ".join(config.methods),
        ", ".join(config.codec.keys.ids),
    )
    uvicorn.run(
        codec_app(config),
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
