"""The GitLab CI/CD variables destination, driven through the real python-gitlab client
against a stateful fake of GitLab's REST API served on localhost."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.connector import ConnectorContext
from syncd.connectors.gitlab import GitLabDestination, managed_by, mask_problem
from syncd.errors import AuthError, ConfigErrors, PermanentError
from syncd.testing import Workbench
from syncd.testing.conformance import DestinationConformance
from tests.fakes.gitlab_server import Container, FakeGitLab

DEST = "gl"


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab() as server:
        yield server


class GitLabHarness:
    def __init__(self, fake: FakeGitLab, container: Container, **options: Any) -> None:
        self.fake = fake
        self.container = container
        self.scope = options.get("environment_scope", "*")
        target = "project" if container.kind == "projects" else "group"
        self.destination: dict[str, Any] = {
            "type": "gitlab",
            "url": fake.url,
            "token": "${GITLAB_TOKEN}",
            target: container.path,
            **options,
        }
        self.env = {"GITLAB_TOKEN": fake.token}
        self.context_extra: dict[str, Any] = {}

    def stored(self) -> dict[str, str]:
        return self.fake.stored(self.container, self.scope)

    def put_unmanaged(self, key: str, value: str) -> None:
        self.fake.put(self.container, key, value, environment_scope=self.scope)

    def throttle(self, calls: int) -> None:
        self.fake.throttle_next = calls


class TestGitLabProjectConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, fake: FakeGitLab) -> GitLabHarness:
        return GitLabHarness(fake, fake.project("acme/api"))


class TestGitLabGroupConformance(DestinationConformance):
    @pytest.fixture
    def harness(self, fake: FakeGitLab) -> GitLabHarness:
        return GitLabHarness(fake, fake.group("acme/platform"), environment_scope="production")


# ---------------------------------------------------------------------- helpers


def bench(
    tmp_path: Path,
    fake: FakeGitLab,
    container: Container,
    source: dict[str, str],
    *,
    sync: dict[str, Any] | None = None,
    **options: Any,
) -> Workbench:
    h = GitLabHarness(fake, container, **options)
    return Workbench(tmp_path, {DEST: h.destination}, source=source, sync=sync, env=h.env)


def reconfigure(wb: Workbench, **options: Any) -> None:
    """Change the destination's options in the config file, as a person would."""
    body = yaml.safe_load(wb.config_file.read_text())
    body["destinations"][DEST].update(options)
    wb.config_file.write_text(yaml.safe_dump(body, sort_keys=False))


def drift_due(wb: Workbench) -> None:
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)


def calls(wb: Workbench) -> Counter[str]:
    """Platform calls reported so far, by operation."""
    out: Counter[str] = Counter()
    for (_, operation, _), n in wb.hooks.calls.items():
        out[operation] += n
    return out


def values(n: int) -> dict[str, str]:
    return {f"KEY_{i:03d}": f"value-{i:03d}-7f3a9c1e" for i in range(n)}


# ---------------------------------------------------------------------- call counts


async def test_no_call_between_drift_checks_and_one_write_for_one_changed_key(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    source = values(100)
    wb = bench(tmp_path, fake, project, source)

    first = await wb.pair()
    assert first.result == "ok", first.problems or first.error
    assert calls(wb) == {"list": 1, "create": 100}
    assert fake.stored(project) == source

    # unchanged source, no drift check due: not a single request reaches GitLab
    before = len(fake.requests)
    second = await wb.pair()
    assert second.counts.get("unchanged") == 100
    assert len(fake.requests) == before

    # one changed key of 100: exactly one request, the update, addressed to its scope
    changed = dict(source, KEY_042="value-042-rotated-5e5e")
    wb.set_source(changed)
    third = await wb.pair()
    assert third.counts.get("updated") == 1
    new = fake.requests[before:]
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in new] == [("PUT", "KEY_042")]
    assert new[0].query == {"filter[environment_scope]": "*"}
    assert fake.stored(project) == changed

    # a drift check reads one page of 100 and writes nothing
    drift_due(wb)
    before = len(fake.requests)
    fourth = await wb.pair()
    assert fourth.plan is not None and fourth.plan.listed
    assert fourth.counts.get("writes", 0) == 0
    listed = fake.requests[before:]
    assert [r.method for r in listed] == ["GET"]
    assert listed[0].query == {"per_page": "100", "page": "1"}


