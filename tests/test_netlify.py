"""The Netlify destination against a stateful fake of Netlify's env var API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncd.cli import main
from syncd.errors import ConfigErrors
from syncd.testing.conformance import DestinationConformance
from syncd.testing.workbench import Workbench
from tests.fakes.netlify_api import NetlifyAPI, Slot

API_URL = "https://api.netlify.test/api/v1"
DEFAULT_SLOTS: tuple[Slot, ...] = (
    ("production", None),
    ("deploy-preview", None),
    ("branch-deploy", None),
)


def dest(api: NetlifyAPI, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "netlify",
        "api_url": API_URL,
        "token": "${NETLIFY_TOKEN}",
        "account_id": api.account_id,
        "site_id": "site-1",
    }
    body.update(options)
    return {k: v for k, v in body.items() if v is not None}


def bench(
    root: Path,
    api: NetlifyAPI,
    source: dict[str, str],
    *,
    destinations: dict[str, dict[str, Any]] | None = None,
    **sync: Any,
) -> Workbench:
    return Workbench(
        root,
        destinations or {"netlify": dest(api)},
        source=source,
        sync=sync or None,
        env={"NETLIFY_TOKEN": api.token},
        context_extra={"httpx_transport": api.transport},
    )


def keys(n: int, prefix: str = "KEY") -> dict[str, str]:
    return {f"{prefix}_{i:03d}": f"value-{i:03d}-d4c1e7" for i in range(n)}


# ---------------------------------------------------------------------- conformance


class NetlifyHarness:
    def __init__(self, api: NetlifyAPI, options: dict[str, Any], slots: tuple[Slot, ...]) -> None:
        self.api = api
        self.slots = slots
        self.site = options.get("site_id", "site-1")
        self.destination = dest(api, **options)
        self.env = {"NETLIFY_TOKEN": api.token}
        self.context_extra = {"httpx_transport": api.transport}

    def stored(self) -> dict[str, str]:
        out = {}
        for key in self.api.vars[self.site]:
            held = self.api.slots(key, self.site)
            mine = {held.get(s) for s in self.slots}
            value = mine.pop() if len(mine) == 1 else None
            out[key] = value if value is not None else "<mixed>"
        return out

    def put_unmanaged(self, key: str, value: str) -> None:
        self.api.put(key, dict.fromkeys(self.slots, value), site=self.site)

    def throttle(self, calls: int) -> None:
        self.api.throttle(calls)


HARNESSES: dict[str, tuple[dict[str, Any], tuple[Slot, ...]]] = {
    # the defaults: one site, secret values in the three deploy contexts
    "site-secret": ({}, DEFAULT_SLOTS),
    # the team's shared variables, one readable value for all contexts, every scope
    "account-all-readable": (
        {
            "site_id": None,
            "contexts": ["all"],
            "is_secret": False,
            "scopes": ["builds", "functions", "runtime", "post_processing"],
        },
        (("all", None),),
    ),
    # a branch's value next to production's
    "branch-secret": (
        {"contexts": ["production", "branch"], "branch": "staging"},
        (("production", None), ("branch", "staging")),
    ),
}


class TestNetlifyConformance(DestinationConformance):
    @pytest.fixture(params=sorted(HARNESSES))
    def harness(self, request: pytest.FixtureRequest) -> NetlifyHarness:
        options, slots = HARNESSES[request.param]
        site = options.get("site_id", "site-1")
        api = NetlifyAPI(sites=[s for s in ("site-1", site) if s])
        return NetlifyHarness(api, options, slots)


# ---------------------------------------------------------------------- config rules


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"contexts": ["all"]}, "secret values to be set for specific deploy contexts"),
        ({"contexts": ["production", "dev"]}, "contexts has dev"),
        ({"scopes": ["builds", "post_processing"]}, "secret values in the post_processing"),
        ({"scopes": ["runtime", "post-processing"]}, "secret values in the post_processing"),
        ({"contexts": ["branch"]}, "the branch context needs branch"),
        ({"branch": "staging"}, "the branch context is not in contexts"),
        (
            {"contexts": ["all", "production"], "is_secret": False},
            "all already covers every deploy context",
        ),
        ({"contexts": ["production", "production"]}, "listed twice"),
        ({"contexts": ["staging"]}, "contexts[0]: Input should be"),
        ({"scopes": []}, "at least one scope"),
        ({"account_id": " "}, "account id"),
        ({"api_url": "api.netlify.com"}, "http(s) URL"),
    ],
)
def test_config_refuses_what_netlify_refuses(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {}, destinations={"netlify": dest(api, **options)})
    with pytest.raises(ConfigErrors) as err:
        wb.config()
    assert message in str(err.value)
    assert "destinations.netlify" in str(err.value)


def test_validate_names_the_secret_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {}, destinations={"netlify": dest(api, contexts=["dev"])})
    code = main(["validate", "-c", str(wb.config_file)])
    captured = capsys.readouterr()
    assert code == 2
    assert "other than dev" in captured.out + captured.err
    assert api.requests == []


def test_readable_values_may_use_every_context_and_scope(tmp_path: Path) -> None:
    api = NetlifyAPI()
    options = {
        "contexts": ["production", "dev"],
        "is_secret": False,
        "scopes": ["builds", "post-processing"],
    }
    wb = bench(tmp_path, api, {}, destinations={"netlify": dest(api, **options)})
    cfg = wb.config().destinations["netlify"].config
    assert cfg.scopes == ["builds", "post_processing"]
    assert cfg.api_scopes == ["builds", "post-processing"]


def test_example_config_loads() -> None:
    root = Path(__file__).resolve().parent.parent / "examples"
    from syncd.config import load_config

    cfg = load_config(root / "netlify.yaml", env={"NETLIFY_TOKEN": "t", "NETLIFY_SITE_ID": "s"})
    assert {d.kind for d in cfg.destinations.values()} == {"netlify"}


# ---------------------------------------------------------------------- writes and calls


async def test_new_keys_go_out_in_batched_creates_as_secrets(tmp_path: Path) -> None:
    api = NetlifyAPI()
    source = keys(25)
    wb = bench(tmp_path, api, source)
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    assert api.calls("POST") == 3  # 10 + 10 + 5 variables
    assert api.calls("PATCH", "PUT", "DELETE") == 0
    for slot in DEFAULT_SLOTS:
        assert api.stored(slot=slot) == source
    var = api.vars["site-1"]["KEY_000"]
    assert var.is_secret and var.scopes == ["builds", "functions", "runtime"]
    # a secret value never comes back from the API
    assert all("value" not in v for item in api.listing() for v in item["values"])


async def test_unchanged_run_calls_nothing_and_a_drift_check_only_lists(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, keys(100))
    await wb.pair()
    before = len(api.requests)
    second = await wb.pair()
    assert second.counts.get("unchanged") == 100
    assert len(api.requests) == before  # between drift checks: no call at all
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    third = await wb.pair()
    assert third.plan is not None and third.plan.listed
    assert third.counts.get("writes", 0) == 0
    assert [r.method for r in api.requests[before:]] == ["GET"]


async def test_one_changed_key_of_100_is_one_write(tmp_path: Path) -> None:
    api = NetlifyAPI()
    source = keys(100)
    wb = bench(tmp_path, api, source)
    await wb.pair()
    before = len(api.requests)
    wb.set_source({**source, "KEY_042": "rotated-value-9a9a"})
    pair = await wb.pair()
    assert pair.counts.get("updated") == 1 and pair.counts.get("writes") == 1
    sent = api.requests[before:]
    # the variable holds only this destination's three contexts: one read of the key
    # shows it, one PUT replaces it whole
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in sent] == [
        ("GET", "KEY_042"),
        ("PUT", "KEY_042"),
    ]
    assert [r for r in sent if r.method != "GET"] == sent[-1:]
    for slot in DEFAULT_SLOTS:
        assert api.stored(slot=slot)["KEY_042"] == "rotated-value-9a9a"
        assert api.stored(slot=slot) == {**source, "KEY_042": "rotated-value-9a9a"}
    var = api.vars["site-1"]["KEY_042"]
    assert var.is_secret and var.scopes == ["builds", "functions", "runtime"]


async def test_one_changed_key_with_one_context_is_one_set(tmp_path: Path) -> None:
    api = NetlifyAPI()
    source = keys(100)
    wb = bench(tmp_path, api, source, destinations={"netlify": dest(api, contexts=["production"])})
    await wb.pair()
    before = len(api.requests)
    wb.set_source({**source, "KEY_042": "rotated-value-9a9a"})
    await wb.pair()
    sent = api.requests[before:]
    assert [(r.method, r.body["context"]) for r in sent] == [("PATCH", "production")]
    assert api.stored()["KEY_042"] == "rotated-value-9a9a"


async def test_a_change_found_at_a_drift_check_is_one_put_after_the_listing(
    tmp_path: Path,
) -> None:
    api = NetlifyAPI()
    source = keys(20)
    wb = bench(tmp_path, api, source)
    await wb.pair()
    wb.set_source({**source, "KEY_007": "rotated-value-1b1b"})
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    before = len(api.requests)
    await wb.pair()
    sent = api.requests[before:]
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in sent] == [
        ("GET", "env"),
        ("PUT", "KEY_007"),
    ]
    assert api.slots("KEY_007") == dict.fromkeys(DEFAULT_SLOTS, "rotated-value-1b1b")


async def test_a_value_added_by_hand_in_another_context_is_never_replaced(
    tmp_path: Path,
) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {"API_KEY": "first-2c2c", "OTHER": "other-3d3d"})
    await wb.pair()  # API_KEY holds only this destination's values
    # between drift checks someone sets the local development value by hand
    api.set_value("API_KEY", "dev", "local-dev-value")
    wb.set_source({"API_KEY": "second-4e4e", "OTHER": "other-3d3d"})
    before = len(api.requests)
    pair = await wb.pair()
    assert pair.result == "ok" and pair.counts.get("updated") == 1
    sent = api.requests[before:]
    # the read shows the dev value: each context of ours is set alone, nothing replaced
    assert [r.method for r in sent] == ["GET", "PATCH", "PATCH", "PATCH"]
    assert api.calls("PUT") == 0
    assert api.slots("API_KEY") == {
        **dict.fromkeys(DEFAULT_SLOTS, "second-4e4e"),
        ("dev", None): "local-dev-value",
    }


@pytest.mark.parametrize("header", ["reset", "retry-after"])
async def test_a_429_storm_is_waited_out_with_nothing_lost(tmp_path: Path, header: str) -> None:
    api = NetlifyAPI()
    source = keys(40)
    wb = bench(tmp_path, api, source)
    # the listing is throttled three times, then the creates four times
    if header == "reset":
        api.throttle(3, reset_in=20.0, methods=["GET"])
        api.throttle(4, reset_in=20.0, methods=["POST"])
    else:
        api.throttle(3, retry_after=7.0, reset_in=None, methods=["GET"])
        api.throttle(4, retry_after=7.0, reset_in=None, methods=["POST"])
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems or pair.error
    for slot in DEFAULT_SLOTS:
        assert api.stored(slot=slot) == source
    assert api.calls("POST") == 4 + 4  # four batches of ten, four of them answered 429
    wait = 20.0 if header == "reset" else 7.0
    assert wb.clock.sleeps and min(wb.clock.sleeps) >= wait - 1.5
    # then an unchanged run writes nothing
    before = api.writes
    await wb.pair()
    assert api.writes == before


async def test_throttled_updates_are_retried_later(tmp_path: Path) -> None:
    api = NetlifyAPI()
    source = keys(12)
    wb = bench(tmp_path, api, source)
    await wb.pair()
    changed = {k: v + "-rotated" for k, v in source.items()}
    wb.set_source(changed)
    api.throttle(3, reset_in=5.0, methods=["PUT"])
    pair = await wb.pair()
    assert pair.result == "ok", pair.problems
    assert pair.counts.get("updated") == 12
    for slot in DEFAULT_SLOTS:
        assert api.stored(slot=slot) == changed
    assert api.calls("PUT") == 12 + 3
    assert wb.hooks.retries["netlify"] >= 1


# ---------------------------------------------------------------------- ownership by context


async def test_two_syncs_on_different_contexts_never_delete_each_others_values(
    tmp_path: Path,
) -> None:
    api = NetlifyAPI()
    deployed = (("production", None), ("branch-deploy", None))
    preview = ("deploy-preview", None)
    destinations = {
        "prod": dest(api, contexts=["production", "branch-deploy"]),
        "preview": dest(api, contexts=["deploy-preview"]),
    }
    source = {"SHARED": "prod-and-preview-1f1f", "OTHER": "other-value-2e2e"}

    def make(exclude: list[str]) -> Workbench:
        return Workbench(
            tmp_path,
            destinations,
            source=source,
            sync={"to": ["prod"], "exclude": exclude},
            extra_syncs=[{"name": "previews", "from": "src", "to": ["preview"]}],
            env={"NETLIFY_TOKEN": api.token},
            context_extra={"httpx_transport": api.transport},
        )

    wb = make([])
    results = await wb.once()
    assert all(r.ok for r in results)
    assert api.slots("SHARED") == {
        **dict.fromkeys(deployed, "prod-and-preview-1f1f"),
        preview: "prod-and-preview-1f1f",
    }
    assert api.calls("PUT", "DELETE") == 0  # the second only added its values

    # a drift check of both: each sees only its own values, nothing is re-written
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    writes = api.writes
    await wb.once()
    assert api.writes == writes

    # a changed value between drift checks: each sets its own contexts, one at a time;
    # neither replaces the variable, whose other context holds the other's value
    source["SHARED"] = "rotated-3a3a"
    wb.set_source(source)
    before = len(api.requests)
    results = await wb.once()
    assert all(r.ok for r in results)
    sent = api.requests[before:]
    assert sorted((r.method, (r.body or {}).get("context")) for r in sent) == [
        ("GET", None),  # the production sync reads the variable before it writes
        ("PATCH", "branch-deploy"),
        ("PATCH", "deploy-preview"),
        ("PATCH", "production"),
    ]
    assert api.slots("SHARED") == {
        **dict.fromkeys(deployed, "rotated-3a3a"),
        preview: "rotated-3a3a",
    }

    # the production sync lets SHARED go: only its values go
    wb = make(["SHARED"])
    await wb.once()
    assert api.slots("SHARED") == {preview: "rotated-3a3a"}
    assert api.calls("DELETE") == 2 and "/value/" in api.requests[-1].path

    # the preview sync lets it go too: now nothing else holds a value, the variable goes
    wb.set_source({"OTHER": "other-value-2e2e"})
    await wb.once()
    assert "SHARED" not in api.vars["site-1"]
    assert api.requests[-1].method == "DELETE" and api.requests[-1].path.endswith("/env/SHARED")
    assert "OTHER" in api.vars["site-1"]


@pytest.mark.parametrize("together", [True, False], ids=["one-once", "one-after-the-other"])
async def test_two_syncs_from_two_sources_share_a_variable_by_context(
    tmp_path: Path, together: bool
) -> None:
    """Sync ``production`` and sync ``preview`` write SHARED_KEY, each its own value from its
    own source, into its own context of one site: the second adds its value to the
    variable the first created (never a second create), re-runs write nothing, and a key
    one sync lets go loses only that sync's value."""
    api = NetlifyAPI()
    prod, preview = ("production", None), ("deploy-preview", None)
    preview_file = tmp_path / "preview.yaml"
    preview_file.write_text("SHARED_KEY: preview-value-77aa\n")
    wb = Workbench(
        tmp_path,
        {
            "site-prod": dest(api, contexts=["production"]),
            "site-preview": dest(api, contexts=["deploy-preview"]),
        },
        source={"SHARED_KEY": "prod-value-11bb", "ONLY_PROD": "p-22cc"},
        sync={"to": ["site-prod"]},
        defaults={"max_delete_fraction": 1.0},
        extra_sources={"previews": {"type": "file", "path": str(preview_file)}},
        extra_syncs=[{"name": "preview", "from": "previews", "to": ["site-preview"]}],
        env={"NETLIFY_TOKEN": api.token},
        context_extra={"httpx_transport": api.transport},
    )
    if together:
        results = await wb.once()
    else:
        results = [*await wb.once(syncs=["main"]), *await wb.once(syncs=["preview"])]
    assert [p.result for r in results for p in r.pairs] == ["ok", "ok"], [
        r.pairs[0].problems for r in results
    ]
    assert api.slots("SHARED_KEY") == {prod: "prod-value-11bb", preview: "preview-value-77aa"}
    assert api.calls("PUT") == 0  # neither replaced the other's value

    # a re-run of either writes nothing, at a drift check too
    for advance in (0.0, wb.config().syncs[0].policy.drift_check + 1):
        wb.clock.advance(advance)
        writes = api.writes
        for name in ("main", "preview"):
            (result,) = await wb.once(syncs=[name])
            assert result.ok and result.pairs[0].counts.get("unchanged", 0) >= 1
        assert api.writes == writes

    # the preview sync lets SHARED_KEY go: production's value stays
    preview_file.write_text("OTHER: o-33dd\n")
    (result,) = await wb.once(syncs=["preview"])
    assert result.ok
    assert api.slots("SHARED_KEY") == {prod: "prod-value-11bb"}
    assert api.slots("OTHER") == {preview: "o-33dd"}
    (result,) = await wb.once(syncs=["main"])
    assert result.ok and result.pairs[0].counts.get("unchanged") == 2


