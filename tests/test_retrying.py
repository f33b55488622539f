"""The retry delay, decided in one place: status x headers -> the server's wait, the policy that
turns it (or backoff) into the sleep or gives up, and each connector's reading of its
platform's real answers. Then the whole path on an injected clock: a platform answering 500
costs seconds of backoff, not the rate-limit window; a throttle is waited out exactly as
asked."""

from __future__ import annotations

import email.utils
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from github import GithubException
from gitlab.exceptions import GitlabHttpError

from syncd.cli import summarize
from syncd.connector import ConnectorContext
from syncd.connectors._http import WALL_CLOCK_KEY, classify_response
from syncd.connectors.github import classify_github, rate_limit_delay
from syncd.connectors.gitlab import GitLabDestination
from syncd.connectors.sources.infisical import CLOCK_KEY, InfisicalSource, InfisicalSourceConfig
from syncd.errors import AuthError, ConnectorError, RateLimited, RetryableError, SourceReadError
from syncd.retrying import RetryPolicy, server_wait
from syncd.testing.workbench import Workbench
from tests.fakes.infisical_api import FakeInfisical
from tests.fakes.netlify_api import NetlifyAPI
from tests.fakes.vercel_api import FakeVercel

NOW = 1_800_000_000.0


def now() -> float:
    return NOW


# ---------------------------------------------------------------------- real header sets


def vercel(remaining: int) -> dict[str, str]:
    # Vercel's REST API: on every answer; the reset in UTC epoch seconds
    return {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(NOW + 47)),
    }


def netlify(remaining: int) -> dict[str, str]:
    # Netlify's API: 500 requests a minute, on every answer, the reset in epoch seconds;
    # no Retry-After is documented
    return {
        "X-RateLimit-Limit": "500",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(NOW + 60)),
    }


def github(remaining: int, **extra: str) -> dict[str, str]:
    # GitHub: x-ratelimit-* of the primary (hourly) window on every answer
    return {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-used": str(5000 - remaining),
        "x-ratelimit-reset": str(int(NOW + 1800)),
        "x-ratelimit-resource": "core",
        **extra,
    }


def gitlab(remaining: int, **extra: str) -> dict[str, str]:
    # GitLab's Rack Attack throttle: RateLimit-* (reset in epoch seconds) and, on a 429,
    # Retry-After
    return {
        "RateLimit-Name": "throttle_authenticated_api",
        "RateLimit-Limit": "2000",
        "RateLimit-Observed": str(2000 - remaining),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(int(NOW + 30)),
        "RateLimit-ResetTime": email.utils.formatdate(NOW + 30, usegmt=True),
        **extra,
    }


def infisical(remaining: int, **extra: str) -> dict[str, str]:
    # Infisical's @fastify/rate-limit: on every answer, the reset in seconds from now;
    # retry-after on a 429
    return {
        "x-ratelimit-limit": "600",
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": "42",
        **extra,
    }


HTTP_DATE = email.utils.formatdate(NOW + 20, usegmt=True)

# ---------------------------------------------------------------------- the server's wait

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
    ("infisical 429", 429, infisical(0, **{"retry-after": "42"}), None, 42.0),
    ("infisical 500", 500, infisical(598), None, None),
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


# ---------------------------------------------------------------------- each connector's reading

SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


def http_answer(status: int, headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {"code": "x", "message": "y"}})


def rest(status: int, headers: dict[str, str], _message: str) -> ConnectorError:
    """Vercel and Netlify: the shared REST classification."""
    return classify_response(http_answer(status, headers), "write", now)


def github_error(status: int, headers: dict[str, str], message: str) -> ConnectorError:
    return classify_github(GithubException(status, {"message": message}, headers), "write", now)


def gitlab_error(status: int, headers: dict[str, str], message: str) -> ConnectorError:
    config = GitLabDestination.Config.model_validate({"token": "t", "project": "acme/api"})
    dest = GitLabDestination("gl", config, ConnectorContext(extra={WALL_CLOCK_KEY: now}))
    return dest._classify(GitlabHttpError(message, status), "write", headers)


def infisical_error(status: int, headers: dict[str, str], _message: str) -> SourceReadError:
    config = InfisicalSourceConfig.model_validate(
        {
            "type": "infisical",
            "project_id": "proj-1",
            "environment": "prod",
            "auth": {"method": "token", "token": "t"},
        }
    )
    source = InfisicalSource("inf", config, ConnectorContext(extra={WALL_CLOCK_KEY: now}))
    return source._failure(http_answer(status, headers), "GET /api/v4/secrets")


BACKOFF = "backoff"  # no server wait: the policy's first backoff (0.5 s at the top of jitter)
NO_RETRY = "no retry"

