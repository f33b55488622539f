"""A PostgreSQL state store, for several replicas sharing one state (and one fingerprint
key file, given to each with SYNCD_FINGERPRINT_KEY_FILE).

Versioned (``syncd_meta.schema_version``): an older store is migrated in place, a newer one
refused. Pair locks and the replica registry are in :mod:`syncd.state.postgres_locks`."""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from syncd.errors import StateError, StateVersionError
from syncd.model import Record
from syncd.state.base import KEEP_RUNS, MAX_PROBLEMS, PairMeta, RunRow

if TYPE_CHECKING:
    from syncd.state.postgres_locks import PostgresCoordinator

SCHEMA_VERSION = 5
MIGRATION_LOCK = 0x73796E6364  # "syncd": one migrating process at a time

# version 1: the tables of the first release (no meta table)
V1 = """
CREATE TABLE IF NOT EXISTS syncd_records (
    sync TEXT NOT NULL,
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    version TEXT,
    created BOOLEAN NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sync, destination, key)
);
CREATE TABLE IF NOT EXISTS syncd_pairs (
    sync TEXT NOT NULL,
    destination TEXT NOT NULL,
    last_listed_at TIMESTAMPTZ,
    source_count INTEGER,
    PRIMARY KEY (sync, destination)
);
CREATE TABLE IF NOT EXISTS syncd_runs (
    id BIGSERIAL PRIMARY KEY,
    sync TEXT NOT NULL,
    destination TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ,
    result TEXT NOT NULL,
    counts JSONB NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS syncd_runs_pair ON syncd_runs (sync, destination, id);
"""
# version 2: the version row; who holds each pair's advisory lock; the replicas
V2 = """
CREATE TABLE IF NOT EXISTS syncd_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS syncd_holds (
    sync TEXT NOT NULL,
    destination TEXT NOT NULL,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    lock_hi BIGINT NOT NULL,
    lock_lo BIGINT NOT NULL,
    PRIMARY KEY (sync, destination)
);
CREATE TABLE IF NOT EXISTS syncd_replicas (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    lock_hi BIGINT NOT NULL,
    lock_lo BIGINT NOT NULL
);
"""
# version 3: an after-change step (redeploy, restart) waiting to run, per pair
V3 = """
ALTER TABLE syncd_pairs ADD COLUMN IF NOT EXISTS after_change_due TIMESTAMPTZ;
"""
# version 4: each run's error class and failing keys; what notifications last announced
V4 = """
ALTER TABLE syncd_runs ADD COLUMN IF NOT EXISTS error_class TEXT;
ALTER TABLE syncd_runs ADD COLUMN IF NOT EXISTS problems JSONB;
ALTER TABLE syncd_pairs ADD COLUMN IF NOT EXISTS notified_state TEXT;
ALTER TABLE syncd_pairs ADD COLUMN IF NOT EXISTS notified_at TIMESTAMPTZ;
"""
# version 5: keys a destination's count limit blocked, so they cost no listing each run
V5 = """
ALTER TABLE syncd_pairs ADD COLUMN IF NOT EXISTS limit_blocked TEXT;
ALTER TABLE syncd_pairs ADD COLUMN IF NOT EXISTS limit_basis INTEGER;
"""
MIGRATIONS = {1: V1, 2: V2, 3: V3, 4: V4, 5: V5}


