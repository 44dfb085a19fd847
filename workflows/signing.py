"""Signed decisions: proof, carried inside a decision, that an authenticated person made it.

The inbox authenticates its users (JWT, a trusted proxy, or dev mode) and signs each
decision with an Ed25519 key; the workflow verifies the signature against public keys
fixed by the worker's configuration (``GENIE_DECISION_KEYS``), which it reads once, at
start, through a local activity and carries across continue-as-new, so a caller of the
workflow can neither replace them nor change them by replaying. With signing configured,
a decision without a valid, fresh signature is refused and audited, whatever client sent
it; without it, decisions are accepted as before, under whatever name the caller gives.

What is signed is ``decision_message``: canonical JSON (sorted keys, no spaces) of the
proof's version, the workflow id, the call or attempt id, the verdict, the approver,
their groups, how they authenticated, when it was issued (milliseconds) and, from
version 2, the reason, so a signature fits exactly one decision in one conversation,
in the approver's words. Version-1 proofs (inboxes before 2026-12-03) still verify, as
they did when they were recorded; since the version is signed, a version-2 proof cannot
be passed off as one to drop its reason.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

# A compiled library, loaded once per process: the workflow sandbox must not re-import it.
with workflow.unsafe.imports_passed_through():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from workflows.models import DecisionProof

__all__ = [
    "MAX_CLOCK_SKEW",
    "SigningPolicy",
    "decision_message",
    "public_key_text",
    "sign_decision",
    "verify_decision",
]

_PROOF_VERSION = 2
"""The version ``sign_decision`` writes."""

MAX_CLOCK_SKEW = timedelta(seconds=60)
"""A proof issued this far in the future (by the inbox's clock) is still accepted."""


class SigningPolicy(BaseModel):
    """The trusted public keys and how old a signed decision may be (from the worker)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    keys: dict[str, str] = Field(default_factory=dict)
    """key id → Ed25519 public key, raw 32 bytes in base64. Empty: signing is off."""
    max_age: timedelta = timedelta(minutes=5)

    @property
    def required(self) -> bool:
        return bool(self.keys)


def decision_message(
    *,
    workflow_id: str,
    ref: str,
    verdict: str,
    approver: str,
    groups: Sequence[str],
    auth_method: str,
    issued_at: datetime,
    reason: str | None,
    version: int = _PROOF_VERSION,
) -> bytes:
    """The exact bytes a decision's signature covers (``reason`` only from version 2)."""
    body: dict[str, object] = {
        "v": version,
        "workflow_id": workflow_id,
        "ref": ref,
        "verdict": verdict,
        "approver": approver,
        "groups": sorted(groups),
        "auth_method": auth_method,
        "issued_at_ms": int(issued_at.timestamp() * 1000),
    }
    if version >= 2:
        body["reason"] = reason or ""  # no reason and an empty one read the same
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_decision(
    key: Ed25519PrivateKey,
    key_id: str,
    *,
    workflow_id: str,
    ref: str,
    verdict: str,
    approver: str,
    groups: Sequence[str] = (),
    auth_method: Literal["jwt", "proxy", "dev"],
    reason: str | None,
    issued_at: datetime | None = None,
) -> DecisionProof:
    """The proof the inbox attaches to a decision it sends: ``reason`` exactly as the
    decision carries it."""
    at = (issued_at or datetime.now(UTC)).replace(microsecond=0)
    msg = decision_message(
        workflow_id=workflow_id,
        ref=ref,
        verdict=verdict,
        approver=approver,
        groups=groups,
        auth_method=auth_method,
        issued_at=at,
        reason=reason,
    )
    return DecisionProof(
        v=_PROOF_VERSION,
        key_id=key_id,
        issued_at=at,
        auth_method=auth_method,
        groups=sorted(groups),
        signature=base64.urlsafe_b64encode(key.sign(msg)).decode(),
    )


def verify_decision(
    policy: SigningPolicy,
    proof: DecisionProof | None,
    *,
    workflow_id: str,
    ref: str,
    verdict: str,
    approver: str,
    reason: str | None,
    now: datetime,
) -> str | None:
    """Why the proof does not hold (a sentence), or None when it does.

    Never raises: it runs inside signal and update handlers on client input, where an
    exception would fail the workflow task on every retry. Whatever the proof holds that
    cannot be checked (a time that does not compare, a malformed key) refuses it."""
    if proof is None:
        return "this conversation accepts only signed decisions (from the inbox)"
    try:
        return _proof_fault(
            policy,
            proof,
            workflow_id=workflow_id,
            ref=ref,
            verdict=verdict,
            approver=approver,
            reason=reason,
            now=now,
        )
    except Exception:  # any fault in a client's proof is a refusal, never a failed task
        return "the signature cannot be checked"


def _proof_fault(
    policy: SigningPolicy,
    proof: DecisionProof,
    *,
    workflow_id: str,
    ref: str,
    verdict: str,
    approver: str,
    reason: str | None,
    now: datetime,
) -> str | None:
    raw = policy.keys.get(proof.key_id)
    if raw is None:
        return f"key {proof.key_id!r} is not trusted by this deployment"
    if proof.issued_at.utcoffset() is None:
        return "the signature's issued_at has no UTC offset"
    if now - proof.issued_at > policy.max_age:
        return (
            f"the signature was issued at {proof.issued_at.isoformat()}, "
            f"longer ago than {policy.max_age}"
        )
    if proof.issued_at - now > MAX_CLOCK_SKEW:
        return f"the signature claims to be issued in the future ({proof.issued_at.isoformat()})"
    msg = decision_message(
        workflow_id=workflow_id,
        ref=ref,
        verdict=verdict,
        approver=approver,
        groups=proof.groups,
        auth_method=proof.auth_method,
        issued_at=proof.issued_at,
        reason=reason,
        version=proof.v,
    )
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw))
        public.verify(base64.urlsafe_b64decode(proof.signature), msg)
    except (InvalidSignature, ValueError, binascii.Error):
        return "the signature does not match this decision"
    return None


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The base64 raw public key, as ``GENIE_DECISION_KEYS`` lists it."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()
