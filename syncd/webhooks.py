"""Webhook signature checks, constant-time, with a replay window for timestamped ones."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lname = name.lower()
    for k, v in headers.items():
        if k.lower() == lname:
            return v
    return None


def sign_generic(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_generic(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """``X-Syncd-Signature: sha256=<hex HMAC-SHA256 of the body>``."""
    got = _header(headers, "x-syncd-signature")
    if not got or not secret:
        return False
    return hmac.compare_digest(got.strip().lower(), sign_generic(secret, body))


def sign_infisical(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp};{digest.hexdigest()}"


def verify_infisical(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float,
    clock: Callable[[], float] = time.time,
) -> bool:
    """``x-infisical-signature: t=<unix ms or s>;<hex HMAC-SHA256 of "<t>.<body>">``."""
    got = _header(headers, "x-infisical-signature")
    if not got or not secret:
        return False
    try:
        t_part, sig = got.strip().split(";", 1)
        if not t_part.startswith("t="):
            return False
        ts_raw = t_part[2:]
        ts = int(ts_raw)
    except ValueError:
        return False
    seconds = ts / 1000 if ts > 10**11 else ts  # Infisical sends milliseconds
    if abs(clock() - seconds) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{ts_raw}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(sig.strip().lower(), expected)