READINGS: list[tuple[str, Any, int, dict[str, str], str, type[Exception], float | str]] = [
    # (case, connector, status, headers, message, error class, the first wait)
    ("vercel 429", rest, 429, vercel(0), "", RateLimited, 47.0),
    (
        "vercel 429 + Retry-After",
        rest,
        429,
        {**vercel(0), "Retry-After": "60"},
        "",
        RateLimited,
        60.0,
    ),
    ("vercel 500", rest, 500, vercel(86), "", RetryableError, BACKOFF),
    ("vercel 502 after the quota ran out", rest, 502, vercel(0), "", RetryableError, 47.0),
    ("netlify 429", rest, 429, netlify(0), "", RateLimited, 60.0),
    ("netlify 500", rest, 500, netlify(55), "", RetryableError, BACKOFF),
    (
        "netlify 503 + Retry-After",
        rest,
        503,
        {**netlify(55), "Retry-After": "8"},
        "",
        RetryableError,
        8.0,
    ),
    (
        "github primary limit: 403, remaining 0",
        github_error,
        403,
        github(0),
        "API rate limit exceeded for user ID 1.",
        RateLimited,
        1800.0,
    ),
    (
        "github primary limit: 429, remaining 0",
        github_error,
        429,
        github(0),
        "API rate limit exceeded for user ID 1.",
        RateLimited,
        1800.0,
    ),
    (
        "github secondary limit: 403 + retry-after",
        github_error,
        403,
        github(4200, **{"retry-after": "60"}),
        SECONDARY,
        RateLimited,
        60.0,
    ),
    (
        "github secondary limit: 429 + retry-after",
        github_error,
        429,
        github(4200, **{"retry-after": "25"}),
        SECONDARY,
        RateLimited,
        25.0,
    ),
    (
        "github secondary limit without retry-after: a minute, not the hour's reset",
        github_error,
        403,
        github(4200),
        SECONDARY,
        RateLimited,
        60.0,
    ),
    (
        "github 403 permission answer: not a rate limit",
        github_error,
        403,
        github(4999),
        "Resource not accessible by integration",
        AuthError,
        NO_RETRY,
    ),
    ("github 502", github_error, 502, github(4999), "Server Error", RetryableError, BACKOFF),
    ("github 500", github_error, 500, github(4998), "Server Error", RetryableError, BACKOFF),
    (
        "gitlab 429 + Retry-After",
        gitlab_error,
        429,
        gitlab(0, **{"Retry-After": "30"}),
        "Retry later",
        RateLimited,
        30.0,
    ),
    (
        "gitlab 429 of an endpoint limit: quota left, reset given",
        gitlab_error,
        429,
        gitlab(595),
        "This endpoint has been requested too many times. Try again later.",
        RateLimited,
        30.0,
    ),
    (
        "gitlab 429 with no header at all",
        gitlab_error,
        429,
        {},
        "Retry later",
        RateLimited,
        BACKOFF,
    ),
    (
        "gitlab 500",
        gitlab_error,
        500,
        gitlab(1500),
        "500 Internal Server Error",
        RetryableError,
        BACKOFF,
    ),
    (
        "gitlab 503 + Retry-After",
        gitlab_error,
        503,
        {"Retry-After": "5"},
        "Service Unavailable",
        RetryableError,
        5.0,
    ),
    (
        "infisical 429",
        infisical_error,
        429,
        infisical(0, **{"retry-after": "42"}),
        "",
        SourceReadError,
        42.0,
    ),
    ("infisical 500", infisical_error, 500, infisical(598), "", SourceReadError, BACKOFF),
    (
        "infisical 503 + Retry-After",
        infisical_error,
        503,
        {**infisical(598), "retry-after": "3"},
        "",
        SourceReadError,
        3.0,
    ),
]


@pytest.mark.parametrize(
    ("connector", "status", "headers", "message", "kind", "first_wait"),
    [c[1:] for c in READINGS],
    ids=[c[0] for c in READINGS],
)
def test_each_connector_reads_its_platforms_answers(
    connector: Any,
    status: int,
    headers: dict[str, str],
    message: str,
    kind: type[Exception],
    first_wait: float | str,
) -> None:
    err = connector(status, headers, message)
    assert type(err) is kind
    if first_wait == NO_RETRY:
        return
    asked: float | None = getattr(err, "retry_after", None)
    throttled = isinstance(err, RateLimited) or getattr(err, "throttled", False)
    policy = RetryPolicy(max_server_delay=3600.0)
    delay, why = policy.next_try(1, asked, lambda: 1.0, throttled=throttled, spent=0.0)
    assert why is None
    assert delay == (0.5 if first_wait == BACKOFF else first_wait)
    assert asked == (None if first_wait == BACKOFF else first_wait)


# ---------------------------------------------------------------------- the policy


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


