"""Pacing to a platform's documented limits before it refuses: token buckets per
credential (GitHub's 500 writes an hour, Netlify's 500 calls a minute) and the platform's
own remaining quota, on the injected clock. A key waiting for room is not failed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from syncd import registry
from syncd.connector import Capabilities, RateLimit
from syncd.model import Change, ItemOutcome
from syncd.testing import memory
from syncd.testing.memory import MemoryConfig, MemoryDestination, platform
from syncd.testing.workbench import Workbench
from tests.fakes.github_server import FakeGitHub, repo_scope
from tests.test_github import bench as github_bench


class PacedConfig(MemoryConfig):
    type: Literal["paced"] = "paced"  # type: ignore[assignment]


class PacedMemory(MemoryDestination):
    """A memory platform documented at 5 writes a minute, which reports its quota."""

    kind: ClassVar[str] = "paced"
    Config: ClassVar[type[MemoryConfig]] = PacedConfig
    capabilities: ClassVar[Capabilities] = replace(
        MemoryDestination.capabilities,
        rate_limits=(RateLimit(5, 60.0, "5 writes a minute"),),
    )
    quota_after: ClassVar[int | None] = None  # report no calls left after this many writes

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        out = await super().upsert(changes)
        if self.quota_after is not None and self.p.writes >= self.quota_after:
            self.quota(0, 30.0)
        return out


@pytest.fixture(autouse=True)
def _paced() -> Iterator[None]:
    memory.install()
    registry.register(registry.DESTINATION_GROUP, "paced", PacedMemory)
    platform("paced").data.clear()
    platform("paced").writes = 0
    yield
    PacedMemory.quota_after = None
    registry.unregister(registry.DESTINATION_GROUP, "paced")


def values(n: int) -> dict[str, str]:
    return {f"KEY_{i:02d}": f"value-{i:02d}-9a" for i in range(n)}


async def test_writes_wait_for_room_in_the_bucket_and_none_fails(tmp_path: Path) -> None:
    wb = Workbench(
        tmp_path, {"p": {"type": "paced", "platform": "paced", "concurrency": 1}}, source=values(12)
    )
    pair = await wb.pair()
    assert pair.result == "ok" and len(platform("paced").data) == 12
    # five at once (the window starts full), then one every 12 s: 7 x 12 s of waiting
    assert sum(wb.clock.sleeps) == pytest.approx(7 * 12.0, abs=0.1)
    assert max(wb.clock.sleeps) <= 12.0 + 1e-6


async def test_the_platforms_own_quota_is_waited_for_before_it_refuses(tmp_path: Path) -> None:
    PacedMemory.quota_after = 2
    wb = Workbench(
        tmp_path, {"p": {"type": "paced", "platform": "paced", "concurrency": 1}}, source=values(3)
    )
    pair = await wb.pair()
    assert pair.result == "ok" and len(platform("paced").data) == 3
    assert 30.0 in [round(s, 3) for s in wb.clock.sleeps]  # until the window refills


def github_repo(fake: FakeGitHub, **options: Any) -> dict[str, Any]:
    """A repository destination on ``fake``, unpaced per minute (the limit under test)."""
    fake.add_repo("acme/api")
    return {
        "type": "github",
        "api_url": fake.url,
        "token": "${GH_TOKEN}",
        "scope": "repository",
        "repository": "acme/api",
        "writes_per_minute": None,
        **options,
    }


def test_github_hourly_cap_paces_writes_instead_of_failing_them(tmp_path: Path) -> None:
    import asyncio

    fake = FakeGitHub().start()
    try:
        dest = github_repo(fake, writes_per_hour=3)
        wb = github_bench(fake, tmp_path, values(5), dest)
        pair = asyncio.run(wb.pair())
        assert pair.result == "ok", pair.problems
        assert set(fake.plaintext(repo_scope("acme/api"))) == set(values(5))
        # three in the first hour's window, then one every 20 minutes
        assert sum(wb.clock.sleeps) == pytest.approx(2 * 1200.0, abs=1.0)
        assert fake.throttled == 0
    finally:
        fake.stop()


async def test_a_long_run_logs_progress_with_what_it_waits_for(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    wb = Workbench(
        tmp_path, {"p": {"type": "paced", "platform": "paced", "concurrency": 1}}, source=values(30)
    )
    with capture_logs() as logs:
        pair = await wb.pair()
    assert pair.result == "ok"
    events = [e for e in logs if e["event"] == "progress"]
    waits = [e for e in events if "wait" in e]
    assert waits and waits[0]["waiting"] == "paced to 5 writes a minute"
    ticks = [e for e in events if "done" in e]
    assert len(ticks) >= 4  # 25 keys at 5 a minute: about five minutes, a line a minute
    assert all(e["total"] == 30 and 0 < e["done"] < 30 for e in ticks)
    assert ticks[-1]["per_minute"] == pytest.approx(5.0, rel=0.3)
    assert all("value-" not in str(e) for e in events)


def test_the_terminal_shows_keys_rate_eta_and_what_it_waits_for() -> None:
    import io

    from syncd.cli import Progress

    out = io.StringIO()
    bars = Progress(1, out, force_terminal=True)
    bars.progress("org", "gh", 0, 1000, None)
    bars.progress("org", "gh", 120, 1000, "paced to 500 content-creating requests an hour")
    bars.bars.refresh()
    bars.stop()
    text = out.getvalue()
    assert "org → gh" in text and "120/1000" in text
    assert "paced to 500 content-creating requests an hour" in text


async def test_aws_destinations_on_one_account_and_region_share_its_throughput() -> None:
    """Parameter Store's 40 TPS and Secrets Manager's 50 are per account and region: two
    destinations there draw on one budget; another region, profile or service has its own."""
    from syncd.connector import ConnectorContext
    from syncd.connectors.aws_parameter_store import ParameterStoreConfig, ParameterStoreDestination
    from syncd.connectors.aws_secrets_manager import SecretsManagerConfig, SecretsManagerDestination
    from syncd.executor import Executor

    def ssm(name: str, region: str, path: str) -> ParameterStoreDestination:
        cfg = ParameterStoreConfig(type="aws-parameter-store", region=region, path=path)
        return ParameterStoreDestination(name, cfg, ConnectorContext())

    def asm(name: str, region: str, profile: str | None = None) -> SecretsManagerDestination:
        cfg = SecretsManagerConfig(
            type="aws-secrets-manager", region=region, prefix="app/", profile=profile
        )
        return SecretsManagerDestination(name, cfg, ConnectorContext())

    ex = Executor(state=None)  # type: ignore[arg-type]
    a, b = ssm("a", "eu-west-1", "/app/a/"), ssm("b", "eu-west-1", "/app/b/")
    c = ssm("c", "us-east-1", "/app/a/")
    d, e = asm("d", "eu-west-1"), asm("e", "eu-west-1", profile="other")
    assert ex.limiter(a) is ex.limiter(b)
    assert len({id(ex.limiter(x)) for x in (a, c, d, e)}) == 4
    assert a.capabilities.writes_per_minute == 40 * 60
    assert d.capabilities.writes_per_minute == 50 * 60


async def test_gitlab_ratelimit_remaining_is_waited_for_before_it_runs_out(
    tmp_path: Path,
) -> None:
    """GitLab answers every call with RateLimit-Remaining/-Reset: when none is left, the next
    call waits for the window to refill instead of being refused with 429."""
    from syncd.connectors._http import WALL_CLOCK_KEY
    from tests.fakes.gitlab_server import FakeGitLab

    with FakeGitLab() as fake:
        project = fake.project("acme/api")
        wb = Workbench(
            tmp_path,
            {
                "gl": {
                    "type": "gitlab",
                    "url": fake.url,
                    "token": "${GITLAB_TOKEN}",
                    "project": project.path,
                    "concurrency": 1,
                }
            },
            source=values(12),
            env={"GITLAB_TOKEN": fake.token},
        )
        wb.context_extra[WALL_CLOCK_KEY] = wb.clock.wall
        fake.clock = wb.clock.wall
        fake.quota = (5, 60.0)  # five calls a minute
        pair = await wb.pair()
        assert pair.result == "ok", pair.problems
        assert fake.stored(project) == values(12)
        assert fake.throttled == 0
        # one listing and 12 writes, four a window (the last call of each is kept as a
        # margin): three waits for a refill
        assert [round(s) for s in wb.clock.sleeps if s > 1.0] == [60, 60, 60]


def test_github_primary_quota_is_waited_for_before_it_runs_out(tmp_path: Path) -> None:
    """GitHub reports its 5,000 requests an hour on every answer: with one left, the next
    call waits for the window to refill instead of being refused."""
    import asyncio

    fake = FakeGitHub().start()
    try:
        dest = github_repo(fake)
        wb = github_bench(fake, tmp_path, values(4), dest)
        fake.clock = wb.clock.monotonic
        fake.spend_primary(4996)
        pair = asyncio.run(wb.pair())
        assert pair.result == "ok", pair.problems
        assert set(fake.plaintext(repo_scope("acme/api"))) == set(values(4))
        assert fake.throttled == 0
        # a few calls fit in this hour; then one wait for the next
        assert [s for s in wb.clock.sleeps if s > 60] and max(wb.clock.sleeps) <= 3601
    finally:
        fake.stop()
