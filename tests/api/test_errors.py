"""Unit tests: error classes, status mapping, Retry-After, redaction (no network)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from genie_api import (
    ApiKeyAuth,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GenieAPIError,
    GenieClient,
    NotAcceptableError,
    NotFoundError,
    OAuthAuth,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    RunCursor,
    ServerError,
    StreamResumeError,
    TransportError,
    UnprocessableError,
)
from genie_api._errors import error_class_for_status, parse_retry_after
from genie_api._http import RequestContext, error_from_response, parse_json_body

KEY = "k" * 8 + "0123456789abcdef" * 3

STATUS_CLASSES = [
    (400, BadRequestError, False),
    (401, AuthenticationError, False),
    (403, PermissionDeniedError, False),
    (404, NotFoundError, False),
    (406, NotAcceptableError, False),
    (409, ConflictError, False),
    (413, PayloadTooLargeError, False),
    (422, UnprocessableError, False),
    (429, RateLimitedError, True),
    (500, ServerError, True),
    (502, ServerError, True),
    (503, ServerError, True),
    (504, ServerError, True),
]


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers or {})


@pytest.mark.parametrize(("status", "cls", "retryable"), STATUS_CLASSES)
def test_status_mapping(status: int, cls: type[GenieAPIError], retryable: bool) -> None:
    assert error_class_for_status(status) is cls
    body = b'{"error_code": "x_code", "error_message": "Nope.", "request_id": "req-1"}'
    err = error_from_response(_response(status, body), RequestContext("send_message", "g", "c1"))
    assert type(err) is cls
    assert err.status == status
    assert err.retryable is retryable
    assert (err.error_code, err.error_message, err.request_id) == ("x_code", "Nope.", "req-1")
    assert err.conversation_id == "c1"
    assert err.endpoint == "send_message"
    assert "x_code" in str(err)
    assert "conversation c1" in str(err)


def test_other_statuses() -> None:
    assert error_class_for_status(418) is GenieAPIError
    err = error_from_response(_response(408, b""), RequestContext("events"))
    assert err.retryable is True


def test_request_id_falls_back_to_header_and_html_bodies_are_tolerated() -> None:
    err = error_from_response(
        _response(502, b"<html>Bad gateway</html>", {"X-Request-Id": "hdr-1"}),
        RequestContext("events"),
    )
    assert isinstance(err, ServerError)
    assert err.request_id == "hdr-1"
    assert err.error_code is None
    assert err.error_message is not None
    assert "Bad gateway" in err.error_message


def test_nested_error_object() -> None:
    err = error_from_response(
        _response(400, b'{"error": {"code": "bad", "message": "m"}}'), RequestContext("x")
    )
    assert (err.error_code, err.error_message) == ("bad", "m")


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        ("3", None, 3.0),
        ("1.5", None, 1.5),
        ("2", {"retry_after_ms": 1500}, 1.5),  # the body is the precise one
        (None, {"retry_after_ms": 250}, 0.25),
        (None, {"retry_after_ms": True}, None),
        ("soon", None, None),
        (None, None, None),
        ("-4", None, 0.0),
    ],
)
def test_parse_retry_after(
    header: str | None, body: dict[str, object] | None, expected: float | None
) -> None:
    assert parse_retry_after(header, body) == expected


def test_parse_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    value = parse_retry_after(when)
    assert value is not None
    assert 25 < value <= 31


def test_retry_after_from_response() -> None:
    err = error_from_response(
        _response(429, b'{"error_code": "rate_limited"}', {"Retry-After": "7"}),
        RequestContext("send_message"),
    )
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == 7.0


def test_non_json_success_body_is_a_retryable_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_json_body(
            _response(200, b"<html>maintenance</html>", {"content-type": "text/html"}),
            RequestContext("events", conversation_id="c9"),
        )
    assert info.value.retryable is True
    assert "text/html" in str(info.value)
    assert parse_json_body(_response(200, b""), RequestContext("x")) is None
    assert parse_json_body(_response(200, b'{"result": {"a": 1}}'), RequestContext("x")) == {"a": 1}


def test_retryable_defaults() -> None:
    assert TransportError("x").retryable is True
    assert StreamResumeError("x").retryable is True
    assert ProtocolError("x").retryable is False
    assert ProtocolError("x", retryable=True).retryable is True


def test_errors_pickle_with_context() -> None:
    err = RateLimitedError("slow down", status=429, retry_after=2.0, conversation_id="c")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is RateLimitedError
    assert (copy.status, copy.retry_after, copy.retryable, copy.conversation_id) == (
        429,
        2.0,
        True,
        "c",
    )
    resume = StreamResumeError("gave up", cursor=RunCursor(conversation_id="c", last_seq_num=3))
    again = pickle.loads(pickle.dumps(resume))
    assert isinstance(again, StreamResumeError)
    assert again.cursor == resume.cursor


def test_auth_reprs_hide_secrets() -> None:
    auth = ApiKeyAuth(KEY)
    assert KEY not in repr(auth)
    assert KEY not in str(auth)

    async def provider() -> str:
        return "secret-oauth-value"

    assert "secret-oauth-value" not in repr(OAuthAuth(provider))
    client = GenieClient("http://127.0.0.1:1", auth)
    assert KEY not in repr(client)
    assert client.redact(f"echo {KEY} back") == "echo *** back"


def test_error_text_is_redacted() -> None:
    client = GenieClient("http://127.0.0.1:1", ApiKeyAuth(KEY))
    ctx = RequestContext("x", redact=client.redact)
    body = f'{{"error_code": "auth_failed", "error_message": "bad key {KEY}"}}'.encode()
    err = error_from_response(_response(401, body), ctx)
    assert KEY not in str(err)
    assert KEY not in repr(err)
    assert KEY not in (err.error_message or "")


async def test_api_key_auth_needs_user_id() -> None:
    auth = ApiKeyAuth(KEY)
    assert await auth.headers("u1") == {"Authorization": f"Bearer {KEY}", "X-IDP-User-Id": "u1"}
    with pytest.raises(ValueError, match="user_id"):
        await auth.headers(None)
    with pytest.raises(ValueError, match="empty"):
        ApiKeyAuth("  ")


async def test_oauth_headers_have_no_user_header() -> None:
    async def provider() -> str:
        return "tok-1"

    auth = OAuthAuth(provider)
    assert await auth.headers("ignored") == {"Authorization": "Bearer tok-1"}
    assert auth.secrets() == ("tok-1",)
