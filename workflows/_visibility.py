"""What ops see without asking: search attributes, the details card, metrics.

A mixin of ``GenieConversation``. Search attributes change once per state transition
(each upsert is a history event and a billable action), and a turn that ends within the
policy's ``running_shown_after`` never shows ``running`` at all (``_set_state``); the card
(``workflow.set_current_details``) is free to refresh, since it lives in memory and is
read by the Web UI through a query.

Metrics go through ``workflow.metric_meter()``, which records nothing while replaying, so
each event counts once however often the history is replayed. Names and labels are
fixed, with a handful of values each (never an id or any content); the dashboard and the
alerts in ``deploy/`` are built on them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

from workflows._policy import for_connection, for_skill
from workflows._state import ConversationData
from workflows._steps import SETTLE_RETRY_EVERY
from workflows._ui import details_card

with workflow.unsafe.imports_passed_through():
    from activities import CREDENTIAL_SETTLING
from workflows.models import (
    ConversationPolicy,
    ConversationStart,
    ConversationState,
    ErrorInfo,
    TurnRecord,
)
from workflows.search_attributes import GENIE_AWAITING_SINCE, GENIE_DEADLINE, GENIE_STATE

OUTAGE_RETRIES = "genie_api_outage_retries"
"""Steps scheduled again on a durable timer because the API kept failing (``Steps``)."""
_AWAITING = ("awaiting_approval", "awaiting_connection")
TURN_LATENCY = "genie_turn_latency"
"""From a turn's start to its end, in milliseconds as the SDK's latencies (its buckets
are set in ``worker.py``)."""


class Visibility:
    _d: ConversationData
    _start: ConversationStart
    _policy: ConversationPolicy
    _paused_turn: int | None = None
    """The turn that last waited for a human, for the turn latency's ``paused`` label."""
    _show_running: asyncio.Task[None] | None = None
    """The timer that shows ``running`` once a turn lasts ``running_shown_after``."""

    def _on_outage(self, since: datetime | None, info: ErrorInfo | None) -> None:
        if since is not None and (info is None or info.type != CREDENTIAL_SETTLING):
            # A key still settling is no outage: genie_credential_refusals counts it.
            self._count(OUTAGE_RETRIES)
        self._d.api_unreachable_since = since
        if info is not None:
            self._d.last_error = info
        elif self._d.last_error is not None and self._d.last_error.type == CREDENTIAL_SETTLING:
            self._d.last_error = None  # the key was accepted: a wait, not an error
        self._refresh_details()

    def _set_state(self, state: ConversationState) -> None:
        d = self._d
        previous, d.state = d.state, state
        awaiting = state in _AWAITING
        if state != previous or not awaiting:
            d.awaiting_since = workflow.now() if awaiting else None
        if awaiting and d.current is not None:
            self._paused_turn = d.current.turn
        if not d.running_when_long:
            # As recorded before running-when-long (_patches): every transition upserts.
            if state != previous:
                self._show_state(state)
        else:
            if state != "running" and self._show_running is not None:
                self._show_running.cancel()  # the turn ended or paused in time
                self._show_running = None
            shown = workflow.info().typed_search_attributes
            shown_state = shown.get(GENIE_STATE)
            if state == "running" and shown_state not in _AWAITING:
                # From idle: shown only if the turn lasts. Leaving a pause shows at once
                # (below): visibility must stop listing a decided pause as waiting.
                if shown_state != "running" and self._show_running is None:
                    self._show_running = asyncio.create_task(self._show_running_later())
            elif (state, d.awaiting_since, self._wait_deadline(state)) != (
                shown_state,
                shown.get(GENIE_AWAITING_SINCE),
                shown.get(GENIE_DEADLINE),
            ):
                # Any of the three changed (a second pause has its own since and deadline).
                self._show_state(state)
        # The outage counter at 0 before any outage: Prometheus's increase() cannot see a
        # counter's first sample, and the API alert rests on it.
        workflow.metric_meter().create_counter(OUTAGE_RETRIES).add(0)
        self._refresh_details()

    async def _show_running_later(self) -> None:
        await workflow.sleep(
            self._policy.running_shown_after, summary="show running: the turn lasts"
        )
        # Cancelled whenever the state leaves running, and started only while visibility
        # did not show it: firing means the turn is still running and not yet shown.
        self._show_running = None
        self._show_state("running")

    def _show_state(self, state: ConversationState) -> None:
        """One upsert for a transition, as before GenieDeadline existed: adding a key to
        it adds no command, so recorded histories replay unchanged."""
        deadline = self._wait_deadline(state)
        since = self._d.awaiting_since
        workflow.upsert_search_attributes(
            [
                GENIE_STATE.value_set(state),
                GENIE_AWAITING_SINCE.value_set(since)
                if since
                else GENIE_AWAITING_SINCE.value_unset(),
                GENIE_DEADLINE.value_set(deadline) if deadline else GENIE_DEADLINE.value_unset(),
            ]
        )

    def _wait_deadline(self, state: ConversationState) -> datetime | None:
        """The latest time the policy decides what the conversation now waits for: the
        soonest deadline among the undecided items, moved by the escalation wait where
        the policy escalates and has not yet."""
        if state == "awaiting_approval":
            items: list[Any] = [p for p in self._d.approvals if p.decision is None]
            policies = [for_skill(self._policy, p.skill_name) for p in items]
        elif state == "awaiting_connection":
            items = [c for c in self._d.connections if c.decision is None]
            policies = [for_connection(self._policy, c.connector_name) for c in items]
        else:
            return None
        ends = [
            item.deadline
            + (
                pol.escalation_timeout
                if pol.on_timeout == "escalate" and not item.escalated
                else timedelta(0)
            )
            for item, pol in zip(items, policies, strict=True)
        ]
        return min(ends, default=None)

    def _turn_finished(self, turn: TurnRecord) -> None:
        """Count a finished turn by its status, and how long it took (``paused``: whether
        it waited for a human, which takes minutes to days rather than seconds)."""
        attrs = {"status": turn.status}
        meter = workflow.metric_meter()
        meter.create_counter("genie_turns").add(1, attrs)
        if turn.started_at is not None and turn.finished_at is not None:
            paused = "true" if self._paused_turn == turn.turn else "false"
            meter.create_histogram_timedelta(
                TURN_LATENCY, "from a turn's start to its end", "ms"
            ).record(turn.finished_at - turn.started_at, {**attrs, "paused": paused})

    def _refresh_details(self) -> None:
        d = self._d
        notes: dict[str, str] = {}
        for p in d.approvals:
            if p.decision is not None or p.note:
                notes[p.call_id] = _note(p)
        for c in d.connections:
            if c.decision is not None or c.note:
                notes[c.attempt_id] = _note(c)
        api_note = d.left_at_api
        if d.api_unreachable_since is not None:
            since = f"{d.api_unreachable_since:%Y-%m-%d %H:%M:%S} UTC"
            e = d.last_error
            if e is not None and e.type == CREDENTIAL_SETTLING:
                api_note = (
                    f"API key not accepted yet since {since} (HTTP {e.status} "
                    f"{e.error_code or ''}): a new or rotated key can take a minute to reach "
                    f"the API gateway; retrying every {SETTLE_RETRY_EVERY.seconds} s"
                )
            else:
                api_note = f"API unreachable since {since}, retrying"
        workflow.set_current_details(
            details_card(
                workflow_id=workflow.info().workflow_id,
                state=d.state,
                genie_handle=self._start.genie_handle,
                user_id=self._start.user_id,
                conversation_id=d.conversation_id,
                turn=d.next_turn - 1,
                queued=len(d.queue),
                since=d.awaiting_since,
                approvals=list(d.approvals),
                connections=list(d.connections),
                last_error=d.last_error,
                approvers=list(self._policy.approvers),
                decision_notes=notes,
                api_note=api_note,
                notifications=[
                    f"{x.endpoint}: {x.event} for {x.ref} {x.state} at {x.at:%H:%M:%S}"
                    + (f" ({x.detail})" if x.detail else "")
                    for x in d.deliveries.values()
                ],
                policy_note=(
                    "the deployment's default (GENIE_DEPLOYMENT_FILE)"
                    if d.policy_source == "deployment"
                    else None
                ),
            )
        )

    def _count(self, name: str, attrs: dict[str, str] | None = None) -> None:
        workflow.metric_meter().create_counter(name).add(1, attrs or {})


def _note(item: Any) -> str:
    """One line for an item with a decision in flight, or one handed back."""
    p = item.decision
    if p is None:
        return str(item.note)
    what = "checking with the API" if p.state == "verifying" else "posting to the API"
    retry = f", retrying (attempt {p.attempts}, last error: {p.last_error})" if p.last_error else ""
    return f"{p.verdict} by {p.actor}: {what}{retry}"
