"""The one executor: applies a plan for one (sync, destination) pair.

Concurrency per destination credential, pacing under a platform's write limit, retries
(how long to wait and when to stop: :class:`syncd.retrying.RetryPolicy`), per-call
timeouts, and a state-store row written after every success, so a crash loses nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syncd.connector import Destination, RateLimit
from syncd.errors import AuthError, ConnectorError, RateLimited, RetryableError
from syncd.logging import get_logger
from syncd.model import Action, Change, ItemOutcome, Plan, Record
from syncd.retrying import RetryPolicy
from syncd.state.base import StateStore

_IN_SLOT: contextvars.ContextVar[bool] = contextvars.ContextVar("syncd_in_slot", default=False)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass
class Pacer:
    """Spaces write calls at least ``interval`` seconds apart (one per credential)."""

    interval: float
    clock: Clock
    sleep: Sleep
    _next: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait(self) -> None:
        async with self._lock:
            now = self.clock()
            if self._next > now:
                await self.sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


class Fenced(Exception):
    """The pair's hold can no longer be trusted: the write was not sent."""


@dataclass
class ItemFailure:
    change: Change
    message: str
    kind: str


@dataclass
class PairOutcome:
    applied: list[Change] = field(default_factory=list)
    failed: list[ItemFailure] = field(default_factory=list)
    retries: int = 0
    write_calls: int = 0
    lost: str | None = None  # the run stopped: this process no longer holds the pair


PROGRESS_EVERY = 60.0
"""A long pair run logs a ``progress`` event at most this often (and on a long wait)."""
PROGRESS_WAIT = 10.0
"""A pacing or quota wait at least this long is logged as it starts."""
PACE_SLACK = 0.01
"""Waits shorter than this are not slept (a reset read off the wall clock is that exact)."""


@dataclass
class Bucket:
    """A token bucket: ``limit.count`` calls, refilled evenly over ``limit.seconds``; it
    starts full, as a platform's window does."""

    limit: RateLimit
    tokens: float
    at: float

    def wait(self, now: float) -> float:
        """Seconds until a call fits (0: now)."""
        rate = self.limit.count / self.limit.seconds
        self.tokens = min(float(self.limit.count), self.tokens + (now - self.at) * rate)
        self.at = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / rate

    def take(self) -> None:
        self.tokens -= 1.0


class Limiter:
    """The per-credential resources shared by every pair writing through one destination:
    its concurrency, the even spacing of its writes, the buckets of its documented limits,
    and the platform's own remaining quota as its last answer reported it."""

    def __init__(
        self,
        concurrency: int,
        writes_per_minute: float | None,
        clock: Clock,
        sleep: Sleep,
        rate_limits: Sequence[RateLimit] = (),
    ) -> None:
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.pacer = Pacer(60.0 / writes_per_minute, clock, sleep) if writes_per_minute else None
        self.clock, self.sleep = clock, sleep
        now = clock()
        self.buckets = [Bucket(r, float(r.count), now) for r in rate_limits]
        self.quota_until = 0.0  # the platform said no call is left before this (clock)
        self.waiting: str | None = None  # what a call waits for now, for progress reports
        self.on_wait: Callable[[str, float], None] = lambda why, seconds: None
        self._lock = asyncio.Lock()

    def observe(self, remaining: float, reset_in: float | None, margin: int = 1) -> None:
        """The platform's count of calls left in its window."""
        if remaining <= margin and reset_in is not None and reset_in > 0:
            self.quota_until = max(self.quota_until, self.clock() + reset_in)

    async def pace(self, write: bool) -> None:
        """Wait until this call fits every limit; then count it."""
        if self.pacer is not None and write:
            await self.pacer.wait()
        async with self._lock:
            while True:
                now = self.clock()
                waits = [(self.quota_until - now, "the platform's quota to refill")]
                for b in self.buckets:
                    if write or not b.limit.writes_only:
                        waits.append((b.wait(now), f"paced to {b.limit.label}"))
                delay, why = max(waits)
                if delay <= PACE_SLACK:
                    break
                self.waiting = why
                self.on_wait(why, delay)
                await self.sleep(delay)
            self.waiting = None
            for b in self.buckets:
                if write or not b.limit.writes_only:
                    b.take()