BUDGET = "gave up after {n} attempts: the retry budget of 120s (defaults.retry_budget) is spent"

GIVE_UP: list[tuple[str, int, float | None, bool, float, float, str | None]] = [
    # (case, attempt, the server's wait, throttled, spent, delay, why)
    ("a first backoff", 1, None, False, 0.0, 0.5, None),
    ("the attempt limit", 5, None, False, 7.5, 8.0, "gave up after 5 attempts"),
    (
        "a throttle also stops at the attempt limit",
        5,
        30.0,
        True,
        0.0,
        30.0,
        "gave up after 5 attempts",
    ),
    ("backoff within the budget", 3, None, False, 118.0, 2.0, None),
    ("backoff past the budget", 3, None, False, 118.5, 2.0, BUDGET.format(n=3)),
    (
        "a 503's Retry-After counts against the budget",
        2,
        90.0,
        False,
        60.0,
        90.0,
        BUDGET.format(n=2),
    ),
    ("a throttle is not counted against the budget", 2, 600.0, True, 100.0, 600.0, None),
    (
        "a wait over the ceiling fails at once",
        1,
        901.0,
        True,
        0.0,
        901.0,
        "the platform asked to wait 901s",
    ),
]


@pytest.mark.parametrize(
    ("attempt", "server", "throttled", "spent", "delay", "why"),
    [c[1:] for c in GIVE_UP],
    ids=[c[0] for c in GIVE_UP],
)
def test_when_the_policy_gives_up(
    attempt: int, server: float | None, throttled: bool, spent: float, delay: float, why: str | None
) -> None:
    policy = RetryPolicy()  # 5 attempts, a 900 s ceiling, a 2 min budget
    assert policy.give_up(attempt, server, throttled=throttled, spent=spent, delay=delay) == why


# ---------------------------------------------------------------------- end to end


def bench(
    root: Path, destination: dict[str, Any], transport: httpx.MockTransport, **defaults: Any
) -> Workbench:
    wb = Workbench(
        root,
        {"dest": destination},
        source={"ONLY_KEY": "only-value-5xx-1"},
        defaults=defaults or None,
        context_extra={"httpx_transport": transport},
    )
    # the connectors read reset times against the workbench's clock, as the fakes write them
    wb.context_extra[WALL_CLOCK_KEY] = wb.clock.wall
    return wb


def vercel_bench(root: Path, api: FakeVercel, **defaults: Any) -> Workbench:
    wb = bench(
        root,
        {
            "type": "vercel",
            "api_url": "https://api.vercel.test",
            "token": api.token,
            "project": api.project_name,
            "writes_per_minute": None,  # unpaced: the clock's sleeps are the retries alone
        },
        api.transport,
        **defaults,
    )
    api.wall = wb.clock.wall
    return wb


def netlify_bench(root: Path, api: NetlifyAPI, **defaults: Any) -> Workbench:
    wb = bench(
        root,
        {
            "type": "netlify",
            "api_url": "https://api.netlify.test/api/v1",
            "token": api.token,
            "account_id": api.account_id,
            "site_id": "site-1",
        },
        api.transport,
        **defaults,
    )
    api.clock = wb.clock.wall
    return wb


def record_writes(wb: Workbench, handle: Any) -> list[float]:
    """The workbench clock's reading at every write the platform receives."""
    at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            at.append(wb.clock.t)
        response: httpx.Response = handle(request)
        return response

    wb.context_extra["httpx_transport"] = httpx.MockTransport(handler)
    return at


@pytest.mark.parametrize("platform", ["vercel", "netlify"])
async def test_a_5xx_outage_costs_the_backoff_schedule_not_the_rate_limit_window(
    tmp_path: Path, platform: str
) -> None:
    api: Any = FakeVercel() if platform == "vercel" else NetlifyAPI()
    wb = (vercel_bench if platform == "vercel" else netlify_bench)(tmp_path, api)
    writes = record_writes(wb, api.handle)
    # every answer carries the platform's X-RateLimit-* headers, the 500s included
    api.fail(5, status=500, methods=["POST"])
    results = await wb.once()
    [pair] = results[0].pairs
    assert pair.result == "failed"
    [(key, kind, message)] = pair.problems
    assert key == "ONLY_KEY" and kind == "failed"
    assert "HTTP 500" in message and message.endswith("(gave up after 5 attempts)")
    # what `syncd once` prints
    out = io.StringIO()
    summarize(results, out)
    first, second = out.getvalue().splitlines()
    assert first == (
        "main → dest: failed: 0 created, 0 updated, 0 deleted, 0 adopted, 1 failed, "
        "4 retries (5 write calls)"
    )
    assert second.startswith("  main → dest: ONLY_KEY: failed: ")
    assert "HTTP 500" in second and second.endswith("(gave up after 5 attempts)")
    # the same five attempts, a few seconds apart instead of a rate-limit window (47 or
    # 60 s) apart: rng is 1.0 on the workbench, the top of each full-jitter window
    assert writes == [0.0, 0.5, 1.5, 3.5, 7.5]
    assert wb.clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    # the next run (the next interval) writes it
    pair = await wb.pair()
    assert pair.result == "ok"
    assert len(writes) == 6