async def test_every_request_is_reported_once(tmp_path: Path, fake: FakeGitLab) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, values(5))
    fake.throttle_next = 1
    await wb.pair()
    wb.set_source(values(3))
    await wb.pair()
    # python-gitlab made no request of its own: the fake saw exactly what syncd counted
    assert sum(calls(wb).values()) == len(fake.requests)
    assert wb.hooks.calls[(DEST, "list", "429")] == 1


async def test_listing_follows_pagination(tmp_path: Path, fake: FakeGitLab) -> None:
    project = fake.project()
    for i in range(240):
        fake.put(project, f"OTHER_{i:03d}", f"someone-else-{i:03d}")
    fake.put(project, "LATE_KEY", "foreign-value-on-page-3")  # the 241st: page 3 of 100
    wb = bench(
        tmp_path,
        fake,
        project,
        {"LATE_KEY": "syncd-value-0000000", "NEW_KEY": "syncd-new-value-1"},
        sync={"on_conflict": "skip"},
    )
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    gets = fake.calls("GET")
    assert [r.query.get("page") for r in gets] == ["1", "2", "3"]
    assert all(r.query.get("per_page") == "100" for r in gets)
    assert pair.counts.get("skipped") == 1 and pair.counts.get("created") == 1
    assert fake.stored(project)["LATE_KEY"] == "foreign-value-on-page-3"
    assert len(fake.stored(project)) == 242


# ---------------------------------------------------------------------- scopes


