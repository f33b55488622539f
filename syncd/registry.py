"""Connector discovery through entry points. Only the kinds a config names are imported."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

SOURCE_GROUP = "syncd.sources"
DESTINATION_GROUP = "syncd.destinations"

# the extra that installs each built-in connector's platform library
EXTRAS = {
    "aws-parameter-store": "aws",
    "aws-secrets-manager": "aws",
    "github": "github",
    "gitlab": "gitlab",
    "vercel": "vercel",
    "netlify": "netlify",
    "infisical": "infisical",
}


class ConnectorNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ConnectorInfo:
    group: str
    kind: str
    target: str


_registered: dict[tuple[str, str], Any] = {}


def register(group: str, kind: str, cls: Any) -> None:
    """Register a connector class in-process (tests, embedding); entry points are the
    normal way."""
    _registered[(group, kind)] = cls


def unregister(group: str, kind: str) -> None:
    _registered.pop((group, kind), None)


def _eps(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def installed(group: str) -> list[ConnectorInfo]:
    return [ConnectorInfo(group, ep.name, ep.value) for ep in sorted(_eps(group).values())]


def load(group: str, kind: str) -> Any:
    """Import one connector class. Raises ConnectorNotFound with a message fit for a user."""
    if (group, kind) in _registered:
        return _registered[(group, kind)]
    eps = _eps(group)
    what = "source" if group == SOURCE_GROUP else "destination"
    if kind not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ConnectorNotFound(f"unknown {what} type {kind!r} (installed: {known})")
    try:
        return eps[kind].load()
    except ImportError as exc:
        if (exc.name or "").startswith("syncd.connectors"):
            raise ConnectorNotFound(f"the {kind} {what} is not part of this build") from exc
        extra = EXTRAS.get(kind, kind)
        raise ConnectorNotFound(
            f"the {kind} {what} needs a library that is not installed ({exc.name}); "
            f"install it with: pip install 'syncd[{extra}]'"
        ) from exc


def source_class(kind: str) -> Any:
    return load(SOURCE_GROUP, kind)


def destination_class(kind: str) -> Any:
    return load(DESTINATION_GROUP, kind)
