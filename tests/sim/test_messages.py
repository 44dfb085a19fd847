"""E5 (send), E6 (history), E7 (upload) and the SSE wire format."""

from __future__ import annotations

import json
import re

from tests.services import SimProcess
from tests.sim.conftest import Api, data_of, stats_of, types
from tests.sim.test_conversations import ISO_RE, assert_error

ENVELOPE = {
    "type",
    "event_id",
    "conversation_id",
    "genie_handle",
    "genie_run_id",
    "seq_num",
    "created_at",
}


async def test_plain_message_stream_and_wire_format(api: Api) -> None:
    cid = await api.create()
    frames = await api.raw_frames(
        "POST", f"/conversations/{cid}/messages", json={"message": "hello genie", "stream": True}
    )
    assert [f.event for f in frames] == [
        "processing.started",
        "agent.message",
        "processing.finished",
    ]
    run_ids = set()
    created = []
    for seq, frame in enumerate(frames, start=1):
        assert [line.split(":", 1)[0] for line in frame.lines] == ["id", "event", "data"]
        data = frame.data
        assert set(data) >= ENVELOPE
        assert data["type"] == frame.event
        assert data["event_id"] == frame.field("id")
        assert data["event_id"].startswith("evt_")
        assert data["seq_num"] == seq
        assert data["conversation_id"] == cid
        assert data["genie_handle"] == api.handle
        assert ISO_RE.match(data["created_at"])
        run_ids.add(data["genie_run_id"])
        created.append(data["created_at"])
    assert len(run_ids) == 1
    assert run_ids.pop().startswith("run_")
    assert created == sorted(created)
    assert len(set(created)) == len(created)
    assert frames[1].data["message"] == "You said: hello genie"
    assert frames[1].data["message_id"].startswith("msg_")


async def test_stream_response_headers(api: Api) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "hi") as reader:
        assert reader.response.headers["content-type"].startswith("text/event-stream")
        assert reader.response.headers["x-request-id"]
        await reader.rest()


async def test_non_streaming_send_is_202_ack(api: Api) -> None:
    cid = await api.create()
    r = await api.request(
        "POST", f"/conversations/{cid}/messages", json={"message": "hi", "stream": False}
    )
    assert r.status_code == 202
    body = r.json()
    assert body["conversation_id"] == cid
    assert body["genie_run_id"].startswith("run_")
    await api.wait_state(cid, "idle")
    async with api.reconnect(cid, body["genie_run_id"]) as reader:
        assert types(await reader.rest())[-1] == "processing.finished"


async def test_stream_defaults_to_accept_header(api: Api) -> None:
    cid = await api.create()
    async with api.stream(
        "POST", f"/conversations/{cid}/messages", json={"message": "hi"}
    ) as reader:
        assert types(await reader.rest()) == [
            "processing.started",
            "agent.message",
            "processing.finished",
        ]
    r = await api.request("POST", f"/conversations/{cid}/messages", json={"message": "hi"})
    assert r.status_code == 202


