"""One pass of reconciliation: read each source once, plan and apply every
(sync, destination) pair on its own. ``syncd once``, ``syncd plan`` and every daemon
cycle go through here."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from syncd import mapping, planner
from syncd.config import Config, SyncSpec
from syncd.connector import ConnectorContext, Destination, Source
from syncd.coordination import Coordinator, Hold, Holder, acquire
from syncd.errors import ConnectorError, RetryableError, SourceReadError, StateError
from syncd.executor import Executor, PairOutcome
from syncd.logging import get_logger, redactor
from syncd.model import Action, Change, Plan, Snapshot
from syncd.state.base import StateStore

if TYPE_CHECKING:
    from syncd.notify import Notifier

PLANS_AT_ONCE = 4
"""Source reads, and pair plans, one process computes at once (four). Both are CPU and memory
(a snapshot, a listing, a fingerprint and a change per key); past a few at once they only
pile up memory (100 syncs of 1,000 secrets starting together), and the writes that follow
are not held back by this cap."""

PAIRS_IN_FLIGHT = 512
"""Pair runs one process applies at once. Each holds a lock while it runs (PostgreSQL's
shared lock table takes about ``max_locks_per_transaction`` x ``max_connections`` of them,
6,400 with the defaults, across every process); a pair past the cap waits for a slot
before it takes its lock."""


AFTER_CHANGE_RETRY = 60.0
"""A failed redeploy stays pending and is tried again this long after."""


# an ItemFailure's kind (its error's class name) as the error class shown to users
KIND_CLASS = {
    "RetryableError": "platform",
    "RateLimited": "platform",
    "lost": "platform",
    "auth": "config",
    "AuthError": "config",
    "KeyRejected": "config",
    "PermanentError": "config",
    "QuotaExceeded": "config",
    "ConflictError": "config",
}


def error_class_of(exc: BaseException) -> str:
    return "platform" if isinstance(exc, RetryableError | StateError) else "config"


class Hooks:
    """Observers of the engine (metrics, benchmarks). Every method is optional."""

    def api_call(self, destination: str, operation: str, status: str) -> None: ...

    def retry(self, destination: str) -> None: ...

    def pair_done(self, result: PairResult, seconds: float) -> None: ...

    def source_read(self, source: str, ok: bool, snapshot: Snapshot | None) -> None: ...

    def after_change(self, sync: str, destination: str, result: str) -> None: ...

    def notification(self, result: str) -> None: ...

    def progress(
        self, sync: str, destination: str, done: int, total: int, waiting: str | None
    ) -> None: ...

    def lock_wait(self, sync: str, destination: str) -> None: ...

    def busy(self, sync: str, destination: str) -> None: ...


@dataclass(frozen=True)
class AfterResult:
    """The after-change step of a pair run (a redeploy, a build, a restart).

    ``state``: ``done``, ``failed`` (kept pending, tried again), ``held`` (a key failed),
    ``deferred`` (``syncd run``: after the debounce), ``planned`` (``plan``)."""

    state: str
    message: str
    error_class: str | None = None


@dataclass
class PairResult:
    sync: str
    destination: str
    plan: Plan | None = None
    outcome: PairOutcome | None = None
    result: str = "ok"  # ok | failed | refused | source-failed | error | busy | lost
    error: str | None = None
    holder: Holder | None = None  # busy: the process holding the pair
    after: AfterResult | None = None  # the redeploy (restart) this run led to
    failure_class: str | None = None  # result error: the class of what stopped the pair

    @property
    def problems(self) -> list[tuple[str, str, str]]:
        """(key, kind, message) for every key that failed, was blocked or conflicted."""
        out: list[tuple[str, str, str]] = []
        if self.plan is not None:
            for c in self.plan.changes:
                if c.action in (Action.BLOCKED, Action.CONFLICT):
                    out.append((c.label, str(c.action), c.reason))
        if self.outcome is not None:
            for f in self.outcome.failed:
                out.append((f.change.label, "failed", f.message))
        return out

    @property
    def problem_rows(self) -> list[dict[str, str]]:
        """Each key that failed, was blocked or conflicted: key (as the source names it),
        kind, reason and error class. Names and reasons only, never a value."""
        out: list[dict[str, str]] = []
        if self.plan is not None:
            for c in self.plan.changes:
                if c.action in (Action.BLOCKED, Action.CONFLICT):
                    out.append(
                        {
                            "key": c.label,
                            "kind": str(c.action),
                            "reason": c.reason,
                            "class": "config",
                        }
                    )
        if self.outcome is not None:
            for f in self.outcome.failed:
                out.append(
                    {
                        "key": f.change.label,
                        "kind": "failed",
                        "reason": f.message,
                        "class": KIND_CLASS.get(f.kind, "config"),
                    }
                )
        return out

    @property
    def error_class(self) -> str | None:
        """What the user must do about this run: ``config`` (fix the config, the credential
        or its permissions, the key), ``platform`` (the platform failed or throttled; syncd
        retries), ``source`` (the source could not be read; nothing changed); None when
        nothing is wrong."""
        if self.result == "source-failed":
            return "source"
        if self.result in ("ok", "busy"):
            return None
        if self.result == "refused":
            return "config"
        if self.result == "lost":
            return "platform"
        if self.result == "error":
            return self.failure_class or "config"
        classes = {p["class"] for p in self.problem_rows}
        return "config" if "config" in classes else ("platform" if classes else None)

    @property
    def counts(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        if self.plan is not None:
            applied = {id(x) for x in self.outcome.applied} if self.outcome else set()
            failed = {id(f.change) for f in self.outcome.failed} if self.outcome else set()
            for ch in self.plan.changes:
                if ch.write and self.outcome is not None:
                    if id(ch) in applied:
                        c[
                            {
                                "create": "created",
                                "update": "updated",
                                "delete": "deleted",
                                "adopt": "adopted",
                            }[ch.action.value]
                        ] += 1
                    elif id(ch) in failed:
                        c["failed"] += 1
                elif ch.action is Action.ADOPT:
                    c["adopted"] += 1
                elif ch.action is Action.NOOP:
                    c["unchanged"] += 1
                elif ch.action is Action.SKIP:
                    c["skipped"] += 1
                elif ch.action in (Action.BLOCKED, Action.CONFLICT):
                    c[str(ch.action)] += 1
                if ch.drift:
                    c["drift"] += 1
        if self.outcome is not None:
            c["writes"] = self.outcome.write_calls
            c["retries"] = self.outcome.retries
        return dict(c)

    @property
    def ok(self) -> bool:
        return self.result == "ok"


@dataclass
class SyncResult:
    name: str
    pairs: list[PairResult] = field(default_factory=list)
    source_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.source_error is None and all(p.ok for p in self.pairs)


class Snapshots(dict[str, Snapshot]):
    """Source snapshots shared by the syncs of one pass (one read per source scope); a
    snapshot is let go as soon as the last sync of the pass that wanted it is done."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, int] = {}

    def claim(self, scope: str) -> None:
        self.users[scope] = self.users.get(scope, 0) + 1

    def release(self, scope: str) -> None:
        left = self.users.get(scope, 0) - 1
        if left > 0:
            self.users[scope] = left
        else:
            self.users.pop(scope, None)
            self.pop(scope, None)


