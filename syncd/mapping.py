"""From a source snapshot to the keys one destination should hold."""

from __future__ import annotations

import fnmatch
import re
import string
from collections.abc import Callable, Sequence

from syncd.connector import Capabilities
from syncd.model import DesiredEntry, Snapshot, SourceEntry

Fingerprint = Callable[[str, str], str]


TAG_PREFIX = "tag:"


def matches(entry: SourceEntry, pattern: str) -> bool:
    """A glob over ``path + key`` (``payments/STRIPE_KEY``), or ``tag:<glob>`` over the
    entry's tags (Infisical tag slugs)."""
    if pattern.startswith(TAG_PREFIX):
        glob = pattern[len(TAG_PREFIX) :]
        return any(fnmatch.fnmatchcase(t, glob) for t in entry.tags)
    return fnmatch.fnmatchcase(entry.ref, pattern)


def selected(entry: SourceEntry, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Included by some pattern of ``include`` and by none of ``exclude``."""
    if not any(matches(entry, p) for p in include):
        return False
    return not any(matches(entry, p) for p in exclude)


def render_key(template: str, entry: SourceEntry, source: str, environment: str) -> str:
    return template.format(key=entry.key, path=entry.path, source=source, environment=environment)


def desired_entries(
    snapshot: Snapshot,
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    template: str | None,
    source: str,
    capabilities: Capabilities,
    fingerprint: Fingerprint,
) -> list[DesiredEntry]:
    """Every selected source entry rendered for one destination (duplicates kept: the
    planner blocks keys that collide, naming both)."""
    tpl = template or capabilities.default_key_template
    out = []
    for entry in snapshot.entries:
        if not selected(entry, include, exclude):
            continue
        key = render_key(tpl, entry, source, snapshot.environment)
        if capabilities.case_insensitive_keys:
            key = key.upper()
        out.append(
            DesiredEntry(key, entry.value, entry.ref, fingerprint(key, entry.value.reveal()))
        )
    return out


def key_scope(
    template: str | None, capabilities: Capabilities, source: str, environment: str
) -> Callable[[str], bool]:
    """A predicate: could this sync's template have produced this destination key?"""
    tpl = template or capabilities.default_key_template
    pattern = ""
    for literal, name, _, _ in string.Formatter().parse(tpl):
        pattern += re.escape(literal)
        if name == "key":
            pattern += r"[^/]+"
        elif name == "path":
            pattern += r"(?:.+/)?"
        elif name == "source":
            pattern += re.escape(source)
        elif name == "environment":
            pattern += re.escape(environment)
    flags = re.IGNORECASE if capabilities.case_insensitive_keys else 0
    rx = re.compile(pattern, flags)
    return lambda key: rx.fullmatch(key) is not None
