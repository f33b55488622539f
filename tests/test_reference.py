"""docs/reference.md is generated from the models and cannot drift from them."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pytest
from pydantic import BaseModel, SecretStr

from syncd import config as envelope
from syncd import registry
from syncd.config_types import ConfigPath, Duration
from syncd.connector import DestinationConfig

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_reference", ROOT / "scripts" / "gen_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_reference", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_generator()


def rows(text: str) -> dict[str, list[dict[str, str]]]:
    """Every option table of a rendered page, by the heading above it."""
    out: dict[str, list[dict[str, str]]] = {}
    heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            opt, tname, default, desc = cells
            out.setdefault(heading, []).append(
                {"option": opt.strip("`"), "type": tname, "default": default, "desc": desc}
            )
    return out


def test_committed_reference_is_current(gen: ModuleType) -> None:
    assert REFERENCE.read_text(encoding="utf-8") == gen.render(), (
        "docs/reference.md is stale: run python scripts/gen_reference.py"
    )


def test_check_mode_reports_a_stale_file(gen: ModuleType, tmp_path: Path) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text(gen.render().replace("| `interval` |", "| `intervall` |", 1))
    assert gen.main(["--check", "--output", str(stale)]) == 1
    assert gen.main(["--output", str(stale)]) == 0
    assert gen.main(["--check", "--output", str(stale)]) == 0


def _all_fields(model: type[BaseModel], gen: ModuleType) -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        out.append(info.alias or name)
        for nested in gen.nested_models(info.annotation):
            out.extend(_all_fields(nested, gen))
    return out


def test_every_envelope_option_is_documented(gen: ModuleType) -> None:
    documented = {r["option"] for table in rows(gen.render()).values() for r in table}
    missing = set(_all_fields(envelope.Envelope, gen)) - documented
    assert not missing


def test_every_importable_connector_option_is_documented(gen: ModuleType) -> None:
    text = gen.render()
    tables = rows(text)
    for group, label in (
        (registry.SOURCE_GROUP, "source"),
        (registry.DESTINATION_GROUP, "destination"),
    ):
        for info in registry.installed(group):
            try:
                cls = registry.load(group, info.kind)
            except registry.ConnectorNotFound:
                # listed with a note instead of a table
                assert f"- `{info.kind}`: " in text
                continue
            table = tables[f"`{info.kind}` {label}"]
            by_name = {r["option"]: r for r in table}
            for name, field in cls.Config.model_fields.items():
                row = by_name[field.alias or name]
                if field.is_required():
                    assert row["default"] == "**required**", name
                else:
                    assert row["default"] != "**required**", name


def test_every_option_has_a_description(gen: ModuleType) -> None:
    """The envelope's options all carry a docstring (connectors' are their authors')."""
    page = rows(gen.render())
    for heading in ("The file", "`state`", "`server`", "`defaults`", "`syncs[]`"):
        for r in page[heading]:
            assert r["desc"], f"{heading}: {r['option']} has no docstring"


class _Auth(BaseModel):
    method: Literal["token"] = "token"
    token: SecretStr
    """An access token."""


class _Example(DestinationConfig):
    type: Literal["example"] = "example"
    path: ConfigPath = "./out"
    """Where it goes."""
    every: Duration = 3600
    """How often, with a | pipe."""
    level: Literal["low", "high"] | None = None
    tags: dict[str, str] = {}
    targets: list[str] = ["production", "preview"]
    mode: int = 0o600
    auth: _Auth | None = None


def test_rendering_of_types_defaults_and_nested_models(gen: ModuleType) -> None:
    text = gen.render_model(_Example, "", 3)
    by = {(h, r["option"]): r for h, table in rows(text).items() for r in table}
    top = "" if ("", "path") in by else next(h for h, _ in by)
    assert by[(top, "path")] == {
        "option": "path",
        "type": "path",
        "default": "`./out`",
        "desc": "Where it goes.",
    }
    assert by[(top, "every")]["type"] == "duration"
    assert by[(top, "every")]["default"] == "`1h`"
    assert by[(top, "every")]["desc"] == "How often, with a \\| pipe."
    assert by[(top, "level")]["type"] == "`low` \\| `high` or null"
    assert by[(top, "tags")]["type"] == "map of string"
    assert by[(top, "targets")]["default"] == "`[production, preview]`"
    assert by[(top, "mode")]["default"] == "`0600`"  # YAML 1.1 octal, as PyYAML reads it
    assert by[(top, "timeout")]["default"] == "`30s`"
    auth = "`auth (method: token)`"
    assert by[(auth, "token")]["type"] == "secret"
    assert by[(auth, "token")]["default"] == "**required**"
    assert "`token_file`" in by[(auth, "token")]["desc"]


def test_unimportable_connectors_are_listed_not_fatal(
    gen: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = registry.installed

    def installed(group: str) -> list[Any]:
        extra = registry.ConnectorInfo(group, "nowhere", "syncd.connectors.nowhere:Nothing")
        return [*real(group), extra]

    monkeypatch.setattr(registry, "installed", installed)
    text = gen.render_connectors(registry.DESTINATION_GROUP, "Destination")
    assert "- `nowhere`: " in text
    assert "### `dotenv` destination" in text
