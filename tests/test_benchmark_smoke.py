"""A seconds-long run of the benchmark harness over all six destinations (N = 20, no
latency, no naive mode, no steady state, one webhook through ``syncd run``), so a broken
harness fails the suite: every key held everywhere, nothing failed, a no-op pass that calls
nothing, and the change landing at every destination."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_harness_runs_every_destination(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--n",
            "20",
            "--no-naive",
            "--latency-samples",
            "1",
            "--steady",
            "0",
            "--latency-factor",
            "0",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    # only what the options leave out; no platform is missing from this build
    assert all("--" in why for why in report["skipped"]), report["skipped"]
    (run,) = report["runs"]
    dests = ["ssm", "asm", "github", "gitlab", "vercel", "netlify"]
    assert run["held"]["syncd"] == dict.fromkeys(dests, "20/20")
    for label, cycle in run["cycles"].items():
        for name in dests:
            d = cycle["dests"][name]
            assert d["error"] is None and d["result"] == "ok", (label, name, d)
            assert d["counts"].get("failed", 0) == 0 and d["server"]["throttled"] == 0
    # one change through a signed webhook into `syncd run` reached every destination
    latency = run["latency"]
    assert latency["error"] is None and not any(latency["missed"].values()), latency
    assert len(latency["everywhere"]) == 1
    noop = run["cycles"]["syncd/no-op"]["dests"]
    assert {name: noop[name]["calls"] for name in dests} == dict.fromkeys(dests, 0)
