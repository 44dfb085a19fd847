"""``--state-file``: the whole simulator state as one versioned JSON document.

Saved once, atomically, on a graceful shutdown (after the last request); loaded on
start, before the first request. Format (``version`` 1), all times ISO-8601 UTC with
microseconds unless the name ends in ``_us``::

    {"version": 1, "saved_at": "…Z",
     "clock": {"offset_us": 0, "last_stamp_us": 1700000000000000},
     "ids": {"boot": "<11 hex digits>", "next": 42},
     "conversations": [{
        "conversation_id", "genie_handle", "user_id", "topic", "created_at", "updated_at",
        "last_event": {<E3 last_event>} | null,
        "messages": [<E6 items, oldest first>],
        "files": [{"file_id", "filename", "content_type", "size"}],
        "runs": [{
           "genie_run_id", "message" (the script's text), "base_url",
           "status": "running" | "awaiting_confirmation" | "awaiting_connection" | "finished",
           "skill_active", "hidden_from" (int | null), "expired", "feedback" ({…} | null),
           "events": [<event data, seq_num order>],
           "event_id_aliases": {"evt_…": <position>},
           "skill_calls": [{"call_id", "skill",
                            "decision": null | {"approved": bool, "reason": str | null}}],
           "connection_attempts": [{"attempt_id", "connector",
                                    "status": "pending" | "authorized" | "rejected",
                                    "auth_links": [{"token", "expires_at"}]}]}]}]}

E9's per-conversation index is rebuilt from the run logs; stats, faults and open streams
are not kept. A run that was not finished is played again by ``_runner.run_script``, which
consumes the events its log already holds and continues live from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

from ._clock import iso, parse_iso
from ._script import parse_script
from ._store import (
    NOT_PERSISTED,
    ConnectionAttempt,
    Conversation,
    Decision,
    Event,
    Message,
    Run,
    RunStatus,
    SkillCall,
    Store,
    UploadedFile,
    encode_event,
)

FORMAT_VERSION = 1


class StateFileError(Exception):
    """The state file cannot be used; the message is one line naming the file and why."""


# -- saving -------------------------------------------------------------------------------


def save_state(store: Store, path: Path) -> None:
    """Write the whole state to ``path`` atomically (temp file, fsync, ``os.replace``).

    Raises:
        OSError: The file could not be written (``path`` is then left as it was).
    """
    text = json.dumps(dump_state(store), separators=(",", ":"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # Make the rename itself durable; not every filesystem lets a directory be fsync'd.
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def dump_state(store: Store) -> dict[str, object]:
    """The state document (see the module docstring)."""
    calls: dict[Run, list[SkillCall]] = {}
    for call in store.calls.values():
        calls.setdefault(call.run, []).append(call)
    attempts: dict[Run, list[ConnectionAttempt]] = {}
    for attempt in store.attempts.values():
        attempts.setdefault(attempt.run, []).append(attempt)
    return {
        "version": FORMAT_VERSION,
        "saved_at": iso(store.clock.now_us()),
        "clock": {"offset_us": store.clock.offset_us, "last_stamp_us": store.clock.last_stamp_us},
        "ids": {"boot": store.ids.boot, "next": store.ids.next_counter},
        "conversations": [
            _dump_conversation(conv, calls, attempts) for conv in store.conversations.values()
        ],
    }


def _dump_conversation(
    conv: Conversation,
    calls: dict[Run, list[SkillCall]],
    attempts: dict[Run, list[ConnectionAttempt]],
) -> dict[str, object]:
    return {
        "conversation_id": conv.conversation_id,
        "genie_handle": conv.genie_handle,
        "user_id": conv.user_id,
        "topic": conv.topic,
        "created_at": iso(conv.created_us),
        "updated_at": iso(conv.updated_us),
        "last_event": json.loads(conv.last_event.json) if conv.last_event else None,
        "messages": [m.as_json() for m in conv.messages],
        "files": [
            {
                "file_id": f.file_id,
                "filename": f.filename,
                "content_type": f.content_type,
                "size": f.size,
            }
            for f in conv.files.values()
        ],
        "runs": [
            _dump_run(run, calls.get(run, []), attempts.get(run, [])) for run in conv.runs.values()
        ],
    }


def _dump_run(
    run: Run, calls: list[SkillCall], attempts: list[ConnectionAttempt]
) -> dict[str, object]:
    events = run.events
    aliases = {
        event_id: pos
        for event_id, pos in run.index.items()
        if not (0 <= pos < len(events) and events[pos].event_id == event_id)
    }
    return {
        "genie_run_id": run.run_id,
        "message": run.script.text,
        "base_url": run.base_url,
        "status": run.status.value,
        "skill_active": run.skill_active,
        "hidden_from": run.hidden_from,
        "expired": run.expired,
        "feedback": run.feedback,
        "events": [json.loads(e.json) for e in events],
        "event_id_aliases": aliases,
        "skill_calls": [
            {
                "call_id": c.call_id,
                "skill": c.skill,
                "decision": (
                    {"approved": c.decision.approved, "reason": c.decision.reason}
                    if c.resolved and c.decision is not None
                    else None
                ),
            }
            for c in calls
        ],
        "connection_attempts": [
            {
                "attempt_id": a.attempt_id,
                "connector": a.connector,
                "status": a.status,
                "auth_links": [
                    {"token": token, "expires_at": iso(expires)}
                    for token, expires in a.tokens.items()
                ],
            }
            for a in attempts
        ],
    }


# -- loading ------------------------------------------------------------------------------


class _Invalid(Exception):
    """What is wrong with the document, and where."""


class _Obj:
    """A JSON object being read; every accessor checks the type and names the place."""

    __slots__ = ("data", "where")

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(f"{where}: expected an object")
        self.data: dict[str, Any] = value
        self.where = where

    def _at(self, key: str) -> str:
        return f"{self.where}.{key}"

    def get(self, key: str) -> object:
        if key not in self.data:
            raise _Invalid(f"{self._at(key)}: missing")
        return self.data[key]

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            raise _Invalid(f"{self._at(key)}: expected a string")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self.get(key) is None else self.text(key)

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid(f"{self._at(key)}: expected an integer >= {minimum}")
        return value

    def opt_integer(self, key: str) -> int | None:
        return None if self.get(key) is None else self.integer(key)

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise _Invalid(f"{self._at(key)}: expected true or false")
        return value

    def time(self, key: str) -> int:
        text = self.text(key)
        try:
            return parse_iso(text)
        except ValueError:
            raise _Invalid(f"{self._at(key)}: not an ISO-8601 timestamp") from None

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in choices:
            raise _Invalid(f"{self._at(key)}: expected one of {', '.join(choices)}")
        return value

    def obj(self, key: str) -> _Obj:
        return _Obj(self.get(key), self._at(key))

    def opt_obj(self, key: str) -> _Obj | None:
        return None if self.get(key) is None else self.obj(key)

    def objs(self, key: str) -> Iterator[_Obj]:
        value = self.get(key)
        if not isinstance(value, list):
            raise _Invalid(f"{self._at(key)}: expected a list")
        for i, item in enumerate(value):
            yield _Obj(item, f"{self._at(key)}[{i}]")


def load_state(store: Store, path: Path) -> bool:
    """Load ``path`` into an empty ``store`` and resume its unfinished runs.

    Must run inside the event loop (pending decisions are futures, runs are tasks).
    Nothing is changed in ``store`` unless the whole file is valid.

    Returns:
        ``False`` if there is no such file (a fresh start), ``True`` once loaded.

    Raises:
        StateFileError: The file exists but cannot be read or is not a valid state.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise StateFileError(
                f"state file {path}: its directory {path.parent} does not exist"
            ) from None
        return False
    except OSError as e:
        raise StateFileError(f"state file {path}: cannot read it ({e.strerror or e})") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateFileError(f"state file {path}: not valid JSON ({e})") from None
    try:
        _Loader(store).load(doc)
    except _Invalid as e:
        raise StateFileError(f"state file {path}: invalid state ({e})") from None
    return True


