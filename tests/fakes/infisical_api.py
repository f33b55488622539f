"""A stateful fake of the parts of Infisical's API that the ``infisical`` source uses.

Served through ``httpx.MockTransport`` (pass ``fake.transport`` as the connector context's
``httpx_transport``):

- ``POST /api/v1/auth/<method>/login`` for universal auth and every machine identity
  (:mod:`tests.fakes.identity_logins` checks the credential each method sends): an access
  token (a JWT whose ``exp`` is the truth, ``expiresIn`` beside it) with
  ``accessTokenMaxTTL``; tokens expire on the injected clock, and Infisical's answer to an
  expired token (403 ``TokenError``, or 401) is reproduced. Errors have Infisical's shape
  ``{reqId, statusCode, message, error}``: 401, 403, 404 (the method is not configured for
  the identity), 422 (validation, ``message`` a list).
- ``POST /api/v1/auth/token/renew``: a new token for a live one, capped at the max TTL
  counted from the login; refused (401) for an expired token or past the cap.
- ``GET /api/v2/service-token``: a legacy service token's project and scopes.
- Secrets carry tags; ``tagSlugs`` filters the listing.
- ``GET /api/v4/secrets`` and ``GET /api/v3/secrets/raw``: one project, environments and
  folders, with ``recursive``, ``include_imports`` and ``expandSecretReferences``.
- Faults: 5xx answers, 429 with ``Retry-After``, timeouts, truncated bodies, an outage of
  the whole instance, values hidden from the identity, an instance without the v4 API.
- Every answer carries Infisical's ``x-ratelimit-*`` headers (the reset in seconds).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

_REF = re.compile(r"\$\{([^}]+)\}")


def _folder(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts)


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    token: str | None


@dataclass
class Fault:
    kind: str  # status | timeout | truncated | connect
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)


class FakeInfisical:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        project_id: str = "proj-1",
        client_id: str = "client-id-1",
        client_secret: str = "client-secret-value-1",
        token_ttl: float = 7200.0,
        environments: tuple[str, ...] = ("dev", "prod"),
        v4: bool = True,
        expired_status: int = 403,
        max_ttl: float = 2592000.0,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock
        # epoch seconds for the tokens' exp: the reader's wall clock (tests pass the same)
        self.wall = wall or (lambda: time.time() + clock() - time.monotonic())
        self.max_ttl = max_ttl
        # identity id -> (method, check of the login body: None when accepted, else an
        # error answer); added by tests.fakes.identity_logins
        self.identities: dict[
            str, tuple[str, Callable[[dict[str, Any]], httpx.Response | None]]
        ] = {}
        # service token -> (project, [(environment, secretPath)])
        self.service_tokens: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        # (environment, folder, key) -> tag slugs
        self.tags: dict[tuple[str, str, str], list[str]] = {}
        self.family: dict[str, float] = {}  # token -> end of its max TTL on the clock
        self.renewals = 0
        self.project_id = project_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.v4 = v4
        self.expired_status = expired_status
        # environment -> folder -> key -> value
        self.data: dict[str, dict[str, dict[str, str]]] = {e: {"/": {}} for e in environments}
        # (environment, folder) -> [(environment, folder)] imported into it, in order
        self.imports: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.static_tokens: set[str] = set()
        self.tokens: dict[str, float] = {}  # issued token -> expiry on the clock
        self.calls: list[Call] = []
        self.faults: list[Fault] = []  # applied to the next secrets requests, in order
        self.down = False  # every request fails with 503
        self.hide_values = False  # the identity may list keys but not read values
        self._issued = 0

    # ------------------------------------------------------------------ state

    def set(self, key: str, value: str, *, env: str = "prod", path: str = "/") -> None:
        folder = _folder(path)
        self.data.setdefault(env, {"/": {}})
        # a folder's parents exist too
        parts = [p for p in folder.split("/") if p]
        for i in range(len(parts) + 1):
            self.data[env].setdefault("/" + "/".join(parts[:i]), {})
        self.data[env][folder][key] = value

    def delete(self, key: str, *, env: str = "prod", path: str = "/") -> None:
        self.data[env][_folder(path)].pop(key, None)

    def add_import(
        self, *, env: str = "prod", path: str = "/", from_env: str, from_path: str = "/"
    ) -> None:
        self.data.setdefault(from_env, {"/": {}}).setdefault(_folder(from_path), {})
        self.imports.setdefault((env, _folder(path)), []).append((from_env, _folder(from_path)))

    def expire_tokens(self) -> None:
        """Every issued access token expires now (as after a TTL change or a revocation)."""
        now = self.clock()
        self.tokens = {t: min(exp, now) for t, exp in self.tokens.items()}

    def fail_next(
        self, n: int = 1, status: int = 503, headers: dict[str, str] | None = None
    ) -> None:
        self.faults.extend(Fault("status", status, dict(headers or {})) for _ in range(n))

    def timeout_next(self, n: int = 1) -> None:
        self.faults.extend(Fault("timeout") for _ in range(n))

    def truncate_next(self, n: int = 1) -> None:
        self.faults.extend(Fault("truncated") for _ in range(n))

    # ------------------------------------------------------------------ counting

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def count(self, path_suffix: str) -> int:
        return sum(1 for c in self.calls if c.path.endswith(path_suffix))

    @property
    def logins(self) -> int:
        return sum(1 for c in self.calls if c.path.endswith("/login"))

    def tag(self, key: str, *slugs: str, env: str = "prod", path: str = "/") -> None:
        self.tags[(env, _folder(path), key)] = list(slugs)

    @property
    def lists(self) -> int:
        return sum(1 for c in self.calls if c.method == "GET")

    # ------------------------------------------------------------------ serving

    def handle(self, request: httpx.Request) -> httpx.Response:
        resp = self._handle(request)
        # Infisical's rate limiter (@fastify/rate-limit) labels every answer, errors included:
        # x-ratelimit-reset is the seconds left in the one-minute window, not an epoch
        if "x-ratelimit-limit" not in resp.headers:
            resp.headers["x-ratelimit-limit"] = "600"
            resp.headers["x-ratelimit-remaining"] = str(max(1, 600 - len(self.calls)))
            resp.headers["x-ratelimit-reset"] = str(max(1, int(60 - self.clock() % 60)))
        return resp

    def _handle(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        params = dict(request.url.params)
        path = request.url.path
        self.calls.append(Call(request.method, path, params, token))
        if self.down:
            return _error(503, "ServiceUnavailable", "Service unavailable")
        if request.method == "POST" and path == "/api/v1/auth/universal-auth/login":
            return self._login(request)
        if (
            request.method == "POST"
            and path.startswith("/api/v1/auth/")
            and path.endswith("-auth/login")
        ):
            return self._identity_login(path, request)
        if request.method == "POST" and path == "/api/v1/auth/token/renew":
            return self._renew(request)
        if request.method == "GET" and path == "/api/v2/service-token":
            if token not in self.service_tokens:
                return _error(401, "UnauthorizedError", "Invalid service token")
            project, scopes = self.service_tokens[token]
            return httpx.Response(
                200,
                json={
                    "workspace": project,
                    "scopes": [{"environment": e, "secretPath": p} for e, p in scopes],
                    "name": "legacy",
                },
            )
        if request.method == "GET" and path in ("/api/v4/secrets", "/api/v3/secrets/raw"):
            if path == "/api/v4/secrets" and not self.v4:
                return _error(404, "Not Found", f"Route GET:{path} not found")
            if self.faults:
                fault = self.faults.pop(0)
                if fault.kind == "timeout":
                    raise httpx.ReadTimeout("timed out", request=request)
                if fault.kind == "connect":
                    raise httpx.ConnectError("connection refused", request=request)
                if fault.kind == "status":
                    return _error(fault.status, "Error", "injected", fault.headers)
                if fault.kind == "truncated":
                    body = json.dumps(self._list(params, path)).encode()
                    return httpx.Response(
                        200,
                        content=body[: len(body) // 2],
                        headers={"content-type": "application/json"},
                    )
            denied = self._check_token(token)
            if denied is not None:
                return denied
            return self._answer(params, path)
        return _error(404, "Not Found", f"Route {request.method}:{path} not found")

    def _login(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content)
        except ValueError:
            return _error(400, "BadRequest", "Invalid body")
        if body.get("clientId") != self.client_id or body.get("clientSecret") != (
            self.client_secret
        ):
            return _error(401, "UnauthorizedError", "Invalid credentials")
        return self._issue(self.clock() + self.max_ttl)

    def _issue(self, family_end: float, *, stated_ttl: float | None = None) -> httpx.Response:
        """A new access token: a JWT whose ``exp`` is when it really expires (the earlier
        of its TTL and the end of the max TTL); ``expiresIn`` says ``stated_ttl`` when given
        (Infisical can overstate it), else the TTL."""
        self._issued += 1
        now = self.clock()
        expiry = min(now + self.token_ttl, family_end)
        claims = {"jti": f"t{self._issued}", "exp": int(self.wall() + (expiry - now))}
        token = (
            ".".join(
                base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
                for part in ({"alg": "HS256", "typ": "JWT"}, claims)
            )
            + f".sig{self._issued}"
        )
        self.tokens[token] = expiry
        self.family[token] = family_end
        return httpx.Response(
            200,
            json={
                "accessToken": token,
                "expiresIn": int(self.token_ttl if stated_ttl is None else stated_ttl),
                "accessTokenMaxTTL": int(self.max_ttl),
                "tokenType": "Bearer",
            },
        )

    def issued(self, n: int) -> str:
        """The n-th token issued (1-based)."""
        return next(t for t in self.tokens if t.endswith(f".sig{n}"))

    def _identity_login(self, path: str, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content)
        except ValueError:
            return _error(400, "BadRequest", "Invalid body")
        method = path[len("/api/v1/auth/") : -len("-auth/login")]
        identity = body.get("identityId") if isinstance(body, dict) else None
        if not isinstance(identity, str) or not identity:
            return _error(422, "ValidationFailure", ["identityId: Required"])
        configured = self.identities.get(identity)
        if configured is None or configured[0] != method:
            return _error(404, "NotFound", f"{method.upper()} auth method not found for identity")
        refused = configured[1](body)
        if refused is not None:
            return refused
        return self._issue(self.clock() + self.max_ttl)

    def _renew(self, request: httpx.Request) -> httpx.Response:
        try:
            token = json.loads(request.content).get("accessToken")
        except (ValueError, AttributeError):
            return _error(400, "BadRequest", "Invalid body")
        expiry = self.tokens.get(token)
        family_end = self.family.get(token)
        now = self.clock()
        if expiry is None or family_end is None or now >= expiry:
            return _error(401, "UnauthorizedError", "Token expired or invalid")
        if now >= family_end:
            return _error(401, "UnauthorizedError", "Access token has reached its max TTL")
        self.renewals += 1
        return self._issue(family_end)

    def _check_token(self, token: str | None) -> httpx.Response | None:
        if token is None:
            return _error(401, "UnauthorizedError", "Missing authorization")
        if token in self.static_tokens or token in self.service_tokens:
            return None
        expiry = self.tokens.get(token)
        if expiry is None:
            return _error(403, "TokenError", "invalid signature")
        if self.clock() >= expiry:
            if self.expired_status == 401:
                return _error(
                    401,
                    "UnauthorizedError",
                    "Identity access token exceeded max age, please re-authenticate",
                )
            return _error(403, "TokenError", "Your token has expired. Please re-authenticate.")
        return None

    def _answer(self, params: dict[str, str], path: str) -> httpx.Response:
        project = params.get("projectId" if path.startswith("/api/v4") else "workspaceId")
        if project != self.project_id:
            return _error(404, "NotFound", f"Project with ID '{project}' not found")
        env = params.get("environment", "")
        if env not in self.data:
            return _error(404, "NotFound", f"Environment with slug '{env}' not found")
        folder = _folder(params.get("secretPath", "/"))
        if folder not in self.data[env]:
            return _error(404, "NotFound", f"Folder with path '{folder}' not found")
        return httpx.Response(200, json=self._list(params, path))

    def _list(self, params: dict[str, str], path: str) -> dict[str, Any]:
        env = params.get("environment", "")
        root = _folder(params.get("secretPath", "/"))
        recursive = params.get("recursive") == "true"
        expand = params.get("expandSecretReferences") == "true"
        folders = [
            f
            for f in sorted(self.data.get(env, {}))
            if f == root or (recursive and f.startswith("/" if root == "/" else root + "/"))
        ]
        slugs = {t for t in params.get("tagSlugs", "").split(",") if t}
        secrets = [
            self._secret(env, f, k, v, expand)
            for f in folders
            for k, v in self.data[env][f].items()
            if not slugs or slugs & set(self.tags.get((env, f, k), []))
        ]
        out: dict[str, Any] = {"secrets": secrets}
        if params.get("include_imports") == "true":
            out["imports"] = [
                {
                    "secretPath": ipath,
                    "environment": ienv,
                    "folderId": f"folder-{ienv}-{ipath}",
                    "secrets": [
                        self._secret(ienv, ipath, k, v, expand)
                        for k, v in self.data[ienv].get(ipath, {}).items()
                    ],
                }
                for ienv, ipath in self.imports.get((env, root), [])
            ]
        return out

    def _secret(self, env: str, folder: str, key: str, value: str, expand: bool) -> dict[str, Any]:
        if expand:
            value = self._expand(env, folder, value, 0)
        return {
            "id": f"id-{env}-{folder}-{key}",
            "workspace": self.project_id,
            "environment": env,
            "version": 1,
            "type": "shared",
            "secretKey": key,
            "secretValue": "<hidden-by-infisical>" if self.hide_values else value,
            "secretValueHidden": self.hide_values,
            "secretComment": "",
            "secretPath": folder,
            "tags": [
                {"id": f"tag-{t}", "slug": t, "name": t.title(), "color": "#888888"}
                for t in self.tags.get((env, folder, key), [])
            ],
        }

    def _expand(self, env: str, folder: str, value: str, depth: int) -> str:
        if depth > 10:
            return value

        def sub(m: re.Match[str]) -> str:
            ref = m.group(1).split(".")
            if len(ref) == 1:
                renv, rfolder, rkey = env, folder, ref[0]
            else:
                renv, rfolder, rkey = ref[0], "/" + "/".join(ref[1:-1]), ref[-1]
            rfolder = _folder(rfolder)
            raw = self.data.get(renv, {}).get(rfolder, {}).get(rkey, "")
            return self._expand(renv, rfolder, raw, depth + 1)

        return _REF.sub(sub, value)


def _error(
    status: int, error: str, message: str | list[str], headers: Mapping[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        json={"reqId": "req-fake", "statusCode": status, "message": message, "error": error},
        headers=dict(headers or {}),
    )
