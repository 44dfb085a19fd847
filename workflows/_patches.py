"""Every ``workflow.patched`` id the conversation asks, and the patch level that asks
them all at once.

A change to the commands the workflow issues is asked with ``workflow.patched``, so a
run recorded before the change replays the path it recorded. Asked where it applies, a
patch costs every run that reaches it a marker (billed as an action when its workflow
task records no other marker) and an upsert of ``TemporalChangeVersion`` (a visibility
write on the server): every run paid both at its first decision, for
``decision-with-stream``, and a new conversation paid twice in its first task.

A *patch level* folds them. A conversation's first task asks for the newest level once
(``ask_level``: one marker, one upsert), and a level stands for every patch listed up to
it, so no later site asks (``patched``). The level is carried through continue-as-new.
A run recorded before a level existed is told False for it during replay, so it asks
each site as it recorded, and its next run asks for the level again.

To change the commands: add an id below, ask ``patched(level, id)`` where the change
applies, and list the id in a new level at the end of ``LEVELS``, never in an existing
one (a run recorded at that level never took the new path).
"""

from __future__ import annotations

from temporalio import workflow

PATCH_DEPLOYMENT = "deployment"
"""The deployment look-up at start (keys, endpoints, policy)."""
PATCH_BOUNDED_HISTORY = "bounded-history"
"""Continue-as-new at ``max_history_events_per_run``."""
PATCH_IDLE_ROLLOVER = "idle-rollover"
"""Continue-as-new while idle, once updates and signals alone took the run's history to
its bound (``_watch_idle_growth``)."""
PATCH_DECISION_WITH_STREAM = "decision-with-stream"
"""A skill decision is posted by the ``resume`` segment that follows it (one activity,
not two). Histories from before it post with ``post_skill_decision`` and then resume."""
PATCH_EARLY_ITEM_RULE = "early-item-rule"
"""An early decision meets the rule of the item it decides (its approvers and groups,
``auto``, two approvers) when the item is shown; before, any early decision the
conversation's approvers allowed was taken as the item's decision."""
PATCH_PROBE_BY_AGE = "probe-by-age"
"""Past five minutes, a connection probe waits a twelfth of the time the pause has waited
(``_backoff``). Histories from before it probe every five minutes."""
PATCH_OUTAGE_BY_AGE = "outage-by-age"
"""Past ``OUTAGE_MAX_WAIT``, a retry waits a twelfth of the outage so far (``_backoff``).
Histories from before it retry every five minutes."""
PATCH_RUNNING_WHEN_LONG = "running-when-long"
"""``GenieState`` shows ``running`` only for a turn that lasts the policy's
``running_shown_after``; before, every transition upserted it."""
PATCH_PAUSE_ROLLOVER = "pause-rollover"
"""Continue-as-new in a pause, once what arrived while it waited (polls, refused
decisions, signals, connection probes) took the run's history to its bound
(``_watch_pause_growth``); before, a pause grew one run's history until it ended."""

LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "patch-level-1",
        frozenset(
            {
                PATCH_DEPLOYMENT,
                PATCH_BOUNDED_HISTORY,
                PATCH_IDLE_ROLLOVER,
                PATCH_DECISION_WITH_STREAM,
                PATCH_EARLY_ITEM_RULE,
                PATCH_PROBE_BY_AGE,
                PATCH_OUTAGE_BY_AGE,
                PATCH_RUNNING_WHEN_LONG,
            }
        ),
    ),
    ("patch-level-2", frozenset({PATCH_PAUSE_ROLLOVER})),
)
"""Each level's own ``workflow.patched`` id and the patches it adds to the levels before
it, oldest first."""
NEWEST_LEVEL = len(LEVELS)
NEWEST_LEVEL_ID = LEVELS[-1][0]


def ask_level() -> int:
    """The newest level this run took (0: none), asked in a conversation's first task.

    A new run takes the newest at once (one marker). Replaying a run recorded at an
    older level, each newer id is told False until the one it recorded."""
    for level in range(NEWEST_LEVEL, 0, -1):
        if workflow.patched(LEVELS[level - 1][0]):
            return level
    return 0


def patched(level: int | None, patch_id: str) -> bool:
    """``workflow.patched(patch_id)``, unless the conversation's level already includes it."""
    for _, ids in LEVELS[: level or 0]:
        if patch_id in ids:
            return True
    return workflow.patched(patch_id)
