"""The six destination platforms and the Infisical source as the benchmark runs them: each
platform's published limits, the latency and time scale used for it, and :class:`Fleet`,
which starts every fake and writes the matching ``syncd.yaml`` bodies.

Limits (token buckets: capacity = the limit, refilled evenly over its window):

- GitHub: 5,000 requests an hour per user or installation (primary); no more than 80
  content-generating requests a minute and 500 an hour (secondary). The GitHub fake enforces
  the 80 a minute itself, answering 403 with ``retry-after: 60``.
- GitLab.com: 2,000 authenticated API requests a minute per user; throttled requests get
  429 with ``Retry-After``.
- Vercel: its REST API answers 429 with ``X-RateLimit-Limit/Remaining/Reset`` per
  endpoint; no per-endpoint figure for project environment variables is published, so the
  benchmark models 120 requests a minute (the connector itself paces writes at 60 a minute).
- Netlify: 500 requests a minute per token, ``X-RateLimit-*`` headers, reset in epoch
  seconds.
- Parameter Store: default throughput 40 transactions a second for GetParameter,
  GetParameters and PutParameter (shared, per account and region); throttled calls answer
  ``ThrottlingException``.
- Secrets Manager: 50 a second for the control-plane writes (PutSecretValue, UpdateSecret,
  TagResource, ...; CreateSecret and DeleteSecret are modelled in the same class),
  BatchGetSecretValue 100 a second, DescribeSecret + GetSecretValue 10,000 a second.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmarks.fakes import (
    Call,
    Gate,
    GatedTransport,
    HttpBridge,
    Limit,
    MotoServer,
    Route,
    TimeScale,
    github_fake_class,
    gitlab_fake_class,
    writes_only,
)

SSM_THROUGHPUT_ACTIONS = frozenset({"PutParameter", "GetParameter", "GetParameters"})


def _ssm_throughput(call: Call) -> bool:
    return call.operation in SSM_THROUGHPUT_ACTIONS


def _asm_batch_get(call: Call) -> bool:
    return call.operation == "BatchGetSecretValue"


def _asm_reads(call: Call) -> bool:
    return call.operation in ("DescribeSecret", "GetSecretValue")


@dataclass(frozen=True)
class PlatformSpec:
    name: str  # the destination's name in the benchmark's syncd.yaml
    kind: str  # the connector type
    module: str  # the connector module: a platform whose module is missing is skipped
    fake: str  # the fake's module
    latency: float  # seconds a call takes at the platform
    scale: float  # time scale (see benchmarks.fakes.TimeScale)
    limits: tuple[Limit, ...]
    binding: str  # the limit a bulk push runs into
    notes: str = ""


GITHUB_BINDING = "80 content-generating requests/minute"

PLATFORMS: tuple[PlatformSpec, ...] = (
    PlatformSpec(
        "ssm",
        "aws-parameter-store",
        "syncd.connectors.aws_parameter_store",
        "moto",
        latency=0.040,
        scale=1.0,
        limits=(Limit("40 TPS (GetParameter/GetParameters/PutParameter)", 40, 1, _ssm_throughput),),
        binding="40 TPS (GetParameter/GetParameters/PutParameter)",
    ),
    PlatformSpec(
        "asm",
        "aws-secrets-manager",
        "syncd.connectors.aws_secrets_manager",
        "moto",
        latency=0.040,
        scale=1.0,
        limits=(
            Limit("50 TPS control-plane writes", 50, 1, writes_only),
            Limit("100 TPS BatchGetSecretValue", 100, 1, _asm_batch_get),
            Limit("10,000 TPS DescribeSecret+GetSecretValue", 10_000, 1, _asm_reads),
        ),
        binding="50 TPS control-plane writes",
    ),
    PlatformSpec(
        "github",
        "github",
        "syncd.connectors.github",
        "tests.fakes.github_server",
        latency=0.150,
        scale=10.0,
        limits=(
            Limit("5,000 requests/hour (primary)", 5000, 3600, kind="primary"),
            Limit(GITHUB_BINDING, 80, 60, writes_only),
            Limit("500 content-generating requests/hour", 500, 3600, writes_only),
        ),
        binding=GITHUB_BINDING,
    ),
    PlatformSpec(
        "gitlab",
        "gitlab",
        "syncd.connectors.gitlab",
        "tests.fakes.gitlab_server",
        latency=0.150,
        scale=1.0,
        limits=(Limit("2,000 requests/minute (authenticated API)", 2000, 60),),
        binding="2,000 requests/minute (authenticated API)",
    ),
    PlatformSpec(
        "vercel",
        "vercel",
        "syncd.connectors.vercel",
        "tests.fakes.vercel_api",
        latency=0.200,
        scale=5.0,
        limits=(Limit("120 requests/minute (modelled)", 120, 60),),
        binding="120 requests/minute (modelled)",
    ),
    PlatformSpec(
        "netlify",
        "netlify",
        "syncd.connectors.netlify",
        "tests.fakes.netlify_api",
        latency=0.150,
        scale=2.0,
        limits=(Limit("500 requests/minute", 500, 60),),
        binding="500 requests/minute",
    ),
)

SOURCE_LATENCY = 0.100

TOKENS = {
    "GH_TOKEN": "ghp_fake_token_for_tests",
    "GL_TOKEN": "benchmark-gitlab-token",
    "VERCEL_TOKEN": "vercel-test-token",
    "NETLIFY_TOKEN": "nf-test-token",
    "INFISICAL_CLIENT_ID": "client-id-1",
    "INFISICAL_CLIENT_SECRET": "client-secret-value-1",
    "INFISICAL_WEBHOOK_SECRET": "bench-webhook-secret-7f3a",
}
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def available(spec: PlatformSpec) -> str | None:
    """Why this platform cannot run (its connector or fake is missing), or None."""
    for module in (spec.module, spec.fake):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not importable ({exc.name or exc})"
    return None


@dataclass
class FleetOptions:
    latency_factor: float = 1.0  # multiplies every latency
    scale_factor: float = 1.0  # multiplies every time scale
    limits: bool = True  # False: no token buckets (latency only)
    github_scope: str = "repository"  # repository (100 secrets) or organization (1,000)
    only: tuple[str, ...] = ()  # run only these destinations


@dataclass
class Fleet:
    """Every fake of one benchmark run, started; ``tag`` keeps AWS names of fleets apart
    (moto's state is per process)."""

    tag: str
    options: FleetOptions = field(default_factory=FleetOptions)
    specs: list[PlatformSpec] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    gates: dict[str, Gate] = field(default_factory=dict)
    router: GatedTransport = field(default_factory=GatedTransport)
    fakes: dict[str, Any] = field(default_factory=dict)
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        os.environ.update(AWS_ENV)
        opts = self.options
        for spec in PLATFORMS:
            if opts.only and spec.name not in opts.only:
                continue
            why = available(spec)
            if why:
                self.skipped[spec.name] = why
                continue
            self.specs.append(spec)
            self.gates[spec.name] = Gate(
                spec.name,
                latency=spec.latency * opts.latency_factor,
                limits=spec.limits if opts.limits else (),
                scale=TimeScale(spec.scale * opts.scale_factor),
            )
        self.gates["infisical"] = Gate("infisical", latency=SOURCE_LATENCY * opts.latency_factor)
        self._start()

    # ------------------------------------------------------------------ fakes

    def _start(self) -> None:
        from tests.fakes.infisical_api import FakeInfisical

        inf = FakeInfisical()
        self.fakes["infisical"] = inf
        self.router.add("infisical.bench", Route(self.gates["infisical"], inf.transport, "default"))
        names = {s.name for s in self.specs}
        if "vercel" in names:
            from tests.fakes.vercel_api import FakeVercel

            # the gate models Vercel's limit on the platform's time scale; the fake's own
            # per-answer quota runs on real time and would contradict it
            v = FakeVercel(rate_headers=False)
            self.fakes["vercel"] = v
            self.router.add("vercel.bench", Route(self.gates["vercel"], v.transport, "vercel"))
        if "netlify" in names:
            from tests.fakes.netlify_api import NetlifyAPI

            nf = NetlifyAPI()
            nf.rate_headers = False  # likewise: the gate's bucket is Netlify's limit here
            self.fakes["netlify"] = nf
            self.router.add("netlify.bench", Route(self.gates["netlify"], nf.transport, "netlify"))
        if "github" in names:
            gh = github_fake_class()(self.gates["github"]).start()
            gh.add_repo("acme/api")
            gh.add_org("acme")
            self.fakes["github"] = gh
            self._stops.append(gh.stop)
        if "gitlab" in names:
            gl = gitlab_fake_class()(self.gates["gitlab"])
            gl.__enter__()
            gl.project("acme/api")
            self.fakes["gitlab"] = gl
            self._stops.append(lambda: gl.__exit__(None, None, None))
        aws = {}
        if "ssm" in names:
            aws["AmazonSSM"] = self.gates["ssm"]
        if "asm" in names:
            aws["secretsmanager"] = self.gates["asm"]
        if aws:
            moto = MotoServer(aws)
            self.fakes["moto"] = moto
            self._stops.append(moto.stop)
            for name in ("ssm", "asm"):
                if name in names:
                    self._aws(name)  # moto loads a service's backend on its first call

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()

    # ------------------------------------------------------------------ config

    def env(self) -> dict[str, str]:
        """The credentials the configs name: each fake's own where it has one, so a fake
        and the config can never disagree about a token."""
        own = {
            "GH_TOKEN": getattr(self.fakes.get("github"), "token", None),
            "GL_TOKEN": getattr(self.fakes.get("gitlab"), "token", None),
            "VERCEL_TOKEN": getattr(self.fakes.get("vercel"), "token", None),
            "NETLIFY_TOKEN": getattr(self.fakes.get("netlify"), "token", None),
        }
        return {**TOKENS, **{k: v for k, v in own.items() if v}, **AWS_ENV}

    def _url(self, host: str, bridge: HttpBridge | None, suffix: str = "") -> str:
        return (bridge.url(host) if bridge else f"http://{host}") + suffix

    def source(self, bridge: HttpBridge | None = None) -> dict[str, Any]:
        return {
            "type": "infisical",
            "host": self._url("infisical.bench", bridge),
            "project_id": "proj-1",
            "environment": "prod",
            "auth": {
                "method": "universal_auth",
                "client_id": "${INFISICAL_CLIENT_ID}",
                "client_secret": "${INFISICAL_CLIENT_SECRET}",
            },
            "webhook_secret": "${INFISICAL_WEBHOOK_SECRET}",
        }

    def destinations(self, bridge: HttpBridge | None = None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for spec in self.specs:
            if spec.name == "ssm":
                out["ssm"] = {
                    "type": spec.kind,
                    "region": "us-east-1",
                    "endpoint_url": self.fakes["moto"].url,
                    "path": f"/bench/{self.tag}/",
                }
            elif spec.name == "asm":
                out["asm"] = {
                    "type": spec.kind,
                    "region": "us-east-1",
                    "endpoint_url": self.fakes["moto"].url,
                    "prefix": f"bench/{self.tag}/",
                    "recovery_window_days": 0,
                }
            elif spec.name == "github":
                body: dict[str, Any] = {
                    "type": "github",
                    "api_url": self.fakes["github"].url,
                    "token": "${GH_TOKEN}",
                }
                if self.options.github_scope == "organization":
                    body.update(scope="organization", organization="acme", visibility="private")
                else:
                    body.update(scope="repository", repository="acme/api")
                out["github"] = body
            elif spec.name == "gitlab":
                out["gitlab"] = {
                    "type": "gitlab",
                    "url": self.fakes["gitlab"].url,
                    "token": "${GL_TOKEN}",
                    "project": "acme/api",
                }
            elif spec.name == "vercel":
                out["vercel"] = {
                    "type": "vercel",
                    "api_url": self._url("vercel.bench", bridge),
                    "token": "${VERCEL_TOKEN}",
                    "project": "my-app",
                }
            elif spec.name == "netlify":
                out["netlify"] = {
                    "type": "netlify",
                    "api_url": self._url("netlify.bench", bridge, "/api/v1"),
                    "token": "${NETLIFY_TOKEN}",
                    "account_id": "acme",
                    "site_id": "site-1",
                }
        return out

    # ------------------------------------------------------------------ data

    def seed(self, values: Mapping[str, str]) -> None:
        inf = self.fakes["infisical"]
        for key, value in values.items():
            inf.set(key, value)

    def stored(self, name: str) -> dict[str, str] | None:
        """What a platform holds in the benchmark's scope (None where not inspectable)."""
        fake: Any = self.fakes.get(name)
        if fake is None:
            return None
        if name == "github":
            from tests.fakes.github_server import org_scope, repo_scope

            scope = (
                org_scope("acme")
                if self.options.github_scope == "organization"
                else repo_scope("acme/api")
            )
            return dict(fake.plaintext(scope))
        if name == "gitlab":
            return dict(fake.stored(fake.containers[("projects", "acme/api")]))
        if name == "vercel":
            return dict(fake.values())
        if name == "netlify":
            return dict(fake.stored())
        return None

    def _aws(self, name: str) -> dict[str, str]:
        """What moto holds under the benchmark's path or prefix, read with the gate open."""
        import boto3

        gate = self.gates[name]
        latency, gate.latency, gate.enabled = gate.latency, 0.0, False
        try:
            url = self.fakes["moto"].url
            out: dict[str, str] = {}
            if name == "ssm":
                ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=url)
                path = f"/bench/{self.tag}/"
                for ssm_page in ssm.get_paginator("get_parameters_by_path").paginate(
                    Path=path, Recursive=True, WithDecryption=True
                ):
                    for p in ssm_page["Parameters"]:
                        out[p["Name"][len(path) :]] = p["Value"]
            else:
                sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=url)
                prefix = f"bench/{self.tag}/"
                names: list[str] = []
                for page in sm.get_paginator("list_secrets").paginate(
                    Filters=[{"Key": "name", "Values": [prefix]}]
                ):
                    names.extend(s["Name"] for s in page["SecretList"])
                for i in range(0, len(names), 20):
                    r = sm.batch_get_secret_value(SecretIdList=names[i : i + 20])
                    for v in r["SecretValues"]:
                        out[v["Name"][len(prefix) :]] = v.get("SecretString", "")
            return out
        finally:
            gate.latency, gate.enabled = latency, True

    def held(self, values: Mapping[str, str]) -> dict[str, str]:
        """``held/expected`` per destination: keys that hold the source's current value."""
        out: dict[str, str] = {}
        for spec in self.specs:
            stored = self._aws(spec.name) if spec.name in ("ssm", "asm") else self.stored(spec.name)
            if stored is None:
                out[spec.name] = "?"
                continue
            ok = sum(
                1
                for k, v in values.items()
                if stored.get(k.upper() if spec.name == "github" else k) == v
            )
            out[spec.name] = f"{ok:,}/{len(values):,}"
        return out
