"""One writer per (sync, destination) pair, whatever shares the state store.

Every process that applies a pair holds it first, through the :class:`Coordinator` of
its state store: a lease row in the SQLite file (every process on the host sees it), a
session advisory lock in PostgreSQL. A pair held elsewhere is ``busy`` and names its
holder (host, pid, since when).

Fencing. A hold is confirmed by heartbeats (a quarter of the lease apart). The store
lets another process take the pair only once the lease has passed without a heartbeat:
the SQLite row's expiry, or PostgreSQL ending the idle session (``idle_session_timeout``
is the lease) and with it its locks. The holder trusts its hold for less than that,
counted from the moment its last successful heartbeat *started*; so a process paused past
its lease (SIGSTOP, a frozen VM), cut off from its database, or whose lock was broken,
finds out before its next write, and stops that pair's run. The executor asks
:meth:`Hold.check` before every write.

Replicas. With a PostgreSQL store, ``syncd run`` replicas register themselves (id, host,
pid, heartbeat, each holding an advisory lock of its own, so a dead replica's session
ends its membership). Syncs are spread over the live replicas by rendezvous hashing
(:func:`owner`): every replica computes the same owner from the same membership, a
replica joining or leaving moves only the syncs it gains or loses, and no election or
extra table is needed. The pair locks keep this safe while views of the membership
differ for a moment.

::

    Coordinator            one per process and store; holds, heartbeats, membership
    ├── SqliteCoordinator  syncd/state/sqlite_locks.py
    └── PostgresCoordinator syncd/state/postgres_locks.py
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from syncd.logging import get_logger

Pair = tuple[str, str]
Clock = Callable[[], float]

LEASE = 30.0
"""Seconds a hold survives without a heartbeat (``state.lease``)."""
HEARTBEAT_SHARE = 0.25
"""Heartbeats are this share of the lease apart."""
TRUST_SHARE = 0.8
"""A hold is trusted for this share of the lease after its last confirmation started."""


def _local_key() -> str:
    """What makes a pid meaningful: the host, its boot and the pid namespace."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            parts.append(fh.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("no-proc")
    return "|".join(parts)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Identity:
    """This process, as other processes see it."""

    id: str
    host: str
    pid: int
    started_at: datetime
    local_key: str

    @classmethod
    def current(cls) -> Identity:
        return cls(
            uuid.uuid4().hex[:12],
            socket.gethostname(),
            os.getpid(),
            datetime.now(UTC),
            _local_key(),
        )


@dataclass(frozen=True)
class Holder:
    """The process holding a pair."""

    id: str
    host: str
    pid: int
    since: datetime | None

    def describe(self) -> str:
        when = f" since {self.since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if self.since else ""
        return f"host {self.host} pid {self.pid}{when}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "since": self.since.astimezone(UTC).isoformat() if self.since else None,
        }


@dataclass(frozen=True)
class Replica:
    """A live ``syncd run`` sharing a PostgreSQL state."""

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at.astimezone(UTC).isoformat(),
            "heartbeat_at": self.heartbeat_at.astimezone(UTC).isoformat(),
        }


class Hold:
    """This process's hold on one pair. ``check()`` is None while it is still trusted."""

    def __init__(
        self, pair: Pair, since: datetime, confirmed: float, trust: float, clock: Clock
    ) -> None:
        self.pair = pair
        self.since = since
        self.confirmed = confirmed
        self.trust = trust
        self._clock = clock
        self.lost: str | None = None
        self.generation = 0

    def check(self) -> str | None:
        """Why this process may no longer write the pair, or None."""
        if self.lost is not None:
            return self.lost
        age = self._clock() - self.confirmed
        if age > self.trust:
            return (
                f"its hold was last confirmed {age:.0f}s ago, past the {self.trust:.0f}s it "
                "may be trusted (paused, or cut off from the state store); another process "
                "may have taken the pair over"
            )
        return None


