"""aws-secrets-manager under moto: the conformance suite for both mappings, then what a user
of Secrets Manager notices: names, tags, versions, call counts, deletion and restore,
idempotent retries, quotas, the bundle."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
import yaml
from botocore.exceptions import ClientError
from moto import mock_aws

from syncd.config import load_config
from syncd.connector import ConnectorContext
from syncd.connectors.aws_secrets_manager import SecretsManagerDestination
from syncd.errors import ConfigErrors
from syncd.testing.conformance import DestinationConformance
from syncd.testing.workbench import Workbench
from tests.test_aws_parameter_store import Throttle, record_requests

REGION = "us-east-1"
PREFIX = "conformance/app/"
BUNDLE = "conformance/bundle"
DEST = "asm"


class AsmHarness:
    def __init__(self, **options: Any) -> None:
        self.destination: dict[str, Any] = {
            "type": "aws-secrets-manager",
            "region": REGION,
            "prefix": PREFIX,
            # moto is not safe for concurrent writes from several threads
            "concurrency": 1,
            **options,
        }
        self.env: dict[str, str] = {}
        self.context_extra: dict[str, Any] = {}
        self.sm = boto3.client("secretsmanager", region_name=REGION)
        self.throttler = Throttle()
        self.throttler.harness_clients.add(id(self.sm))

    def secrets(self, include_deleted: bool = False) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for page in self.sm.get_paginator("list_secrets").paginate(
            Filters=[{"Key": "name", "Values": [PREFIX]}],
            IncludePlannedDeletion=include_deleted,
        ):
            for s in page["SecretList"]:
                out[s["Name"][len(PREFIX) :]] = dict(s)
        return out

    def stored(self) -> dict[str, str]:
        return {
            k: self.sm.get_secret_value(SecretId=PREFIX + k)["SecretString"] for k in self.secrets()
        }

    def tags(self, key: str) -> dict[str, str]:
        d = self.sm.describe_secret(SecretId=PREFIX + key)
        return {t["Key"]: t["Value"] for t in d.get("Tags", [])}

    def versions(self, key: str) -> int:
        return len(self.sm.list_secret_version_ids(SecretId=PREFIX + key)["Versions"])

    def put_unmanaged(self, key: str, value: str) -> None:
        try:
            self.sm.create_secret(Name=PREFIX + key, SecretString=value)
        except self.sm.exceptions.ResourceExistsException:
            self.sm.put_secret_value(SecretId=PREFIX + key, SecretString=value)

    def throttle(self, calls: int) -> None:
        self.throttler.remaining = calls


class BundleHarness(AsmHarness):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.destination = {
            "type": "aws-secrets-manager",
            "region": REGION,
            "mapping": "bundle",
            "name": BUNDLE,
            # moto is not safe for concurrent writes from several threads
            "concurrency": 1,
            **options,
        }

    def stored(self) -> dict[str, str]:
        try:
            text = self.sm.get_secret_value(SecretId=BUNDLE)["SecretString"]
        except self.sm.exceptions.ResourceNotFoundException:
            return {}
        data: dict[str, str] = json.loads(text)
        return data

    def put_unmanaged(self, key: str, value: str) -> None:
        data = self.stored()
        data[key] = value
        try:
            self.sm.create_secret(Name=BUNDLE, SecretString=json.dumps(data))
        except self.sm.exceptions.ResourceExistsException:
            self.sm.put_secret_value(SecretId=BUNDLE, SecretString=json.dumps(data))


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def harness(aws: None) -> Iterator[AsmHarness]:
    h = AsmHarness()
    yield h
    h.throttler.undo()


@pytest.fixture
def bundle(aws: None) -> Iterator[BundleHarness]:
    h = BundleHarness()
    yield h
    h.throttler.undo()


class TestSecretsManagerOneToOneConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, aws: None) -> Iterator[AsmHarness]:
        h = AsmHarness()
        yield h
        h.throttler.undo()


class TestSecretsManagerBundleConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, aws: None) -> Iterator[AsmHarness]:
        h = BundleHarness()
        yield h
        h.throttler.undo()


def bench(h: AsmHarness, root: Path, source: dict[str, Any], **sync: Any) -> Workbench:
    return Workbench(root, {DEST: h.destination}, source=source, sync=sync or None)


def calls(wb: Workbench) -> Counter[str]:
    out: Counter[str] = Counter()
    for (dest, op, _status), n in wb.hooks.calls.items():
        if dest == DEST:
            out[op] += n
    return out


def _error(code: str, op: str, status: int = 400, message: str = "") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


# ---------------------------------------------------------------------------- one-to-one


async def test_secret_per_key_with_prefix_tags_and_description(aws: None, tmp_path: Path) -> None:
    h = AsmHarness(tags={"team": "platform"}, kms_key_id="alias/syncd-test")
    wb = bench(h, tmp_path, {"DB_URL": "postgres://a", "payments": {"STRIPE_KEY": "sk_1"}})
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    assert h.stored() == {"DB_URL": "postgres://a", "payments/STRIPE_KEY": "sk_1"}
    assert h.tags("payments/STRIPE_KEY") == {
        "team": "platform",
        "managed-by": "syncd",
        "syncd:sync": "main",
    }
    d = h.sm.describe_secret(SecretId=PREFIX + "DB_URL")
    assert d["KmsKeyId"] == "alias/syncd-test"
    assert "syncd" in d["Description"]
    # the recorded version is the secret's AWSCURRENT version id
    current = next(v for v, s in d["VersionIdsToStages"].items() if "AWSCURRENT" in s)
    assert wb.records(DEST)["DB_URL"].version == current


async def test_invalid_names_and_sizes_are_blocked(harness: AsmHarness, tmp_path: Path) -> None:
    room = 512 - len(PREFIX)
    source = {
        "OK": "x",
        "bad name!": "x",
        "AT_LIMIT": "a" * 65536,
        "OVER": "b" * 65537,
        "N" * room: "fits",
        "M" * (room + 1): "too long",
    }
    wb = bench(harness, tmp_path, source)
    pair = await wb.pair()
    blocked = {k: m for k, kind, m in pair.problems if kind == "blocked"}
    assert set(blocked) == {"bad name!", "OVER", "M" * (room + 1)}
    assert "65536-byte limit" in blocked["OVER"]
    assert f"{room}-character limit" in blocked["M" * (room + 1)]
    assert set(harness.stored()) == {"OK", "AT_LIMIT", "N" * room}
    assert calls(wb)["create"] == 3


async def test_call_counts_unchanged_run_and_one_changed_key(
    harness: AsmHarness, tmp_path: Path
) -> None:
    source = {f"KEY_{i:03d}": f"value-{i}" for i in range(100)}
    wb = bench(harness, tmp_path, source)
    first = await wb.pair()
    assert first.counts["created"] == 100, first.problems
    assert calls(wb)["create"] == 100 and calls(wb)["get"] == 0

    wb.hooks.calls.clear()
    second = await wb.pair()
    assert second.counts.get("writes", 0) == 0
    assert calls(wb) == Counter()  # no AWS call at all between drift checks

    wb.clock.advance(3601)
    wb.hooks.calls.clear()
    with record_requests() as seen:
        third = await wb.pair()
    assert third.plan is not None and third.plan.listed
    assert calls(wb) == Counter({"list": 1})  # one page of 100, no value read
    (op, params), *_ = seen
    assert op == "ListSecrets" and params["MaxResults"] == 100
    assert params["Filters"] == [{"Key": "name", "Values": [PREFIX]}]

    wb.set_source(dict(source, KEY_042="rotated"))
    wb.hooks.calls.clear()
    fourth = await wb.pair()
    assert fourth.counts["updated"] == 1 and fourth.counts["writes"] == 1
    assert calls(wb) == Counter({"put": 1})
    assert harness.stored()["KEY_042"] == "rotated"


async def test_drift_check_reads_only_moved_versions_in_batches_of_20(
    harness: AsmHarness, tmp_path: Path
) -> None:
    source = {f"K{i:02d}": f"v{i}" for i in range(50)}
    wb = bench(harness, tmp_path, source)
    await wb.pair()
    for i in range(25):  # 25 edited by hand
        harness.sm.put_secret_value(SecretId=f"{PREFIX}K{i:02d}", SecretString="by hand")
    wb.clock.advance(3601)
    wb.hooks.calls.clear()
    with record_requests() as seen:
        pair = await wb.pair()
    assert pair.counts["drift"] == 25 and pair.counts["updated"] == 25
    batches = [p["SecretIdList"] for op, p in seen if op == "BatchGetSecretValue"]
    assert sorted(len(b) for b in batches) == [5, 20]
    assert harness.stored() == source


async def test_deleted_key_is_scheduled_with_the_recovery_window(
    harness: AsmHarness, tmp_path: Path
) -> None:
    wb = bench(harness, tmp_path, {"A": "1", "B": "2", "C": "3"})
    await wb.pair()
    wb.set_source({"A": "1", "B": "2"})
    pair = await wb.pair()
    assert pair.counts["deleted"] == 1
    assert set(harness.stored()) == {"A", "B"}
    gone = harness.secrets(include_deleted=True)["C"]
    assert gone.get("DeletedDate")  # recoverable, as recovery_window_days: 7 says


async def test_recovery_window_zero_deletes_for_good(aws: None, tmp_path: Path) -> None:
    h = AsmHarness(recovery_window_days=0)
    wb = bench(h, tmp_path, {"A": "1", "B": "2", "C": "3"})
    await wb.pair()
    wb.set_source({"A": "1", "B": "2"})
    with record_requests() as seen:
        await wb.pair()
    deletes = [p for op, p in seen if op == "DeleteSecret"]
    assert deletes == [{"SecretId": PREFIX + "C", "ForceDeleteWithoutRecovery": True}]
    assert "C" not in h.secrets(include_deleted=True)


async def test_a_key_that_comes_back_restores_its_scheduled_secret(
    harness: AsmHarness, tmp_path: Path
) -> None:
    wb = bench(harness, tmp_path, {"A": "1", "B": "2", "C": "3"})
    await wb.pair()
    wb.set_source({"A": "1", "B": "2"})
    await wb.pair()
    wb.set_source({"A": "1", "B": "2", "C": "back again"})
    wb.hooks.calls.clear()
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    c = calls(wb)
    assert c["restore"] == 1 and c["put"] == 1 and c["create"] == 0
    assert harness.stored()["C"] == "back again"
    assert not harness.secrets()["C"].get("DeletedDate")


async def test_a_retried_write_that_had_landed_makes_no_second_version(
    harness: AsmHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wb = bench(harness, tmp_path, {"K": "v1"})
    await wb.pair()
    original = botocore.client.BaseClient._make_api_call
    lost = [1]

    def answer_lost(client: Any, operation: str, params: Any) -> Any:
        result = original(client, operation, params)
        if operation == "PutSecretValue" and lost[0]:
            lost[0] -= 1
            raise _error("InternalServiceError", operation, 500)  # landed, answer lost
        return result

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", answer_lost)
    wb.set_source({"K": "v2"})
    pair = await wb.pair()
    assert pair.result == "ok"
    assert calls(wb)["put"] == 2  # the first attempt and its retry
    assert wb.clock.sleeps
    assert harness.versions("K") == 2  # v1 and v2: the retry reused its token
    assert harness.stored() == {"K": "v2"}


async def test_limit_exceeded_is_a_quota_and_not_retried(
    harness: AsmHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = botocore.client.BaseClient._make_api_call

    def quota(client: Any, operation: str, params: Any) -> Any:
        if operation == "CreateSecret":
            raise _error("LimitExceededException", operation)
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", quota)
    wb = bench(harness, tmp_path, {"A": "1", "B": "2"})
    pair = await wb.pair()
    assert pair.result == "failed"
    assert [(k, kind) for k, kind, _ in pair.problems] == [("A", "failed"), ("B", "failed")]
    assert all("quota" in m for _, _, m in pair.problems)
    assert calls(wb)["create"] == 2  # once each
    assert all(s <= 1 / 50 + 1e-9 for s in wb.clock.sleeps)  # paced at 50 a second, no backoff


async def test_throttling_is_retried(
    harness: AsmHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = botocore.client.BaseClient._make_api_call
    left = [2]

    def throttled(client: Any, operation: str, params: Any) -> Any:
        if operation == "CreateSecret" and left[0]:
            left[0] -= 1
            raise _error("ThrottlingException", operation)
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", throttled)
    wb = bench(harness, tmp_path, {"A": "1"})
    pair = await wb.pair()
    assert pair.result == "ok"
    assert len(wb.clock.sleeps) == 2
    assert wb.hooks.calls[(DEST, "create", "throttled")] == 2


async def test_untagged_secret_is_never_deleted(harness: AsmHarness, tmp_path: Path) -> None:
    wb = bench(harness, tmp_path, {"A": "1", "B": "2", "C": "3"})
    await wb.pair()
    harness.sm.untag_resource(SecretId=PREFIX + "C", TagKeys=["managed-by"])
    wb.set_source({"A": "1", "B": "2"})
    pair = await wb.pair()
    assert [(k, kind) for k, kind, _ in pair.problems] == [("C", "failed")]
    assert "managed-by: syncd" in pair.problems[0][2]
    assert harness.stored()["C"] == "3"


async def test_lost_state_recognises_its_own_secrets_by_tag(
    harness: AsmHarness, tmp_path: Path
) -> None:
    await bench(harness, tmp_path / "one", {"A": "1", "B": "2"}).pair()
    harness.put_unmanaged("C", "foreign")
    wb = bench(harness, tmp_path / "two", {"A": "1", "B": "2", "C": "3"}, on_conflict="fail")
    pair = await wb.pair()
    assert [(k, kind) for k, kind, _ in pair.problems] == [("C", "conflict")]
    assert pair.counts.get("writes", 0) == 0
    assert set(wb.records(DEST)) == {"A", "B"}
    assert harness.stored()["C"] == "foreign"


async def test_a_listing_that_lags_does_not_recreate_recorded_secrets(
    harness: AsmHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wb = bench(harness, tmp_path, {"A": "1", "B": "2"})
    await wb.pair()
    original = botocore.client.BaseClient._make_api_call

    def lagging(client: Any, operation: str, params: Any) -> Any:
        result = original(client, operation, params)
        if operation == "ListSecrets":
            result["SecretList"] = [s for s in result["SecretList"] if s["Name"] != PREFIX + "B"]
        return result

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", lagging)
    wb.clock.advance(3601)
    wb.hooks.calls.clear()
    pair = await wb.pair()
    assert pair.counts.get("writes", 0) == 0, pair.plan
    assert calls(wb) == Counter({"list": 1, "describe": 1})


async def test_access_denied_names_the_iam_action(
    harness: AsmHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = botocore.client.BaseClient._make_api_call

    def deny(client: Any, operation: str, params: Any) -> Any:
        if operation == "ListSecrets":
            raise _error(
                "AccessDeniedException",
                operation,
                message="User: arn:aws:iam::1:user/ci is not authorized to perform: "
                "secretsmanager:ListSecrets because no identity-based policy allows it",
            )
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", deny)
    pair = await bench(harness, tmp_path, {"A": "1"}).pair()
    assert pair.result == "error"
    assert pair.error is not None and "secretsmanager:ListSecrets" in pair.error


# ---------------------------------------------------------------------------- bundle


async def test_bundle_holds_every_key_and_a_change_is_one_write(
    bundle: BundleHarness, tmp_path: Path
) -> None:
    source = {f"K{i:02d}": f"v{i}" for i in range(100)}
    source["nested"] = {"INNER": "x"}  # type: ignore[assignment]
    wb = bench(bundle, tmp_path, source)
    first = await wb.pair()
    assert first.counts["created"] == 101 and first.counts["writes"] == 1
    stored = bundle.stored()
    assert stored["nested/INNER"] == "x" and len(stored) == 101
    d = bundle.sm.describe_secret(SecretId=BUNDLE)
    assert {t["Key"]: t["Value"] for t in d["Tags"]} == {
        "managed-by": "syncd",
        "syncd:sync": "main",
    }

    wb.hooks.calls.clear()
    assert (await wb.pair()).counts.get("writes", 0) == 0
    assert calls(wb) == Counter()

    wb.set_source(dict(source, K42="rotated"))
    wb.hooks.calls.clear()
    changed = await wb.pair()
    assert changed.counts["updated"] == 1 and changed.counts["writes"] == 1
    assert calls(wb) == Counter({"get": 1, "put": 1})  # read, merge, write once
    assert bundle.stored()["K42"] == "rotated"

    # the next drift check reads the bundle once to learn the unchanged keys' new version,
    # and the one after that reads nothing
    wb.clock.advance(3601)
    wb.hooks.calls.clear()
    assert (await wb.pair()).counts.get("writes", 0) == 0
    assert calls(wb) == Counter({"describe": 1, "get": 1})
    wb.clock.advance(3601)
    wb.hooks.calls.clear()
    assert (await wb.pair()).counts.get("writes", 0) == 0
    assert calls(wb) == Counter({"describe": 1})


async def test_bundle_over_64kb_is_refused_whole(bundle: BundleHarness, tmp_path: Path) -> None:
    wb = bench(bundle, tmp_path, {"A": "a" * 40000, "B": "b" * 40000})
    pair = await wb.pair()
    assert pair.result == "failed"
    assert {k for k, _, _ in pair.problems} == {"A", "B"}
    assert all("65536-byte limit" in m for _, _, m in pair.problems)
    assert bundle.stored() == {}


async def test_bundle_keeps_foreign_keys(bundle: BundleHarness, tmp_path: Path) -> None:
    bundle.put_unmanaged("THEIRS", "keep me")
    wb = bench(bundle, tmp_path, {"A": "1", "B": "2"})
    await wb.pair()
    wb.set_source({"A": "1"})
    pair = await wb.pair()
    assert pair.counts["deleted"] == 1
    assert bundle.stored() == {"THEIRS": "keep me", "A": "1"}


async def test_bundle_that_is_not_a_json_object_is_left_alone(
    bundle: BundleHarness, tmp_path: Path
) -> None:
    bundle.sm.create_secret(Name=BUNDLE, SecretString="plain text")
    pair = await bench(bundle, tmp_path, {"A": "1"}).pair()
    assert pair.result == "error"
    assert pair.error is not None and "JSON object" in pair.error
    assert bundle.sm.get_secret_value(SecretId=BUNDLE)["SecretString"] == "plain text"


# ---------------------------------------------------------------------------- config


def _load(tmp_path: Path, body: dict[str, Any]) -> Any:
    cfg = {
        "version": 1,
        "sources": {"s": {"type": "file", "path": "secrets.yaml"}},
        "destinations": {"asm": {"type": "aws-secrets-manager", **body}},
        "syncs": [{"name": "x", "from": "s", "to": ["asm"]}],
    }
    f = tmp_path / "syncd.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return load_config(f, env={})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "prefix is required"),
        ({"mapping": "bundle"}, "name is required"),
        ({"prefix": "a/", "name": "b"}, "use it with mapping: bundle"),
        ({"mapping": "bundle", "name": "b", "prefix": "a/"}, "a bundle has a name"),
        ({"prefix": "a/", "recovery_window_days": 3}, "7 to 30 days"),
        ({"prefix": "my app/"}, "secret names use letters"),
        ({"prefix": "a/", "mapping": "several"}, "destinations.asm.mapping"),
        ({"prefix": "a/", "tags": {"syncd:sync": "x"}}, "set by syncd itself"),
    ],
)
def test_config_errors(tmp_path: Path, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigErrors) as err:
        _load(tmp_path, body)
    assert message in str(err.value)


def test_config_defaults_and_capabilities(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"prefix": "myapp/prod/"}).destinations["asm"].config
    assert cfg.mapping == "one-to-one" and cfg.recovery_window_days == 7
    d = SecretsManagerDestination("asm", cfg, ConnectorContext())
    assert d.capabilities.default_key_template == "{path}{key}"
    assert d.capabilities.max_value_bytes == 65536
    assert d.capabilities.max_key_length == 512 - len("myapp/prod/")
    b = _load(tmp_path, {"mapping": "bundle", "name": "myapp/prod"}).destinations["asm"].config
    db = SecretsManagerDestination("asm", b, ConnectorContext())
    assert db.capabilities.key_pattern is None and db.capabilities.batch_size >= 10_000


async def test_a_managed_secret_deleted_out_of_band_is_restored_at_the_drift_check(
    harness: AsmHarness, tmp_path: Path
) -> None:
    wb = bench(harness, tmp_path, {"A": "1", "B": "2"})
    await wb.pair()
    harness.sm.delete_secret(SecretId=PREFIX + "B", RecoveryWindowInDays=7)
    wb.clock.advance(3601)
    wb.hooks.calls.clear()
    pair = await wb.pair()
    assert [c.key for c in pair.plan.changes if c.drift] == ["B"]  # type: ignore[union-attr]
    assert calls(wb) == Counter({"list": 1, "restore": 1, "put": 1})
    assert harness.stored() == {"A": "1", "B": "2"}


# ---------------------------------------------------------------------------- IAM policy

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "iam" / "secrets-manager-policy.json"


def policy_actions(path: Path) -> set[str]:
    out: set[str] = set()
    for statement in json.loads(path.read_text())["Statement"]:
        actions = statement["Action"]
        out.update([actions] if isinstance(actions, str) else actions)
    return out


async def test_iam_policy_lists_exactly_the_actions_syncd_calls(aws: None, tmp_path: Path) -> None:
    one, bun = AsmHarness(), BundleHarness()
    one.put_unmanaged("ADOPTED", "foreign")
    with record_requests() as seen:
        wb = Workbench(
            tmp_path,
            {"asm": one.destination, "bundle": bun.destination},
            source={"A": "1", "B": "2", "ADOPTED": "mine"},
        )
        await wb.once()  # list, batch read of ADOPTED, creates, adopt; bundle describe + create
        wb.set_source({"A": "1", "ADOPTED": "mine"})
        await wb.once()  # between drift checks: describe before delete; bundle read + write
        wb.set_source({"A": "1", "B": "back", "ADOPTED": "mine"})
        await wb.once()  # B is scheduled for deletion: restore, then put
    called = {f"secretsmanager:{op}" for op, _ in seen}
    # GetSecretValue: the bundle's reads, and what BatchGetSecretValue needs per secret;
    # TagResource: what CreateSecret with tags needs
    assert called | {"secretsmanager:TagResource"} == policy_actions(POLICY)
    bun.throttler.undo()  # the later patch first
    one.throttler.undo()
