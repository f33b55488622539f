"""structlog setup and the redaction processor that keeps values out of every log line."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"
MIN_REDACT_LEN = 4
# fields syncd fills with its own vocabulary, never with values
STRUCTURAL = frozenset({"level", "timestamp", "event", "action", "outcome", "attempt", "logger"})


class Redactor:
    """Replaces every known secret value or credential inside a log event by [REDACTED].

    Values shorter than MIN_REDACT_LEN characters are not searched for: replacing "1" or
    "on" in every line would make logs unreadable without protecting anything.

    A daemon may know 100,000 values: each is indexed by the hash of its first
    ``INDEX_PREFIX`` characters (all of it when shorter), and held as its own hash and
    length, not as the value. A scan costs a few dictionary lookups per character of the
    text, whatever the number of values, and the index holds no secret. At each position the
    longest value found there is replaced, left to right. Two texts with one hash are
    astronomically rare; one would be redacted, never shown.
    """

    INDEX_PREFIX = 16
    SEEN_MAX = 4096
    _LEN_BITS = 24  # a packed entry: hash(value) << 24 | len(value)
    _LEN_MASK = (1 << _LEN_BITS) - 1

    def __init__(self) -> None:
        # hash(prefix) -> packed entry, or entries longest first (most prefixes start one
        # value only: a plain int saves a tuple per value)
        self._index: dict[int, int | tuple[int, ...]] = {}
        self._lengths: tuple[int, ...] = ()  # the prefix lengths in the index, longest first
        self._seen: dict[str, str] = {}  # texts already scrubbed against these values
        self._lock = threading.Lock()

    @classmethod
    def _key(cls, v: str) -> int:
        return hash(v[: cls.INDEX_PREFIX] if len(v) > cls.INDEX_PREFIX else v)

    @classmethod
    def _entry(cls, v: str) -> int:
        return (hash(v) << cls._LEN_BITS) | min(len(v), cls._LEN_MASK)

    def _knows(self, v: str) -> bool:
        held = self._index.get(self._key(v))
        entry = self._entry(v)
        return held is not None and (held == entry if isinstance(held, int) else entry in held)

    def add(self, values: Iterable[str]) -> None:
        new: set[str] = set()
        for v in values:
            if not isinstance(v, str) or len(v) < MIN_REDACT_LEN or len(v) > self._LEN_MASK:
                continue
            new.add(v)
            # a multi-line value may show up line by line in a traceback
            if "\n" in v or "\r" in v:
                new.update(line for line in v.splitlines() if len(line) >= MIN_REDACT_LEN)
        with self._lock:
            new = {v for v in new if not self._knows(v)}
            if not new:
                return  # every cycle re-reads the same values: nothing to rebuild
            index = dict(self._index)
            lengths = set(self._lengths)
            for v in new:
                key, entry = self._key(v), self._entry(v)
                held = index.get(key)
                if held is None:
                    index[key] = entry
                    lengths.add(min(len(v), self.INDEX_PREFIX))
                    continue
                bucket = (held,) if isinstance(held, int) else held
                index[key] = tuple(
                    sorted((*bucket, entry), key=lambda e: e & self._LEN_MASK, reverse=True)
                )
            # readers use the previous index until this one is complete
            self._index, self._lengths = index, tuple(sorted(lengths, reverse=True))
            self._seen = {}

    def clear(self) -> None:
        """Forget every value (tests start each from nothing)."""
        with self._lock:
            self._index, self._lengths, self._seen = {}, (), {}

    def scrub(self, text: str) -> str:
        index, lengths, seen = self._index, self._lengths, self._seen
        if not index or len(text) < MIN_REDACT_LEN:
            return text
        # names and reasons repeat on every line: each is scanned once per set of values
        hit = seen.get(text)
        if hit is None:
            hit = self._scan(text, index, lengths)
            if len(seen) >= self.SEEN_MAX:
                seen.clear()
            seen[text] = hit
        return hit

    @classmethod
    def _scan(
        cls, text: str, index: dict[int, int | tuple[int, ...]], lengths: tuple[int, ...]
    ) -> str:
        out: list[str] = []
        i = done = 0
        end = len(text)
        bits, mask = cls._LEN_BITS, cls._LEN_MASK
        while i <= end - MIN_REDACT_LEN:
            found = 0
            for k in lengths:
                if i + k > end:
                    continue
                held = index.get(hash(text[i : i + k]))
                if held is None:
                    continue
                for entry in (held,) if isinstance(held, int) else held:
                    n = entry & mask
                    if i + n <= end and hash(text[i : i + n]) == entry >> bits:
                        found = n
                        break
                if found:
                    break
            if found:
                out.append(text[done:i])
                out.append(REDACTED)
                i = done = i + found
            else:
                i += 1
        if not out:
            return text
        out.append(text[done:])
        return "".join(out)

    def _walk(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {k: self._walk(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(self._walk(v) for v in obj)
        if isinstance(obj, BaseException):
            return self.scrub(f"{type(obj).__name__}: {obj}")
        return obj

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self._index:
            return event
        for k in list(event):
            if k not in STRUCTURAL:
                event[k] = self._walk(event[k])
        return event


redactor = Redactor()


def _format_exc_then_scrub(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if "exception" in event and isinstance(event["exception"], str):
        event["exception"] = redactor.scrub(event["exception"])
    return event


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time of writing (it may be swapped)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or _CurrentStderr()
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redactor,
            structlog.processors.format_exc_info,
            _format_exc_then_scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("syncd").bind(**bound)
