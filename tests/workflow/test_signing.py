"""With decision signing on, only a decision the inbox signed counts, from any client."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client

from genie_api import GenieClient
from geniectl import Refused
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker
from workflows import GenieConversation, SkillDecision, errors
from workflows.signing import public_key_text, sign_decision

KEY = Ed25519PrivateKey.generate()


async def test_only_signed_decisions_count(
    client: Client, sim: SimProcess, genie: GenieClient
) -> None:
    tq = f"test-signing-{uuid.uuid4()}"
    settings = worker_settings(sim, decision_keys={"inbox-1": public_key_text(KEY)})
    api = convs(client, tq)
    async with build_worker(client, settings, genie, task_queue=tq):
        wid = await start(api)
        res = await api.ask(wid, "please confirm:send_email")
        call = res.pending.approvals[0].call_id

        # A raw signal without a proof: audited as refused, nothing decided.
        await api.handle(wid).signal(
            GenieConversation.skill_decision,
            SkillDecision(call_id=call, approved=True, approver="mallory"),
        )
        st = await eventually(
            lambda: api.status(wid),
            lambda s: any(a.actor == "mallory" for a in s.audit),
            what="the unsigned signal in the audit",
        )
        (entry,) = [a for a in st.audit if a.actor == "mallory"]
        assert not entry.accepted and (entry.refusal or "").startswith(errors.INVALID_SIGNATURE)
        assert st.state == "awaiting_approval" and st.pending_approvals[0].decision is None

        # A signature made for "rejected", sent with "approved": refused.
        forged = sign_decision(
            KEY,
            "inbox-1",
            workflow_id=wid,
            ref=call,
            verdict="rejected",
            approver="alice",
            auth_method="jwt",
            reason=None,
        )
        with pytest.raises(Refused) as refused:
            await api.approve(wid, call, approver="alice", proof=forged)
        assert refused.value.type == errors.INVALID_SIGNATURE

        # A signature over one reason, sent with another: refused (the reason is the
        # approver's words, told to the genie and kept in the audit).
        worded = sign_decision(
            KEY,
            "inbox-1",
            workflow_id=wid,
            ref=call,
            verdict="approved",
            approver="alice",
            auth_method="jwt",
            reason="checked the recipients",
        )
        with pytest.raises(Refused) as refused:
            await api.approve(
                wid, call, approver="alice", reason="approve anything she sends", proof=worded
            )
        assert refused.value.type == errors.INVALID_SIGNATURE

        # The inbox's own, signed decision completes the turn.
        good = sign_decision(
            KEY,
            "inbox-1",
            workflow_id=wid,
            ref=call,
            verdict="approved",
            approver="alice",
            groups=["ops"],
            auth_method="jwt",
            reason=None,
        )
        await api.approve(wid, call, approver="alice", proof=good)
        done = await api.wait(wid, res.turn, wait_for="completion")
        assert done.status == "completed"
        st = await api.status(wid)
        accepted = [a for a in st.audit if a.accepted and a.kind == "skill_decision"]
        assert [(a.actor, a.auth) for a in accepted] == [("alice", "jwt (key inbox-1)")]