async def test_environment_scope_is_the_only_scope_touched(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    fake.put(project, "DB_URL", "postgres://everyone-else", environment_scope="*")
    fake.put(project, "STAGING_ONLY", "staging-value-1234", environment_scope="staging")
    wb = bench(
        tmp_path,
        fake,
        project,
        {"DB_URL": "postgres://production-1", "API_KEY": "production-key-1"},
        environment_scope="production",
    )
    first = await wb.pair()
    assert first.result == "ok", first.problems or first.error
    assert first.counts.get("created") == 2  # the "*" DB_URL is not ours to adopt
    assert fake.stored(project, "production") == {
        "DB_URL": "postgres://production-1",
        "API_KEY": "production-key-1",
    }

    # an update and a delete of a key that exists under two scopes: GitLab answers 409
    # to either without filter[environment_scope]
    wb.set_source({"DB_URL": "postgres://production-2", "API_KEY": "production-key-1"})
    assert (await wb.pair()).counts.get("updated") == 1
    wb.set_source({"API_KEY": "production-key-1"})
    gone = await wb.pair()
    assert gone.result == "ok", gone.problems or gone.error
    assert gone.counts.get("deleted") == 1

    assert fake.stored(project, "production") == {"API_KEY": "production-key-1"}
    assert fake.stored(project, "*") == {"DB_URL": "postgres://everyone-else"}
    assert fake.stored(project, "staging") == {"STAGING_ONLY": "staging-value-1234"}
    for r in fake.requests:
        if r.method in ("PUT", "DELETE") or (r.method == "GET" and "DB_URL" in r.path):
            assert r.query == {"filter[environment_scope]": "production"}, r


# ---------------------------------------------------------------------- masking


def test_masking_rules() -> None:
    assert mask_problem("abcdefgh", raw=True) is None
    assert mask_problem("pa$$w0rd|x!", raw=True) is None
    assert mask_problem("pa$$w0rd|x!", raw=False) is not None
    assert mask_problem("abc+/=@:.~-_123", raw=False) is None
    assert "shorter than 8" in (mask_problem("abcdefg", raw=True) or "")
    assert "single line" in (mask_problem("abcd efgh", raw=True) or "")
    assert "single line" in (mask_problem("abcd\nefgh", raw=True) or "")
    assert mask_problem("ünïcödé-välüé", raw=True) is None


async def test_masked_auto_masks_what_gitlab_can_mask(tmp_path: Path, fake: FakeGitLab) -> None:
    project = fake.project()
    source = {
        "LONG_TOKEN": "abcdefgh12345",
        "SHORT": "abc",
        "SPACED": "has a space inside",
        "DOLLAR": "pa$$word-long",
        "PEM": "-----BEGIN KEY-----\nMIIB\n-----END KEY-----",
    }
    wb = bench(tmp_path, fake, project, source)
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    masked = {k: fake.find(project, k).masked for k in source}  # type: ignore[union-attr]
    assert masked == {
        "LONG_TOKEN": True,
        "SHORT": False,
        "SPACED": False,
        "DOLLAR": True,
        "PEM": False,
    }
    assert all(v.raw for v in project.variables)
    assert fake.stored(project) == source


async def test_masked_auto_with_expansion_follows_the_stricter_rule(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    wb = bench(
        tmp_path, fake, project, {"DOLLAR": "pa$$word-long", "PLAIN": "abc/def+ghi="}, raw=False
    )
    assert (await wb.pair()).result == "ok"
    assert fake.find(project, "DOLLAR").masked is False  # type: ignore[union-attr]
    assert fake.find(project, "PLAIN").masked is True  # type: ignore[union-attr]
    assert not any(v.raw for v in project.variables)


async def test_masked_true_blocks_values_gitlab_cannot_mask(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    source = {"GOOD": "abcdefgh12345", "SHORT": "abc12", "SPACED": "two words here"}
    wb = bench(tmp_path, fake, project, source, masked=True)
    pair = await wb.pair()
    problems = {k: (kind, msg) for k, kind, msg in pair.problems}
    assert problems["SHORT"][0] == "blocked"
    assert "shorter than 8 characters" in problems["SHORT"][1]
    assert problems["SPACED"][0] == "blocked"
    assert "single line without spaces" in problems["SPACED"][1]
    assert "masked: true" in problems["SPACED"][1]
    for key, (_, msg) in problems.items():
        assert source[key] not in msg
    assert "GOOD" not in problems
    # nothing was attempted for the blocked keys
    assert [r.method for r in fake.requests] == ["GET", "POST"]
    assert fake.stored(project) == {"GOOD": "abcdefgh12345"}
    assert fake.find(project, "GOOD").masked is True  # type: ignore[union-attr]


# ---------------------------------------------------------------------- hidden


async def test_hidden_variables_rely_on_fingerprints(tmp_path: Path, fake: FakeGitLab) -> None:
    project = fake.project()
    source = {"HIDDEN_TOKEN": "hidden-value-0001", "TOO_SHORT": "short"}
    wb = bench(tmp_path, fake, project, source, hidden=True)
    first = await wb.pair()
    assert [(k, kind) for k, kind, _ in first.problems] == [("TOO_SHORT", "blocked")]
    var = fake.find(project, "HIDDEN_TOKEN")
    assert var is not None and var.hidden and var.masked
    assert var.value == "hidden-value-0001"

    # GitLab never returns the value; a drift check still writes nothing
    drift_due(wb)
    wb.set_source({"HIDDEN_TOKEN": "hidden-value-0001"})
    second = await wb.pair()
    assert second.plan is not None and second.plan.listed
    assert second.counts.get("writes", 0) == 0
    assert second.counts.get("unchanged") == 1

    # a changed value is one update, sent without touching the masked flag
    wb.set_source({"HIDDEN_TOKEN": "hidden-value-0002"})
    third = await wb.pair()
    assert third.counts.get("updated") == 1
    assert third.counts.get("writes") == 1
    assert fake.find(project, "HIDDEN_TOKEN").value == "hidden-value-0002"  # type: ignore[union-attr]


async def test_changing_hidden_recreates_the_variable(tmp_path: Path, fake: FakeGitLab) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"TOKEN": "visible-value-0001"})
    await wb.pair()
    assert fake.find(project, "TOKEN").hidden is False  # type: ignore[union-attr]

    reconfigure(wb, hidden=True)
    drift_due(wb)
    before = len(fake.requests)
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    assert [r.method for r in fake.requests[before:]] == ["GET", "DELETE", "POST"]
    var = fake.find(project, "TOKEN")
    assert var is not None and var.hidden and var.masked and var.value == "visible-value-0001"

    drift_due(wb)
    again = await wb.pair()
    assert again.counts.get("writes", 0) == 0


async def test_option_changes_are_applied_at_the_drift_check(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"TOKEN": "some-value-0001", "CERT": "pem-ish-value"})
    await wb.pair()
    reconfigure(wb, protected=True, variable_type="file")
    drift_due(wb)
    pair = await wb.pair()
    assert pair.counts.get("updated") == 2
    assert all(v.protected and v.variable_type == "file" for v in project.variables)
    assert fake.stored(project) == {"TOKEN": "some-value-0001", "CERT": "pem-ish-value"}
    drift_due(wb)
    assert (await wb.pair()).counts.get("writes", 0) == 0


