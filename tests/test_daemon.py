"""The daemon on virtual time: interval scheduling with jitter, coalescing, isolation,
drift re-reads, file-change triggers, SIGHUP reloads and the SIGTERM drain.

Nothing here sleeps: a VirtualClock moves time only when a test advances it, and the
source and destination are in-memory (no threads), so every step is deterministic."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import yaml
from structlog.testing import capture_logs

from syncd import registry
from syncd.config import Config, load_config
from syncd.connector import BaseSource, SourceConfig
from syncd.coordination import Hold
from syncd.daemon import Daemon, Scheduler, Trigger, _install_signals, changed_syncs
from syncd.engine import Engine, Hooks
from syncd.errors import SourceReadError
from syncd.executor import Executor
from syncd.model import Change, ItemOutcome, SecretValue, Snapshot, SourceEntry
from syncd.state import Fingerprinter
from syncd.state.sqlite import SqliteStore
from syncd.testing import memory
from syncd.testing.memory import MemoryConfig, MemoryDestination, platform

# ---------------------------------------------------------------------------- virtual time


class VirtualClock:
    """Monotonic time that moves only in ``advance``; sleepers wake in deadline order."""

    def __init__(self) -> None:
        self.t = 0.0
        self.start = datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    def wall(self) -> float:
        return self.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float = 0.0) -> None:
        target = self.t + seconds
        while True:
            await settle()
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline, _, fut = heapq.heappop(self._sleepers)
            self.t = max(self.t, deadline)
            fut.set_result(None)
        self.t = target
        await settle()


async def settle(rounds: int = 60) -> None:
    """Let every ready task run until they all wait on something."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------- scheduler


@dataclass
class Recorder:
    clock: VirtualClock
    runs: list[tuple[str, str, float]] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)

    async def __call__(self, name: str, trig: Trigger, cache: dict[str, Snapshot]) -> None:
        self.runs.append((name, trig.reason, self.clock.t))
        if name in self.fail:
            raise RuntimeError("boom")
        gate = self.gates.get(name)
        if gate is not None:
            await gate.wait()

    def of(self, name: str) -> list[tuple[str, float]]:
        return [(r, t) for n, r, t in self.runs if n == name]


def make_scheduler(
    clock: VirtualClock, rec: Recorder, rng: float = 0.5, **kw: Any
) -> tuple[Scheduler, list[str]]:
    coalesced: list[str] = []
    s = Scheduler(
        rec,
        clock=clock.monotonic,
        sleep=clock.sleep,
        rng=lambda: rng,
        on_coalesce=coalesced.append,
        **kw,
    )
    return s, coalesced


async def test_runs_at_start_then_every_interval() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    s, _ = make_scheduler(clock, rec)  # rng 0.5: no jitter
    s.set_syncs({"a": 60.0, "b": 300.0}, reason="start")
    task = asyncio.create_task(s.run())
    await clock.advance(0)
    assert sorted(rec.runs) == [("a", "start", 0.0), ("b", "start", 0.0)]
    await clock.advance(59)
    assert len(rec.of("a")) == 1
    await clock.advance(1)
    await clock.advance(600 - 60)
    assert rec.of("a") == [("start", 0.0)] + [("interval", 60.0 * i) for i in range(1, 11)]
    assert rec.of("b") == [("start", 0.0), ("interval", 300.0), ("interval", 600.0)]
    s.stop()
    assert await task is True


@pytest.mark.parametrize(("rng", "expected"), [(0.0, 54.0), (1.0, 66.0)])
async def test_jitter_spreads_periods_by_ten_percent(rng: float, expected: float) -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    s, _ = make_scheduler(clock, rec, rng=rng)
    s.set_syncs({"a": 60.0})
    task = asyncio.create_task(s.run())
    await clock.advance(0)
    assert s.next_due("a") == pytest.approx(expected)
    await clock.advance(expected - 0.001)
    assert len(rec.of("a")) == 1
    await clock.advance(0.001)
    assert rec.of("a")[1] == ("interval", pytest.approx(expected))
    s.stop()
    await task


