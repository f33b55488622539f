"""What coordinating replicas costs on PostgreSQL: P pairs over R in-process replicas.

Each replica registers, sees the live replicas, and in every cycle runs the pairs of the
syncs it owns as the engine does (hold, then release), while its heartbeat thread keeps its
session alive. Printed per cycle: lock operations (statements sent to PostgreSQL for
holds, releases and heartbeats), the wall time spent on them, how the pairs spread, and the
connections and rows the setup keeps. The database is created for the run and dropped.

    python -m benchmarks.coordination                      # 1,000 pairs, 3 replicas
    python -m benchmarks.coordination --pairs 10000 --replicas 5 --cycles 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from syncd.coordination import Hold, owner
from syncd.state import open_store
from syncd.state.postgres_locks import PostgresCoordinator

PG_URL = os.environ.get("SYNCD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Figures:
    pairs: int
    replicas: int
    cycles: int
    lock_ops_per_cycle: float
    coordination_seconds_per_cycle: float
    ms_per_pair: float
    spread: dict[str, int]
    busy: int
    connections: int
    rows: dict[str, int]


def run(pairs: int, replicas: int, cycles: int, url: str = PG_URL) -> Figures:
    name = f"syncd_bench_{uuid.uuid4().hex[:10]}"
    db_url = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    stores = []
    coords: list[PostgresCoordinator] = []
    try:
        for _ in range(replicas):
            store = open_store(db_url, Path("."))
            stores.append(store)
            c = store.coordinator(lease=30.0)
            assert isinstance(c, PostgresCoordinator)
            c.register()
            coords.append(c)
        # one destination per sync: a pair per sync, as in the worst case for locks
        syncs = [f"sync-{i:05d}" for i in range(pairs)]
        live = sorted(r.id for r in coords[0].replicas())
        by_id = {c.identity.id: c for c in coords}
        plan = {
            c.identity.id: [s for s in syncs if owner(s, live) == c.identity.id] for c in coords
        }
        busy = 0
        ops0 = sum(c.lock_ops for c in coords)
        started = time.perf_counter()
        for _ in range(cycles):
            for rid, mine in plan.items():
                c = by_id[rid]
                for s in mine:
                    got = c.try_acquire(s, "dest")
                    if isinstance(got, Hold):
                        c.release(got)
                    else:
                        busy += 1
                c.heartbeat()
                c.replicas()  # the membership look each replica takes per heartbeat
        spent = time.perf_counter() - started
        ops = sum(c.lock_ops for c in coords) - ops0
        with psycopg.connect(db_url, autocommit=True) as db:
            (conns,) = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchone() or (0,)
            rows = {
                t: int((db.execute(f"SELECT count(*) FROM {t}").fetchone() or (0,))[0])
                for t in ("syncd_replicas", "syncd_holds")
            }
        spread = Counter({rid: len(m) for rid, m in plan.items()})
        return Figures(
            pairs,
            replicas,
            cycles,
            ops / cycles,
            spent / cycles,
            1000 * spent / cycles / max(1, pairs),
            dict(sorted(spread.items())),
            busy,
            int(conns),
            rows,
        )
    finally:
        for c in coords:
            c.close()
        for s in stores:
            s.close()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    f = run(args.pairs, args.replicas, args.cycles)
    if args.json:
        print(json.dumps(asdict(f), indent=2))
        return
    print(f"{f.pairs} pairs over {f.replicas} replicas, {f.cycles} cycles on local PostgreSQL")
    print(f"  lock operations per cycle:   {f.lock_ops_per_cycle:.0f}")
    print(
        f"  coordination time per cycle: {f.coordination_seconds_per_cycle * 1000:.0f} ms "
        f"({f.ms_per_pair:.2f} ms a pair)"
    )
    print(f"  pairs per replica:           {', '.join(str(n) for n in f.spread.values())}")
    print(f"  busy answers:                {f.busy}")
    print(
        f"  connections held:            {f.connections} "
        f"({f.replicas} replicas x state store + lock session)"
    )
    print(f"  rows: {f.rows}")


if __name__ == "__main__":
    main()
