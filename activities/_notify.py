"""Telling people that something waits for them: webhooks, signed per Standard Webhooks.

The workflow starts one ``notify`` activity per endpoint when it pauses (and when it
escalates, or decides by policy). The endpoints — URL, format and signing secret — live
in the worker's configuration only; the workflow knows their names, so no URL or secret
ever enters workflow history.

Delivery is at-least-once: a retried attempt (after a timeout, or a worker killed
mid-request) sends the same ``webhook-id``, so a receiver that remembers the ids it saw
processes each notification once. A failing endpoint only fails its own activity; the
conversation never waits for it.

Formats: ``standard`` — a JSON body with ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` headers (the ``standardwebhooks`` package signs); ``slack`` — a
Slack incoming-webhook message (text plus the link; Slack's URL is the secret) in which
every value is escaped, so the inbox link is its only link.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from standardwebhooks.webhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

NOTIFY_FAILED = "NotifyFailed"
"""The endpoint answered with an error, or could not be reached (retried)."""
NOTIFY_UNKNOWN_ENDPOINT = "NotifyUnknownEndpoint"
"""The workflow named an endpoint this worker does not configure (not retried)."""
ITEM_PATH = "/items/{workflow_id}/{kind}/{ref}"
"""Where the inbox shows one pending item; links never decide anything on GET."""
TIMEOUT_SECONDS = 10.0


class NotifyEndpoint(BaseModel):
    """One place to tell (from the worker's configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    url: SecretStr
    """Secret: a Slack incoming-webhook URL is itself the credential."""
    format: Literal["standard", "slack"] = "standard"
    secret: SecretStr | None = None
    """The Standard Webhooks signing secret (``whsec_…``); required for ``standard``."""


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
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False) as http:
                r = await http.post(endpoint.url.get_secret_value(), content=body, headers=headers)
        except httpx.HTTPError as e:
            # Never the URL: for Slack it is the secret.
            raise ApplicationError(
                f"endpoint {endpoint.name!r} unreachable ({type(e).__name__})", type=NOTIFY_FAILED
            ) from None
        if r.status_code >= 300:
            raise ApplicationError(
                f"endpoint {endpoint.name!r} answered HTTP {r.status_code}", type=NOTIFY_FAILED
            )
        return NotifyResult(status=r.status_code)

    def link(self, workflow_id: str, kind: str, ref: str) -> str | None:
        """The inbox page of one item (``kind``: ``skill`` or ``connection``)."""
        if self._inbox_url is None:
            return None
        path = ITEM_PATH.format(
            workflow_id=quote(workflow_id, safe=""), kind=kind, ref=quote(ref, safe="")
        )
        return self._inbox_url + path


def _signed_headers(endpoint: NotifyEndpoint, webhook_id: str, body: str) -> dict[str, str]:
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
            "title": inp.title,
            "details": inp.details,
            "deadline": inp.deadline.isoformat(),
            "link": link,
        },
    }


def slack_escape(value: object) -> str:
    """``value`` as Slack mrkdwn text that is only text: ``&``, ``<`` and ``>`` escaped as
    Slack asks, so ``<https://evil|Open in the inbox>``, ``<!channel>`` and ``<@U123>``
    show as typed instead of becoming links and mentions."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def _slack_message(inp: NotifyInput, link: str | None) -> dict[str, Any]:
    # Everything but our own inbox link is the genie's or the user's text: escaped, so
    # the only real link in the message is ours.
    params = json.dumps(inp.details.get("skill_parameters", {}), ensure_ascii=False)[:1500]
    event = "escalated" if inp.event == "escalation" else inp.event
    lines = [
        f"*{_inline(inp.title)}* ({event})",
        f"genie `{_inline(inp.genie_handle)}` · user `{_inline(inp.user_id)}` · "
        f"conversation `{_inline(inp.workflow_id)}`",
        f"deadline {inp.deadline:%Y-%m-%d %H:%M UTC}",
    ]
    if inp.kind == "skill_confirmation":
        lines.append(f"parameters: ```{_code_block(params)}```")
    if link:
        lines.append(f"<{link}|Open in the inbox>")
    return {"text": "\n".join(lines)}
