"""Which ids a span may carry, and where they are put on spans.

Only ids, from an allowlist: the genie handle, the workflow id, the API conversation id,
the turn number, a call id or attempt id. Never message text, skill parameters, reasons,
user ids (they may be e-mail addresses) or credentials: nothing else is ever copied from
an input onto a span.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

HANDLE = "genie.handle"
WORKFLOW_ID = "genie.workflow_id"
CONVERSATION_ID = "genie.conversation_id"
TURN = "genie.turn"
CALL_ID = "genie.call_id"
ATTEMPT_ID = "genie.attempt_id"

ID_FIELDS: Mapping[str, str] = {
    "genie_handle": HANDLE,
    "workflow_id": WORKFLOW_ID,
    "conversation_id": CONVERSATION_ID,
    "turn": TURN,
    "call_id": CALL_ID,
    "attempt_id": ATTEMPT_ID,
}
"""Input field (or keyword) -> span attribute: the only values that reach a span."""
_MAX_ID = 200
"""An id longer than this is not an id; it is cut (ids are short everywhere)."""

TRACER = "genie_telemetry"

ACTIVITY_IDS: ContextVar[Mapping[str, AttributeValue]] = ContextVar(
    "genie_activity_ids", default=MappingProxyType({})
)
"""The running activity's ids, for the spans of the HTTP requests it makes."""


def id_attributes(values: Mapping[str, object]) -> dict[str, AttributeValue]:
    """The allowlisted ids among ``values`` (field name -> value) as span attributes."""
    out: dict[str, AttributeValue] = {}
    for field, attr in ID_FIELDS.items():
        v = values.get(field)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            out[attr] = v
        elif isinstance(v, str) and v:
            out[attr] = v[:_MAX_ID]
    return out


def activity_ids() -> Mapping[str, AttributeValue]:
    """The ids of the activity this code runs in (empty outside one)."""
    return ACTIVITY_IDS.get()


def annotate(**ids: object) -> None:
    """Put these ids on the current span (a no-op when nothing records)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(id_attributes(ids))


@contextmanager
def caller_span(name: str, **ids: object) -> Iterator[None]:
    """A span around one caller's request (``geniectl ask``, ``GenieConversations.ask``):
    the root its Temporal client calls, and through them the workflow's, hang from.

    A failure is recorded by its type only: an exception's text is not ours to vet.
    """
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        name,
        attributes=id_attributes(ids),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as e:
            if isinstance(e, Exception):
                span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            raise
