"""``docs/contract.md`` is the code's contract, not a copy that can drift from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel
from temporalio import workflow

from geniectl._contract import REGENERATE, render_contract
from tests.services import REPO_ROOT
from workflows import (
    ConversationPolicy,
    ConversationStatus,
    GenieConversation,
    SendMessage,
    WaitTurn,
)

CONTRACT = REPO_ROOT / "docs" / "contract.md"
GENIECTL = str(Path(sys.executable).parent / "geniectl")


def test_docs_contract_md_is_what_the_code_renders() -> None:
    current = CONTRACT.read_text() if CONTRACT.exists() else ""
    expected = render_contract()
    # A one-line message (pytest's diff of two long pages is noise): say what to run.
    assert current == expected, f"docs/contract.md is out of date: run `.venv/bin/{REGENERATE}`"


def test_every_handler_and_every_field_is_on_the_page() -> None:
    """Nothing is left out by hand: the page follows the workflow definition."""
    page = render_contract()
    defn = workflow._Definition.from_class(GenieConversation)
    assert defn is not None
    handlers = [*defn.updates, *defn.signals, *defn.queries]
    assert handlers
    for name in handlers:
        if name is not None:
            assert f"### `{name}` (" in page, name
    for kind, handler_defs in (("update", defn.updates), ("query", defn.queries)):
        for name, h in handler_defs.items():
            ret = getattr(h, "ret_type", None)
            if name is not None and isinstance(ret, type):
                section = page.split(f"### {ret.__name__}\n", 1)
                assert len(section) == 2, f"{kind} {name}: model {ret.__name__} has no section"
                for field in getattr(ret, "model_fields", {}):
                    assert f"| `{field}` |" in section[1], (ret.__name__, field)


def test_the_prose_names_only_fields_that_exist() -> None:
    """The hand-written paragraphs refer to fields; a renamed field must not leave them
    pointing at nothing."""
    page = render_contract()
    owners: dict[str, type[BaseModel]] = {
        "policy": ConversationPolicy,
        "status": ConversationStatus,
        "SendMessage": SendMessage,
        "WaitTurn": WaitTurn,
    }
    named = re.findall(r"`(policy|status|SendMessage|WaitTurn)\.(\w+)`", page)
    assert named
    for owner, field in named:
        assert field in owners[owner].model_fields, f"{owner}.{field} is not a field"


def test_the_page_renders_the_same_twice() -> None:
    # Generated docs must not depend on time, order of dict iteration or the machine.
    assert render_contract() == render_contract()


def test_geniectl_contract_checks_and_writes(tmp_path: Path) -> None:
    stale = tmp_path / "contract.md"
    stale.write_text("# an old contract\n")
    r = subprocess.run(
        [GENIECTL, "contract", "--check", str(stale)], capture_output=True, text=True
    )
    assert r.returncode == 1
    assert REGENERATE in r.stderr
    w = subprocess.run(
        [GENIECTL, "contract", "--write", str(stale)], capture_output=True, text=True
    )
    assert w.returncode == 0, w.stderr
    assert stale.read_text() == render_contract()
    ok = subprocess.run(
        [GENIECTL, "contract", "--check", str(stale)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
