"""Credentials for the Headless API: an API key with an asserted user, or OAuth tokens.

Two modes, both a bearer token in ``Authorization``:

* :class:`ApiKeyAuth` — the genie client's API key plus ``X-IDP-User-Id`` naming the end
  user on every call (server-to-server).
* :class:`OAuthAuth` — the end user's own OAuth access token; the token identifies the
  user, so no ``X-IDP-User-Id`` is sent.

Neither object ever shows its secret in ``repr``/``str``; the client asks them for the
strings to redact from any text that ends up in an exception or a log line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from pydantic import SecretStr

__all__ = ["ApiKeyAuth", "Auth", "OAuthAuth"]

USER_ID_HEADER = "X-IDP-User-Id"


class ApiKeyAuth:
    """API-key authentication with an asserted end user.

    Args:
        api_key: The genie client's API key (not a Developer API token).
    """

    __slots__ = ("_header", "_key")

    def __init__(self, api_key: str | SecretStr) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key or not key.strip():
            raise ValueError("api_key must not be empty")
        self._key = SecretStr(key)
        # Built once: this runs on every request.
        self._header = f"Bearer {key}"

    async def headers(self, user_id: str | None) -> dict[str, str]:
        """Return the auth headers for one call made on behalf of ``user_id``.

        Raises:
            ValueError: ``user_id`` is missing; the API needs it on every call in this mode.
        """
        if not user_id:
            raise ValueError(
                "user_id (the end user's Workato Identity id) is required with ApiKeyAuth"
            )
        return {"Authorization": self._header, USER_ID_HEADER: user_id}

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in errors or logs."""
        return (self._key.get_secret_value(),)

    def __repr__(self) -> str:
        return "ApiKeyAuth(api_key=SecretStr('**********'))"

    __str__ = __repr__


class OAuthAuth:
    """OAuth 2.0 (PKCE) end-user authentication.

    Args:
        token_provider: Async callable returning the end user's current access token.
            It is awaited before every request, so it should cache and refresh the token
            itself (refresh tokens rotate; serialise refreshes).
    """

    __slots__ = ("_provider", "_recent")

    def __init__(self, token_provider: Callable[[], Awaitable[str | SecretStr]]) -> None:
        self._provider = token_provider
        # Tokens handed out recently; kept only so they can be redacted from error text.
        self._recent: deque[str] = deque(maxlen=4)

    async def headers(self, user_id: str | None) -> dict[str, str]:
        """Return the auth headers for one call; ``user_id`` is implied by the token."""
        token = await self._provider()
        value = token.get_secret_value() if isinstance(token, SecretStr) else token
        if not value:
            raise ValueError("the OAuth token provider returned an empty token")
        if not self._recent or self._recent[-1] != value:
            self._recent.append(value)
        return {"Authorization": f"Bearer {value}"}

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in errors or logs."""
        return tuple(self._recent)

    def __repr__(self) -> str:
        return "OAuthAuth(token_provider=<hidden>)"

    __str__ = __repr__


Auth = ApiKeyAuth | OAuthAuth
