"""Simulator configuration: one frozen object built from the command line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

Envelope = Literal["bare", "result"]
StateVocabulary = Literal["sdk", "production"]

DEFAULT_API_KEY = "sim-dev-key"
MAX_MESSAGE_CHARS = 12_288
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
EVENT_RETENTION_SECONDS = 24 * 60 * 60
AUTH_LINK_TTL_SECONDS = 5 * 60


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Every command-line flag of ``python -m genie_sim`` (see ``docs/simulator.md``).

    Attributes:
        host: Interface to bind.
        port: TCP port to bind.
        api_key: The only accepted API key. Excluded from ``repr`` so it never lands in logs.
        envelope: ``result`` wraps every JSON success body as ``{"result": ...}``.
        ping_interval: Seconds of silence on a stream before a ``system.ping``.
        states: E3 ``state`` vocabulary.
        no_auth_success: Quirk: never emit ``runtime_connection.auth_success``.
        hide_resumed_output: Quirk: the part of a run after a completed runtime connection is
            delivered on no stream, E8 or E9 (only E3 and E6 show it).
        max_stream_seconds: Quirk: end every stream after this long.
        oauth_tokens: Extra bearer tokens accepted as OAuth access tokens, token -> user id.
        log_level: uvicorn / simulator log level.
        state_file: Where the whole state is saved on a graceful shutdown and loaded from
            on start (``None``: in memory only).
    """

    host: str = "127.0.0.1"
    port: int = 8787
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    envelope: Envelope = "bare"
    ping_interval: float = 15.0
    states: StateVocabulary = "sdk"
    no_auth_success: bool = False
    hide_resumed_output: bool = False
    max_stream_seconds: float | None = None
    oauth_tokens: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    log_level: str = "warning"
    state_file: Path | None = None

    def __post_init__(self) -> None:
        if self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive")
        if self.max_stream_seconds is not None and self.max_stream_seconds <= 0:
            raise ValueError("max_stream_seconds must be positive")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        # A read-only view keeps the dataclass honestly immutable.
        object.__setattr__(self, "oauth_tokens", MappingProxyType(dict(self.oauth_tokens)))
