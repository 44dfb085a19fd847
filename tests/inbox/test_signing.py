"""Signed decisions end to end: a worker process that trusts only the inbox's key.

The worker is configured as ops would configure it (``GENIE_DECISION_KEYS`` in its
environment). The jwt inbox holds the matching private key; the dev inbox holds none.
Only the signing inbox's decisions count: a raw ``temporal workflow signal``, an update
whose signature was made for another verdict or another conversation, and the unsigned
inbox are all refused and audited while the conversation keeps waiting.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from genie_stack import WorkerProcess, free_port, temporal_cli, worker_env
from geniectl import GenieConversations, Refused
from tests.inbox.conftest import (
    IDP_KEY,
    SIGNING_KEY,
    SIGNING_KEY_ID,
    ClientFor,
    temporal_address,
)
from tests.inbox.helpers import (
    bearer,
    dev_login,
    paused_connection,
    paused_skill,
    token,
    undecided,
)
from tests.services import SIM_API_KEY, SimProcess
from tests.workflow.helpers import eventually
from workflows import ConversationPolicy, errors
from workflows.models import SkillRule
from workflows.signing import public_key_text, sign_decision


@pytest.fixture(scope="module")
async def signed_queue(
    temporal_env: WorkflowEnvironment,
    _sim_session: SimProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """A worker process that takes only decisions signed with the inbox's key."""
    tq = f"signed-{uuid.uuid4()}"
    env = worker_env(
        temporal_address=temporal_address(temporal_env),
        api_base_url=_sim_session.base_url,
        api_key=SIM_API_KEY,
        task_queue=tq,
        metrics_port=free_port(),
        settings={"decision_keys": f"{SIGNING_KEY_ID}:{public_key_text(SIGNING_KEY)}"},
        inherit=False,
    )
    log = tmp_path_factory.mktemp("signed-worker") / "worker.log"
    async with WorkerProcess(env=env, log_path=log):
        yield tq


def _refusals(st: object, actor: str) -> list[str]:
    return [a.refusal or "" for a in st.audit if a.actor == actor and not a.accepted]  # type: ignore[attr-defined]


