"""The default state store: one SQLite file, a commit per applied change.

Versioned: ``meta.schema_version``. A store written by an older syncd is migrated in place
(in one ``BEGIN IMMEDIATE`` transaction, so two processes opening it together migrate it
once); a store written by a newer syncd is refused. Every connection waits for a busy
database (``busy_timeout``) instead of failing, and a store that stays locked past that
comes out as a :class:`~syncd.errors.StateError` with a message, never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from syncd.errors import StateError, StateVersionError
from syncd.model import Record
from syncd.state.base import KEEP_RUNS, MAX_PROBLEMS, PairMeta, RunRow

if TYPE_CHECKING:
    from syncd.state.sqlite_locks import SqliteCoordinator

SCHEMA_VERSION = 5
BUSY_TIMEOUT_MS = 30_000

# version 1: the tables of the first release (no meta table)
V1 = """
CREATE TABLE IF NOT EXISTS records (
    sync TEXT NOT NULL,
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    version TEXT,
    created INTEGER NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (sync, destination, key)
);
CREATE TABLE IF NOT EXISTS pairs (
    sync TEXT NOT NULL,
    destination TEXT NOT NULL,
    last_listed_at TEXT,
    source_count INTEGER,
    PRIMARY KEY (sync, destination)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sync TEXT NOT NULL,
    destination TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    result TEXT NOT NULL,
    counts TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_pair ON runs (sync, destination, id);
"""
# version 2: the version row, and the leases that give each pair one writer
V2 = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    sync TEXT NOT NULL,
    destination TEXT NOT NULL,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    local_key TEXT NOT NULL,
    since TEXT NOT NULL,
    expires_at REAL NOT NULL,
    token INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (sync, destination)
);
"""
# version 3: an after-change step (redeploy, restart) waiting to run, per pair
V3 = """
ALTER TABLE pairs ADD COLUMN after_change_due TEXT;
"""
# version 4: each run's error class and failing keys; what notifications last announced
V4 = """
ALTER TABLE runs ADD COLUMN error_class TEXT;
ALTER TABLE runs ADD COLUMN problems TEXT;
ALTER TABLE pairs ADD COLUMN notified_state TEXT;
ALTER TABLE pairs ADD COLUMN notified_at TEXT;
"""
# version 5: keys a destination's count limit blocked, so they cost no listing each run
V5 = """
ALTER TABLE pairs ADD COLUMN limit_blocked TEXT;
ALTER TABLE pairs ADD COLUMN limit_basis INTEGER;
"""
MIGRATIONS = {1: V1, 2: V2, 3: V3, 4: V4, 5: V5}

T = TypeVar("T")


def _ts(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def _dt(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


def connect(path: Path) -> sqlite3.Connection:
    """A connection that waits for a busy database rather than failing at once."""
    db = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
    )
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return db


def guarded(path: Path, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except sqlite3.OperationalError as exc:
        raise StateError(f"state store {path}: {exc}") from None


def schema_version(db: sqlite3.Connection) -> int:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 1 if "records" in tables else 0


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring the store to SCHEMA_VERSION in one transaction; refuse a newer one."""
    db.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(db)
        if found > SCHEMA_VERSION:
            raise StateVersionError(
                f"state store {path} has schema version {found}, written by a newer syncd; "
                f"this syncd knows versions up to {SCHEMA_VERSION}: upgrade syncd, or point "
                "state.url at another store"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    db.execute(statement)
        if found < SCHEMA_VERSION:
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (name) DO UPDATE SET value=excluded.value",
                (str(SCHEMA_VERSION),),
            )
        db.execute("COMMIT")
        return found
    except BaseException:
        db.execute("ROLLBACK")
        raise


class SqliteStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self._lock = threading.Lock()

        def open_db() -> sqlite3.Connection:
            db = connect(self.path)
            if fresh:
                os.chmod(self.path, 0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self.migrated_from = migrate(db, self.path)
            return db

        self._db = guarded(self.path, open_db)

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return guarded(self.path, lambda: self._db.execute(sql, args))

    def coordinator(self, **kw: Any) -> SqliteCoordinator:
        from syncd.state.sqlite_locks import SqliteCoordinator

        return SqliteCoordinator(self.path, **kw)

    def records(self, sync: str, destination: str) -> dict[str, Record]:
        rows = self._exec(
            "SELECT key, fingerprint, version, created, applied_at FROM records "
            "WHERE sync=? AND destination=?",
            (sync, destination),
        ).fetchall()
        return {
            r[0]: Record(r[0], r[1], r[2], bool(r[3]), _dt(r[4]) or datetime.now(UTC)) for r in rows
        }

    def record(self, sync: str, destination: str, record: Record) -> None:
        self._exec(
            "INSERT INTO records "
            "(sync, destination, key, fingerprint, version, created, applied_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (sync, destination, key) DO UPDATE SET "
            "fingerprint=excluded.fingerprint, version=excluded.version, "
            "created=excluded.created, applied_at=excluded.applied_at",
            (
                sync,
                destination,
                record.key,
                record.fingerprint,
                record.version,
                int(record.created),
                _ts(record.applied_at),
            ),
        )

    def forget(self, sync: str, destination: str, key: str) -> None:
        self._exec(
            "DELETE FROM records WHERE sync=? AND destination=? AND key=?", (sync, destination, key)
        )

    def pair_meta(self, sync: str, destination: str) -> PairMeta:
        row = self._exec(
            "SELECT last_listed_at, source_count, after_change_due, limit_blocked, limit_basis "
            "FROM pairs WHERE sync=? AND destination=?",
            (sync, destination),
        ).fetchone()
        if not row:
            return PairMeta()
        blocked = frozenset(json.loads(row[3])) if row[3] else frozenset()
        return PairMeta(_dt(row[0]), row[1], _dt(row[2]), blocked, row[4])

    def set_pair_meta(
        self,
        sync: str,
        destination: str,
        *,
        listed_at: datetime | None = None,
        source_count: int | None = None,
    ) -> None:
        self._exec(
            "INSERT INTO pairs (sync, destination, last_listed_at, source_count) VALUES (?,?,?,?) "
            "ON CONFLICT (sync, destination) DO UPDATE SET "
            "last_listed_at=COALESCE(excluded.last_listed_at, pairs.last_listed_at), "
            "source_count=COALESCE(excluded.source_count, pairs.source_count)",
            (sync, destination, _ts(listed_at), source_count),
        )

    def set_limit_blocked(
        self, sync: str, destination: str, keys: Collection[str], basis: int
    ) -> None:
        self._exec(
            "INSERT INTO pairs (sync, destination, limit_blocked, limit_basis) "
            "VALUES (?,?,?,?) ON CONFLICT (sync, destination) DO UPDATE SET "
            "limit_blocked=EXCLUDED.limit_blocked, limit_basis=EXCLUDED.limit_basis",
            (sync, destination, json.dumps(sorted(keys)), basis),
        )

    def set_after_change(self, sync: str, destination: str, due: datetime | None) -> None:
        self._exec(
            "INSERT INTO pairs (sync, destination, after_change_due) VALUES (?,?,?) "
            "ON CONFLICT (sync, destination) DO UPDATE SET "
            "after_change_due=excluded.after_change_due",
            (sync, destination, _ts(due)),
        )

    def pending_after_changes(self) -> list[tuple[str, str, datetime]]:
        rows = self._exec(
            "SELECT sync, destination, after_change_due FROM pairs "
            "WHERE after_change_due IS NOT NULL ORDER BY after_change_due"
        ).fetchall()
        return [(r[0], r[1], _dt(r[2]) or datetime.now(UTC)) for r in rows]

    def notified(self, sync: str, destination: str) -> tuple[str | None, datetime | None]:
        row = self._exec(
            "SELECT notified_state, notified_at FROM pairs WHERE sync=? AND destination=?",
            (sync, destination),
        ).fetchone()
        return (row[0], _dt(row[1])) if row else (None, None)

    def set_notified(
        self, sync: str, destination: str, state: str, at: datetime, *, expect: str | None
    ) -> bool:
        self._exec(
            "INSERT INTO pairs (sync, destination) VALUES (?,?) ON CONFLICT DO NOTHING",
            (sync, destination),
        )
        cur = self._exec(
            "UPDATE pairs SET notified_state=?, notified_at=? WHERE sync=? AND destination=? "
            "AND notified_state IS ?",
            (state, _ts(at), sync, destination, expect),
        )
        return cur.rowcount == 1

    def start_run(self, sync: str, destination: str, started_at: datetime) -> int:
        cur = self._exec(
            "INSERT INTO runs (sync, destination, started_at, result) VALUES (?,?,?,'running')",
            (sync, destination, _ts(started_at)),
        )
        return int(cur.lastrowid or 0)

    def finish_run(
        self,
        run_id: int,
        ended_at: datetime,
        result: str,
        counts: dict[str, Any],
        error: str | None,
        *,
        error_class: str | None = None,
        problems: Sequence[Mapping[str, str]] = (),
    ) -> None:
        self._exec(
            "UPDATE runs SET ended_at=?, result=?, counts=?, error=?, error_class=?, problems=? "
            "WHERE id=?",
            (
                _ts(ended_at),
                result,
                json.dumps(counts, sort_keys=True),
                error,
                error_class,
                json.dumps([dict(p) for p in problems[:MAX_PROBLEMS]]),
                run_id,
            ),
        )
        # the run history is kept short: the last KEEP_RUNS runs of each pair
        self._exec(
            "DELETE FROM runs WHERE sync = (SELECT sync FROM runs WHERE id = ?) "
            "AND destination = (SELECT destination FROM runs WHERE id = ?) AND id < "
            "(SELECT r.id FROM runs r JOIN runs me ON r.sync = me.sync AND r.destination = "
            "me.destination WHERE me.id = ? ORDER BY r.id DESC LIMIT 1 OFFSET ?)",
            (run_id, run_id, run_id, KEEP_RUNS - 1),
        )

    def last_runs(self) -> list[RunRow]:
        rows = self._exec(
            "SELECT id, sync, destination, started_at, ended_at, result, counts, error, "
            "error_class, problems FROM runs "
            "WHERE id IN (SELECT MAX(id) FROM runs GROUP BY sync, destination) "
            "ORDER BY sync, destination"
        ).fetchall()
        return [
            RunRow(
                r[0],
                r[1],
                r[2],
                _dt(r[3]) or datetime.now(UTC),
                _dt(r[4]),
                r[5],
                json.loads(r[6] or "{}"),
                r[7],
                r[8],
                tuple(json.loads(r[9] or "[]")),
            )
            for r in rows
        ]

    def ping(self) -> None:
        self._exec("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()