async def test_values_in_other_contexts_are_left_alone(tmp_path: Path) -> None:
    api = NetlifyAPI()
    api.put("API_KEY", {"dev": "local-dev-value"}, is_secret=True)
    wb = bench(tmp_path, api, {"API_KEY": "synced-value-3c3c"})
    pair = await wb.pair()
    assert pair.counts.get("created") == 1  # our contexts were free: syncd owns them
    assert api.slots("API_KEY") == {
        ("dev", None): "local-dev-value",
        **dict.fromkeys(DEFAULT_SLOTS, "synced-value-3c3c"),
    }
    wb.set_source({})
    pair = await wb.pair(force=True)
    assert pair.counts.get("deleted") == 1
    assert api.slots("API_KEY") == {("dev", None): "local-dev-value"}
    assert api.calls("DELETE") == 3


async def test_a_secret_is_never_written_into_a_shared_readable_variable(tmp_path: Path) -> None:
    api = NetlifyAPI()
    api.put("API_KEY", {"dev": "local-dev-value"}, is_secret=False)
    wb = bench(tmp_path, api, {"API_KEY": "would-be-readable-4d4d", "FINE": "fine-value-5e5e"})
    pair = await wb.pair()
    assert pair.result == "failed"
    [(key, kind, message)] = pair.problems
    assert kind == "failed" and key == "API_KEY" and "readable" in message
    assert "would-be-readable-4d4d" not in message
    assert api.slots("API_KEY") == {("dev", None): "local-dev-value"}
    assert api.stored()["FINE"] == "fine-value-5e5e"


