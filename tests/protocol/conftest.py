"""Fixtures shared by the group-layer tests."""

from __future__ import annotations

import pytest

from .group_harness import Cell


@pytest.fixture
def cell() -> Cell:
    """A cell of admin, alice and bob, sender keys exchanged (a module may define its own)."""
    c = Cell()
    c.join("alice")
    c.join("bob")
    return c