async def test_busy_409_while_running_and_while_paused(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    async with api.send_stream(cid, "confirm:pto") as reader:
        call = data_of((await reader.until("skill.confirmation_required"))[-1])["call_id"]
        r = await api.request("POST", f"/conversations/{cid}/messages", json={"message": "again"})
        assert_error(r, 409, "conversation_busy")
        assert (await api.decide(cid, call, {"resolution": "approved"})).status_code == 200
        await reader.rest()
    cid2 = await api.create()
    await api.post_message(cid2, "delay:200 steps:1")
    r = await api.request("POST", f"/conversations/{cid2}/messages", json={"message": "again"})
    assert_error(r, 409, "conversation_busy")
    stats = stats_of(sim, cid)
    assert (stats["message_posts"], stats["messages_accepted"]) == (2, 1)


async def test_message_validation(api: Api, sim: SimProcess) -> None:
    cid = await api.create()
    path = f"/conversations/{cid}/messages"
    assert_error(
        await api.request("POST", path, json={"message": "x" * 12_289}), 400, "message_too_long"
    )
    assert_error(await api.request("POST", path, json={"message": ""}), 400, "message_empty")
    assert_error(await api.request("POST", path, json={"message": "  \n"}), 400, "message_empty")
    assert_error(await api.request("POST", path, json={}), 400, "message_empty")
    assert_error(await api.request("POST", path, json={"message": 5}), 400, "invalid_request")
    assert_error(await api.request("POST", path, content=b"not json"), 400, "invalid_request")
    assert_error(
        await api.request("POST", path, json={"message": "x", "file_id": "file_nope"}),
        400,
        "invalid_file_id",
    )
    stats = stats_of(sim, cid)
    assert (stats["message_posts"], stats["messages_accepted"]) == (7, 0)
    # The limit is inclusive, and an empty file_id means "no file".
    r = await api.request(
        "POST", path, json={"message": "y" * 12_288, "file_id": "", "stream": False}
    )
    assert r.status_code == 202


async def test_history_newest_first_with_pagination(api: Api) -> None:
    cid = await api.create()
    await api.run_to_end(cid, "first")
    second = await api.run_to_end(cid, "second")
    run2 = data_of(second[0])["genie_run_id"]
    page1 = await api.messages(cid, limit=3)
    assert [m["content"] for m in page1["messages"]] == [
        "You said: second",
        "second",
        "You said: first",
    ]
    assert [m["source"] for m in page1["messages"]] == ["genie", "user", "genie"]
    assert page1["messages"][0]["genie_run_id"] == run2 == page1["messages"][1]["genie_run_id"]
    assert page1["total_count"] == 4
    page2 = await api.messages(cid, limit=3, cursor=page1["cursor"])
    assert [m["content"] for m in page2["messages"]] == ["first"]
    assert page2["cursor"] is None
    item = page2["messages"][0]
    assert set(item) == {"message_id", "source", "content", "genie_run_id", "created_at"}
    stamps = [m["created_at"] for m in page1["messages"] + page2["messages"]]
    assert stamps == sorted(stamps, reverse=True)


async def test_history_has_every_genie_message(api: Api) -> None:
    cid = await api.create()
    events = await api.run_to_end(cid, "steps:2")
    said = [data_of(e)["message"] for e in events if e.event == "agent.message"]
    history = await api.messages(cid)
    genie = [m["content"] for m in history["messages"] if m["source"] == "genie"]
    assert genie == said[::-1]
    ids = {data_of(e)["message_id"] for e in events if e.event == "agent.message"}
    assert ids == {m["message_id"] for m in history["messages"] if m["source"] == "genie"}


async def test_upload_then_send_with_file_id(api: Api) -> None:
    cid = await api.create()
    r = await api.request(
        "POST",
        f"/conversations/{cid}/upload",
        files={"file": ("notes.txt", b"hello", "text/plain")},
    )
    assert r.status_code == 200, r.text
    file_id = r.json()["file_id"]
    assert file_id.startswith("file_")
    async with api.stream(
        "POST",
        f"/conversations/{cid}/messages",
        json={"message": "see attached", "stream": True, "file_id": file_id},
    ) as reader:
        await reader.rest()
    user_message = (await api.messages(cid))["messages"][-1]
    assert user_message["file_id"] == file_id
    # A file belongs to the conversation it was uploaded to.
    other = await api.create()
    r = await api.request(
        "POST", f"/conversations/{other}/messages", json={"message": "x", "file_id": file_id}
    )
    assert_error(r, 400, "invalid_file_id")


async def test_upload_errors(api: Api) -> None:
    cid = await api.create()
    path = f"/conversations/{cid}/upload"
    big = b"\0" * (20 * 1024 * 1024 + 1)
    r = await api.request(
        "POST", path, files={"file": ("big.bin", big, "application/octet-stream")}
    )
    assert_error(r, 413, "file_too_large")
    exactly = b"\0" * (20 * 1024 * 1024)
    r = await api.request(
        "POST", path, files={"file": ("ok.bin", exactly, "application/octet-stream")}
    )
    assert r.status_code == 200
    r = await api.request("POST", path, files={"other": ("a.txt", b"x", "text/plain")})
    assert_error(r, 400, "invalid_request")
    assert_error(await api.request("POST", path, json={"file": "x"}), 400, "invalid_request")


async def test_data_lines_are_single_line_json(api: Api) -> None:
    cid = await api.create()
    text = 'line one\nline "two"\r\n\u2028 unicode ✓'
    frames = await api.raw_frames(
        "POST", f"/conversations/{cid}/messages", json={"message": text, "stream": True}
    )
    reply = frames[1]
    assert len([line for line in reply.lines if line.startswith("data:")]) == 1
    assert reply.data["message"] == f"You said: {text}"
    assert json.loads(reply.field("data") or "") == reply.data
    assert re.fullmatch(r"evt_[0-9a-f]+", reply.data["event_id"])