async def test_protected_flag_turned_off_out_of_band_is_restored(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"TOKEN": "some-value-0001"}, protected=True)
    await wb.pair()
    fake.find(project, "TOKEN").protected = False  # type: ignore[union-attr]
    drift_due(wb)
    pair = await wb.pair()
    assert pair.counts.get("updated") == 1 and pair.counts.get("drift") == 1
    assert fake.find(project, "TOKEN").protected is True  # type: ignore[union-attr]


async def test_value_edited_out_of_band_is_restored(tmp_path: Path, fake: FakeGitLab) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"TOKEN": "source-value-0001"})
    await wb.pair()
    fake.find(project, "TOKEN").value = "edited-in-the-ui"  # type: ignore[union-attr]
    drift_due(wb)
    pair = await wb.pair()
    assert pair.counts.get("drift") == 1
    assert fake.stored(project) == {"TOKEN": "source-value-0001"}


# ---------------------------------------------------------------------- ownership


def test_ownership_mark() -> None:
    assert managed_by("managed by syncd (prod-fanout)") == "prod-fanout"
    assert managed_by("managed by syncd") == ""
    assert managed_by("deploy key for the staging cluster") is None
    assert managed_by(None) is None


async def test_description_carries_the_mark_and_a_lost_state_store_needs_no_write(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    source = {"ALPHA": "alpha-value-0001", "BETA": "beta-value-0002"}
    wb = bench(tmp_path / "one", fake, project, source)
    await wb.pair()
    assert {v.description for v in project.variables} == {"managed by syncd (main)"}

    fresh = bench(tmp_path / "two", fake, project, source)  # a new, empty state store
    before = len(fake.requests)
    pair = await fresh.pair()
    assert pair.result == "ok"
    assert pair.counts.get("unchanged") == 2
    assert [r.method for r in fake.requests[before:]] == ["GET"]
    assert all(r.created for r in fresh.records(DEST).values())


async def test_foreign_variable_is_not_overwritten_on_skip_and_marked_on_adopt(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    fake.put(project, "SHARED", "someone-elses-value", description="set by ops")
    wb = bench(
        tmp_path, fake, project, {"SHARED": "syncd-value-00001"}, sync={"on_conflict": "skip"}
    )
    assert (await wb.pair()).counts.get("skipped") == 1
    assert fake.find(project, "SHARED").description == "set by ops"  # type: ignore[union-attr]

    reconfigure_sync(wb, on_conflict="overwrite")
    adopted = await wb.pair()
    assert adopted.counts.get("adopted") == 1
    var = fake.find(project, "SHARED")
    assert var is not None and var.value == "syncd-value-00001"
    assert var.description == "managed by syncd (main)"
    wb.set_source({})
    await wb.pair(force=True)
    assert "SHARED" in fake.stored(project)  # adopted, not created: never deleted


def reconfigure_sync(wb: Workbench, **options: Any) -> None:
    body = yaml.safe_load(wb.config_file.read_text())
    body["syncs"][0].update(options)
    wb.config_file.write_text(yaml.safe_dump(body, sort_keys=False))


async def test_a_variable_whose_mark_was_removed_is_not_deleted(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    source = {"ALPHA": "alpha-value-0001", "BETA": "beta-value-0002", "GAMMA": "gamma-val-003"}
    wb = bench(tmp_path, fake, project, source)
    await wb.pair()
    fake.find(project, "GAMMA").description = "taken over by the ops team"  # type: ignore[union-attr]
    wb.set_source({k: v for k, v in source.items() if k != "GAMMA"})
    pair = await wb.pair()
    assert pair.result == "failed"
    [(key, kind, msg)] = pair.problems
    assert (
        key == "GAMMA"
        and kind == "failed"
        and "not deleted" in msg
        and "managed by syncd (main)" in msg
    )
    assert fake.stored(project)["GAMMA"] == "gamma-val-003"
    assert not fake.calls("DELETE")


async def test_a_variable_already_gone_counts_as_deleted(tmp_path: Path, fake: FakeGitLab) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"ALPHA": "alpha-value-0001", "BETA": "beta-value-02"})
    await wb.pair()
    project.variables = [v for v in project.variables if v.key != "BETA"]
    wb.set_source({"ALPHA": "alpha-value-0001"})
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    assert "BETA" not in wb.records(DEST)


async def test_an_update_of_a_variable_deleted_out_of_band_recreates_it(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"ALPHA": "alpha-value-0001"})
    await wb.pair()
    project.variables.clear()
    wb.set_source({"ALPHA": "alpha-value-0002"})
    pair = await wb.pair()  # no drift check due: syncd believes the variable exists
    assert pair.result == "ok", pair.problems or pair.error
    assert fake.stored(project) == {"ALPHA": "alpha-value-0002"}


