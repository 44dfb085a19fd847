"""Who is asking: identity from authentication only, never from a form field.

- ``jwt``: a bearer token (``Authorization: Bearer …``) or the token pasted on the login
  page and kept in the session cookie, verified on every request with PyJWT against the
  configured PEM key or JWKS URL (kept by ``genie_config.jwks``): signature, algorithm,
  issuer, audience and expiry.
- ``proxy``: identity headers set by an authenticating reverse proxy, believed only when
  the TCP peer is one of ``GENIE_INBOX_TRUSTED_PROXIES`` (uvicorn runs without proxy
  header rewriting, so the peer is the real one).
- ``dev``: the name picked on the login page; never authenticated, and said so on every
  page.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from starlette.requests import Request

from genie_config.jwks import KeySetClient
from inbox._session import Session
from inbox._settings import AuthMode, InboxConfig
from workflows.models import MAX_ID_CHARS

MAX_TOKEN_CHARS = 8192
MAX_GROUPS = 50
"""``DecisionProof.groups`` holds at most this many; more are left out of the proof."""


@dataclass(frozen=True)
class Identity:
    name: str
    groups: tuple[str, ...]
    method: AuthMode
    via: Literal["bearer", "session", "header"]
    """``bearer``: the request itself carried the credential (no CSRF needed); otherwise
    the browser sent it on its own, so a state change also needs the CSRF token."""

    @property
    def ambient(self) -> bool:
        return self.via != "bearer"


class Unauthenticated(Exception):
    """Credentials were presented and do not hold; ``str(e)`` says why, in words."""


def clean_name(value: object) -> str | None:
    """A printable name of at most ``MAX_ID_CHARS`` characters, or None."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > MAX_ID_CHARS or not name.isprintable():
        return None
    return name


def clean_groups(values: Iterable[object]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        g = clean_name(v)
        if g is not None and g not in out:
            out.append(g)
    return tuple(sorted(out)[:MAX_GROUPS])


class Authenticator:
    def __init__(self, config: InboxConfig) -> None:
        self.config = config
        s = config.settings
        self._jwks: KeySetClient | None = None
        if s.auth == "jwt" and config.jwt_key is None and s.jwt_jwks_url is not None:
            # The URL is the only place it ever connects to: rarely, with the last good
            # key set kept for when it does not answer (genie_config.jwks).
            self._jwks = KeySetClient(str(s.jwt_jwks_url))

    async def identify(self, request: Request, session: Session) -> Identity | None:
        """The caller's identity; None if they presented nothing (log in first);
        ``Unauthenticated`` if what they presented does not hold."""
        mode = self.config.auth
        if mode == "proxy":
            return self._from_proxy(request)
        if mode == "jwt":
            bearer = _bearer(request)
            if bearer is not None:
                return await self.verify_token(bearer, via="bearer")
            if session.jwt:
                return await self.verify_token(session.jwt, via="session")
            return None
        name = clean_name(session.dev_name) or clean_name(self.config.settings.dev_name)
        return Identity(name, (), "dev", "session") if name else None

    # -- jwt ----------------------------------------------------------------------------

    async def verify_token(
        self, token: str, *, via: Literal["bearer", "session"] = "session"
    ) -> Identity:
        s = self.config.settings
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("the token is empty or too long")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
            if alg not in s.jwt_algorithms:
                raise Unauthenticated(f"tokens signed with {str(alg)[:20]!r} are not accepted")
            key: Any = self.config.jwt_key
            if key is None:
                assert self._jwks is not None
                key = (await self._jwks.signing_key(token)).key
            claims = jwt.decode(
                token,
                key,
                algorithms=s.jwt_algorithms,
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired: log in again") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is not meant for this inbox (audience)") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token was not issued by the trusted issuer") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet") from None
        except jwt.MissingRequiredClaimError as e:
            raise Unauthenticated(f"the token has no {e.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify") from None
        except jwt.PyJWKClientError:
            raise Unauthenticated("no trusted key matches the token") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("not a valid token") from None
        name = clean_name(claims.get(s.jwt_name_claim))
        if name is None:
            raise Unauthenticated(f"the token has no usable {s.jwt_name_claim!r} claim")
        groups = claims.get(s.jwt_groups_claim) or []
        if isinstance(groups, str):
            groups = groups.replace(",", " ").split()
        if not isinstance(groups, list):
            groups = []
        return Identity(name, clean_groups(groups), "jwt", via)

    # -- proxy --------------------------------------------------------------------------

    def _from_proxy(self, request: Request) -> Identity:
        s = self.config.settings
        peer = request.client.host if request.client else ""
        if not _trusted(peer, s.trusted_proxies):
            raise Unauthenticated(
                "requests must come through the authenticating proxy "
                f"(this one came from {peer[:64] or 'an unknown address'})"
            )
        name = clean_name(request.headers.get(s.proxy_user_header))
        if name is None:
            raise Unauthenticated(f"the proxy sent no usable {s.proxy_user_header} header")
        raw = request.headers.get(s.proxy_groups_header, "")
        return Identity(name, clean_groups(raw.split(",")), "proxy", "header")


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("only 'Authorization: Bearer <token>' is accepted")
    return token


def _trusted(peer: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)
