"""The audit export: a conversation's whole decision trail, from its histories.

``status().audit`` is bounded and coalesces refusals; history is neither. Each run of
the conversation (continue-as-new links them) is replayed with the workflow's own code
and ``AuditTapInterceptor``, which reports every audit entry as the workflow recorded it,
once: decisions and refusals from signals and updates (a refused ``decide_skill`` or
``decide_connection`` is in history, as an update accepted, then failed), the policy's
decisions and timeouts, escalations, and the API's verdict on each posted decision
(``decision_applied``, or ``decision_failed`` with the API's message). Payloads are
decrypted with the client's data converter (the codec, when keys are configured).

Updates refused by a *validator* (e.g. ``send_message`` to an ended conversation) leave
no event in history and are not decisions; malformed update input is refused before
any handler runs, also without a trace. Decisions sent as signals are always audited,
even malformed ones.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client, WorkflowHistory
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from genie_codec._codec import PayloadDecryptError, missing_keys_error, payload_key_ids
from genie_codec._tap import AuditTapInterceptor
from workflows import GenieConversation
from workflows.models import AuditKind, Via

SCHEMA_ID = "genie.audit/v1"


class AuditRecord(BaseModel):
    """One event of a conversation's decision trail: a decision, a refusal, or what the
    workflow or the Headless API did about one. ``geniectl audit`` writes one per line
    (JSON Lines) or row (CSV); ``GENIE_AUDIT_LOG=true`` logs the same fields (without
    ``seq``, with ``"log": "genie.audit"``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    seq: int | None = Field(default=None, ge=1)
    """Position in the export, from 1, in the order the workflow recorded the events."""
    workflow_id: str
    run_id: str
    """The run that recorded it (continue-as-new starts a new run of the same id)."""
    at: datetime
    """Workflow time when it was recorded (UTC)."""
    kind: AuditKind
    ref: str | None = None
    """The skill confirmation's ``call_id`` or the connection's ``attempt_id``."""
    actor: str | None = None
    """Who decided: the approver or actor named in the decision, ``policy`` (or
    ``policy:<rule>``), ``client`` (an end request), or the API."""
    decision: str | None = None
    """``approved``/``rejected`` (skills), ``done``/``reject`` (connections)."""
    reason: str | None = None
    """The decider's reason; for ``decision_failed``, the API's message."""
    via: Via
    """How it arrived: ``update``, ``signal``, ``policy`` or ``api``."""
    accepted: bool = True
    """False: the workflow refused it (then ``refusal`` says why); nothing changed."""
    refusal: str | None = None
    """``<ErrorType>: <why>`` for a refused decision (e.g. ``ApproverNotAllowed: …``)."""
    auth: str | None = None
    """How the actor was authenticated, from a signature the workflow verified, as
    ``<method> (key <id>)``; ``None``: the name is what the client asserted."""
    auth_method: str | None = None
    """``jwt``, ``proxy`` or ``dev``: the method the decision's signed proof names
    (present on a refused decision too, whose signature may not have verified)."""
    key_id: str | None = None
    """The id of the key the decision's proof says it was signed with."""
    groups: list[str] = Field(default_factory=list)
    """The approver's groups, as the proof states them."""
    count: int = Field(default=1, ge=1)
    """Alike refusals within one workflow task are one record with their count."""
    source: Literal["signal", "update", "workflow"] = "workflow"
    """What recorded it: a signal or update handler (``handler`` names it), or the
    workflow's run loop (timeouts, the API's verdicts, escalations)."""
    handler: str | None = None
    """``skill_decision``, ``connection_decision``, ``end_conversation`` (signals) or
    ``decide_skill``, ``decide_connection`` (updates)."""
    update_id: str | None = None
    """The update's id, for ``source: update``."""


CSV_FIELDS = list(AuditRecord.model_fields)


def audit_schema() -> dict[str, Any]:
    """The JSON schema of one exported record (``geniectl audit --schema``)."""
    schema = AuditRecord.model_json_schema()
    schema["$id"] = SCHEMA_ID
    return schema


def _records(events: Iterable[dict[str, Any]]) -> list[AuditRecord]:
    fields = set(AuditRecord.model_fields)
    return [AuditRecord.model_validate({k: v for k, v in e.items() if k in fields}) for e in events]


async def conversation_histories(
    client: Client, workflow_id: str, *, all_runs: bool = False
) -> list[WorkflowHistory]:
    """Histories, oldest first: the latest conversation's chain of runs (each run's first
    event names the run it continues), or with ``all_runs`` every run the server still
    holds under this id (earlier conversations that reused the id too)."""
    latest = await client.get_workflow_handle(workflow_id).describe()
    chain: list[WorkflowHistory] = []
    run_id: str | None = latest.run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        chain.append(history)
        run_id = _continued_from(history)
    chain.reverse()
    if not all_runs:
        return chain
    known = {h.run_id for h in chain}
    listed = [
        (w.start_time, w.run_id)
        async for w in client.list_workflows(f'WorkflowId = "{_quoted(workflow_id)}"')
        if w.run_id not in known
    ]
    others = [
        await client.get_workflow_handle(workflow_id, run_id=rid).fetch_history()
        for _, rid in sorted(listed)
    ]
    return others + chain


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _continued_from(history: WorkflowHistory) -> str | None:
    if not history.events:
        return None
    attrs = history.events[0].workflow_execution_started_event_attributes
    return attrs.continued_execution_run_id or None


async def replay_audit(client: Client, histories: Iterable[WorkflowHistory]) -> list[AuditRecord]:
    """The trail recorded in ``histories`` (runs of one conversation, oldest first)."""
    histories = list(histories)
    used = payload_key_ids(e for h in histories for e in h.events)
    missing = missing_keys_error(client.data_converter.payload_codec, used)
    if missing is not None:
        raise missing
    events: list[dict[str, Any]] = []
    replayer = Replayer(
        # Its own runtime, without the core's console log (a failed replay would
        # otherwise print warnings among the exported lines).
        runtime=Runtime(telemetry=TelemetryConfig(logging=None, metrics=None)),
        workflows=[GenieConversation],
        workflow_runner=UnsandboxedWorkflowRunner(),
        interceptors=[AuditTapInterceptor(lambda evs, _replaying: events.extend(evs))],
        data_converter=client.data_converter,
    )
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            raise _replay_error(history.run_id, result.replay_failure)
    records = _records(events)
    for i, r in enumerate(records, 1):
        r.seq = i
    return records


class AuditReplayError(Exception):
    """A run's history could not be replayed; ``str(e)`` is one line saying why."""


def _replay_error(run_id: str, failure: Exception) -> Exception:
    text = " ".join(str(failure).split())
    if "PayloadDecryptError" in text or "cannot decrypt" in text:
        return PayloadDecryptError(
            f"a payload of run {run_id} does not decrypt with the configured keys (a "
            "different key under one of their ids, or an altered payload)",
            None,
        )
    return AuditReplayError(
        f"run {run_id} does not replay with this version of the workflow code: {text[:500]}"
    )


async def export_audit(
    client: Client, workflow_id: str, *, all_runs: bool = False
) -> list[AuditRecord]:
    """Every decision, refusal and decision outcome of a conversation, oldest first."""
    histories = await conversation_histories(client, workflow_id, all_runs=all_runs)
    return await replay_audit(client, histories)


def to_jsonl(records: Iterable[AuditRecord]) -> str:
    return "".join(r.model_dump_json() + "\n" for r in records)


def to_csv(records: Iterable[AuditRecord]) -> str:
    """One row per record, the columns in schema order; ``groups`` joined with ``;``,
    ``None`` empty, booleans ``true``/``false``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = r.model_dump(mode="json")
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def schema_text() -> str:
    return json.dumps(audit_schema(), indent=2)
