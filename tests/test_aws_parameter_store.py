"""aws-parameter-store under moto: the conformance suite, then what a user of Parameter
Store notices: names, tiers, tags, ownership, call counts, drift, errors."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from moto import mock_aws

from syncd.config import load_config
from syncd.connector import ConnectorContext
from syncd.connectors._aws import classify
from syncd.connectors.aws_parameter_store import ParameterStoreDestination
from syncd.errors import (
    AuthError,
    ConfigErrors,
    ConflictError,
    KeyRejected,
    QuotaExceeded,
    RateLimited,
    RetryableError,
)
from syncd.model import Action, Change, DesiredEntry, RemoteEntry, SecretValue
from syncd.testing.conformance import DestinationConformance
from syncd.testing.workbench import Workbench

REGION = "us-east-1"
PATH = "/conformance/app/"
DEST = "ssm"


class Throttle:
    """The next ``n`` calls of syncd's own clients answer ThrottlingException, as botocore
    raises it (the harness's own clients are left alone)."""

    def __init__(self) -> None:
        self.remaining = 0
        self.harness_clients: set[int] = set()
        self.patch = pytest.MonkeyPatch()
        original = botocore.client.BaseClient._make_api_call
        throttle = self

        def make_api_call(client: Any, operation: str, params: Any) -> Any:
            if throttle.remaining > 0 and id(client) not in throttle.harness_clients:
                throttle.remaining -= 1
                raise ClientError(
                    {
                        "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                        "ResponseMetadata": {"HTTPStatusCode": 400},
                    },
                    operation,
                )
            return original(client, operation, params)

        self.patch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)

    def undo(self) -> None:
        self.patch.undo()


class SsmHarness:
    def __init__(self, path: str = PATH, **options: Any) -> None:
        self.path = path
        self.destination: dict[str, Any] = {
            "type": "aws-parameter-store",
            "region": REGION,
            "path": path,
            # moto is not safe for concurrent writes from several threads
            "concurrency": 1,
            **options,
        }
        self.env: dict[str, str] = {}
        self.context_extra: dict[str, Any] = {}
        self.ssm = boto3.client("ssm", region_name=REGION)
        self.throttler = Throttle()
        self.throttler.harness_clients.add(id(self.ssm))

    def params(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for page in self.ssm.get_paginator("get_parameters_by_path").paginate(
            Path=self.path.rstrip("/"), Recursive=True, WithDecryption=True
        ):
            for p in page["Parameters"]:
                out[p["Name"][len(self.path) :]] = dict(p)
        return out

    def stored(self) -> dict[str, str]:
        return {k: str(p["Value"]) for k, p in self.params().items()}

    def describe(self, key: str) -> dict[str, Any]:
        r = self.ssm.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Values": [self.path + key]}]
        )
        return dict(r["Parameters"][0])

    def tags(self, key: str) -> dict[str, str]:
        r = self.ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=self.path + key)
        return {t["Key"]: t["Value"] for t in r["TagList"]}

    def put_unmanaged(self, key: str, value: str) -> None:
        self.ssm.put_parameter(
            Name=self.path + key, Value=value, Type="SecureString", Overwrite=True
        )

    def throttle(self, calls: int) -> None:
        self.throttler.remaining = calls


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def harness(aws: None) -> Iterator[SsmHarness]:
    h = SsmHarness()
    yield h
    h.throttler.undo()


class TestParameterStoreConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, aws: None) -> Iterator[SsmHarness]:
        h = SsmHarness()
        yield h
        h.throttler.undo()


def bench(h: SsmHarness, root: Path, source: dict[str, Any], **sync: Any) -> Workbench:
    return Workbench(root, {DEST: h.destination}, source=source, sync=sync or None)


def calls(wb: Workbench) -> Counter[str]:
    """Calls per operation made so far (any status)."""
    out: Counter[str] = Counter()
    for (dest, op, _status), n in wb.hooks.calls.items():
        if dest == DEST:
            out[op] += n
    return out


@contextlib.contextmanager
def record_requests() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """(operation, parameters other than values) of every AWS request made inside."""
    seen: list[tuple[str, dict[str, Any]]] = []
    original = botocore.client.BaseClient._make_api_call

    def spy(client: Any, operation: str, params: Any) -> Any:
        seen.append((operation, {k: v for k, v in params.items() if k != "Value"}))
        return original(client, operation, params)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.client.BaseClient, "_make_api_call", spy)
        yield seen


