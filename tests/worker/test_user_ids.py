"""Which end users the worker acts for: ``GENIE_USER_ID_PATTERN`` and ``GENIE_USER_IDS``.

With the service key the worker asserts the end user itself (``X-IDP-User-Id``), so a
refused id must be stopped before any request names it. The activity tests run the real
``create_conversation`` with an API stand-in that records what reaches it.
"""

from __future__ import annotations

import re

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import USER_NOT_ALLOWED, GenieActivities, UserIdPolicy
from activities.models import CreateConversationInput, UploadAttachmentInput
from genie_api import ApiKeyAuth, GenieClient

PATTERN = re.compile(r"u-[0-9]+")


def refusal(policy: UserIdPolicy, user_id: str) -> str:
    with pytest.raises(ApplicationError) as e:
        policy.check(user_id)
    assert e.value.type == USER_NOT_ALLOWED and e.value.non_retryable
    assert user_id not in e.value.message or not user_id
    return e.value.message


@pytest.mark.parametrize("user_id", ["u-1", "00u1abcdEFGH", "a b", "x" * 4096])
def test_by_default_any_sendable_id_is_allowed(user_id: str) -> None:
    UserIdPolicy().check(user_id)


@pytest.mark.parametrize(
    "user_id", ["", " u-1", "u-1 ", "u-1\r\nX-Injected: 1", "u-\x001", "émile", "u-😀", "\t"]
)
def test_ids_that_cannot_be_sent_as_a_header_are_refused(user_id: str) -> None:
    message = refusal(UserIdPolicy(), user_id)
    assert "no user id" in message or "cannot be sent as an HTTP header" in message


@pytest.mark.parametrize(
    ("user_id", "allowed"),
    [("u-1", True), ("u-12345", True), ("u-1x", False), ("xu-1", False), ("U-1", False)],
)
def test_the_pattern_must_match_the_whole_id(user_id: str, allowed: bool) -> None:
    policy = UserIdPolicy(pattern=PATTERN)
    if allowed:
        policy.check(user_id)
    else:
        assert "GENIE_USER_ID_PATTERN" in refusal(policy, user_id)


def test_the_allowlist_is_exact() -> None:
    policy = UserIdPolicy(allowed=frozenset({"u-1", "u-2"}))
    policy.check("u-2")
    for other in ("u-3", "U-1", "u-1x"):
        assert "GENIE_USER_IDS" in refusal(policy, other)


def test_with_both_an_id_must_satisfy_both() -> None:
    policy = UserIdPolicy(pattern=PATTERN, allowed=frozenset({"u-1", "admin"}))
    policy.check("u-1")
    assert "GENIE_USER_ID_PATTERN" in refusal(policy, "admin")
    assert "GENIE_USER_IDS" in refusal(policy, "u-2")


class RecordingAPI:
    """An ``httpx`` transport standing in for the Headless API."""

    def __init__(self) -> None:
        self.user_ids: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.user_ids.append(request.headers.get("X-IDP-User-Id"))
        return httpx.Response(201, json={"conversation_id": "conv-1"})


async def test_create_conversation_refuses_before_naming_the_user() -> None:
    api = RecordingAPI()
    policy = UserIdPolicy(pattern=PATTERN)
    transport = httpx.MockTransport(api)
    async with GenieClient("http://genie.invalid", ApiKeyAuth("k"), transport=transport) as c:
        acts = GenieActivities(c, user_ids=policy)
        env = ActivityEnvironment()
        ok = await env.run(
            acts.create_conversation, CreateConversationInput(genie_handle="gin", user_id="u-7")
        )
        assert ok.conversation_id == "conv-1"
        for bad in ("ceo", "u-7\r\nX-IDP-User-Id: ceo"):
            with pytest.raises(ApplicationError) as e:
                await env.run(
                    acts.create_conversation,
                    CreateConversationInput(genie_handle="gin", user_id=bad),
                )
            assert e.value.type == USER_NOT_ALLOWED and e.value.non_retryable
        # Uploads name the user too: refused the same way, before reading the attachment.
        with pytest.raises(ApplicationError) as e:
            await env.run(
                acts.upload_attachment,
                UploadAttachmentInput(
                    genie_handle="gin",
                    user_id="ceo",
                    conversation_id="conv-1",
                    attachment_uri="file:///etc/hostname",
                ),
            )
        assert e.value.type == USER_NOT_ALLOWED
    assert api.user_ids == ["u-7"]
