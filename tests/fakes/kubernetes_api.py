"""A stateful fake of the Kubernetes API for the ``kubernetes`` destination, served through
an httpx2 ``MockTransport`` (lightkube's HTTP client is httpx2).

Secrets: GET, POST (create), PUT and DELETE with ``resourceVersion`` preconditions (409 on a
stale one), and server-side apply (PATCH ``application/apply-patch+yaml``) with field
managers recorded per field in ``metadata.managedFields``: a field another manager owns
with another value is a 409 Conflict whose Status lists the conflicting fields, unless
``force=true``; a field a manager stops applying is removed when nobody else owns it.
Validation as the API server answers it: key names (422), 1 MiB of data (422), request
bodies over 3 MiB (413). Deployments, StatefulSets and DaemonSets: list, and patch
(strategic-merge or merge) of their pod template. Every request is recorded.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx2
import yaml

MAX_SECRET_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 3 * 1024 * 1024
KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
APPS = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet"}

Path_ = tuple[str, ...]


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    content_type: str
    body: Any

    @property
    def resource(self) -> str:
        """``secrets``, ``deployments``, ... (the plural in the URL)."""
        parts = self.path.strip("/").split("/")
        i = parts.index("namespaces") + 2 if "namespaces" in parts else len(parts) - 1
        return parts[i] if i < len(parts) else parts[-1]

    @property
    def verb(self) -> str:
        """The RBAC verb Kubernetes authorizes this request as."""
        parts = self.path.strip("/").split("/")
        named = parts[-1] != self.resource
        if self.method == "GET":
            return "get" if named else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[
            self.method
        ]


@dataclass
class Entry:
    manager: str
    operation: str  # Apply | Update
    fields: set[Path_] = field(default_factory=set)


@dataclass
class Obj:
    body: dict[str, Any]
    managers: list[Entry] = field(default_factory=list)


def status(code: int, reason: str, message: str, **details: Any) -> httpx2.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return httpx2.Response(code, json=body)


def leaf_fields(obj: dict[str, Any]) -> dict[Path_, Any]:
    """The fields of a Secret syncd's writes touch, as managedFields paths → values."""
    out: dict[Path_, Any] = {}
    meta = obj.get("metadata") or {}
    for group in ("labels", "annotations"):
        for k, v in (meta.get(group) or {}).items():
            out[("metadata", group, k)] = v
    for k, v in (obj.get("data") or {}).items():
        out[("data", k)] = v
    if "type" in obj:
        out[("type",)] = obj["type"]
    return out