# what the harness itself calls inside record_requests(): not syncd's doing
HARNESS_OPS = frozenset({"DeleteParameter"})

WRITE_OPS = ("put", "tag", "delete")


def writes(c: Counter[str]) -> int:
    return sum(c[op] for op in WRITE_OPS)


# ---------------------------------------------------------------------------- names, tiers


async def test_source_folders_become_hierarchy_levels(harness: SsmHarness, tmp_path: Path) -> None:
    wb = bench(harness, tmp_path, {"DB_URL": "postgres://a", "payments": {"STRIPE_KEY": "sk_1"}})
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    assert harness.stored() == {"DB_URL": "postgres://a", "payments/STRIPE_KEY": "sk_1"}
    assert set(wb.records(DEST)) == {"DB_URL", "payments/STRIPE_KEY"}


async def test_invalid_names_and_sizes_are_blocked_before_any_call(
    harness: SsmHarness, tmp_path: Path
) -> None:
    deep: dict[str, Any] = {"LEAF": "v"}
    for i in range(14):
        deep = {f"l{i}": deep}
    source = {
        "GOOD": "fine",
        "has space": "x",
        "awsKEY": "x",
        "EMPTY": "",
        "BIG": "x" * 8193,
        "AT_LIMIT": "y" * 8192,
        "deep": deep,
    }
    wb = bench(harness, tmp_path, source)
    pair = await wb.pair()
    blocked = {k: m for k, kind, m in pair.problems if kind == "blocked"}
    assert set(blocked) == {
        "has space",
        "BIG",
        "EMPTY",
        "deep/" + "/".join(f"l{i}" for i in reversed(range(14))) + "/LEAF",
    }
    assert "letters, digits" in blocked["has space"]
    assert "8192-byte limit" in blocked["BIG"]
    assert "empty value" in blocked["EMPTY"]
    assert any("hierarchy levels deep" in m for m in blocked.values())
    # /conformance/app/awsKEY is fine: only names beginning with aws/ssm are reserved
    assert harness.stored() == {"GOOD": "fine", "awsKEY": "x", "AT_LIMIT": "y" * 8192}
    # blocked keys cost no call: 3 creates, nothing for the blocked ones
    assert calls(wb)["put"] == 3


async def test_names_over_the_length_limit_are_blocked(harness: SsmHarness, tmp_path: Path) -> None:
    arn = len(f"arn:aws:ssm:{REGION}:123456789012:parameter")
    room = 1011 - arn - len(PATH)
    wb = bench(harness, tmp_path, {"A" * room: "fits", "B" * (room + 1): "too long"})
    pair = await wb.pair()
    assert [(k[:1], kind) for k, kind, _ in pair.problems] == [("B", "blocked")]
    assert "1011-character limit" in pair.problems[0][2]
    assert harness.stored() == {"A" * room: "fits"}


async def test_standard_tier_blocks_values_over_4kb(aws: None, tmp_path: Path) -> None:
    h = SsmHarness(tier="standard")
    wb = bench(h, tmp_path, {"AT": "a" * 4096, "OVER": "b" * 4097})
    pair = await wb.pair()
    assert [(k, kind) for k, kind, _ in pair.problems] == [("OVER", "blocked")]
    assert "4096-byte limit" in pair.problems[0][2]
    assert h.describe("AT")["Tier"] == "Standard"


async def test_auto_tier_uses_intelligent_tiering(harness: SsmHarness, tmp_path: Path) -> None:
    # Parameter Store itself picks Standard up to 4 KB and Advanced above; moto records
    # the requested tier as it is
    wb = bench(harness, tmp_path, {"K": "v"})
    await wb.pair()
    assert harness.describe("K")["Tier"] == "Intelligent-Tiering"


async def test_parameters_are_secure_strings_with_kms_key_and_tags(
    aws: None, tmp_path: Path
) -> None:
    h = SsmHarness(kms_key_id="alias/syncd-test", tags={"team": "platform"})
    wb = bench(h, tmp_path, {"K": "v"})
    await wb.pair()
    p = h.describe("K")
    assert p["Type"] == "SecureString"
    assert p["KeyId"] == "alias/syncd-test"
    assert h.tags("K") == {"managed-by": "syncd", "syncd:sync": "main", "team": "platform"}


