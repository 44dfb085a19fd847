"""The identity provider's signing keys (a JWKS URL), for the inbox and the codec server.

Both verify tokens on every request; neither may depend on the provider answering on
every request. So the key set is fetched rarely and kept:

- a token whose ``kid`` is in the set verifies without waiting for the network, even
  when the set is due for a refresh (the refresh runs in the background) and even when
  the provider is down: the last good set is used for up to ``max_stale`` seconds after
  it was fetched (stale-if-error), and the failure is logged once per streak;
- a fetch starts at most once per ``min_interval`` seconds whatever the callers ask for
  (a flood of tokens naming unknown ``kid``\\ s costs the provider one fetch per
  interval, not one per token), and callers that need the same fetch share it
  (single-flight); a normal refresh happens every ``refresh_interval`` seconds;
- a fetch has a short timeout, no redirects and a bounded, uncompressed answer; only public keys
  (RSA, EC, OKP) meant for signatures, with a ``kid``, are kept;
- with no usable set (the first fetch failed, or the last good one is too old),
  ``KeySetUnavailable``; a ``kid`` not in the set, ``UnknownSigningKey``. Both are
  ``jwt.PyJWKClientError``\\ s, which the callers already refuse.

Nothing here logs a token, a ``kid`` from a token, or an answer's body.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

log = logging.getLogger("genie_config.jwks")

PUBLIC_KEY_TYPES = (RSAPublicKey, EllipticCurvePublicKey, Ed25519PublicKey, Ed448PublicKey)
MAX_KEYS = 100
"""Keys kept from one answer; a provider publishes a handful."""
_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}
"""A key set is a few KiB: not compressed, so a size limit counts what is kept."""


class KeySetError(jwt.PyJWKClientError):
    """No trusted key for this token (a ``jwt.PyJWKClientError``)."""


class KeySetUnavailable(KeySetError):
    """No key set to check against: never fetched, or the last good one is too old."""


class UnknownSigningKey(KeySetError):
    """The token names no ``kid``, or one that is not in the provider's key set."""


class _FetchFailed(Exception):
    """Why a fetch gave no usable key set, in words (no body, no secrets)."""