async def test_a_vercel_429_is_waited_out_until_its_reset_exactly(tmp_path: Path) -> None:
    api = FakeVercel(reset_after=30)
    wb = vercel_bench(tmp_path, api)
    writes = record_writes(wb, api.handle)
    api.throttle(2, methods=["POST"])
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    assert wb.clock.sleeps == [30.0, 30.0]
    assert writes == [0.0, 30.0, 60.0]


@pytest.mark.parametrize(
    ("retry_after", "reset_in", "wait"),
    [(None, 20.0, 21.0), (7.0, None, 7.0), (7.0, 20.0, 7.0)],
    ids=["reset header", "Retry-After", "Retry-After wins over the reset"],
)
async def test_a_netlify_429_is_waited_out_exactly_as_it_says(
    tmp_path: Path, retry_after: float | None, reset_in: float | None, wait: float
) -> None:
    api = NetlifyAPI()
    wb = netlify_bench(tmp_path, api)
    # the fake's reset is a whole second past reset_in, as epoch seconds round up
    api.throttle(2, retry_after=retry_after, reset_in=reset_in, methods=["POST"])
    pair = await wb.pair()
    assert pair.result == "ok"
    assert wb.clock.sleeps == [wait, wait]


async def test_throttle_waits_are_not_counted_against_the_retry_budget(tmp_path: Path) -> None:
    api = FakeVercel(reset_after=45)
    wb = vercel_bench(tmp_path, api, retry_budget="1m")
    api.throttle(3, methods=["POST"])
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    assert wb.clock.sleeps == [45.0, 45.0, 45.0]


async def test_the_retry_budget_ends_a_keys_backoff(tmp_path: Path) -> None:
    api = FakeVercel()
    wb = vercel_bench(tmp_path, api, retry_budget="2s")
    api.fail(5, status=503, methods=["POST"])
    pair = await wb.pair()
    [(_, _, message)] = pair.problems
    assert "retry budget of 2s (defaults.retry_budget) is spent" in message
    assert wb.clock.sleeps == [0.5, 1.0]  # a third wait (2 s more) would pass the budget
    assert sum(wb.clock.sleeps) <= 2.0


# ---------------------------------------------------------------------- a source


def infisical_bench(tmp_path: Path) -> tuple[Workbench, FakeInfisical]:
    wb = Workbench(tmp_path, {"env": {"type": "dotenv", "path": str(tmp_path / "out.env")}})
    fake = FakeInfisical(clock=wb.clock.monotonic, wall=wb.clock.wall)
    wb.context_extra.update(
        {
            "httpx_transport": fake.transport,
            CLOCK_KEY: wb.clock.monotonic,
            WALL_CLOCK_KEY: wb.clock.wall,
        }
    )
    doc = yaml.safe_load(wb.config_file.read_text())
    doc["sources"] = {
        "src": {
            "type": "infisical",
            "host": "https://infisical.test",
            "project_id": fake.project_id,
            "environment": "prod",
            "auth": {
                "method": "universal_auth",
                "client_id": fake.client_id,
                "client_secret": fake.client_secret,
            },
        }
    }
    wb.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    fake.set("ONLY_KEY", "only-value-source-1")
    return wb, fake


async def test_a_source_outage_costs_backoff_and_a_retry_after_is_waited(tmp_path: Path) -> None:
    wb, fake = infisical_bench(tmp_path)
    # every answer carries x-ratelimit-reset; a 500 is no reason to wait for it
    fake.fail_next(3, status=500)
    [result] = await wb.once()
    assert "could not be read" in (result.source_error or "")
    assert "(gave up after 3 attempts)" in (result.source_error or "")
    assert wb.clock.sleeps == [0.5, 1.0]

    wb.clock.sleeps.clear()
    fake.fail_next(1, status=503, headers={"Retry-After": "4"})
    [result] = await wb.once()
    assert result.ok
    assert wb.clock.sleeps == [4.0]


async def test_a_source_asking_for_a_wait_over_the_ceiling_fails_at_once(tmp_path: Path) -> None:
    wb, fake = infisical_bench(tmp_path)
    fake.fail_next(1, status=429, headers={"Retry-After": "1800"})
    [result] = await wb.once()
    assert "(the platform asked to wait 1800s)" in (result.source_error or "")
    assert wb.clock.sleeps == []
