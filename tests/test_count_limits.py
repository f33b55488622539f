"""Keys over a destination's count limit (GitHub's 100 a repository, GitLab's 8,000) are
blocked, remembered as blocked, and cost no listing on the runs that follow: a no-op cycle is
0 calls. They are planned again when the source or the pair's recorded keys change."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from syncd import registry
from syncd.connector import Capabilities
from syncd.testing import memory
from syncd.testing.memory import MemoryConfig, MemoryDestination, platform
from syncd.testing.workbench import Workbench


class LimitedConfig(MemoryConfig):
    type: Literal["limited"] = "limited"  # type: ignore[assignment]


class LimitedMemory(MemoryDestination):
    kind: ClassVar[str] = "limited"
    Config: ClassVar[type[MemoryConfig]] = LimitedConfig
    capabilities: ClassVar[Capabilities] = replace(MemoryDestination.capabilities, max_keys=3)


@pytest.fixture(autouse=True)
def _limited() -> Iterator[None]:
    memory.install()
    registry.register(registry.DESTINATION_GROUP, "limited", LimitedMemory)
    platform("limited").data.clear()
    yield
    registry.unregister(registry.DESTINATION_GROUP, "limited")


def calls(wb: Workbench) -> int:
    return sum(n for (d, _, _), n in wb.hooks.calls.items() if d == "lim")


async def test_blocked_by_the_count_limit_costs_no_call_until_something_changes(
    tmp_path: Path,
) -> None:
    source = {f"K{i}": f"value-{i}-5e" for i in range(5)}
    wb = Workbench(tmp_path, {"lim": {"type": "limited", "platform": "limited"}}, source=source)
    pair = await wb.pair()
    assert pair.result == "failed"
    assert sorted(platform("limited").data) == ["K0", "K1", "K2"]
    blocked = sorted(k for k, kind, _ in pair.problems if kind == "blocked")
    assert blocked == ["K3", "K4"]

    # the next runs: still reported blocked, and no call at all (no listing)
    for _ in range(3):
        before = calls(wb)
        pair = await wb.pair()
        assert calls(wb) == before
        assert sorted(k for k, kind, m in pair.problems if kind == "blocked") == ["K3", "K4"]
        assert all("limit of 3" in m for _, kind, m in pair.problems if kind == "blocked")

    # a key leaves the source: deleted, and the next run lists and fills the room
    wb.set_source({k: v for k, v in source.items() if k != "K0"})
    await wb.pair(force=True)
    assert "K0" not in platform("limited").data
    pair = await wb.pair()
    assert sorted(platform("limited").data) == ["K1", "K2", "K3"]
    assert [k for k, kind, _ in pair.problems if kind == "blocked"] == ["K4"]

    # a new key in the source is planned again (one listing), and blocked again
    wb.set_source({**{k: v for k, v in source.items() if k != "K0"}, "K9": "value-9-5e"})
    before = calls(wb)
    pair = await wb.pair()
    assert calls(wb) == before + 1
    assert sorted(k for k, kind, _ in pair.problems if kind == "blocked") == ["K4", "K9"]
