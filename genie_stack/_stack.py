"""The stack as one thing: Temporal and the simulator, then the worker (and the inbox, when
asked for); stopped in reverse."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from genie_stack._inbox import InboxProcess, inbox_env
from genie_stack._ports import free_port
from genie_stack._process import Child, start_together
from genie_stack._services import Simulator, TemporalDevServer, WorkerProcess, worker_env
from workflows import DEFAULT_TASK_QUEUE


class LocalStack:
    """A Temporal dev server, the simulator and a worker that uses both (and optionally the
    approvers' inbox).

    ``start`` starts Temporal and the simulator at once, then the worker and the inbox,
    each waited on until healthy; if any fails (or the start is cancelled) everything
    started is stopped again. ``stop`` stops the worker first (so it can checkpoint its streams),
    then the others, and waits for each; it also runs at interpreter exit if the owner
    forgot. Children can be restarted, killed or stopped one by one through the fields.
    """

    def __init__(
        self,
        temporal: TemporalDevServer,
        simulator: Simulator,
        worker: WorkerProcess,
        inbox: InboxProcess | None = None,
    ) -> None:
        self.temporal = temporal
        self.simulator = simulator
        self.worker = worker
        self.inbox = inbox

    @classmethod
    def in_dir(
        cls,
        state_dir: Path,
        *,
        api_key: str,
        persist: bool = False,
        temporal_port: int | None = None,
        ui_port: int | None = None,
        sim_port: int | None = None,
        sim_args: Sequence[str] = (),
        metrics_port: int | None = None,
        task_queue: str = DEFAULT_TASK_QUEUE,
        worker_settings: Mapping[str, object] | None = None,
        worker_extra_env: Mapping[str, str] | None = None,
        worker_argv: Sequence[str] = ("-m", "worker"),
        inbox_port: int | None = None,
        inbox_settings: Mapping[str, object] | None = None,
        inbox_extra_env: Mapping[str, str] | None = None,
    ) -> LocalStack:
        """A stack with its logs (``<name>.log``) in ``state_dir``; ports not given are
        free ones. ``persist``: Temporal keeps its state in ``state_dir/temporal.db``.
        ``ui_port``: serve the Temporal Web UI there (headless otherwise). The worker's
        environment: ``worker_env`` with ``worker_settings`` and ``worker_extra_env``.
        ``inbox_settings`` (``InboxSettings`` fields): also run the inbox, on
        ``inbox_port`` (a free one if not given), its log in ``inbox.log``, with
        ``inbox_extra_env`` passed through as given (e.g. the payload keys)."""
        temporal = TemporalDevServer(
            log_path=state_dir / "temporal.log",
            db_path=state_dir / "temporal.db" if persist else None,
            port=temporal_port or free_port(),
            ui_port=ui_port,
        )
        simulator = Simulator(
            log_path=state_dir / "simulator.log",
            api_key=api_key,
            port=sim_port or free_port(),
            args=sim_args,
        )
        env = worker_env(
            temporal_address=temporal.address,
            api_base_url=simulator.base_url,
            api_key=api_key,
            task_queue=task_queue,
            metrics_port=metrics_port,
            settings=worker_settings,
            extra=worker_extra_env,
        )
        worker = WorkerProcess(log_path=state_dir / "worker.log", env=env, argv=worker_argv)
        inbox = None
        if inbox_settings is not None:
            inbox = InboxProcess(
                log_path=state_dir / "inbox.log",
                env=inbox_env(
                    temporal_address=temporal.address,
                    task_queue=task_queue,
                    settings=inbox_settings,
                    extra=inbox_extra_env,
                ),
                port=inbox_port or free_port(),
            )
        return cls(temporal, simulator, worker, inbox)

    @property
    def children(self) -> tuple[Child, ...]:
        last = () if self.inbox is None else (self.inbox,)
        return (self.temporal, self.simulator, self.worker, *last)

    async def start(
        self, within: float = 60.0, *, announce: Callable[[Child], object] | None = None
    ) -> None:
        """Start every child; ``announce(child)`` is called as each one starts."""
        atexit.register(self.stop)
        try:
            first = (self.temporal, self.simulator)
            for child in first:
                if announce is not None:
                    announce(child)
            await start_together(*(c.start(within) for c in first))
            if announce is not None:
                announce(self.worker)
            await self.worker.start(within)
            if self.inbox is not None:
                if announce is not None:
                    announce(self.inbox)
                await self.inbox.start(within)
        except BaseException:
            self.stop()
            raise

    def dead(self) -> Child | None:
        """A child that exited by itself, if any."""
        return next((c for c in self.children if c.exited() is not None), None)

    def stop(self) -> None:
        """Stop every child, the inbox and the worker first; idempotent."""
        atexit.unregister(self.stop)
        for child in reversed(self.children):
            child.stop()

    async def __aenter__(self) -> LocalStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
