"""Telling people that something waits for them: webhooks, signed per Standard Webhooks.

The workflow starts one ``notify`` activity per endpoint when it pauses (and when it
escalates, or decides by policy). The endpoints — URL, format and signing secret — live
in the worker's configuration only; the workflow knows their names, so no URL or secret
ever enters workflow history.

Delivery is at-least-once: a retried attempt (after a timeout, or a worker killed
mid-request) sends the same ``webhook-id``, so a receiver that remembers the ids it saw
processes each notification once. A failing endpoint only fails its own activity; the
conversation never waits for it.

Only the receiver's status (and, on 429 or 5xx, its ``Retry-After``) counts: its
answer's body is never read, and a delivery that has no status within
``DELIVERY_SECONDS`` fails (and is retried). A receiver that asks for a wait gets it,
bounded as the API's asks are (``server_retry_delay``): retrying a rate-limited Slack
webhook sooner only earns more 429s.

Formats: ``standard`` — a JSON body with ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` headers (the ``standardwebhooks`` package signs), holding the item
bounded in size and without its ``auth_url``; ``slack`` — a
Slack incoming-webhook message (text plus the link; Slack's URL is the secret) in which
every value is escaped, so the inbox link is its only link.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from standardwebhooks.webhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._options import server_retry_delay
from activities.models import bounded_parameters
from genie_api import inert, parse_retry_after

NOTIFY_FAILED = "NotifyFailed"
"""The endpoint answered with an error, or could not be reached (retried)."""
NOTIFY_UNKNOWN_ENDPOINT = "NotifyUnknownEndpoint"
"""The workflow named an endpoint this worker does not configure (not retried)."""
ITEM_PATH = "/items/{workflow_id}/{kind}/{ref}"
"""Where the inbox shows one pending item; links never decide anything on GET."""
TIMEOUT_SECONDS = 10.0
"""Each step of a delivery: connecting, sending, each read of the answer's head."""
DELIVERY_SECONDS = 20.0
"""A whole delivery, answer head included: a receiver that drips its headers cannot hold
an attempt past this (the workflow's start-to-close is 30 s); the body is never read."""
MAX_TEXT_CHARS = 1_000
"""Each string of the item in a standard body (names, ids, notes): the genie's and the
API's text, so bounded here whatever reached the workflow."""
MAX_LIST_ITEMS = 50
PRIVATE_DETAILS = frozenset({"auth_url", "decision", "note"})
"""Item fields no notification carries. ``auth_url`` lets whoever opens it connect their
own account into the user's conversation: the inbox shows it only to people who may
decide the item, and a webhook receiver or Slack channel is not that check."""