async def test_triggers_while_running_coalesce_into_one_follow_up() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    s, coalesced = make_scheduler(clock, rec)
    s.set_syncs({"a": 3600.0})
    task = asyncio.create_task(s.run())
    rec.gates["a"] = asyncio.Event()
    await clock.advance(0)
    assert s.running == ["a"]
    await clock.advance(5)
    assert s.trigger(["a"], "webhook") == ["a"]
    await clock.advance(1)
    for _ in range(4):
        s.trigger(["a"], "file")
        s.trigger(["a"], "webhook")
    assert coalesced == ["a"] * 8
    await clock.advance(10)
    assert len(rec.runs) == 1  # nothing starts while the run is in flight
    rec.gates.pop("a").set()
    await clock.advance(0)
    # exactly one follow-up, carrying the first change's receipt time for latency
    assert rec.of("a") == [("start", 0.0), ("webhook", 16.0)]
    await clock.advance(1800)
    assert len(rec.of("a")) == 2
    s.stop()
    await task


async def test_trigger_merge_keeps_the_earliest_change() -> None:
    assert Trigger("interval", 1).merge(Trigger("webhook", 5)) == Trigger("webhook", 5)
    assert Trigger("webhook", 2).merge(Trigger("file", 5)) == Trigger("webhook", 2)
    assert Trigger("file", 7).merge(Trigger("reload", 9)) == Trigger("file", 7)


async def test_trigger_of_an_idle_sync_runs_it_at_once() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    s, coalesced = make_scheduler(clock, rec)
    s.set_syncs({"a": 3600.0, "b": 3600.0})
    task = asyncio.create_task(s.run())
    await clock.advance(100)
    assert s.trigger(["a", "nope"], "webhook") == ["a"]
    await clock.advance(0)
    assert rec.of("a") == [("start", 0.0), ("webhook", 100.0)]
    assert rec.of("b") == [("start", 0.0)]
    assert coalesced == []
    s.stop()
    await task


async def test_a_hanging_or_failing_sync_never_delays_the_others() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    s, _ = make_scheduler(clock, rec, drain_timeout=30.0)
    s.set_syncs({"stuck": 60.0, "broken": 60.0, "fine": 60.0})
    rec.gates["stuck"] = asyncio.Event()  # never set
    rec.fail.add("broken")
    task = asyncio.create_task(s.run())
    await clock.advance(600)
    assert len(rec.of("fine")) == 11
    assert len(rec.of("broken")) == 11  # a crash is logged, the schedule goes on
    assert rec.of("stuck") == [("start", 0.0)]
    s.stop()
    await clock.advance(29)
    assert not task.done()  # draining: waiting for the stuck run
    await clock.advance(1)
    assert await task is False  # deadline passed, the stuck run was cancelled


async def test_stop_drains_in_flight_runs_and_starts_nothing_new() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    s, _ = make_scheduler(clock, rec)
    s.set_syncs({"a": 60.0, "b": 60.0})
    rec.gates["a"] = asyncio.Event()
    task = asyncio.create_task(s.run())
    await clock.advance(0)
    s.stop()
    s.trigger(["b"], "webhook")
    await clock.advance(10)
    assert not task.done()
    rec.gates["a"].set()
    await clock.advance(0)
    assert await task is True
    assert [n for n, _, _ in rec.runs].count("b") == 1


async def test_set_syncs_adds_removes_and_reruns_changed() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    s, _ = make_scheduler(clock, rec)
    s.set_syncs({"a": 60.0, "b": 60.0})
    task = asyncio.create_task(s.run())
    await clock.advance(10)
    s.set_syncs({"a": 60.0, "c": 30.0}, run_now=["a"])
    await clock.advance(0)
    assert rec.of("a") == [("start", 0.0), ("reload", 10.0)]
    assert rec.of("c") == [("start", 10.0)]
    await clock.advance(200)
    assert rec.of("b") == [("start", 0.0)]  # removed: never again
    assert s.names == ["a", "c"]
    s.stop()
    await task


# ---------------------------------------------------------------------------- daemon

STORES: dict[str, dict[str, Any]] = {}


class MemSourceConfig(SourceConfig):
    type: Literal["memsrc"] = "memsrc"
    store: str


class MemSource(BaseSource):
    """A source in memory with a modification time, like the file source."""

    kind: ClassVar[str] = "memsrc"
    Config: ClassVar[type[MemSourceConfig]] = MemSourceConfig
    config: MemSourceConfig

    @property
    def store(self) -> dict[str, Any]:
        return STORES[self.config.store]

    def mtime(self) -> float | None:
        m: float | None = self.store.get("mtime")
        return m

    async def snapshot(self) -> Snapshot:
        self.store["reads"] = self.store.get("reads", 0) + 1
        if self.store.get("broken"):
            raise SourceReadError("the source is down")
        entries = tuple(SourceEntry("", k, SecretValue(v)) for k, v in self.store["values"].items())
        return Snapshot(entries, complete=True)


