"""The scenarios, driven through syncd's real engine (in this process) and ``syncd run``
(a child process):

1. initial sync of N secrets from the Infisical fake to every destination;
2. a no-op cycle (nothing changed, no drift check due), then a drift-check cycle;
3. one changed secret: the calls of a cycle, and the change-to-destination latency of
   ``syncd run`` triggered by a signed Infisical webhook;
4. steady state: resident memory and idle CPU of ``syncd run`` with many syncs.

Each platform's time scale applies to syncd's pacing and retry sleeps for that destination
(:class:`ScaledExecutor`) as well as to the fake, so rate limits measured in hours pass in
seconds while syncd's decisions stay the same.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.fakes import Gate, GateStats, HttpBridge, TimeScale
from benchmarks.naive import full_push
from benchmarks.platforms import Fleet
from syncd.config import load_config
from syncd.connector import Destination
from syncd.engine import Engine, Hooks, PairResult
from syncd.executor import Executor, Limiter, PairOutcome
from syncd.model import Plan
from syncd.state import Fingerprinter
from syncd.state.sqlite import SqliteStore
from syncd.webhooks import sign_infisical

SYNC = "fanout"
DRIFT_CHECK = 3600.0

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_dest", default=None)


class ScaledExecutor(Executor):
    """syncd's executor with each destination's pacing and retry sleeps on that
    destination's time scale."""

    def __init__(self, state: Any, scales: Mapping[str, TimeScale], **kw: Any) -> None:
        self.scales = dict(scales)
        self.real = TimeScale(1.0)
        super().__init__(state, sleep=self._sleep, clock=self._clock, **kw)

    def _scale(self) -> TimeScale:
        name = _current.get()
        return self.scales.get(name, self.real) if name else self.real

    def _clock(self) -> float:
        return self._scale().now()

    async def _sleep(self, seconds: float) -> None:
        await self._scale().sleep(seconds)

    def limiter(self, dest: Destination) -> Limiter:
        key = getattr(dest, "credential_key", None) or dest.name
        if key not in self._limiters:
            ts = self.scales.get(dest.name, self.real)
            self._limiters[key] = Limiter(
                getattr(dest.config, "concurrency", 4),
                dest.capabilities.writes_per_minute,
                ts.now,
                ts.sleep,
                dest.capabilities.rate_limits,
            )
        return self._limiters[key]

    async def apply(self, plan: Plan, dest: Destination, **kw: Any) -> PairOutcome:
        token = _current.set(dest.name)
        try:
            return await super().apply(plan, dest, **kw)
        finally:
            _current.reset(token)

    async def with_retries(self, dest: Destination, fn: Any, **kw: Any) -> Any:
        token = _current.set(dest.name)
        try:
            return await super().with_retries(dest, fn, **kw)
        finally:
            _current.reset(token)


class BenchHooks(Hooks):
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.retries: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self.pairs: dict[str, PairResult] = {}

    def api_call(self, destination: str, operation: str, status: str) -> None:
        self.calls[(destination, operation, status)] += 1

    def retry(self, destination: str) -> None:
        self.retries[destination] += 1

    def pair_done(self, result: PairResult, seconds: float) -> None:
        self.seconds[result.destination] = seconds
        self.pairs[result.destination] = result


# ---------------------------------------------------------------------------- results


@dataclass
class DestResult:
    name: str
    calls: int  # reported by the connector through Hooks.api_call
    server: GateStats  # seen by the fake
    seconds: float  # virtual seconds of the pair (plan + apply)
    scale: float
    result: str
    counts: dict[str, int]
    retries: int
    binding: str = ""
    binding_per_second: float = 0.0
    error: str | None = None

    @property
    def writes(self) -> int:
        return self.server.writes

    @property
    def rate_fraction(self) -> float | None:
        """Calls counted by the binding limit per second, as a share of the limit."""
        if not self.binding_per_second or self.seconds <= 0:
            return None
        used = self.server.covered.get(self.binding, 0)
        if used < 2:
            return None
        return (used / self.seconds) / self.binding_per_second


