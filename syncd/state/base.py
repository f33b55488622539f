"""The state store protocol: what syncd remembers between runs. Never a value."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from syncd.model import Record

if TYPE_CHECKING:
    from syncd.coordination import Coordinator


MAX_PROBLEMS = 200
"""Failing keys kept per run (the first ones)."""
KEEP_RUNS = 20
"""Runs kept per (sync, destination); older ones are pruned as each run finishes."""


@dataclass(frozen=True)
class PairMeta:
    last_listed_at: datetime | None = None
    source_count: int | None = None
    after_change_due: datetime | None = None  # a redeploy (restart) waits to run then
    # keys the destination's count limit blocked at the last listing, while it held
    # ``limit_basis`` keys of this pair: until that changes, no listing is needed for them
    limit_blocked: frozenset[str] = frozenset()
    limit_basis: int | None = None


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
    error_class: str | None = None  # config | platform | source
    # the keys that failed, were blocked or conflicted: {key, kind, reason, class}
    problems: tuple[dict[str, str], ...] = ()


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

    def set_limit_blocked(
        self, sync: str, destination: str, keys: Collection[str], basis: int
    ) -> None:
        """Remember the keys the count limit blocked, and how many the pair held then."""
        ...

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
        *,
        error_class: str | None = None,
        problems: Sequence[Mapping[str, str]] = (),
    ) -> None: ...

    def notified(self, sync: str, destination: str) -> tuple[str | None, datetime | None]:
        """The pair state notifications last announced (ok, failing), and when."""
        ...

    def set_notified(
        self, sync: str, destination: str, state: str, at: datetime, *, expect: str | None
    ) -> bool:
        """Record that ``state`` was announced, only if the recorded one is still ``expect``
        (one notice per transition, whoever runs the pair). True when recorded."""
        ...

    def last_runs(self) -> list[RunRow]: ...

    def ping(self) -> None: ...

    def coordinator(self, **kw: Any) -> Coordinator:
        """The pair locks (and, where shared, the replicas) of this store."""
        ...

    def close(self) -> None: ...
