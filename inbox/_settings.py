"""``GENIE_INBOX_*`` settings, and the keys and secrets they point at, loaded once.

A bad or missing setting is one line naming it (``ConfigError``); values are never
echoed, since several of them are secrets (the session secret, the signing key).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from genie_config import ConfigError

log = logging.getLogger("genie_inbox")

AuthMode = Literal["jwt", "proxy", "dev"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT = 8234
"""Next to the Temporal Web UI's 8233 in the local stack."""
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Only public-key JWT algorithms: an HMAC ("HS256") token verified with a public key
would let anyone who knows that key mint tokens, and "none" verifies nothing."""
MIN_SESSION_SECRET_BYTES = 32


class InboxSettings(BaseSettings):
    """Every ``GENIE_INBOX_*`` setting (see docs/inbox.md)."""

    # An empty variable is an unset one (compose passes `${VAR:-}` through as "").
    model_config = SettingsConfigDict(
        env_prefix="GENIE_INBOX_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    auth: AuthMode = "jwt"
    """How approvers are identified: a verified JWT, a trusted proxy's headers, or (only
    with ``allow_dev``) a name picked on the login page."""
    allow_dev: bool = False
    dev_name: str | None = Field(default=None, max_length=256)
    """Dev mode only: the name used until someone picks another on the login page."""
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)

    session_secret: SecretStr | None = None
    session_secret_file: Path | None = None
    """Signs the session cookie. Unset: a random one per start (sessions end with it)."""
    session_max_age_seconds: int = Field(default=12 * 3600, ge=60, le=30 * 86400)
    secure_cookies: bool | None = None
    """Mark cookies ``Secure``; unset: when the request came over https."""

    jwt_public_key: str | None = None
    """A PEM public key (RSA, EC or Ed25519) that signs the tokens."""
    jwt_public_key_file: Path | None = None
    jwt_jwks_url: AnyHttpUrl | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["RS256", "ES256", "EdDSA"]
    )
    jwt_name_claim: str = Field(default="sub", min_length=1)
    jwt_groups_claim: str = Field(default="groups", min_length=1)
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300)

    trusted_proxies: Annotated[list[IpNetwork], NoDecode] = Field(default_factory=list)
    """Addresses (CIDRs) whose identity headers are believed; anyone else gets 401."""
    proxy_user_header: str = Field(default="X-Forwarded-User", min_length=1)
    proxy_groups_header: str = Field(default="X-Forwarded-Groups", min_length=1)

    signing_key: SecretStr | None = None
    """The Ed25519 private key that signs decisions: base64 of its raw 32 bytes."""
    signing_key_file: Path | None = None
    """A file holding that base64 text, or a PEM (PKCS#8) private key."""
    signing_key_id: str = Field(default="inbox-1", min_length=1, max_length=256)

    query_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    """How long one status or transcript query may take before the conversation is shown
    as not answering (its worker is down, or busy)."""
    decision_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    refresh_seconds: float = Field(default=5.0, ge=1, le=600)
    """How often an open pending page asks for changes."""
    max_listed: int = Field(default=200, ge=1, le=2000)
    """Waiting conversations one pending page reads (each is queried). When more wait,
    the page says how many it leaves out; which ones it reads is Temporal visibility's
    order (the most recently started first)."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    rate_limit_burst: int = Field(default=10, ge=1, le=10_000)
    """Decisions and link refreshes one person may send at once; past it, and past the
    refill below, they get 429 and nothing reaches the conversation (each decision, even
    a refused one, is recorded in its history)."""
    rate_limit_per_second: float = Field(default=1.0, gt=0, le=1000)
    """How fast that allowance refills, per person."""
    log_level: str = "INFO"

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not v:
            allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
            raise ValueError(f"only public-key algorithms are allowed ({allowed})")
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, v: Any) -> Any:
        if isinstance(v, str):
            nets: list[IpNetwork] = []
            for part in filter(None, (p.strip() for p in v.split(","))):
                try:
                    nets.append(ipaddress.ip_network(part, strict=False))
                except ValueError:
                    raise ValueError(f"{part[:60]!r} is not an address or CIDR") from None
            return nets
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v.upper()


@dataclass(frozen=True)
class InboxConfig:
    """The settings with every key and secret they name loaded and checked."""

    settings: InboxSettings
    session_secret: bytes
    session_secret_generated: bool
    jwt_key: PublicKeyTypes | None
    signing_key: Ed25519PrivateKey | None

    @property
    def auth(self) -> AuthMode:
        return self.settings.auth

    @property
    def signing_key_id(self) -> str | None:
        return self.settings.signing_key_id if self.signing_key is not None else None


def load_inbox_settings(**overrides: Any) -> InboxSettings:
    try:
        return InboxSettings(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        name = "GENIE_INBOX_" + "_".join(str(p) for p in err["loc"][:1]).upper()
        # Never the input: it may be a secret.
        raise ConfigError(f"{name}: {err['msg']}") from None


def load_inbox_config(**overrides: Any) -> InboxConfig:
    """Read ``GENIE_INBOX_*`` and everything it names; ``ConfigError`` with one line."""
    s = load_inbox_settings(**overrides)
    if s.auth == "dev" and not s.allow_dev:
        raise ConfigError(
            "GENIE_INBOX_AUTH=dev lets anyone decide under any name: it is refused unless "
            "GENIE_INBOX_ALLOW_DEV=true (geniectl dev sets it)"
        )
    jwt_key = None
    if s.auth == "jwt":
        jwt_key = _jwt_settings(s)
    if s.auth == "proxy" and not s.trusted_proxies:
        raise ConfigError(
            "GENIE_INBOX_AUTH=proxy needs GENIE_INBOX_TRUSTED_PROXIES: the addresses (CIDRs) "
            "of the authenticating proxy, whose identity headers are believed"
        )
    secret, generated = _session_secret(s)
    return InboxConfig(
        settings=s,
        session_secret=secret,
        session_secret_generated=generated,
        jwt_key=jwt_key,
        signing_key=_signing_key(s),
    )


def _one_of(s: InboxSettings, value: str, file: str) -> str | None:
    """The text of setting ``value`` or of the file setting ``file`` names (not both)."""
    direct = getattr(s, value)
    path: Path | None = getattr(s, file)
    env_value, env_file = f"GENIE_INBOX_{value.upper()}", f"GENIE_INBOX_{file.upper()}"
    if direct is not None and path is not None:
        raise ConfigError(f"{env_value} and {env_file} are both set; set one")
    if path is not None:
        try:
            return path.read_text()
        except OSError as e:
            raise ConfigError(f"{env_file}: cannot read {path} ({e.strerror})") from None
    if isinstance(direct, SecretStr):
        return direct.get_secret_value()
    return str(direct) if direct is not None else None


def _jwt_settings(s: InboxSettings) -> PublicKeyTypes | None:
    pem = _one_of(s, "jwt_public_key", "jwt_public_key_file")
    if pem is None and s.jwt_jwks_url is None:
        raise ConfigError(
            "GENIE_INBOX_AUTH=jwt needs GENIE_INBOX_JWT_PUBLIC_KEY (PEM), "
            "GENIE_INBOX_JWT_PUBLIC_KEY_FILE or GENIE_INBOX_JWT_JWKS_URL "
            "(or set GENIE_INBOX_AUTH=proxy)"
        )
    if pem is not None and s.jwt_jwks_url is not None:
        raise ConfigError("set either a JWT public key or GENIE_INBOX_JWT_JWKS_URL, not both")
    for name in ("jwt_issuer", "jwt_audience"):
        if not (getattr(s, name) or "").strip():
            raise ConfigError(
                f"GENIE_INBOX_{name.upper()} must be set with GENIE_INBOX_AUTH=jwt: "
                "tokens are checked against it"
            )
    if pem is None:
        return None
    try:
        return serialization.load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError):
        raise ConfigError(
            "GENIE_INBOX_JWT_PUBLIC_KEY: not a PEM public key (-----BEGIN PUBLIC KEY-----)"
        ) from None


def _session_secret(s: InboxSettings) -> tuple[bytes, bool]:
    text = _one_of(s, "session_secret", "session_secret_file")
    if text is None:
        return secrets.token_bytes(32), True
    raw = text.strip().encode()
    if len(raw) < MIN_SESSION_SECRET_BYTES:
        raise ConfigError(
            f"GENIE_INBOX_SESSION_SECRET: use at least {MIN_SESSION_SECRET_BYTES} random "
            "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return raw, False


def _signing_key(s: InboxSettings) -> Ed25519PrivateKey | None:
    text = _one_of(s, "signing_key", "signing_key_file")
    if text is None:
        return None
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("GENIE_INBOX_SIGNING_KEY: not an unencrypted Ed25519 PEM key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            "GENIE_INBOX_SIGNING_KEY: not base64 of a raw 32-byte Ed25519 private key "
            "(`geniectl keygen` makes one)"
        )
    return Ed25519PrivateKey.from_private_bytes(raw)
