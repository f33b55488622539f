"""Both state stores keep the same things, and never a value."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.errors import ConfigError
from syncd.model import Record
from syncd.state import Fingerprinter, StateStore, open_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        s = open_store(None, tmp_path)
    else:
        s = open_store(request.getfixturevalue("pg_url"), Path("."))
    yield s
    s.close()


def test_records_round_trip_and_forget(store: StateStore) -> None:
    store.record("s", "d", Record("A", "hmac-sha256:aa", "3", True, T0))
    store.record("s", "d", Record("B", "hmac-sha256:bb", None, False, T0))
    store.record("s", "d", Record("A", "hmac-sha256:cc", "4", True, T0 + timedelta(seconds=5)))
    store.record("s", "other", Record("A", "hmac-sha256:dd", None, True, T0))
    got = store.records("s", "d")
    assert set(got) == {"A", "B"}
    assert got["A"].fingerprint == "hmac-sha256:cc" and got["A"].version == "4"
    assert got["A"].applied_at == T0 + timedelta(seconds=5)
    assert got["B"].created is False
    store.forget("s", "d", "A")
    assert set(store.records("s", "d")) == {"B"}


def test_pair_meta_and_runs(store: StateStore) -> None:
    assert store.pair_meta("s", "d").last_listed_at is None
    store.set_pair_meta("s", "d", listed_at=T0, source_count=4)
    store.set_pair_meta("s", "d", source_count=5)
    meta = store.pair_meta("s", "d")
    assert meta.last_listed_at == T0 and meta.source_count == 5
    r1 = store.start_run("s", "d", T0)
    store.finish_run(r1, T0, "failed", {"failed": 1}, "KEY: refused")
    r2 = store.start_run("s", "d", T0 + timedelta(minutes=1))
    store.finish_run(r2, T0 + timedelta(minutes=1), "ok", {"created": 2}, None)
    [last] = store.last_runs()
    assert (last.result, last.counts, last.error) == ("ok", {"created": 2}, None)
    store.ping()


def test_fingerprints_are_keyed_and_differ_per_key(tmp_path: Path) -> None:
    fp = Fingerprinter.from_file(tmp_path / "k")
    other = Fingerprinter.from_file(tmp_path / "k2")
    assert fp("A", "v") == Fingerprinter.from_file(tmp_path / "k")("A", "v")
    assert fp("A", "v") != fp("B", "v")  # equal values do not show as equal
    assert fp("A", "v") != other("A", "v")  # without the key file, nothing can be guessed
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o600"


def test_state_url_forms(tmp_path: Path) -> None:
    s = open_store("sqlite:rel/state.db", tmp_path / "statedir", tmp_path / "cfg")
    s.close()
    assert (tmp_path / "cfg" / "rel" / "state.db").exists()
    s = open_store(f"sqlite:///{tmp_path}/abs.db", tmp_path)
    s.close()
    assert (tmp_path / "abs.db").exists()
    with pytest.raises(ConfigError, match=r"state\.url"):
        open_store("redis://localhost", tmp_path)


def test_run_history_is_kept_short(store: StateStore) -> None:
    from syncd.state.base import KEEP_RUNS

    for i in range(200):
        when = T0 + timedelta(seconds=i)
        for dest in ("d", "e"):
            run = store.start_run("s", dest, when)
            store.finish_run(run, when, "ok", {"unchanged": i}, None)
    last = {r.destination: r for r in store.last_runs()}
    assert last["d"].counts == {"unchanged": 199} and last["e"].counts == {"unchanged": 199}
    if hasattr(store, "path"):
        import sqlite3

        db = sqlite3.connect(store.path)
        counts = dict(db.execute("SELECT destination, count(*) FROM runs GROUP BY destination"))
    else:
        counts = {
            r[0]: r[1]
            for r in store._exec(  # type: ignore[attr-defined]
                "SELECT destination, count(*) FROM syncd_runs GROUP BY destination"
            ).fetchall()
        }
    assert counts == {"d": KEEP_RUNS, "e": KEEP_RUNS}
