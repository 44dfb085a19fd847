"""Every client input is bounded and refused with a typed error, never a stuck task.

Decoding into the workflow's input types raises ``ApplicationError(type=InvalidInput)``:
raised by the SDK's decoder, that fails the workflow at once (start input) or rejects
the update, where any other exception would fail the workflow task in a loop.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

from genie_api import RunCursor
from workflows import errors
from workflows._inputs import (
    ConnectionInput,
    LinkInput,
    SendInput,
    SkillInput,
    StartInput,
    WaitInput,
)
from workflows._state import ConversationData
from workflows.models import (
    AuditEntry,
    ConversationStart,
    DecisionProgress,
    Delivery,
    ErrorInfo,
    PendingApproval,
    PendingConnection,
    TurnRecord,
)
from workflows.signing import SigningPolicy

HUGE = "x" * 1_000_000
START = {"genie_handle": "gin", "user_id": "u1"}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    for path, value in changes.items():
        node = out
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


BAD: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (StartInput, with_(START, genie_handle=5)),
    (StartInput, with_(START, user_id=...)),
    (StartInput, with_(START, user_id="")),
    (StartInput, with_(START, user_id="   ")),
    (StartInput, with_(START, user_id="u" * 2049)),
    (StartInput, with_(START, user_id="a\r\nX-Evil: 1")),
    (StartInput, with_(START, user_id="😀")),
    (StartInput, with_(START, genie_handle=HUGE)),
    (StartInput, with_(START, policy__approval_timeout="P3000000D")),
    (StartInput, with_(START, policy__approval_timeout=-1)),
    (StartInput, with_(START, policy__approval_timeout=0)),
    (StartInput, with_(START, policy__approval_timeout=1e300)),
    (StartInput, with_(START, policy__approval_timeout="nan")),
    (StartInput, with_(START, policy__connection_timeout="P3000000D")),
    (StartInput, with_(START, policy__idle_timeout=1e300)),
    (StartInput, with_(START, policy__api_outage_timeout="P3000000D")),
    (StartInput, with_(START, policy__connection_poll_interval=-5)),
    (StartInput, with_(START, policy__running_shown_after=0)),
    (StartInput, with_(START, policy__running_shown_after=-1)),
    (StartInput, with_(START, policy__running_shown_after="P3000000D")),
    (StartInput, with_(START, policy__running_shown_after=1e300)),
    (StartInput, with_(START, policy__running_shown_after="nan")),
    (StartInput, with_(START, policy__running_shown_after="soon")),
    (StartInput, with_(START, policy__on_approval_timeout="explode")),
    (StartInput, with_(START, policy__max_turns_per_run=0)),
    (StartInput, with_(START, policy__max_turns_per_run=10**12)),
    (StartInput, with_(START, policy__max_history_events_per_run=0)),
    (StartInput, with_(START, policy__max_history_events_per_run=49)),
    (StartInput, with_(START, policy__max_history_events_per_run=10**12)),
    (StartInput, with_(START, policy__max_history_events_per_run=float("inf"))),
    (StartInput, with_(START, policy__max_history_events_per_run="many")),
    (StartInput, with_(START, policy__approvers=["a"] * 10_000)),
    (StartInput, with_(START, policy__approvers=[HUGE])),
    (StartInput, with_(START, policy__approvers="alice")),
    (StartInput, with_(START, first_message__text=5)),
    (
        StartInput,
        with_(START, first_message__text="hi", first_message__client_message_id="c" * 4096),
    ),
    (StartInput, with_(START, first_message__text="hi", first_message__attachment_uri=HUGE)),
    (SendInput, {}),
    (SendInput, {"text": 5}),
    (SendInput, {"text": "hi", "client_message_id": "c" * 4096}),
    (SendInput, {"text": "hi", "client_message_id": ""}),
    (SendInput, {"text": "hi", "wait_for": "forever"}),
    (WaitInput, {"turn": 1, "timeout_seconds": 1e300}),
    (WaitInput, {"turn": 1, "timeout_seconds": float("nan")}),
    (WaitInput, {"turn": 1, "timeout_seconds": float("inf")}),
    (WaitInput, {"turn": 1, "timeout_seconds": -1}),
    (WaitInput, {"turn": "one"}),
    (WaitInput, {"turn": 0}),
    (WaitInput, {"turn": 10**30}),
    (WaitInput, {"turn": 1, "seen": ["x"] * 10_000}),
    (WaitInput, {"turn": True}),
    (WaitInput, {"turn": 1, "timeout_seconds": True}),
    (WaitInput, {"turn": 1.5}),
    (SkillInput, {"call_id": "c", "approved": True, "approver": ""}),
    (SkillInput, {"call_id": "c", "approved": True, "approver": HUGE}),
    (SkillInput, {"call_id": 5, "approved": True, "approver": "a"}),
    (SkillInput, {"call_id": "c", "approved": "maybe", "approver": "a"}),
    (SkillInput, {"call_id": "c", "approved": True, "approver": "a", "reason": HUGE}),
    (SkillInput, {"approved": True, "approver": "a"}),
    (SkillInput, {"call_id": "c", "approved": True, "approver": "a", "wait_for": "forever"}),
    (SkillInput, {"call_id": "c", "approved": True, "approver": "a", "wait_for": 5}),
    (SkillInput, {"call_id": "c", "approved": True, "approver": "a", "wait_for": None}),
    (ConnectionInput, {"attempt_id": "a", "action": "maybe", "actor": "x"}),
    (ConnectionInput, {"attempt_id": "a", "action": "done"}),
    (ConnectionInput, {"attempt_id": HUGE, "action": "done", "actor": "x"}),
    (LinkInput, {"attempt_id": ""}),
    (LinkInput, {}),
]


@pytest.mark.parametrize(("model", "raw"), BAD, ids=lambda v: getattr(v, "__name__", None))
def test_bad_input_is_refused_typed_and_readable(
    model: type[BaseModel], raw: dict[str, Any]
) -> None:
    with pytest.raises(ApplicationError) as e:
        model.model_validate_json(json.dumps(raw))
    assert e.value.type == errors.INVALID_INPUT
    assert e.value.non_retryable
    assert len(e.value.message) <= 1_000
    assert HUGE[:100] not in e.value.message  # names the field, never echoes the value


def test_good_input_passes_and_is_stripped() -> None:
    start = StartInput.model_validate(
        {**START, "user_id": "  u1  ", "policy": {"approval_timeout": "PT1H"}}
    )
    assert start.user_id == "u1"
    assert WaitInput.model_validate({"turn": 3, "timeout_seconds": 0}).timeout_seconds == 0


def test_the_whole_state_survives_continue_as_new() -> None:
    """Every field of ``ConversationData`` is set to a non-default value, passed through
    the JSON of a continue-as-new input, and comes back equal: no field is dropped at the
    seam. A new field without a value here fails the first assertion."""
    at = datetime(2026, 12, 1, tzinfo=UTC)
    turn = TurnRecord(turn=3, text="t", status="completed", reply="r", messages=["r"])
    progress = DecisionProgress(verdict="approved", actor="a", via="update", at=at)
    entry = AuditEntry(at=at, kind="skill_decision", via="update")
    data = ConversationData(
        conversation_id="conv",
        state="awaiting_approval",
        awaiting_since=at,
        next_turn=5,
        queue=[TurnRecord(turn=4, text="q")],
        turns=[turn],
        current=TurnRecord(turn=3, text="c", status="awaiting_approval"),
        pause_cursor=RunCursor(conversation_id="conv", genie_run_id="run", last_seq_num=4),
        pause_probe_every=timedelta(seconds=40),
        upgrade_after_turn=True,
        approvals=[
            PendingApproval(call_id="c1", turn=3, requested_at=at, deadline=at, decision=progress)
        ],
        connections=[
            PendingConnection(attempt_id="a1", turn=3, requested_at=at, deadline=at, note="n")
        ],
        early={
            "c9": {
                "decision": {"call_id": "c9", "approved": True, "approver": "a"},
                "via": "signal",
                "at": at,
            }
        },
        client_ids={"k": 1},
        decided={"c0": "approved by a"},
        detected=["a0"],
        audit=[entry],
        refusals=[entry.model_copy(update={"accepted": False, "count": 3})],
        audit_dropped=7,
        refusals_this_run=5,
        idle_since=at,
        last_error=ErrorInfo(type="T", message="m"),
        api_unreachable_since=at,
        last_run_id="run",
        end_reason="bye",
        left_at_api="run r",
        runs=4,
        patch_level=1,
        running_when_long=True,
        signing=SigningPolicy(keys={"k1": "A" * 43 + "="}, max_age=timedelta(seconds=30)),
        endpoints=["ops"],
        deliveries={
            "ops": Delivery(endpoint="ops", event="pause", ref="c1", at=at, state="delivered")
        },
        policy_source="deployment",
        trace_parents={4: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    defaults = ConversationData()
    unset = [f for f in ConversationData.model_fields if getattr(data, f) == getattr(defaults, f)]
    assert unset == [], f"give these fields a value in this test: {unset}"
    wire = ConversationStart(genie_handle="g", user_id="u", carried=data).model_dump_json()
    back = StartInput.model_validate_json(wire).carried
    assert back == data
