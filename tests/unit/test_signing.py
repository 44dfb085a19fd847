"""Signed decisions: exactly one decision, in one conversation, by one key, recently."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from workflows import _decisions as rules
from workflows import errors
from workflows._state import ConversationData
from workflows.models import (
    ConversationPolicy,
    DecisionProof,
    PendingApproval,
    SkillDecision,
    TurnRecord,
)
from workflows.signing import (
    SigningPolicy,
    decision_message,
    public_key_text,
    sign_decision,
    verify_decision,
)

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
POLICY = SigningPolicy(keys={"inbox-1": public_key_text(KEY)}, max_age=timedelta(minutes=5))
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
WID = "genie-conv-1"


def proof(key: Ed25519PrivateKey = KEY, kid: str = "inbox-1", **over: object) -> DecisionProof:
    fields: dict[str, object] = {
        "workflow_id": WID,
        "ref": "call_1",
        "verdict": "approved",
        "approver": "alice@example.com",
        "groups": ["finance"],
        "auth_method": "jwt",
        "reason": "fine by me",
        "issued_at": NOW - timedelta(seconds=5),
        **over,
    }
    return sign_decision(key, kid, **fields)  # type: ignore[arg-type]


def check(p: object, **over: str | None) -> str | None:
    args = {
        "workflow_id": WID,
        "ref": "call_1",
        "verdict": "approved",
        "approver": "alice@example.com",
        "reason": "fine by me",
        **over,
    }
    return verify_decision(POLICY, p, now=NOW, **args)  # type: ignore[arg-type]


def test_a_fresh_signature_from_a_trusted_key_holds() -> None:
    assert check(proof()) is None


@pytest.mark.parametrize(
    ("what", "p", "over"),
    [
        ("missing", None, {}),
        ("another verdict", proof(), {"verdict": "rejected"}),
        ("another approver", proof(), {"approver": "mallory"}),
        ("another reason", proof(), {"reason": "mallory says so"}),
        ("the reason dropped", proof(), {"reason": None}),
        ("a reason added", proof(reason=None), {"reason": "added later"}),
        ("another call", proof(), {"ref": "call_2"}),
        ("another conversation", proof(), {"workflow_id": "genie-conv-2"}),
        ("untrusted key", proof(OTHER, "evil"), {}),
        ("trusted id, other key", proof(OTHER), {}),
        ("stale", proof(issued_at=NOW - timedelta(minutes=6)), {}),
        ("from the future", proof(issued_at=NOW + timedelta(minutes=5)), {}),
    ],
)
def test_anything_else_is_refused(what: str, p: object, over: dict[str, str]) -> None:
    assert check(p, **over) is not None, what


def test_no_reason_and_an_empty_reason_sign_alike() -> None:
    assert check(proof(reason=None), reason="") is None
    assert check(proof(reason=""), reason=None) is None


def test_a_version_1_proof_still_holds_and_a_version_2_one_cannot_pose_as_it() -> None:
    """Proofs recorded before the reason was signed verify as they did (replay gives the
    same answer); relabelling a new proof as version 1, to drop its reason from what is
    checked, breaks its signature."""
    at = NOW - timedelta(seconds=5)
    signed = {
        "workflow_id": WID,
        "ref": "call_1",
        "verdict": "approved",
        "approver": "alice@example.com",
        "groups": ["finance"],
        "auth_method": "jwt",
        "issued_at": at,
    }
    old = DecisionProof(
        v=1,
        key_id="inbox-1",
        issued_at=at,
        auth_method="jwt",
        groups=["finance"],
        signature=base64.urlsafe_b64encode(
            KEY.sign(decision_message(**signed, reason=None, version=1))  # type: ignore[arg-type]
        ).decode(),
    )
    assert check(old) is None
    assert check(old, reason="whatever the sender likes") is None  # what v1 never covered
    assert DecisionProof.model_validate(old.model_dump(exclude={"v"})).v == 1  # as recorded
    assert check(proof().model_copy(update={"v": 1})) is not None


def test_tampered_groups_or_method_break_the_signature() -> None:
    p = proof()
    assert check(p.model_copy(update={"groups": ["admins"]})) is not None
    assert check(p.model_copy(update={"auth_method": "dev"})) is not None
    assert check(p.model_copy(update={"signature": "!!notbase64"})) is not None


def test_the_rules_refuse_unsigned_decisions_only_when_signing_is_on() -> None:
    d = ConversationData(conversation_id="c", state="awaiting_approval")
    d.current = TurnRecord(turn=1, text="t", status="awaiting_approval")
    d.approvals.append(
        PendingApproval(
            call_id="call_1", turn=1, requested_at=NOW, deadline=NOW + timedelta(hours=1)
        )
    )
    unsigned = SkillDecision(call_id="call_1", approved=True, approver="alice@example.com")
    assert rules.skill_refusal(d, ConversationPolicy(), unsigned, NOW, WID) is None
    d.signing = POLICY
    r = rules.skill_refusal(d, ConversationPolicy(), unsigned, NOW, WID)
    assert r is not None and r.type == errors.INVALID_SIGNATURE
    signed = unsigned.model_copy(update={"proof": proof(reason=None)})
    assert rules.skill_refusal(d, ConversationPolicy(), signed, NOW, WID) is None
    reworded = signed.model_copy(update={"reason": "added on the way"})
    r = rules.skill_refusal(d, ConversationPolicy(), reworded, NOW, WID)
    assert r is not None and r.type == errors.INVALID_SIGNATURE
    rules.record_skill(d, signed, "update", NOW)
    assert d.audit[-1].auth == "jwt (key inbox-1)"


@pytest.mark.parametrize("v", [0, 3, "2", 2.0, True, None])
def test_a_proof_version_is_1_or_2_exactly(v: object) -> None:
    """Read strictly, as the other numbers a client sends: JSON ``true`` is not 1."""
    fields = proof().model_dump(mode="json")
    with pytest.raises(ValidationError):
        DecisionProof.model_validate({**fields, "v": v})
