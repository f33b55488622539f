"""The file source (YAML, JSON, dotenv) and the dotenv destination's file handling."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from syncd.connector import ConnectorContext
from syncd.connectors.dotenv import DotenvConfig, DotenvDestination, quote
from syncd.connectors.sources.file import FileSource, FileSourceConfig
from syncd.errors import SourceReadError
from syncd.testing import Workbench


async def snapshot(path: Path) -> dict[str, str]:
    src = FileSource("f", FileSourceConfig(path=str(path)), ConnectorContext())
    snap = await src.snapshot()
    return {e.ref: e.value.reveal() for e in snap.entries}


async def test_yaml_nested_maps_become_folders_and_scalars_strings(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("A: x\nPORT: 8080\nDEBUG: true\npayments:\n  STRIPE: sk\n  eu:\n    VAT: '1'\n")
    assert await snapshot(p) == {
        "A": "x",
        "PORT": "8080",
        "DEBUG": "true",
        "payments/STRIPE": "sk",
        "payments/eu/VAT": "1",
    }


async def test_json_and_dotenv(tmp_path: Path) -> None:
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"A": "1", "svc": {"B": "2"}}))
    assert await snapshot(j) == {"A": "1", "svc/B": "2"}
    d = tmp_path / "prod.env"
    d.write_text("# comment\nexport A=1\nB='two words'\nC=\"multi\\nline\"\nD=${NOT_EXPANDED}\n")
    assert await snapshot(d) == {
        "A": "1",
        "B": "two words",
        "C": "multi\nline",
        "D": "${NOT_EXPANDED}",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A: [1, 2]\n", "A: expected a string, number or boolean, got a list"),
        ("A:\n", "A: the value is empty (null)"),
        ("A: [\n", "invalid YAML at line"),
        ("- a\n", "expected a mapping"),
    ],
)
async def test_bad_source_files_fail_the_read_with_the_path(
    tmp_path: Path, text: str, message: str
) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(
        SourceReadError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        await snapshot(p)


async def test_missing_file_is_a_failed_read(tmp_path: Path) -> None:
    with pytest.raises(SourceReadError, match="does not exist"):
        await snapshot(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "it's",
        "line1\nline2",
        'quote " and \\ back',
        "$HOME ${X} `cmd`",
        "",
        "  spaces  ",
        "tab\there",
        "é ü ✓",
    ],
)
def test_quoting_round_trips_through_dotenv_readers(tmp_path: Path, value: str) -> None:
    p = tmp_path / ".env"
    p.write_text(f"K={quote(value)}\n")
    assert dotenv_values(p, interpolate=False) == {"K": value}


async def test_dotenv_keeps_foreign_lines_and_writes_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "out" / ".env"
    target.parent.mkdir()
    target.write_text('# header\n\nOTHER=1\nMULTI="a\nb"\nexport KEPT=yes\n')
    os.chmod(target, 0o644)
    wb = Workbench(
        tmp_path / "wb",
        {"env": {"type": "dotenv", "path": str(target)}},
        source={"NEW": "n-value", "MULTI2": "x\ny"},
    )
    pair = await wb.pair()
    assert pair.result == "ok"
    text = target.read_text()
    assert text.startswith('# header\n\nOTHER=1\nMULTI="a\nb"\nexport KEPT=yes\n')
    assert dotenv_values(target, interpolate=False) == {
        "OTHER": "1",
        "MULTI": "a\nb",
        "KEPT": "yes",
        "NEW": "n-value",
        "MULTI2": "x\ny",
    }
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".syncd-")]


async def test_dotenv_check_reports_a_missing_folder(tmp_path: Path) -> None:
    dest = DotenvDestination(
        "env", DotenvConfig(path=str(tmp_path / "no" / ".env")), ConnectorContext()
    )
    with pytest.raises(Exception, match="does not exist"):
        await dest.check()