@dataclass
class CycleResult:
    label: str
    mode: str
    n: int
    wall: float  # real seconds of the whole pass
    cpu: float  # process CPU seconds (syncd and the in-process fakes)
    dests: dict[str, DestResult] = field(default_factory=dict)
    source_calls: int = 0


@dataclass
class LatencyResult:
    n: int
    samples: int
    per_dest: dict[str, list[float]] = field(default_factory=dict)
    everywhere: list[float] = field(default_factory=list)
    missed: Counter[str] = field(default_factory=Counter)
    error: str | None = None


@dataclass
class SteadyResult:
    mode: str
    syncs: int
    secrets: int
    interval: float
    window: float
    converge_seconds: float = 0.0
    rss_mib: float = 0.0
    hwm_mib: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None

    @property
    def cpu_per_hour(self) -> float:
        return self.cpu_seconds / self.window * 3600.0 if self.window else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def secret_values(n: int, salt: str = "") -> dict[str, str]:
    """N secrets: names sort in creation order; values GitLab can mask."""
    out = {}
    for i in range(n):
        digest = hashlib.sha256(f"{salt}{i}".encode()).hexdigest()[:32]
        out[f"SECRET_{i:05d}"] = f"v1-{digest}"
    return out


# ---------------------------------------------------------------------------- in-process runs


class Runner:
    """A ``syncd.yaml`` for one fleet, its state store, and passes through the engine."""

    def __init__(self, fleet: Fleet, root: Path, *, naive: bool) -> None:
        self.fleet = fleet
        self.root = root
        self.naive = naive
        self.mode = "naive" if naive else "syncd"
        root.mkdir(parents=True, exist_ok=True)
        self.state_path = root / "state.db"
        self.key_path = root / "fingerprint.key"
        self.config_path = self.write_config(root / "syncd.yaml")
        self.state = SqliteStore(self.state_path)
        self.fingerprint = Fingerprinter.from_file(self.key_path)
        self.offset = 0.0

    def config_body(
        self, bridge: HttpBridge | None = None, listen: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "version": 1,
            "state": {"url": f"sqlite:///{self.state_path}"},
            "defaults": {
                "interval": "1h",
                "drift_check": "0s" if self.naive else f"{int(DRIFT_CHECK)}s",
            },
            "sources": {"infisical": self.fleet.source(bridge)},
            "destinations": self.fleet.destinations(bridge),
            "syncs": [{"name": SYNC, "from": "infisical", "to": list(self.fleet.destinations())}],
        }
        if listen:
            body["server"] = {"listen": listen}
        return body

    def write_config(self, path: Path, **kw: Any) -> Path:
        path.write_text(yaml.safe_dump(self.config_body(**kw), sort_keys=False))
        return path

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def engine(self, hooks: Hooks) -> Engine:
        cfg = load_config(self.config_path, env=self.fleet.env())
        scales = {name: gate.scale for name, gate in self.fleet.gates.items()}
        executor = ScaledExecutor(self.state, scales, now=self.now)
        return Engine(
            cfg,
            self.state,
            self.fingerprint,
            executor=executor,
            hooks=hooks,
            now=self.now,
            context_extra={"httpx_transport": self.fleet.router},
        )

    async def cycle(self, label: str) -> CycleResult:
        gates = self.fleet.gates
        before = {name: g.snapshot() for name, g in gates.items()}
        hooks = BenchHooks()
        engine = self.engine(hooks)
        cpu0, t0 = time.process_time(), time.monotonic()
        with full_push() if self.naive else _nothing():
            try:
                results = await engine.run()
            finally:
                await engine.aclose()
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        out = CycleResult(label, self.mode, 0, wall, cpu)
        by_dest: Counter[str] = Counter()
        for (dest, _op, _status), k in hooks.calls.items():
            by_dest[dest] += k
        out.source_calls = by_dest.pop("infisical", 0)
        specs = {s.name: s for s in self.fleet.specs}
        for r in results:
            for p in r.pairs:
                gate = gates[p.destination]
                spec = specs[p.destination]
                binding = next(lim for lim in spec.limits if lim.name == spec.binding)
                out.dests[p.destination] = DestResult(
                    p.destination,
                    calls=by_dest[p.destination],
                    server=gate.snapshot().minus(before[p.destination]),
                    seconds=gate.scale.virtual(hooks.seconds.get(p.destination, 0.0)),
                    scale=gate.scale.factor,
                    result=p.result,
                    counts=p.counts,
                    retries=hooks.retries[p.destination],
                    binding=spec.binding,
                    binding_per_second=binding.requests / binding.window,
                    error=p.error,
                )
        return out

    def advance_past_drift_check(self) -> None:
        self.offset += DRIFT_CHECK + 1.0


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# ---------------------------------------------------------------------------- syncd run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _metric_total(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` for every sample of a counter."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            out[labels] = float(value)
    return out


