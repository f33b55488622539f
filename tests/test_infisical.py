"""The ``infisical`` source against a stateful fake of Infisical's API: what a sync reads,
token renewal, failed reads that delete nothing, shared reads, webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from syncd.config import load_config
from syncd.connector import ConnectorContext
from syncd.connectors.sources.infisical import (
    CLOCK_KEY,
    WALL_CLOCK_KEY,
    InfisicalSource,
    InfisicalSourceConfig,
)
from syncd.errors import ConfigErrors, SourceReadError
from syncd.testing import FakeClock, Workbench
from syncd.webhooks import sign_infisical, verify_infisical
from tests.fakes.infisical_api import FakeInfisical

HOST = "https://infisical.example.com"
CLIENT_SECRET = "client-secret-value-1"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def source_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "infisical",
        "host": HOST,
        "project_id": "proj-1",
        "environment": "prod",
        "auth": {
            "method": "universal_auth",
            "client_id": "client-id-1",
            "client_secret": CLIENT_SECRET,
        },
    }
    body.update(over)
    return body


def make_source(
    fake: FakeInfisical, clock: FakeClock, name: str = "inf", **over: Any
) -> InfisicalSource:
    cfg = InfisicalSourceConfig.model_validate(source_body(**over))
    ctx = ConnectorContext(
        extra={
            "httpx_transport": fake.transport,
            CLOCK_KEY: clock.monotonic,
            WALL_CLOCK_KEY: clock.wall,
        }
    )
    return InfisicalSource(name, cfg, ctx)


def values(snap: Any) -> dict[str, str]:
    return {e.ref: e.value.reveal() for e in snap.entries}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeInfisical:
    f = FakeInfisical(clock=clock.monotonic, wall=clock.wall, token_ttl=3600)
    f.set("DB_URL", "postgres://db/prod")
    f.set("API_KEY", "api-key-value")
    f.set("STRIPE_KEY", "sk_live_123", path="/payments")
    f.set("WEBHOOK_SIGNING", "whsec_456", path="/payments/hooks")
    f.set("DEV_ONLY", "dev-value", env="dev")
    return f


# ---------------------------------------------------------------------------- reading


async def test_reads_the_folder_with_environment_and_one_call(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    src = make_source(fake, clock, include_imports=False)
    snap = await src.snapshot()
    assert values(snap) == {"DB_URL": "postgres://db/prod", "API_KEY": "api-key-value"}
    assert snap.environment == "prod" and snap.complete
    assert (fake.logins, fake.lists) == (1, 1)
    listed = fake.calls[-1]
    assert listed.path == "/api/v4/secrets"
    assert listed.params == {
        "projectId": "proj-1",
        "environment": "prod",
        "secretPath": "/",
        "recursive": "false",
        "include_imports": "false",
        "expandSecretReferences": "true",
    }
    await src.aclose()


async def test_recursive_paths_are_relative_to_the_configured_folder(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    fake.set("ROOT_ONLY", "x", path="/")
    src = make_source(fake, clock, recursive=True, include_imports=False)
    assert values(await src.snapshot()) == {
        "DB_URL": "postgres://db/prod",
        "API_KEY": "api-key-value",
        "ROOT_ONLY": "x",
        "payments/STRIPE_KEY": "sk_live_123",
        "payments/hooks/WEBHOOK_SIGNING": "whsec_456",
    }
    nested = make_source(fake, clock, path="/payments/", recursive=True, include_imports=False)
    snap = await nested.snapshot()
    assert values(snap) == {"STRIPE_KEY": "sk_live_123", "hooks/WEBHOOK_SIGNING": "whsec_456"}
    assert {e.path for e in snap.entries} == {"", "hooks/"}
    assert fake.calls[-1].params["secretPath"] == "/payments"


async def test_imports_merge_with_the_projects_own_values_first(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    fake.set("API_KEY", "shared-api-key", env="dev", path="/shared")
    fake.set("LOG_LEVEL", "debug", env="dev", path="/shared")
    fake.set("LOG_LEVEL", "info", env="dev", path="/common")
    fake.set("REGION", "eu-west-1", env="dev", path="/common")
    fake.add_import(from_env="dev", from_path="/shared")
    fake.add_import(from_env="dev", from_path="/common")
    got = values(await make_source(fake, clock).snapshot())
    assert got["API_KEY"] == "api-key-value"  # the project's own value wins
    assert got["LOG_LEVEL"] == "info"  # the later import wins over the earlier one
    assert got["REGION"] == "eu-west-1"
    assert fake.calls[-1].params["include_imports"] == "true"
    off = values(await make_source(fake, clock, include_imports=False).snapshot())
    assert "REGION" not in off and "LOG_LEVEL" not in off


async def test_references_are_expanded_by_infisical_when_asked(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    fake.set("HOST", "db.internal")
    fake.set("DSN", "postgres://${HOST}/app?key=${dev.DEV_ONLY}")
    expanded = values(await make_source(fake, clock).snapshot())
    assert expanded["DSN"] == "postgres://db.internal/app?key=dev-value"
    raw = values(await make_source(fake, clock, expand_references=False).snapshot())
    assert raw["DSN"] == "postgres://${HOST}/app?key=${dev.DEV_ONLY}"
    assert fake.calls[-1].params["expandSecretReferences"] == "false"


async def test_personal_overrides_are_not_synced(fake: FakeInfisical, clock: FakeClock) -> None:
    src = make_source(fake, clock, include_imports=False)
    data = {
        "secrets": [
            {"secretKey": "A", "secretValue": "shared-a", "type": "shared", "secretPath": "/"},
            {"secretKey": "A", "secretValue": "mine", "type": "personal", "secretPath": "/"},
        ]
    }
    assert [(e.key, e.value.reveal()) for e in src._entries(data)] == [("A", "shared-a")]


async def test_old_instances_without_v4_fall_back_to_v3_raw_once(clock: FakeClock) -> None:
    fake = FakeInfisical(clock=clock.monotonic, wall=clock.wall, v4=False)
    fake.set("A", "value-a")
    src = make_source(fake, clock)
    assert values(await src.snapshot()) == {"A": "value-a"}
    assert values(await src.snapshot()) == {"A": "value-a"}
    paths = [c.path for c in fake.calls if c.method == "GET"]
    assert paths == ["/api/v4/secrets", "/api/v3/secrets/raw", "/api/v3/secrets/raw"]
    assert fake.calls[-1].params["workspaceId"] == "proj-1"


# ---------------------------------------------------------------------------- tokens


async def test_token_is_kept_and_renewed_before_it_expires(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    src = make_source(fake, clock)
    for _ in range(5):
        await src.snapshot()
        clock.advance(60)
    assert fake.logins == 1  # not per request
    # near the end of the hour the token is renewed before Infisical would refuse it: the
    # renewal answers a new token, and syncd switches to it (no second login)
    clock.advance(3600 - 5 * 60 - 30)
    await src.snapshot()
    assert (fake.logins, fake.renewals) == (1, 1)
    assert fake.calls[-2].path == "/api/v1/auth/token/renew"
    assert fake.calls[-1].token == fake.issued(2) != fake.issued(1)


@pytest.mark.parametrize("expired_status", [403, 401])
async def test_a_token_rejected_mid_run_is_renewed_once(
    clock: FakeClock, expired_status: int
) -> None:
    fake = FakeInfisical(clock=clock.monotonic, wall=clock.wall, expired_status=expired_status)
    fake.set("A", "value-a")
    src = make_source(fake, clock)
    await src.snapshot()
    fake.expire_tokens()  # revoked or shortened TTL: Infisical refuses it before we expect
    assert values(await src.snapshot()) == {"A": "value-a"}
    assert fake.logins == 2
    assert fake.lists == 3  # the refused call, then one retry with the new token


async def test_a_token_refused_again_after_renewal_fails_the_read_without_looping(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    src = make_source(fake, clock)
    await src.snapshot()
    fake.token_ttl = 0  # every new token is already expired
    fake.expire_tokens()
    with pytest.raises(SourceReadError, match="HTTP 403") as err:
        await src.snapshot()
    assert "TokenError" in str(err.value)
    assert fake.logins == 2 and fake.lists == 3


async def test_refused_credentials_fail_the_read(fake: FakeInfisical, clock: FakeClock) -> None:
    fake.client_secret = "rotated"
    with pytest.raises(SourceReadError, match=r"login.*HTTP 401") as err:
        await make_source(fake, clock).snapshot()
    assert CLIENT_SECRET not in str(err.value)
    assert fake.lists == 0


async def test_plain_token_auth_never_logs_in(fake: FakeInfisical, clock: FakeClock) -> None:
    fake.static_tokens.add("st.service-token-value")
    src = make_source(fake, clock, auth={"method": "token", "token": "st.service-token-value"})
    assert "DB_URL" in values(await src.snapshot())
    assert fake.logins == 0 and fake.calls[-1].token == "st.service-token-value"
    fake.static_tokens.clear()
    with pytest.raises(SourceReadError, match="HTTP 403"):
        await src.snapshot()
    assert fake.lists == 2  # nothing to renew: no retry


# ---------------------------------------------------------------------------- failures


SECRET_VALUES = ("postgres://db/prod", "api-key-value", CLIENT_SECRET)


@pytest.mark.parametrize(
    ("inject", "message"),
    [
        (lambda f: f.fail_next(1, 503), "HTTP 503"),
        (lambda f: f.fail_next(1, 500), "HTTP 500"),
        (lambda f: f.fail_next(1, 429, {"Retry-After": "30"}), "rate limited.*retry after 30s"),
        (lambda f: f.timeout_next(1), "timed out"),
        (lambda f: f.truncate_next(1), "not complete JSON"),
        (lambda f: setattr(f, "hide_values", True), "hidden from this identity"),
        (lambda f: setattr(f, "down", True), "HTTP 503"),
    ],
    ids=["503", "500", "429", "timeout", "truncated", "hidden", "outage"],
)
async def test_failed_or_partial_answers_raise_source_read_error(
    fake: FakeInfisical, clock: FakeClock, inject: Any, message: str
) -> None:
    src = make_source(fake, clock)
    await src.snapshot()
    inject(fake)
    with pytest.raises(SourceReadError, match=message) as err:
        await src.snapshot()
    for value in SECRET_VALUES:
        assert value not in str(err.value)
    assert "access-token" not in str(err.value)


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"secret": []},
        {"secrets": [{"secretValue": "orphan-value"}]},
        {"secrets": [{"secretKey": "A"}]},
        {"secrets": [{"secretKey": "A", "secretValue": "v", "secretPath": "/elsewhere"}]},
        {"secrets": [{"secretKey": "A", "secretValue": "v", "secretPath": "/app/../x"}]},
        {"secrets": [{"secretKey": "A", "secretValue": "v", "secretPath": 5}]},
        {"secrets": []},  # include_imports asked, no imports list
        {"secrets": [], "imports": [{"secretPath": "/x"}]},
    ],
)
def test_answers_not_of_the_documented_shape_are_partial(
    fake: FakeInfisical, clock: FakeClock, answer: Any
) -> None:
    src = make_source(fake, clock, path="/app", recursive=True)
    with pytest.raises(SourceReadError) as err:
        src._entries(answer)
    assert "orphan-value" not in str(err.value)


async def test_unknown_project_environment_or_folder_fail_with_a_hint(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    for over in ({"project_id": "nope"}, {"environment": "qa"}, {"path": "/missing"}):
        with pytest.raises(SourceReadError, match=r"HTTP 404.*check project_id"):
            await make_source(fake, clock, **over).snapshot()


# ---------------------------------------------------------------------------- config


def test_config_validation_names_what_is_wrong() -> None:
    cfg = InfisicalSourceConfig.model_validate(source_body(host="https://eu.infisical.com/api/"))
    assert cfg.host == "https://eu.infisical.com" and cfg.path == "/"
    assert InfisicalSourceConfig.model_validate(source_body(path="app/payments/")).path == (
        "/app/payments"
    )
    bad = [
        source_body(host="eu.infisical.com"),
        source_body(path="/app/../other"),
        source_body(auth={"method": "universal_auth", "client_id": "x"}),
        source_body(auth={"method": "token"}),
        source_body(auth={"method": "token", "token": "t", "client_id": "x"}),
        source_body(auth={"method": "oidc", "token": "t"}),
        source_body(recursiv=True),
    ]
    for body in bad:
        with pytest.raises(ValueError):
            InfisicalSourceConfig.model_validate(body)


def test_yaml_config_with_a_secret_file_and_errors_with_paths(tmp_path: Path) -> None:
    (tmp_path / "client_secret").write_text("from-a-file\n")
    doc: dict[str, Any] = {
        "version": 1,
        "sources": {
            "inf": {
                "type": "infisical",
                "project_id": "${PROJECT}",
                "environment": "prod",
                "auth": {"client_id": "cid", "client_secret_file": "client_secret"},
                "webhook_secret": "${HOOK}",
                "webhook_tolerance": "2m",
            }
        },
        "destinations": {"env": {"type": "dotenv", "path": "./.env"}},
        "syncs": [{"name": "s", "from": "inf", "to": ["env"]}],
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path, env={"PROJECT": "proj-1", "HOOK": "hook-secret"})
    src = cfg.sources["inf"].config
    assert src.auth.client_secret.get_secret_value() == "from-a-file"
    assert src.webhook_tolerance == 120 and src.host == "https://app.infisical.com"
    assert src.include_imports and src.expand_references and not src.recursive
    assert {"from-a-file", "hook-secret"} <= cfg.secrets

    doc["sources"]["inf"]["auth"] = {"method": "universal_auth", "client_id": "cid"}
    doc["sources"]["inf"]["expand"] = True
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigErrors) as err:
        load_config(path, env={"PROJECT": "p", "HOOK": "h"})
    text = str(err.value)
    assert "sources.inf.auth" in text and "client_secret" in text
    assert "sources.inf.expand: unknown key" in text


def test_example_fans_one_environment_out_to_six_destinations() -> None:
    doc = yaml.safe_load((EXAMPLES / "infisical.yaml").read_text())
    kinds = {d["type"] for d in doc["destinations"].values()}
    assert kinds == {
        "aws-parameter-store",
        "aws-secrets-manager",
        "github",
        "gitlab",
        "vercel",
        "netlify",
    }
    (source,) = doc["sources"].values()
    assert source["type"] == "infisical"
    assert all(set(s["to"]) == set(doc["destinations"]) for s in doc["syncs"])
    # the source section validates as written
    env = {
        "INFISICAL_PROJECT_ID": "proj-1",
        "INFISICAL_CLIENT_ID": "cid",
        "INFISICAL_CLIENT_SECRET": "csecret",
        "INFISICAL_WEBHOOK_SECRET": "hook",
    }
    from syncd.config import apply_file_twins, expand_env

    errors: list[Any] = []
    body = expand_env(source, env, ["sources", "x"], errors)
    body = apply_file_twins(body, InfisicalSourceConfig, [], EXAMPLES, errors)
    assert not errors
    InfisicalSourceConfig.model_validate(body)


def test_example_loads_whole_once_every_destination_is_installed() -> None:
    env = {
        name: "x"
        for name in (
            "INFISICAL_PROJECT_ID",
            "INFISICAL_CLIENT_ID",
            "INFISICAL_CLIENT_SECRET",
            "INFISICAL_WEBHOOK_SECRET",
            "GITHUB_TOKEN",
            "GITLAB_TOKEN",
            "VERCEL_TOKEN",
            "NETLIFY_TOKEN",
            "NETLIFY_ACCOUNT_ID",
            "NETLIFY_SITE_ID",
        )
    }
    try:
        cfg = load_config(EXAMPLES / "infisical.yaml", env=env)
    except ConfigErrors as exc:
        if any("not part of this build" in str(e) for e in exc.errors):
            pytest.skip("a destination connector of the example is not built yet")
        raise
    assert len(cfg.destinations) == 6


# ---------------------------------------------------------------------------- scope


def test_scope_key_is_the_read_and_not_the_name(fake: FakeInfisical, clock: FakeClock) -> None:
    a = make_source(fake, clock, "a", recursive=True)
    b = make_source(fake, clock, "b", recursive=True, path="/")
    assert a.scope_key() == b.scope_key()
    others = [
        make_source(fake, clock, "c", recursive=False),
        make_source(fake, clock, "c", recursive=True, include_imports=False),
        make_source(fake, clock, "c", recursive=True, expand_references=False),
        make_source(fake, clock, "c", recursive=True, environment="dev"),
        make_source(fake, clock, "c", recursive=True, path="/payments"),
        make_source(fake, clock, "c", recursive=True, project_id="proj-2"),
        make_source(fake, clock, "c", recursive=True, host="https://eu.infisical.com"),
    ]
    assert len({a.scope_key(), *(o.scope_key() for o in others)}) == 1 + len(others)


# ---------------------------------------------------------------------------- webhooks


def infisical_delivery(secret: str, ms: int) -> tuple[dict[str, str], bytes]:
    """A webhook as Infisical sends it: the body carries the timestamp, the header carries
    ``t=<ms>;<hex HMAC-SHA256 of the body>``."""
    payload = {
        "event": "secrets.modified",
        "project": {"workspaceId": "proj-1", "environment": "prod", "secretPath": "/"},
        "timestamp": ms,
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-infisical-signature": f"t={ms};{sig}"}, body


def test_webhook_signature_as_infisical_computes_it(fake: FakeInfisical, clock: FakeClock) -> None:
    src = make_source(fake, clock, webhook_secret="hook-secret", webhook_tolerance="5m")
    now_ms = int(clock.wall() * 1000)
    headers, body = infisical_delivery("hook-secret", now_ms)
    assert src.verify_webhook(headers, body)
    assert src.verify_webhook({"X-Infisical-Signature": headers["x-infisical-signature"]}, body)
    assert sign_infisical("hook-secret", body, now_ms) == headers["x-infisical-signature"]

    wrong, _ = infisical_delivery("other-secret", now_ms)
    assert not src.verify_webhook(wrong, body)
    assert not src.verify_webhook(headers, body.replace(b"prod", b"dev!"))
    assert not src.verify_webhook({}, body)
    assert not src.verify_webhook({"x-infisical-signature": "garbage"}, body)
    assert not src.verify_webhook({"x-infisical-signature": "t=1;\u00e9\u00e9"}, body)
    # a replayed body with a fresh header timestamp: the signed body timestamp differs
    fresh = f"t={now_ms + 1000};{headers['x-infisical-signature'].split(';')[1]}"
    assert not src.verify_webhook({"x-infisical-signature": fresh}, body)
    # stale, inside and at the edge of the window
    clock.advance(299)
    assert src.verify_webhook(headers, body)
    clock.advance(2)
    assert not src.verify_webhook(headers, body)
    # no webhook_secret: nothing verifies
    assert not make_source(fake, clock).verify_webhook(headers, body)


def test_verify_infisical_accepts_bodies_without_a_timestamp() -> None:
    body = b'{"event":"test"}'
    header = sign_infisical("s3cret", body, 1_700_000_000_000)
    assert verify_infisical("s3cret", {"x-infisical-signature": header}, body, 60, lambda: 1.7e9)
    assert not verify_infisical("s3cret", {"x-infisical-signature": header}, body, 60, lambda: 2e9)


# ---------------------------------------------------------------------------- sync


def infisical_workbench(tmp_path: Path, fake_factory: Any, **source: Any) -> Workbench:
    out = tmp_path / "out" / ".env"
    wb = Workbench(tmp_path, {"env": {"type": "dotenv", "path": str(out)}})
    fake = fake_factory(wb.clock)
    wb.context_extra.update(
        {
            "httpx_transport": fake.transport,
            CLOCK_KEY: wb.clock.monotonic,
            WALL_CLOCK_KEY: wb.clock.wall,
        }
    )
    doc = yaml.safe_load(wb.config_file.read_text())
    doc["sources"] = {"src": source_body(**source)}
    wb.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    wb.fake = fake  # type: ignore[attr-defined]
    wb.out = out  # type: ignore[attr-defined]
    return wb


def dotenv(path: Path) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(path, interpolate=False).items()}


async def test_sync_from_infisical_into_dotenv_survives_expiry_and_outage(
    tmp_path: Path,
) -> None:
    def factory(clock: FakeClock) -> FakeInfisical:
        f = FakeInfisical(clock=clock.monotonic, wall=clock.wall, token_ttl=600)
        f.set("DB_URL", "postgres://db/prod")
        f.set("API_KEY", "api-key-value")
        f.set("STRIPE_KEY", "sk_live_123", path="/payments")
        return f

    wb = infisical_workbench(tmp_path, factory, recursive=True)
    fake: FakeInfisical = wb.fake  # type: ignore[attr-defined]
    out: Path = wb.out  # type: ignore[attr-defined]

    first = await wb.pair()
    assert first.ok, first.error
    assert dotenv(out) == {
        "DB_URL": "postgres://db/prod",
        "API_KEY": "api-key-value",
        "STRIPE_KEY": "sk_live_123",
    }

    # a change in Infisical after the token expired: renewed, then landed
    wb.clock.advance(700)
    fake.set("API_KEY", "rotated-api-key")
    second = await wb.pair()
    assert second.ok and second.counts.get("updated") == 1
    assert dotenv(out)["API_KEY"] == "rotated-api-key"
    assert fake.logins == 2

    # an outage: the engine retries with backoff, then gives up; nothing is deleted
    before = out.read_bytes()
    fake.down = True
    sleeps = len(wb.clock.sleeps)
    failed = await wb.pair()
    assert failed.result == "source-failed"
    assert "HTTP 503" in (failed.error or "")
    assert out.read_bytes() == before
    assert len(wb.clock.sleeps) > sleeps  # backed off between attempts, on the fake clock

    # a 5xx and a timeout that pass within the retries: the run still converges
    fake.down = False
    fake.fail_next(1, 502)
    fake.timeout_next(1)
    fake.delete("DB_URL")
    recovered = await wb.pair()
    assert recovered.ok
    assert dotenv(out) == {"API_KEY": "rotated-api-key", "STRIPE_KEY": "sk_live_123"}

    # a token revoked mid-run: one renewal, the run goes on
    fake.expire_tokens()
    fake.set("NEW_KEY", "new-value")
    assert (await wb.pair()).ok
    assert dotenv(out)["NEW_KEY"] == "new-value"
    for value in ("rotated-api-key", "sk_live_123", CLIENT_SECRET):
        assert value.encode() not in wb.state_bytes()


def one_secret(clock: FakeClock) -> FakeInfisical:
    f = FakeInfisical(clock=clock.monotonic, wall=clock.wall)
    f.set("A", "value-a")
    return f


async def test_syncs_sharing_a_scope_share_one_read(tmp_path: Path) -> None:
    wb = infisical_workbench(tmp_path, one_secret)
    fake: FakeInfisical = wb.fake  # type: ignore[attr-defined]
    doc = yaml.safe_load(wb.config_file.read_text())
    doc["sources"]["src-again"] = source_body()
    doc["destinations"]["env2"] = {"type": "dotenv", "path": str(tmp_path / "out2" / ".env")}
    doc["syncs"].append({"name": "second", "from": "src-again", "to": ["env2"]})
    wb.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    results = await wb.once()
    assert all(r.ok for r in results)
    assert fake.lists == 1
    assert dotenv(tmp_path / "out2" / ".env") == {"A": "value-a"}


# ---------------------------------------------------------------------------- tags


async def test_tags_filter_the_listing_and_select_by_tag(
    fake: FakeInfisical, clock: FakeClock, tmp_path: Path
) -> None:
    fake.tag("DB_URL", "backend")
    fake.tag("API_KEY", "backend", "public-api")
    src = make_source(fake, clock, tags=["backend"], include_imports=False)
    snap = await src.snapshot()
    assert values(snap) == {"DB_URL": "postgres://db/prod", "API_KEY": "api-key-value"}
    assert fake.calls[-1].params["tagSlugs"] == "backend"
    assert {e.key: e.tags for e in snap.entries} == {
        "DB_URL": ("backend",),
        "API_KEY": ("backend", "public-api"),
    }
    # the tags are there for include/exclude: tag:<glob>
    wb = Workbench(
        tmp_path,
        {"env": {"type": "dotenv", "path": "out.env"}},
        sync={"from": "inf", "include": ["tag:backend"], "exclude": ["tag:public-*"]},
        extra_sources={"inf": source_body(tags=["backend"], include_imports=False)},
        context_extra={
            "httpx_transport": fake.transport,
            CLOCK_KEY: clock.monotonic,
            WALL_CLOCK_KEY: clock.wall,
        },
    )
    (result,) = await wb.once()
    assert result.ok
    assert dotenv_values(tmp_path / "out.env") == {"DB_URL": "postgres://db/prod"}


# ---------------------------------------------------------------------------- service tokens


async def test_a_service_token_finds_its_project_and_single_scope(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    token = "st.6512f3a2.9b1c0d4e5f.a1b2c3d4"
    fake.service_tokens[token] = ("proj-1", [("prod", "/payments")])
    body = source_body(auth={"method": "token", "token": token})
    del body["project_id"], body["environment"]
    cfg = InfisicalSourceConfig.model_validate(body)
    src = InfisicalSource("inf", cfg, ConnectorContext(extra={"httpx_transport": fake.transport}))
    snap = await src.snapshot()
    assert values(snap) == {"STRIPE_KEY": "sk_live_123"}
    assert snap.environment == "prod"
    assert [c.path for c in fake.calls] == ["/api/v2/service-token", "/api/v3/secrets/raw"]
    assert fake.calls[-1].params["workspaceId"] == "proj-1"
    assert fake.calls[-1].params["secretPath"] == "/payments"
    await src.snapshot()
    assert fake.count("/service-token") == 1  # read once
    assert fake.logins == 0


async def test_a_service_token_with_several_scopes_needs_the_environment(
    fake: FakeInfisical, clock: FakeClock
) -> None:
    token = "st.6512f3a2.9b1c0d4e5f.b2"
    fake.service_tokens[token] = ("proj-1", [("prod", "/"), ("dev", "/")])
    body = source_body(auth={"method": "token", "token": token})
    del body["project_id"], body["environment"]
    src = InfisicalSource(
        "inf",
        InfisicalSourceConfig.model_validate(body),
        ConnectorContext(extra={"httpx_transport": fake.transport}),
    )
    with pytest.raises(SourceReadError, match="has 2 scopes; set environment"):
        await src.snapshot()


def test_validate_warns_that_service_tokens_are_deprecated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncd.cli import main

    cfg = tmp_path / "syncd.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "sources": {
                    "inf": {"type": "infisical", "auth": {"method": "token", "token": "${T}"}}
                },
                "destinations": {"d": {"type": "dotenv", "path": "out.env"}},
                "syncs": [{"name": "s", "from": "inf", "to": ["d"]}],
            }
        )
    )
    import os

    os.environ["T"] = "st.abc.def.ghi"
    try:
        assert main(["-c", str(cfg), "validate"]) == 0
    finally:
        del os.environ["T"]
    out = capsys.readouterr()
    assert "warning: sources.inf: auth.token is a service token" in out.err
    assert "st.abc.def.ghi" not in out.out + out.err
    # without a service token, project_id and environment are required
    os.environ["T"] = "plain-access-token"
    try:
        assert main(["-c", str(cfg), "validate"]) == 2
    finally:
        del os.environ["T"]
    assert "expected project_id and environment" in capsys.readouterr().err


async def test_many_syncs_sharing_a_scope_share_one_read_past_the_plan_cap(
    tmp_path: Path,
) -> None:
    """Reads and plans run a few at a time (the memory bound): syncs past that cap still
    share the pass's one read, and the snapshot is let go once the last of them is done."""
    from syncd.engine import PLANS_AT_ONCE

    wb = infisical_workbench(tmp_path, one_secret)
    fake: FakeInfisical = wb.fake  # type: ignore[attr-defined]
    doc = yaml.safe_load(wb.config_file.read_text())
    extra = PLANS_AT_ONCE * 2 + 1
    for i in range(extra):
        doc["sources"][f"src-{i}"] = source_body()
        doc["destinations"][f"env-{i}"] = {"type": "dotenv", "path": str(tmp_path / f"o{i}.env")}
        doc["syncs"].append({"name": f"s{i}", "from": f"src-{i}", "to": [f"env-{i}"]})
    wb.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    results = await wb.once()
    assert len(results) == extra + 1 and all(r.ok for r in results)
    assert fake.lists == 1
    assert all(dotenv(tmp_path / f"o{i}.env") == {"A": "value-a"} for i in range(extra))
