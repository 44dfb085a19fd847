from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from temporalio.client import Client
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from genie_codec import PayloadKeyConfigError, build_data_converter, dev_key_file_for, load_keys
from genie_telemetry import temporal_plugins

DEFAULT_API_BASE_URL = "http://127.0.0.1:8787"
"""The embedded default: the simulator that ``geniectl dev`` starts."""
API_REGIONS: dict[str, str] = {
    "us": "https://genie-api.workato.com",
    **{dc: f"https://genie-api.{dc}.workato.com" for dc in ("eu", "jp", "sg", "au", "in", "il")},
}
"""``GENIE_API_REGION`` -> the Headless API host of that data centre. Credentials are
scoped to the data centre of the workspace, so the host must be the workspace's."""
DEFAULT_ATTACHMENT_TIMEOUT_SECONDS = 30.0
MAX_ATTACHMENT_TIMEOUT_SECONDS = 240.0
"""The upload activity has 5 minutes from start to close (``workflows._steps.UPLOAD``),
and the upload to the API needs some of them after the fetch."""
ANY_HOST = "*"
SUFFIX_WILDCARD = "*."
_HOST_NAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
"""DNS labels (letters, digits, hyphens, underscores) joined by dots; IDNA names go in
their ``xn--`` form, which is what the worker compares with."""
MAX_HOST_NAME_CHARS = 253
MAX_VERSION_PART_CHARS = 255
"""A worker deployment name or build id longer than this is refused at start-up (build
ids have been limited to 255 characters by the server; names share its id limit)."""


class ConfigError(Exception):
    """A setting is missing or invalid. ``str(e)`` is one line naming the setting."""


