"""The GitHub Actions secrets destination against a stateful fake of GitHub's REST API,
driven through the real PyGithub client, the engine, the planner and the executor.

The fake decrypts every value it receives with its own private key: the assertions are on
the plaintext a workflow would see."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from syncd.connector import ConnectorContext
from syncd.connectors.github import (
    MAX_VALUE_BYTES,
    GitHubConfig,
    GitHubDestination,
    rate_limit_delay,
)
from syncd.errors import AuthError, ConfigErrors, PermanentError
from syncd.testing.conformance import DestinationConformance
from syncd.testing.workbench import Workbench
from tests.fakes.github_server import FakeGitHub, ScopeKey, env_scope, org_scope, repo_scope

REPO = "acme/api"
ENV = "production"
ORG = "acme"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    server = FakeGitHub().start()
    server.add_repo(REPO, environments=[ENV])
    server.add_repo("acme/web")
    server.add_repo("acme/worker")
    server.add_org(ORG)
    yield server
    server.stop()


def gh(fake: FakeGitHub, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "github",
        "api_url": fake.url,
        "token": "${GH_TOKEN}",
        "scope": "repository",
        "repository": REPO,
    }
    body.update(options)
    return {k: v for k, v in body.items() if v is not None}


def bench(
    fake: FakeGitHub,
    root: Path,
    source: dict[str, str],
    dest: dict[str, Any] | None = None,
    **kw: Any,
) -> Workbench:
    wb = Workbench(
        root,
        {"gh": dest or gh(fake)},
        source=source,
        env={"GH_TOKEN": fake.token},
        **kw,
    )
    # the fake enforces GitHub's 80 writes a minute on the workbench's clock
    fake.clock = wb.clock.monotonic
    return wb


def keys(n: int) -> dict[str, str]:
    return {f"KEY_{i:03d}": f"value-{i:03d}-3f9c1e" for i in range(n)}


# ---------------------------------------------------------------------------- conformance


class GitHubHarness:
    def __init__(self, fake: FakeGitHub, scope: ScopeKey, destination: dict[str, Any]) -> None:
        self.fake = fake
        self.scope = scope
        self.destination = destination
        self.env = {"GH_TOKEN": fake.token}
        self.context_extra: dict[str, Any] = {}

    def stored(self) -> dict[str, str]:
        return self.fake.plaintext(self.scope)

    def put_unmanaged(self, key: str, value: str) -> None:
        self.fake.put_plain(self.scope, key, value)

    def throttle(self, calls: int) -> None:
        self.fake.throttle(calls, "secondary", seconds=2)


class TestRepositoryConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, fake: FakeGitHub) -> GitHubHarness:
        return GitHubHarness(fake, repo_scope(REPO), gh(fake))


class TestEnvironmentConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, fake: FakeGitHub) -> GitHubHarness:
        dest = gh(fake, scope="environment", environment=ENV)
        return GitHubHarness(fake, env_scope(REPO, ENV), dest)


class TestOrganizationConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, fake: FakeGitHub) -> GitHubHarness:
        dest = gh(
            fake,
            scope="organization",
            repository=None,
            organization=ORG,
            visibility="selected",
            selected_repositories=["api"],
        )
        return GitHubHarness(fake, org_scope(ORG), dest)


# ---------------------------------------------------------------------------- call counts


async def test_unchanged_run_calls_nothing_and_one_changed_key_of_100_is_one_write(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    source = keys(100)
    wb = bench(fake, tmp_path, source)
    first = await wb.pair()
    assert first.result == "ok", first.problems or first.error
    assert first.counts["created"] == 100
    assert fake.plaintext(repo_scope(REPO)) == source
    # the public key is fetched once for the whole run, not once per secret
    assert fake.calls("GET", "/public-key") == 1
    assert fake.calls("PUT") == 100

    seen = len(fake.requests)
    second = await wb.pair()
    assert second.counts.get("unchanged") == 100
    assert second.counts.get("writes", 0) == 0
    assert len(fake.requests) == seen, "between drift checks an unchanged run calls nothing"

    changed = dict(source, KEY_042="rotated-value-77aa")
    wb.set_source(changed)
    before = Counter(wb.hooks.calls)
    third = await wb.pair()
    assert third.counts.get("updated") == 1
    assert third.counts.get("writes") == 1
    assert fake.calls("PUT") == 101
    assert fake.plaintext(repo_scope(REPO)) == changed
    made = wb.hooks.calls - before
    assert made == Counter(
        {("gh", "public_key", "ok"): 1, ("gh", "put", "ok"): 1, ("gh", "get", "ok"): 1}
    )

    # a drift check lists (100 a page: one call) and writes nothing
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    puts = fake.calls("PUT")
    fourth = await wb.pair()
    assert fourth.plan is not None and fourth.plan.listed
    assert fourth.counts.get("writes", 0) == 0
    assert fake.calls("PUT") == puts


async def test_listing_follows_pagination(fake: FakeGitHub, tmp_path: Path) -> None:
    for i in range(250):
        fake.put_plain(org_scope(ORG), f"FOREIGN_{i:03d}", "x")
    dest = gh(fake, scope="organization", repository=None, organization=ORG, visibility="all")
    wb = bench(
        fake,
        tmp_path,
        {"FOREIGN_249": "x", "NEW_KEY": "new-value"},
        dest,
        sync={"on_conflict": "skip"},
    )
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    # the last page held FOREIGN_249: it was seen, so it is skipped, not overwritten
    assert pair.counts == {"created": 1, "skipped": 1, "writes": 1, "retries": 0}
    assert wb.hooks.calls[("gh", "list", "ok")] == 3
    assert [r.query.get("page") for r in fake.requests if r.path.endswith("/secrets")] == [
        "1",
        "2",
        "3",
    ]


# ---------------------------------------------------------------------------- drift


async def test_out_of_band_edit_and_deletion_are_repaired_as_drift(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    source = {"ALPHA": "alpha-value-1", "BETA": "beta-value-2", "GAMMA": "gamma-value-3"}
    wb = bench(fake, tmp_path, source)
    await wb.pair()
    scope = repo_scope(REPO)
    fake.put_plain(scope, "ALPHA", "edited-by-hand")
    fake.remove(scope, "BETA")

    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    pair = await wb.pair()
    assert pair.result == "ok"
    assert pair.counts["drift"] == 2
    assert pair.counts["updated"] == 1 and pair.counts["created"] == 1
    assert pair.counts["writes"] == 2
    reasons = {c.key: c.reason for c in pair.plan.changes} if pair.plan else {}
    assert "out of band" in reasons["ALPHA"] and "out of band" in reasons["BETA"]
    assert fake.plaintext(scope) == source

    # repaired for good: the next drift check writes nothing
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    again = await wb.pair()
    assert again.counts.get("writes", 0) == 0
    assert again.counts.get("drift", 0) == 0


# ---------------------------------------------------------------------------- names and limits


async def test_names_are_checked_before_any_call(fake: FakeGitHub, tmp_path: Path) -> None:
    source = {
        "db_url": "lower-case-value",
        "DB_URL": "upper-case-value",
        "GITHUB_SHA": "reserved-prefix",
        "github_token": "reserved-prefix-lower",
        "1ST_KEY": "starts-with-digit",
        "has-dash": "dash",
        "_private": "underscore-first",
        "Mixed_Case9": "mixed",
    }
    wb = bench(fake, tmp_path, source)
    pair = await wb.pair()
    assert pair.result == "failed"
    problems = {(k, kind): msg for k, kind, msg in pair.problems}
    blocked = sorted(k for k, kind in problems if kind == "blocked")
    # each named as the source names it, with GitHub's upper-cased name where it differs
    assert blocked == [
        "1ST_KEY",
        "DB_URL",
        "GITHUB_SHA",
        "db_url (as DB_URL)",
        "github_token (as GITHUB_TOKEN)",
        "has-dash (as HAS-DASH)",
    ]
    collisions = [c for c in pair.plan.changes if c.key == "DB_URL"] if pair.plan else []
    assert len(collisions) == 2
    for c in collisions:
        assert "'db_url'" in c.reason and "'DB_URL'" in c.reason
    assert "GITHUB_" in problems[("GITHUB_SHA", "blocked")]
    assert "invalid key name" in problems[("has-dash (as HAS-DASH)", "blocked")]
    # GitHub stores names upper-case; only the two valid keys were sent
    assert fake.plaintext(repo_scope(REPO)) == {
        "_PRIVATE": "underscore-first",
        "MIXED_CASE9": "mixed",
    }
    assert fake.calls("PUT") == 2


async def test_value_at_48_kb_syncs_and_one_byte_more_is_blocked(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    at_limit = "é" * (MAX_VALUE_BYTES // 2)  # two bytes each: exactly 49,152 bytes
    over = "x" * (MAX_VALUE_BYTES + 1)
    wb = bench(fake, tmp_path, {"AT_LIMIT": at_limit, "OVER_LIMIT": over})
    pair = await wb.pair()
    assert [(k, kind) for k, kind, _ in pair.problems] == [("OVER_LIMIT", "blocked")]
    assert "49153 bytes, over the 49152-byte limit" in pair.problems[0][2]
    assert fake.plaintext(repo_scope(REPO)) == {"AT_LIMIT": at_limit}
    assert fake.calls("PUT") == 1


async def test_repository_count_limit_is_checked_at_plan_time(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    scope = repo_scope(REPO)
    for i in range(98):
        fake.put_plain(scope, f"OTHER_{i:02d}", "set by hand")
    wb = bench(fake, tmp_path, {"NEW_A": "a", "NEW_B": "b", "NEW_C": "c", "NEW_D": "d"})
    pair = await wb.pair()
    blocked = [(k, msg) for k, kind, msg in pair.problems if kind == "blocked"]
    assert [k for k, _ in blocked] == ["NEW_C", "NEW_D"]
    assert all("over its limit of 100" in msg for _, msg in blocked)
    assert len(fake.plaintext(scope)) == 100
    assert fake.throttled == 0 and fake.calls("PUT") == 2


def test_count_limit_follows_the_scope(fake: FakeGitHub) -> None:
    ctx = ConnectorContext()
    org = GitHubConfig.model_validate(
        gh(
            fake,
            scope="organization",
            repository=None,
            organization=ORG,
            visibility="all",
            token="t",
        )
    )
    env = GitHubConfig.model_validate(gh(fake, scope="environment", environment=ENV, token="t"))
    assert GitHubDestination("gh", org, ctx).capabilities.max_keys == 1000
    assert GitHubDestination("gh", env, ctx).capabilities.max_keys == 100
    assert GitHubDestination.capabilities.max_keys == 100
    unpaced = GitHubConfig.model_validate({**gh(fake, token="t"), "writes_per_minute": None})
    assert GitHubDestination("gh", unpaced, ctx).capabilities.writes_per_minute is None
    assert GitHubDestination("gh", env, ctx).capabilities.writes_per_minute == 60.0


# ---------------------------------------------------------------------------- rate limits


@pytest.mark.parametrize(
    ("kind", "seconds", "low", "high"),
    [
        ("primary", 120, 117.0, 120.0),  # waits until x-ratelimit-reset
        ("secondary", 7, 7.0, 7.0),  # 403 + retry-after
        ("secondary-429", 9, 9.0, 9.0),  # 429 + retry-after
        ("secondary-bare", 0, 60.0, 60.0),  # no header, quota left: at least a minute
    ],
)
async def test_rate_limits_are_waited_out_as_github_asks(
    fake: FakeGitHub, tmp_path: Path, kind: str, seconds: int, low: float, high: float
) -> None:
    wb = bench(fake, tmp_path, {"ONE": "one-value"})
    await wb.pair()
    # the next run writes without listing: the throttle lands on the write path
    wb.set_source({"ONE": "one-value-rotated"})
    fake.throttle(1, kind, seconds)
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    assert pair.counts["retries"] == 1
    assert fake.plaintext(repo_scope(REPO)) == {"ONE": "one-value-rotated"}
    assert len(wb.clock.sleeps) == 1
    assert low <= wb.clock.sleeps[0] <= high
    assert wb.hooks.calls[("gh", "public_key", "throttled")] == 1


async def test_a_5xx_outage_backs_off_instead_of_waiting_for_the_hourly_reset(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    # every answer carries x-ratelimit-reset, an hour ahead, the 502s included
    wb = bench(fake, tmp_path, {"ONE": "one-value"}, {**gh(fake), "writes_per_minute": None})
    await wb.pair()
    wb.set_source({"ONE": "one-value-rotated"})
    wb.clock.sleeps.clear()
    fake.throttle(5, "server")
    pair = await wb.pair()
    assert pair.result == "failed"
    [(key, _, message)] = pair.problems
    assert key == "ONE"
    assert "HTTP 502" in message and message.endswith("(gave up after 5 attempts)")
    assert wb.clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    # the next run writes it
    pair = await wb.pair()
    assert pair.result == "ok"
    assert fake.plaintext(repo_scope(REPO)) == {"ONE": "one-value-rotated"}


async def test_a_listing_throttled_by_the_primary_limit_waits_for_the_reset(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    fake.throttle(1, "primary", 30)
    wb = bench(fake, tmp_path, {"ONE": "one-value"})
    pair = await wb.pair()
    assert pair.result == "ok"
    assert 27.0 <= wb.clock.sleeps[0] <= 30.0
    assert wb.hooks.calls[("gh", "list", "throttled")] == 1


async def test_writes_are_paced_under_the_content_creation_limit(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    source = keys(100)
    wb = bench(fake, tmp_path, source)
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    assert fake.throttled == 0, "syncd must never trip the secondary limit by itself"
    assert fake.max_writes_per_minute() <= 60
    assert len(fake.plaintext(repo_scope(REPO))) == 100


def test_destinations_sharing_a_token_share_one_pacer(fake: FakeGitHub, tmp_path: Path) -> None:
    dests = {
        "api": gh(fake),
        "web": gh(fake, repository="acme/web"),
        "other": gh(fake, repository="acme/worker", token="${OTHER_TOKEN}"),
    }
    wb = Workbench(
        tmp_path,
        dests,
        source={"K": "v"},
        env={"GH_TOKEN": fake.token, "OTHER_TOKEN": "ghp_other"},
    )
    engine = wb.engine()
    lim = engine.executor.limiter
    api, web, other = (engine.destination(n) for n in ("api", "web", "other"))
    assert lim(api) is lim(web)
    assert lim(api) is not lim(other)
    pacer = lim(api).pacer
    assert pacer is not None and pacer.interval == 1.0


def test_rate_limit_delay_follows_githubs_rules() -> None:
    now = 1_700_000_000.0
    clock = lambda: now  # noqa: E731
    assert rate_limit_delay({"retry-after": "12"}, clock) == 12.0
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 90)}
    assert rate_limit_delay(reset, clock) == 90.0
    # a reset header with quota left is the primary window, not this throttle
    assert (
        rate_limit_delay({"x-ratelimit-remaining": "17", "x-ratelimit-reset": "1"}, clock) == 60.0
    )
    assert rate_limit_delay({}, clock) == 60.0


# ---------------------------------------------------------------------------- organization


def org_dest(fake: FakeGitHub, **options: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scope": "organization",
        "repository": None,
        "organization": ORG,
        "visibility": "selected",
        "selected_repositories": ["api"],
    }
    base.update(options)
    return gh(fake, **base)


async def test_org_update_keeps_the_repositories_a_secret_is_shared_with(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    scope = org_scope(ORG)
    api, worker = fake.repo_id("acme/api"), fake.repo_id("acme/worker")
    wb = bench(fake, tmp_path, {"SHARED": "v1"}, org_dest(fake))
    await wb.pair()
    assert fake.secret(scope, "SHARED").visibility == "selected"
    assert fake.secret(scope, "SHARED").selected == [api]

    # someone grants acme/worker access by hand; the value then changes in the source
    fake.secret(scope, "SHARED").selected.append(worker)
    wb.set_source({"SHARED": "v2"})
    pair = await wb.pair()
    assert pair.counts.get("updated") == 1
    assert fake.plaintext(scope) == {"SHARED": "v2"}
    assert fake.secret(scope, "SHARED").selected == [api, worker]


async def test_org_adopt_and_new_selected_repositories_only_add_access(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    scope = org_scope(ORG)
    api, web, worker = (fake.repo_id(n) for n in ("acme/api", "acme/web", "acme/worker"))
    fake.put_plain(scope, "EXISTING", "old", visibility="selected", selected=[worker])
    dest = org_dest(fake, selected_repositories=["api", "acme/web"])
    wb = bench(fake, tmp_path, {"EXISTING": "new"}, dest)
    pair = await wb.pair()
    assert pair.counts.get("adopted") == 1
    assert fake.plaintext(scope) == {"EXISTING": "new"}
    assert fake.secret(scope, "EXISTING").selected == [worker, api, web]


async def test_org_visibility_all_is_sent(fake: FakeGitHub, tmp_path: Path) -> None:
    wb = bench(
        fake,
        tmp_path,
        {"EVERYWHERE": "v"},
        org_dest(fake, visibility="all", selected_repositories=None),
    )
    await wb.pair()
    assert fake.secret(org_scope(ORG), "EVERYWHERE").visibility == "all"


async def test_an_unknown_selected_repository_fails_the_keys_not_the_access(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    wb = bench(fake, tmp_path, {"A": "1", "B": "2"}, org_dest(fake, selected_repositories=["nope"]))
    pair = await wb.pair()
    assert pair.result == "failed"
    assert {k for k, kind, _ in pair.problems} == {"A", "B"}
    assert all("acme/nope not found" in msg for _, _, msg in pair.problems)
    assert fake.calls("PUT") == 0


# ---------------------------------------------------------------------------- auth and endpoints


def app_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


async def test_github_app_authentication(fake: FakeGitHub, tmp_path: Path) -> None:
    private, public = app_key()
    fake.setup_app(app_id=4242, public_key_pem=public, installation_id=77)
    (tmp_path / "app.pem").write_text(private)
    dest = gh(
        fake,
        token=None,
        app_id="${APP_ID}",
        private_key_file="app.pem",
        installation_id=77,
        scope="environment",
        environment=ENV,
    )
    wb = Workbench(tmp_path, {"gh": dest}, source={"FROM_APP": "app-value"}, env={"APP_ID": "4242"})
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    assert fake.plaintext(env_scope(REPO, ENV)) == {"FROM_APP": "app-value"}
    # one installation token for the whole run
    assert fake.calls("POST", "/access_tokens") == 1
    assert wb.hooks.calls[("gh", "token", "ok")] == 1


async def test_github_app_with_the_wrong_installation_fails_the_pair(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    private, public = app_key()
    fake.setup_app(app_id=4242, public_key_pem=public, installation_id=77)
    dest = gh(fake, token=None, app_id=4242, private_key=private, installation_id=78)
    wb = Workbench(tmp_path, {"gh": dest}, source={"K": "v"})
    pair = await wb.pair()
    assert pair.result == "error"
    assert "installation 78 token" in (pair.error or "")
    assert private.splitlines()[1] not in (pair.error or "")
    assert fake.calls("PUT") == 0


async def test_an_unusable_app_private_key_fails_the_pair_without_echoing_it(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    bogus = "-----BEGIN RSA PRIVATE KEY-----\nbm90LWEta2V5LTkzMWE=\n-----END RSA PRIVATE KEY-----"
    dest = gh(fake, token=None, app_id=4242, private_key=bogus, installation_id=77)
    wb = Workbench(tmp_path, {"gh": dest}, source={"K": "v"})
    pair = await wb.pair()
    assert pair.result == "error"
    assert "could not sign a JWT" in (pair.error or "")
    assert "bm90LWEta2V5LTkzMWE" not in (pair.error or "")
    assert fake.requests == []


async def test_bad_token_fails_the_pair_after_one_call(fake: FakeGitHub, tmp_path: Path) -> None:
    wb = Workbench(tmp_path, {"gh": gh(fake)}, source={"K": "v"}, env={"GH_TOKEN": "ghp_revoked"})
    pair = await wb.pair()
    assert pair.result == "error"
    assert pair.error is not None and "AuthError" in pair.error and "HTTP 401" in pair.error
    assert len(fake.requests) == 1


async def test_github_enterprise_server_base_path(tmp_path: Path) -> None:
    ghes = FakeGitHub(prefix="/api/v3").start()
    try:
        ghes.add_repo(REPO)
        assert ghes.url.endswith("/api/v3")
        wb = bench(ghes, tmp_path, {"ON_PREM": "value"})
        pair = await wb.pair()
        assert pair.result == "ok", pair.problems or pair.error
        assert ghes.plaintext(repo_scope(REPO)) == {"ON_PREM": "value"}
    finally:
        ghes.stop()


async def test_a_secret_already_deleted_counts_as_deleted(fake: FakeGitHub, tmp_path: Path) -> None:
    wb = bench(fake, tmp_path, {"KEEP": "k", "DROP": "d", "MORE": "m"})
    await wb.pair()
    fake.remove(repo_scope(REPO), "DROP")
    wb.set_source({"KEEP": "k", "MORE": "m"})
    pair = await wb.pair()
    assert pair.result == "ok"
    assert pair.counts.get("deleted") == 1
    assert "DROP" not in wb.records("gh")


async def test_a_scope_out_of_sight_is_not_taken_for_deleted_secrets(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    wb = bench(fake, tmp_path, {"KEEP": "k", "DROP": "d", "MORE": "m"})
    await wb.pair()
    del fake.repos[REPO]  # GitHub answers 404 for a repository the token can no longer see
    wb.set_source({"KEEP": "k", "MORE": "m"})
    pair = await wb.pair()
    assert pair.result == "failed"
    assert [(k, kind) for k, kind, _ in pair.problems] == [("DROP", "failed")]
    assert "not found, or the credentials cannot see it" in pair.problems[0][2]
    assert "DROP" in wb.records("gh")
    assert fake.calls("DELETE") == 0


async def test_check_reports_a_missing_target(fake: FakeGitHub) -> None:
    ctx = ConnectorContext()
    ok = GitHubDestination("gh", GitHubConfig.model_validate(gh(fake, token=fake.token)), ctx)
    await ok.check()
    await ok.aclose()
    cfg = GitHubConfig.model_validate(gh(fake, token=fake.token, repository="acme/missing"))
    missing = GitHubDestination("gh", cfg, ctx)
    with pytest.raises(AuthError, match="not found"):
        await missing.check()
    await missing.aclose()
    cfg = GitHubConfig.model_validate(
        org_dest(fake, token=fake.token, selected_repositories=["gone"])
    )
    bad_repo = GitHubDestination("gh", cfg, ctx)
    with pytest.raises(PermanentError, match="acme/gone not found"):
        await bad_repo.check()
    await bad_repo.aclose()


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"token": None}, "credentials are missing"),
        ({"app_id": 1, "private_key": "k", "installation_id": 2}, "not both"),
        ({"token": None, "app_id": 1, "private_key": "k"}, "also needs installation_id"),
        ({"repository": None}, "scope repository needs repository"),
        ({"repository": "no-slash"}, "expected OWNER/NAME"),
        ({"scope": "environment"}, "needs environment"),
        ({"environment": "production"}, "only used with scope: environment"),
        ({"scope": "organization", "repository": None}, "needs organization"),
        ({"scope": "organization", "repository": None, "organization": "acme"}, "needs visibility"),
        (
            {
                "scope": "organization",
                "repository": None,
                "organization": "acme",
                "visibility": "all",
                "selected_repositories": ["api"],
            },
            "only used with visibility: selected",
        ),
        (
            {
                "scope": "organization",
                "repository": None,
                "organization": "acme",
                "visibility": "selected",
                "selected_repositories": ["other/api"],
            },
            "not in organization",
        ),
        ({"visibility": "all"}, "only used with scope: organization"),
        ({"scope": "team"}, "Input should be"),
        ({"api_url": "api.github.com"}, "expected an http(s) URL"),
        ({"tokn": "typo"}, "unknown key"),
        ({"writes_per_minute": 0}, "above 0"),
    ],
)
def test_config_errors_name_the_destination(
    fake: FakeGitHub, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    body = gh(fake)
    for k, v in options.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    wb = Workbench(tmp_path, {"gh": body}, source={}, env={"GH_TOKEN": "t"})
    with pytest.raises(ConfigErrors) as err:
        wb.config()
    text = str(err.value)
    assert "destinations.gh" in text
    assert message in text


def test_token_file_twin_and_api_url_default(fake: FakeGitHub, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("ghp_from_file\n")
    body = gh(fake, token=None, token_file="token")
    body.pop("api_url")
    wb = Workbench(tmp_path, {"gh": body}, source={})
    cfg = wb.config().destinations["gh"].config
    assert cfg.token.get_secret_value() == "ghp_from_file"
    assert cfg.api_url == "https://api.github.com"
    assert "ghp_from_file" not in repr(cfg)