class Coordinator(ABC):
    """Pair holds, heartbeats and (where the store shares work) replica membership.

    Subclasses implement the store's primitives (``_take``, ``_give_back``, ``_renew``,
    ``holders``); the bookkeeping and the heartbeat thread are here, written once."""

    shares_work: bool = False
    """Replicas split the syncs between them (PostgreSQL); else every process runs all."""

    def __init__(
        self,
        identity: Identity | None = None,
        *,
        lease: float = LEASE,
        clock: Clock = time.monotonic,
        heartbeat_thread: bool = True,
    ) -> None:
        self.identity = identity or Identity.current()
        self.lease = lease
        self.clock = clock
        self._held: dict[Pair, Hold] = {}
        self._mutex = threading.Lock()
        self._heartbeat_thread = heartbeat_thread
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_heartbeat_ok: float | None = None
        self.last_error: str | None = None
        self.log = get_logger()

    # ------------------------------------------------------------------ store primitives

    @abstractmethod
    def _take(self, pair: Pair, since: datetime) -> Holder | None:
        """Take the pair for this process: None when taken, else who holds it."""

    @abstractmethod
    def _give_back(self, pair: Pair) -> None:
        """Release the pair (best effort: a lost hold has nothing to give back)."""

    @abstractmethod
    def _renew(self, pairs: Sequence[Pair]) -> set[Pair]:
        """Confirm every hold; return the pairs found lost. Raising means nothing could be
        confirmed (the holds age, and are distrusted once past their trust)."""

    @abstractmethod
    def holders(self) -> dict[Pair, Holder]:
        """Every pair held now, by any process."""

    # ------------------------------------------------------------------ membership

    def register(self) -> None:
        """Join the replicas (``syncd run`` on a store that shares work)."""
        return None

    def deregister(self) -> None:
        """Leave the replicas at once (SIGTERM): the others take the syncs over."""
        return None

    def replicas(self) -> list[Replica]:
        """The live replicas (empty where the store does not share work)."""
        return []

    def notify(self, channel: str, payload: str) -> None:
        """Tell the other replicas something (PostgreSQL NOTIFY); a no-op elsewhere."""
        return None

    def listen(self, channels: Iterable[str], callback: Callable[[str, str], None]) -> None:
        """Call ``callback(channel, payload)`` from a thread for each notification."""
        return None

    @abstractmethod
    def ping(self) -> None:
        """Raise when the coordination store cannot be reached."""

    # ------------------------------------------------------------------ holds

    @property
    def me(self) -> Holder:
        return Holder(self.identity.id, self.identity.host, self.identity.pid, None)

    @property
    def trust(self) -> float:
        return self.lease * TRUST_SHARE

    def held(self) -> list[Pair]:
        with self._mutex:
            return sorted(self._held)

    def try_acquire(self, sync: str, destination: str) -> Hold | Holder:
        """Hold the pair now, or say who holds it (this process too: a pair is run once
        at a time in a process as well)."""
        pair = (sync, destination)
        with self._mutex:
            mine = self._held.get(pair)
        if mine is not None:
            return Holder(self.identity.id, self.identity.host, self.identity.pid, mine.since)
        started = self.clock()
        since = datetime.now(UTC)
        holder = self._take(pair, since)
        if holder is not None:
            return holder
        hold = Hold(pair, since, started, self.trust, self.clock)
        hold.generation = self._generation()
        with self._mutex:
            self._held[pair] = hold
        self._ensure_thread()
        return hold

    def release(self, hold: Hold) -> None:
        with self._mutex:
            if self._held.get(hold.pair) is hold:
                del self._held[hold.pair]
        if hold.lost is None:
            try:
                self._give_back(hold.pair)
            except Exception as exc:
                self.log.warning(
                    "could not release a pair; its lease lets it go",
                    sync=hold.pair[0],
                    destination=hold.pair[1],
                    error=f"{type(exc).__name__}: {exc}",
                )
        hold.lost = hold.lost or "released"

    def _generation(self) -> int:
        """The store session the holds belong to (PostgreSQL: a new connection loses every
        lock of the old one)."""
        return 0

    def heartbeat(self) -> None:
        """Confirm every hold now (the thread calls this; tests call it by hand)."""
        with self._mutex:
            holds = list(self._held.values())
        started = self.clock()
        try:
            lost = self._renew([h.pair for h in holds])
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.log.warning("state store heartbeat failed", error=self.last_error)
            return
        self.last_heartbeat_ok = started
        self.last_error = None
        generation = self._generation()
        for h in holds:
            if h.pair in lost or h.generation != generation:
                if h.lost is None:
                    h.lost = "another process took the pair over (its lease had run out)"
                    self.log.error(
                        "lost the hold on a pair",
                        sync=h.pair[0],
                        destination=h.pair[1],
                        reason=h.lost,
                    )
            else:
                h.confirmed = started

    def _ensure_thread(self) -> None:
        if not self._heartbeat_thread or self._stop.is_set():
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._beat, name="syncd-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease * HEARTBEAT_SHARE):
            try:
                self.heartbeat()
            except Exception as exc:  # the thread must outlive any one failure
                self.log.warning("heartbeat crashed", error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._stop.set()
        with self._mutex:
            holds = list(self._held.values())
        for h in holds:
            self.release(h)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def owner(sync: str, replicas: Sequence[str]) -> str | None:
    """The replica that runs ``sync``: rendezvous (highest random weight) hashing."""
    if not replicas:
        return None
    return max(replicas, key=lambda r: hashlib.sha256(f"{r}\0{sync}".encode()).digest())


Sleep = Callable[[float], Awaitable[None]]


async def acquire(
    coordinator: Coordinator,
    sync: str,
    destination: str,
    *,
    timeout: float,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    poll: float = 0.25,
) -> tuple[Hold | Holder, bool]:
    """Hold the pair, waiting up to ``timeout`` seconds while another process holds it.
    Returns the hold (or the holder, still busy after the wait) and whether it waited."""
    deadline = clock() + timeout
    delay = poll
    waited = False
    while True:
        # in the loop, like every state-store call: one short statement
        got = coordinator.try_acquire(sync, destination)
        left = deadline - clock()
        if isinstance(got, Hold) or left <= 0:
            return got, waited
        waited = True
        await sleep(min(delay, left))
        delay = min(delay * 2, 5.0)
