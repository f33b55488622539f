"""Latency and rate limits in front of the platform fakes the test suite already has.

Nothing here changes a fake: each one is wrapped where it takes requests.

- :class:`TimeScale`: a clock running ``factor`` times faster than real time. A fake's
  latency, its token buckets and syncd's pacing and retry sleeps for that destination all
  run on it, so an hour of GitHub's content limit passes in a minute or two. syncd's own CPU
  time is *not* compressed: on a scaled platform it weighs ``factor`` times more, which
  makes the figures for scaled platforms conservative.
- :class:`Gate`: one platform's latency, token buckets (capacity = the published limit,
  refilled evenly over its window) and counters (calls, writes, throttled answers, when
  writes landed).
- :class:`GatedTransport`: an async httpx transport routing by host to the httpx fakes
  (Vercel, Netlify, Infisical), through their gates.
- :class:`BenchGitHub`, :class:`BenchGitLab`: the threaded HTTP fakes, gated in their
  request handlers.
- :class:`MotoServer`: moto's server app in this process behind a WSGI middleware that
  gates Parameter Store and Secrets Manager by ``X-Amz-Target``.
- :class:`HttpBridge`: serves a :class:`GatedTransport` over real HTTP, so a ``syncd run``
  process can reach the httpx fakes too.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# ---------------------------------------------------------------------------- time


class TimeScale:
    """Virtual seconds that pass ``factor`` times faster than real ones."""

    def __init__(self, factor: float = 1.0) -> None:
        if factor <= 0:
            raise ValueError("a time scale is positive")
        self.factor = float(factor)
        self._r0 = time.monotonic()

    def now(self) -> float:
        """Virtual seconds since this scale was made."""
        return (time.monotonic() - self._r0) * self.factor

    def virtual(self, real_seconds: float) -> float:
        return real_seconds * self.factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)

    def sleep_blocking(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.factor)

    def reset_epoch(self, wait: float) -> int:
        """An epoch-seconds reset header for a virtual ``wait``: a client computes
        ``reset - time.time()`` and gets the virtual wait back (rounded up)."""
        return math.ceil(time.time() + max(0.0, wait))


# ---------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Call:
    """One request as the gate sees it: ``operation`` is a method+path or an AWS action."""

    method: str
    operation: str
    write: bool


@dataclass(frozen=True)
class Limit:
    """A published rate limit: ``requests`` per ``window`` seconds for the calls it covers."""

    name: str
    requests: float
    window: float
    covers: Callable[[Call], bool] = field(default=lambda call: True)
    # the answer's style when this limit throttles (see Gate.styles)
    kind: str = "default"

    @property
    def per_minute(self) -> float:
        return self.requests * 60.0 / self.window


def writes_only(call: Call) -> bool:
    return call.write


class TokenBucket:
    """Capacity ``limit.requests``, refilled at ``requests / window`` per virtual second."""

    def __init__(self, limit: Limit, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.clock = clock
        self.capacity = float(limit.requests)
        self.rate = limit.requests / limit.window
        self.tokens = self.capacity
        self.last = clock()

    def take(self) -> float | None:
        """None if a token was taken, else the virtual seconds until one is available."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


@dataclass
class Throttle:
    """Why a call was refused: the limit, and the virtual wait until it would pass."""

    limit: Limit
    wait: float


@dataclass
class GateStats:
    calls: int = 0
    writes: int = 0
    throttled: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    covered: Counter[str] = field(default_factory=Counter)  # limit name -> admitted calls

    def minus(self, other: GateStats) -> GateStats:
        return GateStats(
            self.calls - other.calls,
            self.writes - other.writes,
            self.throttled - other.throttled,
            self.by_operation - other.by_operation,
            self.covered - other.covered,
        )

    def copy(self) -> GateStats:
        return GateStats(
            self.calls,
            self.writes,
            self.throttled,
            Counter(self.by_operation),
            Counter(self.covered),
        )