class Daemon:
    """``syncd run`` (or the naive variant) as a child process."""

    def __init__(
        self, config: Path, port: int, env: Mapping[str, str], *, naive: bool, key_file: Path
    ) -> None:
        module = "benchmarks.naive" if naive else "syncd"
        cmd = [sys.executable, "-m", module, "-c", str(config), "--log-level", "error", "run"]
        full_env = {
            **os.environ,
            **env,
            "SYNCD_FINGERPRINT_KEY_FILE": str(key_file),
            "SYNCD_STATE_DIR": str(config.parent),
            "SYNCD_LOG_FORMAT": "json",
        }
        self.base = f"http://127.0.0.1:{port}"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            env=full_env,
            cwd=str(Path(__file__).resolve().parent.parent),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.http = httpx.Client(base_url=self.base, timeout=10.0)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"syncd run exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("syncd run did not become ready")

    def runs_done(self) -> int:
        """(sync, destination) runs finished so far, whatever their result."""
        text = self.http.get("/metrics").text
        return int(sum(_metric_total(text, "syncd_runs_total").values()))

    def wait_runs(self, count: int, timeout: float) -> float:
        """Seconds from the process start until ``count`` runs had finished."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"syncd run exited with {self.proc.returncode}")
            if self.runs_done() >= count:
                return time.monotonic() - self.started
            time.sleep(0.1)
        raise TimeoutError(f"syncd run did not finish {count} runs in {timeout:g}s")

    def rss(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        vals = {}
        for key in ("VmRSS", "VmHWM"):
            m = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
            vals[key] = int(m.group(1)) / 1024 if m else 0.0
        return vals["VmRSS"], vals["VmHWM"]

    def cpu(self) -> float:
        """utime + stime of the process, in seconds."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def webhook_body(project: str, environment: str, ts_ms: int) -> bytes:
    return json.dumps(
        {
            "event": "secrets.modified",
            "project": {"workspaceId": project, "environment": environment, "secretPath": "/"},
            "timestamp": ts_ms,
        }
    ).encode()


