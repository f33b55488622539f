"""The benchmark harness: ``python -m benchmarks.run`` (``--help`` for the options).

For each N it starts a fleet of platform fakes (latency, token buckets shaped like each
platform's published limits), runs syncd against them through its real engine, then does
the same with a fresh fleet in the naive full-push mode, and prints the tables. The
change-to-destination latency and the steady state run ``syncd run`` as a child process.
By default N is 100 and 1,000 and the steady state is 10 syncs x 1,000 secrets; ``--full``
adds N = 10,000, GitHub organization scope and the 100 syncs x 1,000 secrets steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from benchmarks.platforms import PLATFORMS, Fleet, FleetOptions
from benchmarks.scenarios import (
    CycleResult,
    DestResult,
    LatencyResult,
    Runner,
    SteadyResult,
    measure_latency,
    percentile,
    secret_values,
    steady_state,
)

CHANGED_KEY = "SECRET_00000"


@dataclass
class NResult:
    n: int
    cycles: dict[str, CycleResult] = field(default_factory=dict)  # "syncd/initial" ...
    held: dict[str, dict[str, str]] = field(default_factory=dict)  # mode -> dest -> "k/n"
    latency: LatencyResult | None = None


@dataclass
class Report:
    args: dict[str, Any]
    machine: dict[str, str]
    skipped: list[str] = field(default_factory=list)
    runs: list[NResult] = field(default_factory=list)
    steady: list[SteadyResult] = field(default_factory=list)
    seconds: float = 0.0


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu or platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "commit": commit,
    }


# ---------------------------------------------------------------------------- running


def quiet_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def run_mode(
    n: int, naive: bool, opts: FleetOptions, root: Path, args: argparse.Namespace, out: NResult
) -> None:
    mode = "naive" if naive else "syncd"
    if args.threads:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(args.threads))
    fleet = Fleet(f"{mode}-{n}", opts)
    try:
        values = secret_values(n)
        fleet.seed(values)
        runner = Runner(fleet, root / f"{mode}-{n}", naive=naive)
        labels = ["initial", "no-op"] + ([] if naive else ["drift check"]) + ["one change"]
        for label in labels:
            if label == "drift check":
                runner.advance_past_drift_check()
            if label == "one change":
                values[CHANGED_KEY] = "v2-changed-" + os.urandom(8).hex()
                fleet.seed({CHANGED_KEY: values[CHANGED_KEY]})
            t0 = time.monotonic()
            cycle = await runner.cycle(label)
            cycle.n = n
            out.cycles[f"{mode}/{label}"] = cycle
            say(f"  N={n} {mode:5} {label:11} {time.monotonic() - t0:6.1f}s real")
        out.held[mode] = fleet.held(values)
        if not naive and args.latency_samples > 0:
            t0 = time.monotonic()
            lat = measure_latency(runner, CHANGED_KEY, args.latency_samples)
            lat.n = n
            out.latency = lat
            say(f"  N={n} syncd latency     {time.monotonic() - t0:6.1f}s real")
    finally:
        fleet.stop()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--full", action="store_true", help="N up to 10,000, org scope, 100x1,000 steady state"
    )
    p.add_argument(
        "--n", default=None, help="comma-separated N (default 100,1000; --full adds 10000)"
    )
    p.add_argument("--only", default="", help="comma-separated destinations (default: all)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive full-push runs")
    p.add_argument(
        "--latency-samples", type=int, default=None, help="webhooks per N (default 10; --full 30)"
    )
    p.add_argument(
        "--steady",
        default=None,
        help="SYNCSxSECRETS for the steady state (default 10x1000; --full 100x1000; 0 skips)",
    )
    p.add_argument(
        "--steady-window",
        type=float,
        default=None,
        help="idle seconds measured (default 60; --full 120)",
    )
    p.add_argument(
        "--steady-interval", type=float, default=30.0, help="sync interval in the steady state"
    )
    p.add_argument("--github-scope", choices=["repository", "organization"], default=None)
    p.add_argument(
        "--latency-factor", type=float, default=1.0, help="multiply every platform latency"
    )
    p.add_argument("--scale-factor", type=float, default=1.0, help="multiply every time scale")
    p.add_argument("--no-limits", action="store_true", help="latency only, no token buckets")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="worker threads of the engine's event loop (default: asyncio's, as syncd ships)",
    )
    p.add_argument("--json", default=None, help="write the raw results here")
    p.add_argument("--markdown", default=None, help="write the tables here")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    full = args.full
    args.ns = [
        int(x) for x in (args.n or ("100,1000,10000" if full else "100,1000")).split(",") if x
    ]
    if args.latency_samples is None:
        args.latency_samples = 30 if full else 10
    args.steady = args.steady or ("100x1000" if full else "10x1000")
    if args.steady_window is None:
        args.steady_window = 120.0 if full else 60.0
    if args.github_scope is None:
        args.github_scope = "organization" if full else "repository"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    opts = FleetOptions(
        latency_factor=args.latency_factor,
        scale_factor=args.scale_factor,
        limits=not args.no_limits,
        github_scope=args.github_scope,
        only=tuple(x for x in args.only.split(",") if x),
    )
    report = Report(args={k: v for k, v in vars(args).items()}, machine=machine())
    if not args.full:
        report.skipped.append(
            "N=10,000, GitHub organization scope and the 100 syncs x 1,000 secrets steady "
            "state (add --full)"
        )
    if args.no_naive:
        report.skipped.append("the naive full-push runs (--no-naive)")
    for spec in PLATFORMS:
        if opts.only and spec.name not in opts.only:
            continue
        from benchmarks.platforms import available

        why = available(spec)
        if why:
            report.skipped.append(f"destination {spec.name}: {why}")
    for line in report.skipped:
        say(f"skipped: {line}")
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    started = time.monotonic()
    try:
        for n in args.ns:
            res = NResult(n)
            report.runs.append(res)
            asyncio.run(run_mode(n, False, opts, work, args, res))
            if not args.no_naive:
                asyncio.run(run_mode(n, True, opts, work, args, res))
        if args.steady not in ("0", "none"):
            syncs, _, secrets = args.steady.partition("x")
            for naive in (False, True) if not args.no_naive else (False,):
                t0 = time.monotonic()
                st = steady_state(
                    work / f"steady-{'naive' if naive else 'syncd'}",
                    syncs=int(syncs),
                    secrets=int(secrets),
                    window=args.steady_window,
                    interval=args.steady_interval,
                    naive=naive,
                )
                report.steady.append(st)
                say(f"  steady {st.mode} {syncs}x{secrets} {time.monotonic() - t0:6.1f}s real")
    finally:
        report.seconds = time.monotonic() - started
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"work folder kept: {work}")
    text = render(report)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable(asdict(report)), indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------- the tables


def _cw(d: DestResult | None) -> str:
    """``calls (writes)``"""
    return "-" if d is None else f"{d.calls} ({d.writes})"


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "inf" if a else "-"
    return f"{a / b:.1f}x" if a / b < 100 else f"{a / b:.0f}x"


def _secs(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.1f} s"


def _ms(s: float) -> str:
    return f"{s * 1000:.0f} ms"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(out: list[str], *header: str) -> None:
    out.append("")
    out.append(_row(*header))
    out.append(_row(*["---"] * len(header)))


CALL_COLUMNS = (
    ("initial", "syncd/initial"),
    ("no-op", "syncd/no-op"),
    ("drift check", "syncd/drift check"),
    ("one change", "syncd/one change"),
    ("naive no-op", "naive/no-op"),
    ("naive one change", "naive/one change"),
)
PASSES = (
    "syncd/initial",
    "syncd/no-op",
    "syncd/drift check",
    "syncd/one change",
    "naive/initial",
    "naive/no-op",
    "naive/one change",
)


def _calls_table(out: list[str], run: NResult, present: list[str]) -> None:
    c = run.cycles
    out.append(
        "API calls per destination as `calls (writes)`: calls as the connector reported them "
        "through `Hooks.api_call`, writes as the fake received them (throttled attempts "
        "included); *held* is how many keys hold the source's value afterwards."
    )
    _table(out, "destination", *(name for name, _ in CALL_COLUMNS), "held")
    totals = {label: [0, 0] for _, label in CALL_COLUMNS}
    for d in present:
        cells = []
        for _, label in CALL_COLUMNS:
            r = c[label].dests.get(d) if label in c else None
            cells.append(_cw(r))
            if r is not None:
                totals[label][0] += r.calls
                totals[label][1] += r.writes
        out.append(_row(d, *cells, run.held.get("syncd", {}).get(d, "-")))
    out.append(_row("**all**", *(f"{a} ({b})" for a, b in totals.values()), ""))
    nn, n0 = totals["naive/no-op"], totals["syncd/no-op"]
    no, o1 = totals["naive/one change"], totals["syncd/one change"]
    if "naive/no-op" in c:
        out.append("")
        out.append(
            f"Naive full push vs syncd: a no-op cycle makes {nn[0]} vs {n0[0]} calls "
            f"({nn[1]} vs {n0[1]} writes); one changed secret {no[0]} vs {o1[0]} calls "
            f"({_ratio(no[0], o1[0])}), {no[1]} vs {o1[1]} writes ({_ratio(no[1], o1[1])})."
        )
    failed = []
    for label in PASSES:
        cyc = c.get(label)
        for d, r in cyc.dests.items() if cyc else ():
            if r.counts.get("failed") or r.error:
                why = f"{r.counts.get('failed', 0)} failed, {r.server.throttled} throttled"
                failed.append(f"{label} {d}: {why}" + (f" ({r.error})" if r.error else ""))
    if failed:
        out.append("")
        out.append("Failed items: " + "; ".join(failed) + ".")


def _limits_table(out: list[str], init: CycleResult, present: list[str]) -> None:
    out.append("")
    out.append(
        "Initial sync against each platform's limit; time is on the platform's clock "
        "(real seconds times its time scale)."
    )
    _table(
        out,
        "destination",
        "time",
        "calls",
        "rate vs limit",
        "limit",
        "throttled",
        "retries",
        "failed",
        "blocked",
        "scale",
    )
    for d in present:
        r = init.dests.get(d)
        if r is None:
            continue
        frac = r.rate_fraction
        out.append(
            _row(
                d,
                _secs(r.seconds),
                r.server.calls,
                "-" if frac is None else f"{frac:.0%}",
                r.binding,
                r.server.throttled,
                r.retries,
                r.counts.get("failed", 0),
                r.counts.get("blocked", 0),
                f"{r.scale:g}x",
            )
        )


def _passes_table(out: list[str], run: NResult) -> None:
    _table(out, "pass", "real time", "CPU", "slowest destination (its clock)", "source calls")
    for label in PASSES:
        cyc = run.cycles.get(label)
        if cyc:
            slowest = max((r.seconds for r in cyc.dests.values()), default=0.0)
            out.append(
                _row(label, _secs(cyc.wall), f"{cyc.cpu:.2f} s", _secs(slowest), cyc.source_calls)
            )


def _latency_table(out: list[str], lat: LatencyResult, present: list[str]) -> None:
    out.append("")
    if lat.error:
        out.append(f"Latency run stopped early: {lat.error}")
        out.append("")
    out.append(
        f"Change-to-destination latency of `syncd run` after a signed Infisical webhook, "
        f"{lat.samples} changes, real time (no time scale), fakes' latency included:"
    )
    _table(out, "destination", "p50", "p99", "max", "missed")
    for d in present:
        vals = lat.per_dest.get(d, [])
        missed = lat.missed.get(d, 0)
        if vals:
            p50, p99 = percentile(vals, 50), percentile(vals, 99)
            out.append(_row(d, _ms(p50), _ms(p99), _ms(max(vals)), missed))
        else:
            out.append(_row(d, "-", "-", "-", missed))
    if lat.everywhere:
        e = lat.everywhere
        out.append(
            _row(
                "**every destination**",
                _ms(percentile(e, 50)),
                _ms(percentile(e, 99)),
                _ms(max(e)),
                "",
            )
        )


def _steady_table(out: list[str], steady: list[SteadyResult]) -> None:
    out.append("")
    out.append("### Steady state of `syncd run`")
    _table(
        out,
        "mode",
        "syncs x secrets",
        "interval",
        "converged in",
        "RSS (median)",
        "RSS peak",
        "CPU per idle hour",
    )
    for st in steady:
        shape = f"{st.syncs} x {st.secrets:,}"
        if st.error:
            out.append(_row(st.mode, shape, f"{st.interval:g} s", st.error, "", "", ""))
            continue
        out.append(
            _row(
                st.mode,
                shape,
                f"{st.interval:g} s",
                _secs(st.converge_seconds),
                f"{st.rss_mib:.0f} MiB",
                f"{st.hwm_mib:.0f} MiB",
                f"{st.cpu_per_hour:.0f} s ({st.cpu_seconds:.1f} s in {st.window:.0f} s)",
            )
        )


def render(report: Report) -> str:
    out: list[str] = []
    m = report.machine
    out.append(
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['os']}; "
        f"syncd {m['commit']}; the run took {_secs(report.seconds)}."
    )
    if report.skipped:
        out.append("")
        out.append("Skipped: " + "; ".join(report.skipped) + ".")
    names = [s.name for s in PLATFORMS]
    for run in report.runs:
        present = [d for d in names if any(d in cyc.dests for cyc in run.cycles.values())]
        out.append("")
        out.append(f"### N = {run.n:,} secrets")
        out.append("")
        _calls_table(out, run, present)
        init = run.cycles.get("syncd/initial")
        if init:
            _limits_table(out, init, present)
        _passes_table(out, run)
        if run.latency is not None:
            _latency_table(out, run.latency, present)
    if report.steady:
        _steady_table(out, report.steady)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
