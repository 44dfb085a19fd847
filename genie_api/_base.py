"""Shared pydantic base for every API object, and the bounded id type."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

MAX_ID_CHARS = 256
"""Longest id the client accepts from the API (ids seen are a few dozen chars)."""

ApiId = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]*$")]
"""An id the API hands out (conversation, run, event, call, …).

Ids travel on: into URLs, ``Last-Event-ID``, log lines, heartbeats, workflow history and
search attributes (``GenieConversationId``, a keyword of at most 2 KB). Bounding them here
keeps a broken peer's megabyte "id" out of all of those, and refusing control characters
keeps it from forging log lines; such a body is a :class:`ProtocolError`."""


class APIModel(BaseModel):
    """Base of every response/event model.

    ``extra="allow"`` keeps fields this client does not know about (the API is in beta
    and adds fields), so nothing the server sent is lost when a model is re-serialised.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)
