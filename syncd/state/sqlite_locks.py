"""Pair leases in the SQLite state file: every process on the host sees them.

A lease row per held pair names its holder (id, host, pid, since) and its expiry in wall
time. Taking a pair is one ``BEGIN IMMEDIATE`` transaction: free, expired, or held by a
process of this host that no longer exists (``kill -9``: taken over at once) means ours,
with a new fencing token; anything else is busy. Heartbeats push the expiry on; a row
that is gone or names another holder is a lost hold.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.coordination import Clock, Coordinator, Holder, Identity, Pair, pid_alive
from syncd.state.sqlite import connect, guarded


class SqliteCoordinator(Coordinator):
    def __init__(
        self,
        path: str | Path,
        identity: Identity | None = None,
        *,
        lease: float = 30.0,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        heartbeat_thread: bool = True,
    ) -> None:
        super().__init__(identity, lease=lease, clock=clock, heartbeat_thread=heartbeat_thread)
        self.path = Path(path)
        self.wall = wall
        self._db_lock = threading.Lock()
        self._db = guarded(self.path, lambda: connect(self.path))

    def _tx(self, fn: Any) -> Any:
        """``fn(db)`` inside BEGIN IMMEDIATE (one writer at a time on the file)."""

        def run() -> Any:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return out

        return guarded(self.path, run)

    def _free(self, row: tuple[Any, ...], now: float) -> bool:
        holder, _host, pid, local_key, _since, expires_at = row
        if holder == self.identity.id:
            return True
        if float(expires_at) <= now:
            return True
        # a process of this host (same boot, same pid namespace) that is gone
        return bool(local_key == self.identity.local_key and not pid_alive(int(pid)))

    def _take(self, pair: Pair, since: datetime) -> Holder | None:
        me = self.identity

        def take(db: sqlite3.Connection) -> Holder | None:
            now = self.wall()
            row = db.execute(
                "SELECT holder, host, pid, local_key, since, expires_at FROM leases "
                "WHERE sync=? AND destination=?",
                pair,
            ).fetchone()
            if row is not None and not self._free(row, now):
                return Holder(row[0], row[1], int(row[2]), datetime.fromisoformat(row[4]))
            db.execute(
                "INSERT INTO leases (sync, destination, holder, host, pid, local_key, since, "
                "expires_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (sync, destination) DO UPDATE "
                "SET holder=excluded.holder, host=excluded.host, pid=excluded.pid, "
                "local_key=excluded.local_key, since=excluded.since, "
                "expires_at=excluded.expires_at, token=leases.token+1",
                (
                    *pair,
                    me.id,
                    me.host,
                    me.pid,
                    me.local_key,
                    since.astimezone(UTC).isoformat(),
                    now + self.lease,
                ),
            )
            return None

        result: Holder | None = self._tx(take)
        return result

    def _give_back(self, pair: Pair) -> None:
        self._tx(
            lambda db: db.execute(
                "DELETE FROM leases WHERE sync=? AND destination=? AND holder=?",
                (*pair, self.identity.id),
            )
        )

    def _renew(self, pairs: Sequence[Pair]) -> set[Pair]:
        if not pairs:
            return set()

        def renew(db: sqlite3.Connection) -> set[Pair]:
            db.execute(
                "UPDATE leases SET expires_at=? WHERE holder=?",
                (self.wall() + self.lease, self.identity.id),
            )
            mine = {
                (r[0], r[1])
                for r in db.execute(
                    "SELECT sync, destination FROM leases WHERE holder=?", (self.identity.id,)
                )
            }
            return {p for p in pairs if p not in mine}

        lost: set[Pair] = self._tx(renew)
        return lost

    def holders(self) -> dict[Pair, Holder]:
        def read() -> list[tuple[Any, ...]]:
            with self._db_lock:
                return self._db.execute(
                    "SELECT sync, destination, holder, host, pid, local_key, since, expires_at "
                    "FROM leases"
                ).fetchall()

        now = self.wall()
        out: dict[Pair, Holder] = {}
        for r in guarded(self.path, read):
            if r[2] != self.identity.id and self._free(r[2:], now):
                continue
            out[(r[0], r[1])] = Holder(r[2], r[3], int(r[4]), datetime.fromisoformat(r[6]))
        return out

    def ping(self) -> None:
        with self._db_lock:
            guarded(self.path, lambda: self._db.execute("SELECT 1").fetchone())

    def close(self) -> None:
        super().close()
        with self._db_lock:
            self._db.close()
