"""Patch levels: what a level stands for is settled without asking the server, and the
list stays one an engineer can extend safely."""

from __future__ import annotations

import pytest

from workflows import _patches
from workflows._patches import LEVELS, NEWEST_LEVEL, NEWEST_LEVEL_ID, patched

PATCH_IDS = {
    value
    for name, value in vars(_patches).items()
    if name.startswith("PATCH_") and isinstance(value, str)
}


def test_every_patch_belongs_to_exactly_one_level() -> None:
    listed = [patch_id for _, ids in LEVELS for patch_id in ids]
    assert sorted(listed) == sorted(PATCH_IDS), "a PATCH_ id missing from LEVELS, or listed twice"
    level_ids = [level_id for level_id, _ in LEVELS]
    assert len(set(level_ids)) == len(level_ids)
    assert not set(level_ids) & PATCH_IDS  # a level's own marker is never a patch's
    assert (len(LEVELS), LEVELS[-1][0]) == (NEWEST_LEVEL, NEWEST_LEVEL_ID)


@pytest.mark.parametrize("patch_id", sorted(PATCH_IDS))
def test_a_conversation_at_the_newest_level_asks_no_site(patch_id: str) -> None:
    # Outside a workflow, workflow.patched raises: True here means nothing was asked.
    assert patched(NEWEST_LEVEL, patch_id) is True


@pytest.mark.parametrize("level", [None, 0])
def test_a_run_recorded_before_levels_asks_each_site(level: int | None) -> None:
    with pytest.raises(Exception, match="Not in workflow event loop"):  # it asked
        patched(level, _patches.PATCH_DECISION_WITH_STREAM)


def test_an_id_no_level_lists_is_asked_even_at_the_newest_level() -> None:
    with pytest.raises(Exception, match="Not in workflow event loop"):
        patched(NEWEST_LEVEL, "a-change-not-in-a-level-yet")
