"""Search attributes registered on the server; ops filter on these in the Web UI.

Values are ids and states only: search attributes are not encrypted by a codec, so no
message text or secret ever goes here.
"""

from __future__ import annotations

from typing import Any, Final

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

__all__ = [
    "ALL_SEARCH_ATTRIBUTES",
    "GENIE_AWAITING_SINCE",
    "GENIE_CONVERSATION_ID",
    "GENIE_DEADLINE",
    "GENIE_HANDLE",
    "GENIE_STATE",
    "GENIE_USER_ID",
    "cli_type",
    "dev_server_flags",
]

GENIE_HANDLE: Final = SearchAttributeKey.for_keyword("GenieHandle")
GENIE_CONVERSATION_ID: Final = SearchAttributeKey.for_keyword("GenieConversationId")
GENIE_STATE: Final = SearchAttributeKey.for_keyword("GenieState")
"""``status.state`` as ops filter on it (``idle``, ``awaiting_approval``, ``ended``, …), set
as the state changes, except that a turn shows ``running`` only once it has run for the
policy's ``running_shown_after`` (or as it leaves a pause): a short turn writes nothing."""
GENIE_USER_ID: Final = SearchAttributeKey.for_keyword("GenieUserId")
GENIE_AWAITING_SINCE: Final = SearchAttributeKey.for_datetime("GenieAwaitingSince")
GENIE_DEADLINE: Final = SearchAttributeKey.for_datetime("GenieDeadline")
"""When the current wait for a human ends at the latest (after any escalation): the
policy decides then. A running conversation still waiting past it is stuck, which the
``genie_approvals_past_deadline`` gauge and its alert watch (deploy/prometheus)."""

ALL_SEARCH_ATTRIBUTES: Final = (
    GENIE_HANDLE,
    GENIE_CONVERSATION_ID,
    GENIE_STATE,
    GENIE_USER_ID,
    GENIE_AWAITING_SINCE,
    GENIE_DEADLINE,
)
"""Every key, for registration (``temporal server start-dev --search-attribute``)."""


_CLI_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
}


def cli_type(key: SearchAttributeKey[Any]) -> str:
    """The type's name as ``temporal operator search-attribute create --type`` takes it."""
    return _CLI_TYPES[key.indexed_value_type]


def dev_server_flags() -> list[str]:
    """``--search-attribute NAME=TYPE`` flags for ``temporal server start-dev``."""
    return [
        arg
        for key in ALL_SEARCH_ATTRIBUTES
        for arg in ("--search-attribute", f"{key.name}={cli_type(key)}")
    ]