class GatedConfig(MemoryConfig):
    type: Literal["gated"] = "gated"  # type: ignore[assignment]


class GatedDestination(MemoryDestination):
    """A memory destination whose writes wait on a gate (a slow platform)."""

    kind: ClassVar[str] = "gated"
    Config: ClassVar[type[MemoryConfig]] = GatedConfig
    gate: ClassVar[asyncio.Event | None] = None

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        if GatedDestination.gate is not None:
            await GatedDestination.gate.wait()
        return await super().upsert(changes)


@pytest.fixture(autouse=True)
def _connectors() -> Iterator[None]:
    memory.install()
    registry.register(registry.SOURCE_GROUP, "memsrc", MemSource)
    registry.register(registry.DESTINATION_GROUP, "gated", GatedDestination)
    yield
    registry.unregister(registry.SOURCE_GROUP, "memsrc")
    registry.unregister(registry.DESTINATION_GROUP, "gated")
    GatedDestination.gate = None


@dataclass
class Rig:
    root: Path
    clock: VirtualClock
    store: dict[str, Any]
    platform_name: str
    state: SqliteStore
    daemon: Daemon | None = None
    task: asyncio.Task[int] | None = None

    @property
    def config_file(self) -> Path:
        return self.root / "syncd.yaml"

    def write_config(self, body: Mapping[str, Any]) -> None:
        self.config_file.write_text(yaml.safe_dump(dict(body), sort_keys=False))

    def body(self, **sync: Any) -> dict[str, Any]:
        return {
            "version": 1,
            "defaults": {"interval": "1m", "drift_check": "1h"},
            "sources": {"src": {"type": "memsrc", "store": self.platform_name}},
            "destinations": {"dest": {"type": "memory", "platform": self.platform_name}},
            "syncs": [{"name": "main", "from": "src", "to": ["dest"], **sync}],
        }

    def engine_factory(self) -> Callable[[Config, Hooks], Engine]:
        fp = Fingerprinter.from_file(self.root / "fp.key")

        def make(cfg: Config, hooks: Hooks) -> Engine:
            ex = Executor(
                self.state,
                sleep=self.clock.sleep,
                clock=self.clock.monotonic,
                now=self.clock.now,
                rng=lambda: 1.0,
            )
            return Engine(cfg, self.state, fp, executor=ex, hooks=hooks, now=self.clock.now)

        return make

    def start(self, **kw: Any) -> Daemon:
        cfg = load_config(self.config_file, env={})
        self.daemon = Daemon(
            cfg,
            self.state,
            Fingerprinter.from_file(self.root / "fp.key"),
            engine_factory=self.engine_factory(),
            config_loader=lambda p: load_config(p, env={}),
            clock=self.clock.monotonic,
            wall=self.clock.wall,
            sleep=self.clock.sleep,
            rng=lambda: 0.5,
            **kw,
        )
        self.task = asyncio.create_task(self.daemon.main())
        return self.daemon

    @property
    def dest(self) -> dict[str, str]:
        return platform(self.platform_name).data

    def calls(self, op: str) -> float:
        assert self.daemon is not None
        v = self.daemon.metrics.registry.get_sample_value(
            "syncd_api_calls_total", {"destination": "dest", "operation": op, "status": "ok"}
        )
        return v or 0.0

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        assert self.daemon is not None
        return self.daemon.metrics.registry.get_sample_value(name, dict(labels or {}))

    async def stop(self) -> int:
        assert self.daemon is not None and self.task is not None
        self.daemon.request_stop()
        await self.clock.advance(0)
        return await self.task


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    name = f"daemon-{request.node.name}"
    STORES[name] = {"values": {"A": "alpha-1", "B": "bravo-1"}, "mtime": 1.0}
    memory.PLATFORMS.pop(name, None)
    state = SqliteStore(tmp_path / "state.db")
    r = Rig(tmp_path, VirtualClock(), STORES[name], name, state)
    r.write_config(r.body())
    yield r
    if r.task is not None and not r.task.done():
        r.task.cancel()
    state.close()


