"""Watching a conversation's audit trail from outside its code: every entry, once.

The workflow keeps its audit trail in state (``status().audit``): accepted decisions and
system events appended, alike refusals coalesced into one entry with a ``count``, both
bounded. ``AuditTapInterceptor`` (a worker interceptor; the SDK also takes it from a
client's interceptors) compares that trail with what it has already reported:

- after each signal and update handler, so what a handler recorded is reported with
  the signal or update that caused it (the proof in its payload: how the actor was
  authenticated);
- at the end of every activation (a ``wait_condition`` predicate that never holds,
  which the SDK evaluates whenever the workflow's event loop runs dry), for what the run
  loop records: timeouts, escalations, decisions the API applied or refused.

New entries go to a sink as plain dicts, one event each (a refusal counted twice since
the last look is one dict with ``count: 2``). The first look of a run takes the entries
carried over by continue-as-new as already reported. The tap writes no commands, so
replaying with or without it gives the same history.

Two sinks: ``AuditLogSink`` logs one JSON line per event (not while replaying, so a
cache eviction or a new worker does not log an entry twice), and the export
(``genie_codec.audit``) collects the events of a replayed history.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from temporalio import client, workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

AUDIT_LOGGER = "genie.audit"
Sink = Callable[[list[dict[str, Any]], bool], None]
"""``sink(events, replaying)``."""
DECISION_HANDLERS = frozenset(
    {
        "skill_decision",
        "connection_decision",
        "end_conversation",
        "decide_skill",
        "decide_connection",
    }
)

log = logging.getLogger(__name__)


def _trail(instance: Any) -> list[Any]:
    """The workflow's audit entries (``ConversationStatus.audit``), oldest first."""
    return list(instance.status().audit)


def _key(e: Any) -> tuple[Any, ...]:
    if e.accepted:
        return ("accepted", e.kind, e.ref, e.actor, e.decision, e.via, e.at, e.reason)
    kind_of_refusal = (e.refusal or "").split(":", 1)[0]
    return ("refused", e.kind, e.actor, e.via, kind_of_refusal, e.at)


class _Tap:
    """What of one run's audit trail has been reported (a multiset of entry keys)."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance
        self._seen: Counter[tuple[Any, ...]] = self._counts(_trail(instance))

    @staticmethod
    def _counts(entries: list[Any]) -> Counter[tuple[Any, ...]]:
        counts: Counter[tuple[Any, ...]] = Counter()
        for e in entries:
            counts[_key(e)] += 1 if e.accepted else e.count
        return counts

    def take(self) -> list[dict[str, Any]]:
        entries = _trail(self._instance)
        now = self._counts(entries)
        events: list[dict[str, Any]] = []
        done: set[tuple[Any, ...]] = set()
        for e in entries:
            k = _key(e)
            new = now[k] - self._seen[k]
            if new <= 0 or k in done:
                continue
            done.add(k)
            row = e.model_dump(mode="json")
            last_at = row.pop("last_at", None)
            if e.accepted:
                row["count"] = 1
                events.extend(dict(row) for _ in range(new))
            else:
                row["count"] = new
                row["at"] = last_at or row["at"]
                events.append(row)
        # Entries that left the bounded trail never come back (their time differs).
        self._seen = now
        return events


MAX_PROOF_TEXT = 200
"""A proof field's text is cut here (ids and methods are short; a longer one is forged)."""
MAX_PROOF_GROUPS = 50
"""As many groups as a valid proof may name (``DecisionProof.groups``)."""


def _proof(args: Any) -> dict[str, Any]:
    """How the sender says the actor was authenticated (a decision's signed ``proof``).

    Read from the handler's raw input, before the workflow validates it (signals are
    decoded leniently), so it is whatever the sender wrote: only text is kept, cut, and
    at most ``MAX_PROOF_GROUPS`` groups; a line in the audit log stays small and an
    ``AuditRecord`` of the export always validates."""
    arg = args[0] if args else None
    proof = arg.get("proof") if isinstance(arg, Mapping) else getattr(arg, "proof", None)
    if proof is None:
        return {}

    def get(name: str) -> Any:
        return proof.get(name) if isinstance(proof, Mapping) else getattr(proof, name, None)

    def text(value: Any) -> str | None:
        return value[:MAX_PROOF_TEXT] if isinstance(value, str) else None

    groups = get("groups")
    listed = list(groups[:MAX_PROOF_GROUPS]) if isinstance(groups, list | tuple) else []
    return {
        "auth_method": text(get("auth_method")),
        "key_id": text(get("key_id")),
        "groups": [g for g in map(text, listed) if g is not None],
    }


class _AuditInbound(WorkflowInboundInterceptor):
    sink: ClassVar[Sink]

    _tap: _Tap | None = None
    _broken = False

    def _look(self, extra: Mapping[str, Any] | None = None) -> None:
        if self._broken:
            return
        try:
            if self._tap is None:
                self._tap = _Tap(workflow.instance())
                return
            events = self._tap.take()
            if not events:
                return
            info = workflow.info()
            for ev in events:
                ev.update(workflow_id=info.workflow_id, run_id=info.run_id)
                ev.setdefault("source", "workflow")
                if extra:
                    ev.update(extra)
            type(self).sink(events, workflow.unsafe.is_replaying())
        except Exception:  # never let the audit tap fail a workflow task
            self._broken = True
            log.exception("audit tap stopped for this workflow run")

    def _idle(self) -> bool:
        self._look()
        return False

    async def _watch(self) -> None:
        await workflow.wait_condition(self._idle)

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        self._look()
        # Held by the workflow's event loop until the run ends; it never completes.
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return await super().execute_workflow(input)

    async def handle_signal(self, input: HandleSignalInput) -> None:
        self._look()
        try:
            await super().handle_signal(input)
        finally:
            if input.signal in DECISION_HANDLERS:
                self._look({"source": "signal", "handler": input.signal, **_proof(input.args)})

    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        self._look()
        try:
            return await super().handle_update_handler(input)
        finally:
            if input.update in DECISION_HANDLERS:
                attribution = {"source": "update", "handler": input.update, "update_id": input.id}
                self._look({**attribution, **_proof(input.args)})


class AuditTapInterceptor(Interceptor):
    """Reports every new audit entry of every ``GenieConversation`` run to ``sink``."""

    def __init__(self, sink: Sink) -> None:
        self._class = type("AuditInbound", (_AuditInbound,), {"sink": staticmethod(sink)})

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return self._class


class AuditLogSink:
    """One JSON line per audit event on the ``genie.audit`` logger, never while replaying.

    Unless the application configured that logger, lines go to stderr as bare JSON (no
    prefix) and do not propagate to the root logger, so a log shipper can forward them
    as they are.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or _json_logger()

    def __call__(self, events: list[dict[str, Any]], replaying: bool) -> None:
        if replaying:
            return
        for ev in events:
            line = {"log": AUDIT_LOGGER, **ev}
            self.logger.info(json.dumps(line, separators=(",", ":"), default=str))


def _json_logger() -> logging.Logger:
    logger = logging.getLogger(AUDIT_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


class AuditLogInterceptor(AuditTapInterceptor, client.Interceptor):
    """``GENIE_AUDIT_LOG=true``: the worker logs each audit entry as one JSON line.

    Also a client interceptor (one that changes nothing), so ``connect_temporal`` can put
    it on the client and every worker built on that client uses it."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(AuditLogSink(logger))
