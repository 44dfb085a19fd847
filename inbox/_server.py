"""Serving the app with uvicorn, configured from ``GENIE_INBOX_*`` and ``TEMPORAL_*``."""

from __future__ import annotations

import asyncio
import logging
import re

import uvicorn

from genie_config import ConfigError, connect_temporal, temporal_connect_config
from inbox._app import create_app
from inbox._settings import InboxConfig

log = logging.getLogger("genie_inbox")


def describe(config: InboxConfig, url: str) -> str:
    s = config.settings
    how = {
        "jwt": f"JWT (issuer {s.jwt_issuer}, audience {s.jwt_audience})",
        "proxy": "trusted proxy headers from " + ", ".join(str(n) for n in s.trusted_proxies),
        "dev": "DEVELOPMENT MODE, NOT AUTHENTICATED: anyone can decide under any name",
    }[s.auth]
    signing = (
        f"decisions signed with key {config.signing_key_id}"
        if config.signing_key_id
        else "decisions NOT signed"
    )
    return f"approvals inbox on {url}; identity: {how}; {signing}"


_OS_REASON = re.compile(r'message: "([^"]+)"')


def preflight() -> str | None:
    """Why Temporal cannot be reached with the ``TEMPORAL_*`` settings, or None."""

    async def connect() -> None:
        await connect_temporal()

    try:
        target = temporal_connect_config()["target_host"]
        asyncio.run(connect())
    except ConfigError as e:
        return f"configuration: {e}"
    except RuntimeError as e:  # the SDK's connection failure: a Rust debug dump
        found = _OS_REASON.search(str(e))
        reason = found.group(1) if found else str(e).splitlines()[0][:200]
        return f"cannot connect to Temporal at {target} ({reason}); set TEMPORAL_ADDRESS"
    return None


def serve(config: InboxConfig) -> None:
    """Run until SIGINT/SIGTERM."""
    s = config.settings
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.session_secret_generated and s.auth != "dev":
        log.warning(
            "GENIE_INBOX_SESSION_SECRET is not set: a random one is used, so sessions end "
            "when the inbox restarts and are not shared between replicas"
        )
    log.info(describe(config, f"http://{s.host}:{s.port}"))
    uvicorn.run(
        create_app(config),
        host=s.host,
        port=s.port,
        # The TCP peer must stay the real one: proxy mode trusts identity headers only
        # from GENIE_INBOX_TRUSTED_PROXIES, which X-Forwarded-For must not be able to fake.
        proxy_headers=False,
        server_header=False,
        log_level=s.log_level.lower(),
        access_log=s.log_level == "DEBUG",
    )
