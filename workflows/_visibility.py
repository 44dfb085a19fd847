"""What ops see without asking: search attributes, the details card, metrics.

A mixin of ``GenieConversation``. Search attributes change once per state transition
(each upsert is a history event); the card (``workflow.set_current_details``) is free
to refresh, since it lives in memory and is read by the Web UI through a query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow

from workflows._state import ConversationData
from workflows._steps import SETTLE_RETRY_EVERY
from workflows._ui import details_card

with workflow.unsafe.imports_passed_through():
    from activities import CREDENTIAL_SETTLING
from workflows.models import ConversationPolicy, ConversationStart, ConversationState, ErrorInfo
from workflows.search_attributes import GENIE_AWAITING_SINCE, GENIE_STATE


class Visibility:
    _d: ConversationData
    _start: ConversationStart
    _policy: ConversationPolicy

    def _on_outage(self, since: datetime | None, info: ErrorInfo | None) -> None:
        self._d.api_unreachable_since = since
        if info is not None:
            self._d.last_error = info
        elif self._d.last_error is not None and self._d.last_error.type == CREDENTIAL_SETTLING:
            self._d.last_error = None  # the key was accepted: a wait, not an error
        self._refresh_details()

    def _set_state(self, state: ConversationState) -> None:
        d = self._d
        previous, d.state = d.state, state
        awaiting = state in ("awaiting_approval", "awaiting_connection")
        if state != previous or not awaiting:
            d.awaiting_since = workflow.now() if awaiting else None
        if state != previous:
            workflow.upsert_search_attributes(
                [
                    GENIE_STATE.value_set(state),
                    GENIE_AWAITING_SINCE.value_set(d.awaiting_since)
                    if d.awaiting_since
                    else GENIE_AWAITING_SINCE.value_unset(),
                ]
            )
        self._refresh_details()

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
