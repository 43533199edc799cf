"""Fixtures for the agent tests: an isolated Lab per test, closed after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., al.Lab]]:
    """``make_lab(model, **settings)``: a Lab on its own home, closed after the test."""
    labs: list[al.Lab] = []

    def make(model: Any = None, **settings: Any) -> al.Lab:
        lab = al.Lab(home=tmp_path / "home", model=model, **settings)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()
