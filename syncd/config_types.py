"""Field types shared by the config envelope and the connectors' Config models."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationInfo

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``30s``, ``5m``, ``1h``, ``1d`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h, 1d or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(
        f"expected a duration such as 30s, 5m, 1h, 1d or a number of seconds, got {value!r}"
    )


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str):
        return value
    base = (info.context or {}).get("base_dir") if info.context else None
    path = os.path.expanduser(value)
    if base and not os.path.isabs(path):
        path = os.path.normpath(os.path.join(base, path))
    return path


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as ``30s``, ``5m``, ``1h``, ``1d`` or a number."""

ConfigPath = Annotated[str, BeforeValidator(_resolve_path)]
"""A filesystem path; relative paths resolve against the config file's folder."""
