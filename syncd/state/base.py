"""The state store protocol: what syncd remembers between runs. Never a value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from syncd.model import Record

if TYPE_CHECKING:
    from syncd.coordination import Coordinator


KEEP_RUNS = 20
"""Runs kept per (sync, destination); older ones are pruned as each run finishes."""


@dataclass(frozen=True)
class PairMeta:
    last_listed_at: datetime | None = None
    source_count: int | None = None
    after_change_due: datetime | None = None  # a redeploy (restart) waits to run then


@dataclass(frozen=True)
class RunRow:
    id: int
    sync: str
    destination: str
    started_at: datetime
    ended_at: datetime | None
    result: str
    counts: dict[str, Any]
    error: str | None


class StateStore(Protocol):
    def records(self, sync: str, destination: str) -> dict[str, Record]: ...

    def record(self, sync: str, destination: str, record: Record) -> None: ...

    def forget(self, sync: str, destination: str, key: str) -> None: ...

    def pair_meta(self, sync: str, destination: str) -> PairMeta: ...

    def set_pair_meta(
        self,
        sync: str,
        destination: str,
        *,
        listed_at: datetime | None = None,
        source_count: int | None = None,
    ) -> None: ...

    def set_after_change(self, sync: str, destination: str, due: datetime | None) -> None:
        """Mark the pair's after-change step pending from ``due`` (None: nothing pending)."""
        ...

    def pending_after_changes(self) -> list[tuple[str, str, datetime]]:
        """(sync, destination, due) of every pending after-change step."""
        ...

    def start_run(self, sync: str, destination: str, started_at: datetime) -> int: ...

    def finish_run(
        self,
        run_id: int,
        ended_at: datetime,
        result: str,
        counts: dict[str, Any],
        error: str | None,
    ) -> None: ...

    def last_runs(self) -> list[RunRow]: ...

    def ping(self) -> None: ...

    def coordinator(self, **kw: Any) -> Coordinator:
        """The pair locks (and, where shared, the replicas) of this store."""
        ...

    def close(self) -> None: ...
