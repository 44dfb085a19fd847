"""The scripted genie: every directive, their combinations, and E10-E14."""

from __future__ import annotations

import time

from tests.services import SimProcess
from tests.sim.conftest import Api, data_of, stats_of, types
from tests.sim.test_conversations import assert_error


async def test_confirm_approved(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "please confirm:submit_pto") as reader:
        head = await reader.until("skill.confirmation_required")
        assert types(head) == ["processing.started", "skill.confirmation_required"]
        card = data_of(head[-1])
        assert card["skill_name"] == "submit_pto"
        assert card["skill_id"].startswith("recipe:")
        assert card["call_id"].startswith("call_")
        assert card["skill_parameters"] == {"query": "please confirm:submit_pto"}
        assert card["skill_parameter_schema"][0]["name"] == "query"
        r = await api.decide(cid, card["call_id"], {"resolution": "approved"})
        assert r.status_code == 200
        assert r.content == b""
        tail = await reader.rest()
    assert types(tail) == [
        "skill.running",
        "skill.completed",
        "agent.message",
        "processing.finished",
    ]
    assert data_of(tail[0])["skill_name"] == "submit_pto"
    assert "Skills run: submit_pto." in data_of(tail[2])["message"]
    again = await api.decide(cid, card["call_id"], {"resolution": "approved"})
    assert_error(again, 409, "skill_call_already_resolved")
    stats = stats_of(sim, cid)
    assert stats["skill_decision_posts"] == {card["call_id"]: 2}
    assert stats["skill_decisions_applied"] == {card["call_id"]: 1}


async def test_confirm_rejected_quotes_reason(api: Api) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "confirm:wire_money") as reader:
        call = data_of((await reader.until("skill.confirmation_required"))[-1])["call_id"]
        r = await api.decide(cid, call, {"resolution": "rejected", "rejection_reason": "Too risky"})
        assert r.status_code == 200
        tail = await reader.rest()
    assert types(tail) == ["agent.message", "processing.finished"]
    assert 'wire_money because you rejected it: "Too risky"' in data_of(tail[0])["message"]


async def test_skill_approval_errors(api: Api) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "confirm:a") as reader:
        call = data_of((await reader.until("skill.confirmation_required"))[-1])["call_id"]
        assert_error(
            await api.decide(cid, "call_unknown", {"resolution": "approved"}), 404, "call_not_found"
        )
        assert_error(await api.decide(cid, call, {"resolution": "maybe"}), 400, "invalid_request")
        assert_error(await api.decide(cid, call, {}), 400, "invalid_request")
        other = await api.create()
        assert_error(
            await api.decide(other, call, {"resolution": "approved"}), 404, "call_not_found"
        )
        assert (await api.decide(cid, call, {"resolution": "rejected"})).status_code == 200
        assert types(await reader.rest())[-1] == "processing.finished"
    assert_error(
        await api.decide(cid, call, {"resolution": "rejected"}), 409, "skill_call_already_resolved"
    )


async def test_connect_via_auth_link(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "connect:Salesforce") as reader:
        head = await reader.until("runtime_connection.auth_required")
        card = data_of(head[-1])
        attempt = card["runtime_connection_attempt_id"]
        assert attempt.startswith("rca_")
        link = card["auth_link"]
        assert link["connector_name"] == "Salesforce"
        assert link["url"].startswith(f"{sim.base_url}/_sim/connect/{attempt}?token=")
        assert link["expires_at"].endswith("Z")
        assert (await api.conversation(cid))["state"] == "awaiting_approval"
        opened = await api.client.get(link["url"])
        assert opened.status_code == 200
        assert "text/html" in opened.headers["content-type"]
        tail = await reader.rest()
    assert types(tail) == [
        "runtime_connection.auth_success",
        "skill.running",
        "skill.completed",
        "agent.message",
        "processing.finished",
    ]
    assert data_of(tail[0])["runtime_connection_attempt_id"] == attempt
    assert "Skills run: Salesforce." in data_of(tail[3])["message"]
    # One-time link; the attempt now reports authorized; rejecting is too late.
    assert (await api.client.get(link["url"])).status_code == 409
    r = await api.request("POST", f"/runtime_connection/{attempt}/link")
    assert r.status_code == 200
    assert r.json() == {"status": "authorized"}
    r = await api.request("POST", f"/runtime_connection/{attempt}/reject")
    assert_error(r, 409, "connection_already_resolved")
    # auth_success is ephemeral: not in E9.
    persisted = [e["type"] for e in (await api.events(conversation_id=cid))["events"]]
    assert "runtime_connection.auth_success" not in persisted
    assert "skill.completed" in persisted
    stats = stats_of(sim, cid)
    assert stats["auth_link_posts"] == {attempt: 1}
    assert stats["connection_reject_posts"] == {attempt: 1}


