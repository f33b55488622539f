"""The Vercel destination, driven through the engine against a stateful fake of Vercel's
project environment variable API."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.cli import main
from syncd.config import load_config
from syncd.connector import ConnectorContext
from syncd.connectors.vercel import VercelDestination, mark
from syncd.errors import ConfigErrors, PermanentError
from syncd.testing.conformance import DestinationConformance
from syncd.testing.workbench import Workbench
from tests.fakes.vercel_api import FakeVercel

DEST = "vercel"


# ---------------------------------------------------------------------------- harness


class VercelHarness:
    """For the conformance suite: the destination's YAML and the fake behind it."""

    def __init__(self, value_type: str) -> None:
        self.fake = FakeVercel()
        self.value_type = value_type
        self.destination: dict[str, Any] = {
            "type": "vercel",
            "token": "${VERCEL_TOKEN}",
            "project": "my-app",
            "value_type": value_type,
        }
        self.env = {"VERCEL_TOKEN": self.fake.token}
        self.context_extra = {"httpx_transport": self.fake.transport}

    def stored(self) -> dict[str, str]:
        return self.fake.values()

    def put_unmanaged(self, key: str, value: str) -> None:
        self.fake.add(key, value, type=self.value_type)

    def throttle(self, calls: int) -> None:
        self.fake.throttle(calls)


class TestVercelSensitiveConformance(DestinationConformance):
    @pytest.fixture
    def harness(self) -> VercelHarness:
        return VercelHarness("sensitive")


class TestVercelEncryptedConformance(DestinationConformance):
    @pytest.fixture
    def harness(self) -> VercelHarness:
        return VercelHarness("encrypted")


# ---------------------------------------------------------------------------- helpers


def bench(
    root: Path,
    fake: FakeVercel,
    source: dict[str, Any],
    *,
    dest: dict[str, Any] | None = None,
    destinations: dict[str, dict[str, Any]] | None = None,
    **sync: Any,
) -> Workbench:
    base = {"type": "vercel", "token": "${VERCEL_TOKEN}", "project": "my-app"}
    if destinations is None:
        destinations = {DEST: {**base, **(dest or {})}}
    else:
        destinations = {name: {**base, **body} for name, body in destinations.items()}
    return Workbench(
        root,
        destinations,
        source=source,
        sync=sync or None,
        env={"VERCEL_TOKEN": fake.token},
        context_extra={"httpx_transport": fake.transport},
    )


def set_destination(wb: Workbench, name: str = DEST, **fields: Any) -> None:
    """Edit the destination's config between runs, as a user would."""
    body = yaml.safe_load(wb.config_file.read_text())
    body["destinations"][name].update(fields)
    wb.config_file.write_text(yaml.safe_dump(body, sort_keys=False))


def calls(wb: Workbench, name: str = DEST) -> Counter[str]:
    """Platform calls by operation since the last ``reset``."""
    out: Counter[str] = Counter()
    for (dest, op, _status), n in wb.hooks.calls.items():
        if dest == name:
            out[op] += n
    return out


def reset(wb: Workbench, fake: FakeVercel) -> None:
    wb.hooks.calls.clear()
    wb.hooks.retries.clear()
    wb.clock.sleeps.clear()
    fake.requests.clear()


def past_drift_check(wb: Workbench) -> None:
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)


def many(n: int, tag: str = "v1") -> dict[str, str]:
    return {f"KEY_{i:03d}": f"value-{tag}-{i:03d}-0c9f1e" for i in range(n)}


# ---------------------------------------------------------------------------- config rules


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"targets": ["production", "development"]}, "sensitive variables cannot target"),
        ({"targets": ["production"], "git_branch": "feature-x"}, "targets: [preview]"),
        ({"targets": ["prod"]}, "unknown target 'prod'"),
        ({"targets": []}, "at least one target"),
        ({"targets": ["preview", "preview"]}, "listed twice"),
        ({"value_type": "secret"}, "value_type"),
        ({"api_url": "api.vercel.com"}, "http(s) URL"),
    ],
)
def test_config_refuses_what_vercel_would_refuse(
    tmp_path: Path, fields: dict[str, Any], expected: str
) -> None:
    wb = bench(tmp_path, FakeVercel(), {"A": "1"}, dest=fields)
    with pytest.raises(ConfigErrors) as info:
        wb.config()
    text = str(info.value)
    assert "destinations.vercel" in text
    assert expected in text


