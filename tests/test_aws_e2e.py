"""End to end: the real ``syncd`` command against moto's standalone server, reached the way a
user reaches AWS — credentials and ``AWS_ENDPOINT_URL`` in the environment, nothing
test-specific in the config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
SECRET_VALUES = {
    "DATABASE_URL": "postgres://app:e2e-db-pass-5f1c@db.internal/app",
    "API_TOKEN": "e2e-api-token-9a8b7c",
    "payments": {"STRIPE_KEY": "sk_e2e_stripe_77aa"},
}


def flat(values: dict[str, Any], folder: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{folder}{k}/"))
        else:
            out[f"{folder}{k}"] = str(v)
    return out


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell: dummy credentials, region, the endpoint; no
    profile files from the machine running the tests."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SYNCD_"))}
    return {
        **keep,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "SYNCD_STATE_DIR": str(tmp_path / "state"),
    }


def syncd(env: dict[str, str], config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(config), "--log-format", "json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, run: str, source: dict[str, Any]) -> Path:
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(source))
    body = {
        "version": 1,
        "sources": {"local": {"type": "file", "path": "./secrets.yaml"}},
        "destinations": {
            # no region and no endpoint here: both come from the environment
            "ssm": {"type": "aws-parameter-store", "path": f"/{run}/app/", "tags": {"e2e": run}},
            "asm": {"type": "aws-secrets-manager", "prefix": f"{run}/app/"},
            "asm-bundle": {"type": "aws-secrets-manager", "mapping": "bundle", "name": run},
        },
        "syncs": [{"name": "fanout", "from": "local", "to": ["ssm", "asm", "asm-bundle"]}],
    }
    config = tmp_path / "syncd.yaml"
    config.write_text(yaml.safe_dump(body, sort_keys=False))
    return config


def clients(endpoint: str) -> tuple[Any, Any]:
    kw = {
        "region_name": REGION,
        "endpoint_url": endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return boto3.client("ssm", **kw), boto3.client("secretsmanager", **kw)


def in_ssm(ssm: Any, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for page in ssm.get_paginator("get_parameters_by_path").paginate(
        Path=path.rstrip("/"), Recursive=True, WithDecryption=True
    ):
        for p in page["Parameters"]:
            out[p["Name"][len(path) :]] = p["Value"]
    return out


def in_asm(sm: Any, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for page in sm.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "name", "Values": [prefix]}]
    ):
        for s in page["SecretList"]:
            if s["Name"].startswith(prefix):
                value = sm.get_secret_value(SecretId=s["Name"])["SecretString"]
                out[s["Name"][len(prefix) :]] = value
    return out


def assert_no_values(result: subprocess.CompletedProcess[str], values: dict[str, str]) -> None:
    for v in values.values():
        assert v not in result.stdout and v not in result.stderr


def test_once_against_a_standalone_aws_endpoint(
    endpoint: str, env: dict[str, str], tmp_path: Path
) -> None:
    run = "e2e1"
    config = write_config(tmp_path, run, SECRET_VALUES)
    ssm, sm = clients(endpoint)
    expected = flat(SECRET_VALUES)

    check = syncd(env, config, "validate", "--online")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "destination ssm: ok" in check.stdout and "destination asm: ok" in check.stdout

    first = syncd(env, config, "once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "fanout → ssm: ok: 3 created" in first.stdout
    assert "fanout → asm: ok: 3 created" in first.stdout
    assert "fanout → asm-bundle: ok: 3 created" in first.stdout
    assert_no_values(first, expected)
    assert in_ssm(ssm, f"/{run}/app/") == expected
    assert in_asm(sm, f"{run}/app/") == expected
    assert json.loads(sm.get_secret_value(SecretId=run)["SecretString"]) == expected
    tags = ssm.list_tags_for_resource(
        ResourceType="Parameter", ResourceId=f"/{run}/app/payments/STRIPE_KEY"
    )["TagList"]
    assert {t["Key"]: t["Value"] for t in tags} == {
        "e2e": run,
        "managed-by": "syncd",
        "syncd:sync": "fanout",
    }

    # unchanged: nothing written anywhere
    second = syncd(env, config, "once")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("(0 write calls)") == 3

    # one key rotated, one removed
    changed = dict(SECRET_VALUES, API_TOKEN="e2e-api-token-rotated-1")
    del changed["DATABASE_URL"]
    config = write_config(tmp_path, run, changed)
    plan = syncd(env, config, "plan")
    assert plan.returncode == 0
    assert "API_TOKEN" in plan.stdout and "update" in plan.stdout
    assert "DATABASE_URL" in plan.stdout and "delete" in plan.stdout
    assert_no_values(plan, {**expected, "new": "e2e-api-token-rotated-1"})

    third = syncd(env, config, "once")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "fanout → ssm: ok: 0 created, 1 updated, 1 deleted" in third.stdout
    want = flat(changed)
    assert in_ssm(ssm, f"/{run}/app/") == want
    assert in_asm(sm, f"{run}/app/") == want  # the deleted secret waits out its recovery window
    assert json.loads(sm.get_secret_value(SecretId=run)["SecretString"]) == want

    status = syncd(env, config, "status")
    assert status.returncode == 0
    assert "asm-bundle" in status.stdout


def test_once_reports_blocked_and_foreign_keys_and_exits_1(
    endpoint: str, env: dict[str, str], tmp_path: Path
) -> None:
    run = "e2e2"
    ssm, _ = clients(endpoint)
    # a parameter someone made by hand, not tagged by syncd
    ssm.put_parameter(Name=f"/{run}/app/API_TOKEN", Value="hand-made", Type="SecureString")
    source = {**SECRET_VALUES, "bad key!": "e2e-blocked-value"}
    config = write_config(tmp_path, run, source)
    body = yaml.safe_load(config.read_text())
    body["syncs"][0].update(to=["ssm"], on_conflict="fail")
    config.write_text(yaml.safe_dump(body))

    result = syncd(env, config, "once")
    assert result.returncode == 1
    assert "fanout → ssm: bad key!: blocked: invalid key name" in result.stdout
    assert "fanout → ssm: API_TOKEN: conflict: exists and was not created by syncd" in (
        result.stdout
    )
    assert_no_values(result, flat(source))
    stored = in_ssm(ssm, f"/{run}/app/")
    assert stored["API_TOKEN"] == "hand-made"
    assert stored["DATABASE_URL"] == SECRET_VALUES["DATABASE_URL"]


def test_missing_credentials_fail_the_pair_with_a_clear_message(
    endpoint: str, env: dict[str, str], tmp_path: Path
) -> None:
    config = write_config(tmp_path, "e2e3", SECRET_VALUES)
    body = yaml.safe_load(config.read_text())
    body["syncs"][0]["to"] = ["ssm"]
    config.write_text(yaml.safe_dump(body))
    bare = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    bare["AWS_EC2_METADATA_DISABLED"] = "true"
    result = syncd(bare, config, "once")
    assert result.returncode == 1
    assert "no usable AWS credentials" in result.stdout
