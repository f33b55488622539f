"""Plain data shared by the core and the connectors. Values stay wrapped in SecretValue."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MASK = "**********"


class SecretValue:
    """A secret string that never shows itself in repr, str, format or pickling by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("SecretValue holds a str")
        self._value = value

    def reveal(self) -> str:
        """The plaintext. Call it only where the value goes to the platform."""
        return self._value

    @property
    def size(self) -> int:
        """Bytes of the UTF-8 value: the unit every size limit is expressed in."""
        return len(self._value.encode("utf-8"))

    def __repr__(self) -> str:
        return f"SecretValue('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretValue):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("SecretValue cannot be pickled")


@dataclass(frozen=True)
class SourceEntry:
    """One secret as a source holds it: ``path`` is its folder (``""`` or ``"payments/"``)."""

    path: str
    key: str
    value: SecretValue
    tags: tuple[str, ...] = ()  # the source's labels for it (Infisical tag slugs)

    @property
    def ref(self) -> str:
        return f"{self.path}{self.key}"


@dataclass(frozen=True)
class Snapshot:
    """Everything a source holds for one read. ``complete`` is False for a partial answer."""

    entries: tuple[SourceEntry, ...]
    complete: bool = True
    environment: str = ""

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class DesiredEntry:
    """A key as the destination should hold it, after include/exclude and the template."""

    key: str
    value: SecretValue
    source_ref: str
    fingerprint: str


@dataclass(frozen=True)
class RemoteEntry:
    """A key as the destination holds it.

    ``value`` is None where the platform cannot return values (GitHub, Vercel sensitive).
    ``version`` is the platform's version or updated-at, compared with the recorded one to
    catch out-of-band edits. ``managed_by`` is the sync named by the platform-side
    ownership mark (tag, description, comment), ``""`` if marked without a name, None if
    unmarked. ``meta`` holds platform ids the connector needs to address the object.
    """

    key: str
    value: SecretValue | None = None
    version: str | None = None
    managed_by: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """What the state store remembers of one key at one destination. Never a value."""

    key: str
    fingerprint: str
    version: str | None
    created: bool
    applied_at: datetime


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ADOPT = "adopt"
    NOOP = "noop"
    SKIP = "skip"
    CONFLICT = "conflict"
    BLOCKED = "blocked"

    def __str__(self) -> str:
        return self.value


WRITES = frozenset({Action.CREATE, Action.UPDATE, Action.ADOPT})


@dataclass(frozen=True)
class Change:
    """One decision of the planner for one key at one destination."""

    key: str
    action: Action
    reason: str
    desired: DesiredEntry | None = None
    sync: str = ""
    remote: RemoteEntry | None = None
    drift: bool = False
    # False where the destination already holds the desired value: record, do not write
    write: bool = False
    # the ownership to record after success: True if syncd created the object
    created: bool = False
    # refresh the state-store row without a platform call (noop with a new fingerprint,
    # adopt of an equal value)
    record: bool = False
    # drop the state-store row (the key is gone at the destination already)
    forget: bool = False
    # blocked by the destination's count limit (not by its name or value)
    over_limit: bool = False

    @property
    def source_key(self) -> str | None:
        """The source's name for the key (``path + key``) where it differs from the
        destination's (a template, upper-casing, a prefix)."""
        if self.desired is None or self.desired.source_ref == self.key:
            return None
        return self.desired.source_ref

    @property
    def label(self) -> str:
        """The key as a user searches for it: ``has-dash (as HAS-DASH)``."""
        ref = self.source_key
        return self.key if ref is None else f"{ref} (as {self.key})"

    def log_fields(self) -> dict[str, str]:
        """``key`` (the destination's name) and, where it differs, ``source_key``."""
        ref = self.source_key
        return {"key": self.key} if ref is None else {"key": self.key, "source_key": ref}


@dataclass(frozen=True)
class Plan:
    """Every decision for one (sync, destination) pair. ``refused`` stops the whole pair."""

    sync: str
    destination: str
    changes: tuple[Change, ...]
    listed: bool
    refused: str | None = None

    def by_action(self, *actions: Action) -> list[Change]:
        return [c for c in self.changes if c.action in actions]

    @property
    def writes(self) -> list[Change]:
        return [c for c in self.changes if c.write]

    @property
    def upserts(self) -> list[Change]:
        return [c for c in self.changes if c.write and c.action in WRITES]

    @property
    def deletes(self) -> list[Change]:
        return [c for c in self.changes if c.write and c.action is Action.DELETE]

    @property
    def bookkeeping(self) -> list[Change]:
        return [c for c in self.changes if not c.write and (c.record or c.forget)]


@dataclass(frozen=True)
class ItemOutcome:
    """The result of one key in a batch call: ``error`` None means it landed."""

    key: str
    version: str | None = None
    error: BaseException | None = None


def keys_of(changes: Sequence[Change]) -> list[str]:
    return [c.key for c in changes]
