"""The ``file`` source: a YAML, JSON or dotenv file in the repository or on disk.

Nested YAML/JSON maps become folders: ``{payments: {STRIPE_KEY: x}}`` is the key
``STRIPE_KEY`` in the folder ``payments/``. Scalars become strings (``8080`` → ``"8080"``,
``true`` → ``"true"``); null values and lists are refused with their path.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from dotenv import dotenv_values

from syncd.config_types import ConfigPath
from syncd.connector import BaseSource, SourceConfig
from syncd.errors import SourceReadError
from syncd.model import SecretValue, Snapshot, SourceEntry


class FileSourceConfig(SourceConfig):
    type: Literal["file"] = "file"
    path: ConfigPath
    """The file; relative paths resolve against the config file's folder."""
    format: Literal["auto", "yaml", "json", "dotenv"] = "auto"
    """By extension when auto: .yaml/.yml, .json, anything else is read as dotenv."""
    environment: str = ""
    """The value of ``{environment}`` in key templates."""


def detect_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    return "dotenv"


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if value is None:
        raise SourceReadError(f'{where}: the value is empty (null); write "" for an empty string')
    raise SourceReadError(
        f"{where}: expected a string, number or boolean, got a {type(value).__name__}"
    )


def flatten(data: Any, folder: str = "") -> list[SourceEntry]:
    if not isinstance(data, dict):
        raise SourceReadError("expected a mapping of keys to values at the top level")
    out: list[SourceEntry] = []
    for k, v in data.items():
        key = str(k)
        if "/" in key:
            raise SourceReadError(f"{folder}{key}: a key cannot contain '/'")
        if isinstance(v, dict):
            out.extend(flatten(v, f"{folder}{key}/"))
        else:
            out.append(SourceEntry(folder, key, SecretValue(_scalar(v, folder + key))))
    return out


# libyaml's safe loader where PyYAML was built with it (its wheels are): the same documents
# and errors, parsed about ten times faster, which a daemon re-reading 100 files a cycle feels
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse(text: str, fmt: str) -> list[SourceEntry]:
    if fmt == "yaml":
        try:
            data = yaml.load(text, Loader=_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise SourceReadError(f"invalid YAML{where}") from None
        return flatten(data if data is not None else {})
    if fmt == "json":
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise SourceReadError(f"invalid JSON at line {exc.lineno}") from None
        return flatten(data)
    import io

    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return [SourceEntry("", k, SecretValue(v if v is not None else "")) for k, v in values.items()]


class FileSource(BaseSource):
    kind: ClassVar[str] = "file"
    Config: ClassVar[type[FileSourceConfig]] = FileSourceConfig
    config: FileSourceConfig

    def scope_key(self) -> str:
        return f"file:{os.path.realpath(self.config.path)}"

    def mtime(self) -> float | None:
        """For the daemon's change watch: the file's modification time, None if missing."""
        try:
            return os.stat(self.config.path).st_mtime_ns / 1e9
        except OSError:
            return None

    async def snapshot(self) -> Snapshot:
        return await asyncio.to_thread(self._read)

    def _read(self) -> Snapshot:
        path = self.config.path
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SourceReadError(f"{path} does not exist") from None
        except OSError as exc:
            raise SourceReadError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SourceReadError(f"{path} is not UTF-8 text") from None
        fmt = self.config.format if self.config.format != "auto" else detect_format(path)
        try:
            entries = parse(text, fmt)
        except SourceReadError as exc:
            raise SourceReadError(f"{path}: {exc}") from None
        return Snapshot(tuple(entries), complete=True, environment=self.config.environment)
