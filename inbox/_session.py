"""The session cookie: a CSRF token and who logged in, signed with the server's secret.

The cookie is ``v1.<payload>.<mac>``: base64url JSON and its HMAC-SHA256 under
``GENIE_INBOX_SESSION_SECRET``. A cookie that does not verify, or is older than its
maximum age, is ignored (a fresh, anonymous session starts). It is HttpOnly and
SameSite=Lax, so a cross-site form post never carries it; the CSRF token it holds must
also come back in every form (or in ``X-CSRF-Token`` for scripts), so a request that
only carries the cookie decides nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

COOKIE = "genie_inbox_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MAX_COOKIE_CHARS = 3800
"""Browsers keep about 4 KiB per cookie; a session that does not fit is not stored."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    jwt: str | None = None
    """The login token (jwt mode); verified again on every request."""
    dev_name: str | None = None
    """The name picked on the development login page (dev mode only)."""
    issued: int = field(default_factory=lambda: int(time.time()))
    dirty: bool = True
    """Must be (re)sent to the browser."""

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token).encode(), self.csrf.encode())

    def login(self, *, jwt: str | None = None, dev_name: str | None = None) -> None:
        """A new identity gets a new CSRF token (no token fixation across logins)."""
        self.jwt, self.dev_name = jwt, dev_name
        self.csrf = secrets.token_urlsafe(32)
        self.issued = int(time.time())
        self.dirty = True

    def logout(self) -> None:
        self.login()


class SessionCodec:
    def __init__(self, secret: bytes, max_age_seconds: int) -> None:
        self._secret = secret
        self.max_age = max_age_seconds

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, f"v1.{payload}".encode(), hashlib.sha256).digest())

    def dump(self, session: Session) -> str | None:
        body: dict[str, Any] = {"c": session.csrf, "i": session.issued}
        if session.jwt:
            body["j"] = session.jwt
        if session.dev_name:
            body["d"] = session.dev_name
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        cookie = f"v1.{payload}.{self._mac(payload)}"
        return cookie if len(cookie) <= MAX_COOKIE_CHARS else None

    def load(self, cookie: str | None) -> Session:
        """The session in ``cookie``, or a fresh one if it is missing, forged or too old."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return Session()
        version, _, rest = cookie.partition(".")
        payload, _, mac = rest.partition(".")
        if version != "v1" or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return Session()
        try:
            body = json.loads(_unb64(payload))
            csrf, issued = str(body["c"]), int(body["i"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return Session()
        if not csrf or time.time() - issued > self.max_age:
            return Session()
        jwt, dev_name = body.get("j"), body.get("d")
        return Session(
            csrf=csrf,
            jwt=jwt if isinstance(jwt, str) else None,
            dev_name=dev_name if isinstance(dev_name, str) else None,
            issued=issued,
            dirty=False,
        )