# ---------------------------------------------------------------------- keys


async def test_key_rules_are_checked_before_any_call(tmp_path: Path, fake: FakeGitLab) -> None:
    project = fake.project()
    source = {"BAD-KEY": "value-0000001", "K" * 256: "value-0000002", "1ST_KEY": "value-0000003"}
    wb = bench(tmp_path, fake, project, source)
    pair = await wb.pair()
    blocked = {k: msg for k, kind, msg in pair.problems if kind == "blocked"}
    assert "letters, digits and underscores" in blocked["BAD-KEY"]
    assert "255-character limit" in blocked["K" * 256]
    assert fake.stored(project) == {"1ST_KEY": "value-0000003"}  # a leading digit is fine
    assert [r.method for r in fake.requests] == ["GET", "POST"]


# ---------------------------------------------------------------------- rate limits, auth


async def test_429_waits_for_retry_after_and_python_gitlab_never_sleeps(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"ALPHA": "alpha-value-0001"})
    fake.retry_after = "45"
    fake.throttle_next = 2
    started = time.monotonic()
    pair = await wb.pair()
    assert time.monotonic() - started < 5  # the 45 s waits went through the fake clock
    assert pair.result == "ok", pair.problems or pair.error
    assert wb.clock.sleeps[:2] == [45.0, 45.0]
    assert [r.status for r in fake.requests] == [429, 429, 200, 201]


async def test_429_without_retry_after_waits_until_ratelimit_reset(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"ALPHA": "alpha-value-0001"})
    await wb.pair()
    wb.set_source({"ALPHA": "alpha-value-0002"})
    fake.retry_after = None
    fake.reset_in = 30
    fake.throttle_next = 1
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    assert len(wb.clock.sleeps) == 1 and 25 <= wb.clock.sleeps[0] <= 31
    assert fake.stored(project) == {"ALPHA": "alpha-value-0002"}