async def test_only_the_signing_inbox_can_decide(
    client: Client, temporal_env: WorkflowEnvironment, signed_queue: str, client_for: ClientFor
) -> None:
    api = GenieConversations(client, task_queue=signed_queue)
    wid, turn, item = await paused_skill(api)
    call = item.call_id

    # Anyone with write access to the namespace, through the official CLI: refused, audited.
    raw = json.dumps({"call_id": call, "approved": True, "approver": "mallory"})
    cli = await asyncio.create_subprocess_exec(
        temporal_cli(),
        "workflow",
        "signal",
        "--address",
        temporal_address(temporal_env),
        "--namespace",
        "default",
        "--workflow-id",
        wid,
        "--name",
        "skill_decision",
        "--input",
        raw,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await cli.communicate()
    assert cli.returncode == 0, err.decode()  # the signal is delivered...
    st = await eventually(
        lambda: api.status(wid),
        lambda s: bool(_refusals(s, "mallory")),
        what="the raw signal's refusal in the audit",
    )
    assert _refusals(st, "mallory")[0].startswith(errors.INVALID_SIGNATURE)  # ...and refused
    assert undecided(st)

    # A real signature, but for another verdict, or for another conversation: refused.
    for other_wid, verdict in ((wid, "rejected"), ("some-other-conversation", "approved")):
        proof = sign_decision(
            SIGNING_KEY,
            SIGNING_KEY_ID,
            workflow_id=other_wid,
            ref=call,
            verdict=verdict,
            approver="eve",
            auth_method="jwt",
            reason=None,
        )
        with pytest.raises(Refused) as refused:
            await api.approve(wid, call, approver="eve", proof=proof)
        assert refused.value.type == errors.INVALID_SIGNATURE
    st = await api.status(wid)
    assert [r.split(":")[0] for r in _refusals(st, "eve")] == [errors.INVALID_SIGNATURE]
    assert next(a.count for a in st.audit if a.actor == "eve") == 2

    # An inbox without the key: refused, and the page says what operators must fix.
    dev = client_for("dev")
    csrf = await dev_login(dev, "bob")
    r = await dev.post(
        f"/items/{wid}/skill/{call}", data={"csrf_token": csrf, "verdict": "approve"}
    )
    assert r.status_code == 403 and "Signature refused" in r.text
    assert "GENIE_DECISION_KEYS" in r.text
    st = await api.status(wid)
    assert _refusals(st, "bob")[0].startswith(errors.INVALID_SIGNATURE) and undecided(st)
    assert st.state == "awaiting_approval"

    # The signing inbox: the decision counts and the turn completes.
    http = client_for("jwt")
    auth = bearer(token(IDP_KEY, email="alice@example.test", groups=["approvers"]))
    r = await http.post(f"/api/decisions/{wid}/skill/{call}", json={"approved": True}, headers=auth)
    assert r.status_code == 200, r.text
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed" and "send_email" in (done.reply or "")
    st = await api.status(wid)
    accepted = [(a.actor, a.auth) for a in st.audit if a.kind == "skill_decision" and a.accepted]
    assert accepted == [("alice@example.test", f"jwt (key {SIGNING_KEY_ID})")]


async def test_connection_decisions_need_the_signature_too(
    client: Client, signed_queue: str, client_for: ClientFor
) -> None:
    api = GenieConversations(client, task_queue=signed_queue)
    wid, turn, conn = await paused_connection(api)
    with pytest.raises(Refused) as refused:
        await api.connect_done(wid, conn.attempt_id, actor="mallory")
    assert refused.value.type == errors.INVALID_SIGNATURE
    assert conn.auth_url
    async with httpx.AsyncClient(timeout=10) as user:
        (await user.get(conn.auth_url)).raise_for_status()
    http = client_for("jwt")
    r = await http.post(
        f"/api/decisions/{wid}/connection/{conn.attempt_id}",
        json={"action": "done"},
        headers=bearer(token(IDP_KEY)),
    )
    assert r.status_code == 200, r.text
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


async def test_a_group_rule_counts_groups_only_from_the_signed_token(
    client: Client, signed_queue: str, client_for: ClientFor
) -> None:
    """A rule that lets group finance approve: the inbox puts the token's groups in its
    signature, and the workflow believes groups from nothing else."""
    api = GenieConversations(client, task_queue=signed_queue)
    policy = ConversationPolicy(
        approvers=["nobody"], skills=[SkillRule(match="wire_*", approver_groups=["finance"])]
    )
    wid, turn, item = await paused_skill(api, "confirm:wire_money", policy=policy)
    http = client_for("jwt")
    path = f"/api/decisions/{wid}/skill/{item.call_id}"
    outsider = bearer(token(IDP_KEY, email="sam@example.test", groups=["sales"]))
    r = await http.post(path, json={"approved": True}, headers=outsider)
    assert r.status_code == 403 and r.json()["error"]["type"] == errors.APPROVER_NOT_ALLOWED
    assert "group finance" in r.json()["error"]["message"]
    listed = (await http.get("/api/pending", headers=outsider)).json()["items"]
    (mine,) = [i for i in listed if i["workflow_id"] == wid]
    assert mine["rule"] == "wire_*" and mine["can_decide"] is True  # the workflow decides
    member = bearer(token(IDP_KEY, email="fin@example.test", groups=["finance"]))
    r = await http.post(path, json={"approved": True}, headers=member)
    assert r.status_code == 200, r.text
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


def test_keys_and_secrets_never_reach_the_logs(inbox_logs: dict[str, Path]) -> None:
    from tests.inbox.conftest import signing_key_text

    secret = signing_key_text()
    for mode, path in inbox_logs.items():
        text = path.read_text()
        assert secret not in text, mode
        assert "BEGIN PUBLIC KEY" not in text, mode