class KeySetClient:
    """The key set at ``url``, kept as described in the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 3.0,
        max_bytes: int = 1024 * 1024,
        refresh_interval: float = 300.0,
        min_interval: float = 30.0,
        max_stale: float = 24 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._refresh_interval = refresh_interval
        self._min_interval = min_interval
        self._max_stale = max_stale
        self._clock = clock
        parts = urlsplit(url)
        # For log lines: where, never a query string or credentials in the URL.
        port = f":{parts.port}" if parts.port else ""
        self._where = f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._inflight: concurrent.futures.Future[None] | None = None
        self._failing = False

    def __repr__(self) -> str:
        return f"KeySetClient({self._where!r})"

    # -- what callers use -----------------------------------------------------------------

    async def signing_key(self, token: str) -> jwt.PyJWK:
        """The key that should have signed ``token`` (by its ``kid``), or ``KeySetError``.

        Nothing about the token is verified here beyond its header being readable."""
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnknownSigningKey("the token names no signing key (kid)")
        key, pending = self._plan(kid)
        if key is not None:
            return key
        if pending is not None:
            # The fetch ends by itself (its own timeouts); this only bounds the wait.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wrap_future(pending), self._timeout * 2 + 1)
        return self._known(kid)

    def wait_idle(self, timeout: float) -> bool:
        """Wait (blocking) for a fetch under way to end; False if it is still running."""
        with self._lock:
            pending = self._inflight
        if pending is None:
            return True
        try:
            pending.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    # -- the cache ------------------------------------------------------------------------

    def _plan(self, kid: str) -> tuple[jwt.PyJWK | None, concurrent.futures.Future[None] | None]:
        """The key if known (starting a background refresh when one is due), else the
        fetch to wait for (under way, or started now if the throttle allows), else None."""
        with self._lock:
            now = self._clock()
            self._forget_if_too_old(now)
            key = self._keys.get(kid) if self._keys is not None else None
            if key is not None:
                assert self._fetched_at is not None
                if now - self._fetched_at >= self._refresh_interval:
                    self._start_fetch(now)
                return key, None
            if self._inflight is not None:
                return None, self._inflight
            return None, self._start_fetch(now)

    def _known(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            self._forget_if_too_old(self._clock())
            if self._keys is None:
                raise KeySetUnavailable("the identity provider's key set is not available")
            key = self._keys.get(kid)
        if key is None:
            raise UnknownSigningKey("no key in the identity provider's key set matches")
        return key

    def _forget_if_too_old(self, now: float) -> None:
        """(Under the lock.) Past ``max_stale``, a key set is no longer trusted."""
        if self._fetched_at is not None and now - self._fetched_at > self._max_stale:
            log.error(
                "JWKS %s: the last key set fetched is over %d s old and no fetch has "
                "succeeded since; tokens are refused until one does",
                self._where,
                int(self._max_stale),
            )
            self._keys = None
            self._fetched_at = None

    def _start_fetch(self, now: float) -> concurrent.futures.Future[None] | None:
        """(Under the lock.) The fetch under way, or a new one if none ran in the last
        ``min_interval`` seconds, or None (throttled)."""
        if self._inflight is not None:
            return self._inflight
        if self._last_attempt is not None and now - self._last_attempt < self._min_interval:
            return None
        self._last_attempt = now
        pending: concurrent.futures.Future[None] = concurrent.futures.Future()
        pending.set_running_or_notify_cancel()  # a waiter giving up cannot cancel it
        try:
            threading.Thread(target=self._fetch, args=(pending,), name="jwks", daemon=True).start()
        except RuntimeError:  # no thread to be had: refused now, tried after the throttle
            pending.set_result(None)
            return pending
        self._inflight = pending
        return pending

    def _fetch(self, pending: concurrent.futures.Future[None]) -> None:
        try:
            keys = self._download()
        except _FetchFailed as e:
            self._failed(str(e))
        except Exception as e:  # a fetch must never kill verification
            self._failed(type(e).__name__)
        else:
            with self._lock:
                self._keys = keys
                self._fetched_at = self._clock()
                recovered, self._failing = self._failing, False
            if recovered:
                log.info("JWKS %s: fetched again (%d keys)", self._where, len(keys))
        finally:
            with self._lock:
                self._inflight = None
            pending.set_result(None)

    def _failed(self, reason: str) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
            age = None if self._fetched_at is None else self._clock() - self._fetched_at
        if not first:
            return
        if age is None:
            log.error(
                "JWKS %s: cannot fetch the key set (%s); tokens are refused until a fetch "
                "succeeds (retried at most every %d s)",
                self._where,
                reason,
                int(self._min_interval),
            )
        else:
            log.warning(
                "JWKS %s: cannot refresh the key set (%s); using the one fetched %d s ago "
                "(for up to %d s) and retrying at most every %d s",
                self._where,
                reason,
                int(age),
                int(self._max_stale),
                int(self._min_interval),
            )

    # -- the network ----------------------------------------------------------------------

    def _download(self) -> dict[str, jwt.PyJWK]:
        deadline = time.monotonic() + self._timeout * 2
        body = bytearray()
        with httpx.Client(timeout=self._timeout, follow_redirects=False) as client:
            try:
                with client.stream("GET", self.url, headers=_HEADERS) as r:
                    if r.status_code != 200:
                        raise _FetchFailed(f"HTTP {r.status_code}")
                    coding = r.headers.get("content-encoding", "identity").strip().lower()
                    if coding not in ("", "identity"):
                        # Never asked for; httpx would inflate a chunk without bound.
                        raise _FetchFailed(f"Content-Encoding {coding[:20]!r}")
                    declared = r.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self._max_bytes:
                        raise _FetchFailed(f"the answer is over {self._max_bytes} bytes")
                    for chunk in r.iter_raw():
                        body += chunk
                        if len(body) > self._max_bytes:
                            raise _FetchFailed(f"the answer is over {self._max_bytes} bytes")
                        if time.monotonic() > deadline:
                            raise _FetchFailed("the answer took too long")
            except httpx.TimeoutException:
                raise _FetchFailed("timed out") from None
            except httpx.HTTPError as e:
                raise _FetchFailed(type(e).__name__) from None
        return parse_key_set(bytes(body))


def parse_key_set(body: bytes) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document by ``kid``; ``_FetchFailed`` if none."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise _FetchFailed("the answer is not JSON") from None
    items = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise _FetchFailed("the answer is not a JWK set")
    keys: dict[str, jwt.PyJWK] = {}
    for item in items:
        key = _public_signing_key(item)
        if key is not None and key.key_id not in keys and len(keys) < MAX_KEYS:
            assert key.key_id is not None
            keys[key.key_id] = key
    if not keys:
        raise _FetchFailed("the JWK set has no usable public signing key")
    return keys


def _public_signing_key(item: Any) -> jwt.PyJWK | None:
    if not isinstance(item, Mapping):
        return None
    kid = item.get("kid")
    if not isinstance(kid, str) or not kid or item.get("use", "sig") != "sig":
        return None
    if item.get("kty") not in ("RSA", "EC", "OKP") or "d" in item:
        return None  # symmetric (oct) or private: never a key to trust a signature with
    try:
        key = jwt.PyJWK(dict(item))
    except Exception:  # an odd key is left out; the others still count
        return None
    return key if isinstance(key.key, PUBLIC_KEY_TYPES) else None
