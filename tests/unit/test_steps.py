"""How ``workflows/_steps.py`` reads an activity failure: pure, no worker needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from activities import CREDENTIAL_REFUSED, CREDENTIAL_SETTLING
from workflows._steps import CredentialNotAccepted, error_info, heals, settle_window

AT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def _failed(cause: ApplicationError, state: RetryState = RetryState.NON_RETRYABLE_FAILURE) -> Any:
    e = ActivityError(
        "activity failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="w",
        activity_type="create_conversation",
        activity_id="1",
        retry_state=state,
    )
    e.__cause__ = cause
    return e


def _settling(details: object) -> ApplicationError:
    return ApplicationError(
        "not accepted yet", details, type=CREDENTIAL_SETTLING, non_retryable=True
    )


def test_the_window_comes_from_the_failure() -> None:
    e = _failed(_settling({"settle_seconds": 20, "status": 403}))
    assert settle_window(e) == timedelta(seconds=20)
    assert not heals(e)  # never ridden as an outage: the settle rule decides


@pytest.mark.parametrize(
    "details", [{}, {"settle_seconds": "60"}, {"settle_seconds": float("inf")},
                {"settle_seconds": -1}, {"settle_seconds": 1e9}, "junk", None],
)  # fmt: skip
def test_a_malformed_window_is_the_default_minute(details: object) -> None:
    """Whatever a (mismatched or hostile) activity sends, the wait stays bounded."""
    assert settle_window(_failed(_settling(details))) == timedelta(seconds=60)


def test_other_failures_have_no_window() -> None:
    refused = ApplicationError("no", {"status": 401}, type=CREDENTIAL_REFUSED, non_retryable=True)
    assert settle_window(_failed(refused)) is None
    blip = ApplicationError("503", {"status": 503}, type="GenieServerError")
    assert settle_window(_failed(blip, RetryState.MAXIMUM_ATTEMPTS_REACHED)) is None


def test_past_the_window_it_reports_the_credential_not_the_outage() -> None:
    cause = _settling(
        {"settle_seconds": 60, "status": 403, "error_code": "access_denied", "request_id": "r1"}
    )
    info = error_info(
        CredentialNotAccepted(_failed(cause), AT, timedelta(seconds=60)), turn=1, at=AT
    )
    assert (info.type, info.status, info.error_code, info.request_id) == (
        CREDENTIAL_REFUSED, 403, "access_denied", "r1",
    )  # fmt: skip
    assert "refused the worker's credential (HTTP 403 access_denied) for 60 s" in info.message
    assert "GENIE_API_KEY" in info.message and "GENIE_AUTH_SETTLE_SECONDS" in info.message