async def test_auth_link_endpoint_gives_fresh_one_time_links(api: Api) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "connect:Jira") as reader:
        card = data_of((await reader.until("runtime_connection.auth_required"))[-1])
        attempt = card["runtime_connection_attempt_id"]
        r = await api.request("POST", f"/runtime_connection/{attempt}/link")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "auth_required"
        assert body["auth_link"]["url"] != card["auth_link"]["url"]
        assert body["auth_link"]["connector_name"] == "Jira"
        bad = body["auth_link"]["url"].split("token=")[0] + "token=forged"
        assert (await api.client.get(bad)).status_code == 404
        assert (
            await api.client.get(f"{api.base_url}/_sim/connect/rca_nope?token=x")
        ).status_code == 404
        assert (await api.client.get(body["auth_link"]["url"])).status_code == 200
        assert types(await reader.rest())[0] == "runtime_connection.auth_success"


async def test_connection_rejected(api: Api) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "connect:Workday") as reader:
        card = data_of((await reader.until("runtime_connection.auth_required"))[-1])
        attempt = card["runtime_connection_attempt_id"]
        r = await api.request(
            "POST", f"/runtime_connection/{attempt}/reject", json={"reason": "no"}
        )
        assert r.status_code == 204
        tail = await reader.rest()
    assert types(tail) == ["agent.message", "processing.finished"]
    assert "The connection to Workday was declined" in data_of(tail[0])["message"]
    r = await api.request("POST", f"/runtime_connection/{attempt}/reject")
    assert_error(r, 409, "connection_already_resolved")
    r = await api.request("POST", f"/runtime_connection/{attempt}/link")
    assert_error(r, 409, "connection_already_resolved")
    assert (await api.client.get(card["auth_link"]["url"])).status_code == 409


async def test_connection_endpoints_unknown_or_foreign_attempt(api: Api) -> None:
    for action in ("link", "reject"):
        r = await api.request("POST", f"/runtime_connection/rca_nope/{action}")
        assert_error(r, 404, "connection_not_found")
    cid = await api.create()
    async with api.send_stream(cid, "connect:Box") as reader:
        attempt = data_of((await reader.until("runtime_connection.auth_required"))[-1])[
            "runtime_connection_attempt_id"
        ]
        r = await api.other(user="stranger").request("POST", f"/runtime_connection/{attempt}/link")
        assert_error(r, 404, "connection_not_found")
        await api.request("POST", f"/runtime_connection/{attempt}/reject")
        await reader.rest()


async def test_fail(api: Api) -> None:
    cid = await api.create()
    events = await api.run_to_end(cid, "fail:payroll_sync")
    assert types(events) == [
        "processing.started",
        "skill.running",
        "skill.failed",
        "agent.message",
        "agent.message",
        "processing.finished",
    ]
    assert data_of(events[2])["error"] == "Simulated failure of payroll_sync"
    assert data_of(events[3])["message"].startswith("Sorry, payroll_sync failed")
    assert "Skills failed: payroll_sync." in data_of(events[4])["message"]


async def test_steps(api: Api) -> None:
    cid = await api.create()
    events = await api.run_to_end(cid, "steps:3")
    messages = [data_of(e)["message"] for e in events if e.event == "agent.message"]
    assert messages == ["step 1 of 3", "step 2 of 3", "step 3 of 3", "You said: steps:3"]
    assert [data_of(e)["seq_num"] for e in events] == list(range(1, 7))


