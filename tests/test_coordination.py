"""One writer per (sync, destination) pair: holds, busy holders, fencing, takeover, schema
versions, on both state stores (the real SQLite file and the local PostgreSQL)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from syncd.cli import main
from syncd.connector import ConnectorContext
from syncd.coordination import Coordinator, Hold, Holder, Identity, owner
from syncd.errors import StateVersionError
from syncd.executor import Executor
from syncd.model import Action, Change, DesiredEntry, Plan, SecretValue
from syncd.state import open_store
from syncd.state.base import StateStore
from syncd.state.postgres_locks import PostgresCoordinator
from syncd.state.sqlite import SCHEMA_VERSION, V1
from syncd.state.sqlite_locks import SqliteCoordinator
from syncd.testing import memory
from syncd.testing.memory import MemoryDestination, platform
from syncd.testing.workbench import FakeClock, Workbench
from tests.test_run_e2e import wait_for

PAIR = ("app", "gh")


class Clocks:
    """Monotonic and wall time that move only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_800_000_000.0 + self.t


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(url: str, tmp_path: Path) -> Iterator[StateStore]:
    s = open_store(url, tmp_path)
    yield s
    s.close()


def coordinator(store: StateStore, clocks: Clocks | None = None, **kw: object) -> Coordinator:
    extra: dict[str, object] = {"heartbeat_thread": False, "lease": 10.0, **kw}
    if clocks is not None:
        extra["clock"] = clocks.mono
        if "sqlite" in type(store).__name__.lower():
            extra["wall"] = clocks.wall
    return store.coordinator(**extra)


def test_a_held_pair_is_busy_elsewhere_and_names_its_holder(store: StateStore) -> None:
    a, b = coordinator(store), coordinator(store)
    try:
        hold = a.try_acquire(*PAIR)
        assert isinstance(hold, Hold)
        busy = b.try_acquire(*PAIR)
        assert isinstance(busy, Holder)
        assert (busy.id, busy.pid) == (a.identity.id, a.identity.pid)
        assert busy.describe().startswith(f"host {a.identity.host} pid {a.identity.pid} since ")
        # the same process runs a pair once at a time too
        assert isinstance(a.try_acquire(*PAIR), Holder)
        # other pairs are free
        assert isinstance(b.try_acquire("app", "gl"), Hold)
        assert set(b.holders()) == {PAIR, ("app", "gl")}
        a.release(hold)
        assert isinstance(b.try_acquire(*PAIR), Hold)
    finally:
        a.close()
        b.close()
    # closing released everything
    c = coordinator(store)
    assert c.holders() == {}
    c.close()


def test_a_hold_is_distrusted_once_its_heartbeats_stop(store: StateStore) -> None:
    clocks = Clocks()
    a = coordinator(store, clocks)
    try:
        hold = a.try_acquire(*PAIR)
        assert isinstance(hold, Hold) and hold.check() is None
        clocks.t += 7.0
        a.heartbeat()  # confirmed again: trusted for 8 s (80% of the lease) from here
        clocks.t += 7.9
        assert hold.check() is None
        clocks.t += 0.2
        reason = hold.check()
        assert reason is not None and "last confirmed 8s ago" in reason
    finally:
        a.close()


def test_sqlite_lease_runs_out_and_the_paused_holder_finds_out(tmp_path: Path) -> None:
    """A holder paused past its lease: another process takes the pair; when the first
    resumes, its hold is both too old to trust and, at the next heartbeat, lost."""
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
    clocks = Clocks()
    a = coordinator(store, clocks)
    b = coordinator(store, clocks)
    try:
        hold = a.try_acquire(*PAIR)
        assert isinstance(hold, Hold)
        clocks.t += 9.0
        assert isinstance(b.try_acquire(*PAIR), Holder)  # lease not over yet
        clocks.t += 1.5
        taken = b.try_acquire(*PAIR)
        assert isinstance(taken, Hold)
        assert hold.check() is not None  # too old to trust, before any heartbeat
        a.heartbeat()
        assert hold.lost is not None and "another process took the pair over" in hold.lost
        assert b.holders()[PAIR].id == b.identity.id
    finally:
        a.close()
        b.close()
        store.close()


