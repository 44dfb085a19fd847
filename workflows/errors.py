"""Error *types* a client can match on without parsing messages.

Every refusal from a validator or handler is a ``temporalio.exceptions.ApplicationError``
whose ``type`` is one of these constants, so backends in any language classify failures
with a string comparison (``err.cause.type == UNKNOWN_CALL_ID``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALREADY_DECIDED",
    "API_UNREACHABLE",
    "APPROVAL_TIMED_OUT",
    "APPROVER_NOT_ALLOWED",
    "CONVERSATION_CREATE_FAILED",
    "CONVERSATION_ENDED",
    "DEADLINE_EXPIRED",
    "DECISION_PENDING",
    "EMPTY_MESSAGE",
    "INVALID_DECISION",
    "INVALID_INPUT",
    "INVALID_SIGNATURE",
    "LINK_REFRESHES_EXHAUSTED",
    "MESSAGE_TOO_LONG",
    "QUEUE_FULL",
    "SECOND_APPROVER_REQUIRED",
    "TOO_MANY_WAITERS",
    "UNKNOWN_ATTEMPT_ID",
    "UNKNOWN_CALL_ID",
    "UNKNOWN_TURN",
]

EMPTY_MESSAGE: Final = "EmptyMessage"
"""``send_message`` with no text (after stripping whitespace), with an attachment or not:
the API refuses an empty message (``message_empty``), so it is refused before it is queued."""
MESSAGE_TOO_LONG: Final = "MessageTooLong"
"""``send_message`` over the API's 12,288-character limit."""
CONVERSATION_ENDED: Final = "ConversationEnded"
"""Any message to a conversation that has ended or is ending."""
QUEUE_FULL: Final = "QueueFull"
"""Too many turns waiting; send again when earlier turns have finished."""
UNKNOWN_TURN: Final = "UnknownTurn"
"""``wait_turn`` for a turn number this conversation never queued."""
UNKNOWN_CALL_ID: Final = "UnknownCallId"
"""A skill decision for a ``call_id`` this conversation is not waiting on."""
ALREADY_DECIDED: Final = "AlreadyDecided"
"""A second decision for a ``call_id`` / ``attempt_id`` that has one."""
APPROVER_NOT_ALLOWED: Final = "ApproverNotAllowed"
"""The approver (or connection actor) is not in ``policy.approvers``."""
UNKNOWN_ATTEMPT_ID: Final = "UnknownAttemptId"
"""A connection decision or link refresh for an attempt this conversation is not waiting on."""
INVALID_DECISION: Final = "InvalidDecision"
"""A decision whose fields are malformed (e.g. an empty approver)."""
APPROVAL_TIMED_OUT: Final = "ApprovalTimedOut"
"""The workflow failed because an approval timed out under ``on_approval_timeout="fail"``."""
CONVERSATION_CREATE_FAILED: Final = "ConversationCreateFailed"
"""The Headless API refused to create the conversation (the workflow fails with this)."""
INVALID_INPUT: Final = "InvalidInput"
"""A message (workflow input, update or signal) whose fields are missing, of the wrong type,
or outside their bounds; the error names each field. Also JSON that cannot be read at
all, such as one nested deeper than about 200 levels (raised by the data converter,
``genie_codec``). Nothing changed."""
DEADLINE_EXPIRED: Final = "DeadlineExpired"
"""A decision that arrived (in workflow time) at or after the item's deadline; the
timeout action of the policy applies instead."""
DECISION_PENDING: Final = "DecisionPending"
"""An update waited for a decision the API refused: the item is pending again."""
API_UNREACHABLE: Final = "ApiUnreachable"
"""A step kept failing against the API for longer than ``policy.api_outage_timeout``."""
INVALID_SIGNATURE: Final = "InvalidSignature"
"""Decision signing is on and this decision has no valid, fresh signature from a trusted
key (missing, unknown key, tampered, or older than the configured age)."""
SECOND_APPROVER_REQUIRED: Final = "SecondApproverRequired"
"""A skill that needs two approvers was approved again by the one who already approved."""
LINK_REFRESHES_EXHAUSTED: Final = "LinkRefreshesExhausted"
"""``refresh_auth_link`` for an attempt that already had ``MAX_LINK_REFRESHES`` fresh links
fetched: each fetch is an activity in history, so they are bounded per attempt."""
TOO_MANY_WAITERS: Final = "TooManyWaiters"
"""A call that would wait on a turn while ``MAX_WAITERS`` calls already wait; retry later,
wait from one place, or read the ``status`` query."""
