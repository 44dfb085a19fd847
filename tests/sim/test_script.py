"""Pure unit tests: the script language, reply texts, clock/ids, fault specs, multipart."""

from __future__ import annotations

import pytest

from genie_sim._clock import Clock, IdFactory, iso, parse_iso
from genie_sim._faults import FaultBook, parse_fault
from genie_sim._multipart import boundary_of, find_part
from genie_sim._script import (
    MAX_PARAMS_KIB,
    MAX_STEPS,
    Confirm,
    Connect,
    Delay,
    Fail,
    Outcome,
    Say,
    final_reply,
    parse_script,
    skill_id,
    skill_parameters,
)


def test_plain_message_has_no_steps() -> None:
    script = parse_script("hello there")
    assert script.steps == ()
    assert script.interrupt_after is None
    assert script.text == "hello there"


def test_tokens_in_order_of_appearance() -> None:
    script = parse_script("do fail:bad then confirm:pto connect:Salesforce delay:20 steps:2")
    assert script.steps == (
        Fail("bad"),
        Confirm("pto"),
        Connect("Salesforce"),
        Delay(20),
        Say("step 1 of 2"),
        Say("step 2 of 2"),
    )


def test_interrupt_is_run_level_and_last_wins() -> None:
    script = parse_script("interrupt:3 steps:1 interrupt:5")
    assert script.steps == (Say("step 1 of 1"),)
    assert script.interrupt_after == 5


@pytest.mark.parametrize(
    "text", ["steps:abc", "delay:-5", "interrupt:x", "steps:1.5", "reconfirm:x", "confirm:"]
)
def test_invalid_or_embedded_tokens_are_plain_text(text: str) -> None:
    assert parse_script(text).steps == ()
    assert parse_script(text).interrupt_after is None


def test_token_values_keep_punctuation_and_case() -> None:
    assert parse_script("(confirm:Submit_PTO.)").steps == (Confirm("Submit_PTO.)"),)


def test_steps_and_delay_are_capped() -> None:
    assert len(parse_script("steps:99999999").steps) == MAX_STEPS
    assert parse_script("delay:99999999").steps == (Delay(3_600_000),)


def test_params_adds_a_body_of_that_many_kib_to_confirmations() -> None:
    plain = parse_script("please confirm:send_email")
    assert skill_parameters(plain) == {"query": "please confirm:send_email"}
    big = parse_script("confirm:send_email params:3 params:20")  # the last wins
    params = skill_parameters(big)
    assert params["query"] == "confirm:send_email params:3 params:20"
    assert isinstance(params["body"], str) and len(params["body"]) == 20 * 1024
    huge = skill_parameters(parse_script(f"confirm:x params:{10**9}"))
    assert isinstance(huge["body"], str) and len(huge["body"]) == MAX_PARAMS_KIB * 1024
    assert "body" not in skill_parameters(parse_script("confirm:x params:lots"))


def test_steps_zero_adds_nothing() -> None:
    assert parse_script("steps:0").steps == ()


def test_final_reply_plain() -> None:
    assert final_reply("hi", Outcome()) == "You said: hi"


def test_final_reply_names_skills_and_quotes_reasons() -> None:
    outcome = Outcome(
        ran=["pto", "Salesforce"],
        failed=["bad"],
        rejected=[("wire", "too expensive"), ("mail", None)],
        declined=["Jira"],
    )
    reply = final_reply("msg", outcome)
    assert reply.startswith("You said: msg")
    assert "Skills run: pto, Salesforce." in reply
    assert "Skills failed: bad." in reply
    assert 'I did not run wire because you rejected it: "too expensive".' in reply
    assert "I did not run mail because you rejected it (no reason given)." in reply
    assert "The connection to Jira was declined" in reply


def test_skill_id_is_stable_and_recipe_shaped() -> None:
    assert skill_id("pto") == skill_id("pto")
    assert skill_id("pto").startswith("recipe:")
    assert skill_id("pto") != skill_id("other")


def test_clock_stamps_strictly_increase_even_when_time_stands_still(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("genie_sim._clock.time.time_ns", lambda: 1_700_000_000_000_000_000)
    clock = Clock()
    stamps = [clock.stamp() for _ in range(5)]
    assert stamps == sorted(set(stamps))
    assert len({iso(s) for s in stamps}) == 5


def test_clock_advance_moves_now_forward_only() -> None:
    clock = Clock()
    before = clock.now_us()
    clock.advance(3600)
    assert clock.now_us() - before >= 3600 * 1_000_000
    assert clock.offset_seconds == 3600
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)


def test_iso_round_trip_and_lenient_parsing() -> None:
    us = 1_780_000_000_123_456
    text = iso(us)
    assert text.endswith("Z")
    assert len(text.split(".")[1]) == 7
    assert parse_iso(text) == us
    assert parse_iso("2026-06-08T12:35:02.48Z") == parse_iso("2026-06-08T12:35:02.480000+00:00")
    assert parse_iso("2026-06-08T12:35:02.123456789Z") == parse_iso("2026-06-08T12:35:02.123456Z")
    assert parse_iso("2026-06-08T14:35:02+02:00") == parse_iso("2026-06-08T12:35:02Z")
    with pytest.raises(ValueError, match="yesterday"):
        parse_iso("yesterday")


def test_ids_are_monotonic_and_prefixed() -> None:
    ids = IdFactory()
    made = [ids.new("evt") for _ in range(20)]
    assert made == sorted(made)
    assert all(i.startswith("evt_") for i in made)
    assert len(set(made)) == 20


def test_fault_validation() -> None:
    fault = parse_fault({"endpoint": "send_message", "status": 503, "retry_after": 1.5}, 1)
    assert fault.times == 1
    assert fault.replaces_answer
    for bad in (
        {"endpoint": "nope", "status": 503},
        {"endpoint": "events"},
        {"endpoint": "events", "status": 503, "html_200": True},
        {"endpoint": "events", "malformed": "weird"},
        {"endpoint": "events", "status": 200},
        {"endpoint": "events", "status": 503, "times": 0},
        {"endpoint": "events", "drop_after_events": 1, "retry_after": 1},
        {"endpoint": "events", "status": 503, "surprise": 1},
    ):
        with pytest.raises(ValueError, match=r"\w"):
            parse_fault(bad, 1)


def test_fault_book_consumes_in_order_and_filters_by_conversation() -> None:
    book = FaultBook()
    book.add({"endpoint": "events", "status": 500, "times": 2, "conversation_id": "c1"})
    book.add({"endpoint": "events", "status": 503})
    assert book.take("events", "c2") is not None  # the unfiltered 503
    assert book.take("events", "c2") is None
    first = book.take("events", "c1")
    assert first is not None
    assert first.status == 500
    assert book.take("events", "c1") is not None
    assert book.take("events", "c1") is None
    assert book.active() == []


def test_multipart_parsing() -> None:
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="other"\r\n\r\nvalue\r\n'
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\nworld\r\n"
        b"--XyZ--\r\n"
    )
    boundary = boundary_of('multipart/form-data; boundary="XyZ"')
    assert boundary == b"XyZ"
    part = find_part(body, boundary, "file")
    assert part is not None
    assert (part.filename, part.content_type, part.content) == (
        "a.txt",
        "text/plain",
        b"hello\r\nworld",
    )
    assert find_part(body, boundary, "missing") is None
    assert boundary_of("application/json") is None
