"""Every Infisical login method, against fakes that check what Infisical's server checks:
secrets land, one login per token lifetime, renewal switches to the new token, a refused
credential changes nothing, rotated Kubernetes tokens are read again, and no credential
shows in the logs or the state store."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from syncd.cli import main
from syncd.connector import ConnectorContext
from syncd.connectors.sources.infisical import (
    CLOCK_KEY,
    WALL_CLOCK_KEY,
    InfisicalSource,
    InfisicalSourceConfig,
)
from syncd.errors import ConfigErrors, SourceReadError
from syncd.testing import FakeClock, Workbench
from tests.fakes.identity_logins import (
    CloudMetadata,
    RsaKey,
    aws_identity,
    jwt_identity,
    kubernetes_identity,
    ldap_identity,
    router,
)
from tests.fakes.infisical_api import FakeInfisical

HOST = "https://infisical.example.com"
IDENTITY = "b1e2c3d4-0000-4000-8000-000000000001"
AWS_KEY, AWS_SECRET = "AKIAFAKETESTKEY00001", "fake-aws-secret-access-key-value"
LDAP_PASSWORD = "ldap-password-value-9"
SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.k8s-service-account-token-1.sig"


@dataclass
class Rig:
    fake: FakeInfisical
    clock: FakeClock
    metadata: CloudMetadata
    tmp: Path
    keys: dict[str, RsaKey]

    @property
    def transport(self) -> Any:
        return router(
            {
                "infisical.example.com": self.fake.handle,
                "169.254.169.254": self.metadata.handle,
                "metadata.google.internal": self.metadata.handle,
                "actions.example.com": self.metadata.handle,
            }
        )

    def source(self, auth: dict[str, Any], **over: Any) -> InfisicalSource:
        body = {
            "type": "infisical",
            "host": HOST,
            "project_id": "proj-1",
            "environment": "prod",
            "auth": auth,
            **over,
        }
        cfg = InfisicalSourceConfig.model_validate(body, context={"base_dir": str(self.tmp)})
        ctx = ConnectorContext(
            extra={
                "httpx_transport": self.transport,
                CLOCK_KEY: self.clock.monotonic,
                WALL_CLOCK_KEY: self.clock.wall,
            }
        )
        return InfisicalSource("inf", cfg, ctx)


# generated once: RSA key generation is the slow part of these tests
KEYS = {n: RsaKey(kid=f"{n}-key") for n in ("google", "azure", "github", "issuer", "sa")}


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    clock = FakeClock()
    fake = FakeInfisical(clock=clock.monotonic, wall=clock.wall, token_ttl=3600)
    fake.set("DB_URL", "postgres://db/prod-via-identity")
    keys = KEYS
    metadata = CloudMetadata(google=keys["google"], azure=keys["azure"], github=keys["github"])
    # AWS: credentials from the standard chain (the environment here); nothing from ~/.aws
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (tmp_path / "sa-token").write_text(SA_TOKEN + "\n")
    (tmp_path / "sa-key.json").write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "syncd@acme-prod.iam.gserviceaccount.com",
                "private_key_id": keys["sa"].kid,
                "private_key": keys["sa"].private_pem,
            }
        )
    )
    return Rig(fake, clock, metadata, tmp_path, keys)


Setup = Callable[[Rig], dict[str, Any]]


def _kubernetes(rig: Rig) -> dict[str, Any]:
    kubernetes_identity(rig.fake, IDENTITY, [SA_TOKEN])
    return {
        "method": "kubernetes",
        "identity_id": IDENTITY,
        "service_account_token_file": str(rig.tmp / "sa-token"),
    }


def _aws(rig: Rig) -> dict[str, Any]:
    aws_identity(
        rig.fake, IDENTITY, access_key=AWS_KEY, secret_key=AWS_SECRET, region="eu-central-1"
    )
    return {"method": "aws_iam", "identity_id": IDENTITY}


def _gcp_id_token(rig: Rig) -> dict[str, Any]:
    jwt_identity(rig.fake, IDENTITY, "gcp", rig.keys["google"], audience=IDENTITY)
    return {"method": "gcp_id_token", "identity_id": IDENTITY}


def _gcp_iam(rig: Rig) -> dict[str, Any]:
    jwt_identity(
        rig.fake,
        IDENTITY,
        "gcp",
        rig.keys["sa"],
        audience=IDENTITY,
        subject="syncd@acme-prod.iam.gserviceaccount.com",
    )
    return {
        "method": "gcp_iam",
        "identity_id": IDENTITY,
        "service_account_key_file": str(rig.tmp / "sa-key.json"),
    }


def _azure(rig: Rig) -> dict[str, Any]:
    jwt_identity(
        rig.fake, IDENTITY, "azure", rig.keys["azure"], audience="https://management.azure.com/"
    )
    return {"method": "azure", "identity_id": IDENTITY}


def _oidc_github_actions(rig: Rig) -> dict[str, Any]:
    jwt_identity(
        rig.fake,
        IDENTITY,
        "oidc",
        rig.keys["github"],
        audience="infisical",
        issuer="https://token.actions.githubusercontent.com",
    )
    return {"method": "oidc", "identity_id": IDENTITY, "audience": "infisical"}


def _jwt(rig: Rig) -> dict[str, Any]:
    jwt_identity(
        rig.fake, IDENTITY, "jwt", rig.keys["issuer"], audience="syncd", issuer="https://ci"
    )
    token = rig.keys["issuer"].sign({"aud": "syncd", "iss": "https://ci"}, ttl=86400)
    return {"method": "jwt", "identity_id": IDENTITY, "token": token}


def _ldap(rig: Rig) -> dict[str, Any]:
    ldap_identity(rig.fake, IDENTITY, {"svc-syncd": LDAP_PASSWORD})
    return {
        "method": "ldap",
        "identity_id": IDENTITY,
        "username": "svc-syncd",
        "password": LDAP_PASSWORD,
    }


def _universal(rig: Rig) -> dict[str, Any]:
    return {
        "method": "universal_auth",
        "client_id": rig.fake.client_id,
        "client_secret": rig.fake.client_secret,
    }


METHODS: dict[str, Setup] = {
    "universal_auth": _universal,
    "kubernetes": _kubernetes,
    "aws_iam": _aws,
    "gcp_id_token": _gcp_id_token,
    "gcp_iam": _gcp_iam,
    "azure": _azure,
    "oidc": _oidc_github_actions,
    "jwt": _jwt,
    "ldap": _ldap,
}


@pytest.fixture(params=sorted(METHODS))
def method(request: pytest.FixtureRequest, rig: Rig, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "oidc":
        monkeypatch.setenv(
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "https://actions.example.com/_apis/token?api-version=2.0",
        )
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", rig.metadata.github_bearer)
    return str(request.param)


def metadata_hosts(rig: Rig, auth: dict[str, Any]) -> dict[str, Any]:
    """Point the metadata options at the fakes (the options exist for this)."""
    if auth["method"] == "gcp_id_token":
        auth["gcp_metadata_url"] = "http://metadata.google.internal"
    if auth["method"] == "azure":
        auth["azure_metadata_url"] = "http://169.254.169.254"
    return auth


async def test_every_method_logs_in_once_per_token_and_renews_to_a_new_token(
    rig: Rig, method: str
) -> None:
    auth = metadata_hosts(rig, METHODS[method](rig))
    src = rig.source(auth)
    for _ in range(5):
        snap = await src.snapshot()
        rig.clock.advance(300)
    assert {e.key: e.value.reveal() for e in snap.entries} == {
        "DB_URL": "postgres://db/prod-via-identity"
    }
    assert (rig.fake.logins, rig.fake.renewals) == (1, 0)  # not a login per request
    login = next(c for c in rig.fake.calls if c.path.endswith("/login"))
    assert login.token is None  # logins carry no auth header
    # near the token's end it is renewed, and the next read uses the new token
    rig.clock.advance(3600 - 5 * 300 - 30)
    await src.snapshot()
    assert (rig.fake.logins, rig.fake.renewals) == (1, 1)
    assert rig.fake.calls[-1].token == rig.fake.issued(2)
    await src.aclose()


async def test_a_refused_renewal_logs_in_again(rig: Rig) -> None:
    auth = _kubernetes(rig)
    src = rig.source(auth)
    await src.snapshot()
    # Infisical refuses renewals of this token from now on (an administrator shortened the
    # identity's max TTL)
    rig.fake.family = dict.fromkeys(rig.fake.family, 0.0)
    rig.clock.advance(3600 - 30)
    await src.snapshot()
    assert (rig.fake.logins, rig.fake.renewals) == (2, 0)


async def test_the_max_ttl_ends_renewals_before_infisical_refuses_them(rig: Rig) -> None:
    rig.fake.max_ttl = 5000  # two hours of 3600 s tokens do not fit: one renewal, then login
    src = rig.source(_kubernetes(rig))
    await src.snapshot()
    for _ in range(10):  # a read every 590 s
        rig.clock.advance(590)
        await src.snapshot()
    assert rig.fake.renewals >= 1 and rig.fake.logins == 2
    renews_refused = [
        c for c in rig.fake.calls if c.path.endswith("/token/renew") and c.method == "POST"
    ]
    assert len(renews_refused) == rig.fake.renewals  # never a renewal Infisical refused


async def test_expires_in_that_overstates_the_token_is_not_trusted(rig: Rig) -> None:
    """The token's JWT exp is the truth: syncd renews by it, not by expiresIn."""
    rig.fake.token_ttl = 600
    src = rig.source(_kubernetes(rig))
    real_issue = rig.fake._issue
    rig.fake._issue = lambda end, stated_ttl=None: real_issue(end, stated_ttl=86400)  # type: ignore[method-assign]
    await src.snapshot()
    rig.clock.advance(600 - 30)
    await src.snapshot()
    assert rig.fake.renewals == 1  # renewed before the 600 s exp, whatever expiresIn said
    assert all(c.path != "/api/v4/secrets" or c.token in rig.fake.tokens for c in rig.fake.calls)