class NotifyEndpoint(BaseModel):
    """One place to tell (from the worker's configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    url: SecretStr
    """Secret: a Slack incoming-webhook URL is itself the credential."""
    format: Literal["standard", "slack"] = "standard"
    secret: SecretStr | None = None
    """The Standard Webhooks signing secret (``whsec_…``); required for ``standard``."""

    # Checked when the worker starts, not at the first pause: a typo otherwise shows up
    # only as every notification failing for an hour. The messages never quote the value.
    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        try:
            parsed = httpx.URL(url.get_secret_value())
            port = parsed.port
        except (httpx.InvalidURL, ValueError):
            raise ValueError("not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if port is not None and not 0 < port < 65536:
            raise ValueError("the port must be 1-65535")
        return url

    @field_validator("secret")
    @classmethod
    def _webhook_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        try:
            Webhook(secret.get_secret_value())
        except Exception:  # binascii.Error, EmptyWebhookSecretError, ...: none quotes it
            raise ValueError("not a Standard Webhooks secret (whsec_ and base64)") from None
        return secret


class NotifyInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    endpoint: str
    webhook_id: str
    """The same for every attempt of one notification, so receivers can dedupe."""
    event: Literal["pause", "escalation", "decided_by_policy"]
    workflow_id: str
    genie_handle: str
    user_id: str
    ref: str
    """The call id or attempt id."""
    kind: Literal["skill_confirmation", "runtime_connection"]
    title: str
    """One line: "send_email wants approval", "jira needs the user to connect"."""
    details: dict[str, Any] = Field(default_factory=dict)
    deadline: datetime


class NotifyResult(BaseModel):
    status: int


class NotifyActivities:
    """The ``notify`` activity, bound to the configured endpoints and inbox address."""

    def __init__(
        self, endpoints: list[NotifyEndpoint] | None = None, inbox_url: str | None = None
    ) -> None:
        self._endpoints = {e.name: e for e in endpoints or []}
        self._inbox_url = (inbox_url or "").rstrip("/") or None

    @property
    def endpoint_names(self) -> list[str]:
        return sorted(self._endpoints)

    @activity.defn(name="notify")
    async def notify(self, inp: NotifyInput) -> NotifyResult:
        endpoint = self._endpoints.get(inp.endpoint)
        if endpoint is None:
            raise ApplicationError(
                f"no notification endpoint named {inp.endpoint!r} on this worker",
                type=NOTIFY_UNKNOWN_ENDPOINT,
                non_retryable=True,
            )
        link = self.link(
            inp.workflow_id, "skill" if inp.kind == "skill_confirmation" else "connection", inp.ref
        )
        if endpoint.format == "slack":
            body = json.dumps(_slack_message(inp, link))
            headers = {"content-type": "application/json"}
        else:
            body = json.dumps(_standard_body(inp, link), default=str)
            headers = _signed_headers(endpoint, inp.webhook_id, body)
        try:
            async with (
                asyncio.timeout(DELIVERY_SECONDS),
                httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False) as http,
                # Streamed and closed unread: only the status counts, so a receiver that
                # answers 1 GB, or drips its body, costs neither memory nor time.
                http.stream(
                    "POST", endpoint.url.get_secret_value(), content=body, headers=headers
                ) as r,
            ):
                status = r.status_code
                retry_after = r.headers.get("retry-after")
        except TimeoutError:
            raise ApplicationError(
                f"endpoint {endpoint.name!r} did not answer within {DELIVERY_SECONDS:g} s",
                type=NOTIFY_FAILED,
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            # Never the URL nor the exception's text: for Slack the URL is the secret.
            raise ApplicationError(
                f"endpoint {endpoint.name!r} unreachable ({type(e).__name__})", type=NOTIFY_FAILED
            ) from None
        if status >= 300:
            raise ApplicationError(
                f"endpoint {endpoint.name!r} answered HTTP {status}",
                type=NOTIFY_FAILED,
                next_retry_delay=_asked_wait(status, retry_after),
            )
        return NotifyResult(status=status)

    def link(self, workflow_id: str, kind: str, ref: str) -> str | None:
        """The inbox page of one item (``kind``: ``skill`` or ``connection``)."""
        if self._inbox_url is None:
            return None
        path = ITEM_PATH.format(
            workflow_id=quote(workflow_id, safe=""), kind=kind, ref=quote(ref, safe="")
        )
        return self._inbox_url + path


def _asked_wait(status: int, retry_after: str | None) -> timedelta | None:
    """The receiver's ``Retry-After`` as the next attempt's delay, on the answers that
    define it for a retry (429, 5xx); ``None`` (the workflow's back-off) otherwise, and for
    a value that is no usable wait (garbage, zero, negative, NaN). Bounded both ways
    (``server_retry_delay``); the activity's budget still ends retries at the item's
    deadline."""
    if status != 429 and status < 500:
        return None
    return server_retry_delay(parse_retry_after(retry_after))


HEADER_SAFE = "!#$&'()*+,/:;=?@[]~-._"
"""Printable ASCII kept as is in ``webhook-id``; anything else is percent-encoded."""


def header_id(webhook_id: str) -> str:
    """``webhook_id`` as a header can carry it, the same on every attempt: an id of plain
    ASCII as it is; a workflow or call id in another script (``bestellung-müller``), or
    holding a line break, percent-encoded. Unencoded, httpx refused the first and h11
    the second, so such a conversation's notices failed for an hour and never arrived."""
    return quote(webhook_id, safe=HEADER_SAFE)


def _signed_headers(endpoint: NotifyEndpoint, webhook_id: str, body: str) -> dict[str, str]:
    webhook_id = header_id(webhook_id)  # signed as sent
    if endpoint.secret is None:
        raise ApplicationError(
            f"endpoint {endpoint.name!r} has no signing secret",
            type=NOTIFY_FAILED,
            non_retryable=True,
        )
    at = datetime.now(UTC)
    signature = Webhook(endpoint.secret.get_secret_value()).sign(webhook_id, at, body)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def _standard_body(inp: NotifyInput, link: str | None) -> dict[str, Any]:
    return {
        "type": f"genie.{inp.kind}.{inp.event}",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "workflow_id": inp.workflow_id,
            "genie_handle": inp.genie_handle,
            "user_id": inp.user_id,
            "kind": inp.kind,
            "ref": inp.ref,
            "title": _clip(inp.title),
            "details": _bounded_details(inp.details),
            "deadline": inp.deadline.isoformat(),
            "link": link,
        },
    }


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_TEXT_CHARS]
    if isinstance(value, list):
        return [_clip(v) for v in value[:MAX_LIST_ITEMS]]
    if isinstance(value, dict):
        return {str(k)[:MAX_TEXT_CHARS]: _clip(v) for k, v in list(value.items())[:MAX_LIST_ITEMS]}
    return value


