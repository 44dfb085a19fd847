"""Version B of ``GenieConversation`` for the versioned-deploy test: the same workflow
type with one more command, a timer before every turn.

That timer makes B incompatible with A: replaying a history A wrote on B fails with a
non-determinism error at the first turn. So a run of A that ever reached B would show a
failed workflow task, which is what the test looks for. Kept apart from ``_worker_b`` so
the sandbox imports only workflow code.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows import ConversationOutcome, GenieConversation
from workflows._inputs import StartInput
from workflows.conversation import WORKFLOW_TYPE

MARK_SUMMARY = "version B: turn start"
"""The summary of B's extra timer, to tell in a history which version ran a turn."""


@workflow.defn(name=WORKFLOW_TYPE)  # PINNED by the versioned worker, as A
class GenieConversationB(GenieConversation):
    @workflow.run
    async def run(self, start: StartInput) -> ConversationOutcome:  # the SDK wants it here
        return await super().run(start)

    async def _wait_for_work(self) -> bool:
        # Before the turn leaves the queue, so that handlers waiting on it still find it.
        work = await super()._wait_for_work()
        if work and self._d.queue:
            await workflow.sleep(timedelta(milliseconds=1), summary=MARK_SUMMARY)
        return work