async def test_daemon_syncs_at_start_and_leaves_unchanged_secrets_alone(rig: Rig) -> None:
    rig.start()
    await rig.clock.advance(0)
    assert rig.dest == {"A": "alpha-1", "B": "bravo-1"}
    puts, lists = rig.calls("put"), rig.calls("list")
    await rig.clock.advance(60 * 10)
    # ten interval runs: the source is read each time, the destination is not called
    assert rig.store["reads"] == 11
    assert (rig.calls("put"), rig.calls("list")) == (puts, lists)
    rig.store["values"]["A"] = "alpha-2"
    await rig.clock.advance(59)
    assert rig.dest["A"] == "alpha-1"
    await rig.clock.advance(1)
    assert rig.dest["A"] == "alpha-2"
    assert rig.sample("syncd_runs_total", {"sync": "main", "destination": "dest", "result": "ok"})
    assert (
        rig.sample(
            "syncd_items_total",
            {"sync": "main", "destination": "dest", "action": "update", "outcome": "applied"},
        )
        == 1.0
    )
    assert (
        rig.sample("syncd_last_success_timestamp_seconds", {"sync": "main", "destination": "dest"})
        == rig.clock.wall()
    )
    assert await rig.stop() == 0


async def test_a_busy_pair_is_skipped_and_run_again_as_soon_as_it_is_free(rig: Rig) -> None:
    """A ``syncd once`` (another process) holds the pair when the daemon's run comes: that
    run writes nothing and is counted busy; the pair runs within a second of being freed,
    not at the next interval."""
    other = rig.state.coordinator(heartbeat_thread=False)
    hold = other.try_acquire("main", "dest")
    assert isinstance(hold, Hold)
    rig.start()
    await rig.clock.advance(0)
    assert rig.dest == {}
    assert rig.sample("syncd_busy_total", {"sync": "main", "destination": "dest"}) == 1.0
    await rig.clock.advance(5)
    assert rig.dest == {}  # still held: looked at each second, nothing written
    other.release(hold)
    await rig.clock.advance(1)
    assert rig.dest == {"A": "alpha-1", "B": "bravo-1"}
    assert rig.clock.t < 60  # long before the next interval
    other.close()
    assert await rig.stop() == 0


async def test_webhook_trigger_lands_at_once_and_measures_propagation(rig: Rig) -> None:
    d = rig.start()
    await rig.clock.advance(5)
    rig.store["values"]["B"] = "bravo-2"
    assert d.trigger_source("src") == ["main"]
    assert d.trigger_source("unknown") == []
    await rig.clock.advance(0)
    assert rig.dest["B"] == "bravo-2"
    labels = {"sync": "main", "destination": "dest"}
    assert rig.sample("syncd_propagation_seconds_count", labels) == 1.0
    assert rig.sample("syncd_triggers_total", {"sync": "main", "reason": "webhook"}) == 1.0
    assert await rig.stop() == 0


async def test_drift_is_re_read_at_drift_check_not_every_interval(rig: Rig) -> None:
    body = rig.body()
    body["defaults"] = {"interval": "1m", "drift_check": "5m"}
    rig.write_config(body)
    rig.start()
    await rig.clock.advance(0)
    lists = rig.calls("list")
    platform(rig.platform_name).put("A", "edited-by-hand")
    await rig.clock.advance(4 * 60)
    assert rig.calls("list") == lists  # plans from the state store between drift checks
    assert rig.dest["A"] == "edited-by-hand"
    await rig.clock.advance(60)
    assert rig.calls("list") == lists + 1
    assert rig.dest["A"] == "alpha-1"  # drift repaired
    assert await rig.stop() == 0


async def test_drift_check_shorter_than_interval_sets_the_pace(rig: Rig) -> None:
    body = rig.body()
    body["defaults"] = {"interval": "1h", "drift_check": "10m"}
    rig.write_config(body)
    rig.start()
    await rig.clock.advance(0)
    platform(rig.platform_name).put("B", "edited-by-hand")
    await rig.clock.advance(10 * 60)
    assert rig.dest["B"] == "bravo-1"
    assert await rig.stop() == 0


async def test_changed_source_file_triggers_its_syncs(rig: Rig) -> None:
    rig.start(watch_interval=1.0, file_settle=0.2)
    await rig.clock.advance(0)
    rig.store["values"]["A"] = "alpha-3"
    rig.store["mtime"] = 2.0
    await rig.clock.advance(1.2)
    assert rig.dest["A"] == "alpha-3"
    assert rig.sample("syncd_triggers_total", {"sync": "main", "reason": "file"}) == 1.0
    await rig.clock.advance(5)
    assert rig.sample("syncd_triggers_total", {"sync": "main", "reason": "file"}) == 1.0
    assert await rig.stop() == 0


