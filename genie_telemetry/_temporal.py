"""What Temporal clients and workers trace with: the SDK's ``OpenTelemetryPlugin`` (client,
update, workflow and activity spans; the W3C context carried in Temporal headers), and
the ids of each activity's input on its span."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from temporalio.plugin import SimplePlugin
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from genie_telemetry._ids import ACTIVITY_IDS, ID_FIELDS, id_attributes
from genie_telemetry._tracing import tracing_on


def temporal_plugins() -> list[SimplePlugin]:
    """The plugins a client (and every worker built on it) needs; none when traces are off.

    ``add_temporal_spans``: the client's ``StartWorkflowUpdate``, the workflow's
    ``HandleUpdate`` and ``StartActivity`` and the worker's ``RunActivity`` spans are the
    links of one ask's trace; without them the workflow would only pass the context on.
    """
    if not tracing_on():
        return []
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin

    # In this order: the ids interceptor then runs inside the SDK's RunActivity span.
    return [
        OpenTelemetryPlugin(add_temporal_spans=True),
        SimplePlugin("genie_telemetry.ActivityIds", interceptors=[ActivityIds()]),
    ]


class ActivityIds(Interceptor):
    """Worker interceptor: each activity's span gets the ids of its input (inside the
    SDK's ``RunActivity`` span, so registered after ``OpenTelemetryPlugin``)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityIdsInbound(next)


class _ActivityIdsInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        ids = id_attributes(_fields(input.args[0])) if input.args else {}
        span = trace.get_current_span()
        if ids and span.is_recording():
            span.set_attributes(ids)
        token = ACTIVITY_IDS.set(ids)
        try:
            return await super().execute_activity(input)
        finally:
            ACTIVITY_IDS.reset(token)


def _fields(arg: object) -> dict[str, object]:
    """An activity input's allowlisted fields, by attribute (pydantic models) or key;
    a resume segment that posts a decision first also names its ``decision``'s call id."""

    def get(f: str) -> object:
        return arg.get(f) if isinstance(arg, Mapping) else getattr(arg, f, None)

    out = {f: get(f) for f in ID_FIELDS}
    decision = get("decision")
    if out["call_id"] is None and decision is not None:
        out["call_id"] = _fields(decision)["call_id"]
    return out
