"""The HTTP surface of ``syncd run``, in process (ASGI): health, readiness, metrics and
the two webhook routes with their signatures, size limit and refusals."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from syncd.config import load_config
from syncd.daemon import Daemon, Readiness
from syncd.metrics import Metrics
from syncd.server import create_app
from syncd.state import Fingerprinter
from syncd.state.sqlite import SqliteStore
from syncd.webhooks import sign_generic, sign_infisical

GENERIC_SECRET = "generic-hook-secret"
INFISICAL_SECRET = "infisical-hook-secret"
BODY = b'{"event": "secrets.modified", "project": {"environment": "prod"}}'


def config_body(root: Path, max_body_bytes: int = 1024) -> dict[str, Any]:
    return {
        "version": 1,
        "server": {"listen": "127.0.0.1:8080", "max_body_bytes": max_body_bytes},
        "sources": {
            "local": {
                "type": "file",
                "path": str(root / "secrets.yaml"),
                "webhook_secret": GENERIC_SECRET,
            },
            "quiet": {"type": "file", "path": str(root / "secrets.yaml")},
            "infisical-prod": {
                "type": "infisical",
                "host": "https://infisical.example.test",
                "project_id": "p-1",
                "environment": "prod",
                "auth": {"method": "token", "token": "st.unused-token"},
                "webhook_secret": INFISICAL_SECRET,
                "webhook_tolerance": "5m",
            },
        },
        "destinations": {"env": {"type": "dotenv", "path": str(root / "out.env")}},
        "syncs": [
            {"name": "from-local", "from": "local", "to": ["env"]},
            {"name": "from-local-too", "from": "local", "to": ["env"], "key_template": "X_{key}"},
            {"name": "from-quiet", "from": "quiet", "to": ["env"], "key_template": "Q_{key}"},
            {"name": "from-infisical", "from": "infisical-prod", "to": ["env"]},
        ],
    }


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "secrets.yaml").write_text("A: one\n")
    cfg_file = tmp_path / "syncd.yaml"
    cfg_file.write_text(yaml.safe_dump(config_body(tmp_path)))
    state = SqliteStore(tmp_path / "state.db")
    d = Daemon(load_config(cfg_file, env={}), state, Fingerprinter.from_file(tmp_path / "fp.key"))
    yield d
    state.close()


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(daemon))
    async with httpx.AsyncClient(transport=transport, base_url="http://syncd") as c:
        yield c


def pending(daemon: Daemon) -> dict[str, str]:
    out = {}
    for name in daemon.scheduler.names:
        t = daemon.scheduler.pending(name)
        if t is not None:
            out[name] = t.reason
    return out


def webhooks(daemon: Daemon, source: str, kind: str, result: str) -> float:
    v = daemon.metrics.registry.get_sample_value(
        "syncd_webhooks_total", {"source": source, "kind": kind, "result": result}
    )
    return v or 0.0


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.text == "ok\n"


async def test_readyz_ok_then_draining(client: httpx.AsyncClient, daemon: Daemon) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "checks": {"config": "ok", "state": "ok"}}
    daemon.request_stop()
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["daemon"] == "draining"


async def test_readyz_fails_when_the_state_store_does_not_answer(
    client: httpx.AsyncClient, daemon: Daemon
) -> None:
    daemon.state.close()
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["state"].startswith("ProgrammingError")


async def test_metrics_exposition(client: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.hooks.api_call("env", "put", "ok")
    daemon.hooks.retry("env")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    text = r.text
    assert 'syncd_api_calls_total{destination="env",operation="put",status="ok"} 1.0' in text
    assert 'syncd_retries_total{destination="env"} 1.0' in text
    for name in (
        "syncd_runs_total",
        "syncd_items_total",
        "syncd_run_duration_seconds",
        "syncd_propagation_seconds",
        "syncd_last_success_timestamp_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text


async def test_generic_webhook_signed_triggers_every_sync_of_the_source(
    client: httpx.AsyncClient, daemon: Daemon
) -> None:
    r = await client.post(
        "/webhooks/generic/local",
        content=BODY,
        headers={"X-Syncd-Signature": sign_generic(GENERIC_SECRET, BODY)},
    )
    assert r.status_code == 202
    assert r.json() == {"accepted": True, "syncs": ["from-local", "from-local-too"]}
    assert pending(daemon) == {"from-local": "webhook", "from-local-too": "webhook"}
    assert webhooks(daemon, "local", "generic", "accepted") == 1.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Syncd-Signature": "sha256=" + "0" * 64},
        {"X-Syncd-Signature": sign_generic("another-secret", BODY)},
        {"X-Syncd-Signature": sign_generic(GENERIC_SECRET, BODY + b" ")},
        {"X-Syncd-Signature": "garbage"},
    ],
    ids=["unsigned", "zeros", "wrong-secret", "other-body", "garbage"],
)
async def test_generic_webhook_bad_signature_is_401_and_triggers_nothing(
    client: httpx.AsyncClient, daemon: Daemon, headers: dict[str, str]
) -> None:
    r = await client.post("/webhooks/generic/local", content=BODY, headers=headers)
    assert r.status_code == 401
    assert GENERIC_SECRET not in r.text
    assert pending(daemon) == {}
    assert webhooks(daemon, "local", "generic", "unauthorized") == 1.0


async def test_unknown_source_or_source_without_secret_is_404(
    client: httpx.AsyncClient, daemon: Daemon
) -> None:
    sig = {"X-Syncd-Signature": sign_generic(GENERIC_SECRET, BODY)}
    for path in ("/webhooks/generic/nope", "/webhooks/generic/quiet"):
        r = await client.post(path, content=BODY, headers=sig)
        assert r.status_code == 404, path
    # an Infisical webhook for a source that is not an Infisical source
    r = await client.post("/webhooks/infisical/local", content=BODY, headers=sig)
    assert r.status_code == 404
    assert pending(daemon) == {}
    # unknown names do not become metric labels
    assert webhooks(daemon, "", "generic", "unknown") == 2.0


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient, daemon: Daemon) -> None:
    big = b"x" * 1025
    sig = {"X-Syncd-Signature": sign_generic(GENERIC_SECRET, big)}
    r = await client.post("/webhooks/generic/local", content=big, headers=sig)
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(3):
            yield b"y" * 400

    r = await client.post("/webhooks/generic/local", content=chunks(), headers=sig)
    assert r.status_code == 413
    assert pending(daemon) == {}
    exact = b"z" * 1024  # a body exactly at the limit is accepted
    r = await client.post(
        "/webhooks/generic/local",
        content=exact,
        headers={"X-Syncd-Signature": sign_generic(GENERIC_SECRET, exact)},
    )
    assert r.status_code == 202


async def test_webhooks_while_draining_are_503(client: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.request_stop()
    r = await client.post(
        "/webhooks/generic/local",
        content=BODY,
        headers={"X-Syncd-Signature": sign_generic(GENERIC_SECRET, BODY)},
    )
    assert r.status_code == 503 and r.headers["retry-after"] == "30"


async def test_infisical_webhook_signed_and_fresh_is_accepted(
    client: httpx.AsyncClient, daemon: Daemon
) -> None:
    ts = int(time.time() * 1000)  # Infisical signs with milliseconds
    r = await client.post(
        "/webhooks/infisical/infisical-prod",
        content=BODY,
        headers={"x-infisical-signature": sign_infisical(INFISICAL_SECRET, BODY, ts)},
    )
    assert r.status_code == 202
    assert r.json()["syncs"] == ["from-infisical"]
    assert pending(daemon) == {"from-infisical": "webhook"}


@pytest.mark.parametrize(
    "make_header",
    [
        lambda now: sign_infisical(INFISICAL_SECRET, BODY, int((now - 600) * 1000)),  # stale
        lambda now: sign_infisical(INFISICAL_SECRET, BODY, int((now + 600) * 1000)),  # future
        lambda now: sign_infisical("another-secret", BODY, int(now * 1000)),
        lambda now: sign_infisical(INFISICAL_SECRET, BODY + b"!", int(now * 1000)),
        lambda now: f"t={int(now * 1000)}",
        lambda now: "",
    ],
    ids=["stale", "future", "wrong-secret", "other-body", "no-digest", "empty"],
)
async def test_infisical_webhook_bad_or_stale_signature_is_401(
    client: httpx.AsyncClient, daemon: Daemon, make_header: Any
) -> None:
    r = await client.post(
        "/webhooks/infisical/infisical-prod",
        content=BODY,
        headers={"x-infisical-signature": make_header(time.time())},
    )
    assert r.status_code == 401
    assert pending(daemon) == {}


async def test_generic_route_for_an_infisical_source_uses_the_generic_scheme(
    client: httpx.AsyncClient, daemon: Daemon
) -> None:
    r = await client.post(
        "/webhooks/generic/infisical-prod",
        content=BODY,
        headers={"X-Syncd-Signature": sign_generic(INFISICAL_SECRET, BODY)},
    )
    assert r.status_code == 202
    assert pending(daemon) == {"from-infisical": "webhook"}


async def test_a_fake_backend_is_enough_for_the_app() -> None:
    """The app depends on the small Backend protocol, not on the daemon."""

    class Backend:
        metrics = Metrics()
        max_body_bytes = 10
        draining = False

        def webhook_source(self, name: str) -> Any:
            return None

        def trigger_source(self, name: str, reason: str = "webhook") -> list[str]:
            raise AssertionError("never triggered")

        async def readiness(self) -> Readiness:
            return Readiness(False, {"config": "ok", "state": "down"})

    transport = httpx.ASGITransport(app=create_app(Backend()))
    async with httpx.AsyncClient(transport=transport, base_url="http://syncd") as c:
        assert (await c.get("/readyz")).status_code == 503
        assert (await c.post("/webhooks/generic/x", content=b"{}")).status_code == 404
        assert (await c.get("/webhooks/generic/x")).status_code == 405
