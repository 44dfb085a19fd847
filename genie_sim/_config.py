"""Simulator configuration: one frozen object built from the command line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

Envelope = Literal["bare", "result"]
StateVocabulary = Literal["sdk", "production"]
Profile = Literal["default", "production"]
RepeatDecision = Literal["documented", "409", "400", "200"]
"""What a second E10 for an already-decided call answers (see ``--repeat-decision``)."""

DEFAULT_API_KEY = "sim-dev-key"
MAX_MESSAGE_CHARS = 12_288
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
EVENT_RETENTION_SECONDS = 24 * 60 * 60
AUTH_LINK_TTL_SECONDS = 5 * 60
MAX_PARALLEL_SKILLS = 20

PRODUCTION_DEFAULTS: dict[str, object] = {
    "envelope": "result",
    "ping_interval": 30.0,
    "states": "production",
    "no_auth_success": True,
    "hide_resumed_output": True,
    "auth_settle_seconds": 60.0,
    "idle_while_parked": True,
    "omit_conversation_id": True,
    "auth_link_404": True,
    "parallel_skills": 2,
    "skill_stopped": True,
    "events_paging": False,
    "repeat_decision": "409",
}
"""What ``--profile production`` changes: every behaviour reported from the live API at
once. Each stays its own flag, and an explicit flag wins over the profile."""


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
        profile: The ``--profile`` the defaults came from (informative; every behaviour
            below is its own field).
        auth_settle_seconds: Production: for this long after the simulator starts (or a
            key rotation, ``POST /_sim/rotate_key``) the API key is refused with a
            transient ``403 access_denied`` / ``401 auth_failed``; ``0`` turns it off.
        idle_while_parked: Production: E3 reads ``idle`` while a run waits on a decision.
        omit_conversation_id: Production: E3 leaves ``conversation_id`` out.
        auth_link_404: Production: E11 answers ``404 not_found``.
        parallel_skills: Production: every skill runs as this many parallel skills (one
            ``skill.running``, then one ``skill.completed`` per skill).
        skill_stopped: Production: the last end event of every skill is ``skill.stopped``.
        events_paging: E9 sets ``next_since_created_at`` when another page exists
            (production: never).
        repeat_decision: What a repeated E10 answers: ``documented``
            (``409 skill_call_already_resolved``), ``409`` (an undocumented code), ``400``
            or ``200`` (empty, nothing applied).
        gzip: Every answer, streams included, is gzip-compressed for a client that
            accepts it (a gateway's behaviour; the live API's is not known).
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
    profile: Profile = "default"
    auth_settle_seconds: float = 0.0
    idle_while_parked: bool = False
    omit_conversation_id: bool = False
    auth_link_404: bool = False
    parallel_skills: int = 1
    skill_stopped: bool = False
    events_paging: bool = True
    repeat_decision: RepeatDecision = "documented"
    gzip: bool = False

    def __post_init__(self) -> None:
        if self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive")
        if self.auth_settle_seconds < 0:
            raise ValueError("auth_settle_seconds must be >= 0")
        if not 1 <= self.parallel_skills <= MAX_PARALLEL_SKILLS:
            raise ValueError(f"parallel_skills must be 1..{MAX_PARALLEL_SKILLS}")
        if self.max_stream_seconds is not None and self.max_stream_seconds <= 0:
            raise ValueError("max_stream_seconds must be positive")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        # A read-only view keeps the dataclass honestly immutable.
        object.__setattr__(self, "oauth_tokens", MappingProxyType(dict(self.oauth_tokens)))
