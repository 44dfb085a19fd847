"""Which end users the worker will act for.

With an API key the worker names the end user itself (``X-IDP-User-Id``), and the API
believes it: starting a conversation as user X is as powerful as being X at the genie.
Whoever can start a workflow on the task queue chooses X, so the operator can narrow the
choice with ``GENIE_USER_ID_PATTERN`` (a regular expression the whole id must match)
and/or ``GENIE_USER_IDS`` (an allowlist); with both, an id must satisfy both.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import NoReturn

from temporalio.exceptions import ApplicationError

from activities._errors import USER_NOT_ALLOWED

HEADER_SAFE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
"""Printable ASCII, no surrounding spaces: what an HTTP header value carries intact.
Anything else (CR/LF, emoji) cannot be sent at all, so it is refused here rather than
failing every retry of the API call as if the network were down."""


@dataclass(frozen=True)
class UserIdPolicy:
    """Refuses user ids the operator did not allow; the defaults allow any sendable id."""

    pattern: re.Pattern[str] | None = None
    allowed: frozenset[str] = frozenset()
    """Empty: no allowlist."""

    def check(self, user_id: str) -> None:
        """Raise a non-retryable ``UserNotAllowed`` unless ``user_id`` may be used.

        The message never quotes the id: it may be huge, or carry control characters.
        """
        if not user_id:
            _refuse("no user id given")
        if HEADER_SAFE.fullmatch(user_id) is None:
            _refuse(
                f"the user id ({len(user_id)} characters) cannot be sent as an HTTP header "
                "(printable ASCII only, no surrounding spaces)"
            )
        if self.pattern is not None and self.pattern.fullmatch(user_id) is None:
            _refuse("the user id does not match GENIE_USER_ID_PATTERN")
        if self.allowed and user_id not in self.allowed:
            _refuse("the user id is not in GENIE_USER_IDS")


def _refuse(message: str) -> NoReturn:
    raise ApplicationError(message, type=USER_NOT_ALLOWED, non_retryable=True)


USER_HASH_PREFIX = "h1:"


def user_search_value(key: bytes, user_id: str) -> str:
    """The keyed hash ``GenieUserId`` holds under ``GENIE_USER_ID_HASH_KEY``: HMAC-SHA256,
    truncated to 128 bits (plenty against collisions among users; no use without the
    key), so ops who know a user and the key can still filter by them
    (``geniectl user-hash``) while the search index holds no user id."""
    digest = hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:32]
    return USER_HASH_PREFIX + digest
