"""The scripted genie: directive parsing into a pure list of steps, and reply texts.

Nothing here does I/O or keeps state, so the whole script language is unit-testable.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

TOKEN_RE = re.compile(r"\b(confirm|connect|fail|skill|steps|delay|interrupt|params):(\S+)")
"""A directive: ``name:value``. ``\\b`` keeps words like ``reconfirm:x`` plain text."""

MAX_STEPS = 10_000
"""Upper bound for ``steps:<n>`` so one message cannot make an unbounded run."""

MAX_DELAY_MS = 3_600_000
"""Upper bound for ``delay:<ms>`` (one hour)."""

MAX_PARAMS_KIB = 1_024
"""Upper bound for ``params:<n>``: past any bound of ours, small enough to send."""


@dataclass(frozen=True, slots=True)
class Confirm:
    """Pause with ``skill.confirmation_required``; run the skill if approved."""

    skill: str


@dataclass(frozen=True, slots=True)
class Connect:
    """Pause with ``runtime_connection.auth_required``; run the skill once connected."""

    connector: str


@dataclass(frozen=True, slots=True)
class Fail:
    """Run a skill that fails, then apologise."""

    skill: str


@dataclass(frozen=True, slots=True)
class RunSkill:
    """Run a skill that needs no confirmation (it succeeds)."""

    skill: str


@dataclass(frozen=True, slots=True)
class Say:
    """Emit one intermediate ``agent.message`` (from ``steps:<n>``)."""

    text: str


@dataclass(frozen=True, slots=True)
class Delay:
    """From here on, wait ``ms`` milliseconds before each event."""

    ms: int


Step = Confirm | Connect | Fail | RunSkill | Say | Delay


@dataclass(frozen=True, slots=True)
class Script:
    """What the genie does for one message.

    Attributes:
        text: The user's message, echoed in the final reply.
        steps: The directives in order of appearance (``steps:n`` already expanded).
        interrupt_after: ``interrupt:<k>``: every stream of the run ends with
            ``system.stream_interrupted`` after delivering k events (the last token wins).
        params_kib: ``params:<n>``: confirmations also carry a ``body`` parameter of n
            KiB (the last token wins), as a genie drafting a long document would.
    """

    text: str
    steps: tuple[Step, ...]
    interrupt_after: int | None = None
    params_kib: int = 0


def _non_negative_int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def parse_script(text: str) -> Script:
    """Read the directives from a message.

    A token whose value is not valid for its directive (``steps:abc``, ``delay:-1``) is
    treated as plain text: the genie simply ignores it.

    Args:
        text: The message text.

    Returns:
        The script; a message without directives gives an empty ``steps``.
    """
    steps: list[Step] = []
    interrupt_after: int | None = None
    params_kib = 0
    for match in TOKEN_RE.finditer(text):
        name, value = match.group(1), match.group(2)
        if name == "confirm":
            steps.append(Confirm(value))
        elif name == "connect":
            steps.append(Connect(value))
        elif name == "fail":
            steps.append(Fail(value))
        elif name == "skill":
            steps.append(RunSkill(value))
        elif name == "steps":
            n = _non_negative_int(value)
            if n is not None:
                n = min(n, MAX_STEPS)
                steps.extend(Say(step_message(i, n)) for i in range(1, n + 1))
        elif name == "delay":
            ms = _non_negative_int(value)
            if ms is not None:
                steps.append(Delay(min(ms, MAX_DELAY_MS)))
        elif name == "params":
            kib = _non_negative_int(value)
            if kib is not None:
                params_kib = min(kib, MAX_PARAMS_KIB)
        else:  # interrupt
            k = _non_negative_int(value)
            if k is not None:
                interrupt_after = k
    return Script(
        text=text, steps=tuple(steps), interrupt_after=interrupt_after, params_kib=params_kib
    )


def step_message(i: int, n: int) -> str:
    """Text of the i-th of n ``steps:`` messages."""
    return f"step {i} of {n}"


def skill_id(name: str) -> str:
    """A stable ``recipe:<n>`` id for a skill name, shaped like production's."""
    return f"recipe:{zlib.crc32(name.encode()) % 90_000_000 + 10_000_000}"


def skill_parameters(script: Script) -> dict[str, object]:
    """The resolved arguments shown on a confirmation card."""
    params: dict[str, object] = {"query": script.text[:200]}
    if script.params_kib:
        line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. "
        body = line * (script.params_kib * 1024 // len(line) + 1)
        params["body"] = body[: script.params_kib * 1024]
    return params


SKILL_PARAMETER_SCHEMA: tuple[dict[str, object], ...] = (
    {
        "name": "query",
        "label": "Query",
        "type": "string",
        "control_type": "text",
        "optional": False,
        "hint": "What the genie passes to the skill",
    },
)


def failure_error(skill: str) -> str:
    """The ``error`` of a ``skill.failed`` event."""
    return f"Simulated failure of {skill}"


def apology(skill: str) -> str:
    """The ``agent.message`` that follows a failed skill."""
    return f"Sorry, {skill} failed ({failure_error(skill)}). I could not complete that part."


@dataclass(slots=True)
class Outcome:
    """What happened during a run; the final reply is built from it.

    Attributes:
        ran: Skills that ran (``skill:``, approved confirmations, completed connections),
            in order.
        failed: Skills that failed (``fail:``).
        rejected: ``(skill, reason)`` of rejected confirmations.
        declined: Connectors whose runtime connection was rejected.
    """

    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str | None]] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)


def final_reply(text: str, outcome: Outcome) -> str:
    """The last ``agent.message`` of a run: the echo plus what happened.

    Args:
        text: The user's message.
        outcome: Skills that ran/failed, rejection reasons, declined connections.

    Returns:
        ``"You said: <text>"`` followed by one paragraph per notable outcome.
    """
    parts = [f"You said: {text}"]
    if outcome.ran:
        parts.append(f"Skills run: {', '.join(outcome.ran)}.")
    if outcome.failed:
        parts.append(f"Skills failed: {', '.join(outcome.failed)}.")
    for skill, reason in outcome.rejected:
        if reason:
            parts.append(f'I did not run {skill} because you rejected it: "{reason}".')
        else:
            parts.append(f"I did not run {skill} because you rejected it (no reason given).")
    for connector in outcome.declined:
        parts.append(f"The connection to {connector} was declined, so I could not use it.")
    return "\n\n".join(parts)