# ---------------------------------------------------------------------------- calls


async def test_call_counts_unchanged_run_and_one_changed_key(
    harness: SsmHarness, tmp_path: Path
) -> None:
    source = {f"KEY_{i:03d}": f"value-{i}" for i in range(100)}
    wb = bench(harness, tmp_path, source)
    first = await wb.pair()
    assert first.counts["created"] == 100, first.problems
    c = calls(wb)
    assert c["put"] == 100 and c["tag"] == 0  # tags go with the create
    assert c["get"] == 0  # nothing existed: no value was read

    # a second run before the drift check: no AWS call at all
    wb.hooks.calls.clear()
    second = await wb.pair()
    assert second.counts.get("writes", 0) == 0
    assert calls(wb) == Counter()

    # a drift check lists metadata (pages of 50) and reads no value: versions match
    wb.clock.advance(3601)
    wb.hooks.calls.clear()
    with record_requests() as seen:
        third = await wb.pair()
    assert third.plan is not None and third.plan.listed
    assert set(calls(wb)) == {"list"}
    assert {op for op, _ in seen} == {"DescribeParameters"}
    assert all(params["MaxResults"] == 50 for _, params in seen)
    # (moto answers 10 a page whatever is asked, so the page count is not asserted)

    # 1 of 100 changed: exactly one write call, and nothing else between drift checks
    wb.set_source(dict(source, KEY_042="rotated"))
    wb.hooks.calls.clear()
    fourth = await wb.pair()
    assert fourth.counts["updated"] == 1 and fourth.counts["writes"] == 1
    assert calls(wb) == Counter({"put": 1})
    assert harness.stored()["KEY_042"] == "rotated"
    assert wb.records(DEST)["KEY_042"].version == "2"


async def test_drift_check_reads_only_moved_versions_and_restores(
    harness: SsmHarness, tmp_path: Path
) -> None:
    source = {f"K{i}": f"v{i}" for i in range(30)}
    wb = bench(harness, tmp_path, source)
    await wb.pair()
    harness.ssm.put_parameter(Name=PATH + "K7", Value="edited by hand", Overwrite=True)
    wb.clock.advance(3601)
    wb.hooks.calls.clear()
    pair = await wb.pair()
    assert [c.key for c in pair.plan.changes if c.drift] == ["K7"]  # type: ignore[union-attr]
    c = calls(wb)
    assert c["get"] == 1  # one GetParameters call, for K7 alone
    assert c["put"] == 1
    assert harness.stored()["K7"] == "v7"


async def test_deletes_go_in_batches_of_ten_and_only_tagged_parameters(
    harness: SsmHarness, tmp_path: Path
) -> None:
    source = {f"K{i:02d}": f"v{i}" for i in range(30)}
    wb = bench(harness, tmp_path, source, max_delete_fraction=1.0)
    await wb.pair()
    # someone removes the ownership tag of K00: syncd must not delete it
    harness.ssm.remove_tags_from_resource(
        ResourceType="Parameter", ResourceId=PATH + "K00", TagKeys=["managed-by"]
    )
    keep = {k: v for k, v in source.items() if k >= "K25"}
    wb.set_source(keep)
    wb.hooks.calls.clear()
    pair = await wb.pair()
    assert pair.counts["deleted"] == 24
    assert [(k, kind) for k, kind, _ in pair.problems] == [("K00", "failed")]
    assert "managed-by: syncd" in pair.problems[0][2]
    assert calls(wb)["delete"] == 3  # 24 names: 10 + 10 + 4
    assert harness.stored() == {"K00": "v0", **keep}


async def test_lost_state_recognises_its_own_parameters_by_tag(
    harness: SsmHarness, tmp_path: Path
) -> None:
    source = {"A": "1", "B": "2"}
    await bench(harness, tmp_path / "one", source).pair()
    harness.put_unmanaged("C", "foreign")
    # a fresh state store (a new machine, a lost volume) with on_conflict: fail
    wb = bench(harness, tmp_path / "two", {**source, "C": "3"}, on_conflict="fail")
    pair = await wb.pair()
    assert [(k, kind) for k, kind, _ in pair.problems] == [("C", "conflict")]
    assert pair.counts.get("writes", 0) == 0
    assert calls(wb)["tags"] == 3  # ownership read only for the unrecorded keys
    assert set(wb.records(DEST)) == {"A", "B"}
    assert harness.stored() == {"A": "1", "B": "2", "C": "foreign"}


