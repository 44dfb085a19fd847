"""Temporal activities that drive the Headless API: one API call, or one stream segment.

``GenieActivities`` binds them to one shared ``GenieClient`` (one connection pool per
worker); the API key lives in that client, never in an activity's input or output.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from temporalio import activity

from activities._attachments import MAX_UPLOAD_BYTES, UrlPolicy
from activities._control import ControlActivities
from activities._errors import (
    ATTACHMENT_REFUSED,
    ATTACHMENT_UNAVAILABLE,
    BUSY_WITH_EARLIER_RUN,
    CREDENTIAL_ADVICE,
    CREDENTIAL_REFUSED,
    CREDENTIAL_SETTLING,
    DECISION_NOT_POSTED,
    DECISION_REFUSED,
    STREAM_STALLED,
    USER_NOT_ALLOWED,
    WORKER_SHUTDOWN,
)
from activities._notify import NotifyActivities, NotifyEndpoint
from activities._options import DEFAULT_AUTH_SETTLE_SECONDS
from activities._stream import run_segment
from activities._users import UserIdPolicy, user_search_value
from activities.models import (
    Deployment,
    DeploymentInput,
    StreamSegmentInput,
    StreamSegmentResult,
)
from genie_api import GenieClient

__all__ = [
    "ATTACHMENT_REFUSED",
    "ATTACHMENT_UNAVAILABLE",
    "BUSY_WITH_EARLIER_RUN",
    "CREDENTIAL_ADVICE",
    "CREDENTIAL_REFUSED",
    "CREDENTIAL_SETTLING",
    "DECISION_NOT_POSTED",
    "DECISION_REFUSED",
    "DEFAULT_AUTH_SETTLE_SECONDS",
    "MAX_UPLOAD_BYTES",
    "STREAM_STALLED",
    "USER_NOT_ALLOWED",
    "WORKER_SHUTDOWN",
    "GenieActivities",
    "UrlPolicy",
    "UserIdPolicy",
]


class GenieActivities(ControlActivities, NotifyActivities):
    """Every activity of the conversation workflow, bound to one client."""

    def __init__(
        self,
        client: GenieClient,
        *,
        attachment_dirs: list[Path] | None = None,
        attachment_urls: UrlPolicy | None = None,
        user_ids: UserIdPolicy | None = None,
        silence_check_seconds: float = 10.0,
        deployment: Deployment | None = None,
        notify_endpoints: list[NotifyEndpoint] | None = None,
        auth_settle_seconds: float = DEFAULT_AUTH_SETTLE_SECONDS,
        user_hash_key: bytes | None = None,
    ) -> None:
        super().__init__(
            client,
            attachment_dirs=attachment_dirs,
            attachment_urls=attachment_urls,
            user_ids=user_ids,
            auth_settle_seconds=auth_settle_seconds,
        )
        # After this long without a run event a segment asks the API (E3) whether the
        # run ended without the stream saying so.
        self._silence_check = silence_check_seconds
        self._user_hash_key = user_hash_key
        deployment = deployment or Deployment()
        NotifyActivities.__init__(self, notify_endpoints, deployment.inbox_url)
        self._deployment = deployment.model_copy(update={"endpoints": self.endpoint_names})

    @activity.defn(name="deployment")
    async def deployment(self, inp: DeploymentInput) -> Deployment:
        """This worker's deployment settings, read by each conversation once, at start, as
        a local activity, so what it got is recorded in its history (replay-safe)."""
        if self._user_hash_key is None:
            return self._deployment
        value = user_search_value(self._user_hash_key, inp.user_id)
        return self._deployment.model_copy(update={"user_search_value": value})

    @activity.defn(name="stream_segment")
    async def stream_segment(self, inp: StreamSegmentInput) -> StreamSegmentResult:
        verdict = inp.decision if inp.mode == "resume" else None
        return await run_segment(
            self._client,
            inp,
            silence_check_seconds=self._silence_check,
            auth_settle_seconds=self._auth_settle,
            post_first=(
                functools.partial(
                    self._post_verdict,
                    inp,
                    inp.conversation_id,
                    verdict,
                    run_id=inp.cursor.genie_run_id if inp.cursor else None,
                    messages_seen=inp.messages_so_far,
                )
                if verdict is not None
                else None
            ),
        )

    def all(self) -> list[Any]:
        """The bound activity callables, for ``Worker(activities=...)``."""
        return [
            self.create_conversation,
            self.upload_attachment,
            self.stream_segment,
            self.post_skill_decision,
            self.get_auth_link,
            self.reject_connection,
            self.probe_connection,
            self.deployment,
            self.notify,
        ]