def schema_version(db: psycopg.Connection[Any]) -> int:
    tables = {
        r[0]
        for r in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
    if "syncd_meta" in tables:
        row = db.execute("SELECT value FROM syncd_meta WHERE name='schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 1 if "syncd_records" in tables else 0


def migrate(db: psycopg.Connection[Any], where: str) -> int:
    """Bring the store to SCHEMA_VERSION in one transaction (under an advisory lock, so
    replicas starting together migrate it once); refuse a newer one."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        found = schema_version(db)
        if found > SCHEMA_VERSION:
            raise StateVersionError(
                f"state store {where} has schema version {found}, written by a newer syncd; "
                f"this syncd knows versions up to {SCHEMA_VERSION}: upgrade syncd, or point "
                "state.url at another store"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            db.execute(MIGRATIONS[version])
        if found < SCHEMA_VERSION:
            db.execute(
                "INSERT INTO syncd_meta (name, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (name) DO UPDATE SET value=EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )
    return found


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://…"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"postgresql://{info.get('user') or ''}@{host}:{port}/{info.get('dbname') or ''}"


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact_url(url)
        self._lock = threading.Lock()
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
            self.migrated_from = migrate(self._db, self.where)
        except psycopg.Error as exc:
            raise StateError(f"state store {self.where}: {_first_line(exc)}") from None

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        with self._lock:
            try:
                if self._db.closed:
                    self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
                return self._db.execute(sql, args)
            except psycopg.Error as exc:
                raise StateError(f"state store {self.where}: {_first_line(exc)}") from None

    def coordinator(self, **kw: Any) -> PostgresCoordinator:
        from syncd.state.postgres_locks import PostgresCoordinator

        return PostgresCoordinator(self.url, **kw)

    def records(self, sync: str, destination: str) -> dict[str, Record]:
        rows = self._exec(
            "SELECT key, fingerprint, version, created, applied_at FROM syncd_records "
            "WHERE sync=%s AND destination=%s",
            (sync, destination),
        ).fetchall()
        return {r[0]: Record(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows}

    def record(self, sync: str, destination: str, record: Record) -> None:
        self._exec(
            "INSERT INTO syncd_records "
            "(sync, destination, key, fingerprint, version, created, applied_at) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (sync, destination, key) DO UPDATE SET "
            "fingerprint=EXCLUDED.fingerprint, version=EXCLUDED.version, "
            "created=EXCLUDED.created, applied_at=EXCLUDED.applied_at",
            (
                sync,
                destination,
                record.key,
                record.fingerprint,
                record.version,
                record.created,
                record.applied_at,
            ),
        )

    def forget(self, sync: str, destination: str, key: str) -> None:
        self._exec(
            "DELETE FROM syncd_records WHERE sync=%s AND destination=%s AND key=%s",
            (sync, destination, key),
        )

    def pair_meta(self, sync: str, destination: str) -> PairMeta:
        row = self._exec(
            "SELECT last_listed_at, source_count, after_change_due, limit_blocked, limit_basis "
            "FROM syncd_pairs WHERE sync=%s AND destination=%s",
            (sync, destination),
        ).fetchone()
        if not row:
            return PairMeta()
        blocked = frozenset(json.loads(row[3])) if row[3] else frozenset()
        return PairMeta(row[0], row[1], row[2], blocked, row[4])

    def set_pair_meta(
        self,
        sync: str,
        destination: str,
        *,
        listed_at: datetime | None = None,
        source_count: int | None = None,
    ) -> None:
        self._exec(
            "INSERT INTO syncd_pairs (sync, destination, last_listed_at, source_count) "
            "VALUES (%s,%s,%s,%s) ON CONFLICT (sync, destination) DO UPDATE SET "
            "last_listed_at=COALESCE(EXCLUDED.last_listed_at, syncd_pairs.last_listed_at), "
            "source_count=COALESCE(EXCLUDED.source_count, syncd_pairs.source_count)",
            (sync, destination, listed_at, source_count),
        )

    def set_limit_blocked(
        self, sync: str, destination: str, keys: Collection[str], basis: int
    ) -> None:
        self._exec(
            "INSERT INTO syncd_pairs (sync, destination, limit_blocked, limit_basis) "
            "VALUES (%s,%s,%s,%s) ON CONFLICT (sync, destination) DO UPDATE SET "
            "limit_blocked=EXCLUDED.limit_blocked, limit_basis=EXCLUDED.limit_basis",
            (sync, destination, json.dumps(sorted(keys)), basis),
        )

    def set_after_change(self, sync: str, destination: str, due: datetime | None) -> None:
        self._exec(
            "INSERT INTO syncd_pairs (sync, destination, after_change_due) VALUES (%s,%s,%s) "
            "ON CONFLICT (sync, destination) DO UPDATE SET "
            "after_change_due=EXCLUDED.after_change_due",
            (sync, destination, due),
        )

    def pending_after_changes(self) -> list[tuple[str, str, datetime]]:
        rows = self._exec(
            "SELECT sync, destination, after_change_due FROM syncd_pairs "
            "WHERE after_change_due IS NOT NULL ORDER BY after_change_due"
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def notified(self, sync: str, destination: str) -> tuple[str | None, datetime | None]:
        row = self._exec(
            "SELECT notified_state, notified_at FROM syncd_pairs WHERE sync=%s AND destination=%s",
            (sync, destination),
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def set_notified(
        self, sync: str, destination: str, state: str, at: datetime, *, expect: str | None
    ) -> bool:
        self._exec(
            "INSERT INTO syncd_pairs (sync, destination) VALUES (%s,%s) ON CONFLICT DO NOTHING",
            (sync, destination),
        )
        cur = self._exec(
            "UPDATE syncd_pairs SET notified_state=%s, notified_at=%s WHERE sync=%s "
            "AND destination=%s AND notified_state IS NOT DISTINCT FROM %s",
            (state, at, sync, destination, expect),
        )
        return cur.rowcount == 1

    def start_run(self, sync: str, destination: str, started_at: datetime) -> int:
        row = self._exec(
            "INSERT INTO syncd_runs (sync, destination, started_at, result) "
            "VALUES (%s,%s,%s,'running') RETURNING id",
            (sync, destination, started_at),
        ).fetchone()
        return int(row[0]) if row else 0

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
            "UPDATE syncd_runs SET ended_at=%s, result=%s, counts=%s, error=%s, error_class=%s, "
            "problems=%s WHERE id=%s",
            (
                ended_at,
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
            "DELETE FROM syncd_runs WHERE sync = (SELECT sync FROM syncd_runs WHERE id = %s) "
            "AND destination = (SELECT destination FROM syncd_runs WHERE id = %s) AND id < "
            "(SELECT r.id FROM syncd_runs r JOIN syncd_runs me ON r.sync = me.sync "
            "AND r.destination = me.destination WHERE me.id = %s "
            "ORDER BY r.id DESC LIMIT 1 OFFSET %s)",
            (run_id, run_id, run_id, KEEP_RUNS - 1),
        )

    def last_runs(self) -> list[RunRow]:
        rows = self._exec(
            "SELECT DISTINCT ON (sync, destination) id, sync, destination, started_at, ended_at, "
            "result, counts, error, error_class, problems FROM syncd_runs "
            "ORDER BY sync, destination, id DESC"
        ).fetchall()
        return [
            RunRow(
                r[0],
                r[1],
                r[2],
                r[3] or datetime.now(UTC),
                r[4],
                r[5],
                dict(r[6] or {}),
                r[7],
                r[8],
                tuple(r[9] or ()),
            )
            for r in rows
        ]

    def ping(self) -> None:
        self._exec("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
