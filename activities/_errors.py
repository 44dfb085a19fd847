"""Map client errors onto Temporal's retry model.

A ``GenieAPIError`` becomes an ``ApplicationError`` whose ``type`` is the client's stable
``error_type`` and whose details carry status, ``error_code`` and ``request_id`` for
``status.last_error``. 4xx are final; 429/5xx/transport errors retry, after the server's
``Retry-After`` when it gave one (and only then: otherwise the workflow's back-off
applies; ``activities/_options.py`` states the whole budget).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import ApplicationError

from activities._options import MAX_SERVER_RETRY_DELAY
from genie_api import GenieAPIError

WORKER_SHUTDOWN = "WorkerShutdown"
"""A stream segment stopped because its worker is shutting down; it resumes elsewhere."""
ATTACHMENT_REFUSED = "AttachmentRefused"
"""The attachment URI is not allowed or cannot be read."""
ATTACHMENT_UNAVAILABLE = "AttachmentUnavailable"
"""An allowed attachment URL could not be fetched for now (connection, 5xx); retried."""
USER_NOT_ALLOWED = "UserNotAllowed"
"""The conversation's user id is refused by GENIE_USER_ID_PATTERN / GENIE_USER_IDS."""
STREAM_STALLED = "StreamStalled"
"""The run made no progress through any recovery path within the attempt."""
DECISION_REFUSED = "DecisionRefusedByApi"
"""The API refused a decision (skill, business approval, connection rejection) with a
final answer other than "already resolved": a 4xx such as 400/401/403/404/422, or a 409
that is neither ``conversation_busy`` nor the documented already-resolved code. The
decision was not applied; a human can decide again. Not retried."""


def to_application_error(e: GenieAPIError, *, retryable: bool | None = None) -> ApplicationError:
    """``retryable`` overrides the client's classification (see the stream segment)."""
    # The client guarantees its messages carry no secret; they name the endpoint,
    # conversation and run, which is what an operator needs to look the call up.
    return ApplicationError(
        str(e),
        _details(e),
        type=e.error_type,
        non_retryable=not (e.retryable if retryable is None else retryable),
        # The client sets retry_after only from the server's own ask, never from its
        # reconnect pacing; a tiny delay here would override the workflow's back-off.
        next_retry_delay=(
            timedelta(seconds=min(e.retry_after, MAX_SERVER_RETRY_DELAY)) if e.retry_after else None
        ),
    )


def decision_refused(e: GenieAPIError, what: str) -> ApplicationError:
    """A final refusal of a decision post, as a non-retryable :data:`DECISION_REFUSED`.

    Args:
        e: The API's answer.
        what: The decision, e.g. ``"skill decision for call call_1"``.
    """
    # Status, code and request id only: enough for a card to say "refused by the API"
    # and for an operator to look the call up, and no free text that might carry a
    # secret or change with the server's wording.
    status = f"HTTP {e.status}" if e.status is not None else "an unexpected answer"
    return ApplicationError(
        f"{what} refused by the API: {status} {e.error_code or '(no error_code)'} "
        f"[request_id={e.request_id or 'none'}]",
        _details(e),
        type=DECISION_REFUSED,
        non_retryable=True,
    )


def _details(e: GenieAPIError) -> dict[str, object]:
    """What an operator needs to look the call up; shown in ``status.last_error``."""
    return {
        "status": e.status,
        "error_code": e.error_code,
        "request_id": e.request_id,
        "endpoint": e.endpoint,
    }
