"""pytest plugin (entry point ``syncd``): fixtures for connector tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.testing.workbench import FakeClock, Workbench


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_workbench(tmp_path: Path) -> Callable[..., Workbench]:
    """``make_workbench({"dest": {...}}, source={...})`` builds a Workbench in tmp_path."""
    count = [0]

    def make(destinations: dict[str, Any], **kw: Any) -> Workbench:
        count[0] += 1
        return Workbench(tmp_path / f"wb{count[0]}", destinations, **kw)

    return make
