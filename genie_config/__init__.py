"""Settings and connections shared by the worker, the CLI and the Python API.

Our own settings are ``GENIE_*`` (pydantic-settings); Temporal's are the SDK's standard
``TEMPORAL_*`` environment / TOML profile (``temporalio.envconfig``), so a worker moves
from the dev server to a cluster or Temporal Cloud by environment alone.
"""

from __future__ import annotations

from genie_config._deployment import load_deployment
from genie_config._settings import (
    ConfigError,
    GenieSettings,
    connect_temporal,
    load_settings,
    temporal_connect_config,
)

__all__ = [
    "ConfigError",
    "GenieSettings",
    "connect_temporal",
    "load_deployment",
    "load_settings",
    "temporal_connect_config",
]
