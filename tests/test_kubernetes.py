"""The ``kubernetes`` destination, driven through the engine against a stateful fake of the
Kubernetes API: the conformance suite, then what a user sharing a Secret notices: keys
owned per sync through server-side apply, other managers' keys left alone, on_conflict,
the Secret created and deleted, limits, rollout restarts, the connection, RBAC."""

from __future__ import annotations

import base64
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import certifi
import pytest
import yaml
from structlog.testing import capture_logs

from syncd.connector import ConnectorContext
from syncd.connectors.kubernetes import (
    MANAGED_BY,
    RESTARTED_AT,
    SERVICE_ACCOUNT_KEY,
    KubernetesDestination,
    references_secret,
)
from syncd.daemon import Daemon
from syncd.errors import ConfigErrors
from syncd.testing.conformance import DestinationConformance
from syncd.testing.workbench import Workbench
from tests.fakes.kubernetes_api import FakeKubernetes

DEST = "k8s"
SECRET = "app-secrets"
NS = "apps"
ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "deploy" / "kubernetes" / "base" / "role.yaml"
BINDING = ROOT / "deploy" / "kubernetes" / "base" / "rolebinding.yaml"


def kubeconfig(folder: Path, fake: FakeKubernetes) -> Path:
    path = folder / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {
                            "server": "https://k8s.test:6443",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "syncd", "user": {"token": fake.token}}],
                "contexts": [
                    {"name": "test", "context": {"cluster": "test", "user": "syncd"}},
                    {
                        "name": "other",
                        "context": {"cluster": "test", "user": "syncd", "namespace": NS},
                    },
                ],
                "current-context": "test",
            }
        )
    )
    return path


# ---------------------------------------------------------------------------- harness


class KubernetesHarness:
    def __init__(self, folder: Path) -> None:
        self.fake = FakeKubernetes(namespace=NS)
        self.destination: dict[str, Any] = {
            "type": "kubernetes",
            "kubeconfig": str(kubeconfig(folder, self.fake)),
            "namespace": NS,
            "secret": SECRET,
        }
        self.env: dict[str, str] = {}
        self.context_extra = {"httpx_transport": self.fake.transport}

    def stored(self) -> dict[str, str]:
        return self.fake.values(SECRET)

    def put_unmanaged(self, key: str, value: str) -> None:
        self.fake.write_as("kubectl-edit", SECRET, {key: value})

    def throttle(self, calls: int) -> None:
        self.fake.throttle_next = calls


class TestKubernetesConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, tmp_path_factory: pytest.TempPathFactory) -> KubernetesHarness:
        return KubernetesHarness(tmp_path_factory.mktemp("kube"))


@pytest.fixture
def fake() -> FakeKubernetes:
    return FakeKubernetes(namespace=NS)


# ---------------------------------------------------------------------------- helpers


def bench(
    root: Path,
    fake: FakeKubernetes,
    source: dict[str, Any],
    *,
    dest: dict[str, Any] | None = None,
    extra_syncs: list[dict[str, Any]] | None = None,
    extra_sources: dict[str, dict[str, Any]] | None = None,
    **sync: Any,
) -> Workbench:
    body = {
        "type": "kubernetes",
        "kubeconfig": str(kubeconfig(root, fake)),
        "namespace": NS,
        "secret": SECRET,
        **(dest or {}),
    }
    wb = Workbench(
        root,
        {DEST: body},
        source=source,
        sync=sync or None,
        context_extra={"httpx_transport": fake.transport},
        extra_syncs=extra_syncs or (),
        extra_sources=extra_sources,
    )
    wb.context_extra["wall_clock"] = wb.clock.wall
    return wb


def calls(wb: Workbench) -> Counter[str]:
    out: Counter[str] = Counter()
    for (dest, op, _status), n in wb.hooks.calls.items():
        if dest == DEST:
            out[op] += n
    return out


