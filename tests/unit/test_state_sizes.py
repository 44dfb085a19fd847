"""State and answers are bounded in bytes, whatever the texts they hold."""

from __future__ import annotations

from datetime import UTC, datetime

from workflows._state import (
    CARRY_BUDGET_BYTES,
    RETAINED_TURN_BYTES,
    ConversationData,
    bounded_for_carry,
    fit_audit,
    fit_status,
    json_bytes,
    retain_finished,
)
from workflows.models import (
    MAX_MESSAGE_CHARS,
    MAX_REASON_CHARS,
    AuditEntry,
    ConversationStatus,
    TurnRecord,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ESCAPED = "\x01" * MAX_REASON_CHARS
"""The longest reason, 6 bytes of JSON per character."""


def entry(i: int) -> AuditEntry:
    return AuditEntry(
        at=T0, kind="skill_decision", ref=f"c{i}", actor="a", reason=ESCAPED, via="update"
    )


def test_retained_turns_are_bounded_in_bytes_not_characters() -> None:
    d = ConversationData()
    emoji = "\U0001f600" * MAX_MESSAGE_CHARS  # 12,288 characters, 49,152 bytes
    for n in range(1, 21):
        retain_finished(d, TurnRecord(turn=n, text=emoji, status="completed", reply=emoji))
    assert sum(map(json_bytes, d.turns)) <= RETAINED_TURN_BYTES
    assert d.turns[-1].turn == 20


def test_a_full_audit_of_long_reasons_is_trimmed_to_fit_the_carry() -> None:
    d = ConversationData(audit=[entry(i) for i in range(200)])
    assert json_bytes(d) > 2 * 1024 * 1024  # the payload limit, were it carried as is
    bounded_for_carry(d)
    assert json_bytes(d) <= CARRY_BUDGET_BYTES
    assert d.audit[-1].ref == "c199" and d.audit_dropped == 200 - len(d.audit)


def test_fit_audit_keeps_the_newest_entries_within_the_budget() -> None:
    trail = [entry(i) for i in range(10)]
    one = json_bytes(trail[0])
    kept, left_out = fit_audit(trail, 3 * one + 1)
    assert [e.ref for e in kept] == ["c7", "c8", "c9"] and left_out == 7
    assert fit_audit(trail, 10**9) == (trail, 0)


def test_a_status_answer_fits_the_query_budget() -> None:
    st = ConversationStatus(
        state="idle",
        conversation_id="c",
        genie_handle="g",
        user_id="u",
        turn=3,
        audit=[entry(i) for i in range(250)],
        audit_dropped=4,
    )
    budget = 1_000_000
    fitted = fit_status(st, budget)
    assert json_bytes(fitted) <= budget < json_bytes(st)
    assert fitted.audit[-1].ref == "c249"
    assert fitted.audit_dropped == 4 + 250 - len(fitted.audit)
    assert fit_status(fitted, budget) == fitted
