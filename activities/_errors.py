"""Map client errors onto Temporal's retry model.

A ``GenieAPIError`` becomes an ``ApplicationError`` whose ``type`` is the client's stable
``error_type`` and whose details carry status, ``error_code``, ``request_id`` and, when
known, ``genie_run_id`` for ``status.last_error``. 4xx are final; 429/5xx/transport
errors retry, after the server's ``Retry-After`` when it gave one (and only then:
otherwise the workflow's back-off applies; ``activities/_options.py`` states the whole
budget). Two exceptions: a 401/403 to a key that may still be settling is handed to the
workflow to retry for a while (``credential_refusal``), and ``409 conversation_busy``
with an earlier turn's run waits for it (``BUSY_WITH_EARLIER_RUN``, raised by the stream
segment).
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._options import (
    AUTH_RETRY_EVERY,
    DEFAULT_AUTH_SETTLE_SECONDS,
    server_retry_delay,
)
from genie_api import (
    USER_NONACTIVE_OR_MISSING,
    AuthenticationError,
    GenieAPIError,
    PermissionDeniedError,
)

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
that is neither ``conversation_busy`` nor the documented already-resolved code, while
the conversation state does not show the run past the pause (a skill decision refused
after it went on was resolved already). The decision was not applied; a human can
decide again. Not retried."""
DECISION_NOT_POSTED = "DecisionNotPosted"
"""A ``resume`` segment could not post the decision it carried
(``StreamSegmentInput.decision``) for a reason other than the API's final refusal (that
one is ``DecisionRefusedByApi``, as from ``post_skill_decision``): it streamed nothing,
and the workflow posts the decision with ``post_skill_decision``, whose retries and
outage riding apply as usual. Not retried."""


CREDENTIAL_REFUSED = "CredentialRefused"
"""The API refused the worker's credential (401/403) for good: a wrong, revoked or
replaced key, or a key for another data centre. Not retried; fix the configuration."""
CREDENTIAL_SETTLING = "CredentialSettling"
"""The API refused a credential this worker has never had accepted: it may still be on
its way to the API gateway. Handed to the workflow (not retried by Temporal), which
retries the step every ``AUTH_RETRY_EVERY`` seconds on durable timers, shows it on the
details card, and turns it into :data:`CREDENTIAL_REFUSED` once the settle window, in
the details as ``settle_seconds``, has passed since the first refusal."""
BUSY_WITH_EARLIER_RUN = "ConversationBusyWithEarlierRun"
"""E5 answered ``409 conversation_busy`` and the active run is an earlier turn's (one that
failed with its run still active): the send waits for it to end. Retried."""

CREDENTIAL_ADVICE = (
    "Check GENIE_API_KEY / GENIE_API_KEY_FILE (the genie client's key, not a Developer API "
    "token) and that GENIE_API_BASE_URL / GENIE_API_REGION is your workspace's data centre"
)
"""What to do about a refused credential; part of every final refusal's message."""


def credential_refusal(
    e: GenieAPIError, *, accepted_before: bool, settle_seconds: float = DEFAULT_AUTH_SETTLE_SECONDS
) -> ApplicationError | None:
    """What a 401/403 means for this activity; ``None`` for any other error.

    A new or rotated API key reaches the API gateway asynchronously: for up to about a
    minute calls may answer ``403 access_denied`` or ``401``. So while this worker has
    never had the credential accepted (``accepted_before``; a key that worked and is
    refused now was revoked or replaced) and the window is not 0, the refusal is
    :data:`CREDENTIAL_SETTLING`: the workflow, which sees every attempt, retries and
    bounds it in workflow time (``workflows/_steps.py``), so the wait is on the details
    card and survives a worker restart. Otherwise it is a final :data:`CREDENTIAL_REFUSED`
    naming the credential problem. ``401 user_nonactive_or_missing`` is about the end
    user, not the credential, and is left to the caller (final, as every other 4xx).
    Each refusal counts in the metric ``genie_credential_refusals`` (``outcome`` =
    ``retried`` or ``final``).

    Args:
        e: The client's error.
        accepted_before: ``GenieClient.credential_accepted`` of the worker's client.
        settle_seconds: The settle window (``GENIE_AUTH_SETTLE_SECONDS``); 0: never retried.
    """
    if not isinstance(e, AuthenticationError | PermissionDeniedError):
        return None
    if e.error_code == USER_NONACTIVE_OR_MISSING:
        return None
    settling = not accepted_before and settle_seconds > 0
    activity.metric_meter().create_counter(
        "genie_credential_refusals",
        "401/403 answers to the worker's credential, retried while it may still be settling",
    ).add(1, {"outcome": "retried" if settling else "final", "status": str(e.status)})
    answer = f"HTTP {e.status} {e.error_code or '(no error_code)'}"
    rid = f"[request_id={e.request_id or 'none'}]"
    if settling:
        return ApplicationError(
            f"the Headless API has not accepted the worker's credential yet ({answer}); a "
            f"new or rotated API key can take up to {settle_seconds:g} s to reach the API "
            f"gateway, so the step is retried every {AUTH_RETRY_EVERY:g} s {rid}",
            {**_details(e), "credential_settling": True, "settle_seconds": settle_seconds},
            type=CREDENTIAL_SETTLING,
            # Not Temporal's to retry: the workflow does, where the card can show it.
            non_retryable=True,
        )
    why = (
        "the key was accepted earlier, so it has been revoked or replaced"
        if accepted_before
        else "GENIE_AUTH_SETTLE_SECONDS is 0, so it is not waited for"
    )
    return ApplicationError(
        f"the Headless API refused the worker's credential ({answer}): {why}. "
        f"{CREDENTIAL_ADVICE} {rid}",
        _details(e),
        type=CREDENTIAL_REFUSED,
        non_retryable=True,
    )


def to_application_error(
    e: GenieAPIError, *, retryable: bool | None = None, genie_run_id: str | None = None
) -> ApplicationError:
    """``retryable`` overrides the client's classification (see the stream segment);
    ``genie_run_id`` names the run in the details when the error itself does not (a
    failed turn's run, which may still be active at the API)."""
    # The client guarantees its messages carry no secret; they name the endpoint,
    # conversation and run, which is what an operator needs to look the call up.
    details = _details(e)
    if genie_run_id is not None and details["genie_run_id"] is None:
        details["genie_run_id"] = genie_run_id
    return ApplicationError(
        str(e),
        details,
        type=e.error_type,
        non_retryable=not (e.retryable if retryable is None else retryable),
        # The client sets retry_after only from the server's own ask, never from its
        # reconnect pacing; a tiny delay here would override the workflow's back-off.
        next_retry_delay=server_retry_delay(e.retry_after),
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
        "genie_run_id": e.genie_run_id,
    }
