"""Prometheus metrics for ``syncd run``: one registry per daemon, fed by engine hooks.

Labels carry sync, destination, source, operation and outcome names only, never a key
name or a value: key names are unbounded (a label per key would grow without limit) and
the daemon's metrics must be safe to scrape from anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import (
    Info as InfoMetric,
)

from syncd import __version__
from syncd.engine import Hooks, PairResult
from syncd.model import Action, Snapshot

RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
PROPAGATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

# what each written action is called once it landed or failed
_OUTCOME_OF_UNWRITTEN = {
    Action.ADOPT: "recorded",
    Action.SKIP: "skipped",
    Action.BLOCKED: "blocked",
    Action.CONFLICT: "conflict",
}


class Metrics:
    """Every metric the daemon exports, in a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "syncd_runs",
            "Runs of a (sync, destination) pair by result "
            "(ok, failed, refused, source-failed, error).",
            ["sync", "destination", "result"],
            registry=r,
        )
        self.items = Counter(
            "syncd_items",
            "Keys acted on, by planned action and outcome "
            "(applied, failed, recorded, skipped, blocked, conflict).",
            ["sync", "destination", "action", "outcome"],
            registry=r,
        )
        self.api_calls = Counter(
            "syncd_api_calls",
            "Platform API calls by destination, operation and status.",
            ["destination", "operation", "status"],
            registry=r,
        )
        self.retries = Counter(
            "syncd_retries",
            "Retried platform calls (throttling, timeouts, 5xx) by destination.",
            ["destination"],
            registry=r,
        )
        self.run_duration = Histogram(
            "syncd_run_duration_seconds",
            "Wall time of one (sync, destination) run: plan and apply.",
            ["sync", "destination"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.propagation = Histogram(
            "syncd_propagation_seconds",
            "From a webhook or a changed file source to the destination run done.",
            ["sync", "destination"],
            buckets=PROPAGATION_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "Unix time of the last run of a (sync, destination) pair that ended ok.",
            ["sync", "destination"],
            registry=r,
        )
        self.source_reads = Counter(
            "syncd_source_reads",
            "Source reads by result (ok, failed); a failed read changes nothing.",
            ["source", "result"],
            registry=r,
        )
        self.triggers = Counter(
            "syncd_triggers",
            "Sync runs started, by what started them (start, interval, webhook, file, reload).",
            ["sync", "reason"],
            registry=r,
        )
        self.coalesced = Counter(
            "syncd_coalesced_triggers",
            "Triggers folded into a run already pending or in flight.",
            ["sync"],
            registry=r,
        )
        self.webhooks = Counter(
            "syncd_webhooks",
            "Webhook requests by route kind and result "
            "(accepted, unauthorized, unknown, too-large, draining).",
            ["source", "kind", "result"],
            registry=r,
        )
        self.reloads = Counter(
            "syncd_config_reloads",
            "Config reloads (SIGHUP) by result (ok, invalid).",
            ["result"],
            registry=r,
        )
        self.in_flight = Gauge(
            "syncd_runs_in_flight",
            "Sync runs executing right now.",
            registry=r,
        )
        InfoMetric("syncd_build", "The running syncd version.", registry=r).info(
            {"version": __version__}
        )

        self.pairs_owned = Gauge(
            "syncd_pairs_owned",
            "(sync, destination) pairs this replica runs (its share of the syncs)",
            ["replica"],
            registry=r,
        )
        self.replicas = Gauge(
            "syncd_replicas",
            "Live replicas sharing the state store, as this replica sees them",
            registry=r,
        )
        self.redeploys = Counter(
            "syncd_redeploys",
            "Redeploys (builds, restarts) started after a change, by result (ok, failed)",
            ["destination", "result"],
            registry=r,
        )
        self.notifications = Counter(
            "syncd_notifications",
            "Notifications (failure, recovery, change) by result: sent or failed",
            ["result"],
            registry=r,
        )
        self.lock_waits = Counter(
            "syncd_lock_waits",
            "Pair runs that waited for a pair another process was running",
            ["sync", "destination"],
            registry=r,
        )
        self.busy = Counter(
            "syncd_busy",
            "Pair runs skipped because another process held the pair",
            ["sync", "destination"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsHooks(Hooks):
    """Feeds :class:`Metrics` from the engine.

    ``changed_at[sync]`` holds the monotonic time a change was first noticed (webhook
    receipt, file change) while a run that carries it is in flight; each pair of that run
    then observes its propagation latency when it ends ok.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.wall = wall
        self.changed_at: dict[str, float] = {}
        # source -> (ok, when, keys) of its last read, for the status page
        self.last_reads: dict[str, tuple[bool, datetime, int | None]] = {}

    def api_call(self, destination: str, operation: str, status: str) -> None:
        self.metrics.api_calls.labels(destination, operation, status).inc()

    def retry(self, destination: str) -> None:
        self.metrics.retries.labels(destination).inc()

    def source_read(self, source: str, ok: bool, snapshot: Snapshot | None) -> None:
        self.metrics.source_reads.labels(source, "ok" if ok else "failed").inc()
        when = datetime.fromtimestamp(self.wall(), UTC)
        self.last_reads[source] = (ok, when, len(snapshot) if snapshot is not None else None)

    def after_change(self, sync: str, destination: str, result: str) -> None:
        self.metrics.redeploys.labels(destination, result).inc()

    def notification(self, result: str) -> None:
        self.metrics.notifications.labels(result).inc()

    def lock_wait(self, sync: str, destination: str) -> None:
        self.metrics.lock_waits.labels(sync, destination).inc()

    def busy(self, sync: str, destination: str) -> None:
        self.metrics.busy.labels(sync, destination).inc()

    def pair_done(self, result: PairResult, seconds: float) -> None:
        m = self.metrics
        m.runs.labels(result.sync, result.destination, result.result).inc()
        m.run_duration.labels(result.sync, result.destination).observe(max(0.0, seconds))
        for (action, outcome), n in item_counts(result).items():
            m.items.labels(result.sync, result.destination, action, outcome).inc(n)
        if result.ok:
            m.last_success.labels(result.sync, result.destination).set(self.wall())
            since = self.changed_at.get(result.sync)
            if since is not None:
                m.propagation.labels(result.sync, result.destination).observe(
                    max(0.0, self.clock() - since)
                )


def item_counts(result: PairResult) -> dict[tuple[str, str], int]:
    """(action, outcome) → count for one pair run. Unchanged keys are not counted."""
    out: dict[tuple[str, str], int] = {}
    if result.plan is None:
        return out
    applied = {id(c) for c in result.outcome.applied} if result.outcome else set()
    failed = {id(f.change) for f in result.outcome.failed} if result.outcome else set()
    for c in result.plan.changes:
        outcome: str | None = None
        if c.write:
            if id(c) in applied:
                outcome = "applied"
            elif id(c) in failed:
                outcome = "failed"
        else:
            outcome = _OUTCOME_OF_UNWRITTEN.get(c.action)
        if outcome is not None:
            k = (str(c.action), outcome)
            out[k] = out.get(k, 0) + 1
    return out
