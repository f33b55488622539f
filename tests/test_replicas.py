"""Several ``syncd run`` replicas on one PostgreSQL state, as real processes against a
stateful GitLab fake that counts writes: the syncs spread over the replicas, each key is
written once, a webhook reaching a replica that does not own the sync lands through the one
that does, ``kill -9`` and SIGTERM hand the syncs over, and a replica paused past its lease
(SIGSTOP) never writes again once another has taken its pair over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from syncd.webhooks import sign_generic
from tests.fakes.gitlab_server import Container, FakeGitLab
from tests.test_run_e2e import free_port, wait_for, write_keeping_mtime

HOOK_SECRET = "replica-webhook-secret"
LEASE = 2.0


class Replica:
    def __init__(self, root: Path, name: str, cfg: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.log = root / f"{name}.log"
        conf = yaml.safe_load(cfg.read_text())
        conf["server"] = {"listen": f"127.0.0.1:{self.port}"}
        self.cfg = root / f"{name}.yaml"
        self.cfg.write_text(yaml.safe_dump(conf, sort_keys=False))
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "syncd", "-c", str(self.cfg), "run"],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)

    def ready(self) -> bool:
        assert self.popen.poll() is None, self.log.read_text()[-3000:]
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def metric(self, name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name):
                labels, _, value = line.rpartition(" ")
                out[labels] = float(value)
        return out

    def webhook(self, source: str = "local") -> httpx.Response:
        body = b'{"event": "secrets.modified"}'
        return self.http.post(
            f"/webhooks/generic/{source}",
            content=body,
            headers={"X-Syncd-Signature": sign_generic(HOOK_SECRET, body)},
        )

    def runs_of(self, sync: str, result: str) -> int:
        """Pair runs of ``sync`` this replica logged with this result."""
        n = 0
        for line in self.log.read_text().splitlines():
            if '"pair done"' in line and f'"sync": "{sync}"' in line:
                n += f'"result": "{result}"' in line
        return n

    def stop(self) -> None:
        self.http.close()
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


class Cluster:
    def __init__(self, root: Path, pg_url: str, fake: FakeGitLab, syncs: int, keys: int) -> None:
        self.root, self.fake = root, fake
        self.project: Container = fake.project("acme/api")
        self.values = {
            f"S{i:02d}_K{k}": f"first-{i:02d}-{k}-value" for i in range(syncs) for k in range(keys)
        }
        self.secrets = root / "secrets.yaml"
        self.secrets.write_text(yaml.safe_dump(self.values))
        conf: dict[str, Any] = {
            "version": 1,
            "state": {"url": pg_url, "lease": f"{LEASE}s"},
            "defaults": {"interval": "1h", "drift_check": "1h"},
            "sources": {
                "local": {
                    "type": "file",
                    "path": str(self.secrets),
                    "webhook_secret": "${HOOK_SECRET}",
                }
            },
            "destinations": {
                "gl": {
                    "type": "gitlab",
                    "url": fake.url,
                    "token": "${GITLAB_TOKEN}",
                    "project": "acme/api",
                    "masked": False,
                    "concurrency": 1,
                }
            },
            "syncs": [
                {"name": f"s{i:02d}", "from": "local", "to": ["gl"], "include": [f"S{i:02d}_*"]}
                for i in range(syncs)
            ],
        }
        self.cfg = root / "base.yaml"
        self.cfg.write_text(yaml.safe_dump(conf, sort_keys=False))
        self.env = {
            **os.environ,
            "HOOK_SECRET": HOOK_SECRET,
            "GITLAB_TOKEN": fake.token,
            "SYNCD_FINGERPRINT_KEY_FILE": str(root / "fingerprint.key"),
            "SYNCD_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        self.replicas: list[Replica] = []

    def start(self, n: int) -> list[Replica]:
        new = [
            Replica(self.root, f"r{len(self.replicas) + i}", self.cfg, self.env) for i in range(n)
        ]
        self.replicas += new
        for r in new:
            wait_for(r.ready, timeout=30, step=0.05)
        return new

    def see_each_other(self, n: int) -> None:
        live = [r for r in self.replicas if r.popen.poll() is None]
        wait_for(
            lambda: all(r.metric("syncd_replicas") == {"syncd_replicas": float(n)} for r in live),
            timeout=4 * LEASE,
        )

    def status(self) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "syncd", "-c", str(self.cfg), "status", "--json"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=True,
        )
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def owner_of(self, sync: str) -> Replica:
        st = self.status()
        owner = next(p["owner"] for p in st["pairs"] if p["sync"] == sync)
        pid = next(r["pid"] for r in st["replicas"] if r["id"] == owner)
        return next(r for r in self.replicas if r.popen.pid == pid)

    def writes(self) -> int:
        return len([r for r in self.fake.calls() if r.method in ("POST", "PUT")])

    def stored(self) -> dict[str, str]:
        return self.fake.stored(self.project)

    def settled(self, want: dict[str, str]) -> Callable[[], bool]:
        return lambda: self.stored() == want

    def change(self, sync: int, keys: int) -> dict[str, str]:
        for k in range(keys):
            self.values[f"S{sync:02d}_K{k}"] = f"changed-{sync:02d}-{k}-{time.monotonic_ns()}"
        write_keeping_mtime(self.secrets, yaml.safe_dump(self.values))
        return dict(self.values)

    def stop(self) -> None:
        for r in self.replicas:
            if r.popen.poll() is not None and r.popen.returncode == -signal.SIGSTOP:
                os.kill(r.popen.pid, signal.SIGCONT)
            r.stop()


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab() as server:
        yield server


def test_three_replicas_share_the_syncs_and_hand_them_over(
    tmp_path: Path, pg_url: str, fake: FakeGitLab
) -> None:
    cluster = Cluster(tmp_path, pg_url, fake, syncs=30, keys=1)
    try:
        cluster.start(3)
        wait_for(cluster.settled(cluster.values), timeout=60, step=0.05)
        cluster.see_each_other(3)
        assert cluster.writes() == 30  # every key once, whoever ran it
        owned = {r.name: sum(r.metric("syncd_pairs_owned").values()) for r in cluster.replicas}
        assert sum(owned.values()) == 30 and all(n > 0 for n in owned.values()), owned
        assert all(r.metric("syncd_replicas") == {"syncd_replicas": 3.0} for r in cluster.replicas)
        st = cluster.status()
        assert len(st["replicas"]) == 3 and st["schema"] == 1

        # a webhook at a replica that does not own the sync: it lands through the owner
        owner = cluster.owner_of("s05")
        other = next(r for r in cluster.replicas if r is not owner)
        want = cluster.change(5, 1)
        sent = time.monotonic()
        assert other.webhook().status_code == 202
        latency = wait_for(cluster.settled(want), timeout=10, step=0.005)
        assert latency < 1.0, latency
        assert cluster.writes() == 31

        # kill -9 of a replica: its syncs are taken over (its session ends with it)
        victim = cluster.owner_of("s07")
        want = cluster.change(7, 1)
        victim.popen.kill()
        victim.popen.wait(10)
        took = wait_for(cluster.settled(want), timeout=4 * LEASE, step=0.01)
        assert took < 2 * LEASE, took
        survivors = [r for r in cluster.replicas if r is not victim]
        cluster.see_each_other(2)
        assert cluster.writes() == 32

        # SIGTERM: the replica leaves at once and its syncs move without waiting for a lease
        leaver = cluster.owner_of("s11")
        want = cluster.change(11, 1)
        sent = time.monotonic()
        leaver.popen.send_signal(signal.SIGTERM)
        assert leaver.popen.wait(30) == 0
        wait_for(cluster.settled(want), timeout=4 * LEASE, step=0.01)
        assert time.monotonic() - sent < LEASE + 1.0
        assert cluster.writes() == 33
        last = next(r for r in survivors if r is not leaver)
        assert sum(last.metric("syncd_pairs_owned").values()) == 30
    finally:
        cluster.stop()
    print(
        f"\nwebhook via a non-owner: {latency * 1000:.0f} ms; takeover after kill -9: {took:.2f} s"
    )


def test_a_replica_paused_past_its_lease_never_writes_after_the_takeover(
    tmp_path: Path, pg_url: str, fake: FakeGitLab
) -> None:
    cluster = Cluster(tmp_path, pg_url, fake, syncs=4, keys=5)
    try:
        cluster.start(2)
        wait_for(cluster.settled(cluster.values), timeout=60, step=0.05)
        cluster.see_each_other(2)
        paused = cluster.owner_of("s01")
        other = next(r for r in cluster.replicas if r is not paused)
        base = cluster.writes()
        # the owner starts rewriting s01's five keys; its first write hangs at the platform
        gate = threading.Event()
        fake.write_gate, fake.write_seen = gate, threading.Event()
        want = cluster.change(1, 5)
        assert paused.webhook().status_code == 202
        assert fake.write_seen.wait(10)
        os.kill(paused.popen.pid, signal.SIGSTOP)
        # past its lease, the other replica takes s01 over and writes all five keys
        arrived = fake.writes_arrived
        wait_for(lambda: fake.writes_arrived > arrived, timeout=6 * LEASE, step=0.02)
        gate.set()
        wait_for(cluster.settled(want), timeout=6 * LEASE, step=0.02)
        wait_for(
            lambda: (
                '"pair done"' in other.log.read_text() and '"result": "ok"' in other.log.read_text()
            ),
            timeout=10,
        )
        settled = cluster.writes()
        assert settled == base + 1 + 5  # the paused one's single in-flight write, then five
        # the paused replica resumes: it finds out before its next write, and stops
        os.kill(paused.popen.pid, signal.SIGCONT)
        wait_for(lambda: "pair stopped: hold lost" in paused.log.read_text(), timeout=10)
        # it joins again, gets s01 back and runs it: nothing left to write
        wait_for(lambda: paused.runs_of("s01", "ok") >= 1, timeout=6 * LEASE)
        assert cluster.writes() == settled
        assert cluster.stored() == want
    finally:
        cluster.stop()
