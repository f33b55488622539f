"""A PostgreSQL state store, for several replicas sharing one state (and one fingerprint
key file, given to each with SYNCD_FINGERPRINT_KEY_FILE)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg

from syncd.model import Record
from syncd.state.base import PairMeta, RunRow

SCHEMA = """
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


class PostgresStore:
    def __init__(self, url: str) -> None:
        self._lock = threading.Lock()
        self._db = psycopg.connect(url, autocommit=True)
        with self._lock:
            self._db.execute(SCHEMA)

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        with self._lock:
            return self._db.execute(sql, args)

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
            "SELECT last_listed_at, source_count FROM syncd_pairs WHERE sync=%s AND destination=%s",
            (sync, destination),
        ).fetchone()
        return PairMeta(row[0], row[1]) if row else PairMeta()

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
    ) -> None:
        self._exec(
            "UPDATE syncd_runs SET ended_at=%s, result=%s, counts=%s, error=%s WHERE id=%s",
            (ended_at, result, json.dumps(counts, sort_keys=True), error, run_id),
        )

    def last_runs(self) -> list[RunRow]:
        rows = self._exec(
            "SELECT DISTINCT ON (sync, destination) id, sync, destination, started_at, ended_at, "
            "result, counts, error FROM syncd_runs ORDER BY sync, destination, id DESC"
        ).fetchall()
        return [
            RunRow(r[0], r[1], r[2], r[3] or datetime.now(UTC), r[4], r[5], dict(r[6] or {}), r[7])
            for r in rows
        ]

    def ping(self) -> None:
        self._exec("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()
