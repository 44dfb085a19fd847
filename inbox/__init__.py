"""The approvers' inbox: web pages and a JSON API over pending genie decisions.

Approvers see every skill confirmation and runtime connection waiting across
conversations, with its context, and decide it as who they authenticated as (a verified
JWT, a trusted proxy's headers, or, in development only, a name they pick). Each decision
is a ``decide_skill`` / ``decide_connection`` update carrying that identity, signed with
the inbox's Ed25519 key when one is configured, so a worker that requires signatures
takes decisions from the inbox only. Reading never writes to any workflow's history.

Run it with ``geniectl inbox`` or ``python -m inbox``; ``geniectl dev`` starts one.
See docs/inbox.md.
"""

from __future__ import annotations

from inbox._settings import InboxConfig, InboxSettings, load_inbox_config

__all__ = ["InboxConfig", "InboxSettings", "load_inbox_config"]
# The web app itself is ``inbox._app.create_app``, imported where it is served: `geniectl`
# imports this package for `keygen` and must stay quick to start.
