"""``docs/contract.md``: the public contract, rendered from the code that defines it.

Other programs (backends in any language, the ``temporal`` CLI, the Web UI) depend on
names and JSON shapes that live in ``workflows/``. A hand-written copy of them drifts the
first time a handler or a field changes, so this module reads them from the live code
instead: the workflow definition (handlers with their descriptions and docstrings, input
and output types), the pydantic models (JSON schema for types and bounds, attribute
docstrings for meaning), the error-type constants, the search attributes, the documented
limits and the worker's ``GENIE_*`` settings. Only the prose that explains how the pieces
fit together is written here by hand.

``geniectl contract`` prints the result; ``--write docs/contract.md`` regenerates the
file and ``--check docs/contract.md`` fails when it is stale (``tests/docs`` runs that).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import itertools
import json
import pkgutil
import re
import sys
import textwrap
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel, TypeAdapter
from temporalio import workflow
from temporalio.common import SearchAttributeKey

REGENERATE = "geniectl contract --write docs/contract.md"
"""The one command that brings ``docs/contract.md`` up to date with the code."""

# ---------------------------------------------------------------------- source docstrings


@cache
def _module_ast(module_name: str) -> ast.Module:
    return ast.parse(inspect.getsource(importlib.import_module(module_name)))


def _attribute_docs(body: list[ast.stmt]) -> dict[str, str]:
    """``name -> docstring`` for ``name = …`` / ``name: T = …`` followed by a string.

    Python keeps no such "attribute docstrings" at run time, but they are where this
    project documents fields, settings and constants, so they are read from the source.
    """
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        target: ast.expr | None = None
        if isinstance(stmt, ast.AnnAssign):
            target = stmt.target
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
        if (
            isinstance(target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a class and of the classes it inherits fields from."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ in ("builtins", "pydantic.main") or klass.__module__.startswith(
            ("pydantic.", "pydantic_settings")
        ):
            continue
        try:
            tree = _module_ast(klass.__module__)
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == klass.__name__:
                docs.update(_attribute_docs(node.body))
    return docs


def _module_docs(module: ModuleType) -> dict[str, str]:
    return _attribute_docs(_module_ast(module.__name__).body)


def _own_doc(obj: Any) -> str:
    """The object's own docstring: pydantic models would otherwise inherit BaseModel's."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


# ---------------------------------------------------------------------- markdown helpers


_RST_ROLE = re.compile(r":(?:mod|attr|class|meth|func|data|exc):`~?([^`]+)`")


def _md(doc: str) -> str:
    """reStructuredText literals (````x````, ``:attr:`x```) as markdown code spans."""
    return _RST_ROLE.sub(r"`\1`", doc).replace("``", "`")


def _cell(text: str) -> str:
    """One markdown table cell: a single line, pipes escaped."""
    return " ".join(_md(text).split()).replace("|", "\\|")


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _anchor(name: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", name.lower()).replace(" ", "-")


def _handler_heading(name: str, kind: str) -> str:
    # The kind keeps a query's heading apart from a model's ("transcript" / "Transcript"
    # would otherwise share an anchor).
    return f"`{name}` ({kind})"


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}"