def test_validate_names_the_sensitive_development_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wb = bench(tmp_path, FakeVercel(), {"A": "1"}, dest={"targets": ["development"]})
    assert main(["-c", str(wb.config_file), "validate"]) == 2
    err = capsys.readouterr().err
    assert "sensitive variables cannot target development" in err


def test_readable_types_may_target_development_and_custom_environments(tmp_path: Path) -> None:
    fields = {"value_type": "encrypted", "targets": ["development", "env_staging01"]}
    wb = bench(tmp_path, FakeVercel(), {"A": "1"}, dest=fields)
    cfg = wb.config().destinations[DEST].config
    assert cfg.targets == ["development", "env_staging01"]


# ---------------------------------------------------------------------------- call counts


async def test_unchanged_run_calls_nothing_and_one_change_is_one_write(tmp_path: Path) -> None:
    fake = FakeVercel()
    source = many(100)
    wb = bench(tmp_path, fake, source)

    first = await wb.pair()
    assert first.result == "ok", first.problems
    assert first.counts["created"] == 100
    # an empty project: one listing; 100 new keys: two bulk creates of 50
    assert calls(wb) == {"list": 1, "put": 2}
    assert fake.values() == source
    assert {e.comment for e in fake.envs.values()} == {mark("main", DEST)}

    reset(wb, fake)
    second = await wb.pair()
    assert second.counts.get("writes", 0) == 0
    assert second.counts["unchanged"] == 100
    assert calls(wb) == {}, "between drift checks an unchanged run calls nothing"

    reset(wb, fake)
    before = {e.key: e.updated_at for e in fake.envs.values()}
    changed = {**source, "KEY_042": "value-rotated-042"}
    wb.set_source(changed)
    third = await wb.pair()
    assert third.counts["updated"] == 1
    assert third.counts["writes"] == 1
    assert calls(wb) == {"put": 1}
    assert fake.values() == changed
    after = {e.key: e.updated_at for e in fake.envs.values()}
    assert [k for k in after if after[k] != before[k]] == ["KEY_042"]


async def test_drift_check_reads_every_page_and_writes_nothing(tmp_path: Path) -> None:
    fake = FakeVercel(page_size=20)
    wb = bench(tmp_path, fake, many(100))
    await wb.pair()
    reset(wb, fake)
    past_drift_check(wb)
    pair = await wb.pair()
    assert pair.plan is not None and pair.plan.listed
    assert pair.counts.get("writes", 0) == 0
    assert calls(wb) == {"list": 5}
    untils = [r.params.get("until") for r in fake.requests]
    assert untils[0] is None and all(untils[1:]), "later pages ask for what comes next"


# ---------------------------------------------------------------------------- values


async def test_sensitive_values_use_fingerprints_and_catch_edits(tmp_path: Path) -> None:
    fake = FakeVercel()
    source = {"API_TOKEN": "tok-41d2", "DB_URL": "postgres://u:p-88@h/db"}
    wb = bench(tmp_path, fake, source)
    await wb.pair()
    assert {e.type for e in fake.envs.values()} == {"sensitive"}
    listing = [r for r in fake.requests if r.method == "GET"]
    assert all("decrypt" not in r.params for r in listing), "nothing to decrypt"

    # someone edits a sensitive value in the dashboard: its updatedAt moves
    env_id = fake.find("API_TOKEN")[0].id
    fake.edit(env_id, value="edited-by-hand")
    past_drift_check(wb)
    pair = await wb.pair()
    assert pair.counts["updated"] == 1 and pair.counts["drift"] == 1
    assert fake.values() == source