def fields_v1(paths: set[Path_]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def dotted(path: Path_) -> str:
    return "." + ".".join(path)


def deep_merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            into.pop(k, None)
        elif isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


class FakeKubernetes:
    def __init__(self, namespace: str = "apps", token: str = "k8s-test-token-0f3c") -> None:
        self.namespace = namespace
        self.token = token
        self.secrets: dict[tuple[str, str], Obj] = {}
        self.workloads: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[Request] = []
        self.rv = 100
        self.throttle_next = 0
        self.fail_next: list[int] = []  # statuses the next calls answer with
        self.stale_next_delete = 0  # someone writes the Secret just before the next DELETEs
        self.before: Callable[[Request], None] | None = None

    # ------------------------------------------------------------------ test helpers

    @property
    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handle)

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def secret(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        obj = self.secrets.get((namespace or self.namespace, name))
        return None if obj is None else self._render(obj)

    def values(self, name: str, namespace: str | None = None) -> dict[str, str]:
        obj = self.secrets.get((namespace or self.namespace, name))
        if obj is None:
            return {}
        data = obj.body.get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def owners(self, name: str, namespace: str | None = None) -> dict[str, set[str]]:
        """data key → managers owning it."""
        obj = self.secrets.get((namespace or self.namespace, name))
        out: dict[str, set[str]] = {}
        for e in obj.managers if obj else []:
            for p in e.fields:
                if p[0] == "data":
                    out.setdefault(p[1], set()).add(e.manager)
        return out

    def write_as(
        self,
        manager: str,
        name: str,
        values: dict[str, str],
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        """An Update by another client (``kubectl edit``, ``kubectl create secret``): it
        takes ownership of the fields it changes."""
        ns = namespace or self.namespace
        obj = self.secrets.get((ns, name))
        if obj is None:
            obj = Obj(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"},
                    "type": "Opaque",
                    "data": {},
                }
            )
            self.secrets[(ns, name)] = obj
            self._entry(obj, manager, "Update").fields.add(("type",))
        data = obj.body.setdefault("data", {})
        for k, v in values.items():
            data[k] = base64.b64encode(v.encode()).decode()
            for e in obj.managers:
                e.fields.discard(("data", k))
            self._entry(obj, manager, "Update").fields.add(("data", k))
        for k, v in (labels or {}).items():
            obj.body["metadata"].setdefault("labels", {})[k] = v
            for e in obj.managers:
                e.fields.discard(("metadata", "labels", k))
            self._entry(obj, manager, "Update").fields.add(("metadata", "labels", k))
        self._prune(obj)
        obj.body["metadata"]["resourceVersion"] = self._next_rv()

    def add_workload(
        self,
        kind: str,
        name: str,
        pod_spec: dict[str, Any],
        namespace: str | None = None,
    ) -> None:
        ns = namespace or self.namespace
        plural = kind.lower() + "s"
        self.workloads[(plural, ns, name)] = {
            "apiVersion": "apps/v1",
            "kind": APPS[plural],
            "metadata": {"name": name, "namespace": ns, "resourceVersion": self._next_rv()},
            "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}},
        }

    def restarted_at(self, kind: str, name: str, namespace: str | None = None) -> str | None:
        w = self.workloads[(kind.lower() + "s", namespace or self.namespace, name)]
        meta = w["spec"]["template"].get("metadata") or {}
        value: str | None = (meta.get("annotations") or {}).get("syncd.io/restartedAt")
        return value

    def restarts(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH" and r.resource in APPS]

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET" and r.resource == "secrets"]

    # ------------------------------------------------------------------ managed fields

    @staticmethod
    def _entry(obj: Obj, manager: str, operation: str) -> Entry:
        for e in obj.managers:
            if e.manager == manager and e.operation == operation:
                return e
        e = Entry(manager, operation)
        obj.managers.append(e)
        return e

    @staticmethod
    def _prune(obj: Obj) -> None:
        obj.managers = [e for e in obj.managers if e.fields]

    def _render(self, obj: Obj) -> dict[str, Any]:
        body = copy.deepcopy(obj.body)
        body["metadata"]["managedFields"] = [
            {
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": "v1",
                "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(e.fields),
            }
            for e in obj.managers
        ]
        return body

    # ------------------------------------------------------------------ serving

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        raw = request.content
        ctype = request.headers.get("content-type", "")
        body: Any = None
        if raw:
            body = yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw)
        req = Request(
            request.method,
            unquote(request.url.path),
            dict(request.url.params),
            ctype,
            body,
        )
        self.requests.append(req)
        if self.before is not None:
            self.before(req)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        if self.throttle_next > 0:
            self.throttle_next -= 1
            resp = status(429, "TooManyRequests", "Too many requests, please try again later.")
            resp.headers["Retry-After"] = "1"
            return resp
        if self.fail_next:
            code = self.fail_next.pop(0)
            return status(code, "InternalError", "an error on the server has prevented the request")
        if len(raw) > MAX_REQUEST_BYTES:
            return status(413, "RequestEntityTooLarge", "Request entity too large")
        parts = req.path.strip("/").split("/")
        try:
            if parts[:2] == ["api", "v1"] and parts[2] == "namespaces" and parts[4] == "secrets":
                return self._secrets(req, parts[3], parts[5] if len(parts) > 5 else None)
            if parts[:3] == ["apis", "apps", "v1"] and parts[5] in APPS:
                return self._apps(req, parts[5], parts[4], parts[6] if len(parts) > 6 else None)
        except IndexError:
            pass
        return status(404, "NotFound", "the server could not find the requested resource")

    # ------------------------------------------------------------------ secrets

    def _validate(self, name: str, obj: dict[str, Any]) -> httpx2.Response | None:
        data = obj.get("data") or {}
        total = 0
        for key, value in data.items():
            if len(key) > 253 or not KEY_RE.fullmatch(key) or key in (".", ".."):
                return status(
                    422,
                    "Invalid",
                    f'Secret "{name}" is invalid: data[{key}]: Invalid value: "{key}": a valid '
                    "config key must consist of alphanumeric characters, '-', '_' or '.'",
                    name=name,
                    kind="Secret",
                    causes=[{"reason": "FieldValueInvalid", "field": f"data[{key}]"}],
                )
            try:
                total += len(base64.b64decode(value, validate=True))
            except ValueError:
                return status(400, "BadRequest", "illegal base64 data in the value of a Secret key")
        if total > MAX_SECRET_BYTES:
            return status(
                422,
                "Invalid",
                f'Secret "{name}" is invalid: data: Too long: must have at most '
                f"{MAX_SECRET_BYTES} bytes",
                name=name,
                kind="Secret",
                causes=[{"reason": "FieldValueTooLong", "field": "data"}],
            )
        return None

    def _not_found(self, name: str) -> httpx2.Response:
        return status(404, "NotFound", f'secrets "{name}" not found', name=name, kind="secrets")

    def _stale(self, name: str) -> httpx2.Response:
        return status(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on secrets "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            name=name,
            kind="secrets",
        )

    def _secrets(self, req: Request, ns: str, name: str | None) -> httpx2.Response:
        if name is None:
            if req.method != "POST":
                return status(405, "MethodNotAllowed", "method not allowed")
            return self._create(req, ns)
        obj = self.secrets.get((ns, name))
        if req.method == "GET":
            if obj is None:
                return self._not_found(name)
            return httpx2.Response(200, json=self._render(obj))
        if req.method == "DELETE":
            if obj is None:
                return self._not_found(name)
            if self.stale_next_delete > 0:
                self.stale_next_delete -= 1
                obj.body["metadata"]["resourceVersion"] = self._next_rv()
            pre = ((req.body or {}).get("preconditions") or {}).get("resourceVersion")
            if pre is not None and pre != obj.body["metadata"]["resourceVersion"]:
                return self._stale(name)
            del self.secrets[(ns, name)]
            return httpx2.Response(200, json={"kind": "Status", "status": "Success"})
        if req.method == "PUT":
            if obj is None:
                return self._not_found(name)
            pre = (req.body.get("metadata") or {}).get("resourceVersion")
            if pre and pre != obj.body["metadata"]["resourceVersion"]:
                return self._stale(name)
            bad = self._validate(name, req.body)
            if bad is not None:
                return bad
            manager = req.params.get("fieldManager", "unknown")
            before = leaf_fields(obj.body)
            new = copy.deepcopy(req.body)
            new["metadata"] = {**obj.body["metadata"], **(new.get("metadata") or {})}
            after = leaf_fields(new)
            for p in set(before) - set(after):
                for e in obj.managers:
                    e.fields.discard(p)
            for p, v in after.items():
                if before.get(p) != v:
                    for e in obj.managers:
                        e.fields.discard(p)
                    self._entry(obj, manager, "Update").fields.add(p)
            obj.body = new
            self._prune(obj)
            obj.body["metadata"]["resourceVersion"] = self._next_rv()
            return httpx2.Response(200, json=self._render(obj))
        if req.method == "PATCH":
            if "apply-patch" not in req.content_type:
                return status(415, "UnsupportedMediaType", "only apply is modelled for secrets")
            return self._apply(req, ns, name)
        return status(405, "MethodNotAllowed", "method not allowed")

    def _create(self, req: Request, ns: str) -> httpx2.Response:
        body = copy.deepcopy(req.body)
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if (ns, name) in self.secrets:
            return status(
                409,
                "AlreadyExists",
                f'secrets "{name}" already exists',
                name=name,
                kind="secrets",
            )
        bad = self._validate(name, body)
        if bad is not None:
            return bad
        body.setdefault("type", "Opaque")
        meta.update({"namespace": ns, "uid": f"uid-{name}", "resourceVersion": self._next_rv()})
        obj = Obj(body)
        self._entry(obj, req.params.get("fieldManager", "unknown"), "Update").fields.update(
            leaf_fields(body)
        )
        self.secrets[(ns, name)] = obj
        return httpx2.Response(201, json=self._render(obj))

    def _apply(self, req: Request, ns: str, name: str) -> httpx2.Response:
        manager = req.params.get("fieldManager")
        if not manager:
            return status(
                400, "BadRequest", "PATCH with apply requires a fieldManager query parameter"
            )
        force = req.params.get("force") == "true"
        intent = req.body or {}
        applied = leaf_fields(intent)
        obj = self.secrets.get((ns, name))
        created = obj is None
        if obj is None:
            obj = Obj(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"},
                    "type": "Opaque",
                }
            )
        current = leaf_fields(obj.body)
        conflicts: list[tuple[Path_, str]] = []
        for p, v in applied.items():
            if p in current and current[p] == v:
                continue
            for e in obj.managers:
                if (e.manager, e.operation) != (manager, "Apply") and p in e.fields:
                    conflicts.append((p, e.manager))
        if conflicts and not force:
            causes = [
                {
                    "type": "FieldManagerConflict",
                    "message": f'conflict with "{who}" using v1',
                    "field": dotted(p),
                }
                for p, who in conflicts
            ]
            first = conflicts[0]
            msg = (
                f"Apply failed with {len(conflicts)} conflict"
                f'{"s" if len(conflicts) > 1 else ""}: conflict with "{first[1]}" using v1: '
                f"{dotted(first[0])}"
            )
            return status(409, "Conflict", msg, causes=causes)
        new = copy.deepcopy(obj.body)
        mine = self._entry(obj, manager, "Apply")
        released = mine.fields - set(applied)
        others: set[Path_] = set()
        for e in obj.managers:
            if e is not mine:
                if force:
                    e.fields -= {p for p in applied if current.get(p) != applied[p]}
                others |= e.fields
        for p in released:
            if p not in others:
                self._remove(new, p)
        for p, v in applied.items():
            self._set(new, p, v)
        bad = self._validate(name, new)
        if bad is not None:
            self._prune(obj)
            return bad
        mine.fields = set(applied)
        self._prune(obj)
        changed = created or leaf_fields(new) != current
        obj.body = new
        if changed:
            obj.body["metadata"]["resourceVersion"] = self._next_rv()
        self.secrets[(ns, name)] = obj
        return httpx2.Response(201 if created else 200, json=self._render(obj))

    @staticmethod
    def _set(body: dict[str, Any], p: Path_, v: Any) -> None:
        node = body
        for part in p[:-1]:
            node = node.setdefault(part, {})
        node[p[-1]] = v

    @staticmethod
    def _remove(body: dict[str, Any], p: Path_) -> None:
        node: Any = body
        for part in p[:-1]:
            node = node.get(part) or {}
        node.pop(p[-1], None)

    # ------------------------------------------------------------------ apps

    def _apps(self, req: Request, plural: str, ns: str, name: str | None) -> httpx2.Response:
        if name is None and req.method == "GET":
            items = [
                copy.deepcopy(w)
                for (p, n, _), w in sorted(self.workloads.items())
                if p == plural and n == ns
            ]
            return httpx2.Response(
                200,
                json={
                    "kind": APPS[plural] + "List",
                    "apiVersion": "apps/v1",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                },
            )
        if name is None:
            return status(405, "MethodNotAllowed", "method not allowed")
        w = self.workloads.get((plural, ns, name))
        if w is None:
            return status(
                404, "NotFound", f'{plural}.apps "{name}" not found', name=name, kind=plural
            )
        if req.method == "PATCH":
            if not (
                "strategic-merge-patch" in req.content_type or "merge-patch" in req.content_type
            ):
                return status(415, "UnsupportedMediaType", "unsupported patch type")
            before = copy.deepcopy(w["spec"])
            deep_merge(w, req.body or {})
            if w["spec"] != before:
                w["metadata"]["resourceVersion"] = self._next_rv()
            return httpx2.Response(200, json=copy.deepcopy(w))
        if req.method == "GET":
            return httpx2.Response(200, json=copy.deepcopy(w))
        return status(405, "MethodNotAllowed", "method not allowed")
