"""Shared plumbing for the connectors that speak REST through httpx (Vercel, Netlify,
Infisical): the injected client and clock, status-code classification. How long a server
asked to wait is read by :func:`syncd.retrying.server_wait`, not here."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from syncd.connector import ConnectorContext
from syncd.errors import (
    AuthError,
    ConflictError,
    ConnectorError,
    KeyRejected,
    PermanentError,
    RateLimited,
    RetryableError,
)
from syncd.retrying import server_wait, until_reset

TRANSPORT_KEY = "httpx_transport"
"""``ConnectorContext.extra[TRANSPORT_KEY]``: an httpx transport tests inject (respx,
MockTransport, a benchmark fake); unset in production."""

WALL_CLOCK_KEY = "wall_clock"
"""``ConnectorContext.extra[WALL_CLOCK_KEY]``: epoch seconds, against which a connector
reads a platform's reset times and HTTP dates (tests pass a fake clock); ``time.time``
when unset."""


def wall_clock(context: ConnectorContext) -> Callable[[], float]:
    clock: Callable[[], float] = context.extra.get(WALL_CLOCK_KEY, time.time)
    return clock


def make_client(
    context: ConnectorContext, base_url: str, *, headers: Mapping[str, str], timeout: float
) -> httpx.AsyncClient:
    transport = context.extra.get(TRANSPORT_KEY)
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        timeout=timeout,
        transport=transport,
        follow_redirects=False,
    )


def error_detail(resp: httpx.Response) -> str:
    """The platform's error code and message, never the request body."""
    try:
        data: Any = resp.json()
    except ValueError:
        return ""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            code = err.get("code") or ""
            msg = err.get("message") or ""
            return f"{code}: {msg}".strip(": ") if (code or msg) else ""
        if isinstance(err, str):
            msg = data.get("message") or data.get("error_description") or ""
            return f"{err}: {msg}".strip(": ") if msg and msg != err else err
        msg = data.get("message")
        if isinstance(msg, str):
            return msg
    return ""


def classify_response(
    resp: httpx.Response, what: str, clock: Callable[[], float] = time.time
) -> ConnectorError:
    """A non-2xx answer as the core's taxonomy."""
    detail = error_detail(resp)
    text = f"{what}: HTTP {resp.status_code}" + (f" ({detail})" if detail else "")
    status = resp.status_code
    wait = server_wait(status, resp.headers, clock)
    if status == 429:
        return RateLimited(text, retry_after=wait)
    if status in (401, 403):
        return AuthError(text)
    if status == 409:
        return ConflictError(text)
    if status in (400, 422):
        return KeyRejected(text)
    if status in (408, 425) or status >= 500:
        return RetryableError(text, retry_after=wait)
    return PermanentError(text)


class BearerClient:
    """The lazily created client of a REST destination authenticating with a bearer token
    (``config.api_url``, ``config.token``, ``config.timeout``)."""

    context: ConnectorContext
    config: Any
    _client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(
                self.context,
                self.config.api_url,
                headers={
                    "Authorization": f"Bearer {self.config.token.get_secret_value()}",
                    "Accept": "application/json",
                    "User-Agent": "syncd",
                },
                timeout=float(self.config.timeout),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def counted_request(
    client: httpx.AsyncClient,
    count: Callable[[str, str], None],
    platform: str,
    operation: str,
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    json: Any = None,
    quota: Callable[[float, float | None], None] | None = None,
) -> httpx.Response:
    """One platform call, reported through ``count`` (and, from its rate-limit headers,
    ``quota``); transport failures come out classified. A non-2xx answer is returned for
    the caller to classify with its own context."""
    try:
        resp = await client.request(method, path, params=params, json=json)
    except httpx.HTTPError as exc:
        count(operation, "error")
        raise classify_exception(exc, f"{platform} {operation}") from None
    count(operation, "ok" if resp.is_success else str(resp.status_code))
    if quota is not None:
        report_quota(resp.headers, quota)
    return resp


def report_quota(
    headers: Mapping[str, str],
    quota: Callable[[float, float | None], None],
    clock: Callable[[], float] = time.time,
) -> None:
    """Pass on ``X-RateLimit-Remaining`` / ``RateLimit-Remaining`` and its reset."""
    lower = {k.lower(): v for k, v in headers.items()}
    remaining = lower.get("x-ratelimit-remaining", lower.get("ratelimit-remaining"))
    if remaining is None:
        return
    try:
        left = float(remaining)
    except ValueError:
        return
    quota(left, until_reset(headers, clock))


def json_or_none(resp: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON."""
    try:
        return resp.json()
    except ValueError:
        return None


def classify_exception(exc: BaseException, what: str = "request") -> ConnectorError:
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return RetryableError(f"{what}: timed out")
    if isinstance(exc, httpx.TransportError):
        return RetryableError(f"{what}: {type(exc).__name__}")
    return PermanentError(f"{what}: {type(exc).__name__}")
