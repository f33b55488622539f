"""The ``syncd`` command: run | once | plan | validate | status | connectors."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from syncd import __version__, registry
from syncd.config import Config, load_config
from syncd.config_types import parse_duration
from syncd.engine import Engine, Hooks, PairResult, SyncResult, failures
from syncd.errors import (
    ConfigError,
    ConfigErrors,
    ConnectorError,
    SourceReadError,
    StateError,
    StateVersionError,
)
from syncd.logging import configure, redactor
from syncd.settings import Settings
from syncd.state import Fingerprinter, StateStore, open_store

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "-c",
        "--config",
        default=default,
        help="config file (default: $SYNCD_CONFIG or ./syncd.yaml)",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "console"],
        default=default,
        help="log format (default: console on a terminal, else json)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help="log level (default: info)",
    )
    parser.add_argument(
        "--state-dir",
        default=default,
        help="state folder (default: $SYNCD_STATE_DIR or ~/.local/state/syncd)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep secrets in sync, one way, from a source of truth "
        "into the platforms that consume them.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _global_options(p, suppress=True)
        return p

    add("run", "the daemon: schedule every sync, serve webhooks, health and metrics")
    p = add("once", "one pass of every (or one) sync, then exit")
    p.add_argument("--sync", action="append", metavar="NAME", help="only this sync (repeatable)")
    p.add_argument(
        "--force",
        action="store_true",
        help="apply deletions the max_delete_fraction / empty-source guards refuse",
    )
    p.add_argument(
        "--lock-timeout",
        type=_duration,
        metavar="D",
        help="wait this long (30s, 5m) for a pair another process is running "
        "(default: state.lock_timeout, 0s)",
    )
    p = add("plan", "what `once` would do, per key and destination, without values")
    p.add_argument("--sync", action="append", metavar="NAME", help="only this sync (repeatable)")
    p = add("validate", "check the config")
    p.add_argument(
        "--online", action="store_true", help="also check every credential, source and target"
    )
    p = add("status", "the last run of every (sync, destination) from the state store")
    p.add_argument("--json", action="store_true", help="the same as JSON (schema 1)")
    add("connectors", "installed connectors and their capabilities")
    p = add("notify", "notifications: `syncd notify test` sends a test message to every entry")
    p.add_argument("action", choices=["test"], help="test: one message to each notify entry")
    return parser


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def settings_from(args: argparse.Namespace) -> Settings:
    over: dict[str, Any] = {}
    if getattr(args, "config", None):
        over["config"] = Path(args.config)
    if getattr(args, "log_format", None):
        over["log_format"] = args.log_format
    if getattr(args, "log_level", None):
        over["log_level"] = args.log_level
    if getattr(args, "state_dir", None):
        over["state_dir"] = Path(args.state_dir)
    return Settings(**over)


def print_config_errors(exc: ConfigErrors, path: Path, out: TextIO) -> None:
    print(f"syncd: invalid config {path}:", file=out)
    for e in exc.errors:
        print(f"  {redactor.scrub(str(e))}", file=out)


def open_state(cfg: Config, settings: Settings) -> tuple[StateStore, Fingerprinter]:
    state_dir = settings.resolved_state_dir()
    return open_store(cfg.state_url, state_dir, cfg.base_dir), Fingerprinter.from_file(
        settings.resolved_key_file()
    )


class Progress(Hooks):
    """Progress on a terminal, with rich: a line per (sync, destination) with the keys done
    of those to write, the rate, the time left, and what it waits for (pacing, a quota)."""

    def __init__(self, total: int, stream: TextIO, *, force_terminal: bool | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self.total, self.done = total, 0
        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[waiting]}", style="yellow"),
            console=Console(file=stream, force_terminal=force_terminal, width=140),
            transient=True,
        )
        self.tasks: dict[tuple[str, str], Any] = {}
        self.started: dict[tuple[str, str], float] = {}
        self.bars.start()

    def progress(
        self, sync: str, destination: str, done: int, total: int, waiting: str | None
    ) -> None:
        pair = (sync, destination)
        if pair not in self.tasks:
            if total < 2:
                return  # nothing worth a bar
            self.tasks[pair] = self.bars.add_task(
                f"{sync} → {destination}", total=total, rate="", waiting=""
            )
            self.started[pair] = time.monotonic()
        elapsed = max(1e-6, time.monotonic() - self.started[pair])
        rate = f"{done / elapsed * 60:,.0f}/min" if done else ""
        self.bars.update(self.tasks[pair], completed=done, rate=rate, waiting=waiting or "")

    def pair_done(self, result: PairResult, seconds: float) -> None:
        self.done += 1
        task = self.tasks.pop((result.sync, result.destination), None)
        if task is not None:
            self.bars.remove_task(task)
        if self.done >= self.total:
            self.stop()

    def stop(self) -> None:
        self.bars.stop()


def summarize(results: Sequence[SyncResult], out: TextIO) -> None:
    for r in results:
        for p in r.pairs:
            if p.result == "busy":
                print(f"{r.name} → {p.destination}: {p.error}", file=out)
                continue
            c = p.counts
            parts = [f"{c.get(k, 0)} {k}" for k in ("created", "updated", "deleted", "adopted")]
            extra = [
                f"{c[k]} {k}"
                for k in (
                    "unchanged",
                    "skipped",
                    "blocked",
                    "conflict",
                    "failed",
                    "drift",
                    "retries",
                )
                if c.get(k)
            ]
            print(
                f"{r.name} → {p.destination}: {p.result}: "
                + ", ".join(parts + extra)
                + f" ({c.get('writes', 0)} write call{'' if c.get('writes', 0) == 1 else 's'})",
                file=out,
            )
            if p.after is not None:
                print(f"  {redactor.scrub(p.after.message)}", file=out)
    busy = {(r.name, p.destination) for r in results for p in r.pairs if p.result == "busy"}
    for sync, dest, key, msg in failures(results):
        if (sync, dest) not in busy:
            print(f"  {sync} → {dest}: {key}: {redactor.scrub(msg)}", file=out)


def print_plan(results: Sequence[SyncResult], out: TextIO) -> None:
    for r in results:
        if r.source_error:
            print(f"{r.name}: {r.source_error}", file=out)
            continue
        for p in r.pairs:
            if p.plan is None:
                print(f"{r.name} → {p.destination}: {p.result}: {p.error}", file=out)
                continue
            how = "destination listed" if p.plan.listed else "from the state store"
            print(f"{r.name} → {p.destination} ({how})", file=out)
            rows = [(c.label, str(c.action), c.reason) for c in p.plan.changes]
            if not rows:
                print("  (nothing in scope)", file=out)
            width = max([len("KEY")] + [len(k) for k, _, _ in rows])
            if rows:
                print(f"  {'KEY':<{width}}  {'ACTION':<8}  REASON", file=out)
            for key, action, reason in rows:
                print(f"  {key:<{width}}  {action:<8}  {redactor.scrub(reason)}", file=out)
            if p.plan.refused:
                print(f"  REFUSED: {p.plan.refused}", file=out)
            writes = len(p.plan.writes)
            print(f"  {writes} write{'s' if writes != 1 else ''} planned", file=out)
            if p.after is not None:
                print(f"  {redactor.scrub(p.after.message)}", file=out)


async def _engine_run(
    cfg: Config, settings: Settings, args: argparse.Namespace, dry_run: bool
) -> list[SyncResult]:
    state, fp = open_state(cfg, settings)
    names = args.sync or None
    hooks: Hooks | None = None
    if not dry_run and sys.stderr.isatty():
        total = sum(len(cfg.sync(n).destinations) for n in (names or cfg.sync_names))
        hooks = Progress(total, sys.stderr)
    engine = Engine(cfg, state, fp, hooks=hooks, lock_timeout=getattr(args, "lock_timeout", None))
    try:
        return await engine.run(names, force=getattr(args, "force", False), dry_run=dry_run)
    finally:
        if isinstance(hooks, Progress):
            hooks.stop()
        await engine.aclose()
        state.close()


async def _validate_online(cfg: Config, settings: Settings, out: TextIO) -> int:
    state, fp = open_state(cfg, settings)
    engine = Engine(cfg, state, fp)
    bad = 0
    try:
        for name in cfg.sources:
            try:
                snap = await engine.read_source(name, attempts=1)
                print(f"source {name}: ok ({len(snap)} keys)", file=out)
            except SourceReadError as exc:
                bad += 1
                print(f"source {name}: FAILED: {redactor.scrub(str(exc))}", file=out)
        for name in cfg.destinations:
            dest = engine.destination(name)
            try:
                await engine.executor.call(dest, dest.check)
                print(f"destination {name}: ok", file=out)
            except ConnectorError as exc:
                bad += 1
                print(f"destination {name}: FAILED: {redactor.scrub(str(exc))}", file=out)
        state.ping()
    finally:
        await engine.aclose()
        state.close()
    return EXIT_CONFIG if bad else EXIT_OK


def cmd_status(cfg: Config, settings: Settings, out: TextIO, as_json: bool = False) -> int:
    from syncd import status

    state, _ = open_state(cfg, settings)
    coordinator = state.coordinator(lease=float(cfg.state.lease), heartbeat_thread=False)
    try:
        report = status.collect(cfg, state, coordinator)
    finally:
        coordinator.close()
        state.close()
    if as_json:
        print(json.dumps(report.to_json(), indent=2), file=out)
        return EXIT_OK
    if all(p.last_run is None and p.holder is None for p in report.pairs):
        print("no runs recorded yet", file=out)
    else:
        print(
            f"{'SYNC':<20} {'DESTINATION':<20} {'STATE':<10} {'RESULT':<13} "
            f"{'LAST RUN (UTC)':<20} {'NEXT RUN (UTC)':<20} COUNTS",
            file=out,
        )
    pad = " " * 20
    for p in report.ordered():
        r = p.last_run
        if r is None and p.holder is None:
            continue
        result = r.result if r is not None else "-"
        when = _utc(r.ended_at or r.started_at) if r else "-"
        counts = ", ".join(f"{v} {k}" for k, v in sorted(r.counts.items()) if v) if r else ""
        print(
            f"{p.sync:<20} {p.destination:<20} {p.state:<10} {result:<13} {when:<20} "
            f"{_utc(p.next_run):<20} {counts or '-'}",
            file=out,
        )
        if r is not None and r.error:
            print(f"{pad} last error ({p.error_class}): {r.error}", file=out)
        if p.holder is not None:
            print(f"{pad} running now: {p.holder.describe()}", file=out)
    if report.replicas:
        print(f"replicas ({len(report.replicas)} live):", file=out)
        for rep in report.replicas:
            seen = rep.heartbeat_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(f"  {rep.id}  host {rep.host} pid {rep.pid}  heartbeat {seen} UTC", file=out)
    return EXIT_OK


async def cmd_notify_test(cfg: Config, out: TextIO) -> int:
    from syncd.coordination import Identity
    from syncd.notify import Notifier

    if not cfg.notify:
        print("no notify: entries in the config", file=out)
        return EXIT_FAILED
    # a test message touches no state: the notifier's state is not used for it
    notifier = Notifier(cfg.notify, None, replica=Identity.current())  # type: ignore[arg-type]
    results = await notifier.test()
    for i, (scheme, ok) in enumerate(results):
        print(f"notify[{i}] {scheme}: {'sent' if ok else 'FAILED (see the log)'}", file=out)
    return EXIT_OK if all(ok for _, ok in results) else EXIT_FAILED


def _utc(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


def cmd_connectors(out: TextIO) -> int:
    for group, label in (
        (registry.SOURCE_GROUP, "source"),
        (registry.DESTINATION_GROUP, "destination"),
    ):
        for info in registry.installed(group):
            try:
                cls = registry.load(group, info.kind)
            except registry.ConnectorNotFound as exc:
                print(f"{label:<12} {info.kind:<22} not available: {exc}", file=out)
                continue
            caps = getattr(cls, "capabilities", None)
            if caps is None:
                print(
                    f"{label:<12} {info.kind:<22} webhooks: "
                    f"{'yes' if hasattr(cls, 'verify_webhook') else 'no'}",
                    file=out,
                )
                continue
            desc = [
                "reads values" if caps.reads_values else "write-only (fingerprints)",
                "ownership tag" if caps.tags_ownership else "ownership in state store",
                f"max value {caps.max_value_bytes} B" if caps.max_value_bytes else "no size limit",
                f"batch {caps.batch_size}",
            ]
            print(f"{label:<12} {info.kind:<22} " + "; ".join(desc), file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from(args)
    fmt = settings.log_format
    configure(settings.log_level, "auto" if fmt == "auto" else fmt)
    out = sys.stdout

    if args.command == "connectors":
        return cmd_connectors(out)

    config_path = settings.config
    try:
        cfg = load_config(config_path)
    except ConfigErrors as exc:
        print_config_errors(exc, config_path, sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print_config_errors(ConfigErrors([exc]), config_path, sys.stderr)
        return EXIT_CONFIG

    try:
        if args.command == "validate":
            if args.online:
                return asyncio.run(_validate_online(cfg, settings, out))
            for kind in ("sources", "destinations"):
                for name, spec in getattr(cfg, kind).items():
                    warn = getattr(spec.cls, "config_warnings", None)
                    for text in warn(spec.config) if callable(warn) else []:
                        print(f"warning: {kind}.{name}: {text}", file=sys.stderr)
            n = len(cfg.syncs)
            print(
                f"{config_path}: ok ({len(cfg.sources)} sources, {len(cfg.destinations)} "
                f"destinations, {n} sync{'s' if n != 1 else ''})",
                file=out,
            )
            return EXIT_OK
        if args.command == "notify":
            return asyncio.run(cmd_notify_test(cfg, out))
        if args.command == "status":
            return cmd_status(cfg, settings, out, as_json=args.json)
        if args.command == "plan":
            results = asyncio.run(_engine_run(cfg, settings, args, dry_run=True))
            print_plan(results, out)
            return EXIT_OK
        if args.command == "once":
            results = asyncio.run(_engine_run(cfg, settings, args, dry_run=False))
            summarize(results, out)
            redeploy_failed = any(
                p.after is not None and p.after.state == "failed" for r in results for p in r.pairs
            )
            return EXIT_OK if all(r.ok for r in results) and not redeploy_failed else EXIT_FAILED
        if args.command == "run":
            from syncd.daemon import run_daemon

            return int(run_daemon(cfg, settings))
    except ConfigError as exc:
        print_config_errors(ConfigErrors([exc]), config_path, sys.stderr)
        return EXIT_CONFIG
    except StateVersionError as exc:
        print(f"syncd: {redactor.scrub(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except StateError as exc:
        print(f"syncd: {redactor.scrub(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_CONFIG


def entrypoint() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
