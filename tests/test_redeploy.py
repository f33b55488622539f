"""After a change: Vercel redeploys its production deployment, Netlify builds the site (or
calls a build hook), once per run that wrote something and failed nothing, never when
nothing changed; ``plan`` shows it; a failed one is reported, retried and kept pending.
(``syncd run``'s debounce and drain: tests/test_daemon.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd import registry
from syncd.cli import main
from syncd.errors import ConfigErrors, PermanentError
from syncd.testing import memory
from syncd.testing.memory import platform
from syncd.testing.workbench import Workbench
from tests.fakes.netlify_api import NetlifyAPI
from tests.fakes.vercel_api import FakeVercel


def vercel(root: Path, api: FakeVercel, source: dict[str, str], **opts: Any) -> Workbench:
    return Workbench(
        root,
        {
            "vercel": {
                "type": "vercel",
                "api_url": "https://api.vercel.test",
                "token": "${T}",
                "project": api.project_name,
                "targets": ["production"],
                "redeploy": True,
                "writes_per_minute": None,
                **opts,
            }
        },
        source=source,
        env={"T": api.token},
        context_extra={"httpx_transport": api.transport},
    )


def netlify(root: Path, api: NetlifyAPI, source: dict[str, str], **opts: Any) -> Workbench:
    return Workbench(
        root,
        {
            "netlify": {
                "type": "netlify",
                "api_url": "https://api.netlify.test/api/v1",
                "token": "${T}",
                "account_id": api.account_id,
                "site_id": "site-1",
                **opts,
            }
        },
        source=source,
        env={"T": api.token},
        context_extra={"httpx_transport": api.transport},
    )


# ---------------------------------------------------------------------- vercel


async def test_vercel_first_sync_redeploys_production_once_and_an_unchanged_run_never(
    tmp_path: Path,
) -> None:
    api = FakeVercel()
    api.deploy(state="READY", target="production")  # dpl_0001, the running production
    api.deploy(state="READY", target="preview")
    latest = api.deploy(state="READY", target="production")  # dpl_0003
    wb = vercel(tmp_path, api, {"A_KEY": "alpha-value-1", "B_KEY": "bravo-value-1"})
    pair = await wb.pair()
    assert pair.result == "ok"
    (redeploy,) = api.redeploys()
    assert redeploy.params == {"forceNew": "1"}
    assert redeploy.body == {"name": "my-app", "deploymentId": latest, "target": "production"}
    assert pair.after is not None and pair.after.state == "done"
    assert pair.after.message == (
        f"then: redeploy vercel production (of {latest}): dpl_0004 (https://my-app-0004.vercel.app)"
    )
    # nothing changed: no redeploy
    assert (await wb.pair()).after is None
    assert len(api.redeploys()) == 1
    # two values change: one redeploy, of the newest READY production deployment
    api.deployments[-1]["state"] = "READY"
    wb.set_source({"A_KEY": "alpha-value-2", "B_KEY": "bravo-value-2"})
    await wb.pair()
    assert [r.body["deploymentId"] for r in api.redeploys()] == [latest, "dpl_0004"]


async def test_a_failed_key_holds_the_redeploy_back_until_it_lands(tmp_path: Path) -> None:
    api = FakeVercel()
    api.deploy()
    wb = vercel(tmp_path, api, {"GOOD": "good-value-1", "OTHER": "other-value-1"})
    api.failing_keys["OTHER"] = "ENV_CONFLICT"
    pair = await wb.pair()
    assert pair.result == "failed"
    assert pair.after is not None and pair.after.message == "redeploy held back: 1 key failed"
    assert api.redeploys() == []
    api.failing_keys.clear()
    pair = await wb.pair()  # OTHER lands: the redeploy owed since the first run happens
    assert pair.result == "ok" and pair.after is not None and pair.after.state == "done"
    assert len(api.redeploys()) == 1


async def test_plan_shows_the_redeploy_and_does_not_do_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeVercel()
    uid = api.deploy()
    wb = vercel(tmp_path, api, {"A_KEY": "alpha-value-1"})
    pair = await wb.pair(dry_run=True)
    assert pair.after is not None
    assert pair.after.message == f"then: redeploy vercel production (deployment {uid})"
    assert api.redeploys() == [] and api.writes() == []


async def test_a_redeploy_answered_500_is_retried_reported_and_kept_pending(
    tmp_path: Path,
) -> None:
    api = FakeVercel()
    api.deploy()
    wb = vercel(tmp_path, api, {"A_KEY": "alpha-value-1"})
    api.redeploy_fail = 2
    pair = await wb.pair()  # two 500s, then it goes through: the executor's retries
    assert pair.after is not None and pair.after.state == "done"
    assert len(api.redeploys()) == 3
    wb.set_source({"A_KEY": "alpha-value-2"})
    api.redeploy_fail = 100
    pair = await wb.pair()
    assert pair.result == "ok"  # the sync stands
    assert api.values(target=["production"]) == {"A_KEY": "alpha-value-2"}
    assert pair.after is not None and pair.after.state == "failed"
    assert pair.after.error_class == "RetryableError"
    assert (
        "redeploy failed (RetryableError)" in pair.after.message
        and "HTTP 500" in pair.after.message
    )
    assert len(api.redeploys()) == 3 + 5  # the executor's attempt limit
    # the next run writes nothing but still owes the redeploy: it is done then
    api.redeploy_fail = 0
    pair = await wb.pair()
    assert pair.after is not None and pair.after.state == "done"
    assert len(api.redeploys()) == 9


def test_vercel_redeploy_needs_production(tmp_path: Path) -> None:
    api = FakeVercel()
    wb = vercel(tmp_path, api, {"A": "a"}, targets=["preview"], git_branch="staging")
    with pytest.raises(ConfigErrors, match=r"destinations\.vercel.*redeploy: true redeploys"):
        wb.config()


# ---------------------------------------------------------------------- netlify


async def test_netlify_builds_the_site_once_per_changed_run(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = netlify(tmp_path, api, {"A_KEY": "alpha-value-1", "B_KEY": "b-1"}, redeploy=True)
    pair = await wb.pair()
    assert api.builds == [("api", "site-1")]
    assert pair.after is not None
    assert pair.after.message == (
        "then: build of site site-1: build0001 (https://app.netlify.com/sites/site-1/deploys/deploy0001)"
    )
    await wb.pair()
    assert len(api.builds) == 1


async def test_netlify_build_hook_is_called_without_the_token(tmp_path: Path) -> None:
    api = NetlifyAPI()
    api.build_hooks["5f3a9b1c"] = "site-1"
    hook = "https://api.netlify.test/build_hooks/5f3a9b1c"
    wb = netlify(tmp_path, api, {"A_KEY": "alpha-value-1"}, build_hook=hook)
    pair = await wb.pair()
    assert api.builds == [("hook", "site-1")]
    assert (
        pair.after is not None and pair.after.message == "then: build of site site-1 (build hook)"
    )
    # the hook URL is a credential: nowhere in the logs or the state store
    assert b"5f3a9b1c" not in wb.state_bytes()


def test_netlify_account_variables_cannot_redeploy(tmp_path: Path) -> None:
    api = NetlifyAPI()
    wb = netlify(tmp_path, api, {"A": "a"}, site_id=None, redeploy=True)
    with pytest.raises(ConfigErrors, match=r"destinations\.netlify.*belong to no site"):
        wb.config()


# ---------------------------------------------------------------------- once


def test_once_exits_1_when_the_redeploy_fails_and_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    memory.install()
    platform("redeploy-cli").data.clear()
    platform("redeploy-cli").redeploys.clear()
    (tmp_path / "s.yaml").write_text("A_KEY: alpha-value-1\n")
    cfg = tmp_path / "syncd.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
                "sources": {"s": {"type": "file", "path": "s.yaml"}},
                "destinations": {
                    "mem": {"type": "memory", "platform": "redeploy-cli", "redeploy": True}
                },
                "syncs": [{"name": "app", "from": "s", "to": ["mem"]}],
            }
        )
    )
    platform("redeploy-cli").redeploy_fail = 1
    platform("redeploy-cli").redeploy_error = PermanentError  # not retried: no real backoff
    assert main(["-c", str(cfg), "once"]) == 1
    out = capsys.readouterr().out
    assert "app → mem: ok: 1 created" in out
    assert "redeploy failed (PermanentError): " in out
    platform("redeploy-cli").redeploy_fail = 0
    assert main(["-c", str(cfg), "once"]) == 0  # nothing written, the owed redeploy done
    out = capsys.readouterr().out
    assert "then: redeploy: dpl_1 (https://deploy-1.memory-platform.test)" in out
    assert platform("redeploy-cli").redeploys == [1]
    registry.unregister(registry.DESTINATION_GROUP, "memory")
