"""Map client errors onto Temporal's retry model.

A ``GenieAPIError`` becomes an ``ApplicationError`` whose ``type`` is the client's stable
``error_type`` and whose details carry status, ``error_code`` and ``request_id`` for
``status.last_error``. 4xx are final; 429/5xx/transport errors retry, after the server's
``Retry-After`` when it gave one.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import ApplicationError

from genie_api import GenieAPIError

WORKER_SHUTDOWN = "WorkerShutdown"
"""A stream segment stopped because its worker is shutting down; it resumes elsewhere."""
ATTACHMENT_REFUSED = "AttachmentRefused"
"""The attachment URI is not allowed or cannot be read."""
STREAM_STALLED = "StreamStalled"
"""The run made no progress through any recovery path within the attempt."""


def to_application_error(e: GenieAPIError, *, retryable: bool | None = None) -> ApplicationError:
    """``retryable`` overrides the client's classification (see the stream segment)."""
    # The client guarantees its messages carry no secret; they name the endpoint,
    # conversation and run, which is what an operator needs to look the call up.
    return ApplicationError(
        str(e),
        {
            "status": e.status,
            "error_code": e.error_code,
            "request_id": e.request_id,
            "endpoint": e.endpoint,
        },
        type=e.error_type,
        non_retryable=not (e.retryable if retryable is None else retryable),
        next_retry_delay=timedelta(seconds=e.retry_after) if e.retry_after else None,
    )
