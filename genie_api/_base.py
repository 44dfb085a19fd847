"""Shared pydantic base for every API object."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class APIModel(BaseModel):
    """Base of every response/event model.

    ``extra="allow"`` keeps fields this client does not know about (the API is in beta
    and adds fields), so nothing the server sent is lost when a model is re-serialised.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)