async def test_a_rotated_service_account_token_is_read_at_the_next_login(rig: Rig) -> None:
    kubernetes_identity(rig.fake, IDENTITY, ["rotated-token-2"])  # the old one is no longer valid
    (rig.tmp / "sa-token").write_text("rotated-token-2")
    src = rig.source(
        {
            "method": "kubernetes",
            "identity_id": IDENTITY,
            "service_account_token_file": str(rig.tmp / "sa-token"),
        }
    )
    assert len((await src.snapshot()).entries) == 1


@pytest.mark.parametrize(
    ("setup", "spoil", "status", "message"),
    [
        (_kubernetes, lambda r, a: (r.tmp / "sa-token").write_text("stolen"), 401, "token review"),
        (_ldap, lambda r, a: a.update(password="wrong-password"), 401, "Invalid credentials"),
        (_jwt, lambda r, a: a.update(token=RsaKey().sign({"aud": "syncd"})), 401, "Access denied"),
        (_gcp_iam, lambda r, a: r.fake.identities.pop(IDENTITY), 404, "not found for identity"),
    ],
    ids=["kubernetes", "ldap", "jwt", "gcp_iam-method-not-configured"],
)
async def test_a_refused_credential_fails_the_read_and_names_method_and_reason(
    rig: Rig, setup: Setup, spoil: Callable[[Rig, dict[str, Any]], Any], status: int, message: str
) -> None:
    auth = setup(rig)
    spoil(rig, auth)
    with pytest.raises(SourceReadError) as err:
        await rig.source(auth).snapshot()
    text = str(err.value)
    assert f"{auth['method']} login" in text and f"HTTP {status}" in text and message in text
    assert not any(
        c.method == "GET" for c in rig.fake.calls
    )  # nothing was read, so nothing changes