async def test_server_errors_are_retried_by_syncd_not_by_python_gitlab(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    wb = bench(tmp_path, fake, project, {"ALPHA": "alpha-value-0001"})
    fake.fail_next = [502, 503]
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    assert [r.status for r in fake.requests] == [502, 503, 200, 201]
    assert len(wb.clock.sleeps) == 2  # backoff through the injected clock
    assert wb.hooks.calls[(DEST, "list", "502")] == 1


async def test_a_full_project_fails_the_key_without_retrying(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project(max_variables=2)
    source = {"ALPHA": "alpha-value-0001", "BETA": "beta-value-0002", "GAMMA": "gamma-val-003"}
    wb = bench(tmp_path, fake, project, source, concurrency=1)  # keys in order
    pair = await wb.pair()
    assert pair.result == "failed"
    [(key, kind, msg)] = pair.problems
    assert (key, kind) == ("GAMMA", "failed")
    assert "Maximum number of project ci variables (2) exceeded" in msg
    assert source["GAMMA"] not in msg
    assert len(fake.calls("POST")) == 3  # not retried: a quota, not a throttle
    assert not wb.clock.sleeps


async def test_a_refused_token_fails_the_pair_with_one_call(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project()
    h = GitLabHarness(fake, project)
    wb = Workbench(
        tmp_path,
        {DEST: h.destination},
        source={"ALPHA": "alpha-value-0001"},
        env={"GITLAB_TOKEN": "glpat-wrong-token-000"},
    )
    pair = await wb.pair()
    assert pair.result == "error"
    assert pair.error is not None and "401" in pair.error
    assert "glpat-wrong-token-000" not in pair.error
    assert len(fake.requests) == 1


async def test_a_developer_token_is_told_the_role_it_needs(
    tmp_path: Path, fake: FakeGitLab
) -> None:
    project = fake.project(role="developer")
    wb = bench(tmp_path, fake, project, {"ALPHA": "alpha-value-0001"})
    pair = await wb.pair()
    assert pair.result == "error"
    assert pair.error is not None and "Maintainer" in pair.error


async def test_check_reads_one_variable_and_names_a_missing_project(fake: FakeGitLab) -> None:
    fake.project("acme/api")
    seen: list[tuple[str, str]] = []
    ctx = ConnectorContext(on_api_call=lambda d, op, status: seen.append((op, status)))

    def dest(**options: Any) -> GitLabDestination:
        cfg = GitLabDestination.Config.model_validate(
            {"type": "gitlab", "url": fake.url, "token": fake.token, **options}
        )
        return GitLabDestination(DEST, cfg, ctx)

    ok = dest(project="acme/api")
    await ok.check()
    await ok.aclose()
    assert fake.requests[-1].query == {"per_page": "1", "page": "1"}

    missing = dest(project="acme/nope")
    with pytest.raises(PermanentError, match="404"):
        await missing.check()
    await missing.aclose()
    bad = dest(group="acme")
    with pytest.raises(PermanentError, match="Group Not Found"):
        await bad.check()
    assert seen == [("list", "ok"), ("list", "404"), ("list", "404")]
    assert not isinstance(PermanentError("x"), AuthError)


# ---------------------------------------------------------------------- config


def test_config_needs_exactly_one_target_and_hidden_needs_masking(tmp_path: Path) -> None:
    def load(**options: Any) -> str:
        dest = {"type": "gitlab", "token": "t", **options}
        wb = Workbench(tmp_path / str(len(list(tmp_path.iterdir()))), {DEST: dest})
        with pytest.raises(ConfigErrors) as err:
            wb.config()
        return str(err.value)

    assert "exactly one of project or group" in load(project="a/b", group="a")
    assert "exactly one of project or group" in load()
    assert "hidden: true needs masking" in load(project="a/b", hidden=True, masked=False)
    assert "variable_type" in load(project="a/b", variable_type="json")
    assert "masked" in load(project="a/b", masked="sometimes")
    long_name = {"name": "x" * 240}
    wb = Workbench(
        tmp_path / "long",
        {DEST: {"type": "gitlab", "token": "t", "project": "a/b"}},
        sync=long_name,
    )
    with pytest.raises(ConfigErrors, match="255-character description limit"):
        wb.config()


def test_config_accepts_a_numeric_project_id_and_a_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("glpat-from-a-file\n")
    wb = Workbench(
        tmp_path,
        {DEST: {"type": "gitlab", "token_file": str(tmp_path / "token"), "project": 1234}},
    )
    cfg = wb.config().destinations[DEST].config
    assert cfg.project == 1234
    assert cfg.token.get_secret_value() == "glpat-from-a-file"
    assert cfg.masked == "auto" and cfg.raw is True and cfg.environment_scope == "*"
