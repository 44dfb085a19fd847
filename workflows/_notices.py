"""Notifications: each pause is announced to the configured endpoints, in the background.

A mixin of the conversation workflow. Each endpoint gets its own task that runs the
``notify`` activity with retries until a budget tied to the item's deadline, and records
the outcome in ``ConversationData.deliveries`` for the card and ``status``; nothing in
the run loop ever waits for it. Replay does not send again (the activity is in history);
a retried attempt sends the same ``webhook-id`` (at-least-once, receivers dedupe).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities import GenieActivities
    from activities._notify import NotifyInput

from workflows._policy import endpoints
from workflows._steps import error_info
from workflows._visibility import Visibility
from workflows.models import Delivery, PendingApproval

NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
)
"""Notifications retry until their budget: the item's deadline, within these bounds."""
NOTIFY_MIN_BUDGET = timedelta(minutes=1)
NOTIFY_MAX_BUDGET = timedelta(hours=1)


class Notices(Visibility):
    _delivery_tasks: set[asyncio.Task[None]]

    def _scope(self) -> dict[str, str]:
        return {"genie_handle": self._start.genie_handle, "user_id": self._start.user_id}

    def _notify(self, wanted: tuple[str, ...] | None, event: str, item: Any) -> None:
        """Tell each endpoint, each in its own background task: a slow or failing
        endpoint never holds up the conversation."""
        for endpoint in endpoints(wanted, self._d.endpoints):
            self._start_delivery(endpoint, event, item)

    def _notify_again(self, item: Any) -> None:
        """In the run a pause rollover started: the notifications about ``item`` that the
        last run was still sending (``stop_deliveries`` stopped them), sent again."""
        ref = item.call_id if isinstance(item, PendingApproval) else item.attempt_id
        for endpoint, sent in list(self._d.deliveries.items()):
            if sent.state == "sending" and sent.ref == ref:
                self._start_delivery(endpoint, sent.event, item)

    def _start_delivery(self, endpoint: str, event: str, item: Any) -> None:
        task = asyncio.create_task(self._deliver(endpoint, event, item))
        self._delivery_tasks.add(task)
        task.add_done_callback(self._delivery_tasks.discard)

    async def _deliver(self, endpoint: str, event: Any, item: Any) -> None:
        d, now = self._d, workflow.now()
        skill = isinstance(item, PendingApproval)
        ref = item.call_id if skill else item.attempt_id
        d.deliveries[endpoint] = Delivery(
            endpoint=endpoint, event=event, ref=ref, at=now, state="sending"
        )
        self._refresh_details()
        title = (
            f"{item.skill_name or 'a skill'} wants approval"
            if skill
            else f"{item.connector_name or 'a connector'} needs the user to connect"
        )
        inp = NotifyInput(
            endpoint=endpoint,
            webhook_id=f"{workflow.info().workflow_id}:{ref}:{event}",
            event=event,
            workflow_id=workflow.info().workflow_id,
            **self._scope(),
            ref=ref,
            kind="skill_confirmation" if skill else "runtime_connection",
            title=title,
            details=item.model_dump(mode="json", exclude={"decision", "note"}),
            deadline=item.deadline,
        )
        budget = min(max(item.deadline - now, NOTIFY_MIN_BUDGET), NOTIFY_MAX_BUDGET)
        try:
            await workflow.execute_activity_method(
                GenieActivities.notify,
                inp,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=budget,
                retry_policy=NOTIFY_RETRY,
                summary=f"notify {endpoint}: {event} {ref}",
            )
            state, detail = "delivered", None
        except ActivityError as e:
            state, detail = "failed", error_info(e, turn=None, at=workflow.now()).message[:200]
        d.deliveries[endpoint] = d.deliveries[endpoint].model_copy(
            update={"state": state, "detail": detail, "at": workflow.now()}
        )
        self._refresh_details()

    def stop_deliveries(self) -> None:
        """Before continue-as-new or the end: notifications still retrying are about
        pauses that are over, stopped rather than carried; or, in a pause rollover, sent
        again by the next run (``_notify_again``)."""
        for task in list(self._delivery_tasks):
            task.cancel()
