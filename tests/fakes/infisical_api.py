"""A stateful fake of the parts of Infisical's API that the ``infisical`` source uses.

Served through ``httpx.MockTransport`` (pass ``fake.transport`` as the connector context's
``httpx_transport``):

- ``POST /api/v1/auth/universal-auth/login``: client id and secret for an access token
  with ``expiresIn``; tokens expire on the injected clock, and Infisical's answer to an
  expired token (403 ``TokenError``, or 401) is reproduced.
- ``GET /api/v4/secrets`` and ``GET /api/v3/secrets/raw``: one project, environments and
  folders, with ``recursive``, ``include_imports`` and ``expandSecretReferences``.
- Faults: 5xx answers, 429 with ``Retry-After``, timeouts, truncated bodies, an outage of
  the whole instance, values hidden from the identity, an instance without the v4 API.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
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
    ) -> None:
        self.clock = clock
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
        return self.count("/universal-auth/login")

    @property
    def lists(self) -> int:
        return sum(1 for c in self.calls if c.method == "GET")

    # ------------------------------------------------------------------ serving

    def handle(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        params = dict(request.url.params)
        path = request.url.path
        self.calls.append(Call(request.method, path, params, token))
        if self.down:
            return _error(503, "ServiceUnavailable", "Service unavailable")
        if request.method == "POST" and path == "/api/v1/auth/universal-auth/login":
            return self._login(request)
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
        self._issued += 1
        token = f"access-token-{self._issued}"
        self.tokens[token] = self.clock() + self.token_ttl
        return httpx.Response(
            200,
            json={
                "accessToken": token,
                "expiresIn": int(self.token_ttl),
                "accessTokenMaxTTL": 2592000,
                "tokenType": "Bearer",
            },
        )

    def _check_token(self, token: str | None) -> httpx.Response | None:
        if token is None:
            return _error(401, "UnauthorizedError", "Missing authorization")
        if token in self.static_tokens:
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
        secrets = [
            self._secret(env, f, k, v, expand)
            for f in folders
            for k, v in self.data[env][f].items()
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
            "tags": [],
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
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        json={"reqId": "req-fake", "statusCode": status, "message": message, "error": error},
        headers=headers or {},
    )
