"""API-call budgets: a regression in how many platform calls syncd makes fails here.

For every built-in destination whose connector imports, 100 secrets through the real
engine against the destination's fake, counting the calls the connector reports through
``Hooks.api_call``:

- the initial sync stays within today's count (lower is welcome: then lower the bound);
- an unchanged second run, between drift checks, makes no call at all;
- a drift-check run reads but writes nothing;
- one changed secret out of 100 costs exactly one write call.

The counts are deterministic (fake clocks, no latency); ``benchmarks/`` measures the same
passes with latency and rate limits.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from syncd.testing.workbench import Workbench

N = 100
DEST = "dest"

# The initial sync's calls today (100 keys, one destination). Raise a bound only with a
# reason in the commit message; lower it when a connector gets cheaper.
INITIAL_BUDGET = {
    "dotenv": 2,  # read, write
    "aws-parameter-store": 101,  # DescribeParameters, 100 PutParameter
    "aws-secrets-manager": 101,  # ListSecrets, 100 CreateSecret
    "github": 202,  # list, public key, 100 PUT and 100 GET (updated_at, for drift)
    "gitlab": 101,  # list, 100 POST
    "vercel": 3,  # list, 2 bulk upserts of 50
    "netlify": 11,  # list, 10 bulk creates
}

# Operation names that only read; every other operation a connector reports is a write.
READS = frozenset(
    {
        "read",
        "list",
        "get",
        "describe",
        "check",
        "public_key",
        "token",
        "get_repository",
        "list_repositories",
        "list_tags",
        "tags",
    }
)


def values(n: int = N, changed: int | None = None) -> dict[str, str]:
    out = {f"KEY_{i:03d}": f"budget-value-{i:03d}-5c2e9a17" for i in range(n)}
    if changed is not None:
        out[f"KEY_{changed:03d}"] = f"budget-rotated-{changed:03d}-80d4b6e1"
    return out


@dataclass
class Harness:
    destination: dict[str, Any]
    stored: Callable[[], dict[str, str]] | None = None
    env: dict[str, str] = field(default_factory=dict)
    context_extra: dict[str, Any] = field(default_factory=dict)
    bind: Callable[[Workbench], None] = lambda wb: None


def _needs(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not available ({exc.name or exc})")


def _dotenv(tmp: Path, stack: ExitStack) -> Harness:
    from dotenv import dotenv_values

    path = tmp / "out" / ".env"

    def stored() -> dict[str, str]:
        return {k: v or "" for k, v in dotenv_values(path, interpolate=False).items()}

    return Harness({"type": "dotenv", "path": str(path)}, stored)


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _aws(stack: ExitStack) -> None:
    from moto import mock_aws

    mp = stack.enter_context(pytest.MonkeyPatch.context())
    for k, v in AWS_ENV.items():
        mp.setenv(k, v)
    mp.delenv("AWS_ENDPOINT_URL", raising=False)
    mp.delenv("AWS_PROFILE", raising=False)
    stack.enter_context(mock_aws())


def _ssm(tmp: Path, stack: ExitStack) -> Harness:
    import boto3

    _aws(stack)
    path = "/budget/"

    def stored() -> dict[str, str]:
        ssm = boto3.client("ssm", region_name="us-east-1")
        out = {}
        for page in ssm.get_paginator("get_parameters_by_path").paginate(
            Path=path, Recursive=True, WithDecryption=True
        ):
            out.update({p["Name"][len(path) :]: p["Value"] for p in page["Parameters"]})
        return out

    return Harness({"type": "aws-parameter-store", "region": "us-east-1", "path": path}, stored)


def _asm(tmp: Path, stack: ExitStack) -> Harness:
    import boto3

    _aws(stack)
    prefix = "budget/"

    def stored() -> dict[str, str]:
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        out = {}
        for page in sm.get_paginator("list_secrets").paginate():
            for s in page["SecretList"]:
                value = sm.get_secret_value(SecretId=s["ARN"]).get("SecretString", "")
                out[s["Name"][len(prefix) :]] = value
        return out

    return Harness(
        {
            "type": "aws-secrets-manager",
            "region": "us-east-1",
            "prefix": prefix,
            "recovery_window_days": 0,
        },
        stored,
    )


def _github(tmp: Path, stack: ExitStack) -> Harness:
    from tests.fakes.github_server import FakeGitHub, repo_scope

    fake = FakeGitHub().start()
    stack.callback(fake.stop)
    fake.add_repo("acme/api")

    def bind(wb: Workbench) -> None:
        # the fake's 80 writes a minute run on the workbench's clock, as syncd's pacing does
        fake.clock = wb.clock.monotonic

    return Harness(
        {
            "type": "github",
            "api_url": fake.url,
            "token": "${GH_TOKEN}",
            "scope": "repository",
            "repository": "acme/api",
        },
        lambda: fake.plaintext(repo_scope("acme/api")),
        env={"GH_TOKEN": fake.token},
        bind=bind,
    )


def _gitlab(tmp: Path, stack: ExitStack) -> Harness:
    from tests.fakes.gitlab_server import FakeGitLab

    fake = stack.enter_context(FakeGitLab())
    project = fake.project("acme/api")
    return Harness(
        {"type": "gitlab", "url": fake.url, "token": "${GL_TOKEN}", "project": "acme/api"},
        lambda: fake.stored(project),
        env={"GL_TOKEN": fake.token},
    )


def _vercel(tmp: Path, stack: ExitStack) -> Harness:
    from tests.fakes.vercel_api import FakeVercel

    fake = FakeVercel()
    return Harness(
        {"type": "vercel", "token": "${VERCEL_TOKEN}", "project": fake.project_name},
        fake.values,
        env={"VERCEL_TOKEN": fake.token},
        context_extra={"httpx_transport": fake.transport},
    )


def _netlify(tmp: Path, stack: ExitStack) -> Harness:
    from tests.fakes.netlify_api import NetlifyAPI

    fake = NetlifyAPI()
    return Harness(
        {
            "type": "netlify",
            "token": "${NETLIFY_TOKEN}",
            "account_id": fake.account_id,
            "site_id": "site-1",
        },
        fake.stored,
        env={"NETLIFY_TOKEN": fake.token},
        context_extra={"httpx_transport": fake.transport},
    )


HARNESSES: dict[str, tuple[str, Callable[[Path, ExitStack], Harness]]] = {
    "dotenv": ("syncd.connectors.dotenv", _dotenv),
    "aws-parameter-store": ("syncd.connectors.aws_parameter_store", _ssm),
    "aws-secrets-manager": ("syncd.connectors.aws_secrets_manager", _asm),
    "github": ("syncd.connectors.github", _github),
    "gitlab": ("syncd.connectors.gitlab", _gitlab),
    "vercel": ("syncd.connectors.vercel", _vercel),
    "netlify": ("syncd.connectors.netlify", _netlify),
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Harness]]:
    kind = str(request.param)
    module, build = HARNESSES[kind]
    _needs(module)
    with ExitStack() as stack:
        yield kind, build(tmp_path, stack)


def calls_since(wb: Workbench, before: Counter[tuple[str, str, str]]) -> Counter[str]:
    """Calls by operation made since ``before`` was taken."""
    out: Counter[str] = Counter()
    for (dest, op, _status), k in (wb.hooks.calls - before).items():
        if dest == DEST:
            out[op] += k
    return out


def writes(ops: Counter[str]) -> int:
    return sum(k for op, k in ops.items() if op not in READS)


async def test_call_budget(harness: tuple[str, Harness], tmp_path: Path) -> None:
    kind, h = harness
    wb = Workbench(
        tmp_path / "wb",
        {DEST: h.destination},
        source=values(),
        env=h.env,
        context_extra=h.context_extra,
    )
    h.bind(wb)

    # the initial sync: every key lands, within today's call count
    before = Counter(wb.hooks.calls)
    first = await wb.pair(DEST)
    assert first.result == "ok", first.problems or first.error
    initial = calls_since(wb, before)
    assert sum(initial.values()) <= INITIAL_BUDGET[kind], initial
    if h.stored is not None:
        assert h.stored() == values()

    # unchanged, between drift checks: not a single call
    before = Counter(wb.hooks.calls)
    second = await wb.pair(DEST)
    assert second.result == "ok"
    assert calls_since(wb, before) == Counter()

    # a drift check re-reads the destination and writes nothing
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    before = Counter(wb.hooks.calls)
    third = await wb.pair(DEST)
    assert third.result == "ok" and third.plan is not None and third.plan.listed
    drift = calls_since(wb, before)
    assert writes(drift) == 0, drift

    # one changed secret out of 100: exactly one write call
    wb.set_source(values(changed=42))
    before = Counter(wb.hooks.calls)
    fourth = await wb.pair(DEST)
    assert fourth.result == "ok", fourth.problems or fourth.error
    one = calls_since(wb, before)
    assert writes(one) == 1, one
    if h.stored is not None:
        assert h.stored() == values(changed=42)