class Engine:
    def __init__(
        self,
        config: Config,
        state: StateStore,
        fingerprint: Callable[[str, str], str],
        *,
        executor: Executor | None = None,
        hooks: Hooks | None = None,
        now: Callable[[], datetime] | None = None,
        context_extra: dict[str, Any] | None = None,
        coordinator: Coordinator | None = None,
        lock_timeout: float | None = None,
        defer_after_change: bool = False,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.state = state
        # the pair locks: shared with the caller (the daemon's, across reloads), or this
        # engine's own, opened at its first write run and closed with it
        self._coordinator = coordinator
        self._owns_coordinator = coordinator is None
        self._pair_slots = asyncio.Semaphore(PAIRS_IN_FLIGHT)
        self._reading = asyncio.Semaphore(PLANS_AT_ONCE)
        self._planning = asyncio.Semaphore(PLANS_AT_ONCE)
        # syncd run: a redeploy waits for the debounce (the daemon runs it); once: at once
        self.defer_after_change = defer_after_change
        self._notifier = notifier
        self.lock_timeout = (
            float(config.state.lock_timeout) if lock_timeout is None else float(lock_timeout)
        )
        self.fingerprint = fingerprint
        self.hooks = hooks or Hooks()
        self.now = now or (lambda: datetime.now(UTC))
        self.executor = executor or Executor(state, now=self.now)
        self.executor.retry = replace(
            self.executor.retry, budget=float(config.defaults.retry_budget)
        )
        self.executor.on_retry = self.hooks.retry
        self.executor.on_progress = self.hooks.progress
        self.context = ConnectorContext(
            base_dir=str(config.base_dir),
            on_api_call=self.hooks.api_call,
            extra=dict(context_extra or {}),
        )
        self.context.read = self._read
        self.context.on_quota = lambda name, remaining, reset_in: self.executor.observe_quota(
            self.destination(name), remaining, reset_in
        )
        self._destinations: dict[str, Destination] = {}
        self._sources: dict[str, Source] = {}
        self._source_locks: dict[str, asyncio.Lock] = {}
        redactor.add(config.secrets)

    # ------------------------------------------------------------------ connectors

    def destination(self, name: str) -> Destination:
        if name not in self._destinations:
            spec = self.config.destinations[name]
            self._destinations[name] = spec.cls(name, spec.config, self.context)
        return self._destinations[name]

    def source(self, name: str) -> Source:
        if name not in self._sources:
            spec = self.config.sources[name]
            self._sources[name] = spec.cls(name, spec.config, self.context)
        return self._sources[name]

    async def _read(self, destination: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """One read inside a connector's listing: its own slot, timeout and retries."""
        return await self.executor.with_retries(self.destination(destination), fn, what="read")

    @property
    def coordinator(self) -> Coordinator:
        if self._coordinator is None:
            self._coordinator = self.state.coordinator(lease=float(self.config.state.lease))
        return self._coordinator

    @property
    def notifier(self) -> Notifier | None:
        """Who is told about failing and recovering pairs (None without ``notify:``)."""
        if self._notifier is None and self.config.notify:
            from syncd.notify import Notifier

            self._notifier = Notifier(
                self.config.notify,
                self.state,
                now=self.now,
                sleep=self.executor.sleep,
                replica=self.coordinator.identity,
                on_result=self.hooks.notification,
                transport=self.context.extra.get("notify_transport"),
            )
        return self._notifier

    def _notify(self, pr: PairResult) -> None:
        notifier = self.notifier
        if notifier is None:
            return
        try:
            notifier.pair_done(pr)
        except Exception as exc:  # telling people must never fail a sync
            get_logger().error("notification skipped", error=f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        if self._notifier is not None:
            await self._notifier.drain()
        if self._owns_coordinator and self._coordinator is not None:
            self._coordinator.close()
            self._coordinator = None
        connectors: list[Destination | Source] = [
            *self._destinations.values(),
            *self._sources.values(),
        ]
        for c in connectors:
            try:
                await c.aclose()
            except Exception:  # closing is best effort
                get_logger().warning("close failed", connector=c.name)

    # ------------------------------------------------------------------ reading

    async def read_source(
        self, name: str, cache: dict[str, Snapshot] | None = None, attempts: int = 3
    ) -> Snapshot:
        """One read per source scope per pass: syncs sharing a scope share the snapshot."""
        src = self.source(name)
        scope = src.scope_key()
        if cache is not None and scope in cache:
            return cache[scope]
        lock = self._source_locks.setdefault(scope, asyncio.Lock())
        async with lock:
            if cache is not None and scope in cache:
                return cache[scope]
            policy = replace(self.executor.retry, attempts=attempts)
            attempt = 0
            spent = 0.0
            while True:
                attempt += 1
                try:
                    async with self._reading:
                        snap = await src.snapshot()
                    break
                except SourceReadError as exc:
                    self.hooks.source_read(name, False, None)
                    delay, why = policy.next_try(
                        attempt,
                        exc.retry_after,
                        self.executor.rng,
                        throttled=exc.throttled,
                        spent=spent,
                    )
                    if why is not None:
                        if attempts == 1:
                            raise  # one try asked for: the error as it came
                        raise SourceReadError(
                            f"{exc} ({why})", exc.retry_after, throttled=exc.throttled
                        ) from exc
                    if not exc.throttled:
                        spent += delay
                    get_logger().warning(
                        "source read failed",
                        source=name,
                        attempt=attempt,
                        delay=round(delay, 3),
                        error=str(exc),
                    )
                    await self.executor.sleep(delay)
            redactor.add(e.value.reveal() for e in snap.entries)
            self.hooks.source_read(name, True, snap)
            if cache is not None:
                cache[scope] = snap
            return snap

    # ------------------------------------------------------------------ running

    async def run(
        self, syncs: Sequence[str] | None = None, *, force: bool = False, dry_run: bool = False
    ) -> list[SyncResult]:
        specs = [self.config.sync(n) for n in syncs] if syncs else list(self.config.syncs)
        cache = Snapshots()
        return list(
            await asyncio.gather(
                *(self.run_sync(s, force=force, dry_run=dry_run, cache=cache) for s in specs)
            )
        )

    async def run_sync(
        self,
        spec: SyncSpec,
        *,
        force: bool = False,
        dry_run: bool = False,
        cache: dict[str, Snapshot] | None = None,
    ) -> SyncResult:
        result = SyncResult(spec.name)
        scope = self.source(spec.source).scope_key()
        if isinstance(cache, Snapshots):
            cache.claim(scope)
        try:
            return await self._run_sync(spec, result, force, dry_run, cache)
        finally:
            if isinstance(cache, Snapshots):
                cache.release(scope)

    async def _run_sync(
        self,
        spec: SyncSpec,
        result: SyncResult,
        force: bool,
        dry_run: bool,
        cache: dict[str, Snapshot] | None,
    ) -> SyncResult:
        log = get_logger(sync=spec.name)
        try:
            snap = await self.read_source(spec.source, cache)
        except SourceReadError as exc:
            msg = f"source {spec.source!r} could not be read: {exc}; nothing was changed"
            log.error("source read failed", source=spec.source, error=str(exc))
            result.source_error = msg
            for d in spec.destinations:
                pr = PairResult(spec.name, d, result="source-failed", error=msg)
                if not dry_run:
                    now = self.now()
                    try:
                        run_id = self.state.start_run(spec.name, d, now)
                        self.state.finish_run(run_id, now, pr.result, {}, msg, error_class="source")
                    except StateError as err:
                        log.error("run not recorded: state store", error=str(err))
                    self._notify(pr)
                result.pairs.append(pr)
            return result
        result.pairs = list(
            await asyncio.gather(
                *(
                    self.run_pair(spec, d, snap, force=force, dry_run=dry_run)
                    for d in spec.destinations
                )
            )
        )
        return result

    async def run_pair(
        self,
        spec: SyncSpec,
        dest_name: str,
        snap: Snapshot,
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> PairResult:
        started = time.monotonic()
        pr = PairResult(spec.name, dest_name)
        if dry_run:
            return await self._run_held(spec, dest_name, snap, pr, None, started, force, True)
        async with self._pair_slots:
            return await self._run_locked(spec, dest_name, snap, pr, started, force)

    async def _run_locked(
        self,
        spec: SyncSpec,
        dest_name: str,
        snap: Snapshot,
        pr: PairResult,
        started: float,
        force: bool,
    ) -> PairResult:
        log = get_logger(sync=spec.name, destination=dest_name)
        try:
            got, waited = await acquire(
                self.coordinator,
                spec.name,
                dest_name,
                timeout=self.lock_timeout,
                sleep=self.executor.sleep,
                clock=self.executor.clock,
            )
        except StateError as exc:
            pr.result, pr.error = "error", f"could not take the pair: {exc}"
            log.error("pair not run", error=pr.error)
            self.hooks.pair_done(pr, time.monotonic() - started)
            return pr
        if waited:
            self.hooks.lock_wait(spec.name, dest_name)
        if isinstance(got, Holder):
            pr.result, pr.holder = "busy", got
            pr.error = f"busy: held by {got.describe()}; nothing was written"
            self.hooks.busy(spec.name, dest_name)
            log.warning("pair busy", holder=got.describe())
            self.hooks.pair_done(pr, time.monotonic() - started)
            return pr
        try:
            return await self._run_held(spec, dest_name, snap, pr, got, started, force, False)
        finally:
            self.coordinator.release(got)

    async def _run_held(
        self,
        spec: SyncSpec,
        dest_name: str,
        snap: Snapshot,
        pr: PairResult,
        hold: Hold | None,
        started: float,
        force: bool,
        dry_run: bool,
    ) -> PairResult:
        log = get_logger(sync=spec.name, destination=dest_name)
        run_id: int | None = None
        try:
            if not dry_run:
                run_id = self.state.start_run(spec.name, dest_name, self.now())
            dest = self.destination(dest_name)
            async with self._planning:
                plan = await self.make_plan(spec, dest, snap, force=force)
            pr.plan = plan
            for c in plan.changes:
                if c.drift:
                    log.warning("drift", **c.log_fields(), reason=c.reason)
            if plan.refused:
                pr.result, pr.error = "refused", plan.refused
                log.error("deletion guard", reason=plan.refused)
            elif not dry_run:
                pr.outcome = await self.executor.apply(
                    plan, dest, fence=hold.check if hold is not None else None
                )
                if pr.outcome.lost:
                    pr.result = "lost"
                    pr.error = f"stopped: this process {pr.outcome.lost}"
                    log.error("pair stopped: hold lost", reason=pr.outcome.lost)
                elif pr.problems:
                    pr.result = "failed"
            elif pr.problems:
                pr.result = "failed"
            if dry_run:
                if plan.writes and not plan.refused and dest.after_change_enabled():
                    what = await self.executor.with_retries(
                        dest, dest.describe_after_change, what="describe redeploy"
                    )
                    pr.after = AfterResult("planned", f"then: {what}")
            elif pr.outcome is not None and not pr.outcome.lost:
                pr.after = await self._after_run(spec, dest, pr)
            if not dry_run and plan.listed:
                self.state.set_pair_meta(spec.name, dest_name, listed_at=self.now())
                limited = [c.key for c in plan.changes if c.over_limit]
                if limited or self.state.pair_meta(spec.name, dest_name).limit_blocked:
                    held = len(self.state.records(spec.name, dest_name))
                    self.state.set_limit_blocked(spec.name, dest_name, limited, held)
            if not dry_run and not plan.refused:
                self.state.set_pair_meta(spec.name, dest_name, source_count=len(snap))
        except ConnectorError as exc:
            pr.result, pr.error = "error", f"{type(exc).__name__}: {exc}"
            pr.failure_class = error_class_of(exc)
            log.error("pair failed", error=pr.error, error_class=pr.failure_class)
        except StateError as exc:
            pr.result, pr.error = "error", str(exc)
            pr.failure_class = "platform"
            log.error("pair failed: state store", error=pr.error)
        except Exception as exc:  # a connector bug must not take the other pairs down
            pr.result, pr.error = "error", f"unexpected {type(exc).__name__}: {exc}"
            log.exception("pair crashed")
        if run_id is not None:
            err = pr.error or ("; ".join(f"{k}: {m}" for k, _, m in pr.problems[:5]) or None)
            try:
                self.state.finish_run(
                    run_id,
                    self.now(),
                    pr.result,
                    pr.counts,
                    err,
                    error_class=pr.error_class,
                    problems=pr.problem_rows,
                )
            except StateError as exc:
                log.error("run not recorded: state store", error=str(exc))
            self._notify(pr)
        self.hooks.pair_done(pr, time.monotonic() - started)
        (log.debug if dry_run else log.info)("pair done", result=pr.result, **pr.counts)
        return pr

    # ------------------------------------------------------------------ after a change

    async def _after_run(
        self, spec: SyncSpec, dest: Destination, pr: PairResult
    ) -> AfterResult | None:
        """Decide the pair's after-change step once its writes are done: nothing without a
        write (nor a step still owed from an earlier run), held back while a key failed,
        deferred by the daemon's debounce, or run now (``once``)."""
        if not dest.after_change_enabled() or pr.outcome is None:
            return None
        wrote = any(c.write for c in pr.outcome.applied)
        owed = self.state.pair_meta(spec.name, dest.name).after_change_due is not None
        if not wrote and not owed:
            return None
        due = self.now() + timedelta(seconds=spec.policy.redeploy_debounce)
        failed = len(pr.outcome.failed)
        if failed:
            if wrote:  # owed once the failed keys land
                self.state.set_after_change(spec.name, dest.name, due)
            n = f"{failed} key{'s' if failed != 1 else ''}"
            return AfterResult("held", f"redeploy held back: {n} failed")
        if self.defer_after_change:
            if wrote:
                self.state.set_after_change(spec.name, dest.name, due)
            return AfterResult("deferred", f"redeploy after {spec.policy.redeploy_debounce:g}s")
        return await self.run_after_change(spec.name, dest.name)

    async def run_after_change(self, sync: str, dest_name: str) -> AfterResult:
        """The after-change step now. Pending in the state store until it succeeds, so a
        failed or interrupted one is tried again by the next run or replica."""
        dest = self.destination(dest_name)
        log = get_logger(sync=sync, destination=dest_name)
        self.state.set_after_change(sync, dest_name, self.now())
        try:
            done = await self.executor.with_retries(dest, dest.after_change, what="redeploy")
        except ConnectorError as exc:
            # tried again after a while (the next run of once, or the daemon's look)
            retry_at = self.now() + timedelta(seconds=AFTER_CHANGE_RETRY)
            self.state.set_after_change(sync, dest_name, retry_at)
            self.hooks.after_change(sync, dest_name, "failed")
            kind = type(exc).__name__
            log.error("redeploy failed", error=str(exc), error_class=kind)
            return AfterResult("failed", f"redeploy failed ({kind}): {exc}", kind)
        self.state.set_after_change(sync, dest_name, None)
        self.hooks.after_change(sync, dest_name, "ok")
        log.info("redeploy started", what=done.describe())
        return AfterResult("done", f"then: {done.describe()}")

    async def make_plan(
        self, spec: SyncSpec, dest: Destination, snap: Snapshot, *, force: bool = False
    ) -> Plan:
        caps = dest.capabilities
        dest_cfg = self.config.destinations[dest.name]
        template = spec.key_template or getattr(dest_cfg.config, "key_template", None)
        desired = mapping.desired_entries(
            snap,
            include=spec.include,
            exclude=spec.exclude,
            template=template,
            source=spec.source,
            capabilities=caps,
            fingerprint=self.fingerprint,
        )
        recorded = self.state.records(spec.name, dest.name)
        meta = self.state.pair_meta(spec.name, dest.name)
        now = self.now()
        drift_due = (
            meta.last_listed_at is None
            or (now - meta.last_listed_at).total_seconds() >= spec.policy.drift_check
        )
        # keys the count limit blocked at the last listing stay blocked, without a listing,
        # until the pair's recorded keys change (a delete frees room) or a drift check
        over_limit = meta.limit_blocked if meta.limit_basis == len(recorded) else frozenset()
        unrecorded = [
            d.key
            for d in desired
            if d.key not in recorded
            and d.key not in over_limit
            and planner.blocked_reason(d, caps) is None
        ]
        current = None
        if drift_due or not recorded or unrecorded:
            wanted = [d.key for d in desired]
            known = {k: r.version for k, r in recorded.items()}
            current = await self.executor.with_retries(
                dest, lambda: dest.list_current(wanted, known), what="list", whole_listing=True
            )
        policy = planner.PlanPolicy(
            delete=spec.policy.delete,
            on_conflict=spec.policy.on_conflict,
            max_delete_fraction=spec.policy.max_delete_fraction,
            force=force,
            source_complete=snap.complete,
            source_count=len(snap),
            previous_source_count=meta.source_count,
            owns_key=mapping.key_scope(template, caps, spec.source, snap.environment),
        )
        held_back: list[Change] = []
        if current is None and over_limit:
            held_back = [
                Change(
                    d.key,
                    Action.BLOCKED,
                    f"over the destination's limit of {caps.max_keys} keys (as of its last "
                    "listing)",
                    desired=d,
                    over_limit=True,
                )
                for d in desired
                if d.key in over_limit
            ]
            desired = [d for d in desired if d.key not in over_limit]
        plan = planner.plan(spec.name, dest.name, desired, current, recorded, caps, policy)
        return replace(plan, changes=plan.changes + tuple(held_back)) if held_back else plan


def failures(results: Sequence[SyncResult]) -> list[tuple[str, str, str, str]]:
    """(sync, destination, key, message) for every problem, for the CLI's report."""
    out = []
    for r in results:
        for p in r.pairs:
            if p.error:
                out.append((r.name, p.destination, "*", p.error))
            for key, kind, msg in p.problems:
                out.append((r.name, p.destination, key, f"{kind}: {msg}"))
    return out