def _bounded_details(details: dict[str, Any]) -> dict[str, Any]:
    """The item, minus what no receiver should get, with every part bounded."""
    out: dict[str, Any] = {}
    shortened = False
    for key, value in list(details.items())[:MAX_LIST_ITEMS]:
        if key in PRIVATE_DETAILS:
            continue
        if key == "skill_parameters" and isinstance(value, dict):
            # The approver needs them to decide: the pending item's own, larger bound.
            out[key], shortened = bounded_parameters(value)
        else:
            out[str(key)[:MAX_TEXT_CHARS]] = _clip(value)
    if shortened:
        out["parameters_shortened"] = True
    return out


def slack_escape(value: object) -> str:
    """``value`` as Slack mrkdwn text that is only text: ``&``, ``<`` and ``>`` escaped as
    Slack asks, so ``<https://evil|Open in the inbox>``, ``<!channel>`` and ``<@U123>``
    show as typed instead of becoming links and mentions; characters that would reorder or
    hide text show as their escape (``genie_api.inert``)."""
    return inert(str(value)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _inline(value: object, limit: int = 200) -> str:
    """One escaped line for a `code` span or *bold*: no line breaks, and no backtick to
    close the span early (a look-alike stands in)."""
    text = " ".join(str(value).split())[:limit]
    return slack_escape(text.replace("`", "\u02cb"))


def _code_block(text: str) -> str:
    """Escaped text for a ``` block that it cannot leave: a zero-width space splits
    every run of backticks, so ``` inside never ends the block."""
    escaped = re.sub("`(?=`)", "`\u200b", slack_escape(text))
    return escaped + "\u200b" if escaped.endswith("`") else escaped


SLACK_PARAMETER_CHARS = 1_500
"""Of the parameters' JSON in a Slack message; the inbox shows all that was kept."""


def _slack_message(inp: NotifyInput, link: str | None) -> dict[str, Any]:
    # Everything but our own inbox link is the genie's or the user's text: escaped, so
    # the only real link in the message is ours.
    params = json.dumps(inp.details.get("skill_parameters", {}), ensure_ascii=False)
    cut = len(params) > SLACK_PARAMETER_CHARS or inp.details.get("parameters_shortened") is True
    event = "escalated" if inp.event == "escalation" else inp.event
    lines = [
        f"*{_inline(inp.title)}* ({event})",
        f"genie `{_inline(inp.genie_handle)}` · user `{_inline(inp.user_id)}` · "
        f"conversation `{_inline(inp.workflow_id)}`",
        f"deadline {inp.deadline:%Y-%m-%d %H:%M UTC}",
    ]
    if inp.kind == "skill_confirmation":
        lines.append(f"parameters: ```{_code_block(params[:SLACK_PARAMETER_CHARS])}```")
        if cut:
            lines.append("_parameters shortened here: open the inbox to read all that was kept_")
    if link:
        lines.append(f"<{link}|Open in the inbox>")
    return {"text": "\n".join(lines)}
