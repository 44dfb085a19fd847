"""``geniectl`` and the Python API for backends.

``GenieConversations`` is the typed facade backends use; the ``geniectl`` command line is
built on it.
"""

from __future__ import annotations

from geniectl._api import GenieConversations, NotFound, PendingItem, Refused, new_workflow_id

__all__ = ["GenieConversations", "NotFound", "PendingItem", "Refused", "new_workflow_id"]
