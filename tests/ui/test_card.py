"""The Web UI's "current details" card: its markdown structure, contents and bounds.

The card is parsed with markdown-it (CommonMark) and checked at the token level. The Web
UI's own parser is stricter than CommonMark in one way that matters here: a list does not
interrupt a paragraph, so every list must start after a blank line (checked by
``_lists``); tests/browser checks the real rendering.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from workflows._ui import MAX_CARD_BYTES, MAX_ITEMS, details_card
from workflows.models import ErrorInfo, PendingApproval, PendingConnection

WID = "genie-conv-123"
T0 = datetime(2026, 1, 2, 12, 0, 3, tzinfo=UTC)
DEADLINE = "2026-01-03 12:00:03 UTC"

_md = MarkdownIt("commonmark")


def _approval(call_id: str = "call_1", **kw: object) -> PendingApproval:
    fields: dict[str, object] = {
        "call_id": call_id,
        "skill_name": "send_email",
        "skill_parameters": {"to": "bob@example.com"},
        "turn": 1,
        "requested_at": T0,
        "deadline": T0 + timedelta(days=1),
        **kw,
    }
    return PendingApproval.model_validate(fields)


def _connection(attempt_id: str = "att_1", **kw: object) -> PendingConnection:
    fields: dict[str, object] = {
        "attempt_id": attempt_id,
        "connector_name": "gmail",
        "auth_url": "https://auth.example.com/start?x=1",
        "auth_expires_at": T0 + timedelta(minutes=10),
        "turn": 2,
        "requested_at": T0,
        "deadline": T0 + timedelta(days=1),
        **kw,
    }
    return PendingConnection.model_validate(fields)


def _card(**kw: object) -> str:
    args: dict[str, object] = {
        "workflow_id": WID,
        "state": "awaiting_approval",
        "genie_handle": "gin-1",
        "conversation_id": "conv-1",
        "turn": 1,
        "queued": 0,
        "since": T0,
        "approvals": [_approval()],
        "connections": [],
        "last_error": None,
        **kw,
    }
    return details_card(**args)  # type: ignore[arg-type]


def _plain(inline: Token) -> str:
    """An inline token's text as a reader sees it (code spans included, no markup)."""
    parts = []
    for c in inline.children or []:
        if c.type in ("text", "code_inline", "html_inline"):
            parts.append(c.content)
        elif c.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts)


def _tokens(card: str) -> list[Token]:
    return _md.parse(card)


def _lists(card: str) -> list[list[str]]:
    """Every bullet list's items as plain text, checking each list starts after a blank
    line (the Web UI's parser shows a list glued to a paragraph as literal "- " text)."""
    lines = card.split("\n")
    out: list[list[str]] = []
    depth = 0
    for tok in _tokens(card):
        if tok.type == "bullet_list_open":
            assert tok.map is not None
            start = tok.map[0]
            assert start == 0 or lines[start - 1].strip() == "", (
                f"list at line {start} follows {lines[start - 1]!r} without a blank line"
            )
            depth += 1
            if depth == 1:
                out.append([])
        elif tok.type == "bullet_list_close":
            depth -= 1
        elif tok.type == "inline" and depth:
            out[-1].append(_plain(tok))
    return out


def _paragraphs(card: str) -> list[str]:
    toks = _tokens(card)
    return [
        _plain(toks[i + 1])
        for i, t in enumerate(toks)
        if t.type == "paragraph_open" and not t.hidden  # hidden: a tight list's item
    ]


def _item_with(items: list[str], prefix: str) -> str:
    found = [i for i in items if i.startswith(prefix)]
    assert len(found) == 1, (prefix, items)
    return found[0]


def test_an_approval_is_a_list_with_call_id_deadline_and_commands() -> None:
    card = _card()
    types = [t.type for t in _tokens(card)]
    assert types.count("bullet_list_open") == 1
    (items,) = _lists(card)
    assert _item_with(items, "call id:") == "call id: call_1"
    assert _item_with(items, "deadline:") == f"deadline: {DEADLINE}"
    assert (
        _item_with(items, "approve:") == f"approve: geniectl approve {WID} call_1 --approver <you>"
    )
    assert _item_with(items, "reject:").startswith(f"reject: geniectl reject {WID} call_1")
    signal = _item_with(items, "or:")
    assert "temporal workflow signal" in signal and "skill_decision" in signal
    assert '"call_id":"call_1"' in signal
    assert _item_with(items, "parameters:") == 'parameters: {"to": "bob@example.com"}'
    # No list-looking text left in a paragraph (what the Web UI showed before).
    assert not any(" - " in p or p.startswith("- ") for p in _paragraphs(card))
    headings = [t for t in _tokens(card) if t.type == "heading_open"]
    assert [h.tag for h in headings] == ["h3"]


