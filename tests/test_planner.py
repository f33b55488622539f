"""The planner, one row per rule: inputs, the action it must choose, and the reason's gist."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from syncd.connector import Capabilities
from syncd.model import Action, DesiredEntry, Record, RemoteEntry, SecretValue
from syncd.planner import PlanPolicy, plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)
READABLE = Capabilities(reads_values=True, tags_ownership=False)
WRITE_ONLY = Capabilities(reads_values=False, tags_ownership=False)
STRICT = Capabilities(
    reads_values=True,
    tags_ownership=True,
    key_pattern=r"[A-Z_][A-Z0-9_]*",
    key_rule="upper-case letters, digits and underscores",
    max_value_bytes=10,
    max_key_length=12,
)


def fp(key: str, value: str) -> str:
    return hashlib.sha256(f"{key}\0{value}".encode()).hexdigest()


def want(key: str, value: str, ref: str | None = None) -> DesiredEntry:
    return DesiredEntry(key, SecretValue(value), ref or key, fp(key, value))


def rec(key: str, value: str, created: bool = True, version: str | None = None) -> Record:
    return Record(key, fp(key, value), version, created, T0)


def remote(
    key: str, value: str | None, version: str | None = None, managed_by: str | None = None
) -> RemoteEntry:
    return RemoteEntry(key, SecretValue(value) if value is not None else None, version, managed_by)


@dataclass
class Row:
    name: str
    desired: list[DesiredEntry]
    current: dict[str, RemoteEntry] | None
    recorded: dict[str, Record]
    expect: dict[str, tuple[Action, str]]  # key -> (action, words in the reason)
    caps: Capabilities = READABLE
    policy: PlanPolicy = field(default_factory=PlanPolicy)
    writes: int | None = None
    refused: str | None = None


def cur(*entries: RemoteEntry) -> dict[str, RemoteEntry]:
    return {e.key: e for e in entries}


def recs(*records: Record) -> dict[str, Record]:
    return {r.key: r for r in records}


ROWS = [
    Row(
        "new key is created",
        [want("A", "1")],
        cur(),
        {},
        {"A": (Action.CREATE, "new key")},
        writes=1,
    ),
    Row(
        "unchanged readable value is a noop",
        [want("A", "1")],
        cur(remote("A", "1")),
        recs(rec("A", "1")),
        {"A": (Action.NOOP, "unchanged")},
        writes=0,
    ),
    Row(
        "changed source value is an update",
        [want("A", "2")],
        cur(remote("A", "1")),
        recs(rec("A", "1")),
        {"A": (Action.UPDATE, "changed in the source")},
        writes=1,
    ),
    Row(
        "out-of-band edit is restored as drift",
        [want("A", "1")],
        cur(remote("A", "x")),
        recs(rec("A", "1")),
        {"A": (Action.UPDATE, "out of band")},
        writes=1,
    ),
    Row(
        "out-of-band deletion is re-created as drift",
        [want("A", "1")],
        cur(),
        recs(rec("A", "1")),
        {"A": (Action.CREATE, "deleted out of band")},
        writes=1,
    ),
    Row(
        "between drift checks the state store decides: unchanged",
        [want("A", "1")],
        None,
        recs(rec("A", "1")),
        {"A": (Action.NOOP, "unchanged since syncd wrote it")},
        writes=0,
    ),
    Row(
        "between drift checks the state store decides: changed",
        [want("A", "2")],
        None,
        recs(rec("A", "1")),
        {"A": (Action.UPDATE, "changed in the source")},
        writes=1,
    ),
    Row(
        "write-only: equal fingerprint is a noop",
        [want("A", "1")],
        cur(remote("A", None, "v1")),
        recs(rec("A", "1", version="v1")),
        {"A": (Action.NOOP, "unchanged")},
        WRITE_ONLY,
        writes=0,
    ),
    Row(
        "write-only: changed fingerprint is an update",
        [want("A", "2")],
        cur(remote("A", None, "v1")),
        recs(rec("A", "1", version="v1")),
        {"A": (Action.UPDATE, "changed in the source")},
        WRITE_ONLY,
        writes=1,
    ),
    Row(
        "write-only: moved version is drift",
        [want("A", "1")],
        cur(remote("A", None, "v2")),
        recs(rec("A", "1", version="v1")),
        {"A": (Action.UPDATE, "out of band")},
        WRITE_ONLY,
        writes=1,
    ),
    Row(
        "foreign key, overwrite: adopted with a write",
        [want("A", "1")],
        cur(remote("A", "x")),
        {},
        {"A": (Action.ADOPT, "overwritten")},
        writes=1,
    ),
    Row(
        "foreign key, overwrite, same value: adopted without a write",
        [want("A", "1")],
        cur(remote("A", "1")),
        {},
        {"A": (Action.ADOPT, "without a write")},
        writes=0,
    ),
    Row(
        "foreign key, skip",
        [want("A", "1")],
        cur(remote("A", "x")),
        {},
        {"A": (Action.SKIP, "on_conflict: skip")},
        policy=PlanPolicy(on_conflict="skip"),
        writes=0,
    ),
    Row(
        "foreign key, fail",
        [want("A", "1")],
        cur(remote("A", "x")),
        {},
        {"A": (Action.CONFLICT, "on_conflict: fail")},
        policy=PlanPolicy(on_conflict="fail"),
        writes=0,
    ),
    Row(
        "key tagged managed by this sync but unrecorded is ours again",
        [want("A", "1")],
        cur(remote("A", "1", managed_by="s")),
        {},
        {"A": (Action.NOOP, "state recorded")},
        writes=0,
    ),
    Row(
        "key tagged by another sync is foreign",
        [want("A", "1")],
        cur(remote("A", "x", managed_by="other")),
        {},
        {"A": (Action.CONFLICT, "'other'")},
        policy=PlanPolicy(on_conflict="fail"),
    ),
    Row(
        "removed key created by syncd is deleted",
        [want("A", "1"), want("B", "1"), want("C", "1")],
        cur(remote("A", "1"), remote("B", "1"), remote("C", "1"), remote("D", "1")),
        recs(rec("A", "1"), rec("B", "1"), rec("C", "1"), rec("D", "1")),
        {"D": (Action.DELETE, "created by syncd")},
        writes=1,
    ),
    Row(
        "removed key that syncd adopted is left in place",
        [want("A", "1")],
        cur(remote("A", "1"), remote("B", "1")),
        recs(rec("A", "1"), rec("B", "1", created=False)),
        {"B": (Action.SKIP, "adopted")},
        writes=0,
    ),
    Row(
        "delete: never keeps removed keys",
        [want("A", "1")],
        cur(remote("A", "1"), remote("B", "1")),
        recs(rec("A", "1"), rec("B", "1")),
        {"B": (Action.SKIP, "delete: never")},
        policy=PlanPolicy(delete="never"),
        writes=0,
    ),
    Row(
        "a key never recorded is never deleted",
        [want("A", "1")],
        cur(remote("A", "1"), remote("Z", "1")),
        recs(rec("A", "1")),
        {"A": (Action.NOOP, "unchanged")},
        writes=0,
    ),
    Row(
        "already gone at the destination is forgotten",
        [want("A", "1"), want("B", "1")],
        cur(remote("A", "1"), remote("B", "1")),
        recs(rec("A", "1"), rec("B", "1"), rec("C", "1")),
        {"C": (Action.NOOP, "already gone")},
        writes=0,
    ),
    Row(
        "outside the template's key scope is left in place",
        [want("APP_A", "1"), want("APP_B", "1")],
        None,
        recs(rec("APP_A", "1"), rec("APP_B", "1"), rec("LEGACY", "1")),
        {"LEGACY": (Action.SKIP, "outside")},
        policy=PlanPolicy(owns_key=lambda k: k.startswith("APP_")),
        writes=0,
    ),
    Row(
        "deleting over max_delete_fraction refuses the pair",
        [want("A", "1")],
        None,
        recs(rec("A", "1"), rec("B", "1"), rec("C", "1")),
        {"B": (Action.DELETE, ""), "C": (Action.DELETE, "")},
        refused="would delete 2 of 3 managed keys",
    ),
    Row(
        "--force lifts the fraction guard",
        [want("A", "1")],
        None,
        recs(rec("A", "1"), rec("B", "1"), rec("C", "1")),
        {"B": (Action.DELETE, "")},
        policy=PlanPolicy(force=True),
        writes=2,
    ),
    Row(
        "a source that came back empty deletes nothing",
        [],
        None,
        recs(rec("A", "1")),
        {"A": (Action.BLOCKED, "returned no keys")},
        policy=PlanPolicy(source_count=0, previous_source_count=5, max_delete_fraction=1.0),
        writes=0,
    ),
    Row(
        "a partial source answer deletes nothing",
        [want("A", "1")],
        None,
        recs(rec("A", "1"), rec("B", "1")),
        {"B": (Action.BLOCKED, "only in part")},
        policy=PlanPolicy(source_complete=False, max_delete_fraction=1.0),
        writes=0,
    ),
    Row(
        "invalid key name is blocked with the rule",
        [want("a-b", "1")],
        cur(),
        {},
        {"a-b": (Action.BLOCKED, "upper-case letters")},
        STRICT,
        writes=0,
    ),
    Row(
        "too long a key is blocked with the limit",
        [want("ABCDEFGHIJKLM", "1")],
        cur(),
        {},
        {"ABCDEFGHIJKLM": (Action.BLOCKED, "12-character limit")},
        STRICT,
        writes=0,
    ),
    Row(
        "oversize value is blocked with the limit",
        [want("A", "x" * 11)],
        cur(),
        {},
        {"A": (Action.BLOCKED, "11 bytes, over the 10-byte limit")},
        STRICT,
        writes=0,
    ),
    Row(
        "value exactly at the limit syncs",
        [want("A", "x" * 10)],
        cur(),
        {},
        {"A": (Action.CREATE, "new key")},
        STRICT,
        writes=1,
    ),
    Row(
        "a size limit counts UTF-8 bytes",
        [want("A", "é" * 6)],
        cur(),
        {},
        {"A": (Action.BLOCKED, "12 bytes")},
        STRICT,
        writes=0,
    ),
    Row(
        "two source keys rendering to one key are both blocked",
        [want("A", "1", "x/A"), want("A", "2", "y/A")],
        cur(),
        {},
        {"A": (Action.BLOCKED, "'x/A' and 'y/A'")},
        writes=0,
    ),
    Row(
        "a blocked key that was recorded is not deleted",
        [want("A", "x" * 11)],
        cur(remote("A", "1")),
        recs(rec("A", "1")),
        {"A": (Action.BLOCKED, "limit")},
        STRICT,
        writes=0,
    ),
    Row(
        "count limit blocks creates past it",
        [want("A", "1"), want("B", "1"), want("C", "1")],
        cur(remote("Z", "1")),
        {},
        {"A": (Action.CREATE, ""), "C": (Action.BLOCKED, "over its limit of 3")},
        Capabilities(reads_values=True, tags_ownership=False, max_keys=3),
        writes=2,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_planner_rules(row: Row) -> None:
    p = plan("s", "d", row.desired, row.current, row.recorded, row.caps, row.policy)
    by_key: dict[str, list[tuple[Action, str]]] = {}
    for c in p.changes:
        by_key.setdefault(c.key, []).append((c.action, c.reason))
        assert c.reason, f"{c.key} has no reason"
    for key, (action, words) in row.expect.items():
        got = by_key.get(key)
        assert got, f"no change for {key}"
        assert all(a is action for a, _ in got), got
        assert all(words in r for _, r in got), got
    if row.writes is not None:
        assert len(p.writes) == row.writes
    if row.refused:
        assert p.refused and row.refused in p.refused
    else:
        assert p.refused is None


def test_plan_never_contains_a_value() -> None:
    secret = "s3cr3t-value-that-must-not-show"
    p = plan(
        "s",
        "d",
        [want("A", secret), want("b-c", secret)],
        cur(remote("A", "old")),
        recs(rec("A", "old")),
        STRICT,
        PlanPolicy(),
    )
    assert secret not in repr(p) and secret not in str(p)
