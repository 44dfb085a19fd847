"""Operational telemetry for genie-worker: traces across the whole path and the gauges
that metrics alone cannot give. Off unless configured (the standard ``OTEL_*``
variables for traces).

Traces: ``setup_tracing`` installs the process's provider from ``OTEL_*``;
``temporal_plugins`` is what ``genie_config.connect_temporal`` adds to every client (and
so to the worker built on it); ``instrument_http`` traces the Headless API requests;
``caller_span`` and ``annotate`` are for callers (``geniectl``, the Python API);
``turn_trace`` and ``turn_context`` carry an ask's trace into the turn the workflow runs.
Spans carry ids only (``genie.*`` attributes, ``_ids.ID_FIELDS``).
"""

from genie_telemetry._http import instrument_http
from genie_telemetry._ids import annotate, caller_span
from genie_telemetry._temporal import temporal_plugins
from genie_telemetry._tracing import (
    setup_tracing,
    shutdown_tracing,
    tracing_on,
    tracing_requested,
)
from genie_telemetry._workflow import turn_context, turn_trace

__all__ = [
    "annotate",
    "caller_span",
    "instrument_http",
    "setup_tracing",
    "shutdown_tracing",
    "temporal_plugins",
    "tracing_on",
    "tracing_requested",
    "turn_context",
    "turn_trace",
]
