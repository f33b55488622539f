"""The ``infisical`` source: one project, environment and folder of Infisical Cloud or a
self-hosted instance, read through Infisical's secrets API.

One read is one ``GET /api/v4/secrets`` (``/api/v3/secrets/raw`` on instances that predate
v4) with ``recursive``, ``include_imports`` and ``expandSecretReferences``. Imported secrets
are merged into the configured folder; the folder's own secrets take precedence over
imported ones, and a later import over an earlier one, as the Infisical CLI does.

Authentication: every machine-identity login Infisical offers (universal auth,
Kubernetes, AWS IAM, GCP, Azure, OIDC, JWT, LDAP; :mod:`.logins`), or a token used as it is
(token auth, or a legacy ``st.`` service token, whose project and single scope are read from
``GET /api/v2/service-token`` when the config leaves them out). The token is kept and
renewed as :class:`.auth.TokenKeeper` says; never fetched per request.

``tags`` reads only the secrets carrying one of those tag slugs (``tagSlugs``); each
entry keeps its tags, so ``include``/``exclude`` patterns of the form ``tag:<slug glob>``
select by tag too.

Anything short of a complete answer (an outage, a 5xx, a 429, a timeout, a body that is
not the documented shape, values hidden from this identity) raises ``SourceReadError``:
the engine retries with backoff and no sync deletes anything because of it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator, model_validator

from syncd.config_types import Duration
from syncd.connector import BaseSource, ConnectorContext, SourceConfig
from syncd.connectors._http import error_detail, make_client, wall_clock
from syncd.connectors.sources.infisical.auth import InfisicalAuth, TokenKeeper
from syncd.connectors.sources.infisical.logins import BODIES, METADATA_TIMEOUT, LoginEnv
from syncd.errors import SourceReadError
from syncd.logging import get_logger
from syncd.model import SecretValue, Snapshot, SourceEntry
from syncd.retrying import server_wait
from syncd.webhooks import verify_infisical

CLOCK_KEY = "clock"
"""``ConnectorContext.extra[CLOCK_KEY]``: monotonic seconds for token expiry (tests inject a
fake clock); ``time.monotonic`` when unset."""

SERVICE_TOKEN_PATH = "/api/v2/service-token"
LIST_PATH_V4 = "/api/v4/secrets"
LIST_PATH_V3 = "/api/v3/secrets/raw"


def normalize_folder(path: str) -> str:
    """An Infisical folder as the API writes it: ``/`` or ``/a/b`` (no trailing slash)."""
    parts = [p for p in path.strip().split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"expected an Infisical folder such as / or /app/payments, got {path!r}")
    return "/" + "/".join(parts)


class InfisicalSourceConfig(SourceConfig):
    type: Literal["infisical"] = "infisical"
    host: str = "https://app.infisical.com"
    """Infisical Cloud (``https://app.infisical.com``, ``https://eu.infisical.com``) or a
    self-hosted instance's URL."""
    project_id: str | None = Field(default=None, min_length=1)
    """The project's id. Required, except with a legacy service token (its project)."""
    environment: str | None = Field(default=None, min_length=1)
    """The environment slug (``dev``, ``staging``, ``prod``); also ``{environment}`` in key
    templates. Required, except with a service token scoped to one environment."""
    path: str = "/"
    """The folder to read; entries are named relative to it (a service token's own folder
    when it is scoped to one and this is left at ``/``)."""
    tags: list[str] = Field(default_factory=list)
    """Only the secrets carrying one of these tag slugs. Each entry keeps its tags, so
    ``include``/``exclude`` patterns ``tag:<slug>`` (globs) select by tag as well."""
    recursive: bool = False
    """Also read every sub-folder (``payments/STRIPE_KEY``)."""
    include_imports: bool = True
    """Merge secrets imported into the folder; the folder's own values take precedence."""
    expand_references: bool = True
    """Let Infisical expand ``${KEY}`` and ``${env.folder.KEY}`` references."""
    auth: InfisicalAuth
    webhook_tolerance: Duration = 300.0
    """Signed webhook timestamps older (or newer) than this are refused as replays."""
    timeout: Duration = 30.0
    """Seconds one API call may take before the read counts as failed."""

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v.endswith("/api"):
            v = v[: -len("/api")]
        try:
            url = httpx.URL(v)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected a URL such as https://app.infisical.com, got {v!r}")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return normalize_folder(v)

    @model_validator(mode="after")
    def _target(self) -> InfisicalSourceConfig:
        if self.auth.is_service_token:
            return self
        missing = [n for n in ("project_id", "environment") if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"expected {' and '.join(missing)} (only a service token knows its own)"
            )
        return self


def config_warnings(config: InfisicalSourceConfig) -> list[str]:
    """What ``syncd validate`` says of an otherwise valid config."""
    if config.auth.is_service_token:
        return [
            "auth.token is a service token (st.…): Infisical deprecates service tokens; "
            "move to a machine identity (universal_auth, kubernetes, aws_iam, oidc, …)"
        ]
    return []


def _is_token_rejection(resp: httpx.Response) -> bool:
    """Infisical refuses an expired or revoked token with 401, or 403 ``TokenError``."""
    if resp.status_code == 401:
        return True
    if resp.status_code != 403:
        return False
    try:
        data = resp.json()
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("error") == "TokenError"


class InfisicalSource(BaseSource):
    kind: ClassVar[str] = "infisical"
    Config: ClassVar[type[InfisicalSourceConfig]] = InfisicalSourceConfig
    config: InfisicalSourceConfig
    config_warnings = staticmethod(config_warnings)

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        self._clock: Callable[[], float] = context.extra.get(CLOCK_KEY, time.monotonic)
        # epoch seconds: webhook timestamps, token exp, Retry-After dates
        self._wall = wall_clock(context)
        self._client: httpx.AsyncClient | None = None
        self._metadata: httpx.AsyncClient | None = None
        auth = config.auth
        self.keeper: TokenKeeper | None = None
        if auth.method != "token":
            body = BODIES[auth.method]
            self.keeper = TokenKeeper(
                auth.method,
                lambda: body(auth, LoginEnv(self._metadata_http(), wall=self._wall)),
                self._post,
                self._failure,
                clock=self._clock,
                wall=self._wall,
                source=name,
            )
        # a service token's own project and scope, once read
        self._target: tuple[str, str, str] | None = None
        self._list_path = LIST_PATH_V3 if auth.is_service_token else LIST_PATH_V4

    # ------------------------------------------------------------------ identity

    def scope_key(self) -> str:
        c = self.config
        flags = f"r={int(c.recursive)},i={int(c.include_imports)},e={int(c.expand_references)}"
        tags = ",".join(sorted(c.tags))
        return f"infisical:{c.host}|{c.project_id}|{c.environment}|{c.path}|{flags}|t={tags}"

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """``x-infisical-signature: t=<ms>;<hex HMAC-SHA256 of the body>``, within
        ``webhook_tolerance``."""
        secret = self.config.webhook_secret
        if secret is None:
            return False
        return verify_infisical(
            secret.get_secret_value(),
            headers,
            body,
            self.config.webhook_tolerance,
            clock=self._wall,
        )

    async def aclose(self) -> None:
        for client in (self._client, self._metadata):
            if client is not None:
                await client.aclose()
        self._client = self._metadata = None

    # ------------------------------------------------------------------ calls

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(
                self.context,
                self.config.host,
                headers={"Accept": "application/json"},
                timeout=self.config.timeout,
            )
        return self._client

    def _metadata_http(self) -> httpx.AsyncClient:
        """For cloud metadata and CI token endpoints: short timeouts, no base URL."""
        if self._metadata is None:
            self._metadata = make_client(
                self.context, "", headers={"Accept": "application/json"}, timeout=METADATA_TIMEOUT
            )
        return self._metadata

    async def _post(self, operation: str, path: str, body: dict[str, Any]) -> httpx.Response:
        what = f"{self.config.auth.method} {operation} at {self.config.host}"
        return await self._send(operation, what, self._http().post(path, json=body))

    def _report(self, operation: str, status: str) -> None:
        self.context.on_api_call(self.name, operation, status)

    async def _send(
        self, operation: str, what: str, request: Awaitable[httpx.Response]
    ) -> httpx.Response:
        """One HTTP call, reported; transport failures become SourceReadError."""
        try:
            resp = await request
        except httpx.TimeoutException:
            self._report(operation, "timeout")
            raise SourceReadError(f"{what}: timed out after {self.config.timeout:g}s") from None
        except httpx.TransportError as exc:
            self._report(operation, "error")
            raise SourceReadError(
                f"{what}: cannot reach {self.config.host} ({type(exc).__name__})"
            ) from None
        self._report(operation, "ok" if resp.is_success else str(resp.status_code))
        return resp

    def _failure(self, resp: httpx.Response, what: str) -> SourceReadError:
        detail = error_detail(resp)
        text = f"{what}: HTTP {resp.status_code}" + (f" ({detail})" if detail else "")
        status = resp.status_code
        # Retry-After on any answer; x-ratelimit-reset (sent on every answer) only on a 429
        delay = server_wait(status, resp.headers, self._wall)
        if status == 429:
            text += ": rate limited by Infisical" + (
                f", retry after {delay:g}s" if delay is not None else ""
            )
        elif status in (401, 403):
            text += ": check the credentials and the identity's access to the project"
        elif status == 404:
            text += ": check project_id, environment and path"
        return SourceReadError(text, retry_after=delay, throttled=status == 429)

    # ------------------------------------------------------------------ auth

    async def _access_token(self, *, rejected: str | None = None) -> str:
        """The token to send: the kept one while it is fresh and was not ``rejected``."""
        if self.keeper is None:
            token = self.config.auth.token
            assert token is not None
            return token.get_secret_value()
        return await self.keeper.get(rejected=rejected)

    async def _service_token_target(self) -> tuple[str, str, str]:
        """(project, environment, folder) to read with a service token: the config's, else
        the token's own (its project, and its one scope when it has a single, exact one)."""
        if self._target is not None:
            return self._target
        c = self.config
        project, env, folder = c.project_id, c.environment, c.path
        if project is None or env is None:
            what = f"GET {SERVICE_TOKEN_PATH}"
            token = await self._access_token()
            resp = await self._send(
                "service_token",
                what,
                self._http().get(SERVICE_TOKEN_PATH, headers={"Authorization": f"Bearer {token}"}),
            )
            if not resp.is_success:
                raise self._failure(resp, what)
            try:
                data = resp.json()
            except ValueError:
                raise SourceReadError(f"{what}: the answer is not JSON") from None
            project = project or (data.get("workspace") if isinstance(data, dict) else None)
            scopes = data.get("scopes") if isinstance(data, dict) else None
            exact = [
                s
                for s in scopes or []
                if isinstance(s, dict) and "*" not in str(s.get("secretPath", "*"))
            ]
            if env is None:
                if len(exact) != 1 or len(scopes or []) != 1:
                    raise SourceReadError(
                        f"{what}: the service token has {len(scopes or [])} scopes; set "
                        "environment (and path) to say which to read"
                    )
                env = str(exact[0].get("environment") or "")
                if folder == "/":
                    folder = normalize_folder(str(exact[0].get("secretPath") or "/"))
            if not project or not env:
                raise SourceReadError(f"{what}: the answer names no project or environment")
        self._target = (project, env, folder)
        return self._target

    # ------------------------------------------------------------------ reading

    async def _params(self, path: str) -> dict[str, str]:
        c = self.config
        project, env, folder = (
            await self._service_token_target()
            if c.auth.is_service_token
            else (c.project_id or "", c.environment or "", c.path)
        )
        params = {
            "projectId" if path == LIST_PATH_V4 else "workspaceId": project,
            "environment": env,
            "secretPath": folder,
            "recursive": "true" if c.recursive else "false",
            "include_imports": "true" if c.include_imports else "false",
            "expandSecretReferences": "true" if c.expand_references else "false",
        }
        if c.tags:
            params["tagSlugs"] = ",".join(c.tags)
        return params

    async def _list(self, path: str) -> httpx.Response:
        what = f"GET {path}"
        token = await self._access_token()
        for attempt in (1, 2):
            resp = await self._send(
                "list",
                what,
                self._http().get(
                    path,
                    params=await self._params(path),
                    headers={"Authorization": f"Bearer {token}"},
                ),
            )
            if attempt == 1 and _is_token_rejection(resp) and self.keeper is not None:
                # expired or revoked early: one fresh login, one more try with its token
                get_logger().info("infisical token rejected, logging in again", source=self.name)
                token = await self._access_token(rejected=token)
                continue
            break
        return resp

    async def _fetch(self) -> Any:
        resp = await self._list(self._list_path)
        if resp.status_code == 404 and self._list_path == LIST_PATH_V4:
            # instances older than the v4 secrets API: the v3 raw endpoint, remembered
            old = await self._list(LIST_PATH_V3)
            if old.is_success:
                self._list_path = LIST_PATH_V3
                resp = old
        if not resp.is_success:
            raise self._failure(resp, f"GET {self._list_path}")
        try:
            return resp.json()
        except ValueError:
            raise SourceReadError(
                f"GET {self._list_path}: the answer is not complete JSON"
            ) from None

    async def snapshot(self) -> Snapshot:
        data = await self._fetch()
        entries = self._entries(data)
        environment = self._target[1] if self._target else self.config.environment or ""
        return Snapshot(tuple(entries), complete=True, environment=environment)

    # ------------------------------------------------------------------ parsing

    def _relative(self, secret_path: Any, key: str) -> str:
        root = self._target[2] if self._target else self.config.path
        if secret_path is None:
            return ""
        try:
            folder = normalize_folder(secret_path)
        except (AttributeError, ValueError):
            raise SourceReadError(f"{key}: the answer has an invalid secretPath") from None
        if folder == root:
            return ""
        prefix = "/" if root == "/" else root + "/"
        if not folder.startswith(prefix):
            raise SourceReadError(f"{key}: the answer holds a secret in {folder}, outside {root}")
        if not self.config.recursive:
            raise SourceReadError(f"{key}: the answer holds a sub-folder secret without recursive")
        return folder[len(prefix) :] + "/"

    @staticmethod
    def _secret_fields(item: Any, where: str) -> tuple[str, str] | None:
        """(key, value) of one listed secret, None for a personal override."""
        if not isinstance(item, dict):
            raise SourceReadError(f"{where}: the answer lists something that is not a secret")
        key = item.get("secretKey")
        if not isinstance(key, str) or not key:
            raise SourceReadError(f"{where}: a secret has no secretKey")
        if item.get("type", "shared") == "personal":
            return None
        if item.get("secretValueHidden") is True:
            raise SourceReadError(
                f"{where}: the value of {key} is hidden from this identity; "
                "give it permission to read secret values"
            )
        value = item.get("secretValue")
        if not isinstance(value, str):
            raise SourceReadError(f"{where}: {key} has no secretValue")
        return key, value

    @staticmethod
    def _tags(item: Any) -> tuple[str, ...]:
        tags = item.get("tags") if isinstance(item, dict) else None
        return tuple(str(t["slug"]) for t in tags or [] if isinstance(t, dict) and t.get("slug"))

    def _entries(self, data: Any) -> list[SourceEntry]:
        where = f"GET {self._list_path}"
        if not isinstance(data, dict) or not isinstance(data.get("secrets"), list):
            raise SourceReadError(f"{where}: the answer has no secrets list")
        wanted = set(self.config.tags)
        found: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
        for item in data["secrets"]:
            fields = self._secret_fields(item, where)
            if fields is None:
                continue
            key, value = fields
            found[(self._relative(item.get("secretPath"), key), key)] = (value, self._tags(item))
        if self.config.include_imports:
            imports = data.get("imports")
            if not isinstance(imports, list):
                raise SourceReadError(
                    f"{where}: include_imports is set but the answer has no imports"
                )
            # the folder's own secrets win; among imports, the last one listed wins
            for imp in reversed(imports):
                if not isinstance(imp, dict) or not isinstance(imp.get("secrets"), list):
                    raise SourceReadError(f"{where}: an import has no secrets list")
                for item in imp["secrets"]:
                    fields = self._secret_fields(item, where)
                    if fields is None:
                        continue
                    tags = self._tags(item)
                    if wanted and not wanted & set(tags):
                        continue  # the tag filter holds for imported secrets too
                    key, value = fields
                    found.setdefault(("", key), (value, tags))
        return [
            SourceEntry(path, key, SecretValue(v), tags) for (path, key), (v, tags) in found.items()
        ]
