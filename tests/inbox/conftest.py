"""The inbox as a process (genie_stack's ``InboxProcess``) on the suite's real stack.

One inbox per identity mode for the session, all on the suite's Temporal dev server;
conversations run on the per-test worker (``task_queue``) and the simulator. The jwt
inbox signs its decisions with ``SIGNING_KEY``; a worker that trusts that key is
started only by the signing tests.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from temporalio.testing import WorkflowEnvironment

from genie_stack import InboxProcess, inbox_env
from tests.inbox.helpers import AUDIENCE, ISSUER

SIGNING_KEY = Ed25519PrivateKey.generate()
SIGNING_KEY_ID = "inbox-test"
IDP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
"""The identity provider's key: the jwt inbox trusts its public half."""
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
"""A key nobody trusts (forged tokens)."""


def _pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def signing_key_text() -> str:
    raw = SIGNING_KEY.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


MODES: dict[str, dict[str, object]] = {
    "dev": {"auth": "dev", "allow_dev": True},
    "dev_one_listed": {"auth": "dev", "allow_dev": True, "max_listed": 1},
    "jwt": {
        "auth": "jwt",
        "jwt_public_key": _pem(IDP_KEY),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_algorithms": "RS256",
        "jwt_name_claim": "email",
        "signing_key": signing_key_text(),
        "signing_key_id": SIGNING_KEY_ID,
    },
    "proxy": {"auth": "proxy", "trusted_proxies": "127.0.0.1/32,::1/128"},
    "proxy_elsewhere": {"auth": "proxy", "trusted_proxies": "10.0.0.0/8"},
}


def temporal_address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@pytest.fixture(scope="session")
async def inboxes(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, InboxProcess]]:
    """Every mode's inbox, started side by side (each is a Python process start)."""
    logs = tmp_path_factory.mktemp("inbox")
    started = {
        mode: InboxProcess(
            log_path=logs / f"{mode}.log",
            env=inbox_env(
                temporal_address=temporal_address(temporal_env),
                settings={"query_timeout_seconds": 2, "refresh_seconds": 1, **settings},
                inherit=False,
            ),
        )
        for mode, settings in MODES.items()
    }
    try:
        await asyncio.gather(*(p.start(within=60) for p in started.values()))
        yield started
    finally:
        for p in started.values():
            p.stop()


def _client(inbox: InboxProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=inbox.url, timeout=30, follow_redirects=False)


@pytest.fixture
async def dev_http(inboxes: dict[str, InboxProcess]) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(inboxes["dev"]) as http:
        yield http


ClientFor = Callable[[str], httpx.AsyncClient]


@pytest.fixture
async def client_for(inboxes: dict[str, InboxProcess]) -> AsyncIterator[ClientFor]:
    """``client_for(mode)``: a fresh cookie jar on that mode's inbox (closed after)."""
    made: list[httpx.AsyncClient] = []

    def make(mode: str) -> httpx.AsyncClient:
        http = _client(inboxes[mode])
        made.append(http)
        return http

    yield make
    for http in made:
        await http.aclose()


@pytest.fixture(scope="session")
def inbox_logs(inboxes: dict[str, InboxProcess]) -> dict[str, Path]:
    return {mode: p.log_path for mode, p in inboxes.items() if p.log_path is not None}
