"""The ``kubernetes`` destination: the keys of one Secret, written with server-side apply.

One Secret may be shared: several syncs (and people, and other tools) may each own some
of its keys. Ownership is per key and Kubernetes itself keeps it: every write is a
server-side apply (``PATCH`` with ``application/apply-patch+yaml``) under the field manager
``syncd/<sync>``, so ``metadata.managedFields`` records which manager owns which
``data`` key. An apply carries every key that manager wants to keep (what it owns now,
plus the changes); a key left out of it is released, and Kubernetes removes it from the
Secret when no other manager owns it. A key someone else owns is never touched unless the
planner adopts it (``on_conflict: overwrite``), which is a forced apply of that key.

The Secret is created (``POST``) when absent, labelled ``app.kubernetes.io/managed-by:
syncd``; it is deleted only when it carries that label and the last key goes, with a
``resourceVersion`` precondition so a key written meanwhile by anyone keeps it alive.

After a change, ``restart`` rolls Deployments, StatefulSets and DaemonSets the way
``kubectl rollout restart`` does: a patch of their pod template's ``syncd.io/restartedAt``
annotation. ``restart: auto`` finds the workloads whose pod template uses the Secret.

The connection comes from a kubeconfig (``kubeconfig``, ``context``) or, by default, from
the pod's service account; lightkube loads either (tokens, client certificates, exec
plugins, the cluster's CA) and builds the HTTP client, and this module makes the calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import field_validator, model_validator

from syncd.config_types import ConfigPath
from syncd.connector import (
    AfterChange,
    BaseDestination,
    Capabilities,
    ConnectorContext,
    DestinationConfig,
)
from syncd.connectors._http import TRANSPORT_KEY, wall_clock
from syncd.errors import (
    AuthError,
    ConflictError,
    ConnectorError,
    KeyRejected,
    PermanentError,
    RateLimited,
    RetryableError,
)
from syncd.model import Action, Change, ItemOutcome, RemoteEntry, SecretValue
from syncd.retrying import server_wait

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_KEY = "kubernetes_service_account_dir"
"""``ConnectorContext.extra[SERVICE_ACCOUNT_KEY]``: the service-account folder read for
in-cluster config (token, ca.crt, namespace); tests point it at a temporary folder."""

MAX_SECRET_BYTES = 1024 * 1024
"""Kubernetes' limit on a Secret: the values of ``data``, decoded, 1 MiB in all."""
MAX_KEY_LENGTH = 253
KEY_PATTERN = r"[-._a-zA-Z0-9]+"
MANAGED_BY = "app.kubernetes.io/managed-by"
RESTARTED_AT = "syncd.io/restartedAt"
MANAGER_PREFIX = "syncd/"
RESTART_MANAGER = "syncd"
DELETE_ATTEMPTS = 5
"""A delete refused as stale (409: the Secret changed since it was read) is read again and
retried this many times in one call before it counts as a retryable failure."""

WORKLOADS = {
    "deployment": ("deployments", "Deployment"),
    "statefulset": ("statefulsets", "StatefulSet"),
    "daemonset": ("daemonsets", "DaemonSet"),
}

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _dots(key: str, size: int) -> str | None:
    if key in (".", ".."):
        return f"invalid key name: Kubernetes refuses {key!r} as a Secret key"
    if key.startswith(".."):
        return "invalid key name: a Secret key must not start with '..'"
    return None


def manager_of(sync: str) -> str:
    """The field manager every write of this sync uses."""
    return MANAGER_PREFIX + sync


