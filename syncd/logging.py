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
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._sorted: list[str] = []
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if isinstance(v, str) and len(v) >= MIN_REDACT_LEN}
        with self._lock:
            if new - self._values:
                self._values |= new
                # longest first, so a value containing another is replaced whole
                self._sorted = sorted(self._values, key=len, reverse=True)
                # a multi-line value may show up line by line in a traceback
                for v in new:
                    for line in v.splitlines():
                        if len(line) >= MIN_REDACT_LEN and line not in self._values:
                            self._values.add(line)
                self._sorted = sorted(self._values, key=len, reverse=True)

    def clear(self) -> None:
        """Forget every value (tests start each from nothing)."""
        with self._lock:
            self._values.clear()
            self._sorted = []

    def scrub(self, text: str) -> str:
        for v in self._sorted:
            if v in text:
                text = text.replace(v, REDACTED)
        return text

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
        if not self._sorted:
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
