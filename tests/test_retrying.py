"""The retry delay, decided in one place: status x headers -> the server's wait, and the
policy that turns it (or backoff) into the sleep. Then the whole path on an injected clock:
a platform answering 500 costs seconds of backoff, not the rate-limit window; a throttle is
waited out exactly as asked."""

from __future__ import annotations

import email.utils
from pathlib import Path
from typing import Any

import pytest

from syncd.connectors.github import rate_limit_delay
from syncd.retrying import RetryPolicy, server_wait
from syncd.testing.workbench import Workbench
from tests.fakes.netlify_api import NetlifyAPI
from tests.fakes.vercel_api import FakeVercel

NOW = 1_800_000_000.0


def now() -> float:
    return NOW


def vercel(remaining: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(NOW + 47)),
    }


def netlify(remaining: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "500",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(NOW + 60)),
    }


def github(remaining: int, **extra: str) -> dict[str, str]:
    return {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(int(NOW + 1800)),
        "x-ratelimit-resource": "core",
        **extra,
    }


def gitlab(remaining: int, **extra: str) -> dict[str, str]:
    return {
        "RateLimit-Name": "throttle_authenticated_api",
        "RateLimit-Limit": "2000",
        "RateLimit-Observed": str(2000 - remaining),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(int(NOW + 30)),
        "RateLimit-ResetTime": email.utils.formatdate(NOW + 30, usegmt=True),
        **extra,
    }


HTTP_DATE = email.utils.formatdate(NOW + 20, usegmt=True)

CASES: list[tuple[str, int, dict[str, str], bool | None, float | None]] = [
    # (case, status, headers, the connector's throttle reading, wait)
    ("vercel 200", 200, vercel(87), None, None),
    ("vercel 429", 429, vercel(0), None, 47.0),
    ("vercel 500: quota left, no wait for the window", 500, vercel(86), None, None),
    ("netlify 200", 200, netlify(56), None, None),
    ("netlify 429", 429, netlify(0), None, 60.0),
    ("netlify 500", 500, netlify(55), None, None),
    ("github primary limit: 403, quota spent", 403, github(0), True, 1800.0),
    (
        "github secondary limit: 403 + retry-after",
        403,
        github(4000, **{"retry-after": "60"}),
        True,
        60.0,
    ),
    (
        "github secondary limit: 429 + retry-after",
        429,
        github(4000, **{"retry-after": "30"}),
        None,
        30.0,
    ),
    ("github 502 with the reset header on it", 502, github(4999), None, None),
    ("gitlab 429 with Retry-After", 429, gitlab(0, **{"Retry-After": "2"}), None, 2.0),
    ("gitlab 429 without Retry-After", 429, gitlab(0), None, 30.0),
    ("gitlab 500", 500, gitlab(1500), None, None),
    ("503 with Retry-After seconds", 503, {"Retry-After": "5"}, None, 5.0),
    ("503 with Retry-After as an HTTP date", 503, {"Retry-After": HTTP_DATE}, None, 20.0),
    ("500 whose quota is spent waits for the window", 500, vercel(0), None, 47.0),
    ("429 with nothing to go by", 429, {}, None, None),
    ("reset in milliseconds", 429, {"X-RateLimit-Reset": str(int((NOW + 9) * 1000))}, None, 9.0),
    ("reset as seconds from now", 429, {"RateLimit-Reset": "12"}, None, 12.0),
]


@pytest.mark.parametrize(
    ("status", "headers", "throttled", "wait"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_server_wait(
    status: int, headers: dict[str, str], throttled: bool | None, wait: float | None
) -> None:
    assert server_wait(status, headers, now, throttled=throttled) == wait


def test_github_rate_limit_answers() -> None:
    assert rate_limit_delay(github(0), now) == 1800.0  # primary: until the reset
    assert rate_limit_delay(github(4000, **{"retry-after": "60"}), now) == 60.0
    # a secondary limit without retry-after: at least a minute, not the hour's reset
    assert rate_limit_delay(github(4000), now) == 60.0


def test_policy_uses_the_servers_wait_exactly_else_full_jitter_backoff() -> None:
    policy = RetryPolicy()
    assert policy.delay(4, 7.0, lambda: 0.99) == 7.0  # not stretched by backoff
    assert [policy.delay(a, None, lambda: 1.0) for a in range(1, 8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
    ]
    assert policy.delay(3, None, lambda: 0.25) == 0.5  # full jitter: anywhere up to the cap
    assert policy.delay(1, 0.0, lambda: 1.0) == 0.5  # "retry now" still backs off a little


# ---------------------------------------------------------------------- end to end


def vercel_bench(root: Path, api: FakeVercel, **defaults: Any) -> Workbench:
    # unpaced, so the clock's sleeps are the retries alone
    return Workbench(
        root,
        {
            "vercel": {
                "type": "vercel",
                "api_url": "https://api.vercel.test",
                "token": "${T}",
                "project": api.project_name,
                "writes_per_minute": None,
            }
        },
        source={"ONLY_KEY": "only-value-5xx-1"},
        defaults=defaults or None,
        env={"T": api.token},
        context_extra={"httpx_transport": api.transport},
    )


def netlify_bench(root: Path, api: NetlifyAPI, **defaults: Any) -> Workbench:
    return Workbench(
        root,
        {
            "netlify": {
                "type": "netlify",
                "api_url": "https://api.netlify.test/api/v1",
                "token": "${T}",
                "account_id": api.account_id,
                "site_id": "site-1",
            }
        },
        source={"ONLY_KEY": "only-value-5xx-1"},
        defaults=defaults or None,
        env={"T": api.token},
        context_extra={"httpx_transport": api.transport},
    )


@pytest.mark.parametrize("platform", ["vercel", "netlify"])
async def test_a_5xx_outage_costs_the_backoff_schedule_not_the_rate_limit_window(
    tmp_path: Path, platform: str
) -> None:
    api: Any = FakeVercel() if platform == "vercel" else NetlifyAPI()
    wb = (vercel_bench if platform == "vercel" else netlify_bench)(tmp_path, api)
    api.fail(5, status=500, methods=["POST"])
    pair = await wb.pair()
    assert pair.result == "failed"
    [(key, kind, message)] = pair.problems
    assert key == "ONLY_KEY" and kind == "failed"
    assert "HTTP 500" in message and "gave up after 5 attempts" in message
    assert len([r for r in api.requests if r.method == "POST"]) == 5  # the same attempts
    # rng is 1.0 on the workbench: the top of each full-jitter window, 7.5 s in all
    assert wb.clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    # the next run (the next interval) writes it
    pair = await wb.pair()
    assert pair.result == "ok"


async def test_a_throttle_is_waited_out_exactly_as_the_platform_says(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = netlify_bench(tmp_path, api)
    api.throttle(2, retry_after=7.0, reset_in=None, methods=["POST"])
    pair = await wb.pair()
    assert pair.result == "ok"
    assert wb.clock.sleeps == [7.0, 7.0]


async def test_the_retry_budget_ends_a_keys_backoff(tmp_path: Path) -> None:
    api = FakeVercel()
    wb = vercel_bench(tmp_path, api, retry_budget="2s")
    api.fail(5, status=503, methods=["POST"])
    pair = await wb.pair()
    [(_, _, message)] = pair.problems
    assert "retry budget of 2s (defaults.retry_budget) is spent" in message
    assert wb.clock.sleeps == [0.5, 1.0]  # a third wait (2 s more) would pass the budget
    assert sum(wb.clock.sleeps) <= 2.0
