"""The status model and its views: states, error classes (config, platform, source), the
keys that failed or are blocked with their reasons, failing pairs first; ``/status`` and
``/status.json`` of a daemon, their token, and never a value."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from syncd import registry
from syncd.cli import main
from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.server import create_app
from syncd.state import Fingerprinter
from syncd.status import collect, render_html
from syncd.testing import memory
from syncd.testing.memory import platform
from syncd.testing.workbench import Workbench

SECRET_VALUES = {
    "GOOD_KEY": "good-value-7f3a91",
    "REJECTED": "rejected-value-c42e",
    "bad-key": "blocked-value-99d1",
}
TOKEN = "status-token-1b2c3d"


@pytest.fixture(autouse=True)
def _memory() -> Iterator[None]:
    memory.install()
    for name in ("st-ok", "st-bad", "st-flaky"):
        platform(name).data.clear()
        platform(name).reject.clear()
        platform(name).throttle_next = 0
    yield
    registry.unregister(registry.DESTINATION_GROUP, "memory")


@pytest.fixture
def bench(tmp_path: Path) -> Workbench:
    """Four pairs after one pass: ok; failing for a config reason (a rejected key and a
    blocked name); failing for a platform reason (throttled past its retries); a sync whose
    source cannot be read."""
    wb = Workbench(
        tmp_path,
        {
            "ok": {"type": "memory", "platform": "st-ok"},
            "bad": {"type": "memory", "platform": "st-bad"},
            "flaky": {"type": "memory", "platform": "st-flaky"},
        },
        source=SECRET_VALUES,
        sync={"to": ["bad"]},
        extra_sources={"gone": {"type": "file", "path": str(tmp_path / "missing.yaml")}},
        extra_syncs=[
            {"name": "fine", "from": "src", "to": ["ok"], "include": ["GOOD_KEY"]},
            {"name": "edge", "from": "src", "to": ["flaky"], "exclude": ["bad-key"]},
            {"name": "lost-source", "from": "gone", "to": ["ok"]},
        ],
        defaults={"retry_budget": "1h"},
    )
    platform("st-bad").reject = {"REJECTED"}
    platform("st-flaky").retry_after = None
    return wb


async def run_pass(wb: Workbench) -> None:
    await wb.once()
    # a changed value, written without a listing, that the flaky platform keeps throttling
    wb.set_source({**SECRET_VALUES, "GOOD_KEY": "good-value-rotated-2b"})
    platform("st-flaky").throttle_next = 10**6
    await wb.once(syncs=["edge"])
    platform("st-flaky").throttle_next = 0


async def test_states_classes_and_problems(bench: Workbench) -> None:
    await run_pass(bench)
    cfg = bench.config()
    coord = bench.state.coordinator(heartbeat_thread=False)
    status = collect(cfg, bench.state, coord)
    coord.close()
    pairs = {(p.sync, p.destination): p for p in status.pairs}
    assert pairs[("fine", "ok")].state == "ok" and pairs[("fine", "ok")].error_class is None
    bad = pairs[("main", "bad")]
    assert bad.state == "failing" and bad.error_class == "config"
    reasons = {p["key"]: (p["kind"], p["class"], p["reason"]) for p in bad.problems}
    assert reasons["REJECTED"][:2] == ("failed", "config") and "refused" in reasons["REJECTED"][2]
    assert reasons["bad-key"][:2] == ("blocked", "config")
    assert "invalid key name" in reasons["bad-key"][2]
    flaky = pairs[("edge", "flaky")]
    assert flaky.state == "failing" and flaky.error_class == "platform"
    assert {p["class"] for p in flaky.problems} == {"platform"}
    lost = pairs[("lost-source", "ok")]
    assert lost.state == "failing" and lost.error_class == "source"
    assert "could not be read" in (lost.last_run.error or "") if lost.last_run else False
    # failing first, ok last
    assert [p.state for p in status.ordered()][-1] == "ok"
    assert status.summary == {"failing": 3, "busy": 0, "running": 0, "never run": 0, "ok": 1}
    data = status.to_json()
    assert data["schema"] == 1 and data["summary"]["failing"] == 3
    text = json.dumps(data) + render_html(status)
    for value in SECRET_VALUES.values():
        assert value not in text
    assert "REJECTED" in text and "bad-key" in text


@pytest.fixture
async def client(bench: Workbench) -> AsyncIterator[tuple[httpx.AsyncClient, Daemon]]:
    await run_pass(bench)
    body = yaml.safe_load(bench.config_file.read_text())
    body["server"] = {"status_token": TOKEN}
    bench.config_file.write_text(yaml.safe_dump(body))
    daemon = Daemon(
        load_config(bench.config_file, env={}),
        bench.state,
        Fingerprinter.from_file(bench.root / "fingerprint.key"),
    )
    transport = httpx.ASGITransport(app=create_app(daemon))
    async with httpx.AsyncClient(transport=transport, base_url="http://syncd") as c:
        yield c, daemon
    daemon.coordinator.close()


async def test_status_page_and_json_need_the_token(
    client: tuple[httpx.AsyncClient, Daemon],
) -> None:
    c, _ = client
    for path in ("/status", "/status.json"):
        r = await c.get(path)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Basic ")
        assert (await c.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        assert (await c.get(path, headers={"Authorization": f"Basic {basic}"})).status_code == 200
    # health, readiness and metrics stay open
    assert (await c.get("/healthz")).status_code == 200
    assert (await c.get("/metrics")).status_code == 200


async def test_the_page_shows_what_fails_and_why_without_values(
    client: tuple[httpx.AsyncClient, Daemon],
) -> None:
    c, _ = client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    page = (await c.get("/status", headers=auth)).text
    assert "3 failing" in page and "1 ok" in page
    first_failing = page.index('class="failing"')
    assert first_failing < page.index('class="ok"')  # failing pairs first
    assert "<details" in page and "<code>REJECTED</code>" in page
    assert "invalid key name" in page
    assert "cls-config" in page and "cls-platform" in page and "cls-source" in page
    assert "http://" not in page.split("<footer")[0] and "https://" not in page  # no assets
    data = (await c.get("/status.json", headers=auth)).json()
    assert data["schema"] == 1
    by_pair = {(p["sync"], p["destination"]): p for p in data["pairs"]}
    assert by_pair[("main", "bad")]["error_class"] == "config"
    assert by_pair[("edge", "flaky")]["error_class"] == "platform"
    assert by_pair[("lost-source", "ok")]["error_class"] == "source"
    assert by_pair[("fine", "ok")]["next_run"] is not None
    assert data["replica"]["pid"] > 0
    for value in SECRET_VALUES.values():
        assert value not in page and value not in json.dumps(data)
    assert TOKEN not in page


async def test_cli_status_shows_the_class_and_the_next_run(
    bench: Workbench, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_pass(bench)
    capsys.readouterr()
    assert main(["-c", str(bench.config_file), "status"]) == 0
    out = capsys.readouterr().out
    assert "NEXT RUN (UTC)" in out
    assert "last error (source): source 'gone' could not be read" in out
    assert main(["-c", str(bench.config_file), "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {p["error_class"] for p in data["pairs"]} == {None, "config", "platform", "source"}