async def test_encrypted_values_are_compared_and_read_only_where_they_moved(
    tmp_path: Path,
) -> None:
    fake = FakeVercel(list_decrypts=False)
    source = many(5)
    wb = bench(tmp_path, fake, source, dest={"value_type": "encrypted"})
    await wb.pair()

    reset(wb, fake)
    past_drift_check(wb)
    quiet = await wb.pair()
    assert quiet.counts.get("writes", 0) == 0
    assert calls(wb) == {"list": 1}, "unchanged versions: no value is read"

    fake.edit(fake.find("KEY_003")[0].id, value="edited-by-hand")
    reset(wb, fake)
    past_drift_check(wb)
    pair = await wb.pair()
    assert calls(wb) == {"list": 1, "get": 1, "put": 1}
    assert pair.counts["updated"] == 1
    assert fake.values() == source


async def test_same_value_written_by_hand_is_adopted_without_a_write(tmp_path: Path) -> None:
    fake = FakeVercel()
    fake.add("SHARED", "same-value-71", type="encrypted", comment="set up by ops")
    wb = bench(tmp_path, fake, {"SHARED": "same-value-71"}, dest={"value_type": "encrypted"})
    pair = await wb.pair()
    assert pair.counts["adopted"] == 1
    assert pair.counts.get("writes", 0) == 0
    assert fake.find("SHARED")[0].comment == "set up by ops"


async def test_adopting_keeps_the_owners_comment_and_never_deletes(tmp_path: Path) -> None:
    fake = FakeVercel()
    fake.add("SHARED", "theirs", type="sensitive", comment="set up by ops")
    wb = bench(tmp_path, fake, {"SHARED": "ours-2b", "OTHER": "o-1"})
    pair = await wb.pair()
    assert pair.counts["adopted"] == 1
    env = fake.find("SHARED")[0]
    assert (env.value, env.comment) == ("ours-2b", "set up by ops")
    wb.set_source({"OTHER": "o-1"})
    after = await wb.pair()
    assert after.counts.get("deleted", 0) == 0
    assert fake.find("SHARED")


async def test_changing_value_type_converts_at_the_next_drift_check(tmp_path: Path) -> None:
    fake = FakeVercel()
    wb = bench(tmp_path, fake, {"A": "a-1", "B": "b-2"}, dest={"value_type": "encrypted"})
    await wb.pair()
    set_destination(wb, value_type="sensitive")
    past_drift_check(wb)
    pair = await wb.pair()
    assert pair.counts["updated"] == 2
    assert {e.type for e in fake.envs.values()} == {"sensitive"}
    assert fake.values() == {"A": "a-1", "B": "b-2"}


# ---------------------------------------------------------------------------- scopes


async def test_other_targets_and_branches_of_a_key_are_left_alone(tmp_path: Path) -> None:
    fake = FakeVercel()
    dev = fake.add("DB_URL", "dev-db", target=["development"])
    branch = fake.add("DB_URL", "branch-db", target=["preview"], git_branch="feature-x")
    wb = bench(tmp_path, fake, {"DB_URL": "prod-db", "KEEP": "k"})
    pair = await wb.pair()
    assert pair.counts["created"] == 2
    assert len(fake.find("DB_URL")) == 3

    wb.set_source({"KEEP": "k"})
    after = await wb.pair()
    assert after.counts["deleted"] == 1
    left = {e.id: e.value for e in fake.find("DB_URL")}
    assert left == {dev: "dev-db", branch: "branch-db"}


async def test_overlapping_foreign_variable_is_a_conflict_never_a_loop(tmp_path: Path) -> None:
    fake = FakeVercel()
    theirs = fake.add("DB_URL", "their-prod-db", target=["production"], comment="ops")
    wb = bench(tmp_path, fake, {"DB_URL": "our-db", "API": "a"})
    pair = await wb.pair()
    assert pair.result == "failed"
    [(key, kind, message)] = pair.problems
    assert (key, kind) == ("DB_URL", "failed")
    assert "ENV_CONFLICT" in message and "[production]" in message
    assert "our-db" not in message
    assert wb.hooks.retries[DEST] == 0
    sent = [item["key"] for r in fake.writes() for item in (r.body or [])]
    assert "DB_URL" not in sent, "a write Vercel would refuse is never sent"
    env = fake.envs[theirs]
    assert (env.target, env.value, env.comment) == (["production"], "their-prod-db", "ops")
    assert fake.values() == {"API": "a"}

    again = await wb.pair()
    assert [k for k, _, _ in again.problems] == ["DB_URL"]
    assert wb.hooks.retries[DEST] == 0

    skip = bench(tmp_path / "skip", fake, {"DB_URL": "our-db"}, on_conflict="skip")
    skipped = await skip.pair()
    assert skipped.result == "ok" and skipped.counts["skipped"] == 1