def measure_latency(
    runner: Runner, key: str, samples: int, *, spacing: float = 1.5, timeout: float = 60.0
) -> LatencyResult:
    """``syncd run`` against the fleet over HTTP; each sample changes ``key`` in the
    Infisical fake, posts a signed webhook and waits for the write at every destination."""
    fleet = runner.fleet
    out = LatencyResult(n=0, samples=samples)
    bridge = HttpBridge(fleet.router)
    port = free_port()
    config = runner.write_config(
        runner.root / "syncd-run.yaml", bridge=bridge, listen=f"127.0.0.1:{port}"
    )
    dests = [s.name for s in fleet.specs]
    daemon = Daemon(config, port, fleet.env(), naive=runner.naive, key_file=runner.key_path)
    secret = fleet.env()["INFISICAL_WEBHOOK_SECRET"]
    try:
        daemon.wait_ready()
        daemon.wait_runs(len(dests), timeout=600.0)  # the start run (a no-op once converged)
        inf = fleet.fakes["infisical"]
        last = 0.0
        for i in range(samples):
            pause = spacing - (time.monotonic() - last)
            if pause > 0:
                time.sleep(pause)
            inf.set(key, f"v2-latency-sample-{i:03d}-{os.urandom(8).hex()}")
            ts = int(time.time() * 1000)
            body = webhook_body("proj-1", "prod", ts)
            t0 = time.monotonic()
            last = t0
            resp = daemon.http.post(
                "/webhooks/infisical/infisical",
                content=body,
                headers={
                    "content-type": "application/json",
                    "x-infisical-signature": sign_infisical(secret, body, ts),
                },
            )
            if resp.status_code != 202:
                out.error = f"webhook answered {resp.status_code}"
                break
            landed: dict[str, float] = {}
            deadline = t0 + timeout
            while len(landed) < len(dests) and time.monotonic() < deadline:
                for d in dests:
                    if d not in landed:
                        t = fleet.gates[d].landed_after(t0)
                        if t is not None:
                            landed[d] = t - t0
                time.sleep(0.002)
            for d in dests:
                if d in landed:
                    out.per_dest.setdefault(d, []).append(landed[d])
                else:
                    out.missed[d] += 1
            if len(landed) == len(dests):
                out.everywhere.append(max(landed.values()))
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        daemon.stop()
        bridge.stop()
    return out


# ---------------------------------------------------------------------------- steady state


def steady_state(
    root: Path, *, syncs: int, secrets: int, window: float, interval: float, naive: bool
) -> SteadyResult:
    """``syncd run`` with ``syncs`` file sources of ``secrets`` keys each, one .env file
    per sync; memory after convergence and CPU over an idle ``window``."""
    mode = "naive" if naive else "syncd"
    out = SteadyResult(mode, syncs, secrets, interval, window)
    root.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Any] = {}
    destinations: dict[str, Any] = {}
    sync_list = []
    for s in range(syncs):
        src = root / f"src-{s:03d}.yaml"
        src.write_text(yaml.safe_dump(secret_values(secrets, salt=f"s{s}-"), sort_keys=True))
        sources[f"src{s:03d}"] = {"type": "file", "path": str(src)}
        destinations[f"env{s:03d}"] = {"type": "dotenv", "path": str(root / "out" / f"{s:03d}.env")}
        sync_list.append({"name": f"sync{s:03d}", "from": f"src{s:03d}", "to": [f"env{s:03d}"]})
    port = free_port()
    body = {
        "version": 1,
        "state": {"url": f"sqlite:///{root / 'state.db'}"},
        "server": {"listen": f"127.0.0.1:{port}"},
        "defaults": {
            "interval": f"{int(interval)}s",
            "drift_check": "0s" if naive else "1h",
        },
        "sources": sources,
        "destinations": destinations,
        "syncs": sync_list,
    }
    config = root / "syncd.yaml"
    config.write_text(yaml.safe_dump(body, sort_keys=False))
    daemon = Daemon(config, port, {}, naive=naive, key_file=root / "fingerprint.key")
    try:
        daemon.wait_ready(timeout=120.0)
        out.converge_seconds = daemon.wait_runs(syncs, timeout=900.0)
        time.sleep(1.0)
        cpu0, t0 = daemon.cpu(), time.monotonic()
        rss: list[float] = []
        while time.monotonic() - t0 < window:
            rss.append(daemon.rss()[0])
            time.sleep(0.5)
        out.window = time.monotonic() - t0
        out.cpu_seconds = daemon.cpu() - cpu0
        out.rss_mib = statistics.median(rss) if rss else 0.0
        out.hwm_mib = daemon.rss()[1]
    except (RuntimeError, TimeoutError, httpx.HTTPError, OSError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        daemon.stop()
    return out


async def _run(coro: Any) -> Any:
    return await coro


def run_async(coro: Any) -> Any:
    return asyncio.run(_run(coro))


def gate_totals(gates: Mapping[str, Gate]) -> dict[str, GateStats]:
    return {name: g.snapshot() for name, g in gates.items()}