def _duration(d: timedelta) -> str:
    secs = int(d.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs and secs % size == 0:
            n = secs // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{d.total_seconds():g} s"


# ---------------------------------------------------------------------- JSON schema → text

_FORMATS = {
    "date-time": "timestamp (ISO-8601)",
    "duration": "duration (ISO-8601 such as `PT24H`, or seconds)",
    "uri": "URL",
    "path": "path",
    "password": "secret string",
}


def _constraints(s: dict[str, Any]) -> str:
    parts: list[str] = []
    lo, hi = s.get("minLength"), s.get("maxLength")
    if hi is not None:
        parts.append(
            f"{_number(lo or 0)} to {_number(hi)} chars" if lo else f"≤ {_number(hi)} chars"
        )
    elif lo == 1:
        parts.append("not empty")
    elif lo:
        parts.append(f"≥ {_number(lo)} chars")
    if s.get("maxItems") is not None:
        parts.append(f"≤ {_number(s['maxItems'])} items")
    for key, sign in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if isinstance(s.get(key), int | float):
            parts.append(f"{sign} {_number(s[key])}")
    if s.get("pattern"):
        parts.append(f"matching `{s['pattern']}`")
    return ", ".join(parts)


def _type(s: dict[str, Any], defs: dict[str, Any], models: set[str]) -> str:
    """A JSON schema as a short phrase, linking to the models documented on the page."""
    if "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[-1]
        if name in models:
            return f"[`{name}`](#{_anchor(name)})"
        return _type(defs.get(name, {}), defs, models)
    options = s.get("anyOf") or s.get("oneOf")
    if options:
        real = [o for o in options if o.get("type") != "null"]
        text = " or ".join(_type(o, defs, models) for o in real)
        return text + (" or null" if len(real) < len(options) else "")
    if "const" in s:
        return f"`{s['const']}`"
    if "enum" in s:
        return "one of " + ", ".join(f"`{v}`" for v in s["enum"])
    kind = s.get("type")
    if kind == "array":
        base = "list of " + _type(s.get("items", {}), defs, models)
    elif kind == "object":
        extra = s.get("additionalProperties")
        base = (
            f"object of {_type(extra, defs, models)}"
            if isinstance(extra, dict) and extra
            else "JSON object"
        )
    elif kind == "string":
        base = _FORMATS.get(s.get("format", ""), "string")
    elif kind in ("integer", "number", "boolean"):
        base = str(kind)
    else:
        base = "any JSON value"
    bounds = _constraints(s)
    return f"{base} ({bounds})" if bounds else base


def _default(model: type[BaseModel], name: str, *, env: bool = False) -> str:
    """The default as a client would write it: JSON, or for ``env`` an environment value."""
    field = model.model_fields[name]
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "all defaults"
    try:
        dumped = TypeAdapter(field.annotation or Any).dump_python(value, mode="json")
    except Exception:  # an exotic default: show it as Python would
        return f"`{value!r}`"
    if env:
        if dumped is None or dumped == []:
            return "unset"
        if isinstance(dumped, bool):
            return f"`{str(dumped).lower()}`"
        return f"`{dumped}`"
    return f"`{json.dumps(dumped, ensure_ascii=False)}`"


# ---------------------------------------------------------------------- models


def _models_in(tp: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models a type annotation mentions, outermost first."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
        return
    origin = get_origin(tp)
    if origin is Literal:
        return
    if origin is Annotated:
        yield from _models_in(get_args(tp)[0])
        return
    for arg in get_args(tp):
        yield from _models_in(arg)


def _reachable(roots: list[Any]) -> list[type[BaseModel]]:
    """Every model the roots use, each once, in the order a reader meets them."""
    seen: list[type[BaseModel]] = []
    queue = [m for r in roots for m in _models_in(r)]
    while queue:
        model = queue.pop(0)
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            queue.extend(_models_in(field.annotation))
    return seen


def _model_section(model: type[BaseModel], names: set[str]) -> str:
    schema = model.model_json_schema(mode="validation", ref_template="#/$defs/{model}")
    defs = schema.get("$defs", {})
    props: dict[str, Any] = schema.get("properties", {})
    docs = _field_docs(model)
    rows = [
        (
            f"`{name}`",
            _type(props.get(name, {}), defs, names),
            _default(model, name),
            docs.get(name, ""),
        )
        for name in model.model_fields
    ]
    parts = [f"### {model.__name__}"]
    if doc := _own_doc(model):
        parts.append(_md(doc))
    parts.append(_table(("field", "type", "default", "meaning"), rows) if rows else "(no fields)")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------- handlers


@dataclass(frozen=True)
class _Handler:
    kind: str
    name: str
    description: str
    doc: str
    inputs: list[tuple[Any, bool]]  # (type, optional)
    output: Any
    validated: bool
    line: int


def _public_model(tp: Any) -> Any:
    """The public model a private decoding subclass stands for.

    Handlers may declare a subclass from a private module (``workflows._inputs``) that
    only changes how validation fails; its JSON is the public base class's, and that
    is the name clients know.
    """
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return tp
    if not tp.__module__.rsplit(".", 1)[-1].startswith("_"):
        return tp
    for base in tp.__mro__[1:]:
        if (
            isinstance(base, type)
            and issubclass(base, BaseModel)
            and base is not BaseModel
            and not base.__name__.startswith("_")
            and not base.__module__.rsplit(".", 1)[-1].startswith("_")
            and base.model_fields.keys() == tp.model_fields.keys()
        ):
            return base
    return tp


def _validated_models(fn: Any, depth: int = 2) -> list[type[BaseModel]]:
    """The models a handler parses its raw input into, with ``Model.model_validate(...)``.

    A signal that must audit even a malformed payload takes ``Any`` and validates it
    itself, so its signature does not name its model; its source (and that of the
    functions it calls, ``depth`` levels down) does.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return []
    scope: dict[str, Any] = getattr(fn, "__globals__", {})
    found: list[type[BaseModel]] = []
    callees: list[Any] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                callees.append(scope.get(node.func.id))
            continue
        owner = node.func.value
        if not isinstance(owner, ast.Name):
            continue
        target = scope.get(owner.id)
        if node.func.attr == "model_validate":
            if isinstance(target, type) and issubclass(target, BaseModel):
                found.append(target)
        elif isinstance(target, ModuleType):
            callees.append(getattr(target, node.func.attr, None))
    if not found and depth > 0:
        for callee in callees:
            if inspect.isfunction(callee):
                found += _validated_models(callee, depth - 1)
    return list(dict.fromkeys(found))


def _handlers(defn: workflow._Definition) -> list[_Handler]:
    found: list[_Handler] = []

    def add(kind: str, name: str, fn: Callable[..., Any], desc: str | None, **kw: Any) -> None:
        # Drop self, and a ``*extra`` that only catches malformed calls (audited as such).
        params = [
            p
            for p in list(inspect.signature(fn).parameters.values())[1:]
            if p.kind is not inspect.Parameter.VAR_POSITIONAL
        ]
        hints = inspect.get_annotations(fn, eval_str=True)
        inputs = [
            (_public_model(hints.get(p.name, Any)), p.default is not inspect.Parameter.empty)
            for p in params
        ]
        if any(tp is Any for tp, _ in inputs):
            parsed = _validated_models(fn)
            if parsed:
                inputs = [(parsed[0] if tp is Any else tp, opt) for tp, opt in inputs]
        # Still ``Any``: the lenient decoding of a signal that audits whatever it gets; its
        # default only keeps a call without a payload from failing, it is no option.
        inputs = [(tp, opt and tp is not Any) for tp, opt in inputs]
        ret = hints.get("return") if kind != "signal" else None
        found.append(
            _Handler(
                kind=kind,
                name=name,
                description=desc or "",
                doc=_own_doc(fn),
                inputs=inputs,
                output=None if ret is type(None) else ret,
                validated=kw.get("validated", False),
                line=inspect.getsourcelines(fn)[1],
            )
        )

    for name, u in defn.updates.items():
        if name is not None:
            add("update", name, u.fn, u.description, validated=u.validator is not None)
    for name, s in defn.signals.items():
        if name is not None:
            add("signal", name, s.fn, s.description)
    for name, q in defn.queries.items():
        if name is not None:
            add("query", name, q.fn, q.description)
    order = {"update": 0, "signal": 1, "query": 2}
    return sorted(found, key=lambda h: (order[h.kind], h.line))


def _type_ref(tp: Any, names: set[str]) -> str:
    if tp is None:
        return "—"
    if isinstance(tp, type) and issubclass(tp, BaseModel) and tp.__name__ in names:
        return f"[`{tp.__name__}`](#{_anchor(tp.__name__)})"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_ref(a, names) for a in get_args(tp) if a is not type(None))
    if origin is list:
        return "list of " + _type_ref(get_args(tp)[0], names)
    return f"`{getattr(tp, '__name__', str(tp))}`"


def _inputs(h: _Handler, names: set[str]) -> str:
    if not h.inputs:
        return "none"
    return ", ".join(
        _type_ref(tp, names) + (" (optional)" if optional else "") for tp, optional in h.inputs
    )


# ---------------------------------------------------------------------- constants


def _public_constants(module: ModuleType) -> Iterator[tuple[str, Any, str]]:
    docs = _module_docs(module)
    for name, doc in docs.items():
        if name.isupper() and not name.startswith("_") and hasattr(module, name):
            yield name, getattr(module, name), doc


def _submodules(package: str) -> list[ModuleType]:
    pkg = importlib.import_module(package)
    mods = [pkg]
    for info in pkgutil.iter_modules(pkg.__path__, package + "."):
        mods.append(importlib.import_module(info.name))
    return mods


def _limit_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, int | float):
        return _number(value)
    return None


# ---------------------------------------------------------------------- the page

_INTRO = """\
# The public contract

<!-- Generated by `{regenerate}` from the code; edit the code, not this file. -->

Everything another program may rely on when it talks to genie conversations: the
workflow type and task queue, every update, signal and query with its JSON input and
output, the error types a request can be refused with, the search attributes, the limits
and the worker's settings. Clients in any language use it through an ordinary Temporal
client; `geniectl` and the Python API (`geniectl.GenieConversations`) are two such
clients.

This page is generated from the code (`workflows/`, `genie_config/`), so it describes
exactly the version it ships with; `tests/docs/test_contract.py` fails when the two
differ. Endpoint names such as E5 refer to [the Headless API notes](headless-api.md).

## Talking to a conversation

- **Payloads are JSON.** The worker uses the SDK's pydantic data converter: every input
  and output below is one JSON object (`json/plain` payload). Field names are the
  interface; unknown fields in an input are ignored, so adding a field is compatible.
  Timestamps are ISO-8601 with a time zone; durations are ISO-8601 (`PT24H`) or seconds.
- **The workflow id is yours.** Use a business key (an order, a ticket, a chat session);
  `geniectl` makes one up (`genie-conv-…`) when you give none. Starting an id that is
  already running attaches to it (`USE_EXISTING`), so "send, starting the conversation
  if needed" is one update-with-start of `send_message`.
- **Updates answer, signals do not.** An update is validated before anything is
  written: a refused one fails with an `ApplicationError` whose `type` is one of the
  [refusal types](#refusal-types) and leaves no trace in the history, except a refused
  decision (`decide_skill`, `decide_connection`), which is kept in the history and the
  `status` audit trail, up to 100 per run. The two decision signals exist for clients
  that cannot send updates (for example the Web UI), or for a run that takes no more
  updates (the server allows 2,000 per run, and a waiting run continues as new before
  it spends them unless the server is set lower): an invalid signal is ignored and
  recorded in the audit trail instead.
- **Queries read, never write.** `status` and `transcript` add nothing to the history.
"""

_FLOW = """\
## How a turn flows

1. `send_message` queues a turn and returns its number at once. Turns run one at a time
   and in order, because the Headless API refuses a second message while a run is active.
2. The worker posts the message (E5) and reads the run's event stream. A dropped stream
   is resumed from the last event it delivered (E8, then E9); a message whose answer was
   lost is found again through the conversation's state (E3) instead of being posted a
   second time.
3. When the genie asks for a **skill confirmation** or a **runtime connection**, the turn
   becomes `awaiting_approval` / `awaiting_connection` and the workflow waits for a
   decision, up to the policy's deadline, holding no worker resources. The pause shows
   in `status` (`pending_approvals`, `pending_connections`), in the search attributes
   and on the conversation's page in the Web UI.
4. A decision (`decide_skill` / `skill_decision`, `decide_connection` /
   `connection_decision`) is posted to the API once (E10, E12), and the run continues.
   A skill decision is posted by the activity that then streams the rest of the run (one
   activity); if that activity cannot post it, a decision activity of its own does.
   With no decision by the deadline the policy decides (`on_approval_timeout`).
5. At the end of the run the turn is `completed` with the genie's `reply` and every
   intermediate message, or `failed` with an `error` that names the API's `error_code`
   and `request_id`.

## Waiting for a turn

A caller that wants a turn's outcome sets `SendMessage.wait_for` (one round trip) or calls
`wait_turn` afterwards; an approver's client can do the same with `SkillDecision.wait_for`
("approve and give me the reply"). `attention` returns when the turn ends *or* first needs a human;
`completion` only when it ends. With a timeout the turn is returned as it stands when
the time is up; call again to keep waiting. A wait that is in progress when the
conversation continues as new returns early with the turn not yet ended: ask the same
workflow id again (`GenieConversations.wait` does this).

## Decisions, and who may make them

- `policy.approvers` lists who may decide; empty means anyone who can send updates and
  signals to the namespace. The name in a decision is what the caller says it is: the
  audit trail records it, and Temporal's own access control decides who can send.
- A decision is accepted once. A repeat is refused (`AlreadyDecided`); one for an id
  this conversation is not waiting on is refused with the ids it *is* waiting on; one
  that arrives after the item's deadline is refused too, and the policy's timeout action
  applies. Only with `policy.allow_early_decisions` is a decision for a pause not shown
  yet kept, until that pause shows up or the turn ends.
- Every decision, refused signal, timeout and detected connection is in `status.audit`.
"""


def render_contract() -> str:
    """The whole ``docs/contract.md`` for the code as it is now (deterministic)."""
    # Imported here, not at module import: `geniectl` must start even if the page's
    # sources cannot be introspected, and the imports are heavy for the other commands.
    import workflows
    from genie_config import GenieSettings
    from workflows import GenieConversation

    defn = workflow._Definition.from_class(GenieConversation)
    if defn is None:
        raise RuntimeError("GenieConversation is not a workflow definition")
    handlers = _handlers(defn)
    run_hints = inspect.get_annotations(defn.run_fn, eval_str=True)
    run_params = list(inspect.signature(defn.run_fn).parameters.values())[1:]
    start_type = _public_model(run_hints.get(run_params[0].name)) if run_params else None
    result_type = run_hints.get("return")
    roots: list[Any] = [start_type]
    for h in handlers:
        roots += [tp for tp, _ in h.inputs]
        roots.append(h.output)
    roots.append(result_type)
    models = _reachable([r for r in roots if r is not None])
    names = {m.__name__ for m in models}

    out: list[str] = [_INTRO.format(regenerate=REGENERATE)]
    out.append("## Workflow\n")
    out.append(
        _table(
            ("", "value"),
            [
                ("workflow type", f"`{defn.name}`"),
                ("default task queue", f"`{workflows.DEFAULT_TASK_QUEUE}` (`GENIE_TASK_QUEUE`)"),
                ("input", _type_ref(start_type, names)),
                ("result (when the conversation ends)", _type_ref(result_type, names)),
            ],
        )
    )
    if doc := _own_doc(GenieConversation):
        out.append("\n" + _md(doc))

    out.append("\n## Updates, signals and queries\n")
    out.append(
        _table(
            ("kind", "name", "input", "output", "what it does"),
            [
                (
                    h.kind + (" (validated)" if h.validated else ""),
                    f"[`{h.name}`](#{_anchor(_handler_heading(h.name, h.kind))})",
                    _inputs(h, names),
                    _type_ref(h.output, names) if h.kind != "signal" else "—",
                    h.description,
                )
                for h in handlers
            ],
        )
    )
    for h in handlers:
        out.append(f"\n### {_handler_heading(h.name, h.kind)}\n")
        out.append(f"{h.kind.capitalize()}. {_md(h.description)}")
        out.append(
            f"\nInput: {_inputs(h, names)}."
            + (f" Output: {_type_ref(h.output, names)}." if h.kind != "signal" else "")
        )
        if h.doc:
            out.append("\n" + _md(h.doc))

    out.append("\n" + _FLOW)

    from workflows import errors

    out.append("## Refusal types\n")
    out.append(
        "A refused request fails with an `ApplicationError` whose `type` is one of these "
        "(constants in `workflows/errors.py`); the message says why and, for an unknown "
        "id, what the conversation is waiting on. Match on the type, never on the text.\n"
    )
    out.append(
        _table(
            ("type", "when"),
            [(f"`{v}`", doc) for _, v, doc in _public_constants(errors) if isinstance(v, str)],
        )
    )
    out.append(_api_errors())

    out.append("\n## Search attributes\n")
    out.append(
        "Registered on the namespace (`geniectl dev` and `deploy/temporal/init.sh` do it). "
        "They hold ids and states, never message text. Filter in the Web UI or with "
        "`temporal workflow list --query 'GenieState=\"awaiting_approval\"'`.\n"
    )
    out.append(_search_attributes())

    out.append("\n## Limits\n")
    out.append(
        "The bounds the code documents. A request over an input bound is refused up front; "
        "state over a storage bound is trimmed as its line says.\n"
    )
    out.append(_limits())

    out.append("\n## Models\n")
    out.append(
        "Inputs may leave out any field that has a default; outputs always carry every "
        "field. Types are JSON types.\n"
    )
    out.extend("\n" + _model_section(m, names) for m in models)

    out.append("\n## Worker configuration\n")
    out.append(_settings(GenieSettings))
    return "\n".join(out).rstrip() + "\n"


def _api_errors() -> str:
    """The error types a failed turn's ``error`` / ``last_error`` may carry."""
    from genie_api import GenieAPIError

    rows: list[tuple[str, str]] = []
    stack: list[type[GenieAPIError]] = [GenieAPIError]
    while stack:
        cls = stack.pop(0)
        meaning = (
            "another HTTP error from the Headless API (its `status` says which)"
            if cls is GenieAPIError
            else _own_doc(cls).split("\n\n")[0]
        )
        rows.append((f"`{cls.error_type}`", meaning))
        stack.extend(sorted(cls.__subclasses__(), key=lambda c: c.error_type))
    try:
        worker_errors = importlib.import_module("activities._errors")
    except ImportError:  # pragma: no cover - the module moved; the table shrinks
        worker_errors = None
    if worker_errors is not None:
        rows += [
            (f"`{v}`", doc) for _, v, doc in _public_constants(worker_errors) if isinstance(v, str)
        ]
    return (
        "\n### Errors in a turn\n\n"
        "A turn that fails has an `error` (and the conversation a `last_error`): an "
        "[`ErrorInfo`](#errorinfo) whose `type` is one of these, with the API's "
        "`status`, `error_code` and `request_id` when the Headless API answered.\n\n"
        + _table(("type", "meaning"), rows)
    )


# Until ``workflows/search_attributes.py`` documents each key, say what each holds here.
_SEARCH_ATTRIBUTE_NOTES = {
    "GenieHandle": "the genie the conversation talks to (`genie_handle`)",
    "GenieConversationId": "the Headless API's `conversation_id`, once created",
    "GenieUserId": "the end user (`user_id`)",
    "GenieAwaitingSince": "when the current wait for a human began; unset when none",
}


def _search_attributes() -> str:
    from workflows import search_attributes as sa

    docs = _module_docs(sa)
    rows = []
    for const, value in vars(sa).items():
        if isinstance(value, SearchAttributeKey) and value in sa.ALL_SEARCH_ATTRIBUTES:
            kind = value.indexed_value_type.name.capitalize()
            meaning = docs.get(const) or _SEARCH_ATTRIBUTE_NOTES.get(value.name, "")
            rows.append((f"`{value.name}`", kind, meaning))
    return _table(("name", "type", "holds"), rows)


def _limits() -> str:
    modules = _submodules("workflows")
    # The turn-size cap lives with the activity that enforces it.
    with contextlib.suppress(ImportError):
        modules.append(importlib.import_module("activities.models"))
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for module in modules:
        for name, value, doc in _public_constants(module):
            shown = _limit_value(value)
            if shown is None or name in seen:
                continue
            seen.add(name)
            rows.append((f"`{name}`", shown, doc))
    return _table(("name", "value", "meaning"), rows)


# Until every setting in ``genie_config`` carries its own docstring, say what it does here.
_SETTING_NOTES = {
    "api_base_url": "Headless API base URL, e.g. `https://genie-api.workato.com` (your data "
    "centre's host); the default is the local simulator",
    "api_key": "the genie client's API key (set this or `GENIE_API_KEY_FILE`)",
    "api_key_file": "a file holding the API key (Docker / Kubernetes secrets)",
    "task_queue": "the task queue the worker polls; `geniectl` reads it too",
    "metrics_host": "bind address of the metrics endpoint (`0.0.0.0` in containers)",
    "max_concurrent_workflow_tasks": "workflow tasks one worker runs at once",
    "graceful_shutdown_seconds": "on SIGTERM, how long in-flight work may finish",
    "log_level": "`DEBUG`, `INFO`, `WARNING` or `ERROR`",
}


def _settings(settings: type[BaseModel]) -> str:
    prefix = str(settings.model_config.get("env_prefix", ""))
    docs = _field_docs(settings)
    schema = settings.model_json_schema(mode="validation")
    props: dict[str, Any] = schema.get("properties", {})
    rows = []
    for name in settings.model_fields:
        meaning = docs.get(name) or _SETTING_NOTES.get(name, "")
        rows.append(
            (
                f"`{prefix}{name.upper()}`",
                _type(props.get(name, {}), schema.get("$defs", {}), set()),
                _default(settings, name, env=True),
                meaning,
            )
        )
    return (
        textwrap.dedent(
            """\
        The worker reads `GENIE_*` variables (and `geniectl` reads `GENIE_TASK_QUEUE`). A bad
        value stops the worker before it connects, with one line naming the variable.

        """
        )
        + _table(("variable", "type", "default", "meaning"), rows)
        + textwrap.dedent(
            """

        Temporal itself is configured the SDK's standard way (`temporalio.envconfig`), for
        the worker and `geniectl` alike: `TEMPORAL_ADDRESS` (default `localhost:7233`),
        `TEMPORAL_NAMESPACE` (default `default`), `TEMPORAL_API_KEY`, `TEMPORAL_TLS_*`, or
        a profile from `TEMPORAL_CONFIG_FILE` / `TEMPORAL_PROFILE`.
        """
        )
    )


# ---------------------------------------------------------------------- command


def contract(
    write: Path | None = typer.Option(  # noqa: B008 (typer's way of declaring options)
        None, "--write", help="Write the contract to this file.", metavar="FILE"
    ),
    check: Path | None = typer.Option(  # noqa: B008
        None, "--check", help="Exit 1 if this file differs from the contract.", metavar="FILE"
    ),
) -> None:
    """Print the public contract (markdown), read from the code of this version."""
    text = render_contract()
    if check is not None:
        current = check.read_text() if check.exists() else ""
        if current != text:
            print(f"{check} is out of date; regenerate it with: {REGENERATE}", file=sys.stderr)
            raise typer.Exit(1)
        return
    if write is not None:
        write.write_text(text)
        return
    sys.stdout.write(text)