def test_sqlite_pair_of_a_killed_process_is_taken_at_once(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = replace(Identity.current(), pid=int(done.stdout))
    a = SqliteCoordinator(store.path, dead, heartbeat_thread=False)  # type: ignore[attr-defined]
    b = coordinator(store)
    try:
        assert isinstance(a.try_acquire(*PAIR), Hold)
        # the holder's process is gone (kill -9): no need to wait for the lease
        assert isinstance(b.try_acquire(*PAIR), Hold)
    finally:
        b.close()
        store.close()


def test_postgres_session_end_releases_the_pair_and_fences_the_holder(pg_url: str) -> None:
    store = open_store(pg_url, Path("."))
    a = coordinator(store)
    b = coordinator(store)
    assert isinstance(a, PostgresCoordinator)
    try:
        hold = a.try_acquire(*PAIR)
        assert isinstance(hold, Hold)
        assert isinstance(b.try_acquire(*PAIR), Holder)
        # the server ends the holder's lock session (idle timeout, network, kill -9)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'syncd-locks' AND pid <> pg_backend_pid() "
                "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
                " AND datname = current_database()"
            )
        # the lock goes as the ended session does (b reconnects if its own was ended too)
        wait_for(lambda: isinstance(b.try_acquire(*PAIR), Hold) or PAIR in b.held(), timeout=5)
        a.heartbeat()  # fails (session gone), then reconnects on the next one
        a.heartbeat()
        assert hold.check() is not None
        assert b.holders()[PAIR].id == b.identity.id
    finally:
        a.close()
        b.close()
        store.close()


def test_postgres_lock_session_ends_when_idle_past_the_lease(pg_url: str) -> None:
    store = open_store(pg_url, Path("."))
    a = coordinator(store, lease=4.0)
    try:
        assert isinstance(a.try_acquire(*PAIR), Hold)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            (timeout,) = admin.execute(
                "SELECT setting FROM pg_settings WHERE name = 'idle_session_timeout'"
            ).fetchone() or ("",)
            assert timeout == "0"  # the server default; the lock session sets its own
        db = a._db  # type: ignore[attr-defined]
        assert db.execute("SHOW idle_session_timeout").fetchone()[0] == "4s"
    finally:
        a.close()
        store.close()


def test_replicas_register_and_leave(pg_url: str) -> None:
    store = open_store(pg_url, Path("."))
    a, b = coordinator(store), coordinator(store)
    try:
        a.register()
        b.register()
        assert [r.id for r in a.replicas()] == sorted([a.identity.id, b.identity.id])
        b.deregister()
        assert [r.id for r in a.replicas()] == [a.identity.id]
        b.register()
        b._db.close()  # type: ignore[attr-defined]  # its session died (kill -9)
        wait_for(lambda: [r.id for r in a.replicas()] == [a.identity.id], timeout=5)
    finally:
        a.close()
        b.close()
        store.close()


def test_rendezvous_spreads_syncs_and_moves_only_the_leavers() -> None:
    replicas = ["r1", "r2", "r3"]
    syncs = [f"sync-{i}" for i in range(300)]
    placed = {s: owner(s, replicas) for s in syncs}
    counts = {r: sum(1 for o in placed.values() if o == r) for r in replicas}
    assert all(70 <= c <= 130 for c in counts.values()), counts
    after = {s: owner(s, ["r1", "r3"]) for s in syncs}
    moved = [s for s in syncs if placed[s] != after[s]]
    assert moved and all(placed[s] == "r2" for s in moved)
    assert owner("x", []) is None


# ---------------------------------------------------------------------- executor fencing


def _change(key: str) -> Change:
    d = DesiredEntry(key, SecretValue(f"value-of-{key}"), key, f"fp-{key}")
    return Change(key, Action.CREATE, "new key", desired=d, write=True, created=True)


async def test_a_lost_hold_stops_the_run_before_the_next_write(tmp_path: Path) -> None:
    memory.install()
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
    clock = FakeClock()
    dest = MemoryDestination(
        "mem",
        MemoryDestination.Config.model_validate(
            {"type": "memory", "platform": "fence", "concurrency": 1}
        ),
        ConnectorContext("."),
    )
    platform("fence").data.clear()
    plan = Plan("app", "mem", tuple(_change(k) for k in ("A", "B", "C")), listed=True)
    ex = Executor(store, sleep=clock.sleep, clock=clock.monotonic, now=clock.now)

    def fence() -> str | None:  # the hold is lost once two keys have landed
        return "lost it" if len(platform("fence").data) >= 2 else None

    out = await ex.apply(plan, dest, fence=fence)
    assert out.lost == "lost it"
    assert platform("fence").data == {"A": "value-of-A", "B": "value-of-B"}
    assert [f.message for f in out.failed] == ["not applied: lost it"]
    assert set(store.records("app", "mem")) == {"A", "B"}
    store.close()


# ---------------------------------------------------------------------- busy through once


async def test_once_reports_a_busy_pair_and_writes_nothing(tmp_path: Path) -> None:
    memory.install()
    platform("busy-pair").data.clear()
    wb = Workbench(
        tmp_path,
        {"mem": {"type": "memory", "platform": "busy-pair"}},
        source={"A": "alpha-value-1"},
    )
    other = wb.state.coordinator(heartbeat_thread=False)
    hold = other.try_acquire("main", "mem")
    assert isinstance(hold, Hold)
    (result,) = await wb.once()
    (pair,) = result.pairs
    assert pair.result == "busy" and not result.ok
    assert pair.error is not None and f"pid {other.identity.pid} since " in pair.error
    assert platform("busy-pair").data == {}
    other.release(hold)
    (result,) = await wb.once()
    assert result.ok and platform("busy-pair").data == {"A": "alpha-value-1"}
    other.close()