async def test_a_metadata_endpoint_that_is_not_there_fails_fast_naming_it(rig: Rig) -> None:
    auth = _azure(rig)
    auth["azure_metadata_url"] = "http://nowhere.invalid"
    with pytest.raises(
        SourceReadError,
        match=r"azure login: cannot reach the metadata endpoint "
        r"GET http://nowhere.invalid/metadata/identity/oauth2/token",
    ):
        await rig.source(auth).snapshot()


async def test_aws_region_from_instance_metadata(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    auth = _aws(rig)
    auth["aws_metadata_url"] = "http://169.254.169.254"
    await rig.source(auth).snapshot()
    assert ("PUT", "/latest/api/token") in rig.metadata.calls  # IMDSv2, with a session token
    assert ("GET", "/latest/meta-data/placement/region") in rig.metadata.calls


async def test_aws_login_signed_for_another_region_is_refused(rig: Rig) -> None:
    auth = _aws(rig)
    auth["region"] = "us-west-2"
    with pytest.raises(SourceReadError, match=r"aws_iam login.*HTTP 401"):
        await rig.source(auth).snapshot()


async def test_oidc_outside_github_actions_says_what_is_missing(rig: Rig) -> None:
    auth = _oidc_github_actions(rig)
    with pytest.raises(SourceReadError, match="not a GitHub Actions job"):
        await rig.source(auth).snapshot()


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"method": "kubernetes"}, "method kubernetes needs identity_id"),
        (
            {"method": "ldap", "identity_id": "x", "username": "u"},
            "needs password (or password_file)",
        ),
        (
            {"method": "aws_iam", "identity_id": "x", "client_id": "c"},
            "client_id is not an option of method aws_iam",
        ),
        ({"method": "gcp_iam", "identity_id": "x"}, "needs service_account_key_file"),
        ({"method": "saml"}, "auth.method"),
    ],
)
def test_config_names_what_a_method_needs(
    tmp_path: Path, auth: dict[str, Any], message: str
) -> None:
    from syncd.config import load_config

    cfg = tmp_path / "syncd.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "sources": {
                    "inf": {
                        "type": "infisical",
                        "project_id": "p",
                        "environment": "prod",
                        "auth": auth,
                    }
                },
                "destinations": {"d": {"type": "dotenv", "path": "out.env"}},
                "syncs": [{"name": "s", "from": "inf", "to": ["d"]}],
            }
        )
    )
    with pytest.raises(ConfigErrors) as err:
        load_config(cfg, env={})
    text = str(err.value)
    assert "sources.inf" in text and message in text


