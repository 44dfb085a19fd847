"""Skill parameters too long to keep whole are shortened in place, not replaced: what an
approver most needs (a recipient, an amount) stays readable beside a long body, every
cut says where it is, and the result always fits the pending item's bound."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from activities.models import (
    MAX_PARAMETER_BYTES,
    MAX_PARAMETER_DEPTH,
    SkillConfirmation,
    bounded_parameters,
)
from genie_codec import genie_data_converter


def _size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def _fits(params: dict[str, Any]) -> dict[str, Any]:
    out, shortened = bounded_parameters(params)
    assert shortened
    assert _size(out) <= MAX_PARAMETER_BYTES
    assert bounded_parameters(out) == (out, False)  # shortening again changes nothing
    return out


def test_parameters_that_fit_are_kept_as_they_are() -> None:
    params = {"to": "legal@example.com", "amount": 12.5, "tags": ["a", "b"], "ok": None}
    assert bounded_parameters(params) == (params, False)
    exactly = {"body": "x" * (MAX_PARAMETER_BYTES - _size({"body": ""}))}
    assert bounded_parameters(exactly) == (exactly, False)


def test_a_long_body_is_cut_and_the_recipient_beside_it_survives() -> None:
    out = _fits({"to": "legal@example.com", "body": "x" * 1_000_000, "cc": ["a@example.com"]})
    assert out["to"] == "legal@example.com" and out["cc"] == ["a@example.com"]
    assert out["body"].startswith("x" * 2_000)
    assert out["body"].endswith(f"… [{1_000_000 - 2_000:,} more characters]")


def test_many_keys_and_items_keep_the_first_and_count_the_rest() -> None:
    out = _fits({f"k{i}": i for i in range(10_000)})
    assert out["k0"] == 0 and "k9999" not in out
    assert out["…"].startswith("[") and out["…"].endswith(" more items]")
    listed = _fits({"rows": [{"id": i, "note": "n" * 50} for i in range(10_000)]})
    rows = listed["rows"]
    assert rows[0] == {"id": 0, "note": "n" * 50}
    assert rows[-1].startswith("… [") and rows[-1].endswith(" more items]")


def test_deep_nesting_is_replaced_by_a_note() -> None:
    deep: dict[str, Any] = {"leaf": "y" * 20_000}
    for _ in range(500):
        deep = {"next": deep}
    out = _fits({"to": "x@example.com", "tree": deep})
    assert out["to"] == "x@example.com"
    assert "nested too deep to show" in json.dumps(out)


def test_nesting_past_the_depth_bound_is_cut_there_and_nothing_else_is() -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = {"n": deep}
    body = "b" * 5_000  # fits: a deep tree alone must not cost the body its text
    out = _fits({"body": body, "tree": deep})
    assert out["body"] == body
    level: Any = out["tree"]
    for _ in range(MAX_PARAMETER_DEPTH - 1):
        level = level["n"]
    assert level == "[an object of 1 key, nested too deep to show]"
    just_fits: Any = "leaf"
    for _ in range(MAX_PARAMETER_DEPTH - 1):
        just_fits = [just_fits]
    assert bounded_parameters({"x": just_fits}) == ({"x": just_fits}, False)


def test_what_is_kept_always_travels_through_temporal_and_back() -> None:
    """pydantic's JSON parser refuses documents nested about 200 deep: unbounded, such
    parameters made the stream's result unreadable to the workflow, forever."""
    deep: Any = "leaf"
    for _ in range(5_000):
        deep = [deep]
    params, shortened = bounded_parameters({"tree": deep})
    conf = SkillConfirmation(call_id="c", skill_parameters=params, parameters_shortened=shortened)
    converter = genie_data_converter.payload_converter
    (back,) = converter.from_payloads(converter.to_payloads([conf]), [SkillConfirmation])
    assert back == conf and back.parameters_shortened


def test_keys_cut_to_the_same_text_stay_apart_and_a_real_ellipsis_key_is_kept() -> None:
    long_a, long_b = "a" * 5_000 + "1", "a" * 5_000 + "2"
    out = _fits(
        {long_a: "one", long_b: "two", "…": "a real key"} | {f"k{i}": "v" * 100 for i in range(300)}
    )
    assert sorted(v for v in out.values() if v in ("one", "two")) == ["one", "two"]
    assert out["…"] == "a real key" and out["… (2)"].endswith(" more items]")


def test_a_wide_and_deep_tree_still_fits() -> None:
    def tree(depth: int) -> Any:
        return "z" * 300 if depth == 0 else {f"n{i}": tree(depth - 1) for i in range(12)}

    _fits(tree(4))  # 20,736 leaves under four levels of twelve keys


def test_what_no_shortening_fits_keeps_the_start_of_its_json_text() -> None:
    def tree(depth: int) -> Any:
        return "😀" * 300 if depth == 0 else {"😀" * 50 + str(i): tree(depth - 1) for i in range(9)}

    out = _fits(tree(3))
    assert list(out) == ["…"] and out["…"].startswith('{"😀😀')
    assert out["…"].endswith(" more characters]")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**100, True, None])
def test_numbers_and_constants_pass_through_untouched(value: object) -> None:
    out = _fits({"value": value, "body": "b" * 100_000})
    assert out["value"] is value or (isinstance(value, float) and math.isnan(value))