def set_destination(wb: Workbench, **fields: Any) -> None:
    body = yaml.safe_load(wb.config_file.read_text())
    body["destinations"][DEST].update(fields)
    wb.config_file.write_text(yaml.safe_dump(body, sort_keys=False))


def past_drift_check(wb: Workbench) -> None:
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)


def two_syncs(root: Path, fake: FakeKubernetes, a: dict[str, str], b: dict[str, str]) -> Workbench:
    other = root / "other.yaml"
    other.write_text(yaml.safe_dump(b))
    return bench(
        root,
        fake,
        a,
        extra_sources={"other": {"type": "file", "path": str(other)}},
        extra_syncs=[{"name": "billing", "from": "other", "to": [DEST]}],
    )


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"secret": "App_Secrets"}, "not a valid Secret name"),
        ({"namespace": "Apps"}, "not a valid namespace"),
        ({"restart": ["deploy/web"]}, "expected deployment/NAME"),
        ({"restart": []}, "at least one workload"),
        ({"restart": ["deployment/web", "deployment/web"]}, "listed twice"),
        ({"kubeconfig": None, "context": "prod"}, "set kubeconfig too"),
        ({"labels": {MANAGED_BY: "me"}}, "syncd's own"),
    ],
)
def test_config_refuses_what_kubernetes_would_refuse(
    tmp_path: Path, fake: FakeKubernetes, fields: dict[str, Any], expected: str
) -> None:
    wb = bench(tmp_path, fake, {"A": "1"}, dest=fields)
    with pytest.raises(ConfigErrors) as info:
        wb.config()
    assert "destinations.k8s" in str(info.value) and expected in str(info.value)


# ---------------------------------------------------------------------------- ownership


