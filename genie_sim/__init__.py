"""genie_sim: a protocol-faithful local Workato genie Headless API (REST + SSE).

Run it with ``python -m genie_sim``; the behaviour contract is ``docs/simulator.md``.
"""

from ._app import create_app
from ._config import SimConfig
from ._script import Script, parse_script
from ._server import serve

__all__ = ["Script", "SimConfig", "create_app", "parse_script", "serve"]
