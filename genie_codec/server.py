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

import asyncio
import hmac
import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import jwt
from google.protobuf import json_format
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from genie_codec._codec import EncryptionCodec, PayloadDecryptError
from genie_codec._keys import PayloadKeyConfigError, load_keys
from genie_config import ConfigError, load_settings

log = logging.getLogger("genie_codec.server")

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
    tokens: tuple[str, ...] = ()
    anonymous: tuple[Network, ...] = ()
    jwt_key: Any = None
    jwks: jwt.PyJWKClient | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256",)
    namespaces: frozenset[str] = frozenset()
    max_body_bytes: int = 8 * 1024 * 1024
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


def _jwt(s: CodecServerSettings) -> tuple[Any, jwt.PyJWKClient | None]:
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
        return None, jwt.PyJWKClient(str(s.jwt_jwks_url), cache_keys=True, timeout=10)
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


def codec_app(config: CodecServerConfig) -> Starlette:
    async def endpoint(request: Request) -> Response:
        origin = request.headers.get("origin")
        cors = _cors(config, origin)
        try:
            if origin is not None and not cors:
                raise _Refused(403, f"origin {origin[:100]} may not call this codec server")
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=cors)
            op = request.url.path.rstrip("/").rsplit("/", 1)[-1]
            if op not in ("encode", "decode"):
                raise _Refused(404, "only …/encode and …/decode")
            await _authorize(config, request)
            return await _convert(config, request, op, cors)
        except _Refused as e:
            extra = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
            return JSONResponse({"error": e.message}, e.status, headers={**cors, **extra})

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{path:path}", endpoint, methods=["POST", "OPTIONS"]),
        ]
    )


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


async def _authorize(config: CodecServerConfig, request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if header and scheme.lower() == "bearer" and token:
        if any(hmac.compare_digest(token.encode(), t.encode()) for t in config.tokens):
            return
        if (config.jwt_key is not None or config.jwks is not None) and await _valid_jwt(
            config, token
        ):
            return
        raise _Refused(401, "the bearer token is not accepted here")
    if _anonymous_ok(config, request):
        return
    raise _Refused(401, "credentials required (Authorization: Bearer …)")


def _anonymous_ok(config: CodecServerConfig, request: Request) -> bool:
    if not config.anonymous or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(peer in net for net in config.anonymous)


async def _valid_jwt(config: CodecServerConfig, token: str) -> bool:
    try:
        key = config.jwt_key
        if config.jwks is not None:
            key = (await asyncio.to_thread(config.jwks.get_signing_key_from_jwt, token)).key
        jwt.decode(
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
        return False
    return True


async def _convert(
    config: CodecServerConfig, request: Request, op: str, cors: dict[str, str]
) -> Response:
    namespace = request.headers.get("x-namespace", "")
    if config.namespaces and namespace not in config.namespaces:
        raise _Refused(403, f"namespace {namespace[:100]!r} is not served here")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
        raise _Refused(413, f"the body is over {config.max_body_bytes} bytes")
    body = await request.body()
    if len(body) > config.max_body_bytes:
        raise _Refused(413, f"the body is over {config.max_body_bytes} bytes")
    payloads = Payloads()
    try:
        json_format.Parse(body, payloads, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, UnicodeDecodeError):
        raise _Refused(400, "the body is not a JSON Payloads message") from None
    out = Payloads()
    failed: dict[str, int] = {}
    for p in payloads.payloads:
        if op == "encode":
            out.payloads.append(config.codec.encrypt(p))
            continue
        try:
            out.payloads.append(config.codec.decrypt(p))
        except PayloadDecryptError as e:
            # The caller shows this one as it is (encrypted); the others still decode.
            failed[str(e)] = failed.get(str(e), 0) + 1
            out.payloads.append(p)
    for message, n in failed.items():
        log.warning("codec server: %d payload(s) left encrypted: %s", n, message)
    answer = json_format.MessageToDict(out)
    answer.setdefault("payloads", [])  # protobuf JSON leaves out an empty list
    return JSONResponse(answer, headers=cors)


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