class KubernetesConfig(DestinationConfig):
    type: Literal["kubernetes"] = "kubernetes"
    namespace: str | None = None
    """The Secret's namespace. Default: the kubeconfig context's namespace, or the pod's
    own namespace in-cluster."""
    secret: str
    """The Secret's name."""
    secret_type: str = "Opaque"
    """The type a Secret syncd creates gets; an existing Secret of another type is
    refused (Kubernetes never changes a Secret's type)."""
    labels: dict[str, str] = {}
    """Labels syncd sets on the Secret (and owns, as its field manager)."""
    annotations: dict[str, str] = {}
    """Annotations syncd sets on the Secret (and owns)."""
    kubeconfig: ConfigPath | None = None
    """A kubeconfig file (relative to the config file). Default: the pod's service
    account (in-cluster config)."""
    context: str | None = None
    """A context of ``kubeconfig``. Default: its current-context."""
    restart: list[str] | Literal["auto"] | None = None
    """After a run that changed something here (and failed nothing): roll these workloads
    (``deployment/web``, ``statefulset/db``, ``daemonset/agent``), or ``auto``: every
    Deployment, StatefulSet and DaemonSet of the namespace whose pod template uses the
    Secret."""

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        if len(v) > MAX_KEY_LENGTH or not _DNS_SUBDOMAIN.fullmatch(v):
            raise ValueError(
                f"{v!r} is not a valid Secret name: lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit, at most 253 characters"
            )
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 63 or not _DNS_LABEL.fullmatch(v)):
            raise ValueError(
                f"{v!r} is not a valid namespace: lower-case letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters"
            )
        return v

    @field_validator("restart")
    @classmethod
    def _restart(cls, v: list[str] | str | None) -> list[str] | str | None:
        if not isinstance(v, list):
            return v
        if not v:
            raise ValueError("expected at least one workload, 'auto', or leave restart out")
        for item in v:
            kind, _, name = item.partition("/")
            if kind not in WORKLOADS or not name or not _DNS_SUBDOMAIN.fullmatch(name):
                raise ValueError(
                    f"{item!r}: expected deployment/NAME, statefulset/NAME or daemonset/NAME"
                )
        if len(set(v)) != len(v):
            raise ValueError("a workload is listed twice")
        return v

    @model_validator(mode="after")
    def _connection(self) -> KubernetesConfig:
        if self.context is not None and self.kubeconfig is None:
            raise ValueError(
                "context names a context of a kubeconfig file: set kubeconfig too, or "
                "leave context out for the pod's service account"
            )
        if MANAGED_BY in self.labels:
            raise ValueError(f"the label {MANAGED_BY} is syncd's own: leave it out of labels")
        return self


@dataclass(frozen=True)
class Workload:
    kind: str  # deployment | statefulset | daemonset
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def references_secret(template: Mapping[str, Any], secret: str) -> bool:
    """Whether a pod template uses the Secret: ``envFrom[].secretRef``,
    ``env[].valueFrom.secretKeyRef`` (containers and initContainers), ``volumes[].secret``
    or a projected volume's ``sources[].secret``."""
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        return False
    for group in ("containers", "initContainers"):
        for c in _dicts(spec.get(group)):
            for ef in _dicts(c.get("envFrom")):
                ref = ef.get("secretRef")
                if isinstance(ref, Mapping) and ref.get("name") == secret:
                    return True
            for ev in _dicts(c.get("env")):
                vf = ev.get("valueFrom")
                ref = vf.get("secretKeyRef") if isinstance(vf, Mapping) else None
                if isinstance(ref, Mapping) and ref.get("name") == secret:
                    return True
    for vol in _dicts(spec.get("volumes")):
        sv = vol.get("secret")
        if isinstance(sv, Mapping) and sv.get("secretName") == secret:
            return True
        projected = vol.get("projected")
        if isinstance(projected, Mapping):
            for src in _dicts(projected.get("sources")):
                ps = src.get("secret")
                if isinstance(ps, Mapping) and ps.get("name") == secret:
                    return True
    return False


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def data_owners(secret: Mapping[str, Any]) -> dict[str, set[str]]:
    """``data`` key → the field managers owning it, from ``metadata.managedFields``."""
    out: dict[str, set[str]] = {}
    meta = secret.get("metadata") or {}
    for entry in _dicts(meta.get("managedFields")):
        manager = entry.get("manager")
        fields = entry.get("fieldsV1")
        if not isinstance(manager, str) or not isinstance(fields, Mapping):
            continue
        data = fields.get("f:data")
        if not isinstance(data, Mapping):
            continue
        for name in data:
            if isinstance(name, str) and name.startswith("f:"):
                out.setdefault(name[2:], set()).add(manager)
    return out


