"""One model of every (sync, destination) pair's state, built from the state store: what
``syncd status`` prints and ``syncd status --json`` returns. Key names, counts, errors and
holders only: never a value, a fingerprint or a credential.

The JSON shape is versioned by its ``schema`` field; fields are added, never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syncd.config import Config
from syncd.coordination import Coordinator, Holder, Replica, owner
from syncd.state.base import RunRow, StateStore

SCHEMA = 1

FAILING = frozenset({"failed", "refused", "source-failed", "error", "lost"})


@dataclass
class PairStatus:
    sync: str
    destination: str
    last_run: RunRow | None = None
    holder: Holder | None = None
    owner: str | None = None  # the replica that runs it, where replicas share the syncs

    @property
    def state(self) -> str:
        """running (held now), never run, ok, or failing."""
        if self.holder is not None:
            return "running"
        if self.last_run is None:
            return "never run"
        return "failing" if self.last_run.result in FAILING else "ok"

    def to_json(self) -> dict[str, Any]:
        run = self.last_run
        return {
            "sync": self.sync,
            "destination": self.destination,
            "state": self.state,
            "holder": self.holder.to_json() if self.holder else None,
            "owner": self.owner,
            "last_run": None
            if run is None
            else {
                "started_at": _iso(run.started_at),
                "ended_at": _iso(run.ended_at),
                "result": run.result,
                "counts": dict(run.counts),
                "error": run.error,
            },
        }


@dataclass
class Status:
    pairs: list[PairStatus]
    replicas: list[Replica] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "generated_at": _iso(self.generated_at),
            "replicas": [r.to_json() for r in self.replicas],
            "pairs": [p.to_json() for p in self.pairs],
        }


def collect(config: Config, state: StateStore, coordinator: Coordinator) -> Status:
    runs = {(r.sync, r.destination): r for r in state.last_runs()}
    holders = coordinator.holders()
    replicas = coordinator.replicas()
    ids = [r.id for r in replicas]
    pairs = [
        PairStatus(s.name, d, runs.get((s.name, d)), holders.get((s.name, d)), owner(s.name, ids))
        for s in config.syncs
        for d in s.destinations
    ]
    return Status(pairs, replicas)


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None
