"""The ``GenieConversation`` workflow and its public contract.

Clients import names from here: the workflow class (for typed handles), its message
models, the error types validators refuse with, and the search attribute keys.
"""

from __future__ import annotations

from typing import Final

from workflows import errors
from workflows.conversation import WORKFLOW_TYPE, GenieConversation
from workflows.models import *  # noqa: F403  (re-exported through models.__all__)
from workflows.models import __all__ as _models_all
from workflows.search_attributes import ALL_SEARCH_ATTRIBUTES

DEFAULT_TASK_QUEUE: Final = "genie-conversations"

__all__ = [
    "ALL_SEARCH_ATTRIBUTES",
    "DEFAULT_TASK_QUEUE",
    "WORKFLOW_TYPE",
    "GenieConversation",
    "errors",
    *_models_all,
]