# ---------------------------------------------------------------------- schema versions


def test_a_store_made_by_the_first_release_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(V1)
    db.execute(
        "INSERT INTO records VALUES ('app', 'gh', 'API_KEY', 'hmac-sha256:ab', '3', 1, ?)",
        (datetime(2026, 1, 1, tzinfo=UTC).isoformat(),),
    )
    db.execute(
        "INSERT INTO runs (sync, destination, started_at, result) VALUES "
        "('app', 'gh', '2026-01-01T00:00:00+00:00', 'ok')"
    )
    db.commit()
    db.close()
    store = open_store(f"sqlite:///{path}", tmp_path)
    try:
        assert store.migrated_from == 1  # type: ignore[attr-defined]
        rec = store.records("app", "gh")["API_KEY"]
        assert (rec.fingerprint, rec.version, rec.created) == ("hmac-sha256:ab", "3", True)
        assert [r.result for r in store.last_runs()] == ["ok"]
        c = coordinator(store)
        assert isinstance(c.try_acquire(*PAIR), Hold)
        c.close()
    finally:
        store.close()
    again = open_store(f"sqlite:///{path}", tmp_path)
    assert again.migrated_from == SCHEMA_VERSION  # type: ignore[attr-defined]
    again.close()


def test_postgres_store_of_the_first_release_is_migrated(pg_url: str) -> None:
    from syncd.state.postgres import V1 as PG_V1

    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(PG_V1)
        db.execute(
            "INSERT INTO syncd_records VALUES ('app', 'gh', 'K', 'hmac-sha256:cd', NULL, true, "
            "now())"
        )
    store = open_store(pg_url, Path("."))
    try:
        assert store.migrated_from == 1  # type: ignore[attr-defined]
        assert store.records("app", "gh")["K"].fingerprint == "hmac-sha256:cd"
    finally:
        store.close()


def test_a_newer_store_is_refused_with_exit_2(
    url: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_store(url, tmp_path).close()
    table = "meta" if kind == "sqlite" else "syncd_meta"
    if kind == "sqlite":
        db = sqlite3.connect(tmp_path / "state.db")
        db.execute(f"UPDATE {table} SET value='99' WHERE name='schema_version'")
        db.commit()
        db.close()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(f"UPDATE {table} SET value='99' WHERE name='schema_version'")
    with pytest.raises(StateVersionError, match="schema version 99, written by a newer syncd"):
        open_store(url, tmp_path)
    cfg = tmp_path / "syncd.yaml"
    (tmp_path / "s.yaml").write_text("A: b\n")
    cfg.write_text(
        f"version: 1\nstate: {{url: '{url}'}}\nsources: {{s: {{type: file, path: s.yaml}}}}\n"
        "destinations: {d: {type: dotenv, path: out.env}}\nsyncs: [{name: x, from: s, to: [d]}]\n"
    )
    capsys.readouterr()
    assert main(["-c", str(cfg), "once"]) == 2
    err = capsys.readouterr().err
    assert "schema version 99" in err and "upgrade syncd" in err
    assert "Traceback" not in err and "password" not in err


def test_status_shows_who_holds_each_pair_and_the_live_replicas(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.yaml").write_text("A: alpha-value-1\n")
    cfg = tmp_path / "syncd.yaml"
    cfg.write_text(
        f"version: 1\nstate: {{url: '{pg_url}'}}\nsources: {{s: {{type: file, path: s.yaml}}}}\n"
        "destinations: {d: {type: dotenv, path: out.env}, e: {type: dotenv, path: e.env}}\n"
        "syncs: [{name: app, from: s, to: [d, e]}]\n"
    )
    assert main(["-c", str(cfg), "once"]) == 0
    store = open_store(pg_url, Path("."))
    replica = coordinator(store)
    replica.register()
    hold = replica.try_acquire("app", "d")
    assert isinstance(hold, Hold)
    capsys.readouterr()
    try:
        assert main(["-c", str(cfg), "status"]) == 0
        out = capsys.readouterr().out
        me = replica.identity
        assert f"running now: host {me.host} pid {me.pid} since " in out
        assert "replicas (1 live):" in out and me.id in out
        assert main(["-c", str(cfg), "status", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["schema"] == 1
        pairs = {p["destination"]: p for p in data["pairs"]}
        assert pairs["d"]["state"] == "running" and pairs["d"]["holder"]["pid"] == me.pid
        assert pairs["e"]["state"] == "ok" and pairs["e"]["holder"] is None
        assert pairs["e"]["owner"] == me.id and pairs["e"]["last_run"]["result"] == "ok"
        assert [r["id"] for r in data["replicas"]] == [me.id]
        assert "alpha-value-1" not in out
    finally:
        replica.close()
        store.close()
