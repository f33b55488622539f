"""A stateful fake of Vercel's project environment variable API, as an httpx transport.

It holds the variables of one project and enforces the rules the real API documents:
the bearer token, ``teamId`` for a team's project, project by id or name, targets
(production, preview, development, custom environment ids), ``gitBranch`` only for
preview-only variables, sensitive values never readable and never for development,
overlapping targets of one key refused (``ENV_CONFLICT``), bulk create with ``upsert``
answering ``created`` and ``failed``, edit and delete by id, batch delete (1 to 1000 ids),
listing in pages (``pagination.next`` → ``until``) and 429 answers carrying
``X-RateLimit-Reset``. Error messages never quote a value.

Deployments: ``GET /v6/deployments`` (projectId, target, state, limit; newest first) and
``POST /v13/deployments?forceNew=1`` with ``{name, deploymentId, target}`` redeploying one.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

STANDARD = ("production", "preview", "development")
TYPES = ("plain", "encrypted", "sensitive")
KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED = {"AWS_SECRET_KEY", "NOW_REGION", "TZ", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"}
MAX_VALUE = 64 * 1024


@dataclass
class Env:
    id: str
    key: str
    value: str
    type: str
    target: list[str]
    custom: list[str]
    git_branch: str | None
    comment: str | None
    created_at: int
    updated_at: int

    def scope(self) -> tuple[frozenset[str], frozenset[str], str | None]:
        return frozenset(self.target), frozenset(self.custom), self.git_branch


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: Any = None


@dataclass
class _Fault:
    remaining: int
    methods: frozenset[str] | None


@dataclass
class _Outage:
    remaining: int
    status: int
    methods: frozenset[str] | None


class Problem(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _overlap(
    a: tuple[frozenset[str], frozenset[str], str | None],
    b: tuple[frozenset[str], frozenset[str], str | None],
) -> bool:
    if a[2] != b[2]:
        return False
    return bool(a[0] & b[0]) or bool(a[1] & b[1])


@dataclass
class FakeVercel:
    token: str = "vercel-test-token"
    project_id: str = "prj_fake123"
    project_name: str = "my-app"
    team_id: str | None = None
    custom_environments: tuple[str, ...] = ("env_staging01",)
    page_size: int = 20
    # real listings decrypt with decrypt=true; False makes encrypted values come back
    # encrypted, so a client must read them one by one
    list_decrypts: bool = True
    reset_after: float = 3.0
    # epoch seconds for X-RateLimit-Reset: the connector's wall clock (tests pass the same)
    wall: Callable[[], float] = time.time
    envs: dict[str, Env] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    failing_keys: dict[str, str] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _outages: list[_Outage] = field(default_factory=list)
    # deployments of the project, newest last: uid, name, url, state, target
    deployments: list[dict[str, Any]] = field(default_factory=list)
    redeploy_fail: int = 0  # the next redeploys answer 500
    _window_calls: int = 0
    _window_start: float | None = None
    # every answer carries the minute's quota (off where a harness models it instead)
    rate_headers: bool = True
    _clock: int = 1_760_000_000_000
    _ids: int = 0

    # ---------------------------------------------------------------- test helpers

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def tick(self) -> int:
        self._clock += 1000
        return self._clock

    def add(
        self,
        key: str,
        value: str,
        *,
        target: Iterable[str] = ("production", "preview"),
        type: str = "encrypted",
        git_branch: str | None = None,
        comment: str | None = None,
        custom: Iterable[str] = (),
    ) -> str:
        """Create a variable out of band, as a person in the dashboard would."""
        self._ids += 1
        now = self.tick()
        env = Env(
            f"env{self._ids:06d}",
            key,
            value,
            type,
            list(target),
            list(custom),
            git_branch,
            comment,
            now,
            now,
        )
        self._check_rules(env)
        for other in self.envs.values():
            if other.key == key and _overlap(other.scope(), env.scope()):
                raise AssertionError(f"{key}: the fake refuses overlapping targets too")
        self.envs[env.id] = env
        return env.id

    def edit(self, env_id: str, **fields: Any) -> None:
        env = self.envs[env_id]
        for k, v in fields.items():
            setattr(env, k, v)
        env.updated_at = self.tick()

    def find(self, key: str) -> list[Env]:
        return sorted((e for e in self.envs.values() if e.key == key), key=lambda e: e.id)

    def values(
        self,
        target: Iterable[str] = ("production", "preview"),
        custom: Iterable[str] = (),
        git_branch: str | None = None,
    ) -> dict[str, str]:
        """key → value of the variables whose scope is exactly this one."""
        scope = (frozenset(target), frozenset(custom), git_branch)
        return {e.key: e.value for e in self.envs.values() if e.scope() == scope}

    def throttle(self, calls: int, methods: Iterable[str] | None = None) -> None:
        """The next ``calls`` requests (of these methods) answer 429."""
        self._faults.append(_Fault(calls, frozenset(methods) if methods else None))

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "DELETE")]

    # ---------------------------------------------------------------- transport

    def fail(self, calls: int, status: int = 500, methods: Iterable[str] | None = None) -> None:
        """The next ``calls`` requests (of these methods) answer ``status`` (an outage)."""
        self._outages.append(_Outage(calls, status, frozenset(methods) if methods else None))

    def handle(self, request: httpx.Request) -> httpx.Response:
        resp = self._handle(request)
        # Vercel sends its rate-limit headers on every answer, errors included
        if self.rate_headers and "X-RateLimit-Limit" not in resp.headers:
            # 100 calls in a minute's window, which refills when it ends
            now = self.wall()
            if self._window_start is None or now >= self._window_start + 60.0:
                self._window_start, self._window_calls = now, 0
            self._window_calls += 1
            resp.headers["X-RateLimit-Limit"] = "100"
            resp.headers["X-RateLimit-Remaining"] = str(max(0, 100 - self._window_calls))
            resp.headers["X-RateLimit-Reset"] = str(math.ceil(self._window_start + 60.0))
        return resp

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body: Any = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                return self._error(400, "bad_request", "Invalid JSON")
        params = dict(request.url.params)
        self.requests.append(Request(request.method, request.url.path, params, body))
        for fault in self._faults:
            if fault.remaining > 0 and (fault.methods is None or request.method in fault.methods):
                fault.remaining -= 1
                return httpx.Response(
                    429,
                    json={"error": {"code": "rate_limited", "message": "Rate limit exceeded"}},
                    headers={
                        "X-RateLimit-Limit": "100",
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(math.ceil(self.wall() + self.reset_after)),
                    },
                )
        for outage in self._outages:
            if outage.remaining > 0 and (
                outage.methods is None or request.method in outage.methods
            ):
                outage.remaining -= 1
                return self._error(outage.status, "internal_server_error", "An error occurred")
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._error(403, "forbidden", "Not authorized")
        try:
            return self._route(request.method, request.url.path, params, body)
        except Problem as p:
            return self._error(p.status, p.code, p.message)

    def _error(self, status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": code, "message": message}})

    def _project(self, id_or_name: str, params: Mapping[str, str]) -> None:
        if unquote(id_or_name) not in (self.project_id, self.project_name):
            raise Problem("not_found", "Project not found", 404)
        if self.team_id is not None and params.get("teamId") != self.team_id:
            raise Problem("not_found", "Project not found", 404)

    def deploy(self, state: str = "READY", target: str | None = "production") -> str:
        """A deployment of the project, as a push would make."""
        uid = f"dpl_{len(self.deployments) + 1:04d}"
        self.deployments.append(
            {
                "uid": uid,
                "name": self.project_name,
                "url": f"{self.project_name}-{uid[4:]}.vercel.app",
                "state": state,
                "target": target,
                "created": self.tick(),
            }
        )
        return uid

    def redeploys(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v13/deployments"]

    def _deployments(
        self, method: str, path: str, params: Mapping[str, str], body: Any
    ) -> httpx.Response:
        if self.team_id is not None and params.get("teamId") != self.team_id:
            raise Problem("not_found", "Project not found", 404)
        if method == "GET" and path == "/v6/deployments":
            project = params.get("projectId")
            if project is not None:
                self._project(project, params)
            found = [
                d
                for d in reversed(self.deployments)
                if (params.get("target") is None or d["target"] == params["target"])
                and (params.get("state") is None or d["state"] in params["state"].split(","))
            ][: int(params.get("limit", "20"))]
            return httpx.Response(
                200, json={"deployments": found, "pagination": {"count": len(found), "next": None}}
            )
        if method == "POST" and path == "/v13/deployments":
            if self.redeploy_fail > 0:
                self.redeploy_fail -= 1
                raise Problem("internal_server_error", "An unexpected error happened", 500)
            if not isinstance(body, dict) or not body.get("name"):
                raise Problem("bad_request", "Invalid request: missing required property `name`")
            source = next(
                (d for d in self.deployments if d["uid"] == body.get("deploymentId")), None
            )
            if source is None:
                raise Problem("not_found", "Deployment not found", 404)
            if params.get("forceNew") != "1":
                raise Problem("bad_request", "a redeploy without forceNew reuses the build cache")
            uid = self.deploy(state="QUEUED", target=body.get("target"))
            new = self.deployments[-1]
            return httpx.Response(
                200,
                json={
                    "id": uid,
                    "url": new["url"],
                    "readyState": "QUEUED",
                    "name": new["name"],
                    "target": new["target"],
                },
            )
        raise Problem("not_found", "Not found", 404)

    def _route(
        self, method: str, path: str, params: Mapping[str, str], body: Any
    ) -> httpx.Response:
        if path.startswith(("/v6/deployments", "/v13/deployments")):
            return self._deployments(method, path, params, body)
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[1] != "projects":
            raise Problem("not_found", "Not found", 404)
        version, project, rest = parts[0], parts[2], parts[3:]
        self._project(project, params)
        if version == "v9" and rest == [] and method == "GET":
            return httpx.Response(200, json={"id": self.project_id, "name": self.project_name})
        if version == "v9" and rest == ["custom-environments"] and method == "GET":
            envs = [{"id": c, "slug": c.removeprefix("env_")} for c in self.custom_environments]
            return httpx.Response(200, json={"environments": envs})
        if version == "v10" and rest == ["env"] and method == "GET":
            return self._list(params)
        if version == "v10" and rest == ["env"] and method == "POST":
            return self._create(body, params.get("upsert") == "true")
        if version == "v1" and rest == ["env"] and method == "DELETE":
            return self._batch_delete(body)
        if len(rest) == 2 and rest[0] == "env":
            env_id = unquote(rest[1])
            if version == "v1" and method == "GET":
                return self._get(env_id)
            if version == "v9" and method == "PATCH":
                return self._patch(env_id, body)
            if version == "v9" and method == "DELETE":
                return self._delete(env_id)
        raise Problem("not_found", "Not found", 404)

    # ---------------------------------------------------------------- rules

    def _check_rules(self, env: Env) -> None:
        if not isinstance(env.key, str) or not KEY_RE.fullmatch(env.key):
            raise Problem("invalid_key", "The name contains invalid characters")
        if env.key in RESERVED:
            raise Problem("reserved_key", "This name is reserved")
        if not isinstance(env.value, str):
            raise Problem("invalid_value", "The value must be a string")
        if len(env.value.encode()) > MAX_VALUE:
            raise Problem("value_too_large", "The value is larger than 64 KB")
        if env.type not in TYPES:
            raise Problem("invalid_type", "Unknown type")
        if any(t not in STANDARD for t in env.target):
            raise Problem("invalid_target", "Unknown target")
        if not env.target and not env.custom:
            raise Problem("missing_target", "A target or a custom environment is required")
        if any(c not in self.custom_environments for c in env.custom):
            raise Problem("custom_environment_not_found", "Custom environment not found")
        if env.git_branch is not None and (env.target != ["preview"] or env.custom):
            raise Problem("invalid_git_branch", "gitBranch must have target=preview")
        if env.type == "sensitive" and "development" in env.target:
            raise Problem("sensitive_not_allowed", "Sensitive variables cannot target development")
        if env.comment is not None and len(env.comment) > 500:
            raise Problem("invalid_comment", "The comment is longer than 500 characters")

    def _conflict(self, env: Env, *, ignore: str | None = None) -> Env | None:
        for other in self.envs.values():
            if other.id != ignore and other.key == env.key and _overlap(other.scope(), env.scope()):
                return other
        return None

    # ---------------------------------------------------------------- answers

    def _json(self, env: Env, *, decrypt: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": env.id,
            "key": env.key,
            "type": env.type,
            "target": list(env.target),
            "createdAt": env.created_at,
            "updatedAt": env.updated_at,
        }
        if env.custom:
            out["customEnvironmentIds"] = list(env.custom)
        if env.git_branch is not None:
            out["gitBranch"] = env.git_branch
        if env.comment is not None:
            out["comment"] = env.comment
        if env.type == "sensitive":
            out["value"] = ""
            out["decrypted"] = False
        elif env.type == "plain":
            out["value"] = env.value
        elif decrypt:
            out["value"] = env.value
            out["decrypted"] = True
        else:
            out["value"] = f"enc:{env.id}:{env.updated_at}"
            out["decrypted"] = False
        return out

    def _list(self, params: Mapping[str, str]) -> httpx.Response:
        decrypt = params.get("decrypt") == "true" and self.list_decrypts
        ordered = sorted(self.envs.values(), key=lambda e: e.created_at, reverse=True)
        until = params.get("until")
        if until is not None:
            ordered = [e for e in ordered if e.created_at < int(until)]
        page, more = ordered[: self.page_size], len(ordered) > self.page_size
        return httpx.Response(
            200,
            json={
                "envs": [self._json(e, decrypt=decrypt) for e in page],
                "pagination": {
                    "count": len(page),
                    "next": page[-1].created_at if more else None,
                    "prev": page[0].created_at if page else None,
                },
            },
        )

    def _get(self, env_id: str) -> httpx.Response:
        env = self.envs.get(env_id)
        if env is None:
            raise Problem("not_found", "Environment Variable not found", 404)
        return httpx.Response(200, json=self._json(env, decrypt=env.type != "sensitive"))

    def _entry(self, item: Any) -> Env:
        if not isinstance(item, dict):
            raise Problem("bad_request", "Each entry must be an object")
        target = item.get("target") or []
        if isinstance(target, str):
            target = [target]
        env = Env(
            "",
            item.get("key"),  # type: ignore[arg-type]
            item.get("value"),  # type: ignore[arg-type]
            item.get("type", "encrypted"),
            list(target),
            list(item.get("customEnvironmentIds") or []),
            item.get("gitBranch") or None,
            item.get("comment"),
            0,
            0,
        )
        self._check_rules(env)
        return env

    def _create(self, body: Any, upsert: bool) -> httpx.Response:
        items = body if isinstance(body, list) else [body]
        created: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for item in items:
            key = item.get("key") if isinstance(item, dict) else None
            try:
                if isinstance(key, str) and key in self.failing_keys:
                    raise Problem(self.failing_keys[key], "Refused by the test")
                env = self._entry(item)
                other = self._conflict(env)
                if other is not None and other.scope() == env.scope():
                    if not upsert:
                        raise Problem("ENV_ALREADY_EXISTS", "The variable already exists")
                    if other.type == "sensitive" and env.type != "sensitive":
                        raise Problem("invalid_type", "A sensitive variable stays sensitive")
                    other.value, other.type = env.value, env.type
                    if "comment" in item:
                        other.comment = env.comment
                    other.updated_at = self.tick()
                    created.append(self._json(other, decrypt=False))
                    continue
                if other is not None:
                    raise Problem(
                        "ENV_CONFLICT",
                        "A variable with this name already exists for an overlapping target",
                    )
                self._ids += 1
                env.id = f"env{self._ids:06d}"
                env.created_at = env.updated_at = self.tick()
                self.envs[env.id] = env
                created.append(self._json(env, decrypt=False))
            except Problem as p:
                error: dict[str, Any] = {"code": p.code, "message": p.message}
                if isinstance(key, str):
                    error["key"] = key
                if isinstance(item, dict) and "target" in item:
                    error["target"] = item["target"]
                failed.append({"error": error})
        answer: Any = created[0] if len(created) == 1 else created
        return httpx.Response(201, json={"created": answer, "failed": failed})

    def _patch(self, env_id: str, body: Any) -> httpx.Response:
        env = self.envs.get(env_id)
        if env is None:
            raise Problem("not_found", "Environment Variable not found", 404)
        if not isinstance(body, dict):
            raise Problem("bad_request", "Expected an object")
        new = Env(**{**env.__dict__})
        mapping = {
            "key": "key",
            "value": "value",
            "type": "type",
            "target": "target",
            "customEnvironmentIds": "custom",
            "gitBranch": "git_branch",
            "comment": "comment",
        }
        for k, attr in mapping.items():
            if k in body:
                setattr(new, attr, body[k] if k != "gitBranch" else (body[k] or None))
        self._check_rules(new)
        if env.type == "sensitive" and new.type != "sensitive":
            raise Problem("invalid_type", "A sensitive variable stays sensitive")
        if self._conflict(new, ignore=env.id) is not None:
            raise Problem(
                "ENV_CONFLICT", "A variable with this name already exists for an overlapping target"
            )
        new.updated_at = self.tick()
        self.envs[env_id] = new
        return httpx.Response(200, json=self._json(new, decrypt=False))

    def _delete(self, env_id: str) -> httpx.Response:
        env = self.envs.pop(env_id, None)
        if env is None:
            raise Problem("not_found", "Environment Variable not found", 404)
        return httpx.Response(200, json=self._json(env, decrypt=False))

    def _batch_delete(self, body: Any) -> httpx.Response:
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not 1 <= len(ids) <= 1000:
            raise Problem("bad_request", "ids must hold 1 to 1000 environment variable ids")
        deleted = [i for i in ids if self.envs.pop(i, None) is not None]
        return httpx.Response(200, json={"deleted": len(deleted), "ids": deleted})
