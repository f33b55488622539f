"""The HTTP surface of ``syncd run``: /healthz, /readyz, /metrics, /status, /status.json
and the webhooks.

Webhook requests are answered from key names, source names and status codes only: the
body is read (up to ``server.max_body_bytes``), verified and dropped; nothing of it is
logged or echoed.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from syncd.connector import BaseSource, Source
from syncd.logging import get_logger, redactor
from syncd.metrics import Metrics
from syncd.webhooks import verify_generic, verify_infisical

if TYPE_CHECKING:
    from syncd.status import Status

DEFAULT_INFISICAL_TOLERANCE = 300.0


class ReadinessLike(Protocol):
    ready: bool
    checks: dict[str, str]


class Backend(Protocol):
    """What the server needs from the daemon (tests pass a fake)."""

    metrics: Metrics

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def draining(self) -> bool: ...

    def webhook_source(self, name: str) -> Source | None: ...

    def trigger_source(self, name: str, reason: str = "webhook") -> list[str]: ...

    async def readiness(self) -> ReadinessLike: ...

    @property
    def status_token(self) -> str | None: ...

    def status(self) -> Status: ...


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (without reading it all) one over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _secret(source: Source) -> str | None:
    secret = getattr(source.config, "webhook_secret", None)
    if secret is None:
        return None
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    return value or None


def verify(kind: str, source: Source, headers: Mapping[str, str], body: bytes) -> bool:
    """``generic``: ``X-Syncd-Signature: sha256=<hex>`` with the source's webhook_secret.
    ``infisical``: the source's own check of ``x-infisical-signature`` (timestamped)."""
    secret = _secret(source)
    if secret is None:
        return False
    if kind == "generic":
        return verify_generic(secret, headers, body)
    own_check: object = getattr(type(source), "verify_webhook", None)
    if own_check is None or own_check is BaseSource.verify_webhook:
        # a source without its own Infisical check: the shared one, with its tolerance
        tolerance = getattr(source.config, "webhook_tolerance", None)
        return verify_infisical(
            secret,
            headers,
            body,
            float(tolerance) if tolerance is not None else DEFAULT_INFISICAL_TOLERANCE,
        )
    return bool(source.verify_webhook(headers, body))


def authorized(request: Request, token: str | None) -> bool:
    """``Authorization: Bearer <token>``, or HTTP Basic with the token as the password;
    compared in constant time."""
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def create_app(backend: Backend) -> Starlette:
    log = get_logger()

    def refuse_status() -> Response:
        return JSONResponse(
            {"error": "this page needs the status token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="syncd status", charset="UTF-8"'},
        )

    async def status_page(request: Request) -> Response:
        if not authorized(request, backend.status_token):
            return refuse_status()
        from syncd.status import render_html

        html = await asyncio.to_thread(lambda: render_html(backend.status()))
        return HTMLResponse(
            redactor.scrub(html),
            headers={
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                "script-src 'unsafe-inline'; connect-src 'self'",
            },
        )

    async def status_json(request: Request) -> Response:
        if not authorized(request, backend.status_token):
            return refuse_status()
        data = await asyncio.to_thread(lambda: backend.status().to_json())
        return Response(
            redactor.scrub(json.dumps(data)),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        r = await backend.readiness()
        return JSONResponse(
            {"ready": r.ready, "checks": r.checks}, status_code=200 if r.ready else 503
        )

    async def metrics(request: Request) -> Response:
        return Response(backend.metrics.render(), media_type=backend.metrics.content_type)

    async def webhook(request: Request, kind: str) -> Response:
        name = str(request.path_params["source"])[:200]
        counter = backend.metrics.webhooks

        def refuse(status: int, result: str, message: str, **extra: Any) -> Response:
            counter.labels(name if result != "unknown" else "", kind, result).inc()
            log.warning("webhook refused", source=name, kind=kind, status=status, reason=result)
            return JSONResponse({"error": message}, status_code=status, **extra)

        source = backend.webhook_source(name)
        if (
            source is None
            or _secret(source) is None
            or (kind == "infisical" and getattr(source, "kind", None) != "infisical")
        ):
            return refuse(404, "unknown", f"no {kind} webhook is configured for this source")
        if backend.draining:
            return refuse(503, "draining", "syncd is shutting down", headers={"Retry-After": "30"})
        try:
            body = await read_body(request, backend.max_body_bytes)
        except BodyTooLarge:
            return refuse(413, "too-large", f"the body is over {backend.max_body_bytes} bytes")
        if not verify(kind, source, request.headers, body):
            return refuse(401, "unauthorized", "missing, invalid or stale signature")
        syncs = backend.trigger_source(name, "webhook")
        counter.labels(name, kind, "accepted").inc()
        log.info("webhook accepted", source=name, kind=kind, syncs=syncs)
        return JSONResponse({"accepted": True, "syncs": syncs}, status_code=202)

    async def infisical(request: Request) -> Response:
        return await webhook(request, "infisical")

    async def generic(request: Request) -> Response:
        return await webhook(request, "generic")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET", "HEAD"]),
            Route("/status", status_page, methods=["GET", "HEAD"]),
            Route("/status.json", status_json, methods=["GET", "HEAD"]),
            Route("/webhooks/infisical/{source}", infisical, methods=["POST"]),
            Route("/webhooks/generic/{source}", generic, methods=["POST"]),
        ]
    )
