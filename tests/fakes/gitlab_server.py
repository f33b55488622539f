"""A small stateful fake of GitLab's REST API v4 for project and group CI/CD variables,
served on 127.0.0.1 in a thread so the real python-gitlab client talks to it over HTTP.

It enforces the documented rules syncd relies on:

- keys: letters, digits and ``_`` only, at most 255 characters;
- a key may exist once per ``environment_scope``; GET/PUT/DELETE of a key held under
  several scopes without ``filter[environment_scope]`` answers 409;
- masking: a masked value is at least 8 characters with no whitespace; an expanded
  (``raw: false``) masked value only uses ``A-Z a-z 0-9 _ + = / @ : . ~ -``;
- ``masked_and_hidden`` only at creation; a hidden variable's value is never returned, its
  ``masked`` flag cannot change;
- descriptions of at most 255 characters; a per-container variable count limit;
- offset pagination with ``page``/``per_page`` (default 20, at most 100) and the
  ``X-Page``/``X-Next-Page``/``X-Total-Pages``/``Link`` headers;
- ``PRIVATE-TOKEN`` authentication (401) and the role needed (403: Maintainer for a
  project, Owner for a group);
- throttling: 429 with ``Retry-After`` and ``RateLimit-*`` headers, as GitLab sends them.

Tests can hold every write at a gate (a platform that is slow right now), to make two
processes overlap on one pair for certain.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

KEY_RE = re.compile(r"[A-Za-z0-9_]+")
MASK_EXPANDED_RE = re.compile(r"[A-Za-z0-9_+=/@:.~-]{8,}")
MASK_RAW_RE = re.compile(r"[^ \t\r\n\f\v]{8,}")
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100


@dataclass
class Variable:
    key: str
    value: str
    environment_scope: str = "*"
    variable_type: str = "env_var"
    protected: bool = False
    masked: bool = False
    hidden: bool = False
    raw: bool = False
    description: str | None = None

    def entity(self) -> dict[str, Any]:
        return {
            "variable_type": self.variable_type,
            "key": self.key,
            "value": None if self.hidden else self.value,
            "hidden": self.hidden,
            "protected": self.protected,
            "masked": self.masked,
            "raw": self.raw,
            "environment_scope": self.environment_scope,
            "description": self.description,
        }


@dataclass
class Container:
    """A project or a group."""

    kind: str  # "projects" | "groups"
    id: int
    path: str
    role: str = "owner"  # developer | maintainer | owner
    max_variables: int = 8000
    variables: list[Variable] = field(default_factory=list)

    def allowed(self) -> bool:
        need = {"projects": ("maintainer", "owner"), "groups": ("owner",)}[self.kind]
        return self.role in need


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    status: int


class ApiError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "t")


class FakeGitLab:
    """The platform. Start it with ``with FakeGitLab() as gl:``; ``gl.url`` is the base URL."""

    def __init__(self, token: str = "glpat-fake-0123456789abcdef") -> None:
        self.token = token
        self.containers: dict[tuple[str, str], Container] = {}
        self.requests: list[Request] = []
        self.throttle_next = 0
        self.fail_next: list[int] = []  # statuses the next requests answer with (502, 503...)
        self.retry_after: str | None = "2"
        self.reset_in: float = 3.0
        # a windowed quota on demand (GitLab.com's 2,000 calls a minute, scaled down): every
        # answer carries RateLimit-Limit/-Remaining/-Reset; a call past it is refused with 429
        self.quota: tuple[int, float] | None = None  # (calls, window seconds)
        self.clock: Callable[[], float] = time.time
        self.window_start: float | None = None
        self.window_calls = 0
        self.throttled = 0
        # a slow platform on demand: writes wait for ``write_gate`` (when set) before they
        # are handled; ``write_seen`` is set as the first one arrives
        self.write_gate: threading.Event | None = None
        self.write_seen = threading.Event()
        self.writes_arrived = 0
        self.lock = threading.RLock()
        self._next_id = 1
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- setup

    def add(self, kind: str, path: str, **kw: Any) -> Container:
        with self.lock:
            c = Container(kind, self._next_id, path, **kw)
            self._next_id += 1
            self.containers[(kind, path)] = c
            self.containers[(kind, str(c.id))] = c
            return c

    def project(self, path: str = "acme/api", **kw: Any) -> Container:
        return self.add("projects", path, **kw)

    def group(self, path: str = "acme", **kw: Any) -> Container:
        return self.add("groups", path, **kw)

    def put(self, container: Container, key: str, value: str, **attrs: Any) -> Variable:
        """Create a variable out of band, as a person in the UI would (no rule checks)."""
        with self.lock:
            var = Variable(key, value, **attrs)
            container.variables.append(var)
            return var

    def find(self, container: Container, key: str, scope: str = "*") -> Variable | None:
        with self.lock:
            for v in container.variables:
                if v.key == key and v.environment_scope == scope:
                    return v
            return None

    def stored(self, container: Container, scope: str = "*") -> dict[str, str]:
        """key → plaintext of every variable under ``scope`` (hidden ones included)."""
        with self.lock:
            return {v.key: v.value for v in container.variables if v.environment_scope == scope}

    def calls(self, method: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if method is None or r.method == method]

    # ----------------------------------------------------------------- serving

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeGitLab:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _serve(self, method: str) -> None:
                fake._handle(self, method)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ----------------------------------------------------------------- HTTP

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw_body = h.rfile.read(length) if length else b""
        body: dict[str, Any] = {}
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip()
        if raw_body and ctype == "application/json":
            body = json.loads(raw_body)
        elif raw_body:
            body = {k: v[-1] for k, v in parse_qs(raw_body.decode()).items()}
        params = {**query, **body}
        status = 500
        headers: dict[str, str] = {}
        payload: Any = None
        try:
            status, payload, headers = self._route(method, split.path, params, h)
        except ApiError as err:
            status, payload, headers = err.status, err.body, err.headers
        headers = {**getattr(h, "quota_headers", {}), **headers}
        with self.lock:
            self.requests.append(Request(method, split.path, query, status))
        data = b""
        if payload is not None:
            if isinstance(payload, str):
                data = payload.encode()
                headers.setdefault("Content-Type", "text/plain")
            else:
                data = json.dumps(payload).encode()
                headers.setdefault("Content-Type", "application/json")
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if data:
            h.wfile.write(data)

    def _route(
        self, method: str, path: str, params: dict[str, Any], h: BaseHTTPRequestHandler
    ) -> tuple[int, Any, dict[str, str]]:
        token = h.headers.get("PRIVATE-TOKEN")
        auth = h.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
        if token != self.token:
            raise ApiError(401, {"message": "401 Unauthorized"})
        if method != "GET":
            with self.lock:
                self.writes_arrived += 1
            self.write_seen.set()
            gate = self.write_gate
            if gate is not None and not gate.wait(timeout=60):
                raise ApiError(503, "<html>gate never opened</html>")
        with self.lock:
            if self.throttle_next > 0:
                self.throttle_next -= 1
                raise ApiError(429, "Retry later", self._throttle_headers())
            quota = self._take_quota()
            h.quota_headers = dict(quota or {})  # type: ignore[attr-defined]
            if quota is not None and int(quota["RateLimit-Remaining"]) < 0:
                self.throttled += 1
                quota["RateLimit-Remaining"] = "0"
                raise ApiError(429, "Retry later", {**quota, "Retry-After": "1"})
            if self.fail_next:
                raise ApiError(self.fail_next.pop(0), "<html>Bad Gateway</html>")
        parts = [unquote(p) for p in path.split("/")]
        # ["", "api", "v4", kind, id, "variables", key?]
        if len(parts) < 6 or parts[1:3] != ["api", "v4"] or parts[3] not in ("projects", "groups"):
            raise ApiError(404, {"error": "404 Not Found"})
        kind, ident = parts[3], parts[4]
        with self.lock:
            container = self.containers.get((kind, ident))
            if container is None:
                noun = "Project" if kind == "projects" else "Group"
                raise ApiError(404, {"message": f"404 {noun} Not Found"})
            if not container.allowed():
                raise ApiError(403, {"message": "403 Forbidden"})
            if parts[5] != "variables" or len(parts) > 7:
                raise ApiError(404, {"error": "404 Not Found"})
            key = parts[6] if len(parts) == 7 else None
            if key is None and method == "GET":
                return self._list(container, params)
            if key is None and method == "POST":
                return 201, self._create(container, params).entity(), {}
            if key is not None and method == "GET":
                return 200, self._one(container, key, params).entity(), {}
            if key is not None and method == "PUT":
                return 200, self._update(container, key, params).entity(), {}
            if key is not None and method == "DELETE":
                container.variables.remove(self._one(container, key, params))
                return 204, None, {}
        raise ApiError(405, {"error": "405 Not Allowed"})

    def _take_quota(self) -> dict[str, str] | None:
        """Count a call against the window; its RateLimit headers (Remaining < 0: refused)."""
        if self.quota is None:
            return None
        limit, window = self.quota
        now = self.clock()
        if self.window_start is None or now >= self.window_start + window:
            self.window_start, self.window_calls = now, 0
        self.window_calls += 1
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(limit - self.window_calls),
            "RateLimit-Reset": str(math.ceil(self.window_start + window)),
        }

    def _throttle_headers(self) -> dict[str, str]:
        reset = time.time() + self.reset_in
        headers = {
            "RateLimit-Name": "throttle_authenticated_api",
            "RateLimit-Limit": "60",
            "RateLimit-Observed": "61",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(int(reset)),
            "RateLimit-ResetTime": email.utils.formatdate(reset, usegmt=True),
        }
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return headers

    # ----------------------------------------------------------------- variables

    def _list(self, c: Container, params: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        try:
            page = max(1, int(params.get("page", 1)))
            per_page = int(params.get("per_page", DEFAULT_PER_PAGE))
        except ValueError:
            raise ApiError(400, {"error": "page is invalid"}) from None
        per_page = min(MAX_PER_PAGE, max(1, per_page))
        total = len(c.variables)
        pages = max(1, -(-total // per_page))
        items = c.variables[(page - 1) * per_page : page * per_page]
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(total),
            "X-Total-Pages": str(pages),
            "X-Next-Page": str(page + 1) if page < pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }
        base = f"{self.url}/api/v4/{c.kind}/{c.id}/variables"
        links = []
        if page < pages:
            links.append(
                f'<{base}?{urlencode({"page": page + 1, "per_page": per_page})}>; rel="next"'
            )
        links.append(f'<{base}?{urlencode({"page": 1, "per_page": per_page})}>; rel="first"')
        headers["Link"] = ", ".join(links)
        return 200, [v.entity() for v in items], headers

    def _one(self, c: Container, key: str, params: dict[str, Any]) -> Variable:
        scope = params.get("filter[environment_scope]")
        found = [
            v
            for v in c.variables
            if v.key == key and (scope is None or v.environment_scope == scope)
        ]
        if not found:
            raise ApiError(404, {"message": "404 Variable Not Found"})
        if len(found) > 1:
            raise ApiError(
                409,
                {
                    "message": "409 Conflict: There are multiple variables with provided "
                    "parameters. Please use 'filter[environment_scope]'"
                },
            )
        return found[0]

    @staticmethod
    def _check(var: Variable, errors: dict[str, list[str]]) -> None:
        if not var.key:
            errors.setdefault("key", []).append("can't be blank")
        if len(var.key) > 255:
            errors.setdefault("key", []).append("is too long (maximum is 255 characters)")
        if var.key and not KEY_RE.fullmatch(var.key):
            errors.setdefault("key", []).append("can contain only letters, digits and '_'.")
        if var.masked:
            rule = MASK_RAW_RE if var.raw else MASK_EXPANDED_RE
            if not rule.fullmatch(var.value):
                errors.setdefault("value", []).append("is invalid")
        if var.hidden and not var.masked:
            errors.setdefault("masked", []).append("should be true when variable is hidden")
        if var.description is not None and len(var.description) > 255:
            errors.setdefault("description", []).append("is too long (maximum is 255 characters)")
        if var.variable_type not in ("env_var", "file"):
            raise ApiError(400, {"error": "variable_type does not have a valid value"})

    def _create(self, c: Container, p: dict[str, Any]) -> Variable:
        if "key" not in p:
            raise ApiError(400, {"error": "key is missing"})
        if "value" not in p:
            raise ApiError(400, {"error": "value is missing"})
        hidden = _bool(p.get("masked_and_hidden", False))
        var = Variable(
            key=str(p["key"]),
            value=str(p["value"]),
            environment_scope=str(p.get("environment_scope") or "*"),
            variable_type=str(p.get("variable_type", "env_var")),
            protected=_bool(p.get("protected", False)),
            masked=hidden or _bool(p.get("masked", False)),
            hidden=hidden,
            raw=_bool(p.get("raw", False)),
            description=p.get("description"),
        )
        errors: dict[str, list[str]] = {}
        self._check(var, errors)
        if any(
            v.key == var.key and v.environment_scope == var.environment_scope for v in c.variables
        ):
            errors.setdefault("key", []).append(f"({var.key}) has already been taken")
        if len(c.variables) >= c.max_variables:
            noun = "project" if c.kind == "projects" else "group"
            errors.setdefault("base", []).append(
                f"Maximum number of {noun} ci variables ({c.max_variables}) exceeded"
            )
        if errors:
            raise ApiError(400, {"message": errors})
        c.variables.append(var)
        return var

    def _update(self, c: Container, key: str, p: dict[str, Any]) -> Variable:
        var = self._one(c, key, p)
        new = Variable(**var.__dict__)
        if "value" in p:
            new.value = str(p["value"])
        for name in ("protected", "raw"):
            if name in p:
                setattr(new, name, _bool(p[name]))
        if "masked" in p:
            new.masked = _bool(p["masked"])
        if "variable_type" in p:
            new.variable_type = str(p["variable_type"])
        if "description" in p:
            new.description = p["description"]
        if "environment_scope" in p:
            new.environment_scope = str(p["environment_scope"])
        errors: dict[str, list[str]] = {}
        if var.hidden and new.masked != var.masked:
            errors.setdefault("base", []).append(
                "Updating masked attribute is not allowed on updates for hidden variables."
            )
        self._check(new, errors)
        if errors:
            raise ApiError(400, {"message": errors})
        var.__dict__.update(new.__dict__)
        return var