def test_every_waiting_item_gets_its_own_list_in_order() -> None:
    card = _card(
        approvals=[_approval("call_1"), _approval("call_2", kind="business")],
        connections=[_connection("att_1")],
    )
    lists = _lists(card)
    assert [items[0] for items in lists] == [
        "call id: call_1",
        "call id: call_2",
        "attempt id: att_1",
    ]
    conn = lists[2]
    assert _item_with(conn, "deadline:") == f"deadline: {DEADLINE}"
    assert _item_with(conn, "after they have:") == (
        f"after they have: geniectl connect-done {WID} att_1 --actor <you>"
    )
    assert _item_with(conn, "decline:").startswith(f"decline: geniectl connect-reject {WID}")
    link = [t for t in _tokens(card) if t.type == "inline" and "auth link" in t.content]
    (anchor,) = [c for c in link[0].children or [] if c.type == "link_open"]
    assert anchor.attrs["href"] == "https://auth.example.com/start?x=1"
    paragraphs = _paragraphs(card)
    assert "Skill confirmation for send_email (turn 1)" in paragraphs
    assert "Business confirmation for send_email (turn 1)" in paragraphs
    assert "Runtime connection to gmail (turn 2)" in paragraphs


def test_an_auth_url_that_is_not_http_is_not_linked() -> None:
    card = _card(approvals=[], connections=[_connection(auth_url="javascript:alert(1)")])
    assert not [t for t in _tokens(card) if t.type == "inline" and "javascript" in t.content]
    assert "the link is not shown here" in card


@pytest.mark.parametrize("approvers", [None, []])
def test_anyone_may_decide_without_policy_approvers(approvers: list[str] | None) -> None:
    assert "Who may decide: anyone with access to this namespace" in _paragraphs(
        _card(approvers=approvers)
    )


def test_the_policy_approvers_are_named() -> None:
    paragraphs = _paragraphs(_card(approvers=["alice", "bob_the_builder"]))
    assert "Who may decide: alice, bob_the_builder" in paragraphs
    many = _paragraphs(_card(approvers=[f"user{i}" for i in range(25)]))
    (who,) = [p for p in many if p.startswith("Who may decide")]
    assert who.endswith("user9 and 15 more")


def test_nobody_is_named_when_nothing_waits() -> None:
    card = _card(state="idle", approvals=[], since=None)
    assert "Who may decide" not in card
    assert _lists(card) == []
    assert _paragraphs(card)[0] == "genie gin-1 · conversation conv-1 · turn 1"


def test_a_decision_note_is_shown_in_its_items_list() -> None:
    note = "approved by alice, posting to the API, retrying (last error: 503 upstream)"
    card = _card(
        approvals=[_approval("call_1"), _approval("call_2")],
        connections=[_connection("att_1")],
        decision_notes={"call_2": note, "att_1": "done by bob, verifying"},
    )
    first, second, conn = _lists(card)
    assert not [i for i in first if i.startswith("progress:")]
    assert _item_with(second, "progress:") == f"progress: {note}"
    assert _item_with(conn, "progress:") == "progress: done by bob, verifying"


def test_a_note_for_an_item_no_longer_waiting_is_listed_on_its_own() -> None:
    card = _card(decision_notes={"call_9": "approved by carol, posting to the API"})
    (_, orphans) = _lists(card)
    assert orphans == ["call_9: approved by carol, posting to the API"]


def test_the_api_note_comes_right_after_the_summary() -> None:
    note = "API unreachable since 12:00:03 UTC, retrying"
    card = _card(api_note=note, last_error=ErrorInfo(type="ApiUnavailable", message="503"))
    paragraphs = _paragraphs(card)
    assert paragraphs.index(f"API: {note}") < paragraphs.index(
        "Skill confirmation for send_email (turn 1)"
    )
    assert paragraphs[-1] == "Last error: ApiUnavailable: 503"


