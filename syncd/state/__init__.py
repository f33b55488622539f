"""State stores: SQLite by default, PostgreSQL for several replicas sharing one state."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from syncd.errors import ConfigError
from syncd.state.base import PairMeta, RunRow, StateStore

__all__ = ["Fingerprinter", "PairMeta", "RunRow", "StateStore", "open_store"]

KEY_FILE = "fingerprint.key"


class Fingerprinter:
    """HMAC-SHA256 of (key, value) under a local 32-byte key kept in a mode-0600 file.

    The key name is part of the message so two keys holding one value do not share a
    fingerprint, and the state store shows nothing about which values are equal.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Fingerprinter:
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        if not file.exists():
            # written aside, then linked into place: processes starting together on a new
            # state folder agree on one key, and none reads a half-written file
            tmp = file.with_name(f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, file)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        data = file.read_bytes()
        if len(data) < 16:
            raise ConfigError("", f"fingerprint key file {file} is too short (corrupt?)")
        return cls(data)

    def __call__(self, key: str, value: str) -> str:
        mac = hmac.new(self._secret, key.encode() + b"\0" + value.encode(), hashlib.sha256)
        return "hmac-sha256:" + mac.hexdigest()


def open_store(url: str | None, state_dir: Path, base_dir: Path | None = None) -> StateStore:
    """``sqlite:///ABS/PATH.db`` (absolute), ``sqlite:REL/PATH.db`` (relative to the config
    file's folder), ``postgresql://…``; None: ``state.db`` under the state folder."""
    if url is None:
        from syncd.state.sqlite import SqliteStore

        return SqliteStore(state_dir / "state.db")
    if url.startswith("sqlite:"):
        from syncd.state.sqlite import SqliteStore

        rest = url[len("sqlite:") :]
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest:
            raise ConfigError(
                "state.url", "expected sqlite:///ABSOLUTE/PATH or sqlite:RELATIVE/PATH"
            )
        path = Path(rest)
        if not path.is_absolute():
            path = (base_dir or state_dir) / path
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from syncd.state.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                "state.url", "a postgresql:// state store needs pip install 'syncd[postgres]'"
            ) from exc
        store: StateStore = PostgresStore(url)
        return store
    scheme = url.split(":")[0]
    raise ConfigError("state.url", f"expected sqlite:///PATH or postgresql://…, got {scheme}:…")
