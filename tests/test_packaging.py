"""What ``pip install .`` puts into site-packages, and what it prints."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_is_an_spdx_string() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"


def test_every_built_in_connector_lives_under_syncd() -> None:
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    targets = [t for group in ("syncd.sources", "syncd.destinations") for t in eps[group].values()]
    assert targets and all(t.startswith("syncd.connectors.") for t in targets)


def test_the_wheel_installs_only_the_syncd_package_and_builds_without_warnings(
    tmp_path: Path,
) -> None:
    # setuptools reuses build/ (an ignored artefact): a stale copy would hide a moved file
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "Deprecat" not in out and "license" not in out.lower(), out
    (wheel,) = tmp_path.glob("syncd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"syncd"}
    assert "syncd/connectors/vercel.py" in names
    assert "syncd/connectors/sources/infisical/logins.py" in names
    assert "syncd/connectors/sources/infisical.py" not in names


def test_an_editable_build_prints_no_warning(tmp_path: Path) -> None:
    code = (
        "import sys; from setuptools import build_meta; "
        "print(build_meta.build_editable(sys.argv[1]))"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", code, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # setuptools' notes come as warnings (pip shows them as BuildBackendWarning)
    noise = [
        line
        for line in proc.stderr.splitlines()
        if "warn" in line.lower() or "InformationOnly" in line or line.strip() == "!!"
    ]
    assert noise == [], proc.stderr
