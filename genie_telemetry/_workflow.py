"""The trace context of a turn, inside the workflow.

The handlers only record a turn and the run loop does its I/O, so on its own the SDK
would hang a turn's activities under the workflow run's span (the start's trace), not
under the ``send_message`` update that asked for the turn. The handler therefore keeps
the W3C ``traceparent`` of its span (an id, never content: 55 characters, one per
queued turn) with the turn, and the run loop makes it current while it runs that turn:
every activity the turn schedules, and through the Temporal headers every HTTP request
those make, then joins the asker's trace.

Neither function schedules anything or reads a clock, so the command sequence is the
same with traces on or off, and on replay. With traces off (no ``OpenTelemetryPlugin``
on the worker) no span is current in a handler and nothing is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# The SDK's own attach/detach for workflow code: its detach stays quiet when an evicted
# workflow's coroutine is finalized in another context (see its docstring).
from temporalio.contrib.opentelemetry._context import attached_context

from genie_telemetry._ids import TURN

_W3C = TraceContextTextMapPropagator()
_HEADER = "traceparent"


def turn_trace(turn: int) -> str | None:
    """The ``traceparent`` of the span that is queueing ``turn`` (the update's), which
    also gets the turn number; None when no span records (traces off)."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    if span.is_recording():
        span.set_attribute(TURN, turn)
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get(_HEADER)


@contextmanager
def turn_context(traceparent: str | None) -> Iterator[None]:
    """Run the block (a turn) as part of the trace ``traceparent`` names, if any."""
    if not traceparent:
        yield
        return
    with attached_context(_W3C.extract({_HEADER: traceparent})):
        yield
