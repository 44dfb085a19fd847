"""Plays a run's script server-side, independently of any connection."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ._script import (
    SKILL_PARAMETER_SCHEMA,
    Confirm,
    Connect,
    Delay,
    Fail,
    Outcome,
    RunSkill,
    Say,
    apology,
    failure_error,
    final_reply,
    skill_id,
    skill_parameters,
)
from ._store import Event, Run, Store

logger = logging.getLogger("genie_sim")

AUTH_SUCCESS = "runtime_connection.auth_success"


class ReplayMismatch(Exception):
    """A restored run's log does not follow its script (the flags changed across a restart)."""


class _Player:
    """Appends a run's events to its log, waiting ``delay`` before each one.

    A run restored from a state file already has part of its log. The script is then
    played again from the start, but every event the log already holds is consumed instead
    of emitted (no wait, no append), so the run continues exactly where its log ends. The
    player is *replaying* while such logged events remain.
    """

    __slots__ = ("delay", "pos", "replay_end", "run", "store")

    def __init__(self, store: Store, run: Run) -> None:
        self.store = store
        self.run = run
        self.delay = 0.0
        self.pos = 1
        """Events of the log accounted for (``processing.started`` precedes the script)."""
        self.replay_end = len(run.events)

    @property
    def replaying(self) -> bool:
        return self.pos < self.replay_end

    async def wait(self) -> None:
        if self.delay > 0 and not self.replaying:
            await asyncio.sleep(self.delay)

    def logged(self, type_: str) -> Event | None:
        """Consume the next logged event (it must be of ``type_``); ``None`` once live."""
        if not self.replaying:
            return None
        event = self.run.events[self.pos]
        if event.type != type_:
            raise ReplayMismatch(
                f"expected {type_} at seq_num {self.pos + 1}, the log has {event.type}"
            )
        self.pos += 1
        return event

    def put(self, type_: str, fields: dict[str, Any]) -> Event:
        """The logged event while replaying, else a newly appended one."""
        event = self.logged(type_)
        if event is None:
            event = self.store.append(self.run, type_, fields)
            self.pos += 1
        return event

    async def emit(self, type_: str, **fields: object) -> Event:
        await self.wait()
        return self.put(type_, fields)

    async def say(self, text: str) -> None:
        await self.wait()
        if self.logged("agent.message") is None:
            self.store.say(self.run, text)
            self.pos += 1

    async def skill(self, name: str, *, fails: bool = False) -> None:
        # The flag flips together with the event (no await in between) so that E3 reads
        # skill_processing exactly while the skill is between running and its end.
        ident = skill_id(name)
        await self.wait()
        self.run.skill_active = True
        self.put("skill.running", {"skill_name": name, "skill_id": ident})
        if fails:
            await self.wait()
            self.run.skill_active = False
            fields = {"skill_name": name, "skill_id": ident, "error": failure_error(name)}
            self.put("skill.failed", fields)
            return
        # Production runs some skills in parallel: one skill.running, then an end event
        # for each of them (the others never say running); the last may be skill.stopped.
        config = self.store.config
        names = [name] + [f"{name} (parallel {i})" for i in range(2, config.parallel_skills + 1)]
        for i, each in enumerate(names):
            last = i == len(names) - 1
            await self.wait()
            if last:
                self.run.skill_active = False
            end = "skill.stopped" if last and config.skill_stopped else "skill.completed"
            self.put(end, {"skill_name": each, "skill_id": skill_id(each)})


def _logged_field(event: Event, name: str) -> str:
    value = json.loads(event.json).get(name)
    if not isinstance(value, str):
        raise ReplayMismatch(f"{event.type} {event.event_id} has no {name}")
    return value


async def run_script(store: Store, run: Run) -> None:
    """Execute ``run.script`` after ``processing.started`` (already appended).

    Pauses on ``confirm:`` / ``connect:`` until the decision arrives (E10, the auth link,
    E12). Cancelled by reset or deletion. If the script itself crashes (a simulator bug)
    the run is still finished so that the conversation does not stay busy forever.

    A run restored from a state file is played through this same function: the part of
    the script its log already holds is replayed without emitting anything (see
    :class:`_Player`), its pending confirmation or connection is the restored one.

    Args:
        store: Simulator state.
        run: The run to play.
    """
    player = _Player(store, run)
    outcome = Outcome()
    config = store.config
    try:
        for step in run.script.steps:
            if isinstance(step, Delay):
                player.delay = step.ms / 1000
            elif isinstance(step, Say):
                await player.say(step.text)
            elif isinstance(step, RunSkill):
                await player.skill(step.skill)
                outcome.ran.append(step.skill)
            elif isinstance(step, Fail):
                await player.skill(step.skill, fails=True)
                outcome.failed.append(step.skill)
                await player.say(apology(step.skill))
            elif isinstance(step, Confirm):
                await player.wait()
                logged = player.logged("skill.confirmation_required")
                if logged is not None:
                    call = store.calls[_logged_field(logged, "call_id")]
                else:
                    call = store.new_call(run, step.skill)
                    player.put(
                        "skill.confirmation_required",
                        {
                            "call_id": call.call_id,
                            "skill_name": step.skill,
                            "skill_id": skill_id(step.skill),
                            "skill_parameters": skill_parameters(run.script),
                            "skill_parameter_schema": list(SKILL_PARAMETER_SCHEMA),
                        },
                    )
                decision = await call.future
                if decision.approved:
                    await player.skill(step.skill)
                    outcome.ran.append(step.skill)
                else:
                    outcome.rejected.append((step.skill, decision.reason))
            elif isinstance(step, Connect):
                await player.wait()
                logged = player.logged("runtime_connection.auth_required")
                if logged is not None:
                    attempt = store.attempts[_logged_field(logged, "runtime_connection_attempt_id")]
                else:
                    attempt = store.new_attempt(run, step.connector)
                    link = store.issue_link(attempt, run.base_url)
                    player.put(
                        "runtime_connection.auth_required",
                        {
                            "runtime_connection_attempt_id": attempt.attempt_id,
                            "connector_name": step.connector,
                            "auth_link": link,
                        },
                    )
                if await attempt.future:
                    auth_success = {
                        "runtime_connection_attempt_id": attempt.attempt_id,
                        "connector_name": step.connector,
                    }
                    if player.replaying:
                        # Whatever the flag says now, follow what the log shows was done.
                        if player.run.events[player.pos].type == AUTH_SUCCESS:
                            player.put(AUTH_SUCCESS, auth_success)
                    elif not config.no_auth_success:
                        await player.emit(AUTH_SUCCESS, **auth_success)
                    await player.skill(step.connector)
                    outcome.ran.append(step.connector)
                else:
                    outcome.declined.append(step.connector)
        await player.say(final_reply(run.script.text, outcome))
        await player.wait()
        if player.replaying:
            raise ReplayMismatch("the log goes on past the end of the script")
        store.finish(run)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("script of %s crashed; finishing the run", run.run_id)
        store.finish(run)