class Gate:
    """One platform's latency, limits and counters. Thread-safe."""

    def __init__(
        self,
        platform: str,
        *,
        latency: float,
        limits: Sequence[Limit] = (),
        scale: TimeScale | None = None,
    ) -> None:
        self.platform = platform
        self.latency = latency
        self.scale = scale or TimeScale(1.0)
        self.limits = list(limits)
        self.buckets = [TokenBucket(lim, self.scale.now) for lim in self.limits]
        self.stats = GateStats()
        self.landed: list[float] = []  # time.monotonic() of every write that succeeded
        self.enabled = True
        self._lock = threading.Lock()

    def admit(self, call: Call) -> Throttle | None:
        """Count the call and take a token from every bucket covering it."""
        with self._lock:
            self.stats.calls += 1
            self.stats.by_operation[call.operation] += 1
            if call.write:
                self.stats.writes += 1
            if not self.enabled:
                return None
            worst: Throttle | None = None
            covering = [b for b in self.buckets if b.limit.covers(call)]
            for b in covering:
                # peek first: a refused call must not spend tokens of the other buckets
                now = b.clock()
                tokens = min(b.capacity, b.tokens + (now - b.last) * b.rate)
                if tokens < 1.0:
                    wait = (1.0 - tokens) / b.rate
                    if worst is None or wait > worst.wait:
                        worst = Throttle(b.limit, wait)
            if worst is not None:
                self.stats.throttled += 1
                return worst
            for b in covering:
                b.take()
                self.stats.covered[b.limit.name] += 1
            return None

    def count_throttled(self) -> None:
        """A throttling answer the fake itself gave (GitHub's own content limit)."""
        with self._lock:
            self.stats.throttled += 1

    def wrote(self) -> None:
        with self._lock:
            self.landed.append(time.monotonic())

    def snapshot(self) -> GateStats:
        with self._lock:
            return self.stats.copy()

    def landed_after(self, t: float) -> float | None:
        """The first successful write at or after monotonic time ``t``."""
        with self._lock:
            later = [x for x in self.landed if x >= t]
        return min(later) if later else None


# ---------------------------------------------------------------------------- answers


def throttled_httpx(style: str, throttle: Throttle, scale: TimeScale) -> httpx.Response:
    """A 429 as the platform sends it."""
    wait = throttle.wait
    limit = str(int(throttle.limit.requests))
    if style == "vercel":
        return httpx.Response(
            429,
            json={"error": {"code": "rate_limited", "message": "Too many requests"}},
            headers={
                "X-RateLimit-Limit": limit,
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(scale.reset_epoch(wait)),
            },
        )
    if style == "netlify":
        return httpx.Response(
            429,
            json={"code": 429, "message": "Rate limit exceeded"},
            headers={
                "X-RateLimit-Limit": limit,
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(scale.reset_epoch(wait)),
            },
        )
    return httpx.Response(429, headers={"Retry-After": str(math.ceil(wait))})


# ---------------------------------------------------------------------------- httpx fakes


@dataclass
class Route:
    gate: Gate
    transport: httpx.AsyncBaseTransport
    style: str


class GatedTransport(httpx.AsyncBaseTransport):
    """Routes by ``host[:port]`` to an httpx fake, adding latency and limits on the way."""

    def __init__(self, routes: Mapping[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})

    def add(self, netloc: str, route: Route) -> None:
        self.routes[netloc] = route

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        netloc = request.url.netloc.decode("ascii")
        route = self.routes.get(netloc)
        if route is None:
            return httpx.Response(502, text=f"no benchmark fake serves {netloc}")
        await request.aread()
        gate = route.gate
        await gate.scale.sleep(gate.latency)
        call = Call(
            request.method, f"{request.method} {request.url.path}", request.method in WRITE_METHODS
        )
        refused = gate.admit(call)
        if refused is not None:
            return throttled_httpx(route.style, refused, gate.scale)
        response = await route.transport.handle_async_request(request)
        if call.write and response.status_code < 300:
            gate.wrote()
        return response


# ---------------------------------------------------------------------------- threaded fakes


def _no_delay(server: Any) -> None:
    """TCP_NODELAY on a fake's connections. ``http.server`` sends headers and body in two
    segments; with Nagle's algorithm and delayed ACKs each answer would stall about 40 ms on
    loopback, an artefact of the test server rather than latency of the platform (which the
    gate adds explicitly). The handler class is the fake's own, made in its ``start``."""
    if server is not None:
        server.RequestHandlerClass.disable_nagle_algorithm = True


def github_fake_class() -> type[Any]:
    """``BenchGitHub``, built on first use so that importing this module needs no test fakes."""
    from tests.fakes.github_server import SECONDARY, Answer, FakeGitHub

    class BenchGitHub(FakeGitHub):
        """The GitHub fake behind a gate; its own 80-a-minute content limit runs on the
        gate's clock."""

        def __init__(self, gate: Gate, **kw: Any) -> None:
            super().__init__(clock=gate.scale.now, **kw)
            self.gate = gate

        def start(self) -> Any:
            started = super().start()
            _no_delay(self._server)
            return started

        def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Any:
            gate = self.gate
            gate.scale.sleep_blocking(gate.latency)
            path = target.split("?", 1)[0]
            call = Call(method, f"{method} {path}", method in WRITE_METHODS)
            refused = gate.admit(call)
            if refused is not None:
                if refused.limit.kind == "primary":
                    return Answer(
                        403,
                        {"message": "API rate limit exceeded for user ID 1."},
                        {
                            "x-ratelimit-remaining": "0",
                            "x-ratelimit-reset": str(gate.scale.reset_epoch(refused.wait)),
                        },
                    )
                return Answer(
                    403, {"message": SECONDARY}, {"retry-after": str(math.ceil(refused.wait))}
                )
            answer = super().handle(method, target, headers, raw)
            body = answer.body if isinstance(answer.body, dict) else {}
            if answer.status in (403, 429) and "rate limit" in str(body.get("message", "")).lower():
                gate.count_throttled()
            if call.write and answer.status < 300:
                gate.wrote()
            return answer

    return BenchGitHub


