"""Webhook signature checks, constant-time, with a replay window for timestamped ones."""

from __future__ import annotations

import hashlib
import hmac
import json
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
    # bytes: compare_digest refuses non-ASCII str, which a forged header may hold
    return hmac.compare_digest(got.strip().lower().encode(), sign_generic(secret, body).encode())


def sign_infisical(secret: str, body: bytes, timestamp: int) -> str:
    """The header Infisical sends: ``t=<timestamp>;<hex HMAC-SHA256 of the body>``.

    Infisical signs the JSON body alone (which carries the same ``timestamp``), not the
    header's timestamp."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256)
    return f"t={timestamp};{digest.hexdigest()}"


def _body_timestamp(body: bytes) -> int | None:
    """The ``timestamp`` field of a JSON object body, None if there is none."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    ts = data.get("timestamp") if isinstance(data, dict) else None
    if isinstance(ts, int) and not isinstance(ts, bool):
        return ts
    return None


def verify_infisical(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float,
    clock: Callable[[], float] = time.time,
) -> bool:
    """``x-infisical-signature: t=<unix ms>;<hex HMAC-SHA256 of the body>``.

    The header's timestamp is not covered by the HMAC; the body's ``timestamp`` field is
    (Infisical puts the same value in both). When the body has one it must equal the
    header's, so a replayed body cannot pass with a fresh header timestamp."""
    got = _header(headers, "x-infisical-signature")
    if not got or not secret:
        return False
    try:
        t_part, sig = got.strip().split(";", 1)
        if not t_part.startswith("t="):
            return False
        ts = int(t_part[2:])
    except ValueError:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig.strip().lower().encode(), expected.encode()):
        return False
    signed_ts = _body_timestamp(body)
    if signed_ts is not None and signed_ts != ts:
        return False
    seconds = ts / 1000 if ts > 10**11 else ts  # Infisical sends milliseconds
    return abs(clock() - seconds) <= tolerance