async def test_a_value_for_all_contexts_is_not_split(tmp_path: Path) -> None:
    api = NetlifyAPI()
    api.put("API_KEY", {"all": "everyone-value"})
    wb = bench(tmp_path, api, {"API_KEY": "per-context-6f6f"})
    pair = await wb.pair()
    assert pair.result == "failed"
    assert "one value for all deploy contexts" in pair.problems[0][2]
    assert api.slots("API_KEY") == {("all", None): "everyone-value"}
    skip = await bench(tmp_path / "skip", api, {"API_KEY": "x-7a7a"}, on_conflict="skip").pair()
    assert skip.result == "ok" and skip.counts.get("skipped") == 1


async def test_foreign_value_in_our_context_follows_on_conflict(tmp_path: Path) -> None:
    api = NetlifyAPI()
    api.put("API_KEY", {"production": "theirs-8b8b"}, is_secret=True)
    fail = await bench(tmp_path / "f", api, {"API_KEY": "ours-9c9c"}, on_conflict="fail").pair()
    assert [(k, kind) for k, kind, _ in fail.problems] == [("API_KEY", "conflict")]
    assert api.slots("API_KEY") == {("production", None): "theirs-8b8b"}
    wb = bench(tmp_path / "o", api, {"API_KEY": "ours-9c9c"})
    adopt = await wb.pair()
    assert adopt.counts.get("adopted") == 1
    assert api.slots("API_KEY") == dict.fromkeys(DEFAULT_SLOTS, "ours-9c9c")
    wb.set_source({})
    gone = await wb.pair(force=True)
    assert gone.counts.get("deleted", 0) == 0  # adopted, never created: never deleted
    assert "API_KEY" in api.vars["site-1"]


