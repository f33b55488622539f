"""The CLI as a user drives it, on the quickstart: a file source into a .env file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from syncd.cli import main

ROOT = Path(__file__).resolve().parent.parent
VALUES = yaml.safe_load((ROOT / "examples" / "secrets.yaml").read_text())


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "examples" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    shutil.copy(ROOT / "examples" / "secrets.yaml", tmp_path / "secrets.yaml")
    return tmp_path


def run(qs: Path, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(qs / "quickstart.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    return proc.returncode, proc.stdout, proc.stderr


def env_file(qs: Path) -> dict[str, str | None]:
    return dict(dotenv_values(qs / "out" / ".env", interpolate=False))


def all_values() -> list[str]:
    out = []
    for v in VALUES.values():
        out.extend(v.values() if isinstance(v, dict) else [v])
    # "info" (LOG_LEVEL) is also a log level name: only real secrets are searched for
    return [str(v) for v in out if len(str(v)) >= 8]


def test_quickstart_end_to_end(quickstart: Path) -> None:
    rc, out, err = run(quickstart, "once")
    assert rc == 0, out + err
    assert "quickstart → local-env: ok: 4 created" in out
    assert env_file(quickstart) == {
        "DATABASE_URL": VALUES["DATABASE_URL"],
        "API_TOKEN": VALUES["API_TOKEN"],
        "LOG_LEVEL": "info",
        "STRIPE_KEY": VALUES["payments"]["STRIPE_KEY"],
    }
    mode = stat.S_IMODE((quickstart / "out" / ".env").stat().st_mode)
    assert mode == 0o600

    # a second run writes nothing
    rc, out, err = run(quickstart, "once")
    assert rc == 0 and "(0 write calls)" in out and "4 unchanged" in out

    # a hand-written line in the .env is kept; editing one value plans one update
    with (quickstart / "out" / ".env").open("a") as fh:
        fh.write("# added by hand\nHAND_WRITTEN='keep-me'\n")
    secrets = yaml.safe_load((quickstart / "secrets.yaml").read_text())
    secrets["API_TOKEN"] = "rotated-api-token-abcdef"
    (quickstart / "secrets.yaml").write_text(yaml.safe_dump(secrets))
    rc, out, _ = run(quickstart, "plan")
    assert rc == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")]
    kinds = ("noop", "update", "create")
    actions = {r[0]: next(t for t in r if t in kinds) for r in rows if set(r) & set(kinds)}
    assert actions == {
        "API_TOKEN": "update",
        "DATABASE_URL": "noop",
        "LOG_LEVEL": "noop",
        "payments/STRIPE_KEY": "noop",  # shown as "payments/STRIPE_KEY (as STRIPE_KEY)"
    }
    assert "1 write planned" in out
    assert "rotated-api-token-abcdef" not in out

    # deleting a key from the source deletes it from the .env and nothing else
    del secrets["LOG_LEVEL"]
    (quickstart / "secrets.yaml").write_text(yaml.safe_dump(secrets))
    rc, out, err = run(quickstart, "once")
    assert rc == 0, out + err
    assert "1 updated, 1 deleted" in out
    got = env_file(quickstart)
    assert "LOG_LEVEL" not in got
    assert got["HAND_WRITTEN"] == "keep-me" and got["API_TOKEN"] == "rotated-api-token-abcdef"
    assert "# added by hand" in (quickstart / "out" / ".env").read_text()

    rc, out, _ = run(quickstart, "status")
    assert rc == 0 and "quickstart" in out and "local-env" in out and "ok" in out

    for value in [*all_values(), "rotated-api-token-abcdef"]:
        assert value not in out and value not in err


def test_once_reports_failed_keys_and_exits_1(
    quickstart: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (quickstart / "secrets.yaml").write_text("GOOD_KEY: good-value-123\nbad-key: bad-value-456\n")
    code = main(["-c", str(quickstart / "quickstart.yaml"), "once"])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "quickstart → local-env: bad-key: blocked: invalid key name: letters, digits and "
        "underscores" in out
    )
    assert env_file(quickstart) == {"GOOD_KEY": "good-value-123"}
    assert "bad-value-456" not in out


def test_a_renamed_key_is_reported_by_its_source_name_and_its_destination_name(
    quickstart: Path,
) -> None:
    """With a key template the destination's name differs from the source's: every report
    names the source key the user searches for, and what it became."""
    cfg = quickstart / "quickstart.yaml"
    cfg.write_text(
        cfg.read_text().replace(
            "    to: [local-env]\n", '    to: [local-env]\n    key_template: "APP_{key}"\n'
        )
    )
    (quickstart / "secrets.yaml").write_text("GOOD_KEY: good-value-123\nhas-dash: bad-value-456\n")

    rc, out, err = run(quickstart, "plan")
    assert rc == 0, err
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "has-dash (as APP_has-dash)" in lines["has-dash"] and "blocked" in lines["has-dash"]
    assert "GOOD_KEY (as APP_GOOD_KEY)" in lines["GOOD_KEY"]

    rc, out, err = run(quickstart, "--log-format", "json", "once")
    assert rc == 1
    assert "quickstart → local-env: has-dash (as APP_has-dash): blocked: invalid key name" in out
    events = [json.loads(line) for line in err.splitlines()]
    changes = {e["key"]: e for e in events if e["event"] == "change"}
    assert changes["APP_has-dash"]["source_key"] == "has-dash"
    assert changes["APP_has-dash"]["outcome"] == "blocked"
    assert changes["APP_GOOD_KEY"]["source_key"] == "GOOD_KEY"
    assert changes["APP_GOOD_KEY"]["outcome"] == "applied"
    assert env_file(quickstart) == {"APP_GOOD_KEY": "good-value-123"}
    assert "bad-value-456" not in out + err


def test_deletion_guard_refuses_then_force_applies(
    quickstart: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(quickstart / "quickstart.yaml")
    assert main(["-c", cfg, "once"]) == 0
    (quickstart / "secrets.yaml").write_text("LOG_LEVEL: info\n")
    capsys.readouterr()
    assert main(["-c", cfg, "once"]) == 1
    out = capsys.readouterr().out
    assert "would delete 3 of 4 managed keys (75%), over max_delete_fraction 0.5" in out
    assert len(env_file(quickstart)) == 4
    assert main(["-c", cfg, "once", "--force"]) == 0
    assert env_file(quickstart) == {"LOG_LEVEL": "info"}


def test_source_outage_deletes_nothing(
    quickstart: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(quickstart / "quickstart.yaml")
    assert main(["-c", cfg, "once"]) == 0
    (quickstart / "secrets.yaml").unlink()
    assert main(["-c", cfg, "once"]) == 1
    assert "could not be read" in capsys.readouterr().out
    assert len(env_file(quickstart)) == 4
    (quickstart / "secrets.yaml").write_text("")
    assert main(["-c", cfg, "once"]) == 1
    assert "returned no keys" in capsys.readouterr().out
    assert len(env_file(quickstart)) == 4


def test_sync_filter_and_unknown_sync(quickstart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(quickstart / "quickstart.yaml")
    assert main(["once", "-c", cfg, "--sync", "quickstart"]) == 0
    assert main(["once", "-c", cfg, "--sync", "nope"]) == 2
    assert "no sync named 'nope'" in capsys.readouterr().err


def test_status_before_any_run_and_connectors(
    quickstart: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "-c", str(quickstart / "quickstart.yaml")]) == 0
    assert "no runs recorded yet" in capsys.readouterr().out
    assert main(["connectors"]) == 0
    out = capsys.readouterr().out
    assert "destination  dotenv" in out and "source       file" in out


def test_validate_online_checks_sources_and_destinations(
    quickstart: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(quickstart / "quickstart.yaml")
    (quickstart / "out").mkdir()
    assert main(["validate", "--online", "-c", cfg]) == 0
    out = capsys.readouterr().out
    assert "source local: ok (4 keys)" in out and "destination local-env: ok" in out
    (quickstart / "secrets.yaml").unlink()
    shutil.rmtree(quickstart / "out")
    assert main(["validate", "--online", "-c", cfg]) == 2
    out = capsys.readouterr().out
    assert "source local: FAILED" in out and "does not exist" in out
    assert "destination local-env: FAILED" in out


def test_log_format_and_level_from_the_environment(quickstart: Path) -> None:
    env = {**os.environ, "SYNCD_LOG_FORMAT": "json", "SYNCD_LOG_LEVEL": "warning"}
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", "once", "-c", str(quickstart / "quickstart.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0 and proc.stderr == ""  # info events filtered out
    env["SYNCD_LOG_LEVEL"] = "info"
    (quickstart / "secrets.yaml").write_text("ONLY: only-value-123456\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncd",
            "once",
            "--force",
            "-c",
            str(quickstart / "quickstart.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert {e["event"] for e in events} >= {"change", "pair done"}
    assert "only-value-123456" not in proc.stderr
