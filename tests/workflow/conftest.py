"""Fixtures shared by the workflow tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.webhooks import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real webhook endpoint on loopback, closed after the test."""
    r = Receiver()
    yield r
    r.close()