async def test_parameter_deleted_out_of_band_is_recreated_with_tags(
    harness: SsmHarness, tmp_path: Path
) -> None:
    wb = bench(harness, tmp_path, {"K": "v1"})
    await wb.pair()
    harness.ssm.delete_parameter(Name=PATH + "K")
    # between drift checks syncd does not know it is gone; the changed value re-creates it
    wb.set_source({"K": "v2"})
    wb.hooks.calls.clear()
    pair = await wb.pair()
    assert pair.counts["updated"] == 1
    assert calls(wb) == Counter({"put": 1, "tag": 1})
    assert harness.stored() == {"K": "v2"}
    assert harness.tags("K")["managed-by"] == "syncd"


def _change(dest: ParameterStoreDestination, key: str, value: str, action: Action) -> Change:
    d = DesiredEntry(key, SecretValue(value), key, "fp")
    return Change(key, action, "test", desired=d, sync="main", write=True, created=True)


async def test_create_that_meets_its_own_earlier_attempt_overwrites(harness: SsmHarness) -> None:
    cfg = ParameterStoreDestination.Config.model_validate(harness.destination)
    dest = ParameterStoreDestination(DEST, cfg, ConnectorContext())
    # an earlier attempt landed but its answer was lost: the parameter carries our tags
    harness.ssm.put_parameter(
        Name=PATH + "MINE",
        Value="v",
        Type="SecureString",
        Tags=[{"Key": "managed-by", "Value": "syncd"}, {"Key": "syncd:sync", "Value": "main"}],
    )
    harness.put_unmanaged("THEIRS", "foreign")
    out = await dest.upsert([_change(dest, "MINE", "v", Action.CREATE)])
    assert out[0].error is None and out[0].version == "2"
    out = await dest.upsert([_change(dest, "THEIRS", "mine now?", Action.CREATE)])
    assert isinstance(out[0].error, ConflictError)
    assert harness.stored()["THEIRS"] == "foreign"


# ---------------------------------------------------------------------------- errors


def _client_error(code: str, op: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


def test_classification() -> None:
    assert isinstance(
        classify(_client_error("ThrottlingException", "PutParameter"), "ssm"), RateLimited
    )
    assert isinstance(classify(_client_error("TooManyUpdates", "PutParameter"), "ssm"), RateLimited)
    assert isinstance(
        classify(_client_error("InternalServerError", "PutParameter", status=500), "ssm"),
        RetryableError,
    )
    quota = classify(_client_error("ParameterLimitExceeded", "PutParameter"), "ssm")
    assert isinstance(quota, QuotaExceeded) and "quota" in str(quota)
    assert isinstance(
        classify(_client_error("ExpiredTokenException", "GetParameters"), "ssm"), AuthError
    )
    assert isinstance(
        classify(_client_error("HierarchyLevelLimitExceededException", "PutParameter"), "ssm"),
        KeyRejected,
    )


def test_access_denied_names_the_missing_iam_action() -> None:
    denied = classify(
        _client_error(
            "AccessDeniedException",
            "PutParameter",
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
            "ssm:PutParameter on resource: arn:aws:ssm:us-east-1:123456789012:parameter/x "
            "because no identity-based policy allows the ssm:PutParameter action",
        ),
        "ssm",
    )
    assert isinstance(denied, AuthError)
    assert "ssm:PutParameter" in str(denied)
    assert "arn:aws:iam" not in str(denied)
    # without the action in the message: the operation's own action
    bare = classify(_client_error("AccessDeniedException", "DeleteParameters"), "ssm")
    assert "ssm:DeleteParameters" in str(bare)


def test_error_messages_never_carry_the_platform_text() -> None:
    leak = "super-secret-value-123"
    err = classify(
        _client_error("ValidationException", "PutParameter", f"Value '{leak}' at 'value' failed"),
        "ssm",
    )
    assert leak not in str(err)
    err = classify(
        ParamValidationError(report=f"Invalid type for parameter Value, value: {leak}"), "ssm"
    )
    assert leak not in str(err)


async def test_access_denied_fails_the_pair_with_the_iam_action(
    harness: SsmHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wb = bench(harness, tmp_path, {"A": "1", "B": "2"})
    original = botocore.client.BaseClient._make_api_call

    def deny(client: Any, operation: str, params: Any) -> Any:
        if operation == "PutParameter":
            raise _client_error(
                "AccessDeniedException",
                operation,
                "User: arn:aws:sts::1:assumed-role/r/s is not authorized to perform: "
                "ssm:PutParameter on resource: arn:aws:ssm:us-east-1:1:parameter/x",
            )
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", deny)
    pair = await wb.pair()
    assert pair.result == "failed"
    assert all("ssm:PutParameter" in m for _, _, m in pair.problems)
    assert calls(wb)["put"] == 1  # the first refusal stops the pair: no retry storm
    assert not wb.clock.sleeps


# ---------------------------------------------------------------------------- config


def _load(tmp_path: Path, body: dict[str, Any]) -> Any:
    import yaml

    cfg = {
        "version": 1,
        "sources": {"s": {"type": "file", "path": "secrets.yaml"}},
        "destinations": {"ssm": {"type": "aws-parameter-store", **body}},
        "syncs": [{"name": "x", "from": "s", "to": ["ssm"]}],
    }
    f = tmp_path / "syncd.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return load_config(f, env={})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"path": "myapp/prod/"}, "starting with '/'"),
        ({"path": "/aws/prod/"}, "reserved by AWS"),
        ({"path": "/my app/"}, "levels are letters"),
        ({"path": "/a/", "tier": "premium"}, "destinations.ssm.tier"),
        ({"path": "/a/", "tags": {"managed-by": "me"}}, "set by syncd itself"),
        ({"path": "/a/", "tags": {"aws:x": "y"}}, "reserved by AWS"),
        ({"path": "/a/", "writes_per_second": 0}, "greater than 0"),
        ({"path": "/a/", "regoin": "us-east-1"}, "unknown key"),
        ({}, "destinations.ssm.path: required"),
    ],
)
def test_config_errors(tmp_path: Path, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigErrors) as err:
        _load(tmp_path, body)
    assert message in str(err.value)