class _Loader:
    """Builds every object first, then commits them to the store in one go."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loop = asyncio.get_running_loop()
        self.conversations: dict[str, Conversation] = {}
        self.calls: dict[str, SkillCall] = {}
        self.attempts: dict[str, ConnectionAttempt] = {}
        self.latest_us = 0

    def load(self, doc: object) -> None:
        top = _Obj(doc, "document")
        version = top.data.get("version")
        if version != FORMAT_VERSION:
            raise _Invalid(f"version {version!r} is not supported (expected {FORMAT_VERSION})")
        clock = top.obj("clock")
        offset_us = clock.integer("offset_us")
        last_stamp_us = clock.integer("last_stamp_us")
        ids = top.obj("ids")
        boot, next_counter = ids.text("boot"), ids.integer("next", minimum=1)
        for item in top.objs("conversations"):
            conv = self._conversation(item)
            if conv.conversation_id in self.conversations:
                raise _Invalid(f"{item.where}: duplicate conversation {conv.conversation_id}")
            self.conversations[conv.conversation_id] = conv
        try:
            self.store.ids.restore(boot, next_counter)
        except ValueError as e:
            raise _Invalid(f"document.ids: {e}") from None
        # Commit: nothing below can fail.
        store = self.store
        store.clock.restore(offset_us, max(last_stamp_us, self.latest_us))
        store.conversations.update(self.conversations)
        store.calls.update(self.calls)
        store.attempts.update(self.attempts)
        for conv in self.conversations.values():
            store.stats.conversation(conv.conversation_id).runs.extend(conv.runs)
        store.purge_expired()
        for conv in self.conversations.values():
            if conv.active_run is not None:
                store.play(conv.active_run)

    def _stamp(self, us: int) -> int:
        self.latest_us = max(self.latest_us, us)
        return us

    def _conversation(self, item: _Obj) -> Conversation:
        conv = Conversation(
            conversation_id=item.text("conversation_id"),
            genie_handle=item.text("genie_handle"),
            user_id=item.text("user_id"),
            created_us=self._stamp(item.time("created_at")),
            updated_us=self._stamp(item.time("updated_at")),
            topic=item.opt_text("topic"),
        )
        for f in item.objs("files"):
            record = UploadedFile(
                file_id=f.text("file_id"),
                filename=f.text("filename"),
                content_type=f.text("content_type"),
                size=f.integer("size"),
            )
            conv.files[record.file_id] = record
        for m in item.objs("messages"):
            source = cast(Literal["user", "genie"], m.choice("source", ("user", "genie")))
            file_id = m.opt_text("file_id") if "file_id" in m.data else None
            conv.messages.append(
                Message(
                    message_id=m.text("message_id"),
                    source=source,
                    content=m.text("content"),
                    genie_run_id=m.text("genie_run_id"),
                    created_us=self._stamp(m.time("created_at")),
                    file_id=file_id,
                )
            )
        for r in item.objs("runs"):
            run = self._run(r, conv)
            if run.run_id in conv.runs:
                raise _Invalid(f"{r.where}: duplicate run {run.run_id}")
            conv.runs[run.run_id] = run
            if run.status is not RunStatus.FINISHED:
                if conv.active_run is not None:
                    raise _Invalid(f"{r.where}: a second unfinished run in one conversation")
                conv.active_run = run
        last = item.opt_obj("last_event")
        if last is not None:
            conv.last_event = self._event(last, conv, None, None)
        visible = [
            e
            for run in conv.runs.values()
            for e in run.events
            if not e.hidden and e.type not in NOT_PERSISTED
        ]
        visible.sort(key=lambda e: e.created_us)
        conv.events = visible
        conv.event_times = [e.created_us for e in visible]
        return conv

    def _event(self, item: _Obj, conv: Conversation, run: Run | None, seq: int | None) -> Event:
        item.text("type")
        item.text("event_id")
        seq_num = item.integer("seq_num", minimum=1)
        if seq is not None and seq_num != seq:
            raise _Invalid(f"{item.where}.seq_num: expected {seq}")
        if item.text("conversation_id") != conv.conversation_id:
            raise _Invalid(f"{item.where}.conversation_id: not {conv.conversation_id}")
        if run is not None and item.text("genie_run_id") != run.run_id:
            raise _Invalid(f"{item.where}.genie_run_id: not {run.run_id}")
        created = self._stamp(item.time("created_at"))
        hidden = run is not None and run.hidden_from is not None and seq_num > run.hidden_from
        return encode_event(item.data, created, hidden)

    def _run(self, item: _Obj, conv: Conversation) -> Run:
        status = RunStatus(
            item.choice("status", tuple(s.value for s in RunStatus)),
        )
        run = Run(
            run_id=item.text("genie_run_id"),
            conversation=conv,
            script=parse_script(item.text("message")),
            base_url=item.text("base_url"),
            status=status,
            skill_active=item.flag("skill_active"),
            hidden_from=item.opt_integer("hidden_from"),
            expired=item.flag("expired"),
        )
        feedback = item.opt_obj("feedback")
        run.feedback = feedback.data if feedback is not None else None
        for i, e in enumerate(item.objs("events")):
            event = self._event(e, conv, run, i + 1)
            if event.event_id in run.index:
                raise _Invalid(f"{e.where}.event_id: duplicate {event.event_id}")
            run.index[event.event_id] = i
            run.events.append(event)
        if run.hidden_from is not None and run.hidden_from > len(run.events):
            raise _Invalid(f"{item.where}.hidden_from: past the end of the run's events")
        if status is not RunStatus.FINISHED and not run.events:
            raise _Invalid(f"{item.where}: an unfinished run without events")
        aliases = item.obj("event_id_aliases")
        for alias in aliases.data:
            pos = aliases.integer(alias, minimum=-1)
            if pos >= len(run.events):
                raise _Invalid(f"{aliases.where}.{alias}: past the end of the run's events")
            run.index.setdefault(alias, pos)
        own_calls: set[str] = set()
        for c in item.objs("skill_calls"):
            own_calls.add(self._call(c, run))
        own_attempts: set[str] = set()
        for a in item.objs("connection_attempts"):
            own_attempts.add(self._attempt(a, run))
        # The runner looks these up when it replays a paused step.
        for i, event in enumerate(run.events):
            if event.type == "skill.confirmation_required":
                ref, own, what = "call_id", own_calls, "skill call"
            elif event.type == "runtime_connection.auth_required":
                ref, own, what = "runtime_connection_attempt_id", own_attempts, "attempt"
            else:
                continue
            if json.loads(event.json).get(ref) not in own:
                raise _Invalid(f"{item.where}.events[{i}].{ref}: no such {what} in this run")
        return run

    def _call(self, item: _Obj, run: Run) -> str:
        call_id = item.text("call_id")
        if call_id in self.calls:
            raise _Invalid(f"{item.where}.call_id: duplicate {call_id}")
        decided = item.opt_obj("decision")
        decision = (
            Decision(decided.flag("approved"), decided.opt_text("reason"))
            if decided is not None
            else None
        )
        call = SkillCall(
            call_id=call_id,
            run=run,
            skill=item.text("skill"),
            future=self.loop.create_future(),
            resolved=decision is not None,
            decision=decision,
        )
        if decision is not None:
            call.future.set_result(decision)
        self.calls[call_id] = call
        return call_id

    def _attempt(self, item: _Obj, run: Run) -> str:
        attempt_id = item.text("attempt_id")
        if attempt_id in self.attempts:
            raise _Invalid(f"{item.where}.attempt_id: duplicate {attempt_id}")
        status = cast(
            Literal["pending", "authorized", "rejected"],
            item.choice("status", ("pending", "authorized", "rejected")),
        )
        attempt = ConnectionAttempt(
            attempt_id=attempt_id,
            run=run,
            connector=item.text("connector"),
            future=self.loop.create_future(),
            status=status,
        )
        for link in item.objs("auth_links"):
            attempt.tokens[link.text("token")] = link.time("expires_at")
        if status != "pending":
            attempt.future.set_result(status == "authorized")
        self.attempts[attempt_id] = attempt
        return attempt_id
