from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from syncd.connectors.dotenv import DotenvDestination, quote
from syncd.errors import RateLimited
from syncd.testing.conformance import DestinationConformance


class DotenvHarness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.destination: dict[str, Any] = {"type": "dotenv", "path": str(path)}
        self.env: dict[str, str] = {}
        self.context_extra: dict[str, Any] = {}

    def stored(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        return {k: v or "" for k, v in dotenv_values(self.path, interpolate=False).items()}

    def put_unmanaged(self, key: str, value: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(f"{key}={quote(value)}\n")

    def throttle(self, calls: int) -> None:
        # a local file has no rate limit: the fault is injected at the connector boundary
        original = DotenvDestination.upsert
        remaining = [calls]

        async def flaky(dest: DotenvDestination, changes: Any) -> Any:
            if remaining[0] > 0:
                remaining[0] -= 1
                raise RateLimited("injected throttle", retry_after=2.0)
            return await original(dest, changes)

        self._patch = pytest.MonkeyPatch()
        self._patch.setattr(DotenvDestination, "upsert", flaky)


class TestDotenvConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Any:
        h = DotenvHarness(tmp_path / "out" / ".env")
        yield h
        if hasattr(h, "_patch"):
            h._patch.undo()