def gitlab_fake_class() -> type[Any]:
    from tests.fakes.gitlab_server import ApiError, FakeGitLab

    class BenchGitLab(FakeGitLab):
        """The GitLab fake behind a gate: 429 with ``Retry-After`` as GitLab.com answers."""

        def __init__(self, gate: Gate, **kw: Any) -> None:
            super().__init__(**kw)
            self.gate = gate

        def __enter__(self) -> Any:
            entered = super().__enter__()
            _no_delay(self._server)
            return entered

        def _route(
            self, method: str, path: str, params: dict[str, Any], h: BaseHTTPRequestHandler
        ) -> tuple[int, Any, dict[str, str]]:
            gate = self.gate
            gate.scale.sleep_blocking(gate.latency)
            call = Call(method, f"{method} {path}", method in WRITE_METHODS)
            refused = gate.admit(call)
            if refused is not None:
                raise ApiError(
                    429,
                    "Retry later",
                    {
                        "Retry-After": str(math.ceil(refused.wait)),
                        "RateLimit-Limit": str(int(refused.limit.requests)),
                        "RateLimit-Remaining": "0",
                        "RateLimit-Reset": str(gate.scale.reset_epoch(refused.wait)),
                    },
                )
            out: tuple[int, Any, dict[str, str]] = super()._route(method, path, params, h)
            if call.write and out[0] < 300:
                gate.wrote()
            return out

    return BenchGitLab


# ---------------------------------------------------------------------------- moto

# AWS actions that change something; every other action is a read
_AWS_WRITE_PREFIXES = (
    "Put",
    "Create",
    "Delete",
    "Update",
    "Add",
    "Remove",
    "Tag",
    "Untag",
    "Restore",
)


class GatedWsgi:
    """WSGI middleware in front of moto: gates by the service of ``X-Amz-Target``."""

    def __init__(self, app: Any, gates: Mapping[str, Gate]) -> None:
        self.app = app
        self.gates = dict(gates)  # target prefix ("AmazonSSM", "secretsmanager") -> gate
        # moto's backends are not thread-safe (a concurrent CreateSecret can break a
        # ListSecrets mid-iteration): one request at a time per service, after the latency
        self.locks = {name: threading.Lock() for name in self.gates}

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        service, _, action = target.partition(".")
        gate = self.gates.get(service)
        if gate is None:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        gate.scale.sleep_blocking(gate.latency)
        call = Call("POST", action, action.startswith(_AWS_WRITE_PREFIXES))
        refused = gate.admit(call)
        if refused is not None:
            body = json.dumps(
                {"__type": "ThrottlingException", "message": "Rate exceeded"}
            ).encode()
            start_response(
                "400 Bad Request",
                [
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("x-amzn-ErrorType", "ThrottlingException"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        status: list[int] = []

        def capture(st: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(int(st.split(" ", 1)[0]))
            return (
                start_response(st, headers, exc_info) if exc_info else start_response(st, headers)
            )

        with self.locks[service]:
            out: Iterable[bytes] = self.app(environ, capture)
            body_parts = list(out)
        if call.write and status and status[0] < 300:
            gate.wrote()
        return body_parts


class MotoServer:
    """moto's server app on 127.0.0.1 in a thread, behind :class:`GatedWsgi`."""

    def __init__(self, gates: Mapping[str, Gate]) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Handler(WSGIRequestHandler):
            disable_nagle_algorithm = True

            def log(self, type: str, message: str, *args: Any) -> None:
                return None

        app = GatedWsgi(DomainDispatcherApplication(create_backend_app), gates)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------- the HTTP bridge


class HttpBridge:
    """Serves a :class:`GatedTransport` on 127.0.0.1: a request for ``/<host>/<path>``
    goes to the fake routed as ``<host>``. A loop in its own thread runs the transport, so
    the (not thread-safe) fakes only ever run on that thread."""

    def __init__(self, transport: GatedTransport) -> None:
        self.transport = transport
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._loop_thread.start()
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                host, _, rest = self.path.lstrip("/").partition("/")
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                request = httpx.Request(
                    self.command, f"http://{host}/{rest}", headers=headers, content=raw
                )
                future = asyncio.run_coroutine_threadsafe(
                    bridge.transport.handle_async_request(request), bridge.loop
                )
                response = future.result()
                body = response.read()
                self.send_response(response.status_code)
                for k, v in response.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, host: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{host}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(timeout=5)