async def test_a_conflict_vercel_reports_is_not_retried(tmp_path: Path) -> None:
    fake = FakeVercel()
    wb = bench(tmp_path, fake, {"A": "a", "B": "b"})
    await wb.pair()
    # between drift checks syncd cannot see a variable created by hand meanwhile
    fake.add("C", "theirs", target=["preview"])
    wb.set_source({"A": "a", "B": "b", "C": "ours"})
    reset(wb, fake)
    pair = await wb.pair()
    # C is unrecorded, so the engine lists: the overlap is planned around, no write
    assert [k for k, _, _ in pair.problems] == ["C"]
    assert wb.hooks.retries[DEST] == 0
    # Vercel's own ENV_CONFLICT answer (a variable created between listing and write)
    fake.failing_keys["D"] = "ENV_CONFLICT"
    wb.set_source({"A": "a", "B": "b", "D": "d"})
    reset(wb, fake)
    second = await wb.pair()
    [(key, _, message)] = second.problems
    assert key == "D" and "ENV_CONFLICT" in message
    assert wb.hooks.retries[DEST] == 0
    assert calls(wb)["put"] == 1


async def test_changed_targets_move_our_variable_by_id(tmp_path: Path) -> None:
    fake = FakeVercel()
    wb = bench(tmp_path, fake, {"DB_URL": "db-1"}, dest={"targets": ["production"]})
    await wb.pair()
    [before] = fake.find("DB_URL")

    set_destination(wb, targets=["production", "preview"])
    past_drift_check(wb)
    reset(wb, fake)
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    [after] = fake.find("DB_URL")
    assert after.id == before.id
    assert sorted(after.target) == ["preview", "production"]
    assert [(r.method, r.path) for r in fake.writes()] == [
        ("PATCH", f"/v9/projects/my-app/env/{before.id}")
    ]

    # targets that no longer overlap: the variable is moved, not orphaned
    set_destination(wb, targets=["env_staging01"])
    past_drift_check(wb)
    moved = await wb.pair()
    assert moved.result == "ok", moved.problems
    [final] = fake.find("DB_URL")
    assert (final.id, final.target, final.custom) == (before.id, [], ["env_staging01"])
    assert final.value == "db-1"


async def test_a_copy_left_for_old_targets_is_removed_at_the_drift_check(
    tmp_path: Path,
) -> None:
    fake = FakeVercel()
    wb = bench(tmp_path, fake, {"DB_URL": "db-1"})
    await wb.pair()
    # targets change and the value changes before the next drift check: the value goes
    # to the new targets at once, the old variable cannot be seen yet
    set_destination(wb, targets=["env_staging01"])
    wb.set_source({"DB_URL": "db-2"})
    await wb.pair()
    assert len(fake.find("DB_URL")) == 2
    past_drift_check(wb)
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    [env] = fake.find("DB_URL")
    assert (env.custom, env.value) == (["env_staging01"], "db-2")
    past_drift_check(wb)
    quiet = await wb.pair()
    assert quiet.counts.get("writes", 0) == 0