def _decode(raw: Any) -> str | None:
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _size(raw: Any) -> int:
    if not isinstance(raw, str):
        return 0
    try:
        return len(base64.b64decode(raw))
    except binascii.Error:
        return 0


def _encode(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def too_large(total: int) -> str:
    return (
        f"the Secret would hold {total:,} bytes of data, over Kubernetes' limit of "
        f"{MAX_SECRET_BYTES:,} bytes (1 MiB) for one Secret"
    )


class KubernetesDestination(BaseDestination):
    kind: ClassVar[str] = "kubernetes"
    Config: ClassVar[type[KubernetesConfig]] = KubernetesConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=True,
        tags_ownership=True,
        max_value_bytes=MAX_SECRET_BYTES,
        key_pattern=KEY_PATTERN,
        key_rule="letters, digits, '-', '_' and '.' (Kubernetes' rule for Secret keys)",
        max_key_length=MAX_KEY_LENGTH,
        batch_size=1000,
        delete_batch_size=1000,
        extra_checks=(_dots,),
    )
    config: KubernetesConfig

    def __init__(self, name: str, config: KubernetesConfig, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        self._client: Any = None
        self._namespace: str | None = config.namespace
        # every write of this destination reads the Secret, then applies: one at a time
        self._lock = asyncio.Lock()
        self._restart_stamp: str | None = None

    # ------------------------------------------------------------------ connection

    def _load(self) -> tuple[Any, str]:
        """The lightkube SingleConfig and its namespace."""
        from lightkube.config.kubeconfig import KubeConfig
        from lightkube.core.exceptions import ConfigError as KubeConfigError

        cfg = self.config
        try:
            if cfg.kubeconfig is not None:
                path = Path(cfg.kubeconfig).expanduser()
                single = KubeConfig.from_file(path).get(context_name=cfg.context)
            else:
                folder = self.context.extra.get(SERVICE_ACCOUNT_KEY, SERVICE_ACCOUNT_DIR)
                missing = [
                    v
                    for v in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
                    if not os.environ.get(v)
                ]
                if missing:
                    raise AuthError(
                        f"kubernetes: no kubeconfig set and not running in a pod ({missing[0]} "
                        "is unset): set kubeconfig, or run syncd in the cluster"
                    )
                single = KubeConfig.from_service_account(service_account=folder).get()
        except (KubeConfigError, OSError, KeyError, ValueError) as exc:
            where = cfg.kubeconfig or "the service account"
            raise AuthError(
                f"kubernetes: cannot load the connection from {where}: {type(exc).__name__}"
                + (f" ({exc})" if isinstance(exc, KubeConfigError) else "")
            ) from None
        if single is None:
            raise AuthError("kubernetes: the kubeconfig has no context to use")
        return single, self.config.namespace or single.namespace

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx2
            from lightkube.config.client_adapter import AsyncClient, ConnectionParams

            single, namespace = self._load()
            self._namespace = namespace
            params = ConnectionParams(
                timeout=httpx2.Timeout(float(self.config.timeout)),
                transport=self.context.extra.get(TRANSPORT_KEY),
            )
            self._client = AsyncClient(single, params)
        return self._client

    @property
    def namespace(self) -> str:
        _ = self.client
        assert self._namespace is not None
        return self._namespace

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await super().aclose()

    def _secret_path(self) -> str:
        return (
            f"/api/v1/namespaces/{quote(self.namespace, safe='')}/secrets/"
            f"{quote(self.config.secret, safe='')}"
        )

    def _where(self) -> str:
        return f"Secret {self.namespace}/{self.config.secret}"

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call, counted; transport failures come out classified. Returns the
        httpx2 response, any status."""
        import httpx2

        client = self.client
        headers = {"Accept": "application/json", "User-Agent": "syncd"}
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body).encode()
        try:
            resp = await client.request(
                method, path, params=dict(params or {}), content=content, headers=headers
            )
        except httpx2.TimeoutException:
            self.count(operation, "error")
            raise RetryableError(f"kubernetes {operation}: timed out") from None
        except httpx2.TransportError as exc:
            self.count(operation, "error")
            raise RetryableError(f"kubernetes {operation}: {type(exc).__name__}") from None
        self.count(operation, "ok" if resp.is_success else str(resp.status_code))
        return resp

    @staticmethod
    def _status(resp: Any) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _failure(self, resp: Any, what: str, verb: str | None = None) -> ConnectorError:
        """A non-2xx answer as the core's taxonomy, with the API's Status reason and
        message (Kubernetes never quotes Secret values in them)."""
        status = self._status(resp)
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or "")
        detail = ": ".join(p for p in (reason, message[:300]) if p)
        code = resp.status_code
        text = f"kubernetes {what} ({self._where()}): HTTP {code}" + (
            f" ({detail})" if detail else ""
        )
        if code == 429:
            wait = server_wait(code, dict(resp.headers), wall_clock(self.context))
            return RateLimited(text, retry_after=wait)
        if code in (401, 403):
            hint = f"; the Role must allow {verb}" if verb and code == 403 else ""
            return AuthError(text + hint)
        if code == 409:
            return ConflictError(text)
        if code in (400, 413, 422):
            return KeyRejected(text)
        if code in (408, 425) or code >= 500:
            wait = server_wait(code, dict(resp.headers), wall_clock(self.context))
            return RetryableError(text, retry_after=wait)
        return PermanentError(text)

    def classify(self, exc: BaseException) -> ConnectorError:
        if isinstance(exc, ConnectorError):
            return exc
        return PermanentError(f"kubernetes: {type(exc).__name__}")

    # ------------------------------------------------------------------ reading

    async def _get_secret(self) -> dict[str, Any] | None:
        resp = await self._call("get", "GET", self._secret_path())
        if resp.status_code == 404:
            return None
        if not resp.is_success:
            raise self._failure(resp, "read", "get on secrets")
        body = self._status(resp)
        if body.get("kind") not in (None, "Secret"):
            raise RetryableError(f"kubernetes read ({self._where()}): unexpected answer")
        return body

    async def check(self) -> None:
        """The Secret can be read (or is absent, to be created), and is of our type."""
        secret = await self._get_secret()
        if secret is not None:
            self._check_type(secret)

    def _check_type(self, secret: Mapping[str, Any]) -> None:
        have = secret.get("type") or "Opaque"
        if have != self.config.secret_type:
            raise PermanentError(
                f"kubernetes: {self._where()} is of type {have}, and this destination says "
                f"secret_type: {self.config.secret_type}; Kubernetes never changes a Secret's "
                "type: set secret_type to match, or name another Secret"
            )

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        """Every key of the Secret, one GET: values decoded, the Secret's
        ``resourceVersion`` as each key's version, its owners from managedFields."""
        secret = await self.read(self._get_secret)
        if secret is None:
            return {}
        self._check_type(secret)
        version = str((secret.get("metadata") or {}).get("resourceVersion") or "") or None
        owners = data_owners(secret)
        data = secret.get("data") or {}
        out: dict[str, RemoteEntry] = {}
        for key, raw in data.items():
            value = _decode(raw)
            managers = sorted(owners.get(key, set()))
            syncs = [m[len(MANAGER_PREFIX) :] for m in managers if m.startswith(MANAGER_PREFIX)]
            out[key] = RemoteEntry(
                key,
                SecretValue(value) if value is not None else None,
                version,
                syncs[0] if syncs else None,
                {"managers": managers},
            )
        return out

    # ------------------------------------------------------------------ writing

    def _apply_body(self, secret: Mapping[str, Any] | None, data: Mapping[str, str]) -> Any:
        """Everything this sync's field manager wants to own: syncd's label where syncd
        created the Secret, the configured labels and annotations, and ``data``."""
        labels = dict(self.config.labels)
        if secret is None or self._created_by_syncd(secret):
            labels[MANAGED_BY] = "syncd"
        metadata: dict[str, Any] = {"name": self.config.secret, "namespace": self.namespace}
        if labels:
            metadata["labels"] = labels
        if self.config.annotations:
            metadata["annotations"] = dict(self.config.annotations)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata}
        body["data"] = dict(data)
        return body

    @staticmethod
    def _created_by_syncd(secret: Mapping[str, Any]) -> bool:
        labels = (secret.get("metadata") or {}).get("labels") or {}
        return isinstance(labels, Mapping) and labels.get(MANAGED_BY) == "syncd"

    async def _create(self, sync: str) -> dict[str, Any] | None:
        """POST the Secret, empty, labelled as syncd's; None when someone created it
        meanwhile (read it again)."""
        labels = {**self.config.labels, MANAGED_BY: "syncd"}
        metadata: dict[str, Any] = {
            "name": self.config.secret,
            "namespace": self.namespace,
            "labels": labels,
        }
        if self.config.annotations:
            metadata["annotations"] = dict(self.config.annotations)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": self.config.secret_type,
        }
        path = f"/api/v1/namespaces/{quote(self.namespace, safe='')}/secrets"
        resp = await self._call(
            "create", "POST", path, params={"fieldManager": manager_of(sync)}, body=body
        )
        if resp.status_code == 409:
            return None
        if not resp.is_success:
            raise self._failure(resp, "create", "create on secrets")
        created: dict[str, Any] = self._status(resp)
        return created

    async def _apply(self, sync: str, body: Any, *, force: bool) -> Any:
        params = {"fieldManager": manager_of(sync), "force": "true" if force else "false"}
        return await self._call(
            "apply",
            "PATCH",
            self._secret_path(),
            params=params,
            body=body,
            content_type="application/apply-patch+yaml",
        )

    def _conflicts(self, resp: Any) -> tuple[dict[str, str], list[str]]:
        """From a 409 apply answer: data key → the manager it conflicts with, and the
        conflicting fields outside ``data``."""
        keys: dict[str, str] = {}
        other: list[str] = []
        details = self._status(resp).get("details")
        causes = details.get("causes") if isinstance(details, Mapping) else None
        for cause in _dicts(causes):
            field = str(cause.get("field") or "")
            m = re.search(r'conflict with "([^"]*)"', str(cause.get("message") or ""))
            who = m.group(1) if m else "another field manager"
            if field.startswith(".data."):
                keys[field[len(".data.") :]] = who
            elif field:
                other.append(f"{field} (owned by {who})")
        return keys, other

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        async with self._lock:
            try:
                return await self._upsert(changes)
            except ConnectorError as exc:
                return [ItemOutcome(c.key, error=exc) for c in changes]

    async def _upsert(self, changes: Sequence[Change]) -> list[ItemOutcome]:
        outcomes: dict[str, ItemOutcome] = {}
        sync = changes[0].sync if changes else ""
        secret = await self._get_secret()
        if secret is None:
            secret = await self._create(sync) or await self._get_secret()
            if secret is None:
                raise RetryableError(f"kubernetes: {self._where()} vanished while created")
        self._check_type(secret)
        data: dict[str, str] = dict(secret.get("data") or {})
        owners = data_owners(secret)
        ours = {k for k, m in owners.items() if manager_of(sync) in m and k in data}

        body_data = {k: data[k] for k in ours}
        total = sum(_size(v) for k, v in data.items())
        sending: list[Change] = []
        for c in changes:
            if c.desired is None:
                outcomes[c.key] = ItemOutcome(c.key, error=PermanentError("nothing to write"))
                continue
            after = total - _size(data.get(c.key)) + c.desired.value.size
            if after > MAX_SECRET_BYTES:
                outcomes[c.key] = ItemOutcome(
                    c.key, error=KeyRejected(f"{c.key}: not written: {too_large(after)}")
                )
                continue
            total = after
            body_data[c.key] = _encode(c.desired.value.reveal())
            sending.append(c)
        if not sending:
            return [outcomes[c.key] for c in changes]

        # adopting or updating keys the planner gave to this sync takes them over; a new
        # key someone else wrote since the listing is a conflict, never overwritten
        force = all(c.action in (Action.ADOPT, Action.UPDATE) for c in sending)
        resp = await self._apply(sync, self._apply_body(secret, body_data), force=force)
        if resp.status_code == 409 and not force:
            keys, other = self._conflicts(resp)
            if not keys and not other:
                # a 409 that names no field: nothing to decide a forced apply on
                err = self._failure(resp, "apply", "patch on secrets")
                return [outcomes.get(c.key) or ItemOutcome(c.key, error=err) for c in changes]
            if other:
                refused = ConflictError(
                    f"kubernetes: {self._where()}: fields syncd sets are owned by another "
                    f"field manager with another value: {', '.join(other)}; change labels or "
                    "annotations to match, or leave them out"
                )
                return [outcomes.get(c.key) or ItemOutcome(c.key, error=refused) for c in changes]
            for c in sending:
                who = keys.get(c.key)
                if who is not None and c.action is Action.CREATE:
                    outcomes[c.key] = ItemOutcome(
                        c.key,
                        error=ConflictError(
                            f"{c.key}: written meanwhile by field manager {who!r} with another "
                            "value: not overwritten (it is theirs)"
                        ),
                    )
                    if c.key in data and c.key in ours:
                        body_data[c.key] = data[c.key]
                    else:
                        body_data.pop(c.key, None)
            sending = [c for c in sending if c.key not in outcomes]
            if not sending:
                return [outcomes[c.key] for c in changes]
            resp = await self._apply(sync, self._apply_body(secret, body_data), force=True)
        if not resp.is_success:
            err = self._failure(resp, "apply", "patch on secrets")
            for c in sending:
                outcomes[c.key] = ItemOutcome(c.key, error=err)
            return [outcomes[c.key] for c in changes]
        self._restart_stamp = None  # new values: the next restart is a new rollout
        applied = self._status(resp)
        version = str((applied.get("metadata") or {}).get("resourceVersion") or "") or None
        for c in sending:
            outcomes[c.key] = ItemOutcome(c.key, version=version)
        return [outcomes[c.key] for c in changes]

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        async with self._lock:
            try:
                await self._delete(changes)
            except ConnectorError as exc:
                return [ItemOutcome(c.key, error=exc) for c in changes]
            self._restart_stamp = None
            return [ItemOutcome(c.key) for c in changes]

    async def _delete(self, changes: Sequence[Change]) -> None:
        """Release the keys (an apply without them); the Secret itself goes when syncd
        created it and no key is left."""
        sync = changes[0].sync if changes else ""
        gone = {c.key for c in changes}
        for _ in range(DELETE_ATTEMPTS):
            secret = await self._get_secret()
            if secret is None:
                return
            data: dict[str, str] = dict(secret.get("data") or {})
            owners = data_owners(secret)
            mine = manager_of(sync)
            ours = {k for k, m in owners.items() if mine in m and k in data}
            if not gone & ours:
                return  # none of them is this sync's any more: nothing to release
            keep = {k: data[k] for k in ours - gone}
            # keys that stay: ours kept, and every key another manager owns (or nobody)
            stays = set(keep) | {k for k in data if k not in gone or owners.get(k, set()) - {mine}}
            if not stays and self._created_by_syncd(secret):
                if await self._delete_secret(secret):
                    return
                continue  # changed since read: read again
            resp = await self._apply(sync, self._apply_body(secret, keep), force=False)
            if not resp.is_success:
                raise self._failure(resp, "apply", "patch on secrets")
            applied = self._status(resp)
            if not (applied.get("data") or {}) and self._created_by_syncd(applied):
                if await self._delete_secret(applied):
                    return
                continue
            return
        raise RetryableError(
            f"kubernetes delete ({self._where()}): the Secret kept changing while syncd "
            f"removed its last keys ({DELETE_ATTEMPTS} tries)"
        )

    async def _delete_secret(self, secret: Mapping[str, Any]) -> bool:
        """DELETE with a resourceVersion precondition: False when the Secret changed since
        it was read (409), True when it is gone."""
        rv = (secret.get("metadata") or {}).get("resourceVersion")
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": rv},
        }
        resp = await self._call("delete", "DELETE", self._secret_path(), body=body)
        if resp.status_code == 409:
            return False
        if resp.status_code == 404 or resp.is_success:
            return True
        raise self._failure(resp, "delete", "delete on secrets")

    # ------------------------------------------------------------------ after a change

    def after_change_enabled(self) -> bool:
        return bool(self.config.restart)

    async def _workloads(self) -> list[Workload]:
        restart = self.config.restart
        if isinstance(restart, list):
            return [Workload(*ref.split("/", 1)) for ref in restart]
        found: list[Workload] = []
        ns = quote(self.namespace, safe="")
        for kind, (plural, _label) in WORKLOADS.items():
            params: dict[str, str] = {"limit": "500"}
            pages = 0
            while True:
                resp = await self._call(
                    "list workloads",
                    "GET",
                    f"/apis/apps/v1/namespaces/{ns}/{plural}",
                    params=params,
                )
                if not resp.is_success:
                    raise self._failure(resp, f"list {plural}", f"list on {plural}")
                body = self._status(resp)
                for obj in _dicts(body.get("items")):
                    found_name = (obj.get("metadata") or {}).get("name")
                    pod = (obj.get("spec") or {}).get("template") or {}
                    if isinstance(found_name, str) and references_secret(pod, self.config.secret):
                        found.append(Workload(kind, found_name))
                cont = (body.get("metadata") or {}).get("continue")
                pages += 1
                if not cont or pages >= 100:
                    break
                params = {"limit": "500", "continue": str(cont)}
        return sorted(found, key=lambda w: (list(WORKLOADS).index(w.kind), w.name))

    def _restart_what(self, workloads: Sequence[Workload]) -> str:
        names = ", ".join(str(w) for w in workloads)
        return f"rollout restart of {names} (namespace {self.namespace})"

    async def describe_after_change(self) -> str:
        workloads = await self._workloads()
        if not workloads:
            return self._nothing_to_restart()
        return self._restart_what(workloads)

    def _nothing_to_restart(self) -> str:
        return (
            f"rollout restart: no Deployment, StatefulSet or DaemonSet in namespace "
            f"{self.namespace} uses Secret {self.config.secret}, none"
        )

    async def after_change(self) -> AfterChange:
        """Patch each workload's pod template annotation ``syncd.io/restartedAt``, as
        ``kubectl rollout restart`` does. A retry after a failure reuses the timestamp
        (until a new write lands), so a workload already patched is not rolled twice."""
        workloads = await self._workloads()
        if not workloads:
            return AfterChange(self._nothing_to_restart())
        if self._restart_stamp is None:
            now = datetime.fromtimestamp(wall_clock(self.context)(), UTC)
            self._restart_stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        stamp = self._restart_stamp
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        ns = quote(self.namespace, safe="")
        for w in workloads:
            plural = WORKLOADS[w.kind][0]
            resp = await self._call(
                "restart",
                "PATCH",
                f"/apis/apps/v1/namespaces/{ns}/{plural}/{quote(w.name, safe='')}",
                params={"fieldManager": RESTART_MANAGER},
                body=patch,
                content_type="application/strategic-merge-patch+json",
            )
            if not resp.is_success:
                raise self._failure(resp, f"restart {w}", f"patch on {plural}")
        self._restart_stamp = None
        return AfterChange(self._restart_what(workloads), f"restartedAt {stamp}")
