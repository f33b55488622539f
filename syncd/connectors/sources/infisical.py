"""The ``infisical`` source: one project, environment and folder of Infisical Cloud or a
self-hosted instance, read through Infisical's secrets API.

One read is one ``GET /api/v4/secrets`` (``/api/v3/secrets/raw`` on instances that predate
v4) with ``recursive``, ``include_imports`` and ``expandSecretReferences``. Imported secrets
are merged into the configured folder; the folder's own secrets take precedence over
imported ones, and a later import over an earlier one, as the Infisical CLI does.

Authentication is a machine identity's universal auth (client id and secret exchanged for
an access token at ``POST /api/v1/auth/universal-auth/login``) or a plain access token. A
universal-auth token is kept until shortly before ``expiresIn`` runs out, and renewed once
more when Infisical rejects it (a 401, or the 403 ``TokenError`` it answers for an expired
token); it is never fetched per request.

Anything short of a complete answer (an outage, a 5xx, a 429, a timeout, a body that is
not the documented shape, values hidden from this identity) raises ``SourceReadError``:
the engine retries with backoff and no sync deletes anything because of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from syncd.config_types import Duration
from syncd.connector import BaseSource, ConnectorContext, SourceConfig
from syncd.connectors._http import error_detail, make_client, server_delay
from syncd.errors import SourceReadError
from syncd.logging import get_logger, redactor
from syncd.model import SecretValue, Snapshot, SourceEntry
from syncd.webhooks import verify_infisical

CLOCK_KEY = "clock"
"""``ConnectorContext.extra[CLOCK_KEY]``: monotonic seconds for token expiry (tests inject a
fake clock); ``time.monotonic`` when unset."""
WALL_CLOCK_KEY = "wall_clock"
"""``ConnectorContext.extra[WALL_CLOCK_KEY]``: epoch seconds for webhook timestamps;
``time.time`` when unset."""

LOGIN_PATH = "/api/v1/auth/universal-auth/login"
LIST_PATH_V4 = "/api/v4/secrets"
LIST_PATH_V3 = "/api/v3/secrets/raw"

# a universal-auth token is renewed this long before it expires: a tenth of its lifetime,
# at most a minute (the default access token TTL is 2 hours)
RENEW_MARGIN_MAX = 60.0
RENEW_MARGIN_SHARE = 0.1


class InfisicalAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["universal_auth", "token"] = "universal_auth"
    """``universal_auth``: a machine identity's client id and secret; ``token``: an access
    token (machine identity token auth, or a service token)."""
    client_id: str | None = None
    client_secret: SecretStr | None = None
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _complete(self) -> InfisicalAuth:
        if self.method == "universal_auth":
            missing = [
                n
                for n, v in (("client_id", self.client_id), ("client_secret", self.client_secret))
                if not v or (isinstance(v, SecretStr) and not v.get_secret_value())
            ]
            if missing:
                raise ValueError(
                    f"method universal_auth needs {' and '.join(missing)} (or client_secret_file)"
                )
            if self.token is not None:
                raise ValueError("token is for method: token; remove it or change the method")
        else:
            if self.token is None or not self.token.get_secret_value():
                raise ValueError("method token needs token (or token_file)")
            if self.client_id is not None or self.client_secret is not None:
                raise ValueError(
                    "client_id and client_secret are for method: universal_auth; "
                    "remove them or change the method"
                )
        return self


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
    project_id: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    """The environment slug (``dev``, ``staging``, ``prod``); also ``{environment}`` in key
    templates."""
    path: str = "/"
    """The folder to read; entries are named relative to it."""
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

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        self._clock: Callable[[], float] = context.extra.get(CLOCK_KEY, time.monotonic)
        self._wall: Callable[[], float] = context.extra.get(WALL_CLOCK_KEY, time.time)
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._renew_at: float | None = None  # monotonic; None: no known expiry
        self._login_lock = asyncio.Lock()
        self._list_path = LIST_PATH_V4

    # ------------------------------------------------------------------ identity

    def scope_key(self) -> str:
        c = self.config
        flags = f"r={int(c.recursive)},i={int(c.include_imports)},e={int(c.expand_references)}"
        return f"infisical:{c.host}|{c.project_id}|{c.environment}|{c.path}|{flags}"

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
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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
        delay = None
        if status == 429:
            delay = server_delay(resp.headers, self._wall)
            text += ": rate limited by Infisical" + (
                f", retry after {delay:g}s" if delay is not None else ""
            )
        elif status in (401, 403):
            text += ": check the credentials and the identity's access to the project"
        elif status == 404:
            text += ": check project_id, environment and path"
        return SourceReadError(text, retry_after=delay)

    # ------------------------------------------------------------------ auth

    def _token_fresh(self) -> bool:
        if self._token is None:
            return False
        return self._renew_at is None or self._clock() < self._renew_at

    async def _access_token(self, *, rejected: str | None = None) -> str:
        """The token to send: the kept one while it is fresh and was not ``rejected``."""
        auth = self.config.auth
        if auth.method == "token":
            assert auth.token is not None
            return auth.token.get_secret_value()
        async with self._login_lock:
            # another task may have logged in while this one waited
            if self._token_fresh() and self._token != rejected:
                assert self._token is not None
                return self._token
            await self._login()
            assert self._token is not None
            return self._token

    async def _login(self) -> None:
        auth = self.config.auth
        assert auth.client_id is not None and auth.client_secret is not None
        what = f"universal auth login to {self.config.host}"
        started = self._clock()
        resp = await self._send(
            "login",
            what,
            self._http().post(
                LOGIN_PATH,
                json={
                    "clientId": auth.client_id,
                    "clientSecret": auth.client_secret.get_secret_value(),
                },
            ),
        )
        if not resp.is_success:
            raise self._failure(resp, what)
        try:
            data = resp.json()
        except ValueError:
            raise SourceReadError(f"{what}: the answer is not JSON") from None
        token = data.get("accessToken") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceReadError(f"{what}: the answer has no accessToken")
        redactor.add([token])
        ttl = data.get("expiresIn")
        self._token = token
        if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
            margin = min(RENEW_MARGIN_MAX, RENEW_MARGIN_SHARE * float(ttl))
            self._renew_at = started + float(ttl) - margin
        else:
            self._renew_at = None  # no stated expiry: renewed when Infisical rejects it
        get_logger().debug("infisical login", source=self.name, expires_in=ttl)

    # ------------------------------------------------------------------ reading

    def _params(self, path: str) -> dict[str, str]:
        c = self.config
        project = "projectId" if path == LIST_PATH_V4 else "workspaceId"
        return {
            project: c.project_id,
            "environment": c.environment,
            "secretPath": c.path,
            "recursive": "true" if c.recursive else "false",
            "include_imports": "true" if c.include_imports else "false",
            "expandSecretReferences": "true" if c.expand_references else "false",
        }

    async def _list(self, path: str) -> httpx.Response:
        what = f"GET {path}"
        renewed = False
        while True:
            token = await self._access_token()
            resp = await self._send(
                "list",
                what,
                self._http().get(
                    path,
                    params=self._params(path),
                    headers={"Authorization": f"Bearer {token}"},
                ),
            )
            if (
                _is_token_rejection(resp)
                and self.config.auth.method == "universal_auth"
                and not renewed
            ):
                # expired or revoked early: one fresh login, one more try
                renewed = True
                get_logger().info("infisical token rejected, logging in again", source=self.name)
                await self._access_token(rejected=token)
                continue
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
        return Snapshot(tuple(entries), complete=True, environment=self.config.environment)

    # ------------------------------------------------------------------ parsing

    def _relative(self, secret_path: Any, key: str) -> str:
        root = self.config.path
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

    def _entries(self, data: Any) -> list[SourceEntry]:
        where = f"GET {self._list_path}"
        if not isinstance(data, dict) or not isinstance(data.get("secrets"), list):
            raise SourceReadError(f"{where}: the answer has no secrets list")
        found: dict[tuple[str, str], str] = {}
        for item in data["secrets"]:
            fields = self._secret_fields(item, where)
            if fields is None:
                continue
            key, value = fields
            found[(self._relative(item.get("secretPath"), key), key)] = value
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
                    key, value = fields
                    found.setdefault(("", key), value)
        return [SourceEntry(path, key, SecretValue(v)) for (path, key), v in found.items()]
