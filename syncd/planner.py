"""The planner: every decision for one (sync, destination) pair, made here, with a reason.

Pure: no I/O, no clock. ``current`` is None when the destination was not listed this run
(between drift checks), in which case the state store alone tells what the destination
holds.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from syncd.connector import Capabilities
from syncd.model import Action, Change, DesiredEntry, Plan, Record, RemoteEntry


def _same(key: str) -> str:
    return key


def _everything(key: str) -> bool:
    return True


@dataclass(frozen=True)
class PlanPolicy:
    delete: str = "managed"  # managed | never
    on_conflict: str = "overwrite"  # overwrite | skip | fail
    max_delete_fraction: float = 0.5
    force: bool = False
    source_complete: bool = True
    source_count: int = 0
    previous_source_count: int | None = None
    owns_key: Callable[[str], bool] = field(default=_everything)


def blocked_reason(entry: DesiredEntry, caps: Capabilities) -> str | None:
    """Why the destination cannot hold this key, or None."""
    msg = caps.check_key(entry.key)
    if msg:
        return msg
    size = entry.value.size
    msg = caps.check_size(size)
    if msg:
        return msg
    for check in caps.extra_checks:
        msg = check(entry.key, size)
        if msg:
            return msg
    for value_check in caps.value_checks:
        msg = value_check(entry.key, entry.value)
        if msg:
            return msg
    return None


def _for(sync: str) -> Callable[..., Change]:
    """Changes of one sync's plan: each carries the sync's name from the start."""
    return functools.partial(Change, sync=sync)


def plan(
    sync: str,
    destination: str,
    desired: Sequence[DesiredEntry],
    current: Mapping[str, RemoteEntry] | None,
    recorded: Mapping[str, Record],
    caps: Capabilities,
    policy: PlanPolicy,
) -> Plan:
    mk = _for(sync)
    changes: list[Change] = []
    by_key: dict[str, list[DesiredEntry]] = defaultdict(list)
    for d in desired:
        by_key[d.key].append(d)

    fold: Callable[[str], str] = str.upper if caps.case_insensitive_keys else _same
    remote_by_fold = {fold(k): r for k, r in (current or {}).items()}
    recorded_by_fold = {fold(k): r for k, r in recorded.items()}

    writable: list[DesiredEntry] = []
    for key, entries in by_key.items():
        if len(entries) > 1:
            refs = " and ".join(repr(e.source_ref) for e in entries)
            for e in entries:
                changes.append(
                    mk(
                        key,
                        Action.BLOCKED,
                        f"source keys {refs} both become {key!r} at this destination",
                        desired=e,
                    )
                )
            continue
        entry = entries[0]
        reason = blocked_reason(entry, caps)
        if reason:
            changes.append(mk(key, Action.BLOCKED, reason, desired=entry))
            continue
        writable.append(entry)

    for entry in writable:
        rec = recorded_by_fold.get(fold(entry.key))
        changes.append(_decide(sync, entry, current, remote_by_fold, rec, fold, policy))

    # a per-scope count limit: creates past it are blocked, the rest go ahead
    if caps.max_keys is not None and current is not None:
        wanted = {fold(c.key) for c in changes if c.action is not Action.BLOCKED}
        total = len(wanted | set(remote_by_fold))
        over = total - caps.max_keys
        if over > 0:
            creates = sorted((c for c in changes if c.action is Action.CREATE), key=lambda c: c.key)
            position = {id(c): i for i, c in enumerate(changes)}
            for c in creates[-over:]:
                i = position[id(c)]
                changes[i] = mk(
                    c.key,
                    Action.BLOCKED,
                    f"the destination would hold {total} keys, over its limit of {caps.max_keys}",
                    desired=c.desired,
                    over_limit=True,
                )

    desired_folds = {fold(k) for k in by_key}
    deletes: list[Change] = []
    for key, rec in sorted(recorded.items()):
        if fold(key) in desired_folds:
            continue
        remote = remote_by_fold.get(fold(key)) if current is not None else None
        if current is not None and remote is None:
            changes.append(
                mk(
                    key,
                    Action.NOOP,
                    "no longer in the source and already gone from the destination",
                    forget=True,
                )
            )
        elif not rec.created:
            changes.append(
                mk(
                    key,
                    Action.SKIP,
                    "no longer in the source; adopted, not created by syncd, so left in place",
                    remote=remote,
                    forget=True,
                )
            )
        elif policy.delete == "never":
            changes.append(
                mk(
                    key,
                    Action.SKIP,
                    "no longer in the source; left in place (delete: never)",
                    remote=remote,
                )
            )
        elif not policy.owns_key(key):
            changes.append(
                mk(
                    key,
                    Action.SKIP,
                    "no longer in the source; outside the keys "
                    "this sync's template produces, so left in place",
                    remote=remote,
                )
            )
        elif not policy.source_complete:
            changes.append(
                mk(
                    key,
                    Action.BLOCKED,
                    "no longer in the source, but the source "
                    "answered only in part: nothing is deleted",
                    remote=remote,
                )
            )
        elif policy.source_count == 0 and policy.previous_source_count and not policy.force:
            changes.append(
                mk(
                    key,
                    Action.BLOCKED,
                    "the source returned no keys where it held "
                    f"{policy.previous_source_count} before: nothing is deleted "
                    "(rerun with --force if the source really is empty)",
                    remote=remote,
                )
            )
        else:
            c = mk(
                key,
                Action.DELETE,
                "no longer in the source; created by syncd",
                remote=remote,
                write=True,
                forget=True,
            )
            deletes.append(c)
            changes.append(c)

    refused = None
    if deletes and not policy.force:
        managed = sum(1 for r in recorded.values() if r.created)
        fraction = len(deletes) / managed if managed else 1.0
        if fraction > policy.max_delete_fraction:
            refused = (
                f"would delete {len(deletes)} of {managed} managed keys ({fraction:.0%}), over "
                f"max_delete_fraction {policy.max_delete_fraction:g}: nothing applied; "
                "rerun with --force if this is intended"
            )

    changes.sort(key=lambda c: (c.key, c.desired.source_ref if c.desired else ""))
    return Plan(sync, destination, tuple(changes), listed=current is not None, refused=refused)


def _decide(
    sync: str,
    d: DesiredEntry,
    current: Mapping[str, RemoteEntry] | None,
    remote_by_fold: Mapping[str, RemoteEntry],
    rec: Record | None,
    fold: Callable[[str], str],
    policy: PlanPolicy,
) -> Change:
    mk = _for(sync)
    key = d.key
    if current is None:
        if rec is None:
            return mk(key, Action.CREATE, "new key", desired=d, write=True, created=True)
        if rec.fingerprint == d.fingerprint:
            return mk(key, Action.NOOP, "unchanged since syncd wrote it", desired=d)
        return mk(
            key,
            Action.UPDATE,
            "value changed in the source",
            desired=d,
            write=True,
            created=rec.created,
        )

    remote = remote_by_fold.get(fold(key))
    if remote is None:
        if rec is not None:
            return mk(
                key,
                Action.CREATE,
                "missing at the destination (deleted out of band): re-created",
                desired=d,
                write=True,
                created=True,
                drift=True,
            )
        return mk(key, Action.CREATE, "new key", desired=d, write=True, created=True)

    owned = rec is not None or remote.managed_by == sync
    if owned:
        created = rec.created if rec is not None else True
        if remote.value is not None:
            if remote.value == d.value:
                stale = (
                    rec is None
                    or rec.fingerprint != d.fingerprint
                    or (remote.version is not None and rec.version != remote.version)
                )
                reason = (
                    "unchanged"
                    if rec is not None
                    else "already holds the value, marked managed by this sync: state recorded"
                )
                return mk(
                    key,
                    Action.NOOP,
                    reason,
                    desired=d,
                    remote=remote,
                    created=created,
                    record=stale,
                )
            drift = rec is not None and rec.fingerprint == d.fingerprint
            reason = (
                "changed out of band: restored to the source's value"
                if drift
                else "value changed in the source"
            )
            return mk(
                key,
                Action.UPDATE,
                reason,
                desired=d,
                remote=remote,
                write=True,
                created=created,
                drift=drift,
            )
        if rec is None:
            return mk(
                key,
                Action.UPDATE,
                "marked managed by this sync but not recorded: value re-sent",
                desired=d,
                remote=remote,
                write=True,
                created=True,
            )
        if rec.version is not None and remote.version is not None and rec.version != remote.version:
            return mk(
                key,
                Action.UPDATE,
                "changed out of band (updated since syncd wrote it): re-sent",
                desired=d,
                remote=remote,
                write=True,
                created=created,
                drift=True,
            )
        if rec.fingerprint != d.fingerprint:
            return mk(
                key,
                Action.UPDATE,
                "value changed in the source",
                desired=d,
                remote=remote,
                write=True,
                created=created,
            )
        return mk(
            key,
            Action.NOOP,
            "unchanged",
            desired=d,
            remote=remote,
            created=created,
            record=rec.version is None and remote.version is not None,
        )

    owner = f" (marked managed by sync {remote.managed_by!r})" if remote.managed_by else ""
    if policy.on_conflict == "overwrite":
        if remote.value is not None and remote.value == d.value:
            return mk(
                key,
                Action.ADOPT,
                f"existed with the same value{owner}: adopted "
                "without a write (on_conflict: overwrite)",
                desired=d,
                remote=remote,
                record=True,
            )
        return mk(
            key,
            Action.ADOPT,
            f"existed, not created by syncd{owner}: overwritten (on_conflict: overwrite)",
            desired=d,
            remote=remote,
            write=True,
        )
    if policy.on_conflict == "skip":
        return mk(
            key,
            Action.SKIP,
            f"exists and was not created by syncd{owner} (on_conflict: skip)",
            desired=d,
            remote=remote,
        )
    return mk(
        key,
        Action.CONFLICT,
        f"exists and was not created by syncd{owner} (on_conflict: fail)",
        desired=d,
        remote=remote,
    )