# ---------------------------------------------------------------------- drift


async def test_a_secret_edited_out_of_band_is_restored_at_the_drift_check(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {"API_KEY": "source-value-0d0d", "OTHER": "other-1e1e"})
    await wb.pair()
    api.set_value("API_KEY", "production", "tampered")
    writes = api.writes
    await wb.pair()
    assert api.writes == writes  # between drift checks the state store is trusted
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    pair = await wb.pair()
    assert pair.counts.get("drift") == 1 and pair.counts.get("updated") == 1
    assert api.slots("API_KEY") == dict.fromkeys(DEFAULT_SLOTS, "source-value-0d0d")
    # the secret's contexts cannot be read: the variable, ours alone, is replaced whole
    assert api.writes == writes + 1 and api.requests[-1].method == "PUT"


async def test_a_readable_value_edited_out_of_band_costs_one_set(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = bench(
        tmp_path,
        api,
        {"API_KEY": "source-value-2f2f"},
        destinations={"netlify": dest(api, is_secret=False)},
    )
    await wb.pair()
    api.set_value("API_KEY", "deploy-preview", "tampered")
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    before = len(api.requests)
    pair = await wb.pair()
    assert pair.counts.get("drift") == 1
    sent = api.requests[before:]
    assert [(r.method, (r.body or {}).get("context")) for r in sent] == [
        ("GET", None),
        ("PATCH", "deploy-preview"),
    ]
    assert api.slots("API_KEY") == dict.fromkeys(DEFAULT_SLOTS, "source-value-2f2f")


async def test_scopes_changed_out_of_band_are_put_back_in_one_call(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {"API_KEY": "source-value-3a3a"})
    await wb.pair()
    api.vars["site-1"]["API_KEY"].scopes = ["builds"]
    wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
    before = len(api.requests)
    await wb.pair()
    assert [r.method for r in api.requests[before:]] == ["GET", "PUT"]
    var = api.vars["site-1"]["API_KEY"]
    assert var.scopes == ["builds", "functions", "runtime"] and var.is_secret
    assert api.slots("API_KEY") == dict.fromkeys(DEFAULT_SLOTS, "source-value-3a3a")


async def test_a_config_change_of_scopes_is_applied_at_the_drift_check(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {"API_KEY": "source-value-6b6b"})
    await wb.pair()
    narrower = Workbench(
        tmp_path,
        {"netlify": dest(api, scopes=["functions"])},
        source={"API_KEY": "source-value-6b6b"},
        env={"NETLIFY_TOKEN": api.token},
        context_extra={"httpx_transport": api.transport},
    )
    writes = api.writes
    await narrower.pair()
    assert api.writes == writes  # between drift checks nothing is read or written
    narrower.clock.advance(narrower.config().syncs[0].policy.drift_check + 1)
    before = len(api.requests)
    await narrower.pair()
    assert [r.method for r in api.requests[before:]] == ["GET", "PUT"]
    assert api.vars["site-1"]["API_KEY"].scopes == ["functions"]
    before = len(api.requests)
    narrower.clock.advance(narrower.config().syncs[0].policy.drift_check + 1)
    await narrower.pair()
    assert [r.method for r in api.requests[before:]] == ["GET"]


async def test_a_readable_variable_of_ours_alone_is_made_secret(tmp_path: Path) -> None:
    api = NetlifyAPI()
    api.put("API_KEY", dict.fromkeys(DEFAULT_SLOTS, "theirs-7c7c"), is_secret=False)
    wb = bench(tmp_path, api, {"API_KEY": "ours-8d8d"})
    pair = await wb.pair()
    assert pair.counts.get("adopted") == 1
    var = api.vars["site-1"]["API_KEY"]
    assert var.is_secret and api.requests[-1].method == "PUT"
    assert api.slots("API_KEY") == dict.fromkeys(DEFAULT_SLOTS, "ours-8d8d")


async def test_a_variable_deleted_out_of_band_is_recreated_on_the_next_change(
    tmp_path: Path,
) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {"API_KEY": "first-4b4b"})
    await wb.pair()
    del api.vars["site-1"]["API_KEY"]
    wb.set_source({"API_KEY": "second-5c5c"})
    pair = await wb.pair()  # not listed: the set answers 404, then the variable is created
    assert pair.result == "ok", pair.problems
    assert api.slots("API_KEY") == dict.fromkeys(DEFAULT_SLOTS, "second-5c5c")