class Executor:
    def __init__(
        self,
        state: StateStore,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock | None = None,
        now: Callable[[], datetime] | None = None,
        rng: Callable[[], float] = random.random,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[str], None] | None = None,
        on_progress: Callable[[str, str, int, int, str | None], None] | None = None,
    ) -> None:
        self.state = state
        self.sleep = sleep
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.now = now or (lambda: datetime.now(UTC))
        self.rng = rng
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry or (lambda destination: None)
        # (sync, destination, keys done, keys to write, what it waits for) as keys land
        self.on_progress = on_progress or (lambda sync, dest, done, total, waiting: None)
        self._limiters: dict[str, Limiter] = {}

    def limiter(self, dest: Destination) -> Limiter:
        # destinations may name the credential they write through (``credential_key``):
        # several destinations sharing one token then share its concurrency and pacing
        key = getattr(dest, "credential_key", None) or dest.name
        if key not in self._limiters:
            self._limiters[key] = Limiter(
                getattr(dest.config, "concurrency", 4),
                dest.capabilities.writes_per_minute,
                self.clock,
                self.sleep,
                dest.capabilities.rate_limits,
            )
            name = dest.name

            def on_wait(why: str, seconds: float) -> None:
                if seconds >= PROGRESS_WAIT:
                    get_logger().info(
                        "progress", destination=name, waiting=why, wait=round(seconds, 1)
                    )

            self._limiters[key].on_wait = on_wait
        return self._limiters[key]

    def observe_quota(self, dest: Destination, remaining: float, reset_in: float | None) -> None:
        self.limiter(dest).observe(remaining, reset_in)

    async def call(
        self,
        dest: Destination,
        fn: Callable[[], Awaitable[Any]],
        *,
        write: bool = False,
        whole_listing: bool = False,
        fence: Callable[[], str | None] | None = None,
    ) -> Any:
        """One platform call under the destination's concurrency, pacing and timeout.
        Exceptions come out classified. ``fence`` is asked last, right before the call:
        a reason from it raises :class:`Fenced` and nothing is sent.

        ``whole_listing``: ``fn`` is a listing that may make many calls, each of which takes
        a concurrency slot itself (``BaseDestination.read``); it holds no slot and gets the
        destination's ``list_timeout``."""
        lim = self.limiter(dest)
        if whole_listing:
            timeout = float(getattr(dest.config, "list_timeout", 600.0))
            return await self._timed(dest, fn, timeout)
        timeout = float(getattr(dest.config, "timeout", 30.0))
        if _IN_SLOT.get():
            # a read made inside a call that already holds a slot (a check that lists):
            # taking a second slot could deadlock at concurrency 1
            await lim.pace(False)
            return await self._timed(dest, fn, timeout)
        async with lim.semaphore:
            await lim.pace(write)
            if fence is not None and (why := fence()) is not None:
                raise Fenced(why)
            token = _IN_SLOT.set(True)
            try:
                return await self._timed(dest, fn, timeout)
            finally:
                _IN_SLOT.reset(token)

    async def _timed(
        self, dest: Destination, fn: Callable[[], Awaitable[Any]], timeout: float
    ) -> Any:
        try:
            return await asyncio.wait_for(fn(), timeout=timeout)
        except TimeoutError:
            raise RetryableError(f"no answer within {timeout:g}s") from None
        except ConnectorError:
            raise
        except Exception as exc:
            raise dest.classify(exc) from exc

    async def with_retries(
        self,
        dest: Destination,
        fn: Callable[[], Awaitable[Any]],
        *,
        what: str,
        whole_listing: bool = False,
    ) -> Any:
        """A read (listing, check) retried as the policy says."""
        attempt = 0
        spent = 0.0
        while True:
            attempt += 1
            try:
                return await self.call(dest, fn, whole_listing=whole_listing)
            except RetryableError as exc:
                if getattr(exc, "exhausted", False):
                    raise  # an inner read already spent its retries
                throttled = isinstance(exc, RateLimited)
                delay, why = self.retry.next_try(
                    attempt, exc.retry_after, self.rng, throttled=throttled, spent=spent
                )
                if why is not None:
                    final = type(exc)(f"{what}: {exc} ({why})", retry_after=exc.retry_after)
                    final.exhausted = True  # type: ignore[attr-defined]
                    raise final from exc
                if not throttled:
                    spent += delay
                self.on_retry(dest.name)
                get_logger().warning(
                    "retry",
                    destination=dest.name,
                    operation=what,
                    attempt=attempt,
                    delay=round(delay, 3),
                    error=str(exc),
                )
                await self.sleep(delay)

    async def apply(
        self,
        plan: Plan,
        dest: Destination,
        *,
        fence: Callable[[], str | None] | None = None,
    ) -> PairOutcome:
        """Apply the plan. ``fence`` is asked before every write (and before recording
        without a write): a reason from it means another process may own the pair now,
        so nothing more is written and every key not yet applied fails with that reason."""
        out = PairOutcome()
        log = get_logger(sync=plan.sync, destination=plan.destination)
        total = len(plan.writes)
        started = self.clock()
        last_log = [started]
        lim = self.limiter(dest)

        def report() -> None:
            done = sum(1 for c in out.applied if c.write) + len(out.failed)
            self.on_progress(plan.sync, plan.destination, done, total, lim.waiting)
            now = self.clock()
            if total and now - last_log[0] >= PROGRESS_EVERY and done < total:
                last_log[0] = now
                rate = done / max(1e-9, now - started)
                log.info(
                    "progress",
                    done=done,
                    total=total,
                    per_minute=round(rate * 60, 1),
                    eta_seconds=round((total - done) / rate) if rate else None,
                    waiting=lim.waiting,
                )

        def fenced() -> bool:
            if out.lost is None and fence is not None:
                out.lost = fence()
            return out.lost is not None

        if fenced():
            for change in [*plan.bookkeeping, *plan.writes]:
                out.failed.append(ItemFailure(change, f"not applied: {out.lost}", "lost"))
            return out
        for change in plan.bookkeeping:
            self._record(plan, change, None)
            log.info(
                "change",
                **change.log_fields(),
                action=str(change.action),
                outcome="recorded",
                attempt=0,
                reason=change.reason,
            )
        for change in plan.changes:
            if change.action in (Action.BLOCKED, Action.CONFLICT):
                log.warning(
                    "change",
                    **change.log_fields(),
                    action=str(change.action),
                    outcome=str(change.action),
                    attempt=0,
                    reason=change.reason,
                )
        caps = dest.capabilities
        batches: list[tuple[str, list[Change]]] = []
        ups, dels = plan.upserts, plan.deletes
        for i in range(0, len(ups), max(1, caps.batch_size)):
            batches.append(("upsert", ups[i : i + max(1, caps.batch_size)]))
        for i in range(0, len(dels), max(1, caps.delete_batch_size)):
            batches.append(("delete", dels[i : i + max(1, caps.delete_batch_size)]))
        auth_failed: list[str] = []

        async def run_batch(op: str, batch: list[Change]) -> None:
            pending = batch
            attempt = 0
            spent: dict[str, float] = {}  # backoff seconds each key has waited (not throttles)
            while pending:
                attempt += 1
                if auth_failed:
                    for c in pending:
                        out.failed.append(ItemFailure(c, auth_failed[0], "auth"))
                    return
                if fenced():
                    for c in pending:
                        out.failed.append(ItemFailure(c, f"not applied: {out.lost}", "lost"))
                    return
                fn = dest.upsert if op == "upsert" else dest.delete
                items = pending
                try:
                    outcomes: Sequence[ItemOutcome] = await self.call(
                        dest, functools.partial(fn, items), write=True, fence=fence
                    )
                    out.write_calls += 1
                except Fenced as exc:
                    out.lost = out.lost or str(exc)
                    for c in pending:
                        out.failed.append(ItemFailure(c, f"not applied: {out.lost}", "lost"))
                    return
                except AuthError as exc:
                    out.write_calls += 1
                    auth_failed.append(f"authentication or permission error: {exc}")
                    continue
                except ConnectorError as exc:
                    out.write_calls += 1
                    outcomes = [ItemOutcome(c.key, error=exc) for c in pending]
                by_key = {o.key: o for o in outcomes}
                errors: dict[str, ConnectorError] = {}
                for c in pending:
                    o = by_key.get(c.key) or ItemOutcome(
                        c.key, error=ConnectorError("the platform gave no result for this key")
                    )
                    if o.error is None:
                        self._record(plan, c, o.version)
                        out.applied.append(c)
                        log.info(
                            "change",
                            **c.log_fields(),
                            action=str(c.action),
                            outcome="applied",
                            attempt=attempt,
                            reason=c.reason,
                        )
                    else:
                        err = o.error
                        errors[c.key] = (
                            err if isinstance(err, ConnectorError) else dest.classify(err)
                        )
                # one wait for the keys retried together: the longest the platform asked
                asked = [
                    e.retry_after
                    for e in errors.values()
                    if isinstance(e, RetryableError) and e.retry_after is not None
                ]
                delay = self.retry.delay(attempt, max(asked) if asked else None, self.rng)
                retry: list[Change] = []
                for c in pending:
                    if c.key not in errors:
                        continue
                    err = errors[c.key]
                    if isinstance(err, AuthError):
                        auth_failed.append(f"authentication or permission error: {err}")
                        out.failed.append(ItemFailure(c, auth_failed[-1], "auth"))
                        continue
                    msg = str(err)
                    if isinstance(err, RetryableError):
                        throttled = isinstance(err, RateLimited)
                        why = self.retry.give_up(
                            attempt,
                            err.retry_after,
                            throttled=throttled,
                            spent=spent.get(c.key, 0.0),
                            delay=delay,
                        )
                        if why is None:
                            retry.append(c)
                            if not throttled:
                                spent[c.key] = spent.get(c.key, 0.0) + delay
                            continue
                        msg = f"{msg} ({why})"
                    out.failed.append(ItemFailure(c, msg, type(err).__name__))
                    log.warning(
                        "change",
                        **c.log_fields(),
                        action=str(c.action),
                        outcome="failed",
                        attempt=attempt,
                        error=msg,
                    )
                pending = retry
                report()
                if pending:
                    out.retries += 1
                    self.on_retry(dest.name)
                    log.info("retry", keys=len(pending), attempt=attempt, delay=round(delay, 3))
                    await self.sleep(delay)

        # the first batch goes alone: a revoked token then costs one call, not one per batch;
        # the rest run concurrently up to the destination's concurrency
        if batches:
            report()
            await run_batch(*batches[0])
            await asyncio.gather(*(run_batch(op, b) for op, b in batches[1:]))
        return out

    def _record(self, plan: Plan, change: Change, version: str | None) -> None:
        if change.action is Action.DELETE or (change.forget and change.desired is None):
            self.state.forget(plan.sync, plan.destination, change.key)
            return
        if change.desired is None:
            return
        if version is None and change.remote is not None and not change.write:
            version = change.remote.version
        self.state.record(
            plan.sync,
            plan.destination,
            Record(change.key, change.desired.fingerprint, version, change.created, self.now()),
        )