async def test_two_destinations_for_other_targets_never_touch_each_other(tmp_path: Path) -> None:
    fake = FakeVercel()
    foreign = fake.add("DB_URL", "dev-db", target=["development"])
    wb = bench(
        tmp_path,
        fake,
        {"DB_URL": "db", "API": "a"},
        destinations={
            "v-prod": {"targets": ["production"]},
            "v-preview": {"targets": ["preview"], "git_branch": "staging"},
        },
    )
    for p in (await wb.once())[0].pairs:
        assert p.result == "ok", p.problems
    assert len(fake.find("DB_URL")) == 3
    assert {e.comment for e in fake.find("API")} == {
        mark("main", "v-prod"),
        mark("main", "v-preview"),
    }

    wb.set_source({"API": "a"})
    for p in (await wb.once())[0].pairs:
        assert p.counts.get("deleted") == 1, p.problems
    assert [e.id for e in fake.find("DB_URL")] == [foreign]
    assert len(fake.find("API")) == 2


async def test_branch_and_custom_environment_scopes(tmp_path: Path) -> None:
    fake = FakeVercel()
    wb = bench(
        tmp_path,
        fake,
        {"A": "a"},
        destinations={
            "branch": {"targets": ["preview"], "git_branch": "feature-x"},
            "custom": {"targets": ["production", "env_staging01"]},
        },
    )
    for p in (await wb.once())[0].pairs:
        assert p.result == "ok", p.problems
    assert fake.values(target=["preview"], git_branch="feature-x") == {"A": "a"}
    assert fake.values(target=["production"], custom=["env_staging01"]) == {"A": "a"}


# ---------------------------------------------------------------------------- failures


async def test_a_failed_entry_is_a_failed_key_not_a_failed_run(tmp_path: Path) -> None:
    fake = FakeVercel()
    fake.failing_keys["BETA"] = "invalid_value"
    source = {"ALPHA": "a-7", "BETA": "b-secret-value-7", "GAMMA": "g-7"}
    wb = bench(tmp_path, fake, source)
    pair = await wb.pair()
    assert pair.counts["created"] == 2 and pair.counts["failed"] == 1
    [(key, _, message)] = pair.problems
    assert key == "BETA" and "invalid_value" in message
    assert "b-secret-value-7" not in message
    assert fake.values() == {"ALPHA": "a-7", "GAMMA": "g-7"}
    assert calls(wb)["put"] == 1, "a refused entry is not retried"


async def test_keys_and_sizes_vercel_refuses_are_blocked_before_any_call(tmp_path: Path) -> None:
    fake = FakeVercel()
    source = {
        "TZ": "UTC",
        "AT_LIMIT": "x" * 65536,
        "OVER_LIMIT": "x" * 65537,
        "bad-key": "v",
        "9LIVES": "v",
    }
    wb = bench(tmp_path, fake, source)
    pair = await wb.pair()
    blocked = {k: m for k, kind, m in pair.problems if kind == "blocked"}
    assert set(blocked) == {"TZ", "OVER_LIMIT", "bad-key", "9LIVES"}
    assert "reserved" in blocked["TZ"]
    assert "65536-byte limit" in blocked["OVER_LIMIT"]
    assert set(fake.values()) == {"AT_LIMIT"}


async def test_a_bad_token_costs_one_call(tmp_path: Path) -> None:
    fake = FakeVercel()
    wb = bench(tmp_path, fake, {"A": "a"})
    wb.env["VERCEL_TOKEN"] = "wrong"
    pair = await wb.pair()
    assert pair.result == "error"
    assert pair.error is not None and "403" in pair.error
    assert len(fake.requests) == 1
    assert fake.envs == {}


async def test_team_projects_get_team_id_on_every_call(tmp_path: Path) -> None:
    fake = FakeVercel(team_id="team_abc")
    wb = bench(tmp_path, fake, {"A": "a", "B": "b"}, dest={"team_id": "team_abc"})
    await wb.pair()
    wb.set_source({"A": "a2"})
    await wb.pair()
    assert fake.values() == {"A": "a2"}
    assert fake.requests and all(r.params.get("teamId") == "team_abc" for r in fake.requests)

    other = bench(tmp_path / "no-team", fake, {"A": "a"})
    pair = await other.pair()
    assert pair.result == "error" and "404" in (pair.error or "")


# ---------------------------------------------------------------------------- rate limits


