"""Overlapping ``syncd once`` processes on one state store, against a stateful GitLab fake
that counts writes: every key is written once in total, a pair held elsewhere is reported
``busy`` naming its holder, and nothing prints a traceback. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes.gitlab_server import Container, FakeGitLab

N = 40


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


def setup(root: Path, fake: FakeGitLab, state_url: str, values: dict[str, str]) -> Path:
    (root / "secrets.yaml").write_text(yaml.safe_dump(values))
    cfg = {
        "version": 1,
        "state": {"url": state_url},
        "sources": {"local": {"type": "file", "path": "secrets.yaml"}},
        "destinations": {
            "gl": {
                "type": "gitlab",
                "url": fake.url,
                "token": "${GITLAB_TOKEN}",
                "project": "acme/api",
                "masked": False,
            }
        },
        "syncs": [{"name": "app", "from": "local", "to": ["gl"]}],
    }
    path = root / "syncd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start(cfg: Path, fake: FakeGitLab, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "GITLAB_TOKEN": fake.token,
        "SYNCD_LOG_FORMAT": "json",
        "SYNCD_FINGERPRINT_KEY_FILE": str(cfg.parent / "fingerprint.key"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "-c", str(cfg), "once", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "database is locked" not in err, err[-2000:]
    return proc.returncode, out, err


def writes(fake: FakeGitLab) -> int:
    return len([r for r in fake.calls() if r.method in ("POST", "PUT") and r.status < 300])


def values(prefix: str) -> dict[str, str]:
    return {f"KEY_{i:03d}": f"{prefix}-value-{i:03d}" for i in range(N)}


def hold_writes(fake: FakeGitLab) -> threading.Event:
    gate = threading.Event()
    fake.write_gate = gate
    fake.write_seen.clear()
    return gate


def test_a_second_once_finds_the_pair_busy_and_writes_nothing(
    tmp_path: Path, fake: FakeGitLab, state_url: str
) -> None:
    project: Container = fake.project("acme/api")
    cfg = setup(tmp_path, fake, state_url, values("first"))
    gate = hold_writes(fake)
    first = start(cfg, fake)
    assert fake.write_seen.wait(60), "the first once never wrote"
    rc, out, _ = finish(start(cfg, fake))  # state.lock_timeout: 0s, the default
    assert rc == 1
    assert f"app → gl: busy: held by host {os.uname().nodename} pid {first.pid} since " in out
    assert "nothing was written" in out
    gate.set()
    rc, out, _ = finish(first)
    assert rc == 0, out
    assert writes(fake) == N
    assert fake.stored(project) == values("first")


def test_overlapping_onces_after_a_change_write_each_key_once(
    tmp_path: Path, fake: FakeGitLab, state_url: str
) -> None:
    project = fake.project("acme/api")
    cfg = setup(tmp_path, fake, state_url, values("first"))
    rc, out, _ = finish(start(cfg, fake))
    assert rc == 0, out
    assert writes(fake) == N
    # every value changes; three processes start together, the later ones wait for the pair
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(values("second")))
    gate = hold_writes(fake)
    procs = [start(cfg, fake, "--lock-timeout", "2m")]
    assert fake.write_seen.wait(60)
    procs += [start(cfg, fake, "--lock-timeout", "2m") for _ in range(2)]
    gate.set()
    results = [finish(p) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0, 0], [out for _, out, _ in results]
    assert writes(fake) == 2 * N  # N creates, then N updates: never one twice
    assert fake.stored(project) == values("second")
    summaries = sorted(out.splitlines()[0] for _, out, _ in results)
    assert summaries[0].startswith("app → gl: ok: 0 created, 0 updated")
    assert any(f"{N} updated" in s for s in summaries)


def test_onces_started_together_on_a_fresh_store_never_trace_back(
    tmp_path: Path, fake: FakeGitLab, state_url: str
) -> None:
    project = fake.project("acme/api")
    cfg = setup(tmp_path, fake, state_url, values("fresh"))
    procs = [start(cfg, fake, "--lock-timeout", "2m") for _ in range(4)]
    results = [finish(p) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0, 0, 0], [err[-500:] for _, _, err in results]
    assert writes(fake) == N
    assert fake.stored(project) == values("fresh")
