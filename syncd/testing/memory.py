"""An in-memory destination for tests of the core: batch size 1, optional write-only mode,
and fault injection (throttling, permanent errors, a crash after k writes)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from syncd import registry
from syncd.connector import AfterChange, BaseDestination, Capabilities, DestinationConfig
from syncd.errors import AuthError, ConnectorError, KeyRejected, RateLimited, RetryableError
from syncd.model import Change, ItemOutcome, RemoteEntry, SecretValue


class Crash(BaseException):
    """Stands for the process dying mid-run: nothing in syncd catches it."""


class MemoryPlatform:
    """The 'platform' behind MemoryDestination: shared by name across runs."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.writes = 0
        self.throttle_next = 0
        self.retry_after: float | None = 3.0
        self.reject: set[str] = set()
        self.crash_after: int | None = None
        self.auth_broken = False
        self.throttle_page: int | None = None  # throttle this page of a listing, once
        self.redeploys: list[int] = []  # the platform's write count at each redeploy
        self.redeploy_fail = 0  # the next redeploys fail
        self.redeploy_error: type[ConnectorError] = RetryableError  # as a 5xx, by default

    def put(self, key: str, value: str) -> int:
        self.data[key] = value
        self.versions[key] = self.versions.get(key, 0) + 1
        return self.versions[key]


PLATFORMS: dict[str, MemoryPlatform] = {}


def platform(name: str) -> MemoryPlatform:
    return PLATFORMS.setdefault(name, MemoryPlatform())


class MemoryConfig(DestinationConfig):
    type: Literal["memory"] = "memory"
    platform: str = "default"
    write_only: bool = False
    page_size: int | None = None
    redeploy: bool = False


class MemoryDestination(BaseDestination):
    kind: ClassVar[str] = "memory"
    Config: ClassVar[type[MemoryConfig]] = MemoryConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=True,
        tags_ownership=False,
        key_pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        key_rule="letters, digits and underscores, not starting with a digit",
        max_value_bytes=4096,
    )
    config: MemoryConfig

    def __init__(self, name: str, config: Any, context: Any) -> None:
        super().__init__(name, config, context)
        self.p = platform(config.platform)

    def _gate(self, op: str) -> None:
        self.count(op)
        if self.p.auth_broken:
            raise AuthError("token rejected (HTTP 401)")
        if self.p.throttle_next > 0:
            self.p.throttle_next -= 1
            raise RateLimited("HTTP 429", retry_after=self.p.retry_after)

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        names = sorted(self.p.data)
        size = self.config.page_size or max(1, len(names))
        pages = [names[i : i + size] for i in range(0, len(names), size)] or [[]]
        out: dict[str, RemoteEntry] = {}
        for n, page in enumerate(pages):
            out.update(await self.read(functools.partial(self._page, n, page)))
        return out

    async def _page(self, n: int, names: list[str]) -> dict[str, RemoteEntry]:
        self._gate("list")
        if self.p.throttle_page == n:
            self.p.throttle_page = None
            raise RateLimited("HTTP 429 on a listing page", retry_after=self.p.retry_after)
        return {
            k: RemoteEntry(
                k,
                None if self.config.write_only else SecretValue(self.p.data[k]),
                version=str(self.p.versions[k]),
            )
            for k in names
            if k in self.p.data
        }

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        self._gate("put")
        out = []
        for c in changes:
            if self.p.crash_after is not None and self.p.writes >= self.p.crash_after:
                raise Crash("simulated crash")
            if c.key in self.p.reject:
                out.append(ItemOutcome(c.key, error=KeyRejected(f"{c.key}: refused (HTTP 400)")))
                continue
            assert c.desired is not None
            self.p.writes += 1
            out.append(ItemOutcome(c.key, version=str(self.p.put(c.key, c.desired.value.reveal()))))
        return out

    def after_change_enabled(self) -> bool:
        return self.config.redeploy

    async def describe_after_change(self) -> str:
        return f"redeploy memory platform {self.config.platform}"

    async def after_change(self) -> AfterChange:
        self._gate("redeploy")
        if self.p.redeploy_fail > 0:
            self.p.redeploy_fail -= 1
            raise self.p.redeploy_error("redeploy: HTTP 502")
        self.p.redeploys.append(self.p.writes)
        n = len(self.p.redeploys)
        return AfterChange("redeploy", f"dpl_{n}", f"https://deploy-{n}.memory-platform.test")

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        self._gate("delete")
        for c in changes:
            self.p.writes += 1
            self.p.data.pop(c.key, None)
            self.p.versions.pop(c.key, None)
        return [ItemOutcome(c.key) for c in changes]


def install() -> None:
    registry.register(registry.DESTINATION_GROUP, "memory", MemoryDestination)
