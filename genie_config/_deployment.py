"""The deployment file: default policy, notification endpoints and the inbox address.

``GENIE_DEPLOYMENT_FILE`` names a TOML file::

    inbox_url = "https://inbox.example.com"

    [policy]                       # ConversationPolicy for conversations started without one
    approval_timeout = "PT4H"
    [[policy.skills]]
    match = "wire_*"
    required_approvals = 2

    [[notify]]                     # endpoints told of each pause
    name = "ops"
    url = "https://hooks.example.com/genie"
    secret = "whsec_..."           # Standard Webhooks signing secret
    [[notify]]
    name = "slack"
    format = "slack"
    url = "https://hooks.slack.com/services/..."

``GENIE_INBOX_URL`` and ``GENIE_NOTIFY_URL`` (+ ``GENIE_NOTIFY_SECRET``, an endpoint named
``default``) are shortcuts for the common single-endpoint case. Everything is validated
when the worker starts; an error names the setting and never echoes a URL or secret.
"""

from __future__ import annotations

import tomllib
from typing import Any

from pydantic import ValidationError

from activities._notify import NotifyEndpoint
from activities.models import Deployment
from genie_config._settings import ConfigError, GenieSettings
from workflows.models import ConversationPolicy


def load_deployment(settings: GenieSettings) -> tuple[Deployment, list[NotifyEndpoint]]:
    """What the worker tells each conversation at start, and the endpoints it keeps."""
    data: dict[str, Any] = {}
    if settings.deployment_file is not None:
        try:
            data = tomllib.loads(settings.deployment_file.read_text())
        except OSError as e:
            raise ConfigError(f"GENIE_DEPLOYMENT_FILE: cannot read it ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"GENIE_DEPLOYMENT_FILE: not valid TOML ({e})") from None
    policy = None
    if "policy" in data:
        try:
            policy = ConversationPolicy.model_validate(data["policy"]).model_dump(mode="json")
        except ValidationError as e:
            raise ConfigError(f"GENIE_DEPLOYMENT_FILE [policy]: {_fields(e)}") from None
    endpoints: list[NotifyEndpoint] = []
    for i, raw in enumerate(data.get("notify", [])):
        try:
            endpoints.append(NotifyEndpoint.model_validate(raw))
        except ValidationError as e:
            raise ConfigError(f"GENIE_DEPLOYMENT_FILE [[notify]] #{i + 1}: {_fields(e)}") from None
    if settings.notify_url is not None:
        try:
            endpoints.append(
                NotifyEndpoint(
                    name="default",
                    url=settings.notify_url,
                    format=settings.notify_format,
                    secret=settings.notify_secret,
                )
            )
        except ValidationError as e:
            raise ConfigError(f"GENIE_NOTIFY_URL / GENIE_NOTIFY_SECRET: {_fields(e)}") from None
    names = [ep.name for ep in endpoints]
    if len(set(names)) != len(names):
        raise ConfigError("notification endpoints: two have the same name")
    for ep in endpoints:
        if ep.format == "standard" and ep.secret is None:
            raise ConfigError(
                f"notification endpoint {ep.name!r}: a standard webhook needs a secret"
            )
    inbox = settings.inbox_url or data.get("inbox_url")
    deployment = Deployment(
        keys=dict(settings.decision_keys),
        max_age_seconds=settings.decision_max_age_seconds,
        inbox_url=str(inbox).rstrip("/") if inbox else None,
        default_policy=policy,
        pause_rollover=settings.pause_rollover or settings.worker_deployment_name is not None,
    )
    return deployment, endpoints


def _fields(e: ValidationError) -> str:
    # Field names and messages only: the input may hold a URL or a secret.
    return "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