async def test_first_sync_creates_the_secret_labelled_and_owns_its_keys(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    wb = bench(
        tmp_path,
        fake,
        {"DB_URL": "postgres://u:p-1@h/db", "API.TOKEN": "tok-1"},
        dest={"labels": {"team": "web"}, "annotations": {"owner": "platform"}},
    )
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    secret = fake.secret(SECRET)
    assert secret is not None
    assert secret["metadata"]["labels"] == {MANAGED_BY: "syncd", "team": "web"}
    assert secret["metadata"]["annotations"] == {"owner": "platform"}
    assert secret["type"] == "Opaque"
    # data holds base64, as Kubernetes stores it
    assert secret["data"]["API.TOKEN"] == base64.b64encode(b"tok-1").decode()
    assert fake.owners(SECRET) == {"DB_URL": {"syncd/main"}, "API.TOKEN": {"syncd/main"}}
    applies = [r for r in fake.writes() if r.method == "PATCH"]
    assert [r.content_type for r in applies] == ["application/apply-patch+yaml"]
    assert applies[0].params == {"fieldManager": "syncd/main", "force": "false"}
    # unchanged: no call between drift checks, and a drift check is one read
    fake.requests.clear()
    assert (await wb.pair()).counts.get("writes", 0) == 0
    assert fake.requests == []
    past_drift_check(wb)
    assert (await wb.pair()).counts.get("writes", 0) == 0
    assert [(r.method, r.resource) for r in fake.requests] == [("GET", "secrets")]


async def test_two_syncs_own_different_keys_of_one_secret(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    web = {"WEB_TOKEN": "web-token-1", "SHARED_URL": "https://web.example.test"}
    billing = {"BILLING_KEY": "billing-key-1"}
    wb = two_syncs(tmp_path, fake, web, billing)
    results = {r.name: r for r in await wb.once()}
    assert all(p.result == "ok" for r in results.values() for p in r.pairs)
    assert fake.values(SECRET) == {**web, **billing}
    assert fake.owners(SECRET) == {
        "WEB_TOKEN": {"syncd/main"},
        "SHARED_URL": {"syncd/main"},
        "BILLING_KEY": {"syncd/billing"},
    }
    # a re-run, drift check included, writes nothing
    past_drift_check(wb)
    fake.requests.clear()
    again = await wb.once()
    assert all(p.counts.get("writes", 0) == 0 for r in again for p in r.pairs)
    assert fake.writes() == []
    # removing a key from one sync removes that key only
    wb.set_source({"WEB_TOKEN": "web-token-1"})
    await wb.once()
    assert fake.values(SECRET) == {"WEB_TOKEN": "web-token-1", **billing}
    # the other sync's last key goes: the Secret stays while the first sync holds keys
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({}))
    results = {r.name: r for r in await wb.once(force=True)}
    assert results["billing"].pairs[0].counts.get("deleted") == 1
    assert fake.values(SECRET) == {"WEB_TOKEN": "web-token-1"}
    # and when the first sync's last key goes too, syncd deletes the Secret it created
    wb.set_source({})
    await wb.once(force=True)
    assert fake.secret(SECRET) is None
    assert [r.method for r in fake.writes()][-1] == "DELETE"


async def test_keys_of_another_field_manager_are_left_alone_and_keep_the_secret(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1", "B_KEY": "bravo-1"})
    await wb.pair()
    fake.write_as("kubectl-edit", SECRET, {"HAND_MADE": "by-hand-1"})
    past_drift_check(wb)
    pair = await wb.pair()
    assert pair.counts.get("writes", 0) == 0
    wb.set_source({})
    await wb.pair(force=True)
    # syncd released its keys; the Secret stays, holding the key someone else owns
    assert fake.values(SECRET) == {"HAND_MADE": "by-hand-1"}
    assert fake.owners(SECRET) == {"HAND_MADE": {"kubectl-edit"}}


async def test_a_secret_syncd_did_not_create_is_never_deleted(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    fake.write_as("helm", SECRET, {})
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"})
    await wb.pair()
    secret = fake.secret(SECRET)
    assert secret is not None and MANAGED_BY not in (secret["metadata"].get("labels") or {})
    wb.set_source({})
    await wb.pair(force=True)
    assert fake.secret(SECRET) is not None and fake.values(SECRET) == {}


@pytest.mark.parametrize("policy", ["overwrite", "skip", "fail"])
async def test_on_conflict_with_a_key_another_manager_owns(
    tmp_path: Path, fake: FakeKubernetes, policy: str
) -> None:
    fake.write_as("kubectl-edit", SECRET, {"API_TOKEN": "theirs-1"})
    wb = bench(tmp_path, fake, {"API_TOKEN": "ours-1", "OTHER": "other-1"}, on_conflict=policy)
    pair = await wb.pair()
    if policy == "overwrite":
        assert pair.counts.get("adopted") == 1 and pair.result == "ok"
        assert fake.values(SECRET)["API_TOKEN"] == "ours-1"
        assert fake.owners(SECRET)["API_TOKEN"] == {"syncd/main"}
        forced = [r for r in fake.writes() if r.method == "PATCH" and r.params["force"] == "true"]
        assert forced, "an adopted key is taken over with a forced apply"
    elif policy == "skip":
        assert pair.counts.get("skipped") == 1 and pair.result == "ok"
        assert fake.values(SECRET)["API_TOKEN"] == "theirs-1"
        assert fake.owners(SECRET)["API_TOKEN"] == {"kubectl-edit"}
    else:
        assert pair.result == "failed"
        assert [(k, kind) for k, kind, _ in pair.problems] == [("API_TOKEN", "conflict")]
        assert fake.values(SECRET)["API_TOKEN"] == "theirs-1"
    assert fake.values(SECRET)["OTHER"] == "other-1"


async def test_a_key_written_by_someone_else_after_the_listing_is_a_conflict(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"})
    await wb.pair()
    wb.set_source({"A_KEY": "alpha-1", "NEW_KEY": "ours-1"})

    def someone_writes(req: Any) -> None:
        if req.method == "PATCH":  # after syncd's listing and read, before its apply
            fake.before = None
            fake.write_as("kubectl-edit", SECRET, {"NEW_KEY": "theirs-1"})

    fake.before = someone_writes
    pair = await wb.pair()
    assert [(k, kind) for k, kind, _ in pair.problems] == [("NEW_KEY", "failed")]
    (message,) = [m for _, _, m in pair.problems]
    assert "kubectl-edit" in message and "not overwritten" in message
    assert fake.values(SECRET) == {"A_KEY": "alpha-1", "NEW_KEY": "theirs-1"}
    conflict = [r for r in fake.requests if r.method == "PATCH"][-2]
    assert conflict.params["force"] == "false"


async def test_a_label_another_manager_owns_with_another_value_fails_the_write(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    fake.write_as("helm", SECRET, {}, labels={"team": "payments"})
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"}, dest={"labels": {"team": "web"}})
    pair = await wb.pair()
    assert pair.result == "failed"
    ((key, _kind, message),) = pair.problems
    assert key == "A_KEY"
    assert ".metadata.labels.team (owned by helm)" in message
    assert fake.values(SECRET) == {}
    secret = fake.secret(SECRET)
    assert secret is not None and secret["metadata"]["labels"] == {"team": "payments"}


async def test_an_edit_by_hand_is_drift_restored_at_the_drift_check(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"})
    await wb.pair()
    secret = fake.secret(SECRET)
    assert secret is not None
    rv = secret["metadata"]["resourceVersion"]
    assert wb.records(DEST)["A_KEY"].version == rv
    fake.write_as("kubectl-edit", SECRET, {"A_KEY": "edited-by-hand"})
    past_drift_check(wb)
    pair = await wb.pair()
    assert pair.counts.get("drift") == 1 and pair.counts.get("updated") == 1
    assert fake.values(SECRET) == {"A_KEY": "alpha-1"}
    assert fake.owners(SECRET)["A_KEY"] == {"syncd/main"}


async def test_a_stale_delete_is_retried_with_a_fresh_resource_version(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"})
    await wb.pair()
    fake.stale_next_delete = 1  # the Secret changes between syncd's read and its DELETE
    wb.set_source({})
    pair = await wb.pair(force=True)
    assert pair.result == "ok" and pair.counts.get("deleted") == 1
    assert fake.secret(SECRET) is None
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert len(deletes) == 2
    first, second = (r.body["preconditions"]["resourceVersion"] for r in deletes)
    assert first != second, "the retry carries the resourceVersion read again"


async def test_a_key_added_before_the_delete_keeps_the_secret(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"})
    await wb.pair()

    def someone_writes(req: Any) -> None:
        if req.method == "DELETE":
            fake.before = None
            fake.write_as("kubectl-edit", SECRET, {"LATE_KEY": "late-1"})

    fake.before = someone_writes
    wb.set_source({})
    pair = await wb.pair(force=True)
    assert pair.result == "ok"
    assert fake.values(SECRET) == {"LATE_KEY": "late-1"}


# ---------------------------------------------------------------------------- limits


async def test_bad_names_and_oversize_values_fail_that_key_only(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    source = {
        "GOOD_KEY": "good-1",
        "bad key!": "bad-name-value-1",
        "..hidden": "dots-value-1",
        "K" * 254: "long-name-value-1",
        "HUGE": "x" * (1024 * 1024 + 1),
    }
    wb = bench(tmp_path, fake, source)
    with capture_logs() as logs:
        pair = await wb.pair()
    blocked = {k: m for k, kind, m in pair.problems if kind == "blocked"}
    assert set(blocked) == {"bad key!", "..hidden", "K" * 254, "HUGE"}
    assert "letters, digits, '-', '_' and '.'" in blocked["bad key!"]
    assert "must not start with '..'" in blocked["..hidden"]
    assert "253-character limit" in blocked["K" * 254]
    assert "1048576-byte limit" in blocked["HUGE"]
    assert fake.values(SECRET) == {"GOOD_KEY": "good-1"}
    for value in source.values():
        assert value not in repr(logs) and value not in str(pair.problems)


async def test_keys_that_would_take_the_secret_over_1_mib_fail_alone(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    fake.write_as("kubectl-edit", SECRET, {"THEIRS": "t" * 600_000})
    wb = bench(tmp_path, fake, {"SMALL": "small-1", "BIG": "b" * 500_000})
    pair = await wb.pair()
    (problem,) = pair.problems
    assert problem[0] == "BIG"
    assert "over Kubernetes' limit of 1,048,576 bytes (1 MiB)" in problem[2]
    assert "b" * 50 not in problem[2]
    assert fake.values(SECRET)["SMALL"] == "small-1" and "BIG" not in fake.values(SECRET)


async def test_the_api_servers_size_refusal_is_a_rejected_key(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    """Another writer fills the Secret between syncd's read and its apply: Kubernetes
    answers 422, and the keys of that apply fail, naming the limit, never the value."""
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"})
    await wb.pair()
    wb.set_source({"A_KEY": "a" * 500_000})

    def fill(req: Any) -> None:
        if req.method == "PATCH":
            fake.before = None
            fake.write_as("kubectl-edit", SECRET, {"FILLER": "f" * 700_000})

    fake.before = fill
    pair = await wb.pair()
    ((key, kind, message),) = pair.problems
    assert key == "A_KEY" and kind == "failed"
    assert "HTTP 422" in message and "must have at most 1048576 bytes" in message
    assert "a" * 50 not in message


# ---------------------------------------------------------------------------- restart

POD_ENV_FROM = {"containers": [{"name": "web", "envFrom": [{"secretRef": {"name": SECRET}}]}]}
POD_ENV_KEY = {
    "initContainers": [
        {
            "name": "migrate",
            "env": [
                {
                    "name": "DB_URL",
                    "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "DB_URL"}},
                }
            ],
        }
    ],
    "containers": [{"name": "db"}],
}
POD_VOLUME = {
    "containers": [{"name": "agent"}],
    "volumes": [{"name": "s", "secret": {"secretName": SECRET}}],
}
POD_PROJECTED = {
    "containers": [{"name": "cron"}],
    "volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": SECRET}}]}}],
}
POD_OTHER = {
    "containers": [
        {
            "name": "other",
            "envFrom": [
                {"secretRef": {"name": "other-secret"}},
                {"configMapRef": {"name": SECRET}},
            ],
        }
    ],
    "volumes": [{"name": "c", "configMap": {"name": SECRET}}],
}


def workloads(fake: FakeKubernetes) -> None:
    fake.add_workload("Deployment", "web", POD_ENV_FROM)
    fake.add_workload("StatefulSet", "db", POD_ENV_KEY)
    fake.add_workload("DaemonSet", "agent", POD_VOLUME)
    fake.add_workload("Deployment", "cron", POD_PROJECTED)
    fake.add_workload("Deployment", "unrelated", POD_OTHER)
    fake.add_workload("Deployment", "elsewhere", POD_ENV_FROM, namespace="other")


def test_references_are_found_in_env_from_env_volumes_and_projected_volumes() -> None:
    for spec in (POD_ENV_FROM, POD_ENV_KEY, POD_VOLUME, POD_PROJECTED):
        assert references_secret({"spec": spec}, SECRET)
    assert not references_secret({"spec": POD_OTHER}, SECRET)


async def test_restart_auto_rolls_the_workloads_using_the_secret_once(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    workloads(fake)
    wb = bench(tmp_path, fake, {"DB_URL": "postgres://u:p-1@h/db"}, dest={"restart": "auto"})
    pair = await wb.pair()
    assert pair.after is not None and pair.after.state == "done", pair.after
    stamp = "2026-01-01T00:00:00Z"
    assert pair.after.message == (
        "then: rollout restart of deployment/cron, deployment/web, statefulset/db, "
        f"daemonset/agent (namespace {NS}): restartedAt {stamp}"
    )
    for kind, name in [
        ("Deployment", "web"),
        ("Deployment", "cron"),
        ("StatefulSet", "db"),
        ("DaemonSet", "agent"),
    ]:
        assert fake.restarted_at(kind, name) == stamp
    assert fake.restarted_at("Deployment", "unrelated") is None
    assert fake.restarted_at("Deployment", "elsewhere", namespace="other") is None
    (patch, *_) = fake.restarts()
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}
    }
    # nothing changed: no restart
    fake.requests.clear()
    assert (await wb.pair()).after is None
    past_drift_check(wb)
    assert (await wb.pair()).after is None
    assert fake.restarts() == []


async def test_restart_names_workloads_and_plan_shows_it_without_doing_it(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    workloads(fake)
    wb = bench(
        tmp_path,
        fake,
        {"A_KEY": "alpha-1"},
        dest={"restart": ["deployment/unrelated", "daemonset/agent"]},
    )
    planned = await wb.pair(dry_run=True)
    assert planned.after is not None
    assert planned.after.message == (
        f"then: rollout restart of deployment/unrelated, daemonset/agent (namespace {NS})"
    )
    assert fake.restarts() == [] and fake.writes() == []
    wb.clock.advance(90)
    done = await wb.pair()
    assert done.after is not None and done.after.state == "done"
    assert fake.restarted_at("Deployment", "unrelated") == "2026-01-01T00:01:30Z"
    assert fake.restarted_at("DaemonSet", "agent") == "2026-01-01T00:01:30Z"
    assert fake.restarted_at("Deployment", "web") is None
    # named workloads need no listing
    assert not [r for r in fake.requests if r.method == "GET" and r.resource != "secrets"]


async def test_restart_auto_with_no_workload_restarts_nothing(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    fake.add_workload("Deployment", "unrelated", POD_OTHER)
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"}, dest={"restart": "auto"})
    pair = await wb.pair()
    assert pair.after is not None and pair.after.state == "done"
    assert "no Deployment, StatefulSet or DaemonSet" in pair.after.message
    assert fake.restarts() == []


async def test_a_burst_of_changes_restarts_once_after_the_debounce(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    workloads(fake)
    wb = bench(
        tmp_path,
        fake,
        {"A_KEY": "alpha-0"},
        dest={"restart": ["deployment/web"]},
    )
    body = yaml.safe_load(wb.config_file.read_text())
    body["defaults"]["redeploy_debounce"] = "1m"
    wb.config_file.write_text(yaml.safe_dump(body, sort_keys=False))
    daemon = Daemon(
        wb.config(),
        wb.state,
        wb.fingerprint,
        engine_factory=lambda cfg, hooks: wb.engine(hooks),
        clock=wb.clock.monotonic,
        wall=wb.clock.wall,
        sleep=wb.clock.sleep,
        rng=lambda: 0.5,
    )
    try:
        await daemon.engine.run()
        await daemon.run_after_changes()
        assert wb.state.pending_after_changes() and fake.restarts() == []  # the debounce
        for i in range(1, 4):  # three changes, 20 s apart
            wb.clock.advance(20)
            wb.set_source({"A_KEY": f"alpha-{i}"})
            await daemon.engine.run()
            await daemon.run_after_changes()
        assert fake.restarts() == [], "the debounce counts from the last change"
        wb.clock.advance(61)
        await daemon.run_after_changes()
        assert wb.state.pending_after_changes() == []
        assert len(fake.restarts()) == 1
        assert fake.restarted_at("Deployment", "web") == "2026-01-01T00:02:01Z"
        # runs that change nothing restart nothing
        wb.clock.advance(600)
        await daemon.engine.run()
        await daemon.run_after_changes()
        assert len(fake.restarts()) == 1
    finally:
        await daemon.engine.aclose()


async def test_a_failed_restart_is_retried_with_the_same_timestamp(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    workloads(fake)
    wb = bench(
        tmp_path,
        fake,
        {"A_KEY": "alpha-1"},
        dest={"restart": ["deployment/web", "statefulset/db"]},
    )

    def fail_db_once(req: Any) -> None:
        if req.method == "PATCH" and req.resource == "statefulsets":
            fake.before = None
            fake.fail_next.append(503)

    fake.before = fail_db_once
    pair = await wb.pair()
    assert pair.after is not None and pair.after.state == "done"
    patched = [
        (r.resource, r.body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT])
        for r in fake.restarts()
    ]
    assert [p[0] for p in patched] == ["deployments", "statefulsets", "deployments", "statefulsets"]
    assert len({p[1] for p in patched}) == 1, "web is not rolled a second time"


async def test_a_restart_owed_across_a_new_write_rolls_everything_again(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    workloads(fake)
    wb = bench(
        tmp_path,
        fake,
        {"A_KEY": "alpha-1"},
        dest={"restart": ["deployment/web", "statefulset/db"]},
    )

    def db_down(req: Any) -> None:
        if req.method == "PATCH" and req.resource == "statefulsets":
            fake.fail_next.append(503)

    fake.before = db_down
    pair = await wb.pair()
    assert pair.after is not None and pair.after.state == "failed"
    first = fake.restarted_at("Deployment", "web")
    assert first is not None and fake.restarted_at("StatefulSet", "db") is None
    # a new value lands later: web must roll again to read it, not keep the old stamp
    fake.before = None
    wb.clock.advance(300)
    wb.set_source({"A_KEY": "alpha-2"})
    pair = await wb.pair()
    assert pair.after is not None and pair.after.state == "done"
    assert fake.restarted_at("Deployment", "web") == fake.restarted_at("StatefulSet", "db")
    assert fake.restarted_at("Deployment", "web") != first


async def test_a_forbidden_restart_names_the_missing_permission(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    workloads(fake)
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"}, dest={"restart": ["deployment/web"]})

    def forbid(req: Any) -> None:
        if req.method == "PATCH" and req.resource == "deployments":
            fake.fail_next.append(403)

    fake.before = forbid
    pair = await wb.pair()
    assert pair.result == "ok"
    assert pair.after is not None and pair.after.state == "failed"
    assert "HTTP 403" in pair.after.message and "patch on deployments" in pair.after.message


# ---------------------------------------------------------------------------- connection


async def test_in_cluster_config_comes_from_the_service_account_folder(
    tmp_path: Path, fake: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(fake.token)
    (sa / "namespace").write_text(NS)
    shutil.copy(certifi.where(), sa / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    wb = Workbench(
        tmp_path,
        {DEST: {"type": "kubernetes", "secret": SECRET}},  # no namespace: the pod's own
        source={"A_KEY": "alpha-1"},
        context_extra={"httpx_transport": fake.transport, SERVICE_ACCOUNT_KEY: str(sa)},
    )
    pair = await wb.pair()
    assert pair.result == "ok", pair.error
    assert fake.values(SECRET) == {"A_KEY": "alpha-1"}
    assert all(f"/namespaces/{NS}/" in r.path for r in fake.requests)
    # a rotated token is read again
    fake.token = "rotated-token-2"
    (sa / "token").write_text(fake.token)
    wb.set_source({"A_KEY": "alpha-2"})
    assert (await wb.pair()).result == "ok"


async def test_outside_a_pod_without_kubeconfig_the_pair_fails_clearly(
    tmp_path: Path, fake: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    wb = Workbench(
        tmp_path,
        {DEST: {"type": "kubernetes", "secret": SECRET}},
        source={"A_KEY": "alpha-1"},
        context_extra={"httpx_transport": fake.transport, SERVICE_ACCOUNT_KEY: str(tmp_path)},
    )
    pair = await wb.pair()
    assert pair.result == "error"
    assert pair.error is not None and "not running in a pod" in pair.error
    assert fake.requests == []


async def test_kubeconfig_context_picks_the_namespace(tmp_path: Path, fake: FakeKubernetes) -> None:
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"}, dest={"namespace": None, "context": "other"})
    assert (await wb.pair()).result == "ok"
    assert fake.values(SECRET) == {"A_KEY": "alpha-1"}


async def test_a_rejected_token_stops_the_pair(tmp_path: Path, fake: FakeKubernetes) -> None:
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"})
    fake.token = "another-token"
    pair = await wb.pair()
    assert pair.result == "error" and pair.error is not None and "HTTP 401" in pair.error
    assert len(fake.requests) == 1


async def test_an_existing_secret_of_another_type_is_refused(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    fake.write_as("cert-manager", SECRET, {"tls.crt": "certificate-1"})
    fake.secrets[(NS, SECRET)].body["type"] = "kubernetes.io/tls"
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1"})
    pair = await wb.pair()
    assert pair.result == "error" and pair.error is not None
    assert "is of type kubernetes.io/tls" in pair.error and "secret_type" in pair.error
    assert fake.writes() == []


# ---------------------------------------------------------------------------- RBAC


def role_rules() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the Role grants."""
    role = yaml.safe_load(ROLE.read_text())
    assert role["kind"] == "Role"
    out = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


async def test_the_role_grants_exactly_the_calls_syncd_makes(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    workloads(fake)
    wb = bench(tmp_path, fake, {"A_KEY": "alpha-1", "B_KEY": "bravo-1"}, dest={"restart": "auto"})
    await wb.pair()  # get (absent), create, apply, list workloads, restart them
    wb.set_source({"A_KEY": "alpha-2"})
    await wb.pair(force=True)  # get, apply without B_KEY, restart
    wb.set_source({})
    await wb.pair(force=True)  # get, delete the Secret it created
    cfg = KubernetesDestination.Config.model_validate(
        {**yaml.safe_load(wb.config_file.read_text())["destinations"][DEST]}
    )
    dest = KubernetesDestination(
        DEST, cfg, ConnectorContext(extra={"httpx_transport": fake.transport})
    )
    try:
        await dest.check()
    finally:
        await dest.aclose()
    made = {
        ("apps" if r.path.startswith("/apis/apps/") else "", r.resource, r.verb)
        for r in fake.requests
    }
    assert made == role_rules()
    role = yaml.safe_load(ROLE.read_text())
    for rule in role["rules"]:
        if rule["resources"] == ["secrets"] and "create" not in rule["verbs"]:
            assert rule["resourceNames"], "get, patch and delete are limited to the Secret"
    binding = yaml.safe_load(BINDING.read_text())
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "syncd"}]


# ---------------------------------------------------------------------------- values


async def test_values_never_reach_logs_errors_or_requests_other_than_the_apply(
    tmp_path: Path, fake: FakeKubernetes
) -> None:
    secret_value = "k8s-secret-value-5c1e9a"
    wb = bench(tmp_path, fake, {"A_KEY": secret_value, "bad key!": "blocked-value-77d1"})
    fake.fail_next.append(500)
    with capture_logs() as logs:
        await wb.pair()
        fake.write_as("kubectl-edit", SECRET, {"A_KEY": "edited-value-3e3e"})
        past_drift_check(wb)
        await wb.pair()
    text = repr(logs)
    for value in (secret_value, "blocked-value-77d1", "edited-value-3e3e"):
        assert value not in text
        assert value.encode() not in wb.state_bytes()
    encoded = base64.b64encode(secret_value.encode()).decode()
    assert encoded not in text
    carrying = [r for r in fake.requests if encoded in repr(r.body)]
    assert carrying and all(r.method == "PATCH" for r in carrying)
