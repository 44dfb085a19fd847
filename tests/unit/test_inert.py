"""What ``geniectl`` and the inbox show of outside text: characters that act on the
screen (controls), reorder it (bidi controls) or hide a difference (zero-width) become
their escapes; the rest of every script, joiners included, shows as it is."""

from __future__ import annotations

import json

import pytest

from genie_api import inert
from geniectl._render import plain


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("evil@\u202emoc.elpmaxe", "evil@\\u202emoc.elpmaxe"),
        ("a\u2066b\u2069c\u200fd\u061ce", "a\\u2066b\\u2069c\\u200fd\\u061ce"),
        ("pay\u200bpal\u2060\ufeff", "pay\\u200bpal\\u2060\\ufeff"),
        ("\x1b[2J\r\x07\x7f\x9b", "\\u001b[2J\\u000d\\u0007\\u007f\\u009b"),
    ],
)
def test_acting_and_hiding_characters_become_escapes(raw: str, shown: str) -> None:
    assert inert(raw) == shown
    assert json.loads(json.dumps(raw)) == json.loads(inert(json.dumps(raw, ensure_ascii=False)))


@pytest.mark.parametrize(
    "text",
    [
        "line one\n\tline two",
        "👨\u200d👩\u200d👧 family",  # zero-width joiners make one emoji
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian needs the non-joiner
        "\u05e9\u05dc\u05d5\u05dd, \u0645\u0631\u062d\u0628\u0627",  # RTL letters are not controls
        "naïve café — “quoted” …",
    ],
)
def test_every_script_and_its_joiners_show_as_they_are(text: str) -> None:
    assert inert(text) == text
    assert plain(text) == text


def test_the_terminal_shows_python_escapes() -> None:
    assert plain("a\x1b]0;x\x07\u202e\u200b") == "a\\x1b]0;x\\x07\\u202e\\u200b"
