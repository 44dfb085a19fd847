"""What the genie, the user or the API says reaches the operator's terminal as text.

The simulator echoes the user's message as the genie's reply and names the skill after
``confirm:``, so a message carries hostile text into every place ``geniectl`` prints
the genie's words: Rich markup (``[link=…]`` makes a terminal hyperlink, a stray ``[/]``
raised ``MarkupError``), raw escape sequences (OSC 8 hyperlinks, window titles, clear
screen), and a call id that is not a shell word. The real console script runs against
the real stack; ``FORCE_COLOR`` makes Rich style its output as for a terminal, so only
the escapes Rich emits for its own styles may appear.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from datetime import UTC, datetime

from rich.console import Console

from genie_api import HIDDEN
from geniectl import _render
from tests.cli.test_geniectl import _started, cli_env, geniectl  # noqa: F401 (fixture)
from workflows import PendingApproval, TurnResult

HOSTILE = (
    "[link=https://evil.example/a]click[/link] [/] "
    "\x1b]8;;https://evil.example/b\x1b\\here\x1b]8;;\x1b\\ \x1b]0;pwned\x07 \x1b[2J\r\u202e"
)
# Rich's own styles are SGR sequences (ESC [ digits ; m); anything else is injected.
_NOT_SGR = re.compile(r"\x1b(?!\[[0-9;]*m)")


def _inert(stdout: str) -> None:
    assert not _NOT_SGR.search(stdout), repr(stdout)
    assert "\r" not in stdout and "\u202e" not in stdout, repr(stdout)
    assert "https://evil.example/a" in stdout and "[/link]" in stdout  # shown as typed
    assert "\\x1b]8;;https://evil.example/b" in stdout  # the escape, not the sequence


async def test_the_genies_text_is_shown_never_obeyed(cli_env: dict[str, str]) -> None:  # noqa: F811
    env = {**cli_env, "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}
    wid = await _started(env)
    r = await geniectl(env, "ask", wid, HOSTILE)
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    _inert(r.stdout)
    h = await geniectl(env, "history", wid)
    assert h.code == 0, h.stderr
    _inert(h.stdout)


# What JSON encoders leave raw: DEL, C1 (U+009B is CSI on some terminals), bidi controls.
_RAW_IN_JSON = "\x7f\x9b2J\u202egnp.exe\u2066x\u2069\u200f\u061c"


async def test_json_output_escapes_what_a_terminal_would_obey(cli_env: dict[str, str]) -> None:  # noqa: F811
    """``--json`` is for scripts and often read on a terminal: the genie's text there must
    not reverse or recolour what follows. Each such character is its ``\\u`` escape, and
    a JSON parser reads back exactly what the genie said."""
    wid = await _started(cli_env)
    asked = await geniectl(cli_env, "ask", wid, _RAW_IN_JSON, "--json")
    assert asked.code == 0, asked.stderr
    history = await geniectl(cli_env, "history", wid, "--json")
    for r in (asked, history):  # the reply echoes the message
        assert r.code == 0, r.stderr
        assert not HIDDEN.search(r.stdout), repr(r.stdout)
        assert "\\u202e" in r.stdout and "\\u009b" in r.stdout
    *streamed, result = [json.loads(line) for line in asked.stdout.splitlines()]
    assert streamed == [{"turn": 1, "message": f"You said: {_RAW_IN_JSON}"}]
    assert result["status"] == "completed"
    assert _RAW_IN_JSON in json.dumps(history.json(), ensure_ascii=False)


async def test_a_hostile_skill_name_in_a_pause_is_text(cli_env: dict[str, str]) -> None:  # noqa: F811
    env = {**cli_env, "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}
    wid = await _started(env)
    ask = asyncio.create_task(
        geniectl(env, "ask", wid, "confirm:[/]x[link=https://evil.example/a]")
    )
    try:
        for _ in range(200):
            st = await geniectl(env, "status", wid)
            if "awaiting approval" in st.stdout:
                break
            await asyncio.sleep(0.1)
        assert st.code == 0 and "Traceback" not in st.stderr, st.stderr
        assert "[/]x[link=https://evil.example/a]" in st.stdout, st.stdout
        assert not _NOT_SGR.search(st.stdout)
    finally:
        await geniectl(env, "end", wid)
        await ask


def test_a_call_id_is_one_shell_word_in_the_printed_commands() -> None:
    con = Console(record=True, width=200, force_terminal=False)
    old, _render.out = _render.out, con
    try:
        res = TurnResult(turn=1, status="awaiting_approval")
        now = datetime.now(UTC)
        res.pending.approvals.append(
            PendingApproval(call_id="c1; touch /tmp/owned", turn=1, requested_at=now, deadline=now)
        )
        _render.pause_panel("wf-1", res)
    finally:
        _render.out = old
    lines = [line for line in con.export_text().splitlines() if "$ geniectl approve" in line]
    (line,) = lines
    assert shlex.split(line.split("$ ", 1)[1]) == [
        "geniectl",
        "approve",
        "wf-1",
        "c1; touch /tmp/owned",
    ]


async def test_an_audit_export_on_a_terminal_shows_escapes_and_in_a_pipe_keeps_them(
    cli_env: dict[str, str],  # noqa: F811
) -> None:
    """An approver's reason is recorded as given; ``audit`` printed to a terminal shows
    its control characters as escapes, written to a pipe (a file, a SIEM) keeps them."""
    wid = await _started(cli_env)
    sent = await geniectl(cli_env, "send", wid, "confirm:send_email", "--json")
    assert sent.code == 0, sent.stderr
    for _ in range(200):
        st = await geniectl(cli_env, "status", wid, "--json")
        if st.json()["pending_approvals"]:
            break
        await asyncio.sleep(0.1)
    call = st.json()["pending_approvals"][0]["call_id"]
    reason = "no\x1b]0;pwned\x07\x1b[2J"
    r = await geniectl(cli_env, "reject", wid, call, "--approver", "ops", "--reason", reason)
    assert r.code == 0, r.stderr
    piped = await geniectl(cli_env, "audit", wid, "--format", "csv")
    assert piped.code == 0 and reason in piped.stdout, piped
    shown = await _on_a_terminal(cli_env, "audit", wid, "--format", "csv")
    assert "\x1b" not in shown and "\x07" not in shown, repr(shown)
    assert "no\\x1b]0;pwned\\x07\\x1b[2J" in shown, repr(shown)


async def _on_a_terminal(env: dict[str, str], *args: str) -> str:
    """Run geniectl with stdout on a pseudo-terminal; what it wrote there."""
    import os
    import pty

    from tests.cli.test_geniectl import GENIECTL

    leader, follower = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            GENIECTL, *args, env=env, stdout=follower, stderr=asyncio.subprocess.PIPE
        )
        os.close(follower)
        chunks: list[bytes] = []

        def read() -> None:
            while True:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    return
                if not data:
                    return
                chunks.append(data)

        reader = asyncio.get_running_loop().run_in_executor(None, read)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        await asyncio.wait_for(reader, 10)
        assert proc.returncode == 0, err
    finally:
        os.close(leader)
    return b"".join(chunks).decode()


def test_pending_shows_hostile_names_and_ids_as_text_at_any_width() -> None:
    from geniectl import PendingItem
    from workflows import PendingConnection

    now = datetime.now(UTC)
    item = PendingItem(
        workflow_id="wf-1",
        genie_handle="[link=https://evil.example/a]g[/link]",
        user_id="u\x1b]0;pwned\x07",
        state="awaiting_approval",
        awaiting_since=now,
        approvals=[
            PendingApproval(
                call_id="c1\x1b[2J", skill_name="[/]s", turn=1, requested_at=now, deadline=now
            )
        ],
        connections=[
            PendingConnection(
                attempt_id="a1", connector_name="[red]j", turn=1, requested_at=now, deadline=now
            )
        ],
    )
    for width in (300, 60):  # the table, then one block per item
        con = Console(record=True, width=width, force_terminal=True, color_system="truecolor")
        _render.print_pending([item], con)
        styled = con.export_text(styles=True, clear=False)
        assert not _NOT_SGR.search(styled), (width, repr(styled))
        text = con.export_text()
        for shown in ("[link=https://evil.example/a]g[/link]", "[/]s", "[red]j", "c1\\x1b[2J"):
            assert shown in text, (width, shown, text)
