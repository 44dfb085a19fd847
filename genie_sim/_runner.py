"""Plays a run's script server-side, independently of any connection."""

from __future__ import annotations

import asyncio
import logging

from ._script import (
    SKILL_PARAMETER_SCHEMA,
    Confirm,
    Connect,
    Delay,
    Fail,
    Outcome,
    Say,
    apology,
    failure_error,
    final_reply,
    skill_id,
    skill_parameters,
)
from ._store import Run, Store

logger = logging.getLogger("genie_sim")


class _Player:
    """Appends a run's events to its log, waiting ``delay`` before each one."""

    __slots__ = ("delay", "run", "store")

    def __init__(self, store: Store, run: Run) -> None:
        self.store = store
        self.run = run
        self.delay = 0.0

    async def wait(self) -> None:
        if self.delay > 0:
            await asyncio.sleep(self.delay)

    async def emit(self, type_: str, **fields: object) -> None:
        await self.wait()
        self.store.append(self.run, type_, fields)

    async def skill(self, name: str, *, fails: bool = False) -> None:
        # The flag flips together with the event (no await in between) so that E3 reads
        # skill_processing exactly while the skill is between running and its end.
        ident = skill_id(name)
        await self.wait()
        self.run.skill_active = True
        self.store.append(self.run, "skill.running", {"skill_name": name, "skill_id": ident})
        await self.wait()
        self.run.skill_active = False
        if fails:
            fields = {"skill_name": name, "skill_id": ident, "error": failure_error(name)}
            self.store.append(self.run, "skill.failed", fields)
        else:
            self.store.append(self.run, "skill.completed", {"skill_name": name, "skill_id": ident})


async def run_script(store: Store, run: Run) -> None:
    """Execute ``run.script`` after ``processing.started`` (already appended).

    Pauses on ``confirm:`` / ``connect:`` until the decision arrives (E10, the auth link,
    E12). Cancelled by reset or deletion. If the script itself crashes (a simulator bug)
    the run is still finished so that the conversation does not stay busy forever.

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
                await player.wait()
                store.say(run, step.text)
            elif isinstance(step, Fail):
                await player.skill(step.skill, fails=True)
                outcome.failed.append(step.skill)
                await player.wait()
                store.say(run, apology(step.skill))
            elif isinstance(step, Confirm):
                await player.wait()
                call = store.new_call(run, step.skill)
                store.append(
                    run,
                    "skill.confirmation_required",
                    {
                        "call_id": call.call_id,
                        "skill_name": step.skill,
                        "skill_id": skill_id(step.skill),
                        "skill_parameters": skill_parameters(run.script.text),
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
                attempt = store.new_attempt(run, step.connector)
                link = store.issue_link(attempt, run.base_url)
                store.append(
                    run,
                    "runtime_connection.auth_required",
                    {
                        "runtime_connection_attempt_id": attempt.attempt_id,
                        "connector_name": step.connector,
                        "auth_link": link,
                    },
                )
                if await attempt.future:
                    if not config.no_auth_success:
                        await player.emit(
                            "runtime_connection.auth_success",
                            runtime_connection_attempt_id=attempt.attempt_id,
                            connector_name=step.connector,
                        )
                    await player.skill(step.connector)
                    outcome.ran.append(step.connector)
                else:
                    outcome.declined.append(step.connector)
        await player.wait()
        store.say(run, final_reply(run.script.text, outcome))
        await player.wait()
        store.finish(run)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("script of %s crashed; finishing the run", run.run_id)
        store.finish(run)