async def test_a_429_storm_is_waited_out_as_told_and_nothing_is_lost(tmp_path: Path) -> None:
    fake = FakeVercel(reset_after=30)
    wb = bench(tmp_path, fake, many(100))
    await wb.pair()
    rotated = many(100, tag="v2")
    wb.set_source(rotated)
    reset(wb, fake)
    fake.throttle(4, methods=["POST"])
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    assert pair.counts["updated"] == 100
    assert fake.values() == rotated
    assert wb.hooks.retries[DEST] == 4
    # each wait follows X-RateLimit-Reset (30 s ahead), not a short backoff
    assert len([s for s in wb.clock.sleeps if s >= 29]) == 4


async def test_mass_deletion_is_one_batch_call_and_survives_throttling(tmp_path: Path) -> None:
    fake = FakeVercel()
    source = many(30)
    wb = bench(tmp_path, fake, source, max_delete_fraction=1.0)
    await wb.pair()
    keep = dict(list(source.items())[:5])
    wb.set_source(keep)
    reset(wb, fake)
    fake.throttle(2, methods=["DELETE"])
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    assert pair.counts["deleted"] == 25
    assert fake.values() == keep
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert {r.path for r in deletes} == {"/v1/projects/my-app/env"}
    assert len(deletes[-1].body["ids"]) == 25
    # between drift checks the ids come from one listing (two pages of 20)
    assert calls(wb) == {"list": 2, "delete": 3}

    wb.set_source(dict(list(keep.items())[:4]))
    reset(wb, fake)
    await wb.pair()
    assert [r.path.startswith("/v9/projects/my-app/env/") for r in fake.writes()] == [True]


async def test_a_variable_whose_mark_was_removed_is_not_deleted(tmp_path: Path) -> None:
    fake = FakeVercel()
    wb = bench(tmp_path, fake, {"A": "a", "B": "b", "C": "c"})
    await wb.pair()
    fake.edit(fake.find("A")[0].id, comment="now owned by the web team")
    wb.set_source({"B": "b", "C": "c"})
    pair = await wb.pair()
    [(key, _, message)] = pair.problems
    assert key == "A" and "not deleted" in message
    assert fake.find("A")


# ---------------------------------------------------------------------------- check


async def test_check_finds_the_project_and_custom_environments(tmp_path: Path) -> None:
    fake = FakeVercel()
    wb = bench(tmp_path, fake, {"A": "a"}, dest={"targets": ["production", "env_staging01"]})
    cfg = wb.config().destinations[DEST].config
    context = ConnectorContext(extra={"httpx_transport": fake.transport})
    await VercelDestination(DEST, cfg, context).check()

    missing = cfg.model_copy(update={"targets": ["production", "env_gone"]})
    with pytest.raises(PermanentError, match="env_gone"):
        await VercelDestination(DEST, missing, context).check()

    wrong = cfg.model_copy(update={"project": "no-such-app"})
    with pytest.raises(PermanentError, match="404"):
        await VercelDestination(DEST, wrong, context).check()
    assert not fake.writes()


# ---------------------------------------------------------------------------- example


async def test_the_example_runs_against_the_fake(tmp_path: Path) -> None:
    from syncd.engine import Engine
    from syncd.state import Fingerprinter
    from syncd.state.sqlite import SqliteStore

    root = Path(__file__).resolve().parent.parent / "examples"
    fake = FakeVercel(team_id="team_example")
    cfg = load_config(
        root / "vercel.yaml", env={"VERCEL_TOKEN": fake.token, "VERCEL_TEAM_ID": "team_example"}
    )
    state = SqliteStore(tmp_path / "state.db")
    engine = Engine(
        cfg,
        state,
        Fingerprinter.from_file(tmp_path / "fp.key"),
        context_extra={"httpx_transport": fake.transport},
    )
    try:
        [result] = await engine.run()
    finally:
        await engine.aclose()
        state.close()
    assert result.ok, [p.problems or p.error for p in result.pairs]
    prod = fake.values()
    dev = fake.values(target=["development"])
    assert set(prod) == set(dev) == {"DATABASE_URL", "API_TOKEN", "STRIPE_KEY"}
    assert {e.type for e in fake.envs.values() if e.target == ["development"]} == {"encrypted"}
