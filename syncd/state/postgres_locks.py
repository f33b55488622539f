"""Pair locks, replica membership and cross-replica triggers in PostgreSQL itself.

- A pair is held with a session advisory lock (``pg_try_advisory_lock``) on a connection
  of its own, the *lock session*, whose ``idle_session_timeout`` is the lease: a process
  that stops sending heartbeats (paused, cut off) has its session ended by the server,
  and with it every lock it held. ``syncd_holds`` says who holds what (host, pid, since);
  only rows whose advisory lock is granted in ``pg_locks`` count.
- A replica registers with an advisory lock of its own plus a ``syncd_replicas`` row; it
  is live while that lock is granted, so ``kill -9`` (the session ends with the process)
  and a paused process (the idle timeout) both leave the membership without anybody
  having to declare them dead.
- ``LISTEN``/``NOTIFY`` carry webhooks to the replica that owns the sync
  (``syncd_trigger``), joins and leaves (``syncd_replicas``) and released pairs
  (``syncd_released``), on a second connection read by a thread.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from syncd.coordination import Clock, Coordinator, Holder, Identity, Pair, Replica
from syncd.errors import StateError
from syncd.state.postgres import _first_line, redact_url

LIVE = (
    "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database "
    "WHERE datname = current_database()) AND l.classid::bigint = {t}.lock_hi "
    "AND l.objid::bigint = {t}.lock_lo)"
)


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for these names."""
    digest = hashlib.sha256("\0".join(("syncd", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def halves(key: int) -> tuple[int, int]:
    """The key as ``pg_locks`` shows it: high half in classid, low half in objid."""
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


class PostgresCoordinator(Coordinator):
    shares_work = True

    def __init__(
        self,
        url: str,
        identity: Identity | None = None,
        *,
        lease: float = 30.0,
        clock: Clock = time.monotonic,
        heartbeat_thread: bool = True,
    ) -> None:
        super().__init__(identity, lease=lease, clock=clock, heartbeat_thread=heartbeat_thread)
        self.url = url
        self.where = redact_url(url)
        self._db_lock = threading.Lock()
        self._db: psycopg.Connection[Any] | None = None
        self._gen = 0
        self._registered = False
        self._replica_key = lock_key("replica", self.identity.id)
        self._listener: threading.Thread | None = None
        self.lock_ops = 0
        """Lock operations sent (take, release, heartbeat): the coordination cost."""
        self._session()

    # ------------------------------------------------------------------ the lock session

    def _session(self) -> psycopg.Connection[Any]:
        """The lock session, opened (again) when needed. Callers hold ``_db_lock``."""
        if self._db is not None and not self._db.closed:
            return self._db
        try:
            db = psycopg.connect(
                self.url, autocommit=True, connect_timeout=10, application_name="syncd-locks"
            )
            # the server ends a session that stays idle past the lease, and its locks with it
            try:
                db.execute(f"SET idle_session_timeout = {int(self.lease * 1000)}")
            except psycopg.errors.UndefinedObject:  # PostgreSQL before 14
                self.log.warning(
                    "this PostgreSQL has no idle_session_timeout (version 14+): a frozen "
                    "replica keeps its pairs until its connection ends"
                )
        except psycopg.Error as exc:
            raise StateError(f"state store {self.where}: {_first_line(exc)}") from None
        self._db = db
        self._gen += 1
        if self._registered:
            self._join(db)
        return db

    def _run(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._db_lock:
            db = self._session()
            try:
                self.lock_ops += 1
                return fn(db)
            except psycopg.Error as exc:
                if db.closed or isinstance(exc, psycopg.OperationalError):
                    db.close()
                raise StateError(f"state store {self.where}: {_first_line(exc)}") from None

    def _generation(self) -> int:
        return self._gen

    # ------------------------------------------------------------------ pairs

    def _take(self, pair: Pair, since: datetime) -> Holder | None:
        key = lock_key("pair", *pair)
        hi, lo = halves(key)
        me = self.identity

        def take(db: psycopg.Connection[Any]) -> Holder | None:
            got = db.execute(
                "WITH l AS (SELECT pg_try_advisory_lock(%s) AS got) "
                "INSERT INTO syncd_holds (sync, destination, holder, host, pid, since, "
                "lock_hi, lock_lo) SELECT %s, %s, %s, %s, %s, %s, %s, %s FROM l WHERE l.got "
                "ON CONFLICT (sync, destination) DO UPDATE SET holder=EXCLUDED.holder, "
                "host=EXCLUDED.host, pid=EXCLUDED.pid, since=EXCLUDED.since, "
                "lock_hi=EXCLUDED.lock_hi, lock_lo=EXCLUDED.lock_lo RETURNING 1",
                (key, *pair, me.id, me.host, me.pid, since, hi, lo),
            ).fetchone()
            if got is not None:
                return None
            row = db.execute(
                "SELECT holder, host, pid, since FROM syncd_holds WHERE sync=%s AND destination=%s",
                pair,
            ).fetchone()
            if row is None:
                return Holder("?", "unknown host", 0, None)
            return Holder(row[0], row[1], int(row[2]), row[3])

        result: Holder | None = self._run(take)
        return result

    def _give_back(self, pair: Pair) -> None:
        key = lock_key("pair", *pair)
        payload = json.dumps({"sync": pair[0], "destination": pair[1]})
        self._run(
            lambda db: db.execute(
                "WITH d AS (DELETE FROM syncd_holds WHERE sync=%s AND destination=%s "
                "AND holder=%s) SELECT pg_advisory_unlock(%s), pg_notify('syncd_released', %s)",
                (*pair, self.identity.id, key, payload),
            )
        )

    def _renew(self, pairs: Sequence[Pair]) -> set[Pair]:
        def renew(db: psycopg.Connection[Any]) -> None:
            if self._registered:
                db.execute(
                    "UPDATE syncd_replicas SET heartbeat_at = now() WHERE id = %s",
                    (self.identity.id,),
                )
            else:
                db.execute("SELECT 1")

        if not pairs and not self._registered:
            return set()
        self._run(renew)
        return set()  # the session is alive, so are its locks (a new session: generation)

    def holders(self) -> dict[Pair, Holder]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT sync, destination, holder, host, pid, since FROM syncd_holds h "
                "WHERE " + LIVE.format(t="h")
            ).fetchall()
        )
        return {(r[0], r[1]): Holder(r[2], r[3], int(r[4]), r[5]) for r in rows}

    def ping(self) -> None:
        self._run(lambda db: db.execute("SELECT 1").fetchone())

    # ------------------------------------------------------------------ replicas

    def _join(self, db: psycopg.Connection[Any]) -> None:
        hi, lo = halves(self._replica_key)
        me = self.identity
        db.execute("SELECT pg_advisory_lock(%s)", (self._replica_key,))
        db.execute(
            "INSERT INTO syncd_replicas (id, host, pid, started_at, heartbeat_at, lock_hi, "
            "lock_lo) VALUES (%s, %s, %s, %s, now(), %s, %s) ON CONFLICT (id) DO UPDATE SET "
            "heartbeat_at = now()",
            (me.id, me.host, me.pid, me.started_at, hi, lo),
        )
        db.execute("SELECT pg_notify('syncd_replicas', %s)", (json.dumps({"join": me.id}),))

    def register(self) -> None:
        self._run(self._join)
        self._registered = True  # from now on a new lock session joins again
        self._ensure_thread()

    def deregister(self) -> None:
        if not self._registered:
            return
        self._registered = False

        def leave(db: psycopg.Connection[Any]) -> None:
            db.execute("DELETE FROM syncd_replicas WHERE id = %s", (self.identity.id,))
            db.execute("SELECT pg_advisory_unlock(%s)", (self._replica_key,))
            db.execute(
                "SELECT pg_notify('syncd_replicas', %s)",
                (json.dumps({"leave": self.identity.id}),),
            )

        try:
            self._run(leave)
        except StateError as exc:
            self.log.warning("could not leave the replicas; its session's end will", error=str(exc))

    def replicas(self) -> list[Replica]:
        def read(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            db.execute("DELETE FROM syncd_replicas r WHERE NOT " + LIVE.format(t="r"))
            return db.execute(
                "SELECT id, host, pid, started_at, heartbeat_at FROM syncd_replicas ORDER BY id"
            ).fetchall()

        return [Replica(r[0], r[1], int(r[2]), r[3], r[4]) for r in self._run(read)]

    # ------------------------------------------------------------------ notifications

    def notify(self, channel: str, payload: str) -> None:
        self._run(lambda db: db.execute("SELECT pg_notify(%s, %s)", (channel, payload)))

    def listen(self, channels: Iterable[str], callback: Callable[[str, str], None]) -> None:
        names = list(channels)

        def loop() -> None:
            backoff = 0.5
            while not self._stop.is_set():
                try:
                    with psycopg.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=10,
                        application_name="syncd-listen",
                    ) as conn:
                        for name in names:
                            conn.execute(f"LISTEN {name}")
                        backoff = 0.5
                        callback("syncd_listening", "")
                        while not self._stop.is_set():
                            for n in conn.notifies(timeout=0.5):
                                callback(n.channel, n.payload)
                except psycopg.Error as exc:
                    self.log.warning("notification listener reconnecting", error=_first_line(exc))
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)

        self._listener = threading.Thread(target=loop, name="syncd-listen", daemon=True)
        self._listener.start()

    def close(self) -> None:
        self.deregister()
        super().close()
        if self._listener is not None:
            self._listener.join(timeout=5)
        with self._db_lock:
            if self._db is not None:
                self._db.close()