# ---------------------------------------------------------------------- keys, scopes, targets


async def test_read_only_and_oversized_keys_are_blocked_before_any_call(tmp_path: Path) -> None:
    api = NetlifyAPI()
    source = {"URL": "https://example.test", "BIG": "x" * 5000, "FINE": "fine-6d6d"}
    wb = bench(tmp_path, api, source)
    pair = await wb.pair()
    problems = {k: m for k, _, m in pair.problems}
    assert "read-only" in problems["URL"]
    assert "Netlify Functions" in problems["BIG"]
    sent = [r for r in api.requests if r.method == "POST"]
    assert [item["key"] for r in sent for item in r.body] == ["FINE"]
    # without the functions scope, a large value is fine
    api2 = NetlifyAPI()
    options = {"scopes": ["builds", "runtime"]}
    wb2 = bench(
        tmp_path / "b", api2, {"BIG": "x" * 5000}, destinations={"netlify": dest(api2, **options)}
    )
    assert (await wb2.pair()).result == "ok"
    assert len(api2.stored()["BIG"]) == 5000


async def test_branch_values_carry_the_branch_name(tmp_path: Path) -> None:
    api = NetlifyAPI()
    options = {"contexts": ["branch"], "branch": "staging"}
    wb = bench(
        tmp_path, api, {"API_KEY": "staging-7e7e"}, destinations={"netlify": dest(api, **options)}
    )
    await wb.pair()
    assert api.slots("API_KEY") == {("branch", "staging"): "staging-7e7e"}
    wb.set_source({"API_KEY": "staging-rotated-8f8f"})
    await wb.pair()
    last = api.requests[-1]
    assert last.method == "PATCH"
    assert last.body["context"] == "branch" and last.body["context_parameter"] == "staging"
    assert api.slots("API_KEY") == {("branch", "staging"): "staging-rotated-8f8f"}


async def test_account_level_variables_stay_off_the_sites(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = bench(
        tmp_path, api, {"TEAM_KEY": "team-9a9a"}, destinations={"netlify": dest(api, site_id=None)}
    )
    await wb.pair()
    assert "TEAM_KEY" in api.vars[None] and api.vars["site-1"] == {}
    assert all("site_id" not in r.params for r in api.requests)


async def test_a_bad_token_fails_the_pair_with_one_call(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {"API_KEY": "value-0b0b"})
    wb.env["NETLIFY_TOKEN"] = "revoked-token-1c1c"
    pair = await wb.pair()
    assert pair.result == "error"
    assert pair.error is not None and "401" in pair.error
    assert "revoked-token-1c1c" not in pair.error
    assert len(api.requests) == 1


async def test_check_reads_the_target(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = bench(tmp_path, api, {}, destinations={"netlify": dest(api, site_id="no-such-site")})
    engine = wb.engine()
    try:
        with pytest.raises(Exception, match="404"):
            await engine.destination("netlify").check()
    finally:
        await engine.aclose()
