"""Outside text shown as it is, never acting on the screen that shows it.

The genie's, the user's and an approver's text reaches terminals (``geniectl``), web
pages (the inbox, the Temporal Web UI's card) and chat (Slack notices). Some characters
act there instead of showing: C0 controls but tab and newline (ESC starts colour, cursor
and OSC sequences on a terminal; CR overwrites a line), DEL and the C1 controls (U+009B
is CSI on some terminals), the bidi controls, which reorder what follows
(``evil@\\u202emoc.elpmaxe`` reads as an innocent address), and the zero-width
characters that hide a difference an approver would otherwise see. Each is shown as its
``\\uXXXX`` escape instead.

Joiners (U+200C, U+200D) are kept: scripts and emoji sequences need them, and they
cannot reorder or hide text.
"""

from __future__ import annotations

import re

HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)
"""The characters shown as their escape, not as themselves."""


def inert(text: str) -> str:
    """``text`` with each ``HIDDEN`` character written as its ``\\uXXXX`` escape. Inside a
    JSON string that is the same JSON (such characters can only stand inside strings)."""
    return HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
