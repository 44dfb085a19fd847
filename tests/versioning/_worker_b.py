"""``python -m tests.versioning._worker_b``: ``worker.py`` exactly, running version B of
the workflow (``_conversation_b``) instead of ``GenieConversation``."""

from __future__ import annotations

import worker
from tests.versioning._conversation_b import GenieConversationB

if __name__ == "__main__":
    # build_worker registers the module's ``GenieConversation``: B from here on.
    worker.GenieConversation = GenieConversationB  # type: ignore[attr-defined]
    worker._exit_now(worker.main())
