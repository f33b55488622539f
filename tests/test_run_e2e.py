"""``syncd run`` as a real process: a file source, a dotenv destination, a signed webhook
that makes a change land within a second, an unsigned one refused, a changed file picked
up on its own, /metrics showing the runs, and SIGTERM ending it with status 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from syncd.webhooks import sign_generic

HOOK_SECRET = "e2e-webhook-secret-value"
VALUES = {"DB_PASSWORD": "first-password-value", "API_TOKEN": "first-token-value"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Poll ``cond`` (bounded); the seconds it took."""
    start = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not reached within {timeout}s")
        time.sleep(step)


def write_keeping_mtime(path: Path, text: str) -> None:
    """Change the file without moving its modification time, so only a webhook can
    announce the change (the daemon also watches file sources)."""
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


class Proc:
    def __init__(self, popen: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.popen, self.port, self.log = popen, port, log
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.http.post(path, content=body, headers=headers)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Proc]:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(yaml.safe_dump(VALUES))
    port = free_port()
    (tmp_path / "syncd.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "server": {"listen": f"127.0.0.1:{port}"},
                "defaults": {"interval": "1h"},
                "sources": {
                    "local": {
                        "type": "file",
                        "path": "./secrets.yaml",
                        "webhook_secret": "${HOOK_SECRET}",
                    }
                },
                "destinations": {"env": {"type": "dotenv", "path": "./out/.env"}},
                "syncs": [{"name": "app", "from": "local", "to": ["env"]}],
            }
        )
    )
    env = {
        **os.environ,
        "SYNCD_STATE_DIR": str(tmp_path / "state"),
        "HOOK_SECRET": HOOK_SECRET,
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "syncd", "-c", str(tmp_path / "syncd.yaml"), "run"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(popen, port, log)

    def ready() -> bool:
        assert popen.poll() is None, log.read_text()
        try:
            return proc.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=15)
        yield proc
    finally:
        proc.http.close()
        if popen.poll() is None:
            popen.kill()
            popen.wait(5)


def dotenv(tmp: Path) -> str:
    f = tmp / "out" / ".env"
    return f.read_text() if f.exists() else ""


def test_syncd_run_end_to_end(daemon: Proc, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yaml"
    # the start run
    wait_for(lambda: "first-token-value" in dotenv(tmp_path), timeout=5)
    assert "first-password-value" in dotenv(tmp_path)

    # an unsigned webhook is refused and changes nothing
    write_keeping_mtime(secrets, yaml.safe_dump({**VALUES, "API_TOKEN": "second-token-value"}))
    body = b'{"event": "secrets.modified"}'
    r = daemon.post("/webhooks/generic/local", body, {"Content-Type": "application/json"})
    assert r.status_code == 401
    r = daemon.post(
        "/webhooks/generic/local", body, {"X-Syncd-Signature": sign_generic("wrong", body)}
    )
    assert r.status_code == 401

    # a signed one makes the change land within a second
    start = time.monotonic()
    r = daemon.post(
        "/webhooks/generic/local", body, {"X-Syncd-Signature": sign_generic(HOOK_SECRET, body)}
    )
    assert r.status_code == 202 and r.json()["syncs"] == ["app"]
    wait_for(lambda: "second-token-value" in dotenv(tmp_path), timeout=3)
    took = time.monotonic() - start
    assert took < 1.0
    assert "first-token-value" not in dotenv(tmp_path)

    # a changed file is picked up without any webhook
    secrets.write_text(yaml.safe_dump({**VALUES, "API_TOKEN": "third-token-value"}))
    wait_for(lambda: "third-token-value" in dotenv(tmp_path), timeout=5)

    metrics = daemon.get("/metrics").text
    for line in (
        'syncd_runs_total{destination="env",result="ok",sync="app"} 3.0',
        'syncd_triggers_total{reason="start",sync="app"} 1.0',
        'syncd_triggers_total{reason="webhook",sync="app"} 1.0',
        'syncd_triggers_total{reason="file",sync="app"} 1.0',
        'syncd_webhooks_total{kind="generic",result="unauthorized",source="local"} 2.0',
        'syncd_items_total{action="update",destination="env",outcome="applied",sync="app"} 2.0',
        'syncd_propagation_seconds_count{destination="env",sync="app"} 2.0',
    ):
        assert line in metrics, line
    assert 'syncd_last_success_timestamp_seconds{destination="env",sync="app"}' in metrics
    assert "token-value" not in metrics and "password-value" not in metrics

    daemon.popen.send_signal(signal.SIGTERM)
    assert daemon.popen.wait(10) == 0
    log = daemon.log.read_text()
    assert "syncd run stopped" in log
    # nothing leaked: no value and no webhook secret in any log line
    for leaked in ("first-password-value", "token-value", HOOK_SECRET):
        assert leaked not in log


def test_a_listen_address_in_use_is_reported_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncd.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        (tmp_path / "secrets.yaml").write_text("A: one\n")
        (tmp_path / "syncd.yaml").write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "server": {"listen": f"127.0.0.1:{port}"},
                    "sources": {"local": {"type": "file", "path": "./secrets.yaml"}},
                    "destinations": {"env": {"type": "dotenv", "path": "./out/.env"}},
                    "syncs": [{"name": "app", "from": "local", "to": ["env"]}],
                }
            )
        )
        assert main(["-c", str(tmp_path / "syncd.yaml"), "--log-format", "json", "run"]) == 1
    out = capsys.readouterr()
    assert "cannot listen" in out.out + out.err
    assert not (tmp_path / "out" / ".env").exists()
