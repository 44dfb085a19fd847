"""Sending a decision: as the authenticated approver, signed when a key is configured."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.service import RPCError

from geniectl import GenieConversations
from inbox._auth import Identity
from inbox._data import Unavailable
from workflows.models import DecisionProof, DecisionRecorded
from workflows.signing import sign_decision

Kind = Literal["skill", "connection"]
Verdict = Literal["approved", "rejected", "done", "reject"]


@dataclass(frozen=True)
class Decider:
    api: GenieConversations
    signing_key: Ed25519PrivateKey | None
    key_id: str | None
    timeout: float = 30.0

    def proof(
        self, me: Identity, wid: str, ref: str, verdict: Verdict, reason: str | None
    ) -> DecisionProof | None:
        if self.signing_key is None or self.key_id is None:
            return None
        return sign_decision(
            self.signing_key,
            self.key_id,
            workflow_id=wid,
            ref=ref,
            verdict=verdict,
            approver=me.name,
            groups=me.groups,
            auth_method=me.method,
            reason=reason,
        )

    async def decide(
        self, me: Identity, wid: str, kind: Kind, ref: str, verdict: Verdict, reason: str | None
    ) -> DecisionRecorded:
        """Run the decide update; ``Refused`` / ``NotFound`` pass through, an unanswered
        or failed call is ``Unavailable``."""
        proof = self.proof(me, wid, ref, verdict, reason)
        api = self.api
        try:
            async with asyncio.timeout(self.timeout):
                if kind == "skill":
                    if verdict == "approved":
                        return await api.approve(
                            wid, ref, approver=me.name, reason=reason, proof=proof
                        )
                    return await api.reject(wid, ref, approver=me.name, reason=reason, proof=proof)
                if verdict == "done":
                    return await api.connect_done(
                        wid, ref, actor=me.name, reason=reason, proof=proof
                    )
                return await api.connect_reject(wid, ref, actor=me.name, reason=reason, proof=proof)
        except TimeoutError:
            raise Unavailable(
                f"the conversation did not answer within {self.timeout:g}s (is its worker "
                "running?); the decision may still be taken when it does: check the "
                "conversation page before deciding again"
            ) from None
        except RPCError as e:
            status = e.status.name if e.status else "an error"
            raise Unavailable(f"Temporal answered {status}") from None
