"""The ``dotenv`` destination: a .env file written atomically with mode 0600.

Lines syncd was not asked to change (comments, blank lines, other keys) are kept as they
are. Values are single-quoted where that is exact, else double-quoted with escapes, so
docker compose, python-dotenv and shells read back the same string.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal

from dotenv import dotenv_values

from syncd.config_types import ConfigPath
from syncd.connector import BaseDestination, Capabilities, DestinationConfig
from syncd.errors import ConnectorError, PermanentError
from syncd.model import Change, ItemOutcome, RemoteEntry, SecretValue

_LINE_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=")


class DotenvConfig(DestinationConfig):
    type: Literal["dotenv"] = "dotenv"
    path: ConfigPath
    """The .env file; relative paths resolve against the config file's folder."""
    mode: int = 0o600
    """File mode of the written file."""


def quote(value: str) -> str:
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"'{value}'"
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def _logical_lines(text: str) -> list[str]:
    """Split keeping a quoted multi-line value in one entry."""
    out: list[str] = []
    buf = ""
    quote_char = ""
    for line in text.splitlines(keepends=True):
        if not buf:
            m = _LINE_KEY.match(line)
            rest = line[m.end() :].lstrip() if m else ""
            if m and rest[:1] in ("'", '"'):
                q = rest[0]
                body = rest[1:]
                # closed on this line?
                closed = _closes(body, q)
                if not closed:
                    buf, quote_char = line, q
                    continue
            out.append(line)
        else:
            buf += line
            if _closes(line, quote_char):
                out.append(buf)
                buf = ""
    if buf:
        out.append(buf)
    return out


def _closes(text: str, q: str) -> bool:
    i = 0
    while i < len(text):
        if text[i] == "\\" and q == '"':
            i += 2
            continue
        if text[i] == q:
            return True
        i += 1
    return False


class DotenvDestination(BaseDestination):
    kind: ClassVar[str] = "dotenv"
    Config: ClassVar[type[DotenvConfig]] = DotenvConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=True,
        tags_ownership=False,
        key_pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        key_rule="letters, digits and underscores, not starting with a digit",
        batch_size=10_000,
        delete_batch_size=10_000,
    )
    config: DotenvConfig

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lock = asyncio.Lock()

    async def check(self) -> None:
        folder = Path(self.config.path).parent
        if not folder.is_dir():
            raise PermanentError(f"folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise PermanentError(f"folder {folder} is not writable")

    def _read_text(self) -> str:
        try:
            return Path(self.config.path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise ConnectorError(f"cannot read {self.config.path}: {exc.strerror}") from None

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        self.count("read")
        text = self._read_text()
        values = dotenv_values(stream=io.StringIO(text), interpolate=False)
        return {
            k: RemoteEntry(k, SecretValue(v if v is not None else "")) for k, v in values.items()
        }

    def _rewrite(self, set_values: Mapping[str, str], remove: set[str]) -> None:
        lines = _logical_lines(self._read_text())
        out: list[str] = []
        done: set[str] = set()
        for line in lines:
            m = _LINE_KEY.match(line)
            key = m.group(1) if m else None
            if key is not None and key in remove:
                continue
            if key is not None and key in set_values:
                if key in done:
                    continue  # a duplicated key: keep one line, the value syncd wrote
                out.append(f"{key}={quote(set_values[key])}\n")
                done.add(key)
                continue
            out.append(line if line.endswith("\n") else line + "\n")
        for key, value in set_values.items():
            if key not in done:
                out.append(f"{key}={quote(value)}\n")
        self._atomic_write("".join(out))

    def _atomic_write(self, text: str) -> None:
        target = Path(self.config.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".syncd-", dir=target.parent)
        try:
            os.fchmod(fd, self.config.mode)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        async with self._lock:
            self.count("write")
            values = {c.key: c.desired.value.reveal() for c in changes if c.desired is not None}
            try:
                self._rewrite(values, set())
            except OSError as exc:
                raise PermanentError(f"cannot write {self.config.path}: {exc.strerror}") from None
            return [ItemOutcome(c.key) for c in changes]

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        async with self._lock:
            self.count("delete")
            try:
                self._rewrite({}, {c.key for c in changes})
            except OSError as exc:
                raise PermanentError(f"cannot write {self.config.path}: {exc.strerror}") from None
            return [ItemOutcome(c.key) for c in changes]
