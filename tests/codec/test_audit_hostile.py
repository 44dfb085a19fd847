"""The audit trail under a hostile signal: whoever may signal a conversation controls
the raw ``proof`` of a decision signal (signals are decoded leniently, so even a
malformed one is audited). Its fields must neither blow up the worker's audit log line
nor make the conversation's audit export fail."""

from __future__ import annotations

import json
import logging
import uuid

from temporalio.testing import WorkflowEnvironment

from genie_api import GenieClient
from genie_codec._tap import AuditLogInterceptor
from genie_codec.audit import export_audit
from tests.codec.conftest import K1, codec_client
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.workflow.helpers import convs, eventually, start
from worker import build_worker
from workflows import GenieConversation


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _count(lines: list[str]) -> int:
    return len(lines)


async def test_a_forged_proof_is_audited_bounded_and_does_not_break_the_export(
    temporal_env: WorkflowEnvironment, sim: SimProcess, genie: GenieClient
) -> None:
    logger = logging.getLogger(f"test.audit.hostile.{uuid.uuid4().hex}")
    logger.propagate = False
    handler = _Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    client = await codec_client(temporal_env, K1, interceptors=[AuditLogInterceptor(logger)])
    tq = f"test-audit-hostile-{uuid.uuid4()}"
    api = convs(client, tq)
    async with build_worker(client, worker_settings(sim), genie, task_queue=tq):
        wid = await start(api)
        res = await api.ask(wid, "confirm:send_email")
        call = res.pending.approvals[0].call_id
        forged = {
            "call_id": call,
            "approved": True,
            "approver": "eve",
            "proof": {
                "key_id": {"not": ["a", "string"]},
                "auth_method": "j" * 300_000,
                "groups": ["g" * 1000] * 500 + [7, None, {"x": 1}],
            },
        }
        await api.handle(wid).signal(GenieConversation.skill_decision, forged)
        await eventually(lambda: _count(handler.lines), bool, what="the audit line")
        records = await export_audit(client, wid)
    (line,) = handler.lines
    assert len(line) < 20_000, f"a {len(line)}-character audit line"
    logged = json.loads(line)
    assert logged["handler"] == "skill_decision" and logged["actor"] == "eve"
    assert isinstance(logged["groups"], list) and len(logged["groups"]) <= 50
    assert all(isinstance(g, str) and len(g) <= 200 for g in logged["groups"])
    assert logged["key_id"] is None or isinstance(logged["key_id"], str)
    (record,) = records
    assert record.actor == "eve" and record.accepted is False
    assert record.auth is None  # nothing was verified