def test_outside_text_renders_as_written_never_as_markup() -> None:
    nasty = "*bold* _it_ <b>x</b> [l](http://e) `tick` # h\n\n- not a list"
    card = _card(
        approvals=[_approval(skill_name="a`b``c")],
        decision_notes={"call_1": nasty},
        api_note=nasty,
        approvers=[nasty],
        last_error=ErrorInfo(type="T", message=nasty, error_code="e`1", request_id="r<1>"),
    )
    kinds = {c.type for t in _tokens(card) if t.type == "inline" for c in t.children or []}
    assert not kinds & {"em_open", "html_inline", "link_open"}
    flat = " ".join(nasty.split())
    (items,) = _lists(card)
    assert _item_with(items, "progress:") == f"progress: {flat}"
    paragraphs = _paragraphs(card)
    assert f"API: {flat}" in paragraphs
    assert f"Who may decide: {flat}" in paragraphs
    assert f"Last error: T e`1: {flat} (request r<1>)" in paragraphs
    assert "Skill confirmation for a`b``c (turn 1)" in paragraphs
    code = [c.content for t in _tokens(card) if t.type == "inline" for c in t.children or []]
    assert "a`b``c" in code


def test_characters_that_reorder_or_hide_text_show_as_escapes() -> None:
    sneaky = "evil@\u202emoc.elpmaxe pay\u200bpal"
    card = _card(
        approvals=[_approval(skill_name=sneaky, skill_parameters={"to": sneaky})],
        api_note=sneaky,
    )
    assert "\u202e" not in card and "\u200b" not in card
    assert "evil@\\u202emoc.elpmaxe pay\\u200bpal" in card


def test_parameters_too_long_to_keep_whole_say_so() -> None:
    (items,) = _lists(_card(approvals=[_approval(parameters_shortened=True)]))
    assert _item_with(items, "parameters:").endswith(
        "(too long to keep whole: shortened where marked …)"
    )
    (items,) = _lists(_card(approvals=[_approval()]))
    assert "shortened" not in _item_with(items, "parameters:")


def test_an_unknown_state_still_renders() -> None:
    card = _card(state="some_future_state", approvals=[])
    assert card.startswith("### Some future state\n\n")


def test_the_card_stays_bounded_however_much_waits() -> None:
    n = 10_000
    mb = "é" * 1_000_000  # one object shared by every item: the test itself stays small
    big = {"body": mb}
    long_id = "w" * 1_000
    approvals = [_approval(f"call_{i}", skill_parameters=big) for i in range(n)]
    url = "https://a/" + "x" * 100_000
    connections = [_connection(f"att_{i}", auth_url=url) for i in range(n)]
    started = time.perf_counter()
    card = _card(
        workflow_id=long_id,
        genie_handle=mb,
        approvals=approvals,
        connections=connections,
        approvers=[f"approver-{i}" * 30 for i in range(n)],
        decision_notes={f"call_{i}": mb for i in range(n)} | {f"gone_{i}": mb for i in range(n)},
        api_note=mb,
        last_error=ErrorInfo(type=mb, message=mb),
    )
    elapsed = time.perf_counter() - started
    assert len(card.encode()) <= MAX_CARD_BYTES
    assert elapsed < 2.0, f"rendering took {elapsed:.2f}s"
    lists = _lists(card)
    shown = [items for items in lists if items[0].startswith("call id:")]
    assert 1 <= len(shown) <= MAX_ITEMS
    assert f"and {2 * n - len(shown)} more waiting" in " ".join(_paragraphs(card))
    params = _item_with(shown[0], "parameters:")
    assert params.endswith("…") and len(params) < 400


def test_ten_thousand_small_items_show_the_first_ones_and_a_count() -> None:
    n = 10_000
    card = _card(approvals=[_approval(f"call_{i}") for i in range(n)])
    assert len(card.encode()) <= MAX_CARD_BYTES
    lists = _lists(card)
    assert [items[0] for items in lists] == [f"call id: call_{i}" for i in range(MAX_ITEMS)]
    assert f"and {n - MAX_ITEMS} more waiting: geniectl status {WID} lists them all" in (
        _paragraphs(card)
    )