async def test_a_file_still_being_written_is_read_once_it_settles(rig: Rig) -> None:
    rig.start(watch_interval=1.0, file_settle=0.2)
    await rig.clock.advance(0)
    reads = rig.store["reads"]
    rig.store["mtime"] = 2.0
    await rig.clock.advance(1.1)
    rig.store["mtime"] = 3.0  # written again during the settle pause
    await rig.clock.advance(0.1)
    assert rig.store["reads"] == reads
    await rig.clock.advance(1.2)
    assert rig.store["reads"] == reads + 1
    assert await rig.stop() == 0


async def test_failed_source_read_changes_nothing_and_is_counted(rig: Rig) -> None:
    rig.start()
    await rig.clock.advance(0)
    rig.store["broken"] = True
    await rig.clock.advance(60 + 10)  # an interval run plus the engine's read retries
    assert rig.dest == {"A": "alpha-1", "B": "bravo-1"}
    labels = {"sync": "main", "destination": "dest", "result": "source-failed"}
    assert rig.sample("syncd_runs_total", labels) == 1.0
    assert rig.sample("syncd_source_reads_total", {"source": "src", "result": "failed"}) == 3.0
    assert await rig.stop() == 0


async def test_sighup_reload_applies_a_good_config(rig: Rig) -> None:
    d = rig.start()
    await rig.clock.advance(0)
    second = f"{rig.platform_name}-2"
    memory.PLATFORMS.pop(second, None)
    body = rig.body()
    body["destinations"]["dest2"] = {"type": "memory", "platform": second}
    body["syncs"][0]["to"] = ["dest", "dest2"]
    rig.write_config(body)
    d.request_reload()
    d.request_reload()
    await rig.clock.advance(0)
    # the changed sync ran at once, without waiting for its interval
    assert platform(second).data == {"A": "alpha-1", "B": "bravo-1"}
    assert d.config.syncs[0].destinations == ("dest", "dest2")
    assert rig.sample("syncd_config_reloads_total", {"result": "ok"}) == 1.0
    assert await rig.stop() == 0


async def test_sighup_reload_keeps_the_old_config_when_the_new_one_is_invalid(
    rig: Rig,
) -> None:
    d = rig.start()
    await rig.clock.advance(0)
    old = d.config
    body = rig.body()
    body["defaults"]["intervall"] = "5m"
    rig.write_config(body)
    with capture_logs() as logs:
        d.request_reload()
        await rig.clock.advance(0)
    assert d.config is old
    assert rig.sample("syncd_config_reloads_total", {"result": "invalid"}) == 1.0
    refused = [e for e in logs if e["event"].startswith("config reload refused")]
    assert len(refused) == 1 and refused[0]["log_level"] == "error"
    assert any(e.startswith("defaults.intervall: unknown key") for e in refused[0]["errors"])
    # the old config keeps running
    rig.store["values"]["A"] = "alpha-4"
    await rig.clock.advance(60)
    assert rig.dest["A"] == "alpha-4"
    assert await rig.stop() == 0


async def test_reload_that_drops_a_sync_stops_scheduling_it(rig: Rig) -> None:
    body = rig.body()
    body["syncs"].append({"name": "other", "from": "src", "to": ["dest"], "exclude": ["*"]})
    rig.write_config(body)
    d = rig.start()
    await rig.clock.advance(0)
    rig.write_config(rig.body())
    assert await d.reload() is True
    assert d.scheduler.names == ["main"]
    assert changed_syncs(d.config, d.config) == []
    assert await rig.stop() == 0


async def test_sigterm_lets_in_flight_writes_finish_and_records_them(rig: Rig) -> None:
    body = rig.body()
    body["destinations"]["dest"] = {"type": "gated", "platform": rig.platform_name}
    rig.write_config(body)
    GatedDestination.gate = asyncio.Event()
    d = rig.start(drain_timeout=30.0)
    await rig.clock.advance(0)
    assert d.scheduler.running == ["main"]
    d.request_stop()
    await rig.clock.advance(10)
    assert rig.task is not None and not rig.task.done()
    rig.store["values"]["A"] = "ignored"
    d.trigger_source("src")  # no new work once stopping
    GatedDestination.gate.set()
    await rig.clock.advance(0)
    assert await rig.task == 0
    assert rig.dest == {"A": "alpha-1", "B": "bravo-1"}
    assert set(rig.state.records("main", "dest")) == {"A", "B"}


