"""One model of every (sync, destination) pair's state, built from the state store (and,
in ``syncd run``, from what the daemon knows: the next scheduled run, the last source
reads, pairs found busy). Three views read it: ``syncd status`` (a table), ``syncd status
--json`` and ``/status.json`` (:meth:`Status.to_json`), and ``/status`` (an HTML page
rendered from ``syncd/templates/status.html``); ``syncd/notify.py`` watches its
transitions. Key names, counts, reasons and holders only: never a value, a fingerprint or a
credential.

The JSON is versioned by ``schema``; fields are added, never renamed or dropped
(docs/operations.md describes schema 1).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.config import Config
from syncd.coordination import Coordinator, Holder, Identity, Replica, owner
from syncd.state.base import RunRow, StateStore

SCHEMA = 1

FAILING = frozenset({"failed", "refused", "source-failed", "error", "lost"})
STATES = ("failing", "busy", "running", "never run", "ok")
"""Every pair state, in the order the page lists them: what needs a look first."""

CLASS_HELP = {
    "config": "fix the config, the credential or its permissions, or the key",
    "platform": "the platform failed or throttled; syncd retries",
    "source": "the source could not be read; nothing was changed",
}


@dataclass(frozen=True)
class SourceRead:
    ok: bool
    at: datetime
    keys: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "at": _iso(self.at), "keys": self.keys}


@dataclass
class PairStatus:
    sync: str
    destination: str
    last_run: RunRow | None = None
    holder: Holder | None = None
    owner: str | None = None  # the replica that runs it, where replicas share the syncs
    next_run: datetime | None = None
    busy: bool = False  # its last try found it held by another process

    @property
    def state(self) -> str:
        """running (held now), busy, never run, ok, or failing."""
        if self.holder is not None:
            return "running"
        if self.busy:
            return "busy"
        if self.last_run is None:
            return "never run"
        return "failing" if self.last_run.result in FAILING else "ok"

    @property
    def error_class(self) -> str | None:
        run = self.last_run
        if run is None or run.result not in FAILING:
            return None
        return run.error_class or ("source" if run.result == "source-failed" else "config")

    @property
    def duration(self) -> float | None:
        run = self.last_run
        if run is None or run.ended_at is None:
            return None
        return max(0.0, (run.ended_at - run.started_at).total_seconds())

    @property
    def problems(self) -> list[dict[str, str]]:
        return [dict(p) for p in self.last_run.problems] if self.last_run else []

    def to_json(self) -> dict[str, Any]:
        run = self.last_run
        return {
            "sync": self.sync,
            "destination": self.destination,
            "state": self.state,
            "holder": self.holder.to_json() if self.holder else None,
            "owner": self.owner,
            "next_run": _iso(self.next_run),
            "error_class": self.error_class,
            "last_run": None
            if run is None
            else {
                "started_at": _iso(run.started_at),
                "ended_at": _iso(run.ended_at),
                "duration_seconds": self.duration,
                "result": run.result,
                "counts": dict(run.counts),
                "error": run.error,
                "error_class": self.error_class,
            },
            "problems": self.problems,
        }


@dataclass
class Status:
    pairs: list[PairStatus]
    replicas: list[Replica] = field(default_factory=list)
    sources: dict[str, SourceRead] = field(default_factory=dict)
    me: Identity | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def summary(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for p in self.pairs:
            out[p.state] += 1
        return out

    def ordered(self) -> list[PairStatus]:
        """Failing pairs first, then busy, running, never run, ok."""
        rank = {s: i for i, s in enumerate(STATES)}
        return sorted(self.pairs, key=lambda p: (rank[p.state], p.sync, p.destination))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "generated_at": _iso(self.generated_at),
            "replica": None
            if self.me is None
            else {"id": self.me.id, "host": self.me.host, "pid": self.me.pid},
            "summary": self.summary,
            "sources": {name: r.to_json() for name, r in sorted(self.sources.items())},
            "replicas": [r.to_json() for r in self.replicas],
            "pairs": [p.to_json() for p in self.ordered()],
        }


def collect(
    config: Config,
    state: StateStore,
    coordinator: Coordinator,
    *,
    next_runs: Mapping[str, datetime] | None = None,
    sources: Mapping[str, SourceRead] | None = None,
    busy: Collection[tuple[str, str]] = (),
    now: datetime | None = None,
) -> Status:
    """The status of every configured pair. ``next_runs`` (per sync) come from the daemon's
    schedule; without them the next run is estimated from the last run and the interval."""
    runs = {(r.sync, r.destination): r for r in state.last_runs()}
    holders = coordinator.holders()
    replicas = coordinator.replicas()
    ids = [r.id for r in replicas]
    pairs = []
    for s in config.syncs:
        for d in s.destinations:
            run = runs.get((s.name, d))
            nxt = (next_runs or {}).get(s.name)
            if nxt is None and next_runs is None and run is not None:
                period = min(s.policy.interval, s.policy.drift_check or s.policy.interval)
                nxt = (run.ended_at or run.started_at) + timedelta(seconds=period)
            pairs.append(
                PairStatus(
                    s.name,
                    d,
                    run,
                    holders.get((s.name, d)),
                    owner(s.name, ids),
                    nxt,
                    (s.name, d) in busy,
                )
            )
    return Status(
        pairs,
        replicas,
        dict(sources or {}),
        coordinator.identity,
        now or datetime.now(UTC),
    )


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def relative(dt: datetime | None, now: datetime) -> str:
    """``3 min ago``, ``in 42 s``: for people."""
    if dt is None:
        return "-"
    delta = (dt - now).total_seconds()
    n = abs(delta)
    if n < 60:
        text = f"{n:.0f} s"
    elif n < 3600:
        text = f"{n / 60:.0f} min"
    elif n < 86400:
        text = f"{n / 3600:.1f} h"
    else:
        text = f"{n / 86400:.1f} d"
    return f"in {text}" if delta > 0 else f"{text} ago"


COUNT_KEYS = (
    "created",
    "updated",
    "deleted",
    "adopted",
    "unchanged",
    "skipped",
    "blocked",
    "conflict",
    "failed",
    "drift",
)


def render_html(status: Status) -> str:
    """The status page: server-rendered, no asset from outside (styles inline), readable
    without JavaScript."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("syncd", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    now = status.generated_at
    return env.get_template("status.html").render(
        summary=status.summary,
        pairs=status.ordered(),
        sources=sorted(status.sources.items()),
        replicas=status.replicas,
        me=status.me,
        generated=now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        rel=lambda dt: relative(dt, now),
        utc=lambda dt: dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "-",
        class_help=CLASS_HELP,
        count_keys=COUNT_KEYS,
    )