async def test_delay_applies_from_its_position_on(api: Api) -> None:
    cid = await api.create()
    started = time.monotonic()
    events = await api.run_to_end(cid, "steps:2 delay:100 steps:1")
    elapsed = time.monotonic() - started
    # Delayed: the third step, the final reply and processing.finished.
    assert elapsed >= 0.3
    assert len(events) == 1 + 3 + 1 + 1


async def test_interrupt_ends_every_stream_after_k_events(api: Api) -> None:
    cid = await api.create()
    collected = []
    async with api.send_stream(cid, "steps:4 interrupt:2") as reader:
        first = await reader.rest()
    assert types(first) == ["processing.started", "agent.message", "system.stream_interrupted"]
    cut = data_of(first[-1])
    assert cut["reason"] == "scripted_interrupt"
    assert cut["last_seq_num"] == 2
    assert cut["retry_after_ms"] == 100
    assert cut["genie_run_id"] == data_of(first[0])["genie_run_id"]
    assert first[-1].id == first[1].id  # the interruption carries no id of its own
    collected += first[:-1]
    run_id = cut["genie_run_id"]
    while collected[-1].event != "processing.finished":
        async with api.reconnect(cid, run_id, data_of(collected[-1])["event_id"]) as reader:
            part = await reader.rest()
        assert len(part) <= 3
        collected += [e for e in part if e.event != "system.stream_interrupted"]
    assert [data_of(e)["seq_num"] for e in collected] == list(range(1, 8))
    # A reconnect without Last-Event-ID is interrupted after k events too.
    async with api.reconnect(cid, run_id) as reader:
        assert types(await reader.rest()) == [
            "processing.started",
            "agent.message",
            "system.stream_interrupted",
        ]


async def test_directives_combine_in_order(api: Api) -> None:
    cid = await api.create()
    message = "delay:10 steps:1 confirm:approve_me fail:flaky confirm:deny_me connect:Slack"
    async with api.send_stream(cid, message) as reader:
        events = await reader.until("skill.confirmation_required")
        call = data_of(events[-1])["call_id"]
        assert (await api.decide(cid, call, {"resolution": "approved"})).status_code == 200
        more = await reader.until("skill.confirmation_required")
        call2 = data_of(more[-1])["call_id"]
        r = await api.decide(
            cid, call2, {"resolution": "rejected", "rejection_reason": "not today"}
        )
        assert r.status_code == 200
        more += await reader.until("runtime_connection.auth_required")
        link = data_of(more[-1])["auth_link"]["url"]
        assert (await api.client.get(link)).status_code == 200
        events += more + await reader.rest()
    assert types(events) == [
        "processing.started",
        "agent.message",
        "skill.confirmation_required",
        "skill.running",
        "skill.completed",
        "skill.running",
        "skill.failed",
        "agent.message",
        "skill.confirmation_required",
        "runtime_connection.auth_required",
        "runtime_connection.auth_success",
        "skill.running",
        "skill.completed",
        "agent.message",
        "processing.finished",
    ]
    reply = data_of(events[-2])["message"]
    assert "Skills run: approve_me, Slack." in reply
    assert "Skills failed: flaky." in reply
    assert 'deny_me because you rejected it: "not today"' in reply


async def test_business_approval_has_no_scripted_calls(api: Api) -> None:
    cid = await api.create()
    path = f"/conversations/{cid}/business_approval/call_x"
    assert_error(
        await api.request("POST", path, json={"resolution": "approved"}), 404, "call_not_found"
    )
    assert_error(await api.request("POST", path, json={"resolution": "?"}), 400, "invalid_request")
    r = await api.request("POST", "/conversations/conv_nope/business_approval/call_x", json={})
    assert_error(r, 404, "conversation_not_found")


async def test_feedback(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    run_id = data_of((await api.run_to_end(cid, "hi"))[0])["genie_run_id"]
    path = f"/conversations/{cid}/genie-runs/{run_id}/feedback"
    r = await api.request("POST", path, json={"reaction": "positive", "comment": "great"})
    assert r.status_code == 204
    assert_error(await api.request("POST", path, json={"reaction": "meh"}), 400, "invalid_request")
    r = await api.request(
        "POST", f"/conversations/{cid}/genie-runs/run_nope/feedback", json={"reaction": "negative"}
    )
    assert_error(r, 404, "run_not_found")
    assert stats_of(sim, cid)["feedback_posts"] == 3