class GenieSettings(BaseSettings):
    """``GENIE_*`` settings of the worker (and, for the task queue, of the CLI)."""

    model_config = SettingsConfigDict(env_prefix="GENIE_", extra="ignore", frozen=True)

    api_base_url: AnyHttpUrl = AnyHttpUrl(DEFAULT_API_BASE_URL)
    api_region: str | None = None
    """The workspace's data centre (``us``, ``eu``, ``jp``, ``sg``, ``au``, ``in``, ``il``):
    sets ``api_base_url`` to its Headless API host. Set this or ``GENIE_API_BASE_URL``;
    both set to different hosts is an error."""
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    task_queue: str = Field(default="genie-conversations", min_length=1)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Prometheus metrics on this port (0 or unset: off)."""
    metrics_host: str = "127.0.0.1"
    attachment_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Directories ``file://`` attachments may be read from (comma-separated)."""
    attachment_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts ``https://`` attachments may be fetched from (comma-separated): exact names or
    IP addresses, ``*.example.com`` for its subdomains, ``*`` for any host. Empty (the
    default): URL attachments are refused. Addresses are checked after DNS either way."""
    attachment_allow_http: bool = False
    """Also allow plain ``http://`` attachment URLs (and redirects to them)."""
    attachment_allow_private_networks: bool = False
    """Allow attachment URLs that resolve to loopback, private, shared or reserved
    addresses (tests, private deployments). Link-local, multicast, unspecified and cloud
    metadata addresses stay refused."""
    attachment_timeout_seconds: float = Field(
        default=DEFAULT_ATTACHMENT_TIMEOUT_SECONDS, gt=0, le=MAX_ATTACHMENT_TIMEOUT_SECONDS
    )
    """Total time for fetching one URL attachment, redirects and body included."""
    user_id_pattern: re.Pattern[str] | None = None
    """A regular expression every conversation's user id must match in full (unset: any)."""
    user_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """The only user ids conversations may be started for (comma-separated; empty: any).
    With ``user_id_pattern`` too, an id must satisfy both."""
    decision_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Public keys whose signatures make a decision count, as ``id:base64`` pairs
    (comma-separated; the raw 32-byte Ed25519 key in base64). Set: every skill and
    connection decision must carry a valid signature from one of them (the inbox signs);
    empty (the default): decisions are accepted unsigned, as their sender names them."""
    decision_max_age_seconds: float = Field(default=300.0, gt=0, le=86_400)
    """How old a signed decision may be when the workflow takes it."""
    deployment_file: Path | None = None
    """TOML with the default policy, notification endpoints and the inbox address."""
    inbox_url: AnyHttpUrl | None = None
    """The approvers' inbox; notifications link to its item pages."""
    notify_url: SecretStr | None = None
    """One notification endpoint (named ``default``), told of every pause."""
    notify_secret: SecretStr | None = None
    """Its Standard Webhooks signing secret (``whsec_…``)."""
    notify_format: Literal["standard", "slack"] = "standard"
    user_id_hash_key: SecretStr | None = None
    """Set: the ``GenieUserId`` search attribute holds a keyed hash of the user id
    instead of the id (search attributes are not encrypted by a payload codec)."""
    payload_keys: SecretStr | None = None
    """Payload encryption keys as ``id:base64`` pairs (comma-separated; 32-byte AES-256
    keys), the encrypting (newest) first; the others only decrypt. Set (or the file):
    every payload in history is encrypted (docs/privacy.md); unset: payloads are plain."""
    payload_key_file: Path | None = None
    """A file with those pairs instead (one per line, ``#`` comments)."""
    payload_compress_min_bytes: int = Field(default=4096, ge=0)
    """Payloads from this size on are zlib-compressed before encryption (0: never)."""
    audit_log: bool = False
    """Log every audit entry as one JSON line (logger ``genie.audit``), for a SIEM."""
    auth_settle_seconds: float = Field(default=60.0, ge=0, le=600)
    """How long a 401/403 to an API key this worker has never had accepted is retried, per
    step: a new or rotated key takes up to about a minute to reach the API gateway. After
    it (or at once for a key that worked before) the step fails naming the credential."""
    stream_silence_check_seconds: float = Field(default=10.0, gt=0)
    """A stream silent this long makes the segment check the conversation state (E3)."""
    max_concurrent_activities: int = Field(default=1000, ge=1)
    """Stream segments are IO-bound: one event loop holds many of them."""
    max_concurrent_workflow_tasks: int = Field(default=200, ge=1)
    max_cached_workflows: int = Field(default=400, ge=0)
    """Conversations kept in worker memory (~120 KiB each); a conversation beyond it is
    replayed from history at its next step. Parked ones age out of the cache first."""
    workflow_sandbox: bool = False
    """Run workflow code in the SDK's sandbox (a runtime guard against non-determinism,
    at ~2.5x the worker CPU per conversation); tests always run it sandboxed."""
    graceful_shutdown_seconds: float = Field(default=15.0, ge=0)
    worker_deployment_name: str | None = None
    """Worker Versioning: the worker deployment this worker is a version of (e.g.
    ``genie-worker``; no ``.`` or ``|``), with ``GENIE_WORKER_BUILD_ID``. Set both and
    each conversation is pinned to the version that started it and moves to a newer one
    at the end of a turn (docs/deployment.md); unset both (the default): unversioned."""
    worker_build_id: str | None = None
    """This build's id within the worker deployment (e.g. the image tag or git commit)."""
    pause_rollover: bool = False
    """Let a waiting conversation continue as new in a pause on an *unversioned* worker
    (versioned workers always do: a pinned run's next run stays on its build). The next
    run can only be resumed by this release or a later one, so set it once every worker
    runs one, and do not roll back below it (docs/deployment.md)."""
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _region_base_url(cls, data: Any) -> Any:
        """``GENIE_API_REGION`` -> ``api_base_url``, refusing a conflicting explicit URL."""
        if not isinstance(data, dict):
            return data
        raw = data.get("api_region")
        if raw is None or not str(raw).strip():
            return {k: v for k, v in data.items() if k != "api_region"}
        region = str(raw).strip().lower()
        url = API_REGIONS.get(region)
        if url is None:
            raise ValueError(
                f"GENIE_API_REGION: {str(raw)[:20]!r} is not a data centre; use one of "
                f"{', '.join(API_REGIONS)} (or GENIE_API_BASE_URL for another host)"
            )
        explicit = data.get("api_base_url")
        if explicit is not None and _same_url(str(explicit), url) is not True:
            raise ValueError(
                f"GENIE_API_REGION={region} ({url}) and GENIE_API_BASE_URL="
                f"{str(explicit)[:200]} name different hosts; set only one of them"
            )
        return {**data, "api_region": region, "api_base_url": url}

    @field_validator("attachment_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [Path(p.strip()) for p in v.split(",") if p.strip()]
        return v

    @field_validator("attachment_hosts", "user_ids", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("attachment_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        return [_host_pattern(h) for h in v]

    @field_validator("decision_keys", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        keys: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in v.split(","))):
            kid, _, text = item.partition(":")
            try:
                raw = base64.b64decode(text, validate=True)
            except (ValueError, binascii.Error):
                raw = b""
            if not kid or len(raw) != 32:
                # Never echo the value: name the key id only.
                raise ValueError(f"key {kid or '?'!r} is not id:base64 of a 32-byte Ed25519 key")
            keys[kid] = text
        return keys

    @field_validator("user_id_pattern", mode="before")
    @classmethod
    def _pattern(cls, v: Any) -> Any:
        if isinstance(v, str):
            if not v:
                return None  # an empty variable means "not set", not "match nothing"
            try:
                return re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression ({e})") from None
        return v

    @field_validator("worker_deployment_name", "worker_build_id", mode="before")
    @classmethod
    def _version_part(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        v = v.strip()
        if not v:
            return None  # an empty variable (a compose default) means "not set"
        if len(v) > MAX_VERSION_PART_CHARS or any(c.isspace() for c in v):
            raise ValueError(f"at most {MAX_VERSION_PART_CHARS} characters, no whitespace")
        return v

    @field_validator("worker_deployment_name")
    @classmethod
    def _deployment_name(cls, v: str | None) -> str | None:
        # Temporal writes a version as "<deployment>.<build id>" in places (and reserves
        # "|"), so a deployment name holding either would be ambiguous or refused.
        if v is not None and any(c in v for c in ".|"):
            raise ValueError("may not contain '.' or '|'")
        return v

    @model_validator(mode="after")
    def _versioning_pair(self) -> GenieSettings:
        if (self.worker_deployment_name is None) != (self.worker_build_id is None):
            raise ValueError(
                "GENIE_WORKER_DEPLOYMENT_NAME and GENIE_WORKER_BUILD_ID go together: "
                "set both (Worker Versioning) or neither"
            )
        return self

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v.upper()

    def api_key_value(self) -> SecretStr:
        """The API key from ``GENIE_API_KEY`` or the file ``GENIE_API_KEY_FILE`` names."""
        if self.api_key is not None and self.api_key_file is not None:
            raise ConfigError("GENIE_API_KEY and GENIE_API_KEY_FILE are both set; set one")
        if self.api_key is not None:
            key = self.api_key.get_secret_value().strip()
            source = "GENIE_API_KEY"
        elif self.api_key_file is not None:
            source = "GENIE_API_KEY_FILE"
            try:
                key = self.api_key_file.read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"GENIE_API_KEY_FILE: cannot read {self.api_key_file} ({e.strerror})"
                ) from None
        else:
            raise ConfigError("GENIE_API_KEY or GENIE_API_KEY_FILE must be set")
        if not key:
            raise ConfigError(f"{source}: the API key is empty")
        if any(c.isspace() for c in key):
            raise ConfigError(f"{source}: the API key contains whitespace")
        return SecretStr(key)


def _same_url(a: str, b: str) -> bool | None:
    """Whether two base URLs name the same place (``None``: ``a`` is not a URL; the field's
    own validation reports that)."""
    try:
        return str(AnyHttpUrl(a)).rstrip("/").lower() == str(AnyHttpUrl(b)).rstrip("/").lower()
    except ValidationError:
        return None


def region_base_url(region: str) -> str:
    """The Headless API host of a data centre (``GENIE_API_REGION``).

    Raises:
        ValueError: Not one of :data:`API_REGIONS`.
    """
    url = API_REGIONS.get(region.strip().lower())
    if url is None:
        raise ValueError(f"unknown data centre {region!r}; one of {', '.join(API_REGIONS)}")
    return url


def _host_pattern(entry: str) -> str:
    """One ``GENIE_ATTACHMENT_HOSTS`` entry, normalized as the worker compares hosts."""
    host = entry.strip().lower().removeprefix("[").removesuffix("]")
    if host == ANY_HOST:
        return host
    host = host.removesuffix(".")  # "files.example.com." is the same host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.removeprefix(SUFFIX_WILDCARD)
    if len(name) > MAX_HOST_NAME_CHARS or not _HOST_NAME.fullmatch(name):
        raise ValueError(
            f"{entry[:80]!r} is not a host name, an IP address, '*.suffix' or '*' "
            "(non-ASCII names in their xn-- form)"
        )
    last = name.rsplit(".", 1)[-1]
    if last.isdigit() or last.startswith("0x"):
        # The worker refuses such hosts in URLs (they are IP addresses in disguise).
        raise ValueError(f"{entry[:80]!r}: write IP addresses in standard form")
    return host


def load_settings(**overrides: Any) -> GenieSettings:
    """Read ``GENIE_*``; raise ``ConfigError`` with one line naming the bad setting."""
    try:
        return GenieSettings(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        if not err["loc"]:  # a check across settings names them in its own message
            raise ConfigError(str(err["msg"]).removeprefix("Value error, ")) from None
        name = "GENIE_" + "_".join(str(p) for p in err["loc"][:1]).upper()
        # Never echo the input: it may be the API key.
        raise ConfigError(f"{name}: {err['msg']}") from None


def temporal_connect_config() -> dict[str, Any]:
    """``Client.connect`` keyword arguments from ``TEMPORAL_*`` / the TOML profile."""
    # The SDK skips a config file that does not exist; a path someone set on purpose
    # that points nowhere is a typo, and would surface later as a baffling connect error.
    named = os.environ.get("TEMPORAL_CONFIG_FILE")
    if named and not Path(named).is_file():
        raise ConfigError(f"TEMPORAL_CONFIG_FILE: {named} is not a readable file")
    try:
        cfg: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    except Exception as e:  # the SDK raises plain errors for bad TLS paths, TOML, etc.
        # Only the first line: later lines quote the offending TOML, which may hold a key.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f" ({named})" if named else ""
        raise ConfigError(f"TEMPORAL_* configuration{where}: {first}") from None
    cfg.setdefault("target_host", "localhost:7233")
    return cfg


def data_converter(
    settings: GenieSettings | None = None, *, target_host: str | None = None
) -> DataConverter:
    """The pydantic data converter every genie-worker client must use, with the payload
    codec when ``GENIE_PAYLOAD_KEYS`` or ``GENIE_PAYLOAD_KEY_FILE`` is set; with neither,
    the key of the ``geniectl dev`` stack at ``target_host`` if one runs there."""
    s = settings if settings is not None else load_settings()
    secret = s.payload_keys.get_secret_value() if s.payload_keys is not None else None
    key_file = s.payload_key_file
    if not secret and key_file is None and target_host is not None:
        key_file = dev_key_file_for(target_host)
    try:
        keys = load_keys(secret, key_file)
    except PayloadKeyConfigError as e:
        raise ConfigError(str(e)) from None
    return build_data_converter(keys, compress_min_bytes=s.payload_compress_min_bytes)


async def connect_temporal(*, runtime: Runtime | None = None) -> Client:
    """Connect with the data converter every genie-worker client must use."""
    cfg = temporal_connect_config()
    target = cfg.pop("target_host")
    settings = load_settings()
    if runtime is not None:
        cfg["runtime"] = runtime
    interceptors: list[ClientInterceptor] = []
    if settings.audit_log:  # a worker built on this client logs each audit entry
        from genie_codec._tap import AuditLogInterceptor

        interceptors.append(AuditLogInterceptor())
    converter = data_converter(settings, target_host=target)
    # Traces (OTEL_*): the SDK's OpenTelemetryPlugin, on the client so that a worker built
    # on it traces too; nothing when traces are off.
    return await Client.connect(
        target,
        data_converter=converter,
        interceptors=interceptors,
        plugins=temporal_plugins(),
        **cfg,
    )