def test_config_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"path": "/myapp/prod", "region": "eu-west-1"})
    dest = cfg.destinations["ssm"].config
    assert dest.path == "/myapp/prod/"
    assert dest.tier == "auto" and dest.kms_key_id is None and dest.tags == {}
    d = ParameterStoreDestination("ssm", dest, ConnectorContext())
    assert d.capabilities.default_key_template == "{path}{key}"
    assert d.capabilities.delete_batch_size == 10
    assert d.capabilities.writes_per_minute == 40 * 60  # the standard throughput


def test_remote_entries_are_plain_data() -> None:
    # the connector hands the planner RemoteEntry values whose repr never shows a value
    e = RemoteEntry("K", SecretValue("hidden-123"), "3")
    assert "hidden-123" not in repr(e)


# ---------------------------------------------------------------------------- IAM policy

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "iam" / "parameter-store-policy.json"


def policy_actions(path: Path) -> set[str]:
    out: set[str] = set()
    for statement in json.loads(path.read_text())["Statement"]:
        actions = statement["Action"]
        out.update([actions] if isinstance(actions, str) else actions)
    return out


async def test_iam_policy_lists_exactly_the_actions_syncd_calls(
    harness: SsmHarness, tmp_path: Path
) -> None:
    harness.put_unmanaged("ADOPTED", "foreign")
    with record_requests() as seen:
        wb = bench(harness, tmp_path, {"A": "1", "B": "2", "ADOPTED": "mine"})
        await wb.pair()  # list, tags + value of the unrecorded ADOPTED, creates, adopt
        harness.ssm.delete_parameter(Name=PATH + "A")
        wb.set_source({"A": "1b", "B": "2", "ADOPTED": "mine"})
        await wb.pair()  # re-created by an overwrite: tags follow
        wb.set_source({"A": "1b", "ADOPTED": "mine"})
        await wb.pair()  # ownership check, then the delete
        cfg = ParameterStoreDestination.Config.model_validate(harness.destination)
        await ParameterStoreDestination(DEST, cfg, ConnectorContext()).check()
    called = {f"ssm:{op}" for op, _ in seen if op not in HARNESS_OPS}
    assert called == policy_actions(POLICY)
    for statement in json.loads(POLICY.read_text())["Statement"]:
        if statement["Resource"] != "*":
            assert statement["Resource"].endswith(":parameter/myapp/prod/*")
