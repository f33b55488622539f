"""The connector contract: what every source and destination plugin provides.

A destination is a class with ``kind``, a pydantic ``Config`` and ``capabilities`` as class
attributes. The core builds it as ``cls(name, config, context)``. Its methods make platform
calls and nothing else: no sleeping, no retry loops, no state store. Errors are translated
into :mod:`syncd.errors` by ``classify``; per-key failures inside a batch call come back as
:class:`~syncd.model.ItemOutcome` with an ``error``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, SecretStr

from syncd.config_types import Duration
from syncd.errors import ConnectorError, PermanentError
from syncd.model import Change, ItemOutcome, RemoteEntry, SecretValue, Snapshot

T = TypeVar("T")


@dataclass(frozen=True)
class RateLimit:
    """A documented limit the executor keeps under: ``count`` calls per ``seconds`` through
    one credential (writes only, or every call)."""

    count: int
    seconds: float
    label: str
    writes_only: bool = True


@dataclass(frozen=True)
class Capabilities:
    """What the core must know about a platform to plan for it, as class data."""

    reads_values: bool
    tags_ownership: bool
    max_value_bytes: int | None = None
    key_pattern: str | None = None
    key_rule: str = ""  # the key_pattern in words, for `blocked` messages
    max_key_length: int | None = None
    case_insensitive_keys: bool = False
    batch_size: int = 1
    delete_batch_size: int = 1
    max_keys: int | None = None  # a per-scope count limit (GitHub: 100 a repository)
    default_key_template: str = "{key}"
    # writes per minute through one credential, paced by the executor (None: unpaced)
    writes_per_minute: float | None = None
    # further limits per credential (GitHub's 500 writes an hour, Netlify's 500 calls a
    # minute): the executor waits for room before a call, so the platform never refuses it
    rate_limits: tuple[RateLimit, ...] = ()
    # extra checks a platform wants at plan time: return a message to block the key
    extra_checks: tuple[Callable[[str, int], str | None], ...] = field(default=())
    # checks that need the value itself (GitLab's masking rules): key and value in, a
    # message out to block the key; the message must never quote the value
    value_checks: tuple[Callable[[str, SecretValue], str | None], ...] = field(default=())

    def check_key(self, key: str) -> str | None:
        if not key:
            return "the key is empty"
        if self.max_key_length is not None and len(key) > self.max_key_length:
            return f"key is {len(key)} characters, over the {self.max_key_length}-character limit"
        if self.key_pattern is not None and not re.fullmatch(self.key_pattern, key):
            return f"invalid key name: {self.key_rule or 'must match ' + self.key_pattern}"
        return None

    def check_size(self, size: int) -> str | None:
        if self.max_value_bytes is not None and size > self.max_value_bytes:
            return (
                f"value is {size} bytes, over the {self.max_value_bytes}-byte limit "
                "of this destination"
            )
        return None


class ConnectorConfig(BaseModel):
    """Base of every connector's Config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class DestinationConfig(ConnectorConfig):
    timeout: Duration = 30.0
    """Seconds any one platform call may take before it counts as failed (and retryable)."""
    concurrency: int = 4
    """Platform calls in flight at once through this destination's credential."""
    list_timeout: Duration = 600.0
    """Seconds a whole listing (every page of it) may take; each page also has ``timeout``."""


class SourceConfig(ConnectorConfig):
    webhook_secret: SecretStr | None = None
    """Enables ``/webhooks/generic/<source>`` (HMAC-SHA256 of the body)."""