async def test_sigterm_drain_deadline_cancels_a_hung_run(rig: Rig) -> None:
    body = rig.body()
    body["destinations"]["dest"] = {"type": "gated", "platform": rig.platform_name}
    rig.write_config(body)
    GatedDestination.gate = asyncio.Event()  # never opened
    d = rig.start(drain_timeout=30.0)
    await rig.clock.advance(0)
    d.request_stop()
    await rig.clock.advance(30)
    assert rig.task is not None
    assert await rig.task == 1
    assert rig.dest == {}


async def test_a_second_stop_request_cancels_in_flight_runs(rig: Rig) -> None:
    body = rig.body()
    body["destinations"]["dest"] = {"type": "gated", "platform": rig.platform_name}
    rig.write_config(body)
    GatedDestination.gate = asyncio.Event()
    d = rig.start(drain_timeout=30.0)
    await rig.clock.advance(0)
    d.request_stop()
    d.request_stop()  # the same signal delivered twice: still draining
    await rig.clock.advance(2)
    assert rig.task is not None and not rig.task.done()
    d.request_stop()  # a deliberate second one
    await rig.clock.advance(0)
    assert await rig.task == 1
    assert rig.dest == {}


async def test_real_signals_reload_and_stop(rig: Rig) -> None:
    d = rig.start()
    sigs = _install_signals(d)
    try:
        await rig.clock.advance(0)
        body = rig.body()
        body["syncs"][0]["exclude"] = ["B"]
        rig.write_config(body)
        signal.raise_signal(signal.SIGHUP)
        await _until(lambda: d.config.syncs[0].exclude == ("B",))
        signal.raise_signal(signal.SIGTERM)
        await _until(lambda: rig.task is not None and rig.task.done())
        assert rig.task is not None and await rig.task == 0
    finally:
        loop = asyncio.get_running_loop()
        for s in sigs:
            loop.remove_signal_handler(s)


async def _until(cond: Callable[[], bool], rounds: int = 200) -> None:
    """Signals arrive through the loop's self-pipe; reloads read the file in a thread.
    Yield (without a timer) until ``cond`` holds, failing after a bounded number of turns."""
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0)
        await asyncio.to_thread(lambda: None)
    raise AssertionError("condition not reached")


async def test_readiness_reports_state_and_drain(rig: Rig) -> None:
    d = rig.start()
    await rig.clock.advance(0)
    r = await d.readiness()
    assert r.ready and r.checks == {"config": "ok", "state": "ok"}
    d.request_stop()
    r = await d.readiness()
    assert not r.ready and r.checks["daemon"] == "draining"
    assert rig.task is not None
    await rig.clock.advance(0)
    assert await rig.task == 0


# ---------------------------------------------------------------------- redeploy after a change


@pytest.fixture
def redeploy_rig(rig: Rig) -> Rig:
    body = rig.body()
    body["destinations"]["dest"]["redeploy"] = True
    body["defaults"]["redeploy_debounce"] = "1m"
    rig.write_config(body)
    platform(rig.platform_name).redeploys.clear()
    return rig


async def test_a_burst_of_changes_causes_one_redeploy_after_the_debounce(
    redeploy_rig: Rig,
) -> None:
    rig = redeploy_rig
    d = rig.start()
    await rig.clock.advance(0)  # the start run writes A and B
    p = platform(rig.platform_name)
    assert p.redeploys == []  # waiting for the debounce
    await rig.clock.advance(30)
    # three changes, each through a webhook, 10 s apart
    for i in range(3):
        rig.store["values"]["A"] = f"alpha-burst-{i}"
        d.trigger_source("src")
        await rig.clock.advance(10)
    assert p.redeploys == []  # the debounce counts from the last change
    await rig.clock.advance(45)
    assert p.redeploys == []
    await rig.clock.advance(20)
    assert p.redeploys == [p.writes]  # one, after every write of the burst
    # interval runs that change nothing redeploy nothing
    await rig.clock.advance(60 * 10)
    assert len(p.redeploys) == 1
    assert rig.sample("syncd_redeploys_total", {"destination": "dest", "result": "ok"}) == 1.0
    assert await rig.stop() == 0


async def test_a_draining_daemon_redeploys_what_it_applied(redeploy_rig: Rig) -> None:
    rig = redeploy_rig
    rig.start()
    await rig.clock.advance(0)
    p = platform(rig.platform_name)
    assert p.redeploys == []
    assert await rig.stop() == 0  # SIGTERM inside the debounce: redeployed before exit
    assert p.redeploys == [2]
