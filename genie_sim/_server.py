"""Running the app under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from types import FrameType

import uvicorn

from ._app import create_app
from ._config import SimConfig
from ._persist import load_state, save_state
from ._store import Store

logger = logging.getLogger("genie_sim")


class _DropDeliberateCuts(logging.Filter):
    """Hide uvicorn's complaint about the responses we cut on purpose (``drop_after_events``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


class _Server(uvicorn.Server):
    """A uvicorn server that ends open SSE streams when asked to stop, and keeps state.

    Without ending the streams, a stream paused on a confirmation would hold graceful
    shutdown open until the timeout. With a state file, the state is loaded before the
    server listens and saved once every connection has been closed.
    """

    def __init__(self, config: uvicorn.Config, store: Store, state_file: Path | None) -> None:
        super().__init__(config)
        self._store = store
        self._state_file = state_file
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        if self._state_file is not None:
            load_state(self._store, self._state_file)  # StateFileError: refuse to start
        await super().serve(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # No request runs any more. Saving is synchronous, so no run task moves meanwhile.
        if self._state_file is not None:
            try:
                save_state(self._store, self._state_file)
            except OSError as e:
                logger.error("could not save the state to %s: %s", self._state_file, e)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            # Signal handlers run between bytecodes: hand the work to the loop.
            self._loop.call_soon_threadsafe(self._store.close_all_streams, "server_shutdown")
        super().handle_exit(sig, frame)


def serve(config: SimConfig) -> None:
    """Serve the simulator until SIGINT/SIGTERM.

    Args:
        config: Simulator configuration.
    """
    app = create_app(config)
    logging.getLogger("uvicorn.error").addFilter(_DropDeliberateCuts())
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=3,
        # Well above typical client pool idle times, so a pooled connection is rarely
        # closed by us at the instant a client reuses it (uvicorn's default is 5 s).
        timeout_keep_alive=75,
        server_header=False,
    )
    _Server(uv_config, app.state.store, config.state_file).run()
