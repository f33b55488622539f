"""A stateful fake of Netlify's environment variable API, as an httpx transport.

It holds the shared (account-level) variables of one account and the variables of its
sites, and enforces the rules Netlify documents:

- the bearer token; the account id in the path; ``site_id`` naming a site of the account;
- a variable has a key, scopes (builds, functions, runtime, post-processing), an
  ``is_secret`` flag and one value per deploy context (all, dev, dev-server,
  branch-deploy, deploy-preview, production, or branch with a ``context_parameter``);
- a variable holds either one value for all contexts or values per context, never both;
- secret values are write-only: listings omit them except in the local development
  context; a secret may not have a value for ``all`` nor the post-processing scope, and
  the secret flag cannot be removed once set;
- Netlify's read-only variables (``URL``, ``SITE_ID``, ...) cannot be set;
- ``POST /accounts/{a}/env`` creates several variables at once and refuses an existing
  key; ``PUT`` replaces a variable whole (scopes, secret flag and all its values: a
  context the body leaves out loses its value; the body's key may rename it); ``PATCH``
  sets one context's value (a new value id each time) and leaves the others alone;
  ``DELETE`` removes a variable or one value by id;
- throttling answers 429 with ``X-RateLimit-*`` headers (reset as epoch seconds) and,
  when asked, ``Retry-After``.

Error messages name keys and contexts, never a value.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

CONTEXTS = ("all", "dev", "dev-server", "branch-deploy", "deploy-preview", "production", "branch")
SCOPES = ("builds", "functions", "runtime", "post-processing")
READ_ONLY = frozenset(
    {
        "NETLIFY",
        "BUILD_ID",
        "CONTEXT",
        "REPOSITORY_URL",
        "BRANCH",
        "HEAD",
        "COMMIT_REF",
        "CACHED_COMMIT_REF",
        "PULL_REQUEST",
        "REVIEW_ID",
        "URL",
        "DEPLOY_URL",
        "DEPLOY_PRIME_URL",
        "DEPLOY_ID",
        "SITE_NAME",
        "SITE_ID",
        "NETLIFY_IMAGES_CDN_DOMAIN",
        "INCOMING_HOOK_TITLE",
        "INCOMING_HOOK_URL",
        "INCOMING_HOOK_BODY",
    }
)

Slot = tuple[str, str | None]


@dataclass
class Value:
    id: str
    context: str
    context_parameter: str | None
    value: str

    @property
    def slot(self) -> Slot:
        return self.context, self.context_parameter


@dataclass
class Var:
    key: str
    scopes: list[str]
    is_secret: bool
    values: list[Value] = field(default_factory=list)
    updated_at: str = ""

    def slot(self, slot: Slot) -> Value | None:
        return next((v for v in self.values if v.slot == slot), None)


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: Any = None


class Problem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Throttle:
    remaining: int
    retry_after: float | None
    reset_in: float | None
    methods: frozenset[str] | None


class NetlifyAPI:
    """The platform side. ``transport`` goes into ``context_extra["httpx_transport"]``."""

    def __init__(
        self,
        *,
        token: str = "nf-test-token",
        account_id: str = "acme",
        sites: Iterable[str] = ("site-1",),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.account_id = account_id
        self.clock = clock
        # None: the account's shared variables; a site id: that site's variables
        self.vars: dict[str | None, dict[str, Var]] = {None: {}}
        for s in sites:
            self.vars[s] = {}
        self.requests: list[Request] = []
        self._throttles: list[_Throttle] = []
        self._outages: list[list[Any]] = []
        self.builds: list[tuple[str, str]] = []  # (how, site) of every build started
        self.build_hooks: dict[str, str] = {}  # hook id -> site
        self.build_fail = 0  # the next API builds answer 500
        self._window_calls = 0
        self._window_start: float | None = None
        # every answer carries the minute's quota (off where a harness models it instead)
        self.rate_headers = True
        self._ids = 0
        self._ticks = 0
        self.transport = httpx.MockTransport(self.handle)

    # ------------------------------------------------------------------ test helpers

    def throttle(
        self,
        calls: int,
        *,
        retry_after: float | None = None,
        reset_in: float | None = 2.0,
        methods: Iterable[str] | None = None,
    ) -> None:
        """The next ``calls`` matching requests answer 429."""
        self._throttles.append(
            _Throttle(calls, retry_after, reset_in, frozenset(methods) if methods else None)
        )

    def put(
        self,
        key: str,
        values: Mapping[str | Slot, str],
        *,
        site: str | None = "site-1",
        scopes: Iterable[str] = ("builds", "functions", "runtime"),
        is_secret: bool = False,
    ) -> Var:
        """Create or replace a variable out of band, as a person in the UI would."""
        var = Var(key, list(scopes), is_secret)
        for ctx, value in values.items():
            slot: Slot = ctx if isinstance(ctx, tuple) else (ctx, None)
            var.values.append(Value(self._new_id(), slot[0], slot[1], value))
        self._touch(var)
        self.vars[site][key] = var
        return var

    def set_value(self, key: str, context: str, value: str, *, site: str | None = "site-1") -> None:
        """Edit one context's value out of band (a new value id, as Netlify assigns)."""
        var = self.vars[site][key]
        self._set(var, (context, None), value)

    def stored(
        self, site: str | None = "site-1", slot: Slot = ("production", None)
    ) -> dict[str, str]:
        """Key → plaintext of one context (the fake keeps secrets to check them)."""
        out = {}
        for key, var in self.vars[site].items():
            v = var.slot(slot)
            if v is not None:
                out[key] = v.value
        return out

    def slots(self, key: str, site: str | None = "site-1") -> dict[Slot, str]:
        var = self.vars[site].get(key)
        return {} if var is None else {v.slot: v.value for v in var.values}

    def listing(self, site: str | None = "site-1") -> list[dict[str, Any]]:
        """What a GET of the variables answers."""
        return [self._render(v) for v in self.vars[site].values()]

    def calls(self, *methods: str) -> int:
        return sum(1 for r in self.requests if not methods or r.method in methods)

    @property
    def writes(self) -> int:
        return self.calls("POST", "PUT", "PATCH", "DELETE")

    # ------------------------------------------------------------------ plumbing

    def _new_id(self) -> str:
        self._ids += 1
        return f"val-{self._ids:06d}"

    def _touch(self, var: Var) -> None:
        self._ticks += 1
        var.updated_at = f"2026-01-01T00:00:{self._ticks:06d}Z"

    def _set(self, var: Var, slot: Slot, value: str) -> None:
        existing = var.slot(slot)
        if existing is not None:
            var.values.remove(existing)
        var.values.append(Value(self._new_id(), slot[0], slot[1], value))
        self._touch(var)

    def _render(self, var: Var) -> dict[str, Any]:
        values = []
        for v in var.values:
            item: dict[str, Any] = {"id": v.id, "context": v.context}
            if v.context_parameter is not None:
                item["context_parameter"] = v.context_parameter
            # secret values are readable only in the local development context
            if not var.is_secret or v.context == "dev":
                item["value"] = v.value
            values.append(item)
        return {
            "key": var.key,
            "scopes": list(var.scopes),
            "values": values,
            "is_secret": var.is_secret,
            "updated_at": var.updated_at,
            "updated_by": {"id": "u1", "full_name": "Someone", "email": "someone@example.test"},
        }

    @staticmethod
    def _error(
        status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return httpx.Response(status, json={"code": status, "message": message}, headers=headers)

    def _throttled(self, method: str) -> httpx.Response | None:
        for t in self._throttles:
            if t.remaining > 0 and (t.methods is None or method in t.methods):
                t.remaining -= 1
                headers = {"X-RateLimit-Limit": "500", "X-RateLimit-Remaining": "0"}
                if t.reset_in is not None:
                    headers["X-RateLimit-Reset"] = str(int(self.clock() + t.reset_in + 1))
                if t.retry_after is not None:
                    headers["Retry-After"] = f"{t.retry_after:g}"
                return self._error(429, "Rate limit exceeded", headers)
        return None

    # ------------------------------------------------------------------ validation

    def _check_values(self, key: str, values: Any, *, is_secret: bool) -> list[tuple[Slot, str]]:
        if not isinstance(values, list):
            raise Problem(422, f"{key}: values must be a list")
        out: list[tuple[Slot, str]] = []
        for item in values:
            out.append(self._check_value(key, item, is_secret=is_secret))
        slots = [s for s, _ in out]
        if len(set(slots)) != len(slots):
            raise Problem(422, f"{key}: a context has two values")
        if ("all", None) in slots and len(slots) > 1:
            raise Problem(
                422, f"{key}: a variable holds one value for all contexts or values per context"
            )
        return out

    def _check_value(self, key: str, item: Any, *, is_secret: bool) -> tuple[Slot, str]:
        if not isinstance(item, dict):
            raise Problem(422, f"{key}: a value must be an object")
        ctx = item.get("context")
        if ctx not in CONTEXTS:
            raise Problem(422, f"{key}: unknown context {ctx!r}")
        param = item.get("context_parameter") or None
        if ctx == "branch" and not param:
            raise Problem(422, f"{key}: context branch needs a context_parameter (the branch)")
        if ctx != "branch" and param is not None:
            raise Problem(422, f"{key}: context_parameter is only for the branch context")
        value = item.get("value")
        if not isinstance(value, str):
            raise Problem(422, f"{key}: the value must be a string")
        if is_secret and ctx == "all":
            raise Problem(
                422, f"{key}: secret values must be set for specific deploy contexts, not all"
            )
        return (ctx, param), value

    def _check_var(self, body: Any, *, key: str | None = None) -> Var:
        if not isinstance(body, dict):
            raise Problem(422, "expected an environment variable object")
        key = key if key is not None else body.get("key")
        if not isinstance(key, str) or not key:
            raise Problem(422, "the key is missing")
        if key in READ_ONLY:
            raise Problem(422, f"{key} is a read-only variable and cannot be set")
        scopes = body.get("scopes", list(SCOPES))
        if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
            raise Problem(422, f"{key}: scopes must be some of {', '.join(SCOPES)}")
        is_secret = bool(body.get("is_secret", False))
        if is_secret and "post-processing" in scopes:
            raise Problem(422, f"{key}: secret values cannot have the post-processing scope")
        var = Var(key, list(dict.fromkeys(scopes)), is_secret)
        for slot, value in self._check_values(key, body.get("values", []), is_secret=is_secret):
            var.values.append(Value(self._new_id(), slot[0], slot[1], value))
        return var

    # ------------------------------------------------------------------ handler

    def fail(self, calls: int, status: int = 500, methods: Iterable[str] | None = None) -> None:
        """The next ``calls`` matching requests answer ``status`` (an outage)."""
        self._outages.append([calls, status, frozenset(methods) if methods else None])

    def handle(self, request: httpx.Request) -> httpx.Response:
        resp = self._handle(request)
        # Netlify sends its rate-limit headers on every answer (reset: epoch seconds)
        if self.rate_headers and "X-RateLimit-Limit" not in resp.headers:
            # 500 calls in a minute's window, which refills when it ends
            now = self.clock()
            if self._window_start is None or now >= self._window_start + 60.0:
                self._window_start, self._window_calls = now, 0
            self._window_calls += 1
            resp.headers["X-RateLimit-Limit"] = "500"
            resp.headers["X-RateLimit-Remaining"] = str(max(0, 500 - self._window_calls))
            resp.headers["X-RateLimit-Reset"] = str(math.ceil(self._window_start + 60.0))
        return resp

    def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.startswith("/build_hooks/"):
            # a build hook needs no token: the URL is the credential
            self.requests.append(Request("POST", path, {}, None))
            if path[len("/build_hooks/") :] not in self.build_hooks:
                return self._error(404, "Not Found")
            self.builds.append(("hook", self.build_hooks[path[len("/build_hooks/") :]]))
            return httpx.Response(200)
        if (
            request.method == "POST"
            and path.startswith("/api/v1/sites/")
            and path.endswith("/builds")
        ):
            self.requests.append(Request("POST", path, {}, None))
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return self._error(401, "Access Denied: bad token")
            site = unquote(path[len("/api/v1/sites/") : -len("/builds")])
            if site not in self.vars or site is None:
                return self._error(404, "Not Found")
            if self.build_fail > 0:
                self.build_fail -= 1
                return self._error(500, "Internal Server Error")
            self.builds.append(("api", site))
            n = len(self.builds)
            return httpx.Response(
                200,
                json={
                    "id": f"build{n:04d}",
                    "deploy_id": f"deploy{n:04d}",
                    "sha": None,
                    "done": False,
                    "error": None,
                },
            )
        body: Any = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                return self._error(400, "invalid JSON")
        params = dict(request.url.params)
        path = request.url.path
        self.requests.append(Request(request.method, path, params, body))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._error(401, "Access Denied: bad token")
        throttled = self._throttled(request.method)
        if throttled is not None:
            return throttled
        for outage in self._outages:
            if outage[0] > 0 and (outage[2] is None or request.method in outage[2]):
                outage[0] -= 1
                return self._error(outage[1], "Internal Server Error")
        prefix = "/api/v1/accounts/"
        if not path.startswith(prefix):
            return self._error(404, "Not Found")
        parts = [unquote(p) for p in path[len(prefix) :].split("/")]
        if parts[0] != self.account_id or len(parts) < 2 or parts[1] != "env":
            return self._error(404, "Not Found")
        site = params.get("site_id")
        if site is not None and site not in self.vars:
            return self._error(404, "Site not found")
        store = self.vars[site]
        try:
            return self._route(request.method, parts[2:], store, body)
        except Problem as p:
            return self._error(p.status, p.message)

    def _route(
        self, method: str, rest: list[str], store: dict[str, Var], body: Any
    ) -> httpx.Response:
        if not rest:
            if method == "GET":
                return httpx.Response(200, json=[self._render(v) for v in store.values()])
            if method == "POST":
                return self._create(store, body)
            return self._error(405, "Method Not Allowed")
        key = rest[0]
        if len(rest) == 1:
            var = store.get(key)
            if method == "GET":
                if var is None:
                    raise Problem(404, f"{key} not found")
                return httpx.Response(200, json=self._render(var))
            if method == "PUT":
                # the whole variable: scopes, secret flag and every value are replaced by
                # the body's (a context the body leaves out loses its value); the body's
                # key, when it differs, renames the variable
                if var is None:
                    raise Problem(404, f"{key} not found")
                renamed = body.get("key", key) if isinstance(body, dict) else key
                new = self._check_var(body, key=renamed)
                if var.is_secret and not new.is_secret:
                    raise Problem(422, f"{key}: the secret flag cannot be removed")
                if new.key != key and new.key in store:
                    raise Problem(409, f"{new.key} already exists")
                self._touch(new)
                if new.key != key:
                    del store[key]
                store[new.key] = new
                return httpx.Response(200, json=self._render(new))
            if method == "PATCH":
                if var is None:
                    raise Problem(404, f"{key} not found")
                slot, value = self._check_value(key, body, is_secret=var.is_secret)
                others = {v.slot for v in var.values} - {slot}
                if others and (slot == ("all", None) or ("all", None) in others):
                    raise Problem(
                        422,
                        f"{key}: a variable holds one value for all contexts or values per context",
                    )
                self._set(var, slot, value)
                return httpx.Response(201, json=self._render(var))
            if method == "DELETE":
                if var is None:
                    raise Problem(404, f"{key} not found")
                del store[key]
                return httpx.Response(204)
            return self._error(405, "Method Not Allowed")
        if len(rest) == 3 and rest[1] == "value" and method == "DELETE":
            var = store.get(key)
            if var is None:
                raise Problem(404, f"{key} not found")
            target = next((v for v in var.values if v.id == rest[2]), None)
            if target is None:
                raise Problem(404, f"{key}: value {rest[2]} not found")
            var.values.remove(target)
            self._touch(var)
            return httpx.Response(204)
        return self._error(404, "Not Found")

    def _create(self, store: dict[str, Var], body: Any) -> httpx.Response:
        if not isinstance(body, list) or not body:
            raise Problem(422, "expected a non-empty array of environment variables")
        new = [self._check_var(item) for item in body]
        keys = [v.key for v in new]
        if len(set(keys)) != len(keys):
            raise Problem(422, "a key is listed twice")
        for v in new:
            if v.key in store:
                # Netlify refuses the whole create with a 400 (not a 409)
                raise Problem(400, f"Environment variable {v.key} already exists")
        for v in new:
            self._touch(v)
            store[v.key] = v
        return httpx.Response(201, json=[self._render(v) for v in new])
