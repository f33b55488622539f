"""Telling people when a (sync, destination) pair breaks, recovers or changes.

The notifier watches each pair run the engine finishes, while the pair is still held:

- ``failure``: the pair goes from ok (or never run) to failing; a pair that stays failing
  is reminded at most every ``repeat`` (default 24h);
- ``recovery``: from failing to ok;
- ``change``: a run applied writes (key names and counts only).

What was last announced is kept in the state store and updated with a compare-and-set, so
a restart neither repeats nor loses a transition and, with several replicas, exactly one
process announces each one. Delivery runs in the background, with a timeout and retries;
it never delays or fails a sync, and is counted (``syncd_notifications_total{result}``).

Chat and mail go through Apprise URLs (``slack://``, ``msteams://``, ``mailto://``,
``discord://``, ``json://``, ...). An ``https://`` URL with ``secret`` receives the JSON body
below, signed ``X-Syncd-Signature: sha256=<hex HMAC-SHA256 of the body>`` like the generic
webhook::

    {"schema": 1, "event": "failure" | "recovery" | "change" | "test", "reminder": false,
     "sync": "...", "destination": "...", "state": "failing" | "ok", "result": "...",
     "error_class": "config" | "platform" | "source" | null, "message": "...",
     "counts": {...}, "failing_keys": [{"key", "kind", "reason"}], "time": "...",
     "replica": {"id", "host", "pid"}}

Never a value: key names, counts, reasons and error messages (already value-free) only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from syncd.config import NotifyEntry
from syncd.coordination import Identity
from syncd.logging import get_logger, redactor
from syncd.state.base import StateStore
from syncd.webhooks import sign_generic

SCHEMA = 1
FAILING = frozenset({"failed", "refused", "source-failed", "error", "lost"})
ATTEMPTS = 3
TIMEOUT = 10.0
MAX_KEYS = 20  # failing keys in one message

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Notice:
    event: str
    sync: str
    destination: str
    state: str
    result: str
    error_class: str | None
    message: str
    counts: dict[str, int]
    failing_keys: list[dict[str, str]]
    time: datetime
    replica: Identity | None
    reminder: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "event": self.event,
            "reminder": self.reminder,
            "sync": self.sync,
            "destination": self.destination,
            "state": self.state,
            "result": self.result,
            "error_class": self.error_class,
            "message": self.message,
            "counts": self.counts,
            "failing_keys": self.failing_keys[:MAX_KEYS],
            "time": self.time.astimezone(UTC).isoformat(),
            "replica": None
            if self.replica is None
            else {"id": self.replica.id, "host": self.replica.host, "pid": self.replica.pid},
        }

    @property
    def title(self) -> str:
        pair = f"{self.sync} → {self.destination}"
        if self.event == "test":
            return "syncd: test notification"
        if self.event == "recovery":
            return f"syncd: {pair} recovered"
        if self.event == "change":
            return f"syncd: {pair} changed"
        again = " (still)" if self.reminder else ""
        return f"syncd: {pair} failing{again} ({self.error_class or 'error'})"

    @property
    def body(self) -> str:
        lines = [self.message] if self.message else []
        for k in self.failing_keys[:MAX_KEYS]:
            lines.append(f"- {k['key']}: {k['kind']}: {k['reason']}")
        if len(self.failing_keys) > MAX_KEYS:
            lines.append(f"... and {len(self.failing_keys) - MAX_KEYS} more")
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()) if v)
        if counts:
            lines.append(counts)
        return "\n".join(lines)


class Notifier:
    """Decides what to announce after each pair run, and delivers it in the background."""

    def __init__(
        self,
        entries: Sequence[NotifyEntry],
        state: StateStore,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Sleep = asyncio.sleep,
        replica: Identity | None = None,
        on_result: Callable[[str], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.entries = list(entries)
        self.state = state
        self.now = now
        self.sleep = sleep
        self.replica = replica
        self.on_result = on_result or (lambda result: None)
        self.transport = transport
        self._tasks: set[asyncio.Task[bool]] = set()
        self.log = get_logger()

    # ------------------------------------------------------------------ deciding

    def pair_done(self, pr: Any) -> list[Notice]:
        """Announce what this pair run changed (call it while the pair is held)."""
        if not self.entries or pr.result in ("busy",):
            return []
        failing = pr.result in FAILING
        new = "failing" if failing else "ok"
        sync, dest = pr.sync, pr.destination
        prev, at = self.state.notified(sync, dest)
        now = self.now()
        events: list[tuple[str, bool]] = []
        if failing:
            if prev != "failing":
                if self.state.set_notified(sync, dest, "failing", now, expect=prev):
                    events.append(("failure", False))
            else:
                elapsed = (now - at).total_seconds() if at else float("inf")
                due = [e for e in self.entries if "failure" in e.on and elapsed >= e.repeat]
                if due and self.state.set_notified(sync, dest, "failing", now, expect="failing"):
                    events.append(("failure", True))
        elif prev == "failing":
            if self.state.set_notified(sync, dest, "ok", now, expect="failing"):
                events.append(("recovery", False))
        elif prev is None:
            self.state.set_notified(sync, dest, "ok", now, expect=None)
        counts = {k: int(v) for k, v in pr.counts.items() if isinstance(v, int)}
        if any(counts.get(k) for k in ("created", "updated", "deleted", "adopted")):
            events.append(("change", False))
        notices = []
        for event, reminder in events:
            notice = Notice(
                event,
                sync,
                dest,
                new,
                pr.result,
                pr.error_class if failing else None,
                self._message(pr, event),
                counts,
                [
                    {"key": p["key"], "kind": p["kind"], "reason": p["reason"]}
                    for p in pr.problem_rows
                ]
                if failing
                else [],
                now,
                self.replica,
                reminder,
            )
            notices.append(notice)
            for entry in self.entries:
                wanted = event in entry.on
                if reminder:
                    elapsed = (now - at).total_seconds() if at else float("inf")
                    wanted = wanted and elapsed >= entry.repeat
                if wanted:
                    self._spawn(entry, notice)
        return notices

    @staticmethod
    def _message(pr: Any, event: str) -> str:
        if event == "recovery":
            return f"{pr.sync} → {pr.destination} is ok again"
        if event == "change":
            return f"{pr.sync} → {pr.destination}: changes applied"
        if pr.error:
            return str(pr.error)
        n = len(pr.problem_rows)
        return f"{n} key{'s' if n != 1 else ''} failed or blocked"

    # ------------------------------------------------------------------ delivering

    def _spawn(self, entry: NotifyEntry, notice: Notice) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self.deliver(entry, notice))
        except RuntimeError:  # no loop: nothing can be sent from here
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(
        self, entry: NotifyEntry, notice: Notice, *, attempts: int = ATTEMPTS
    ) -> bool:
        """Send one notice to one entry, retrying; never raises."""
        delay = 1.0
        for attempt in range(1, attempts + 1):
            try:
                await asyncio.wait_for(self._send(entry, notice), TIMEOUT)
                self.on_result("sent")
                return True
            except Exception as exc:
                error = redactor.scrub(f"{type(exc).__name__}: {exc}")
                if attempt == attempts:
                    self.on_result("failed")
                    self.log.error(
                        "notification not delivered",
                        notice=notice.event,
                        sync=notice.sync,
                        destination=notice.destination,
                        scheme=_scheme(entry),
                        error=error,
                    )
                    return False
                await self.sleep(delay)
                delay *= 2
        return False

    async def _send(self, entry: NotifyEntry, notice: Notice) -> None:
        url = entry.url.get_secret_value()
        if entry.secret is not None:
            body = json.dumps(notice.to_json()).encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "syncd",
                "X-Syncd-Signature": sign_generic(entry.secret.get_secret_value(), body),
                "X-Syncd-Event": notice.event,
            }
            async with httpx.AsyncClient(transport=self.transport, timeout=TIMEOUT) as client:
                resp = await client.post(url, content=body, headers=headers)
            if not resp.is_success:
                raise RuntimeError(f"the receiver answered HTTP {resp.status_code}")
            return
        ok = await asyncio.to_thread(_apprise_notify, url, notice.title, notice.body)
        if not ok:
            raise RuntimeError(f"{_scheme(entry)}:// delivery failed")

    async def drain(self, timeout: float = 15.0) -> None:
        """Wait (bounded) for deliveries in flight, e.g. before ``once`` exits."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def test(self) -> list[tuple[str, bool]]:
        """``syncd notify test``: one test message to every entry; (scheme, delivered)."""
        notice = Notice(
            "test",
            "-",
            "-",
            "ok",
            "ok",
            None,
            "a test message from syncd notify test",
            {},
            [],
            self.now(),
            self.replica,
        )
        out = []
        for entry in self.entries:
            # one attempt: the person running the test wants the answer now
            out.append((_scheme(entry), await self.deliver(entry, notice, attempts=1)))
        return out


def _scheme(entry: NotifyEntry) -> str:
    return entry.url.get_secret_value().split("://", 1)[0]


def _apprise_notify(url: str, title: str, body: str) -> bool:
    try:
        import apprise
    except ImportError as exc:
        raise RuntimeError("Apprise URLs need pip install 'syncd[notify]'") from exc
    sender = apprise.Apprise()
    if not sender.add(url):
        raise RuntimeError("Apprise does not understand this URL")
    return bool(sender.notify(title=title, body=body))
