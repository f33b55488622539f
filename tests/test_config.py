"""Config errors name the YAML path and say what was expected; the CLI exits 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.cli import main
from syncd.config import load_config
from syncd.errors import ConfigErrors


def write(tmp_path: Path, body: dict[str, Any] | str) -> Path:
    p = tmp_path / "syncd.yaml"
    p.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False))
    (tmp_path / "secrets.yaml").write_text("A: '1'\n")
    return p


def base(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": 1,
        "sources": {"local": {"type": "file", "path": "./secrets.yaml"}},
        "destinations": {"env": {"type": "dotenv", "path": "./out/.env"}},
        "syncs": [{"name": "s", "from": "local", "to": ["env"]}],
    }
    body.update(over)
    return body


def errors_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(path, env=env or {})
    return [str(e) for e in info.value.errors]


def test_valid_config_resolves_relative_paths_against_its_folder(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, base()), env={})
    assert cfg.sources["local"].config.path == str(tmp_path / "secrets.yaml")
    assert cfg.destinations["env"].config.path == str(tmp_path / "out" / ".env")
    assert cfg.syncs[0].policy.interval == 300 and cfg.syncs[0].policy.on_conflict == "overwrite"


def test_unknown_destination_names_the_path(tmp_path: Path) -> None:
    body = base(syncs=[{"name": "s", "from": "local", "to": ["env", "gh2"]}])
    assert errors_of(write(tmp_path, body)) == [
        "syncs[0].to[1]: unknown destination 'gh2' (destinations: env)"
    ]


def test_unknown_key_is_an_error_listing_the_expected_ones(tmp_path: Path) -> None:
    body = base(defaults={"delete": "managed", "max_delet_fraction": 0.9})
    [msg] = errors_of(write(tmp_path, body))
    assert msg.startswith("defaults.max_delet_fraction: unknown key (expected one of:")
    assert "max_delete_fraction" in msg


def test_unknown_connector_option_names_the_path(tmp_path: Path) -> None:
    body = base(destinations={"env": {"type": "dotenv", "path": "x", "pth": "y"}})
    [msg] = errors_of(write(tmp_path, body))
    assert msg.startswith("destinations.env.pth: unknown key")


def test_bad_enum_and_duration(tmp_path: Path) -> None:
    body = base(
        syncs=[
            {
                "name": "s",
                "from": "local",
                "to": ["env"],
                "on_conflict": "merge",
                "interval": "soon",
            }
        ]
    )
    msgs = errors_of(write(tmp_path, body))
    assert any(m.startswith("syncs[0].interval: expected a duration") for m in msgs)
    assert any(m.startswith("syncs[0].on_conflict:") and "overwrite" in m for m in msgs)


def test_unknown_type_lists_installed(tmp_path: Path) -> None:
    body = base(destinations={"env": {"type": "dotenvv", "path": "x"}})
    [msg] = errors_of(write(tmp_path, body))
    assert msg.startswith("destinations.env.type: unknown destination type 'dotenvv' (installed:")


def test_env_expansion_with_default_and_missing_variable(tmp_path: Path) -> None:
    body = base(destinations={"env": {"type": "dotenv", "path": "${OUT_DIR:-out}/${OUT_NAME}"}})
    p = write(tmp_path, body)
    cfg = load_config(p, env={"OUT_NAME": "prod.env"})
    assert cfg.destinations["env"].config.path == str(tmp_path / "out" / "prod.env")
    [msg] = errors_of(p)
    assert msg.startswith("destinations.env.path: environment variable OUT_NAME is not set")


def test_file_twin_reads_credentials_and_marks_them_secret(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("webhook-secret-from-file\n")
    body = base(
        sources={"local": {"type": "file", "path": "s.yaml", "webhook_secret_file": "hook"}}
    )
    cfg = load_config(write(tmp_path, body), env={})
    secret = cfg.sources["local"].config.webhook_secret
    assert secret.get_secret_value() == "webhook-secret-from-file"
    assert "webhook-secret-from-file" not in repr(cfg.sources["local"].config)
    assert "webhook-secret-from-file" in cfg.secrets


def test_file_twin_and_value_together_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("x")
    body = base(
        sources={
            "local": {
                "type": "file",
                "path": "s.yaml",
                "webhook_secret": "a",
                "webhook_secret_file": "hook",
            }
        }
    )
    assert errors_of(write(tmp_path, body)) == [
        "sources.local.webhook_secret_file: give webhook_secret or webhook_secret_file, not both"
    ]


def test_bad_template_placeholder(tmp_path: Path) -> None:
    body = base(
        syncs=[{"name": "s", "from": "local", "to": ["env"], "key_template": "{prefix}_{key}"}]
    )
    [msg] = errors_of(write(tmp_path, body))
    assert msg.startswith("syncs[0].key_template: unknown placeholder {prefix}")


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    [msg] = errors_of(write(tmp_path, "version: 1\nsyncs: [\n"))
    assert "line" in msg


def test_cli_exits_2_and_prints_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = base(syncs=[{"name": "s", "from": "local", "to": ["gh2"]}])
    p = write(tmp_path, body)
    for argv in (
        ["-c", str(p), "once"],
        ["once", "-c", str(p)],
        ["-c", str(p), "plan"],
        ["validate", "-c", str(p)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "syncs[0].to[0]: unknown destination 'gh2'" in err


def test_config_from_environment_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = write(tmp_path, base())
    monkeypatch.setenv("SYNCD_CONFIG", str(p))
    assert main(["validate"]) == 0
    assert "ok (1 sources, 1 destinations, 1 sync)" in capsys.readouterr().out


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(tmp_path / "nope.yaml"), "validate"]) == 2
    assert "cannot read config file" in capsys.readouterr().err
