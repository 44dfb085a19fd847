"""Reading the deployment files the way Docker would, without a Docker engine.

- Compose: YAML (anchors and ``<<`` merge keys resolved by PyYAML, as compose does),
  ``${VAR...}`` interpolation per the compose spec, override files merged, profiles.
- Dockerfile: instructions with line continuations and comment lines removed, flags
  and exec-form (JSON) arguments parsed.
- .dockerignore: the subset of its pattern language our file uses, checked in tests.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CLOUD_OVERRIDE = REPO / "deploy" / "compose.temporal-cloud.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


# --- compose interpolation (https://github.com/compose-spec: "Interpolation") ---------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is unset, or malformed syntax."""


def variables(text: str) -> list[str]:
    """Names interpolated in ``text`` (not counting ``$$`` escapes)."""
    return [m["braced"] or m["named"] for m in _VAR.finditer(text) if not m["escaped"]]


def interpolate_str(text: str, env: Mapping[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"] or "", m["arg"] or ""
        if "$" in arg:
            raise InterpolationError(f"nested interpolation is not supported: {m[0]}")
        is_set = name in env
        value = env.get(name, "")
        # With ":" an empty value counts as unset.
        present = bool(value) if op.startswith(":") else is_set
        if op.endswith("-"):
            return value if present else arg
        if op.endswith("?"):
            if not present:
                raise InterpolationError(f"{name}: {arg or 'required variable is missing'}")
            return value
        if op.endswith("+"):
            return arg if present else ""
        return value

    result = _VAR.sub(replace, text)
    if "${" in text.replace("$$", "") and "${" in _VAR.sub("", text.replace("$$", "")):
        raise InterpolationError(f"malformed ${{...}} in {text!r}")
    return result


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (keys are left alone, as compose does)."""
    if isinstance(node, str):
        return interpolate_str(node, env)
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    return node


def iter_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) for every string value in a YAML tree."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_strings(v, f"{path}[{i}]")
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from iter_strings(v, f"{path}.{k}" if path else str(k))


# --- compose merge of override files (the parts our override uses) --------------------


def _merge(base: Any, over: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list) and key in ("secrets", "ports"):
        return base + [v for v in over if v not in base]
    return over


def merge_compose(*docs: dict[str, Any]) -> dict[str, Any]:
    """``docker compose -f a -f b``: mappings merged by key, secrets lists unioned."""
    result: dict[str, Any] = {}
    for doc in docs:
        result = _merge(result, doc)
    return result


def active_services(compose: Mapping[str, Any], profiles: set[str]) -> dict[str, Any]:
    """Services a ``docker compose --profile P ... up`` would start."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if not svc.get("profiles") or profiles & set(svc["profiles"])
    }


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a mapping (compose allows a list of NAME=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


# --- Dockerfile ------------------------------------------------------------------------


@dataclass
class Instruction:
    cmd: str
    args: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ``ENTRYPOINT``/``CMD``, else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value

    def words(self) -> list[str]:
        return shlex.split(self.args)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def last(self, cmd: str) -> Instruction | None:
        found = self.all(cmd)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages). Comment lines inside continuations are dropped,
    as BuildKit does; heredocs are not supported (and not used)."""
    instructions: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = n
        assert "<<" not in raw or not buf, f"line {n}: heredocs are not supported here"
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        joined = " ".join(p for p in buf if p)
        buf = []
        cmd, _, rest = joined.partition(" ")
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            fname, _, fvalue = flag[2:].partition("=")
            flags[fname] = fvalue
            rest = rest.strip()
        instructions.append(Instruction(cmd.upper(), rest, start, flags))
    assert not buf, "Dockerfile ends inside a line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            words = ins.words()
            base = words[0]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            for arg, default in global_args.items():
                base = base.replace(f"${{{arg}}}", default).replace(f"${arg}", default)
            stages.append(Stage(base, name, []))
        elif not stages:
            assert ins.cmd == "ARG", f"line {ins.line}: only ARG may precede FROM"
            name, _, default = ins.args.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(ins)
    return global_args, stages


# --- .dockerignore -----------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _pattern_matches(pattern: str, path: str) -> bool:
    pattern = pattern.strip("/")
    if pattern.startswith("**/"):
        tail = pattern[3:]
        parts = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[i:]), tail) for i in range(len(parts)))
    return fnmatch.fnmatchcase(path, pattern)


def dockerignored(path: str, patterns: list[str] | None = None) -> bool:
    """Whether ``path`` (relative, ``/``-separated) is left out of the build context:
    it, or a directory above it, matches the last matching pattern (``!`` re-includes).
    Enough of Docker's rules for patterns without ``**`` in the middle."""
    patterns = dockerignore_patterns() if patterns is None else patterns
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        assert "**" not in body.strip("/")[3:], f"unsupported pattern {pattern!r}"
        if any(_pattern_matches(body, c) for c in candidates):
            excluded = not negate
    return excluded