# ---------------------------------------------------------------------------- leaks


async def test_no_credential_reaches_the_logs_or_the_state_store(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every method through ``once``: its credential, the tokens Infisical issued and the
    signed AWS headers appear in no log line and nowhere in the state store."""
    monkeypatch.setenv(
        "ACTIONS_ID_TOKEN_REQUEST_URL", "https://actions.example.com/_apis/token?api-version=2.0"
    )
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", rig.metadata.github_bearer)
    secrets = [
        SA_TOKEN,
        AWS_SECRET,
        LDAP_PASSWORD,
        rig.fake.client_secret,
        rig.metadata.github_bearer,
        rig.keys["sa"].private_pem.splitlines()[1],
    ]
    stores = b""
    with structlog.testing.capture_logs() as logs:
        for name, setup in METHODS.items():
            rig.fake.identities.clear()
            auth = metadata_hosts(rig, setup(rig))
            if "token" in auth:
                secrets.append(auth["token"])
            wb = Workbench(
                tmp_path / name,
                {"env": {"type": "dotenv", "path": "out.env"}},
                sync={"from": "inf"},
                extra_sources={
                    "inf": {
                        "type": "infisical",
                        "host": HOST,
                        "project_id": "proj-1",
                        "environment": "prod",
                        "auth": auth,
                    }
                },
                context_extra={
                    "httpx_transport": rig.transport,
                    CLOCK_KEY: rig.clock.monotonic,
                    WALL_CLOCK_KEY: rig.clock.wall,
                },
            )
            (result,) = await wb.once()
            assert result.ok, result.source_error
            rig.fake.down = True
            (result,) = await wb.once()
            rig.fake.down = False
            assert result.source_error is not None
            stores += wb.state_bytes()
    issued = list(rig.fake.tokens)
    assert len(issued) >= len(METHODS)
    text = json.dumps(logs, default=str)
    for secret in [*secrets, *issued]:
        assert secret not in text
        assert secret.encode() not in stores


def test_validate_online_logs_in_with_the_configured_method(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``syncd validate --online`` says ok, or Infisical's message, for a real config file:
    here a Kubernetes identity whose service-account file holds a token Infisical refuses
    (the command runs without the fakes, so the login reaches no Infisical: its message)."""
    (tmp_path / "sa-token").write_text("a-token")
    cfg = tmp_path / "syncd.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "sources": {
                    "inf": {
                        "type": "infisical",
                        "host": "http://127.0.0.1:9",
                        "project_id": "p",
                        "environment": "prod",
                        "timeout": "2s",
                        "auth": {
                            "method": "kubernetes",
                            "identity_id": IDENTITY,
                            "service_account_token_file": "sa-token",
                        },
                    }
                },
                "destinations": {"d": {"type": "dotenv", "path": "out.env"}},
                "syncs": [{"name": "s", "from": "inf", "to": ["d"]}],
            }
        )
    )
    assert main(["-c", str(cfg), "validate", "--online"]) == 2
    out = capsys.readouterr().out
    assert "source inf: FAILED: kubernetes login at http://127.0.0.1:9: cannot reach" in out
    assert "a-token" not in out


def test_the_github_actions_example_runs_once_with_the_jobs_oidc_token() -> None:
    root = Path(__file__).resolve().parent.parent / "examples"
    workflow = yaml.safe_load((root / "github-actions-oidc.yml").read_text())
    assert workflow["permissions"]["id-token"] == "write"
    steps = workflow["jobs"]["sync"]["steps"]
    run = next(s["run"] for s in steps if "syncd -c" in s.get("run", ""))
    config = yaml.safe_load((root / run.split()[2].split("/")[-1]).read_text())
    auth = config["sources"]["infisical-prod"]["auth"]
    assert auth["method"] == "oidc" and "token" not in auth and auth["audience"]
