"""A workbench: a file source, one or more destinations, a state store in a temp folder and
a fake clock. ``await wb.once()`` is ``syncd once`` without the process."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from syncd.config import Config, load_config
from syncd.engine import Engine, Hooks, PairResult, SyncResult
from syncd.executor import Executor
from syncd.model import Record
from syncd.retrying import RetryPolicy
from syncd.state import Fingerprinter
from syncd.state.sqlite import SqliteStore


class FakeClock:
    """Monotonic seconds and wall time that move only when told, or when code sleeps."""

    def __init__(self, start: datetime | None = None) -> None:
        self.start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    def wall(self) -> float:
        return self.now().timestamp()

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class CountingHooks(Hooks):
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.retries: Counter[str] = Counter()
        self.pairs: list[PairResult] = []

    def api_call(self, destination: str, operation: str, status: str) -> None:
        self.calls[(destination, operation, status)] += 1

    def retry(self, destination: str) -> None:
        self.retries[destination] += 1

    def pair_done(self, result: PairResult, seconds: float) -> None:
        self.pairs.append(result)


class Workbench:
    """Writes ``secrets.yaml`` and ``syncd.yaml`` under ``root`` and runs syncs."""

    def __init__(
        self,
        root: Path,
        destinations: Mapping[str, Mapping[str, Any]],
        *,
        source: Mapping[str, Any] | None = None,
        sync: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        context_extra: Mapping[str, Any] | None = None,
        extra_syncs: Sequence[Mapping[str, Any]] = (),
        extra_sources: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.clock = FakeClock()
        self.env = dict(env or {})
        self.context_extra = dict(context_extra or {})
        self.secrets_file = self.root / "secrets.yaml"
        self.set_source(source or {})
        body: dict[str, Any] = {
            "version": 1,
            "state": {"url": f"sqlite:///{self.root / 'state.db'}"},
            "defaults": dict(defaults or {}),
            "sources": {
                "src": {"type": "file", "path": str(self.secrets_file)},
                **{k: dict(v) for k, v in (extra_sources or {}).items()},
            },
            "destinations": {k: dict(v) for k, v in destinations.items()},
            "syncs": [
                {"name": "main", "from": "src", "to": list(destinations), **dict(sync or {})},
                *[dict(s) for s in extra_syncs],
            ],
        }
        self.config_file = self.root / "syncd.yaml"
        self.config_file.write_text(yaml.safe_dump(body, sort_keys=False))
        self.state = SqliteStore(self.root / "state.db")
        self.fingerprint = Fingerprinter.from_file(self.root / "fingerprint.key")
        self.hooks = CountingHooks()
        self.retry = RetryPolicy()

    # -------------------------------------------------------------- source side

    def set_source(self, values: Mapping[str, Any]) -> None:
        self.secrets_file.write_text(yaml.safe_dump(dict(values), sort_keys=False))

    # -------------------------------------------------------------- running

    def config(self) -> Config:
        return load_config(self.config_file, env=self.env)

    def engine(self, hooks: Hooks | None = None) -> Engine:
        cfg = self.config()
        executor = Executor(
            self.state,
            sleep=self.clock.sleep,
            clock=self.clock.monotonic,
            now=self.clock.now,
            rng=lambda: 1.0,
            retry=self.retry,
        )
        return Engine(
            cfg,
            self.state,
            self.fingerprint,
            executor=executor,
            hooks=hooks or self.hooks,
            now=self.clock.now,
            context_extra=self.context_extra,
        )

    async def once(
        self, *, force: bool = False, dry_run: bool = False, syncs: Sequence[str] | None = None
    ) -> list[SyncResult]:
        engine = self.engine()
        try:
            return await engine.run(syncs, force=force, dry_run=dry_run)
        finally:
            await engine.aclose()

    async def pair(self, destination: str | None = None, **kw: Any) -> PairResult:
        """The result for one destination of the ``main`` sync."""
        results = await self.once(**kw)
        main = next(r for r in results if r.name == "main")
        if destination is None:
            assert len(main.pairs) == 1, "name the destination"
            return main.pairs[0]
        return next(p for p in main.pairs if p.destination == destination)

    def records(self, destination: str, sync: str = "main") -> dict[str, Record]:
        return self.state.records(sync, destination)

    def state_bytes(self) -> bytes:
        """Every byte the state store keeps on disk (database, WAL, key file excluded)."""
        data = b""
        for p in sorted(self.root.glob("state.db*")):
            data += p.read_bytes()
        return data
