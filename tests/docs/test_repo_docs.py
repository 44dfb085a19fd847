"""The documentation a clone of this repository gets: complete, linked, and runnable.

A new user has only the repository. These tests fail on a reference to material that
lives elsewhere, on a relative link or anchor that leads nowhere, on a README snippet
that would not run as shown, and on README facts that disagree with the code.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from geniectl._render import EXIT_CODES
from tests.services import REPO_ROOT
from workflows.models import MAX_MESSAGE_CHARS

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
THIS_FILE = Path(__file__).resolve().relative_to(REPO_ROOT).as_posix()

# Material that is not in the repository: the research notes the project started from
# (a sibling `shared/` directory) and the numbered sections of those notes.
# docs/headless-api.md replaces the API notes, docs/contract.md the design's contract.
OUTSIDE = [
    (re.compile(r"\.\./shared\b"), "a path outside the repository"),
    (re.compile(r"\bshared/(?:DESIGN|headless-api)\.md"), "the project's research notes"),
    (re.compile(r"\bDESIGN\.md\b"), "a design file that is not in the repository"),
    (
        re.compile(r"headless-api\.md`*\s*§"),
        "a numbered section of the research notes (docs/headless-api.md has none)",
    ),
]


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    paths = [REPO_ROOT / n.decode() for n in names if n]
    return [p for p in paths if p.is_file() and p.relative_to(REPO_ROOT).as_posix() != THIS_FILE]


def test_nothing_points_outside_the_repository() -> None:
    hits: list[str] = []
    for path in _tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # a binary file
        for n, line in enumerate(text.splitlines(), 1):
            what = next((w for pattern, w in OUTSIDE if pattern.search(line)), None)
            if what is not None:
                rel = path.relative_to(REPO_ROOT)
                hits.append(f"{rel}:{n}: {what}: {line.strip()[:120]}")
    assert not hits, "references to material a clone does not have:\n" + "\n".join(hits)


# ---------------------------------------------------------------------- links

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]{2,}|[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = _FENCE.sub("", md.read_text())
    found: set[str] = set(re.findall(r"<a (?:id|name)=\"([^\"]+)\"", text))
    seen: Counter[str] = Counter()
    for line in text.splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            slug = _slug(m.group(1))
            found.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
            seen[slug] += 1
    return found


def _links(md: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", md.read_text()))


@pytest.mark.parametrize("md", [README, *DOCS], ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_relative_links_lead_somewhere(md: Path) -> None:
    broken: list[str] = []
    for target in _links(md):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif REPO_ROOT not in dest.parents and dest != REPO_ROOT:
            broken.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{md.name}:\n" + "\n".join(broken)


def test_readme_links_every_doc() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _links(README)}
    missing = [d.name for d in DOCS if d.resolve() not in linked]
    assert not missing, f"docs the README does not link: {missing}"


# ---------------------------------------------------------------------- README facts


def _python_blocks(md: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", md.read_text(), re.S | re.M)


def test_readme_python_runs_as_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiles as a script (no top-level ``await``), and every name it imports exists.

    ``asyncio.run`` is replaced so the example does not need a server: what is checked
    is that a reader can paste it into a file and run it.
    """
    blocks = _python_blocks(README)
    assert blocks, "the README shows how to use the Python API"
    started: list[str] = []

    def fake_run(coro: Any) -> None:
        started.append(coro.cr_code.co_name)
        coro.close()

    monkeypatch.setattr(asyncio, "run", fake_run)
    for n, src in enumerate(blocks, 1):
        code = compile(src, f"README.md python block {n}", "exec")
        exec(code, {"__name__": "__main__"})
    assert started, "the example runs its coroutine with asyncio.run"


def test_readme_states_the_limits_up_front() -> None:
    top = "\n".join(README.read_text().splitlines()[:25])
    assert f"{MAX_MESSAGE_CHARS:,} characters" in top
    assert "20 MB" in top


def test_readme_lists_every_exit_code() -> None:
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", README.read_text(), re.M))
    assert set(rows) == {str(code) for code, _ in EXIT_CODES}
    for code, meaning in EXIT_CODES:
        assert rows[str(code)].startswith(meaning), (code, rows[str(code)])


def test_license_is_an_spdx_string() -> None:
    """setuptools warns (on every install) about the old TOML-table form."""
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == "Apache-2.0"
    requires = data["build-system"]["requires"]
    setuptools = next(r for r in requires if r.startswith("setuptools"))
    # PEP 639 license expressions need setuptools 77 or later.
    m = re.match(r"setuptools>=(\d+)", setuptools)
    assert m is not None and int(m.group(1)) >= 77, setuptools
