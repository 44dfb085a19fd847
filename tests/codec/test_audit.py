"""The audit export across continue-as-new, and the worker's JSON audit log.

One encrypted conversation, two runs (``max_turns_per_run=2``), with decisions by update
and by signal, accepted and refused, signed and not, and the API's verdicts. Its worker
keeps no workflow in cache, so every workflow task replays: the audit log must still
log each entry exactly once.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from genie_api import GenieClient
from genie_codec._tap import AuditLogInterceptor
from genie_codec.audit import (
    CSV_FIELDS,
    AuditRecord,
    audit_schema,
    export_audit,
    to_csv,
    to_jsonl,
)
from geniectl import Refused
from tests.cli.test_geniectl import geniectl
from tests.codec.conftest import K1, K2, address, codec_client
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker
from workflows import ConversationPolicy, DecisionProof, GenieConversation, SkillDecision, errors
from workflows.signing import public_key_text, sign_decision

INBOX_KEY = Ed25519PrivateKey.generate()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Conversation:
    client: Client
    workflow_id: str
    log_lines: list[str]
    calls: list[str]


@pytest.fixture(scope="module")
async def conversation(
    temporal_env: WorkflowEnvironment, _sim_session: SimProcess, genie: GenieClient
) -> AsyncIterator[Conversation]:
    logger = logging.getLogger(f"test.audit.{uuid.uuid4().hex}")
    logger.propagate = False
    handler = _Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    client = await codec_client(temporal_env, K2, K1, interceptors=[AuditLogInterceptor(logger)])
    tq = f"test-audit-{uuid.uuid4()}"
    settings = worker_settings(
        _sim_session,
        decision_keys={"inbox-1": public_key_text(INBOX_KEY)},
        max_cached_workflows=0,
    )
    policy = ConversationPolicy(max_turns_per_run=2, approvers=["alice", "bob"])
    api = convs(client, tq)
    async with build_worker(client, settings, genie, task_queue=tq):
        wid = await start(api, policy=policy)
        first_run = (await api.handle(wid).describe()).run_id

        def signed(call: str, verdict: str, who: str, reason: str) -> DecisionProof:
            return sign_decision(
                INBOX_KEY,
                "inbox-1",
                workflow_id=wid,
                ref=call,
                verdict=verdict,
                approver=who,
                groups=["ops"],
                auth_method="jwt",
                reason=reason,
            )

        # Run 1, turn 1: a pause; a refused update, a refused signal, a signed approval.
        res = await api.ask(wid, "confirm:send_email")
        c1 = res.pending.approvals[0].call_id
        with pytest.raises(Refused) as refused:
            await api.approve(wid, c1, approver="mallory")
        assert refused.value.type == errors.INVALID_SIGNATURE
        await api.handle(wid).signal(
            GenieConversation.skill_decision,
            SkillDecision(call_id="call_guess", approved=True, approver="eve"),
        )
        await api.approve(
            wid, c1, approver="alice", reason="ok", proof=signed(c1, "approved", "alice", "ok")
        )
        assert (await api.wait(wid, res.turn, wait_for="completion")).status == "completed"
        # Turn 2 ends run 1 (two turns per run).
        assert (await api.ask(wid, "hello")).status == "completed"
        # Run 2: a pause rejected by a signed signal.
        res = await api.ask(wid, "confirm:delete_file")
        c2 = res.pending.approvals[0].call_id
        await api.handle(wid).signal(
            GenieConversation.skill_decision,
            SkillDecision(
                call_id=c2,
                approved=False,
                approver="bob",
                reason="no",
                proof=signed(c2, "rejected", "bob", "no"),
            ),
        )
        assert (await api.wait(wid, res.turn, wait_for="completion")).status == "completed"
        assert (await api.handle(wid).describe()).run_id != first_run
        await eventually(
            lambda: _async(len(handler.lines)), lambda n: n >= 6, what="the audit log lines"
        )
        yield Conversation(client, wid, handler.lines, [c1, c2])


async def _async(value: int) -> int:
    return value


def _essence(r: AuditRecord) -> tuple[object, ...]:
    return (r.kind, r.ref, r.actor, r.decision, r.via, r.accepted, r.source, r.count)


async def test_the_export_holds_every_decision_across_continue_as_new(
    conversation: Conversation,
) -> None:
    records = await export_audit(conversation.client, conversation.workflow_id)
    c1, c2 = conversation.calls
    assert [_essence(r) for r in records] == [
        ("skill_decision", c1, "mallory", "approved", "update", False, "update", 1),
        ("skill_decision", "call_guess", "eve", "approved", "signal", False, "signal", 1),
        ("skill_decision", c1, "alice", "approved", "update", True, "update", 1),
        ("decision_applied", c1, "alice", "approved", "api", True, "workflow", 1),
        ("skill_decision", c2, "bob", "rejected", "signal", True, "signal", 1),
        ("decision_applied", c2, "bob", "rejected", "api", True, "workflow", 1),
    ]
    assert [r.seq for r in records] == list(range(1, 7))
    assert len({r.run_id for r in records}) == 2, "both runs contribute, none twice"
    mallory, eve, alice, _, bob, _ = records
    assert (mallory.refusal or "").startswith(errors.INVALID_SIGNATURE + ":")
    assert mallory.update_id and mallory.handler == "decide_skill"
    assert eve.handler == "skill_decision" and eve.auth is None and eve.auth_method is None
    for signed_record in (alice, bob):
        assert signed_record.auth == "jwt (key inbox-1)"
        assert (signed_record.auth_method, signed_record.key_id) == ("jwt", "inbox-1")
        assert signed_record.groups == ["ops"]
    assert alice.reason == "ok" and bob.reason == "no"
    assert all(a.at <= b.at for a, b in itertools.pairwise(records))


async def test_the_worker_logs_each_entry_once_as_one_json_line(
    conversation: Conversation,
) -> None:
    records = await export_audit(conversation.client, conversation.workflow_id)
    lines = [json.loads(line) for line in conversation.log_lines]
    assert all(line.pop("log") == "genie.audit" for line in lines)
    logged = [AuditRecord.model_validate(line) for line in lines]
    assert [_essence(r) for r in logged] == [_essence(r) for r in records]
    assert [r.run_id for r in logged] == [r.run_id for r in records]


async def test_jsonl_and_csv_follow_the_schema(conversation: Conversation) -> None:
    import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extras

    records = await export_audit(conversation.client, conversation.workflow_id)
    schema = audit_schema()
    rows = [json.loads(line) for line in to_jsonl(records).splitlines()]
    for row in rows:
        jsonschema.validate(row, schema)
    table = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert list(table[0]) == CSV_FIELDS
    assert [(t["kind"], t["actor"], t["accepted"]) for t in table] == [
        (r["kind"], r["actor"], "true" if r["accepted"] else "false") for r in rows
    ]
    assert table[2]["groups"] == "ops"


async def test_geniectl_audit_exports_jsonl_and_csv(
    conversation: Conversation, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GENIE_PAYLOAD")},
        "TEMPORAL_ADDRESS": address(temporal_env),
        "GENIE_PAYLOAD_KEYS": f"{K2},{K1}",
    }
    wid = conversation.workflow_id
    jl = await geniectl(env, "audit", wid, "--all-runs", "--format", "jsonl")
    assert jl.code == 0, jl.stderr
    rows = [json.loads(line) for line in jl.stdout.splitlines()]
    assert [r["actor"] for r in rows] == ["mallory", "eve", "alice", "alice", "bob", "bob"]
    cs = await geniectl(env, "audit", wid, "--format", "csv")
    assert cs.code == 0, cs.stderr
    assert [r["actor"] for r in csv.DictReader(io.StringIO(cs.stdout))] == [
        r["actor"] for r in rows
    ]
    # Without the keys: one line saying what is missing, no traceback.
    env_no_keys = {k: v for k, v in env.items() if k != "GENIE_PAYLOAD_KEYS"}
    bare = await geniectl(env_no_keys, "audit", wid)
    assert bare.code == 2 and "GENIE_PAYLOAD_KEYS" in bare.stderr
    assert "Traceback" not in bare.stderr
    wrong = await geniectl({**env, "GENIE_PAYLOAD_KEYS": K1}, "audit", wid)
    assert wrong.code == 2 and "key 'k2'" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = await geniectl(env, "audit", f"no-such-{uuid.uuid4()}")
    assert missing.code == 3
    schema = await geniectl(env, "audit", "--schema")
    assert json.loads(schema.stdout) == json.loads(json.dumps(audit_schema()))
    assert sys.executable  # the CLI ran from this virtualenv
