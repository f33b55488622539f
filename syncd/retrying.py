"""How long to wait before trying again, and whether to: decided here, once, for every
connector, every source and every destination call.

Two questions, kept apart:

- :func:`server_wait`: did the server ask for a wait? ``Retry-After`` (seconds or an HTTP
  date) on any answer. A rate-limit reset header (``X-RateLimit-Reset``,
  ``RateLimit-Reset``: when the window refills) only when the window is spent: a throttled
  answer (429, or a 403 the connector knows to be a rate limit) or a remaining quota of 0.
  Platforms send the reset header on every answer, a 500 included; it is no reason to wait
  when the quota is left. Connectors call it with the answer's status and headers and put
  the result on the error (``retry_after``); they never decide a wait themselves.
- :class:`RetryPolicy`: the wait (:meth:`~RetryPolicy.delay`: the server's wait when it gave
  one, else exponential backoff with full jitter) and whether to take it
  (:meth:`~RetryPolicy.give_up`): a server wait longer than ``max_server_delay`` fails the
  key rather than stall the run; ``attempts`` bounds the tries; backoff waits of one key
  stop once they would pass ``budget`` (``defaults.retry_budget``). Throttle waits are not
  counted against the budget: a throttle is waited out exactly as the platform asks, within
  ``max_server_delay`` and ``attempts``.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]

RESET_HEADERS = ("x-ratelimit-reset", "ratelimit-reset")
REMAINING_HEADERS = ("x-ratelimit-remaining", "ratelimit-remaining")


def _header(headers: Mapping[str, str], *names: str) -> str | None:
    lower = {k.lower(): v for k, v in headers.items()}
    for n in names:
        if n in lower:
            return lower[n].strip()
    return None


def retry_after(headers: Mapping[str, str], now: Clock = time.time) -> float | None:
    """``Retry-After`` in seconds (it may be an HTTP date), or None."""
    ra = _header(headers, "retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(ra).timestamp() - now())
    except (TypeError, ValueError):
        return None


def until_reset(headers: Mapping[str, str], now: Clock = time.time) -> float | None:
    """Seconds until the rate-limit window refills: epoch seconds (or milliseconds), or
    seconds from now when the number is small (GitLab's ``RateLimit-Reset`` is epoch,
    some APIs send a delta)."""
    reset = _header(headers, *RESET_HEADERS)
    if not reset:
        return None
    try:
        value = float(reset)
    except ValueError:
        return None
    if value > 1e12:  # milliseconds since the epoch
        value /= 1000.0
    return max(0.0, value - now()) if value > 1e9 else max(0.0, value)


def quota_spent(headers: Mapping[str, str]) -> bool:
    """The answer says the window has no request left."""
    remaining = _header(headers, *REMAINING_HEADERS)
    try:
        return remaining is not None and float(remaining) <= 0
    except ValueError:
        return False


def server_wait(
    status: int | None,
    headers: Mapping[str, str],
    now: Clock = time.time,
    *,
    throttled: bool | None = None,
) -> float | None:
    """Seconds the server asked to wait before the next try, or None (back off instead).

    ``throttled``: the connector's reading of the answer (a 403 that is GitHub's rate
    limit); by default a 429 is a throttle."""
    asked = retry_after(headers, now)
    if asked is not None:
        return asked
    spent = (status == 429 if throttled is None else throttled) or quota_spent(headers)
    return until_reset(headers, now) if spent else None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    # a server asking for a longer wait than this fails the item instead of stalling the run
    max_server_delay: float = 900.0
    # backoff (not throttle) seconds one key may spend waiting in one run
    budget: float = 120.0

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2^(attempt-1)))."""
        return float(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * rng())

    def delay(self, attempt: int, server: float | None, rng: Callable[[], float]) -> float:
        """The wait before attempt ``attempt + 1``: what the server asked, else backoff."""
        if server is not None and server > 0:
            return float(server)
        return self.backoff(attempt, rng)

    def give_up(
        self, attempt: int, server: float | None, *, throttled: bool, spent: float, delay: float
    ) -> str | None:
        """Why attempt ``attempt`` is the last (for the message), or None: wait ``delay`` and
        try again. ``server``: the wait this failure's answer asked for; ``throttled``: the
        answer was a throttle, whose wait is not counted against the budget; ``spent``: the
        counted seconds this key (or read) has waited already in this run."""
        if server is not None and server > self.max_server_delay:
            return f"the platform asked to wait {server:g}s"
        if attempt >= self.attempts:
            return f"gave up after {attempt} attempts"
        if not throttled and spent + delay > self.budget:
            return (
                f"gave up after {attempt} attempts: the retry budget of "
                f"{self.budget:g}s (defaults.retry_budget) is spent"
            )
        return None

    def next_try(
        self,
        attempt: int,
        server: float | None,
        rng: Callable[[], float],
        *,
        throttled: bool,
        spent: float,
    ) -> tuple[float, str | None]:
        """:meth:`delay` and :meth:`give_up` for one failure retried on its own."""
        delay = self.delay(attempt, server, rng)
        return delay, self.give_up(attempt, server, throttled=throttled, spent=spent, delay=delay)
