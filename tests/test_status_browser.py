"""``/status`` of a running ``syncd run`` in a real browser (Debian's chromium through
chromedriver): the failing pair, its key and the reason are visible, with JavaScript on and
off; a screenshot is saved. Under CI=true a missing browser fails the test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.test_run_e2e import free_port, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = os.environ.get("SYNCD_STATUS_SCREENSHOT")  # e.g. docs/status-page.png


def _need_browser() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "secrets.yaml").write_text(
        yaml.safe_dump(
            {
                "DATABASE_URL": "postgres://app:browser-secret-1@db/app",
                "bad-key": "never-shown-2",
                "API_TOKEN": "browser-secret-token-3",
            }
        )
    )
    port = free_port()
    (tmp_path / "syncd.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "server": {"listen": f"127.0.0.1:{port}"},
                "defaults": {"interval": "1h"},
                "sources": {
                    "local": {"type": "file", "path": "./secrets.yaml"},
                    "vault-export": {"type": "file", "path": "./missing.yaml"},
                },
                "destinations": {
                    "app-env": {"type": "dotenv", "path": "./out/app.env"},
                    "worker-env": {"type": "dotenv", "path": "./out/worker.env"},
                },
                "syncs": [
                    {"name": "app", "from": "local", "to": ["app-env"]},
                    {
                        "name": "worker",
                        "from": "local",
                        "to": ["worker-env"],
                        "exclude": ["bad-key"],
                    },
                    {"name": "legacy", "from": "vault-export", "to": ["worker-env"]},
                ],
            }
        )
    )
    env = {**os.environ, "SYNCD_STATE_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "-c", str(tmp_path / "syncd.yaml"), "run"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def settled() -> bool:
        assert proc.poll() is None
        try:
            data = httpx.get(f"{base}/status.json", timeout=2).json()
        except httpx.HTTPError:
            return False
        return all(p["state"] in ("ok", "failing") for p in data["pairs"])

    try:
        wait_for(settled, timeout=30, step=0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def browser(javascript: bool) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
    ):
        opts.add_argument(flag)
    if not javascript:
        opts.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.mark.parametrize("javascript", [True, False], ids=["js-on", "js-off"])
def test_the_failing_pair_its_key_and_reason_are_visible(
    daemon: str, tmp_path: Path, javascript: bool
) -> None:
    _need_browser()
    from selenium.webdriver.common.by import By

    driver = browser(javascript)
    try:
        driver.get(f"{daemon}/status")  # type: ignore[attr-defined]
        body = driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
        assert "2 failing" in body and "1 ok" in body
        row = driver.find_element(By.ID, "app--app-env")  # type: ignore[attr-defined]
        assert "failing" in row.text and "CONFIG" in row.text.upper()
        assert "bad-key" in row.text and "invalid key name" in row.text
        legacy = driver.find_element(By.ID, "legacy--worker-env")  # type: ignore[attr-defined]
        assert "SOURCE" in legacy.text.upper() and "could not be read" in legacy.text
        # failing pairs first
        rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")  # type: ignore[attr-defined]
        assert rows[-1].get_attribute("id") == "worker--worker-env"
        for value in ("browser-secret-1", "never-shown-2", "browser-secret-token-3"):
            assert value not in driver.page_source  # type: ignore[attr-defined]
        shot = tmp_path / f"status-{'js' if javascript else 'nojs'}.png"
        driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
        assert shot.stat().st_size > 10_000
        if SCREENSHOT and javascript:
            shutil.copy(shot, SCREENSHOT)
    finally:
        driver.quit()  # type: ignore[attr-defined]