@dataclass
class ConnectorContext:
    """What the core hands a connector: where the config file lives, a hook to count calls."""

    base_dir: str = "."
    on_api_call: Callable[[str, str, str], None] = lambda destination, operation, status: None
    # runs one read (a page of a listing) under the executor's concurrency, timeout and
    # retries; None outside an engine, where reads run as they are
    read: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None
    # the platform's remaining quota: (destination, remaining, seconds until reset)
    on_quota: Callable[[str, float, float | None], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Destination(Protocol):
    kind: ClassVar[str]
    Config: ClassVar[type[DestinationConfig]]
    capabilities: ClassVar[Capabilities]
    name: str
    config: Any

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None: ...

    async def check(self) -> None:
        """Credentials and target exist; no writes. Raise a ConnectorError otherwise."""

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        """Every key in this destination's scope.

        ``keys`` hints at the keys the sync wants; ``known`` maps each key syncd recorded to
        the version it recorded. A connector that can list versions cheaply may leave
        ``value`` None for entries whose version equals the known one (the planner then
        trusts the state store's fingerprint) and read values only where a version moved or
        nothing is known."""

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        """Create, update or adopt; one outcome per change."""

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        """Delete; one outcome per change. A key already gone counts as deleted."""

    def classify(self, exc: BaseException) -> ConnectorError:
        """Translate a platform or SDK exception into the core's taxonomy."""

    def after_change_enabled(self) -> bool:
        """Whether this destination starts something after a change (see BaseDestination)."""

    async def describe_after_change(self) -> str:
        """What ``after_change`` would start, in words."""

    async def after_change(self) -> AfterChange:
        """Start it (a deployment, a build, a restart)."""

    async def aclose(self) -> None: ...


@runtime_checkable
class Source(Protocol):
    kind: ClassVar[str]
    Config: ClassVar[type[SourceConfig]]
    name: str
    config: Any

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None: ...

    async def snapshot(self) -> Snapshot:
        """Every secret in scope; raise SourceReadError on any failure or partial answer."""

    def scope_key(self) -> str:
        """Syncs reading sources with equal scope keys in one cycle share one read."""

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class AfterChange:
    """What a destination started after a change: a deployment, a build, a restart."""

    what: str  # "redeploy vercel production", "build of site s-1"
    id: str | None = None
    url: str | None = None

    def describe(self) -> str:
        out = self.what + (f": {self.id}" if self.id else "")
        return out + (f" ({self.url})" if self.url else "")


class BaseDestination:
    """Shared plumbing for destinations. Subclasses set the class attributes.

    **After a change** (optional). Some platforms apply new values only to what is
    started after them (Vercel and Netlify deployments; pods reading a Kubernetes Secret).
    A destination that can start that says so with ``after_change_enabled()``; the core
    decides when: only after a run that applied a write there and failed nothing there,
    once per run, debounced in ``syncd run``, kept pending (and retried) until it
    succeeds. ``describe_after_change()`` says what it would do, for ``plan`` (reads
    allowed, no writes); ``after_change()`` does it, one platform call that the executor
    times and retries like any write."""

    kind: ClassVar[str]
    Config: ClassVar[type[DestinationConfig]]
    capabilities: ClassVar[Capabilities]

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None:
        self.name = name
        self.config = config
        self.context = context

    def count(self, operation: str, status: str = "ok") -> None:
        """Report one platform call to the metrics and benchmark counters."""
        self.context.on_api_call(self.name, operation, status)

    def quota(self, remaining: float, reset_in: float | None) -> None:
        """Report the platform's own count of calls left (``X-RateLimit-Remaining``) and
        when its window refills: the executor holds the next calls until then when none
        are left, instead of letting the platform refuse them."""
        if self.context.on_quota is not None:
            self.context.on_quota(self.name, remaining, reset_in)

    async def in_thread(self, fn: Callable[[], T]) -> T:
        """Run a blocking SDK call (boto3, PyGithub, python-gitlab) on this destination's
        own worker threads, as many as its ``concurrency``: destinations never queue behind
        each other in asyncio's shared default pool."""
        pool = self.__dict__.get("_pool")
        if pool is None:
            workers = max(1, int(getattr(self.config, "concurrency", 4)))
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"syncd-{self.name}")
            self.__dict__["_pool"] = pool
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def close_threads(self) -> None:
        pool = self.__dict__.pop("_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def read(self, fn: Callable[[], Awaitable[T]]) -> T:
        """One read of a multi-call listing (a page, a batch of values). The core runs it
        under the destination's concurrency and per-call timeout and retries it alone when
        it is throttled, so a long listing never restarts from its first page."""
        if self.context.read is None:
            return await fn()
        result: T = await self.context.read(self.name, fn)
        return result

    async def check(self) -> None:
        await self.list_current()

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        raise NotImplementedError

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        raise NotImplementedError

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        raise NotImplementedError

    def classify(self, exc: BaseException) -> ConnectorError:
        if isinstance(exc, ConnectorError):
            return exc
        return PermanentError(f"{type(exc).__name__}")

    def after_change_enabled(self) -> bool:
        """Whether this destination starts something after a change (its config asks)."""
        return False

    async def describe_after_change(self) -> str:
        """What ``after_change`` would start, in words (``plan``)."""
        raise NotImplementedError

    async def after_change(self) -> AfterChange:
        """Start it; raise a classified error when the platform refuses."""
        raise NotImplementedError

    async def aclose(self) -> None:
        self.close_threads()


class BaseSource:
    kind: ClassVar[str]
    Config: ClassVar[type[SourceConfig]]

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None:
        self.name = name
        self.config = config
        self.context = context

    def scope_key(self) -> str:
        return f"{self.kind}:{self.name}"

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        from syncd.webhooks import verify_generic

        secret = getattr(self.config, "webhook_secret", None)
        if secret is None:
            return False
        return verify_generic(secret.get_secret_value(), headers, body)

    async def aclose(self) -> None:
        return None
