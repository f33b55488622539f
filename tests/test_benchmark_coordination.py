"""A seconds-long run of the coordination benchmark, so its harness cannot break unseen."""

from __future__ import annotations

from benchmarks.coordination import run
from tests.conftest import PG_URL


def test_coordination_benchmark_runs_and_counts(pg_url: str) -> None:
    f = run(pairs=60, replicas=3, cycles=2, url=PG_URL)
    # per cycle: a hold and a release per pair, a heartbeat and a membership look per replica
    assert f.lock_ops_per_cycle == 2 * 60 + 2 * 3
    assert sum(f.spread.values()) == 60 and all(n > 0 for n in f.spread.values())
    assert f.busy == 0
    assert f.rows == {"syncd_replicas": 3, "syncd_holds": 0}
    assert 0 < f.coordination_seconds_per_cycle < 5
