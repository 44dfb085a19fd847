"""Render the fault suite's last observed outcomes as ``docs/fault-tolerance.md``.

``python -m tests.faults.report [results.json] [output.md]`` reads what the suite wrote to
``bench/results/faults.json`` (``pytest tests/faults``) and writes one table row per fault
of issue 5, each cell listing what every case of that row observed. The README links to
the page rather than repeating the table, so the page is the only copy.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.faults._harness import RESULTS_PATH, ROWS
from tests.services import REPO_ROOT

DOC_PATH = REPO_ROOT / "docs" / "fault-tolerance.md"

INTRO = """\
# Fault tolerance

What happens to a conversation when its worker, its stream, the Headless API or the
Temporal server fails, as observed by the fault suite (`tests/faults/`, part of
`make test`). Every case runs against the real components: a Temporal dev server on a
SQLite file, the simulator (`python -m genie_sim`), and `python worker.py` as a separate
process that the suite kills, stops and restarts. Faults are placed by waiting for
conditions on the real system (the simulator's `/_sim/stats`, E3, the workflow's
history), never by sleeping.

Every case then checks the ground truth:

- exactly one `POST /messages` per turn (the simulator's `messages_accepted`, and
  `message_posts` too unless the fault made the API refuse a post);
- each decision applied once at the API (`skill_decisions_applied`; a repeat the API
  already had counts as done);
- every `agent.message` of the run in the turn result exactly once and in order, compared
  with the API's own message history (E6);
- the workflow never stuck: the turn completes, or ends in a clear state whose
  `last_error` names the cause;
- the API key in no workflow history (`fetch_history()`) and nowhere in the worker's
  output (captured at `DEBUG`).
"""

DEFECTS = """\
## Defects the suite found (fixed)

- **One garbled SSE frame failed the whole turn.** The client rightly refuses malformed
  data on a stream, but the stream segment passed that on as a non-retryable error,
  although the run is intact at the API and E8 replays it from the last good event. The
  segment now starts over from its heartbeat cursor, at most
  `MAX_MALFORMED_RETRIES` (3) times per segment (`activities/_stream.py`); data that stays
  malformed still fails the turn with the protocol error as `last_error`.
- **`python worker.py` could abort (SIGABRT, exit -6) after a clean SIGTERM shutdown**:
  the Temporal SDK's Rust threads may call into Python while the interpreter finalizes
  (temporalio/sdk-python#300). The worker now flushes and exits without finalization once
  it has drained (`worker.py`), so a deploy sees exit code 0.
- **A turn that failed while its run was still active at the API took the next turn with
  it**: the next message's POST met `409 conversation_busy`, which was final, so that
  turn failed too instead of waiting for the run to end. The stream segment now asks the
  API whose run is active (`RunInspector.busy_run`): this turn's own (an earlier
  attempt's post landed) is resumed, not posted again; an earlier turn's makes the
  segment fail retryably (`ConversationBusyWithEarlierRun`) until that run has ended,
  and then the message is posted once (the production row above).
- **A worker killed while a short call was in flight (e.g. right after the API applied a
  decision) stalled that turn for 60 s**, the start-to-close timeout: control activities
  did not heartbeat. They now heartbeat while their call is in flight and have a 10 s
  heartbeat timeout (`activities/_control.py`, `workflows/conversation.py`), so the retry
  comes as fast as a stream segment's.
"""

LIMITS = """\
## Known limitations (not fixed)

- **An event without `event_id`/`seq_num` is passed through** (the client keeps such
  events by design). It cannot be de-duplicated: if the API replayed one on E8 after a
  cut, the turn would get it twice. (The simulator's injected one is never replayed.)
"""


def _ranges(ks: list[int]) -> str:
    ks = sorted(ks)
    out: list[str] = []
    start = prev = ks[0]
    for k in [*ks[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if k is not None:
            start = prev = k
    return ", ".join(out)


def _mark(result: str) -> str:
    return {"passed": "", "xfailed": "**known failure (xfail):** "}.get(
        result, f"**{result.upper()}:** "
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row_cells(cases: list[dict[str, Any]]) -> list[str]:
    """One line per case; cases of a group (e.g. every k) with the same outcome merge."""
    lines: list[str] = []
    merged: dict[tuple[str, str, str], list[int]] = {}
    for c in cases:
        group = c.get("data", {}).get("group")
        if group is not None:
            key = (group, c["outcome"], c["result"])
            merged.setdefault(key, []).append(int(c["data"]["k"]))
            continue
        lines.append(f"**{_cell(c['where'])}**: {_mark(c['result'])}{_cell(c['outcome'])}")
    for (group, outcome, result), ks in merged.items():
        lines.append(f"**{group}, k = {_ranges(ks)}**: {_mark(result)}{_cell(outcome)}")
    return lines


def render_table(results: dict[str, Any]) -> list[str]:
    """The table of fault, where and observed outcome, and a line naming the run."""
    cases: list[dict[str, Any]] = results["cases"]
    by_row: dict[str, list[dict[str, Any]]] = {}
    for c in cases:
        by_row.setdefault(c["row"], []).append(c)
    table = ["| fault | where | observed outcome |", "|---|---|---|"]
    for row, (fault, where) in ROWS.items():
        lines = _row_cells(by_row.get(row, [])) or ["(not run)"]
        table.append(f"| {_cell(fault)} | {_cell(where)} | {'<br>'.join(lines)} |")
    passed = sum(c["result"] == "passed" for c in cases)
    summary = (
        f"Last run: {results['generated_at']}, {len(cases)} cases, {passed} passed "
        f"(whole fault suite {results['suite_seconds']:.0f} s)"
        + (
            f"; some cases re-run {results['partly_rerun_at']}"
            if "partly_rerun_at" in results
            else ""
        )
        + ". Regenerate with `pytest tests/faults && python -m tests.faults.report`."
    )
    return [*table, "", summary]


def render(results: dict[str, Any]) -> str:
    return "\n".join([INTRO, *render_table(results), "", DEFECTS, LIMITS])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    src = Path(args[0]) if args else RESULTS_PATH
    dst = Path(args[1]) if len(args) > 1 else DOC_PATH
    if not src.exists():
        print(f"{src} does not exist: run `pytest tests/faults` first", file=sys.stderr)
        return 1
    results = json.loads(src.read_text())
    dst.write_text(render(results))
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
