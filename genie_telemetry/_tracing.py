"""The process's tracer provider, from the standard ``OTEL_*`` variables; off by default.

Traces are on when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``OTEL_TRACES_EXPORTER`` names an exporter,
and off again with ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``. Unlike
the SDK's auto-instrumentation, nothing is exported (and nothing dials localhost:4318)
unless one of them is set. Everything else is the SDK's own reading of the environment:
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (resource), ``OTEL_TRACES_SAMPLER``
(sampler), ``OTEL_BSP_*`` (batching), ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers,
timeout, compression).

The provider is ``temporalio.contrib.opentelemetry.create_tracer_provider()``'s: span ids
drawn from the workflow's deterministic random inside workflow code, and no span ended
twice when a workflow replays. Its exporters get spans scrubbed of failure text: the SDK
writes an exception's message as a span's status description and into an ``exception``
event (with the stack trace), and failure messages are content here (an API error may
quote a user's message, a refusal names an approver; in history they are encrypted
payloads). Only the exception's type reaches the collector.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("genie_telemetry")

DEFAULT_SERVICE_NAME = "genie-client"
"""``service.name`` of a process that names none (a backend using the Python API)."""
SHUTDOWN_SECONDS = 3.0
"""How long a leaving process waits for its last spans to be exported."""
_EXPORTER_GROUP = "opentelemetry_traces_exporter"
_HTTP_PROTOCOL = "http/protobuf"


class _State:
    provider: trace.TracerProvider | None = None
    """Ours, once set up (None: off, or the host application's provider is used)."""
    decided: bool = False
    on: bool = False


_state = _State()


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces (see the module's docstring)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = _exporter_names(env)
    if names is not None:
        return bool(names)
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def _exporter_names(env: Mapping[str, str]) -> list[str] | None:
    """``OTEL_TRACES_EXPORTER`` as a list (``none`` -> empty); None when unset."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        return None
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [] if "none" in names else names


def setup_tracing(service_name: str = DEFAULT_SERVICE_NAME) -> bool:
    """Install this process's tracer provider from ``OTEL_*``, once; True when traces are
    on. ``service_name`` is used when neither ``OTEL_SERVICE_NAME`` nor
    ``OTEL_RESOURCE_ATTRIBUTES`` names the service.

    A provider the host application installed first (a backend that set up OpenTelemetry
    itself) is kept and used. Raises ``ConfigError`` for an exporter that is not installed.
    """
    if _state.decided:
        return _state.on
    _state.decided = True
    host = trace.get_tracer_provider()
    if not isinstance(host, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        _state.on = True  # the application's own provider; its configuration, not ours
        return True
    if not tracing_requested():
        return False
    exporters = [_exporter(name) for name in _exporter_names(os.environ) or ["otlp"]]

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from temporalio.contrib.opentelemetry import create_tracer_provider

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = create_tracer_provider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(_scrubbing(exporter)))
    trace.set_tracer_provider(provider)
    _state.provider, _state.on = provider, True
    log.info(
        "traces on: service %s, exporter %s",
        resource.attributes.get(SERVICE_NAME),
        ", ".join(type(e).__name__ for e in exporters),
    )
    return True


def tracing_on() -> bool:
    """Whether this process traces (set up here, or by the host application); sets
    tracing up with the default service name if nothing did yet."""
    return setup_tracing()


def shutdown_tracing(within: float = SHUTDOWN_SECONDS) -> None:
    """Export what is still batched, waiting at most ``within`` seconds; for processes
    that leave with ``os._exit`` (no ``atexit``)."""
    provider, _state.provider = _state.provider, None
    if provider is None or not hasattr(provider, "shutdown"):
        return
    # The exporter retries an unreachable collector for up to its timeout (10 s); a
    # command must not hang that long at exit for spans, so the wait is bounded.
    flush = threading.Thread(target=provider.shutdown, name="genie-traces-flush", daemon=True)
    flush.start()
    flush.join(within)


def _exporter(name: str) -> SpanExporter:
    """The span exporter ``OTEL_TRACES_EXPORTER`` names; ``otlp`` is OTLP over HTTP."""
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        ).strip()
        if protocol and protocol != _HTTP_PROTOCOL:
            raise _config_error(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; genie-worker "
                f"exports traces over OTLP {_HTTP_PROTOCOL} (port 4318 on a collector)"
            )
        name = "otlp_proto_http"
    found = entry_points(group=_EXPORTER_GROUP, name=name)
    if not found:
        known = sorted({"otlp", *(e.name for e in entry_points(group=_EXPORTER_GROUP))})
        raise _config_error(
            f"OTEL_TRACES_EXPORTER: no exporter {name!r} is installed (known: {', '.join(known)})"
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter


def _config_error(message: str) -> Exception:
    # Imported here: genie_config connects clients with this package's plugins, and
    # genie_api (which instruments its client here) must not import the settings.
    from genie_config import ConfigError

    return ConfigError(message)


_TYPE_NAME = re.compile(r"[A-Za-z_][\w.]*(?=:|$)")
"""The exception type that leads a status description (``ApplicationError: <message>``)."""
_EXCEPTION_KEPT = frozenset({"exception.type", "exception.escaped"})


def _scrubbing(inner: SpanExporter) -> SpanExporter:
    """``inner``, given each span without failure text (see the module's docstring)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Status

    def scrub(span: ReadableSpan) -> ReadableSpan:
        status = span.status
        if status.description:
            kept = _TYPE_NAME.match(status.description)
            status = Status(status.status_code, kept.group(0) if kept else None)
        events = [
            Event(
                e.name,
                {k: v for k, v in (e.attributes or {}).items() if k in _EXCEPTION_KEPT},
                e.timestamp,
            )
            if e.name == "exception"
            else e
            for e in span.events
        ]
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes,
            events=events,
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    class Scrubbing(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return inner.export([scrub(s) for s in spans])

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return inner.force_flush(timeout_millis)

    return Scrubbing()
