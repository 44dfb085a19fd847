"""``python -m bench``: every benchmark in sequence, each in its own process, then every table.

Run: ``.venv/bin/python -m bench [--only turn_overhead,history] [--skip concurrency]``

Each benchmark starts (and stops) its own stack and writes ``bench/results/<name>.json``.
Their output streams through as they run; at the end the tables are printed again
together (from the JSON files; for a benchmark that does not put a table there, the tail
of its output, which is then stored in its JSON), and ``docs/performance.md`` is
regenerated from the JSON files (``bench.report``). Exit status 1 if a benchmark failed to
run; a missed target is a result, printed in its table, not a failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench._stack import REPO, RESULTS, machine

OURS = ["turn_overhead", "actions", "history", "concurrency", "workers", "parked", "recovery"]
OTHERS = ["client_throughput", "sim_concurrency"]
"""Benchmarks of the client and the simulator alone, without a workflow; each runs when
its module is present."""
TAIL_LINES = 16


def _run(name: str) -> tuple[int, list[str], float]:
    print(f"\n===== bench.{name} =====", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", f"bench.{name}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip("\n"))
    code = proc.wait()
    took = time.monotonic() - t0
    print(f"===== bench.{name}: exit {code} after {took:.0f}s =====", flush=True)
    return code, lines, took


def _summary(name: str, lines: list[str]) -> str:
    path = RESULTS / f"{name}.json"
    data: dict[str, object] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
        text = data.get("table")
        if isinstance(text, str):
            return text
    text = "\n".join([f"{name} (last {TAIL_LINES} lines of its output)", *lines[-TAIL_LINES:]])
    if data:
        # Kept with the result, so the generated page shows the same table.
        data.setdefault("machine", machine())
        path.write_text(json.dumps({**data, "table": text}, indent=2, default=str) + "\n")
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated benchmark names")
    p.add_argument("--skip", default="", help="comma-separated benchmark names")
    a = p.parse_args()
    here = Path(__file__).resolve().parent
    names = OURS + [n for n in OTHERS if (here / f"{n}.py").exists()]
    if a.only:
        names = [n for n in names if n in a.only.split(",")]
    names = [n for n in names if n not in a.skip.split(",")]
    m = machine()
    print(
        f"bench: {', '.join(names)}\nmachine: {m['date']}, nproc {m['nproc']}, "
        f"memory {m['memory']}, load {tuple(round(x, 2) for x in m['loadavg_at_start'])}",
        flush=True,
    )
    outcomes: list[tuple[str, int, float, str]] = []
    for name in names:
        # A stale result must not pass for this run's.
        (RESULTS / f"{name}.json").unlink(missing_ok=True)
        code, lines, took = _run(name)
        outcomes.append((name, code, took, _summary(name, lines)))
    print("\n\n######## all tables ########", flush=True)
    print(f"machine: {m['date']}, nproc {m['nproc']}, memory {m['memory']}")
    for name, code, took, text in outcomes:
        status = "" if code == 0 else f"   [exit {code}]"
        print(f"\n--- {name} ({took:.0f}s){status}\n{text}")
    failed = [n for n, code, _, _ in outcomes if code != 0]
    report.main([])
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
