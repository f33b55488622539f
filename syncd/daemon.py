"""``syncd run``: the same reconcile as ``syncd once``, on a schedule.

A :class:`Scheduler` runs every sync at its period (with jitter), at once when a webhook
or a changed ``file`` source triggers it, and folds triggers that arrive while a run is
pending or in flight into one follow-up run. Each run is its own task in an
``asyncio.TaskGroup`` and never raises, so one failing or hanging sync never delays the
others. :class:`Daemon` wires the scheduler to the engine, the HTTP server
(:mod:`syncd.server`), the metrics and the signals: SIGTERM/SIGINT drain, SIGHUP reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.config import Config, SyncSpec, load_config
from syncd.connector import Source
from syncd.coordination import HEARTBEAT_SHARE, Coordinator, Hold, owner
from syncd.engine import Engine, Hooks, Snapshots
from syncd.errors import ConfigError, ConfigErrors, StateError
from syncd.logging import get_logger, redactor
from syncd.metrics import Metrics, MetricsHooks
from syncd.model import Snapshot
from syncd.settings import Settings
from syncd.state import Fingerprinter, StateStore, open_store

if TYPE_CHECKING:
    from syncd.status import Status

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

JITTER = 0.1
"""Each period is stretched or shrunk by up to this share, so syncs do not stampede."""
FILE_WATCH_INTERVAL = 1.0
"""How often ``file`` sources are checked for a new modification time."""
FILE_SETTLE = 0.2
"""A changed file must keep the same modification time this long before it is read, so a
file being written is not read half-way."""
DRAIN_TIMEOUT = 25.0
"""How long SIGTERM waits for in-flight runs (under Kubernetes' default 30 s grace)."""
SECOND_STOP_AFTER = 1.0
"""A second SIGTERM/SIGINT cancels in-flight runs only when it comes this long after the
first; a signal delivered twice at once (terminal plus a forwarding wrapper) drains."""
READY_TIMEOUT = 2.0
"""How long /readyz waits for the state store to answer."""

AFTER_CHANGE_POLL = 1.0
"""How often pending after-change steps (redeploys) are looked at for being due."""
BUSY_POLL = 1.0
"""How often a pair found busy is looked at again (PostgreSQL also says when it is freed)."""

CHANGE_REASONS = frozenset({"webhook", "file"})
TRIGGER_CHANNEL = "syncd_trigger"
REPLICAS_CHANNEL = "syncd_replicas"
RELEASED_CHANNEL = "syncd_released"


@dataclass(frozen=True)
class Trigger:
    """Why a run starts: start, interval, webhook, file or reload; ``at`` is monotonic."""

    reason: str
    at: float

    @property
    def is_change(self) -> bool:
        return self.reason in CHANGE_REASONS

    def merge(self, other: Trigger) -> Trigger:
        """One pending trigger standing for both: a change wins, the earliest change first,
        so propagation latency is measured from the first change noticed."""
        if self.is_change and other.is_change:
            return self if self.at <= other.at else other
        if other.is_change:
            return other
        return self


Runner = Callable[[str, Trigger, dict[str, Snapshot]], Awaitable[float | None]]
"""Runs one sync; may return how soon (seconds) it should run again instead of its period."""


@dataclass
class _Slot:
    name: str
    period: float
    next_due: float
    started: bool = False
    running: bool = False
    removed: bool = False
    pending: Trigger | None = None


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` completes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Scheduler:
    """Decides when each sync runs. Time comes from ``clock``/``sleep`` (injected in tests).

    Every sync runs once at start, then ``period`` (± ``jitter``) after its previous run
    ended. ``trigger`` starts a run at once; a trigger for a sync that is already running
    or pending becomes (or joins) its single follow-up run.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        jitter: float = JITTER,
        drain_timeout: float = DRAIN_TIMEOUT,
        on_coalesce: Callable[[str], None] | None = None,
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.jitter = jitter
        self.drain_timeout = drain_timeout
        self.on_coalesce = on_coalesce or (lambda name: None)
        self._slots: dict[str, _Slot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._aborted = False
        self.log = get_logger()

    # ------------------------------------------------------------------ control

    def set_syncs(
        self, periods: Mapping[str, float], *, run_now: Iterable[str] = (), reason: str = "reload"
    ) -> None:
        """Adopt a new set of syncs: new ones run at once, removed ones stop being
        scheduled (a run in flight finishes), ``run_now`` are triggered."""
        now = self.clock()
        for name, period in periods.items():
            slot = self._slots.get(name)
            if slot is None or slot.removed:
                if slot is not None and slot.running:
                    slot.removed = False
                    slot.period = period
                    continue
                self._slots[name] = _Slot(name, period, next_due=now)
            else:
                slot.period = period
        for name, slot in self._slots.items():
            if name not in periods:
                slot.removed = True
                slot.pending = None
        existing = [n for n in run_now if n in periods]
        if existing:
            self.trigger(existing, reason)
        self._wake.set()

    def trigger(self, names: Iterable[str], reason: str) -> list[str]:
        """Run these syncs as soon as they are free. Returns the names that exist."""
        t = Trigger(reason, self.clock())
        out: list[str] = []
        for name in names:
            slot = self._slots.get(name)
            if slot is None or slot.removed:
                continue
            out.append(name)
            if slot.pending is not None:
                slot.pending = slot.pending.merge(t)
                self.on_coalesce(name)
            else:
                slot.pending = t
        if out:
            self._wake.set()
        return out

    def stop(self) -> None:
        """Start no new run; ``run`` returns once in-flight runs end (or the deadline)."""
        self._stopping = True
        self._wake.set()

    def abort(self) -> None:
        """Cancel in-flight runs now (a second SIGTERM)."""
        self._aborted = True
        self.stop()
        for t in list(self._tasks):
            t.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def running(self) -> list[str]:
        return sorted(s.name for s in self._slots.values() if s.running)

    @property
    def names(self) -> list[str]:
        return sorted(n for n, s in self._slots.items() if not s.removed)

    def next_due(self, name: str) -> float:
        return self._slots[name].next_due

    def pending(self, name: str) -> Trigger | None:
        """The trigger waiting to start ``name`` (None: nothing queued)."""
        slot = self._slots.get(name)
        return slot.pending if slot is not None else None

    # ------------------------------------------------------------------ loop

    async def run(self) -> bool:
        """Schedule until ``stop``; then drain. True when every run ended on its own."""
        async with asyncio.TaskGroup() as tg:
            while not self._stopping:
                self._wake.clear()
                now = self.clock()
                cache = Snapshots()  # syncs starting together share source reads
                for slot in list(self._slots.values()):
                    if slot.removed:
                        if not slot.running:
                            del self._slots[slot.name]
                        continue
                    if slot.running:
                        continue
                    if slot.pending is None and slot.next_due <= now:
                        slot.pending = Trigger("interval" if slot.started else "start", now)
                    if slot.pending is not None:
                        trig, slot.pending = slot.pending, None
                        slot.running = slot.started = True
                        task = tg.create_task(self._run(slot, trig, cache), name=slot.name)
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                idle = [s.next_due for s in self._slots.values() if not s.running]
                delay = max(0.0, min(idle) - now) if idle else None
                waits: list[Awaitable[Any]] = [self._wake.wait()]
                if delay is not None:
                    waits.append(self.sleep(delay))
                await _first(*waits)
            return await self._drain()

    async def _run(self, slot: _Slot, trig: Trigger, cache: dict[str, Snapshot]) -> None:
        again: float | None = None
        try:
            again = await self.runner(slot.name, trig, cache)
        except Exception:  # a bug in one run must not stop the others
            self.log.exception("sync run crashed", sync=slot.name)
        finally:
            slot.running = False
            if not any(s.running for s in self._slots.values()):
                give_back_memory()
            spread = 1.0 + self.jitter * (2.0 * self.rng() - 1.0)
            period = slot.period * spread
            slot.next_due = self.clock() + (min(again, period) if again is not None else period)
            self._wake.set()

    async def _drain(self) -> bool:
        tasks = set(self._tasks)
        if self._aborted:
            return not tasks
        if not tasks:
            return True
        names = sorted(t.get_name() for t in tasks)
        self.log.info("draining", syncs=names, deadline=self.drain_timeout)
        await _first(asyncio.wait(tasks), self.sleep(self.drain_timeout))
        left = [t for t in tasks if not t.done()]
        if not left:
            if self._aborted:
                return False
            self.log.info("drained", syncs=names)
            return True
        self.log.error(
            "drain deadline passed; cancelling runs still in flight",
            syncs=sorted(t.get_name() for t in left),
            deadline=self.drain_timeout,
        )
        for t in left:
            t.cancel()
        return False


def sync_period(spec: SyncSpec) -> float:
    """A sync runs every ``interval``, or every ``drift_check`` when that is shorter, so
    destinations are re-read for drift on time."""
    p = spec.policy
    return min(p.interval, p.drift_check) if p.drift_check > 0 else p.interval


def _sync_identity(cfg: Config, spec: SyncSpec) -> tuple[Any, ...]:
    src = cfg.sources.get(spec.source)
    dests = tuple(
        (d, cfg.destinations[d].kind, cfg.destinations[d].config)
        for d in spec.destinations
        if d in cfg.destinations
    )
    return (spec, (src.kind, src.config) if src else None, dests)


def changed_syncs(old: Config, new: Config) -> list[str]:
    """Syncs that are new or whose spec, source or destinations changed."""
    before = {s.name: _sync_identity(old, s) for s in old.syncs}
    return [s.name for s in new.syncs if before.get(s.name) != _sync_identity(new, s)]


EngineFactory = Callable[[Config, Hooks], Engine]
"""Builds the engine for a config; the daemon passes the hooks that feed its metrics."""


@dataclass
class Readiness:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)


def _libc_trim() -> Callable[[], None]:
    try:
        import ctypes
        import ctypes.util

        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None  # not glibc: nothing to give back this way

    def give_back() -> None:
        trim(0)

    return give_back


give_back_memory = _libc_trim()
"""Once every run of a pass is done: return the heap its snapshots and plans used to the
system (glibc keeps freed memory for reuse; ``malloc_trim`` hands it back), so the
resident size between passes is what the daemon holds, not the pass's peak."""


class Daemon:
    """The long-running process: scheduler, file watch, reloads, HTTP server, drain."""

    def __init__(
        self,
        config: Config,
        state: StateStore,
        fingerprint: Callable[[str, str], str],
        *,
        metrics: Metrics | None = None,
        engine_factory: EngineFactory | None = None,
        config_loader: Callable[[Path], Config] | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        watch_interval: float = FILE_WATCH_INTERVAL,
        file_settle: float = FILE_SETTLE,
        drain_timeout: float = DRAIN_TIMEOUT,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.fingerprint = fingerprint
        self.coordinator = coordinator or state.coordinator(lease=float(config.state.lease))
        self._live: list[str] = []
        self._waiting: dict[str, set[str]] = {}  # sync -> destinations found busy
        self._members_changed = asyncio.Event()
        self._freed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics = metrics or Metrics()
        self.hooks = MetricsHooks(self.metrics, clock=clock, wall=wall)
        self.engine_factory = engine_factory or self._default_engine
        self.config_loader = config_loader or load_config
        self.clock = clock
        self.sleep = sleep
        self.watch_interval = watch_interval
        self.file_settle = file_settle
        self.log = get_logger()
        self.scheduler = Scheduler(
            self._run_sync,
            clock=clock,
            sleep=sleep,
            rng=rng,
            drain_timeout=drain_timeout,
            on_coalesce=lambda name: self.metrics.coalesced.labels(name).inc(),
        )
        self.engine = self._make_engine(config)
        self._users: dict[Engine, int] = {}
        self._retired: list[Engine] = []
        self._stop = asyncio.Event()
        self._stop_requested_at = 0.0
        self._reload_requested = asyncio.Event()
        self._reloads_done = 0
        self._mtimes: dict[str, float | None] = {}
        self.scheduler.set_syncs({s.name: sync_period(s) for s in config.syncs}, reason="start")

    def _make_engine(self, cfg: Config) -> Engine:
        engine = self.engine_factory(cfg, self.hooks)
        # redeploys wait for the debounce; run_after_changes starts them
        engine.defer_after_change = True
        return engine

    def _default_engine(self, cfg: Config, hooks: Hooks) -> Engine:
        return Engine(
            cfg,
            self.state,
            self.fingerprint,
            hooks=hooks,
            coordinator=self.coordinator,
        )

    # ------------------------------------------------------------------ after a change

    async def run_after_changes(self, *, due_only: bool = True) -> int:
        """Run the pending after-change steps (redeploys) of the pairs this replica owns:
        the due ones, or every one (a drain). Each under its pair's hold, so exactly one
        process does it. Returns how many pending ones were left undone."""
        try:
            pending = self.state.pending_after_changes()
        except StateError as exc:
            self.log.warning("cannot read pending redeploys", error=str(exc))
            return 0
        engine = self.engine
        now = engine.now()
        left = 0
        for sync, dest, due in pending:
            try:
                spec = engine.config.sync(sync)
            except ConfigError:
                continue
            if dest not in spec.destinations:
                continue
            if not self.owns(sync):
                left += 1
                continue
            if due_only and due > now:
                continue
            got = self.coordinator.try_acquire(sync, dest)
            if not isinstance(got, Hold):
                left += 1
                continue  # its pair is running: the next look
            try:
                result = await engine.run_after_change(sync, dest)
            finally:
                self.coordinator.release(got)
            if result.state != "done":
                left += 1
        return left

    async def _watch_after_changes(self) -> None:
        while not self._stop.is_set():
            await _first(self.sleep(AFTER_CHANGE_POLL), self._stop.wait())
            if not self._stop.is_set():
                await self.run_after_changes()

    # ------------------------------------------------------------------ sharing the work

    @property
    def replica_id(self) -> str:
        return self.coordinator.identity.id

    def owns(self, sync: str) -> bool:
        """Whether this replica runs ``sync``. Every sync, unless replicas share the state;
        none while this replica cannot see itself among the live ones (no state store)."""
        if not self.coordinator.shares_work:
            return True
        return owner(sync, self._live) == self.replica_id

    def owned_pairs(self) -> int:
        return sum(len(s.destinations) for s in self.config.syncs if self.owns(s.name))

    async def refresh_replicas(self) -> list[str]:
        """Read the live replicas; run at once the syncs this replica has just gained."""
        before = {s.name for s in self.config.syncs if self.owns(s.name)}
        try:
            replicas = self.coordinator.replicas()  # one short query, like every state call
            live = sorted(r.id for r in replicas)
        except StateError as exc:
            self.log.error("cannot see the other replicas; running nothing", error=str(exc))
            live = []
        if self.draining:
            live = [r for r in live if r != self.replica_id]
        if live != self._live:
            self.log.info("replicas", live=live, me=self.replica_id)
        self._live = live
        self.metrics.replicas.set(len(live))
        self.metrics.pairs_owned.labels(self.replica_id).set(self.owned_pairs())
        gained = [s.name for s in self.config.syncs if self.owns(s.name) and s.name not in before]
        if gained and not self.draining:
            self.log.info("taking syncs over", syncs=gained)
            self.scheduler.trigger(gained, "takeover")
        return gained

    async def _watch_replicas(self) -> None:
        every = self.coordinator.lease * HEARTBEAT_SHARE
        while not self._stop.is_set():
            await self.refresh_replicas()
            self._members_changed.clear()
            await _first(self.sleep(every), self._members_changed.wait(), self._stop.wait())

    async def _watch_busy(self) -> None:
        """Run a sync again as soon as the pairs it found busy are free."""
        while not self._stop.is_set():
            await _first(self.sleep(BUSY_POLL), self._freed.wait(), self._stop.wait())
            self._freed.clear()
            if not self._waiting or self._stop.is_set():
                continue
            try:
                held = self.coordinator.holders()
            except StateError as exc:
                self.log.warning("cannot read the pair holders", error=str(exc))
                continue
            free = [
                name
                for name, dests in self._waiting.items()
                if not any((name, d) in held for d in dests)
            ]
            for name in free:
                del self._waiting[name]
            if free:
                self.scheduler.trigger(free, "free")

    def _on_notification(self, channel: str, payload: str) -> None:
        """From the listener thread: hand the notification to the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._notified, channel, payload)

    def _notified(self, channel: str, payload: str) -> None:
        if channel == TRIGGER_CHANNEL:
            try:
                data = json.loads(payload)
            except ValueError:
                return
            sync, reason = str(data.get("sync", "")), str(data.get("reason", "webhook"))
            if data.get("from") != self.replica_id and self.owns(sync):
                self.scheduler.trigger([sync], reason)
        elif channel == RELEASED_CHANNEL:
            self._freed.set()
        else:  # joins and leaves, or the listener (re)connected
            self._members_changed.set()

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: start nothing new, drain. A second request cancels the drain."""
        if self._stop.is_set():
            if self.clock() - self._stop_requested_at < SECOND_STOP_AFTER:
                return  # the same Ctrl-C or SIGTERM, delivered twice (a wrapper forwarding it)
            self.log.warning("second stop request: cancelling in-flight runs")
            self.scheduler.abort()
            return
        self.log.info("stopping: no new runs; waiting for in-flight runs")
        self._stop_requested_at = self.clock()
        self._stop.set()
        self.scheduler.stop()
        if self.coordinator.shares_work:
            # leave the replicas now: the others take the syncs over while this one drains
            # (each pair it is still running is released, and announced, as its run ends)
            try:
                self.coordinator.deregister()
            except StateError as exc:
                self.log.warning("could not leave the replicas", error=str(exc))

    def request_reload(self) -> None:
        """SIGHUP: reload the config file (several requests in a row reload once)."""
        self._reload_requested.set()

    @property
    def draining(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ HTTP backend

    @property
    def max_body_bytes(self) -> int:
        return self.config.server.max_body_bytes

    def webhook_source(self, name: str) -> Source | None:
        if name not in self.config.sources:
            return None
        src: Source = self.engine.source(name)
        return src

    def trigger_source(self, name: str, reason: str = "webhook") -> list[str]:
        """Run every sync reading ``name`` at once: here when this replica owns it, else on
        the replica that does (forwarded with NOTIFY)."""
        names = [s.name for s in self.config.syncs if s.source == name]
        mine = [n for n in names if self.owns(n)]
        started = self.scheduler.trigger(mine, reason)
        for n in names:
            if n in mine:
                continue
            payload = json.dumps({"sync": n, "reason": reason, "from": self.replica_id})
            try:
                self.coordinator.notify(TRIGGER_CHANNEL, payload)
                started.append(n)
            except StateError as exc:
                self.log.error("could not hand a trigger to its replica", sync=n, error=str(exc))
        return started

    @property
    def status_token(self) -> str | None:
        token = self.config.server.status_token
        return (token.get_secret_value() or None) if token is not None else None

    def status(self) -> Status:
        """The status of every pair, with what only the daemon knows: when each sync runs
        next, the last read of each source, the pairs found busy."""
        from syncd import status

        wall_now = self.hooks.wall()
        mono_now = self.clock()
        next_runs = {}
        for name in self.scheduler.names:
            due = self.scheduler.next_due(name)
            if self.scheduler.pending(name) is not None or name in self.scheduler.running:
                due = mono_now
            next_runs[name] = datetime.fromtimestamp(wall_now + max(0.0, due - mono_now), UTC)
        sources = {
            name: status.SourceRead(ok, at, keys)
            for name, (ok, at, keys) in self.hooks.last_reads.items()
        }
        busy = {(sync, d) for sync, dests in self._waiting.items() for d in dests}
        return status.collect(
            self.config,
            self.state,
            self.coordinator,
            next_runs=next_runs,
            sources=sources,
            busy=busy,
            now=datetime.fromtimestamp(wall_now, UTC),
        )

    async def readiness(self) -> Readiness:
        checks = {"config": "ok"}
        ok = True
        if self.draining:
            checks["daemon"] = "draining"
            ok = False
        if self.coordinator.shares_work and self.replica_id not in self._live:
            checks["replica"] = "not among the live replicas"
            ok = False
        try:
            await asyncio.wait_for(asyncio.to_thread(self.state.ping), READY_TIMEOUT)
            await asyncio.wait_for(asyncio.to_thread(self.coordinator.ping), READY_TIMEOUT)
            checks["state"] = "ok"
        except TimeoutError:
            checks["state"] = f"no answer within {READY_TIMEOUT:g}s"
            ok = False
        except Exception as exc:
            checks["state"] = redactor.scrub(f"{type(exc).__name__}: {exc}")
            ok = False
        return Readiness(ok, checks)

    # ------------------------------------------------------------------ runs

    async def _run_sync(
        self, name: str, trigger: Trigger, cache: dict[str, Snapshot]
    ) -> float | None:
        engine = self.engine
        try:
            spec = engine.config.sync(name)
        except ConfigError:
            return None
        if not self.owns(name):
            self.log.debug("sync run by another replica", sync=name, trigger=trigger.reason)
            return None
        self.metrics.triggers.labels(name, trigger.reason).inc()
        if trigger.is_change:
            self.hooks.changed_at[name] = trigger.at
        self._users[engine] = self._users.get(engine, 0) + 1
        self.metrics.in_flight.inc()
        try:
            self.log.debug("sync run", sync=name, trigger=trigger.reason)
            result = await engine.run_sync(spec, cache=cache)
            for p in result.pairs:
                # the engine reports pairs it planned; a failed source read ends them early
                if p.result == "source-failed":
                    self.metrics.runs.labels(name, p.destination, p.result).inc()
            # busy elsewhere, or stopped having lost the hold: again once the pair is free
            busy = {p.destination for p in result.pairs if p.result in ("busy", "lost")}
            if busy:
                # run again as soon as they are free (the watcher looks every BUSY_POLL)
                self._waiting[name] = busy
                self.log.info(
                    "pairs busy elsewhere; will run when free", sync=name, destinations=sorted(busy)
                )
            else:
                self._waiting.pop(name, None)
            return None
        finally:
            self.hooks.changed_at.pop(name, None)
            self.metrics.in_flight.dec()
            self._users[engine] -= 1
            if engine is not self.engine and self._users[engine] == 0:
                await self._close_engine(engine)

    async def _close_engine(self, engine: Engine) -> None:
        self._users.pop(engine, None)
        if engine in self._retired:
            self._retired.remove(engine)
        await engine.aclose()

    # ------------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """Load the config file again; an invalid one is logged and the old one kept."""
        path = self.config.path
        try:
            # in the loop, not a thread: a small file read once per SIGHUP, and reloads
            # stay ordered with the runs they affect
            new = self.config_loader(path)
        except ConfigErrors as exc:
            self._reload_failed(path, [str(e) for e in exc.errors])
            return False
        except ConfigError as exc:
            self._reload_failed(path, [str(exc)])
            return False
        except Exception as exc:
            self._reload_failed(path, [f"{type(exc).__name__}: {exc}"])
            return False
        old, old_engine = self.config, self.engine
        needs_restart = []
        if new.state_url != old.state_url:
            needs_restart.append("state.url")
        if new.server.listen != old.server.listen:
            needs_restart.append("server.listen")
        if needs_restart:
            self.log.warning(
                "config reloaded, but these options take effect only after a restart",
                options=needs_restart,
            )
        try:
            engine = self._make_engine(new)
        except Exception as exc:
            self._reload_failed(path, [f"{type(exc).__name__}: {exc}"])
            return False
        self.config, self.engine = new, engine
        changed = changed_syncs(old, new)
        self.scheduler.set_syncs({s.name: sync_period(s) for s in new.syncs}, run_now=changed)
        if self._users.get(old_engine, 0) == 0:
            await self._close_engine(old_engine)
        else:
            self._retired.append(old_engine)
        self.metrics.reloads.labels("ok").inc()
        self._reloads_done += 1
        self.log.info("config reloaded", path=str(path), syncs=len(new.syncs), changed=changed)
        return True

    def _reload_failed(self, path: Path, errors: list[str]) -> None:
        self.metrics.reloads.labels("invalid").inc()
        self.log.error(
            "config reload refused; the previous config keeps running",
            path=str(path),
            errors=[redactor.scrub(e) for e in errors],
        )

    async def _reload_loop(self) -> None:
        while not self._stop.is_set():
            await _first(self._reload_requested.wait(), self._stop.wait())
            if self._stop.is_set():
                return
            self._reload_requested.clear()
            await self.reload()

    # ------------------------------------------------------------------ file watch

    def _watched(self) -> dict[str, Callable[[], float | None]]:
        used = {s.source for s in self.config.syncs}
        out: dict[str, Callable[[], float | None]] = {}
        for name in sorted(used & set(self.config.sources)):
            try:
                src = self.engine.source(name)
            except Exception:
                continue
            mtime = getattr(src, "mtime", None)
            if callable(mtime):
                out[name] = mtime
        return out

    def check_files(self) -> dict[str, float | None]:
        """Sources whose modification time moved since the last look (new ones are only
        remembered). Missing files are remembered, not triggered."""
        moved: dict[str, float | None] = {}
        for name, mtime in self._watched().items():
            m = mtime()
            if name not in self._mtimes:
                self._mtimes[name] = m
            elif m != self._mtimes[name]:
                moved[name] = m
        return moved

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """True when a stop was requested."""
        if self._stop.is_set():
            return True
        await _first(self.sleep(seconds), self._stop.wait())
        return self._stop.is_set()

    async def _watch_files(self) -> None:
        self.check_files()  # the start run reads every source anyway
        while not await self._sleep_or_stop(self.watch_interval):
            moved = self.check_files()
            if not moved:
                continue
            if await self._sleep_or_stop(self.file_settle):
                return
            watched = self._watched()
            for name, m in moved.items():
                if name not in watched or watched[name]() != m:
                    continue  # still being written: the next look sees it again
                self._mtimes[name] = m
                if m is None:
                    continue
                syncs = self.trigger_source(name, "file")
                self.log.info("source file changed", source=name, syncs=syncs)

    # ------------------------------------------------------------------ main

    async def main(self, sock: socket.socket | None = None) -> int:
        """Run until stopped. 0 after a clean drain, 1 if runs had to be cancelled."""
        from syncd.server import create_app

        http: Any = None
        clean = False
        self._loop = asyncio.get_running_loop()
        if self.coordinator.shares_work:
            self.coordinator.register()
            self.coordinator.listen(
                (TRIGGER_CHANNEL, REPLICAS_CHANNEL, RELEASED_CHANNEL), self._on_notification
            )
            await self.refresh_replicas()
        else:
            self.metrics.pairs_owned.labels(self.replica_id).set(self.owned_pairs())
        try:
            async with asyncio.TaskGroup() as tg:
                sched = tg.create_task(self.scheduler.run(), name="scheduler")
                tg.create_task(self._watch_files(), name="file-watch")
                tg.create_task(self._reload_loop(), name="reload")
                tg.create_task(self._watch_busy(), name="busy-watch")
                tg.create_task(self._watch_after_changes(), name="after-change")
                if self.coordinator.shares_work:
                    tg.create_task(self._watch_replicas(), name="replicas")
                if sock is not None:
                    http = _make_server(create_app(self))
                    tg.create_task(http.serve(sockets=[sock]), name="http")
                self.log.info(
                    "syncd run started",
                    syncs=len(self.config.syncs),
                    listen=self.config.server.listen if sock is not None else None,
                )
                clean = await sched
                self._stop.set()
                # what this replica applied is redeployed before it goes, debounce or not
                left = await self.run_after_changes(due_only=False)
                if left:
                    self.log.warning(
                        "redeploys not started before the stop: they stay pending and run "
                        "at the next start, or on the replica that takes the sync over",
                        pending=left,
                    )
                if http is not None:
                    http.should_exit = True
        finally:
            for engine in {self.engine, *self._retired}:
                await engine.aclose()
            self.coordinator.close()
        self.log.info("syncd run stopped", clean=clean)
        return 0 if clean else 1


# ---------------------------------------------------------------------------- process


def _make_server(app: Any) -> Any:
    """A uvicorn server for ``app`` that leaves SIGTERM/SIGINT to the daemon."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return Server(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    )


def bind(listen: str) -> socket.socket:
    """A listening socket for ``HOST:PORT`` (``[::1]:8080`` for IPv6)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    err: OSError | None = None
    for family, kind, proto, _canon, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.set_inheritable(False)
            return sock
        except OSError as exc:
            sock.close()
            err = exc
    raise err or OSError(f"cannot listen on {listen}")


def _install_signals(daemon: Daemon) -> Collection[signal.Signals]:
    loop = asyncio.get_running_loop()
    sigs = {
        signal.SIGTERM: daemon.request_stop,
        signal.SIGINT: daemon.request_stop,
        signal.SIGHUP: daemon.request_reload,
    }
    for sig, fn in sigs.items():
        loop.add_signal_handler(sig, fn)
    return list(sigs)


async def _serve(daemon: Daemon, sock: socket.socket) -> int:
    sigs = _install_signals(daemon)
    try:
        return await daemon.main(sock)
    finally:
        loop = asyncio.get_running_loop()
        for sig in sigs:
            loop.remove_signal_handler(sig)


def run_daemon(cfg: Config, settings: Settings) -> int:
    """``syncd run``: serve until SIGTERM/SIGINT; 0 after a clean drain."""
    log = get_logger()
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        log.error("syncd run needs the server extra: pip install 'syncd[server]'", missing=exc.name)
        return 2
    try:
        sock = bind(cfg.server.listen)
    except (OSError, ValueError) as exc:
        log.error("cannot listen", listen=cfg.server.listen, error=str(exc))
        return 1
    try:
        state = open_store(cfg.state_url, settings.resolved_state_dir(), cfg.base_dir)
        fingerprint = Fingerprinter.from_file(settings.resolved_key_file())
    except Exception:
        sock.close()
        raise
    try:

        async def go() -> int:
            daemon = Daemon(cfg, state, fingerprint)
            return await _serve(daemon, sock)

        return asyncio.run(go())
    finally:
        state.close()
        sock.close()
