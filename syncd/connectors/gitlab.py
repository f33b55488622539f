"""The ``gitlab`` destination: project or group CI/CD variables, through python-gitlab.

python-gitlab is synchronous: every call runs on the destination's own worker threads
with its own retries and rate-limit sleeps switched off, so the core executor alone
retries, waits out ``Retry-After`` / ``RateLimit-Reset`` and paces.

GitLab's rules, as documented for the project- and group-level variables API:

- a key is letters, digits and ``_``, at most 255 characters; the same key may exist once
  per ``environment_scope``, so syncd only reads its own scope and addresses every update
  and delete with ``filter[environment_scope]``;
- a masked value is a single line with no spaces, at least 8 characters; when the
  variable is expanded (``raw: false``) it may only use ``A-Z a-z 0-9`` and
  ``_ + = / @ : . ~ -``;
- ``masked_and_hidden`` is accepted at creation only; a hidden variable's value is never
  returned and its ``masked`` flag cannot change, so a change of ``hidden`` re-creates the
  variable;
- list answers are paginated (``per_page`` at most 100, ``X-Next-Page``);
- throttling is HTTP 429 with ``Retry-After`` (seconds) and ``RateLimit-Reset`` (epoch).

Ownership: syncd writes ``managed by syncd (<sync name>)`` into the variable's
description. GitLab variables carry no version or update time; the ``version`` syncd
records is a digest of the variable's attributes (type, flags, description; never the
value), so out-of-band edits of those, and config changes of ``protected``, ``masked``,
``raw``, ``hidden`` or ``variable_type``, are repaired at the next drift check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal, TypeVar, cast

import gitlab
import requests
from gitlab.exceptions import GitlabError, RedirectError
from gitlab.utils import EncodedId
from pydantic import Field, SecretStr, field_validator, model_validator

from syncd.connector import BaseDestination, Capabilities, ConnectorContext, DestinationConfig
from syncd.connectors._http import report_quota, wall_clock
from syncd.errors import (
    AuthError,
    ConflictError,
    ConnectorError,
    KeyRejected,
    PermanentError,
    QuotaExceeded,
    RateLimited,
    RetryableError,
)
from syncd.model import MASK, Action, Change, ItemOutcome, RemoteEntry, SecretValue
from syncd.retrying import server_wait

T = TypeVar("T")

MARK = "managed by syncd"
_MARK_RE = re.compile(r"managed by syncd(?: \((?P<sync>.*)\))?", re.DOTALL)

PER_PAGE = 100  # the largest page GitLab serves
MAX_DESCRIPTION = 255
# a value GitLab can mask: no whitespace, at least 8 characters; expanded (raw: false)
# masked values are further limited to the Base64 alphabet plus @ : . ~ -
MASK_MIN_LENGTH = 8
_WHITESPACE = frozenset(" \t\r\n\f\v")
_MASK_EXPANDED = re.compile(r"[A-Za-z0-9_+=/@:.~-]+")
# the documented per-container variable limits
PROJECT_VARIABLE_LIMIT = 8000
GROUP_VARIABLE_LIMIT = 30000

# never let python-gitlab retry or sleep on its own: the executor owns both
_NO_RETRY: dict[str, Any] = {"obey_rate_limit": False, "max_retries": 0}


def mark(sync: str) -> str:
    return f"{MARK} ({sync})"


def managed_by(description: str | None) -> str | None:
    """The sync named in an ownership mark, ``""`` if marked without a name, else None."""
    m = _MARK_RE.fullmatch((description or "").strip())
    if m is None:
        return None
    return m.group("sync") or ""


def mask_problem(value: str, raw: bool) -> str | None:
    """Why GitLab cannot mask ``value``, in words that never quote it; None if it can."""
    if len(value) < MASK_MIN_LENGTH:
        return f"the value is shorter than {MASK_MIN_LENGTH} characters"
    if any(c in _WHITESPACE for c in value):
        return "the value is not a single line without spaces"
    if not raw and not _MASK_EXPANDED.fullmatch(value):
        return (
            "the value has characters other than letters, digits and _ + = / @ : . ~ -, "
            "which an expanded variable (raw: false) needs to be masked"
        )
    return None


class GitLabConfig(DestinationConfig):
    type: Literal["gitlab"] = "gitlab"
    url: str = "https://gitlab.com"
    """GitLab's base URL; self-managed instances too (``https://gitlab.example.com``)."""
    token: SecretStr
    """A personal, project or group access token with the ``api`` scope (or ``token_file``)."""
    project: str | int | None = None
    """The project's path (``acme/api``) or numeric id. Give ``project`` or ``group``."""
    group: str | int | None = None
    """The group's path (``acme`` or ``acme/platform``) or numeric id."""
    environment_scope: str = "*"
    """The environment scope syncd writes and owns; variables of other scopes are ignored."""
    protected: bool = False
    """Only pipelines on protected branches and tags see the variables."""
    masked: bool | Literal["auto"] = "auto"
    """``auto``: masked when GitLab can mask the value; ``true``: a value that cannot be
    masked is blocked; ``false``: never masked."""
    hidden: bool = False
    """Masked and hidden: the value is never shown again in the UI or the API. Set at
    creation only; changing it re-creates the variables."""
    raw: bool = True
    """``true``: ``$`` in values is not expanded as a variable reference."""
    variable_type: Literal["env_var", "file"] = "env_var"
    """``file``: jobs get the path of a temporary file holding the value."""
    writes_per_minute: float | None = Field(default=None, gt=0)
    """Pace writes through this token (for instances with tight rate limits); unpaced by
    default."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"https?://[^/\s]+", v):
            raise ValueError(f"expected an http(s) URL such as https://gitlab.com, got {v!r}")
        return v

    @field_validator("environment_scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the environment scope cannot be empty (use '*' for all)")
        return v

    @model_validator(mode="after")
    def _target(self) -> GitLabConfig:
        if (self.project is None) == (self.group is None):
            raise ValueError("give exactly one of project or group")
        if self.hidden and self.masked is False:
            raise ValueError("hidden: true needs masking; remove masked: false")
        return self


class NotFound(PermanentError):
    """HTTP 404: the variable (or the project or group) does not exist."""


class _LastResponse(threading.local):
    """The headers of the last HTTP answer in this worker thread (for Retry-After):
    python-gitlab's exceptions keep the status and message but not the headers."""

    headers: Mapping[str, str] | None = None


def _error_detail(message: Any) -> str:
    """GitLab's error message (validation errors by field), never a request body."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    if isinstance(message, dict):
        parts = []
        for name, errs in message.items():
            texts = errs if isinstance(errs, list) else [errs]
            for t in texts:
                parts.append(str(t) if name == "base" else f"{name} {t}")
        return "; ".join(parts)
    if isinstance(message, list):
        return "; ".join(str(m) for m in message)
    text = str(message or "").strip()
    if text.startswith(("<", "{")):  # an HTML page or an unparsed body: leave it out
        return ""
    return text[:200]


class GitLabDestination(BaseDestination):
    kind: ClassVar[str] = "gitlab"
    Config: ClassVar[type[GitLabConfig]] = GitLabConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=True,
        tags_ownership=True,
        # GitLab documents no value size limit for project and group variables
        max_value_bytes=None,
        key_pattern=r"[A-Za-z0-9_]+",
        key_rule="only letters, digits and underscores are allowed",
        max_key_length=255,
        batch_size=1,
        delete_batch_size=1,
    )
    config: GitLabConfig

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        cfg: GitLabConfig = config
        checks: tuple[Callable[[str, SecretValue], str | None], ...] = ()
        if cfg.hidden or cfg.masked is True:
            checks = (self._must_mask,)
        # per destination: the masking rule depends on this destination's options
        vars(self)["capabilities"] = replace(
            type(self).capabilities,
            max_keys=GROUP_VARIABLE_LIMIT if cfg.group is not None else PROJECT_VARIABLE_LIMIT,
            writes_per_minute=cfg.writes_per_minute,
            value_checks=checks,
        )
        self._gl: gitlab.Gitlab | None = None
        self._last = _LastResponse()

    @staticmethod
    def validate_sync(config: GitLabConfig, sync: Any) -> str | None:
        if len(mark(sync.name)) > MAX_DESCRIPTION:
            return (
                f"the ownership mark {mark(sync.name)!r} would exceed GitLab's "
                f"{MAX_DESCRIPTION}-character description limit: use a shorter sync name"
            )
        return None

    # ------------------------------------------------------------------ plumbing

    @property
    def credential_key(self) -> str:
        """Destinations using one token share its rate limit and concurrency."""
        who = hashlib.sha256(self.config.token.get_secret_value().encode()).hexdigest()[:16]
        return f"gitlab:{self.config.url.lower()}:{who}"

    @property
    def _target(self) -> str:
        if self.config.project is not None:
            return f"project {self.config.project}"
        return f"group {self.config.group}"

    @property
    def _path(self) -> str:
        if self.config.project is not None:
            return f"/projects/{EncodedId(self.config.project)}/variables"
        return f"/groups/{EncodedId(cast(str | int, self.config.group))}/variables"

    def _client(self) -> gitlab.Gitlab:
        if self._gl is None:
            gl = gitlab.Gitlab(
                self.config.url,
                private_token=self.config.token.get_secret_value(),
                timeout=self.config.timeout,
                retry_transient_errors=False,
                user_agent="syncd",
            )
            gl.session.hooks["response"].append(self._remember)
            self._gl = gl
        return self._gl

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last.headers = response.headers

    def _manager(self, gl: gitlab.Gitlab) -> Any:
        if self.config.project is not None:
            return gl.projects.get(self.config.project, lazy=True).variables
        return gl.groups.get(cast(str | int, self.config.group), lazy=True).variables

    async def _call(self, operation: str, what: str, fn: Callable[[gitlab.Gitlab], T]) -> T:
        """One platform call in a worker thread, reported, its failure classified."""
        gl = self._client()

        def run() -> tuple[T | None, ConnectorError | None, str, Mapping[str, str]]:
            self._last.headers = None
            try:
                return fn(gl), None, "ok", self._last.headers or {}
            except GitlabError as exc:
                headers: Mapping[str, str] = self._last.headers or {}
                err = self._classify(exc, what, headers)
                return None, err, str(exc.response_code or "error"), headers
            except requests.Timeout:
                return None, RetryableError(f"{what}: timed out"), "timeout", {}
            except requests.RequestException as exc:
                return (
                    None,
                    RetryableError(
                        f"{what}: cannot reach {self.config.url} ({type(exc).__name__})"
                    ),
                    "error",
                    {},
                )

        result, err, status, headers = await self.in_thread(run)
        self.count(operation, status)
        # GitLab's RateLimit-Remaining/-Reset (not on a 5xx): wait for the window to refill
        # before it runs out
        if not status.startswith("5"):
            report_quota(headers, self.quota, wall_clock(self.context))
        if err is not None:
            raise err
        return cast(T, result)

    def _classify(self, exc: GitlabError, what: str, headers: Mapping[str, str]) -> ConnectorError:
        if isinstance(exc, RedirectError):
            return PermanentError(
                f"{what}: {self.config.url} redirects a write request; "
                "set url to the address GitLab answers on (https, no path)"
            )
        status = exc.response_code
        detail = _error_detail(exc.error_message)
        text = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
        wait = server_wait(status, headers, wall_clock(self.context))
        if status == 429:
            return RateLimited(text, retry_after=wait)
        if status == 401:
            return AuthError(f"{what}: HTTP 401: the token was refused (expired or revoked?)")
        if status == 403:
            role = "Maintainer" if self.config.project is not None else "Owner"
            return AuthError(
                f"{text}: the token needs the api scope and the {role} role on the {self._target}"
            )
        if status == 404:
            return NotFound(text)
        if status == 409:
            return ConflictError(text)
        if status in (400, 422):
            if "has already been taken" in detail:
                return ConflictError(text)
            if "Maximum number" in detail:
                return QuotaExceeded(text)
            return KeyRejected(text)
        if status is None or status in (408, 425) or status >= 500:
            return RetryableError(text, retry_after=wait)
        return PermanentError(text)

    def classify(self, exc: BaseException) -> ConnectorError:
        if isinstance(exc, ConnectorError):
            return exc
        if isinstance(exc, GitlabError):
            return self._classify(exc, "GitLab call", {})
        if isinstance(exc, requests.Timeout):
            return RetryableError("GitLab call: timed out")
        if isinstance(exc, requests.RequestException):
            return RetryableError(f"GitLab call: {type(exc).__name__}")
        return PermanentError(f"GitLab call: {type(exc).__name__}")

    async def aclose(self) -> None:
        if self._gl is not None:
            self._gl.session.close()
            self._gl = None
        self.close_threads()

    # ------------------------------------------------------------------ attributes

    def _wants_masked(self, value: str | None) -> bool:
        if self.config.hidden:
            return True
        if isinstance(self.config.masked, bool):
            return self.config.masked
        return value is not None and mask_problem(value, self.config.raw) is None

    def _must_mask(self, key: str, value: SecretValue) -> str | None:
        problem = mask_problem(value.reveal(), self.config.raw)
        if problem is None:
            return None
        option = "hidden: true" if self.config.hidden else "masked: true"
        return (
            f"{option}, but GitLab cannot mask this value: {problem} "
            "(a masked value must be one line, no spaces, 8 characters or more)"
        )

    @staticmethod
    def _version(item: Mapping[str, Any]) -> str:
        """A digest of the attributes GitLab returns besides the value: the closest thing
        to a version a variable has."""
        attrs = [
            item.get("variable_type") or "env_var",
            bool(item.get("protected")),
            bool(item.get("masked")),
            bool(item.get("hidden")),
            bool(item.get("raw")),
            item.get("description") or "",
        ]
        return hashlib.sha256(json.dumps(attrs).encode()).hexdigest()[:16]

    def _as_configured(self, item: Mapping[str, Any]) -> bool:
        """Does the variable carry the attributes this destination's options ask for?"""
        cfg = self.config
        value = item.get("value")
        return (
            bool(item.get("hidden")) == cfg.hidden
            and (item.get("variable_type") or "env_var") == cfg.variable_type
            and bool(item.get("protected")) == cfg.protected
            and bool(item.get("raw")) == cfg.raw
            and bool(item.get("masked")) == self._wants_masked(value)
            and managed_by(item.get("description")) is not None
        )

    def _body(self, value: str, sync: str) -> dict[str, Any]:
        cfg = self.config
        return {
            "value": value,
            "description": mark(sync),
            "protected": cfg.protected,
            "masked": self._wants_masked(value),
            "raw": cfg.raw,
            "variable_type": cfg.variable_type,
        }

    # ------------------------------------------------------------------ the contract

    async def check(self) -> None:
        def first_page(gl: gitlab.Gitlab) -> requests.Response:
            return gl.http_request(
                "get", self._path, query_data={"per_page": 1, "page": 1}, **_NO_RETRY
            )

        await self._call("list", f"read the variables of {self._target}", first_page)

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        scope = self.config.environment_scope
        out: dict[str, RemoteEntry] = {}
        page = 1
        seen: set[int] = set()
        while page not in seen:
            seen.add(page)

            def fetch(gl: gitlab.Gitlab, page: int = page) -> requests.Response:
                return gl.http_request(
                    "get", self._path, query_data={"per_page": PER_PAGE, "page": page}, **_NO_RETRY
                )

            what = f"list the variables of {self._target} (page {page})"
            resp = await self._call("list", what, fetch)
            try:
                items = resp.json()
            except ValueError:
                raise RetryableError(f"{what}: the answer is not JSON") from None
            if not isinstance(items, list):
                raise PermanentError(f"{what}: unexpected answer")
            for item in items:
                if not isinstance(item, dict) or item.get("environment_scope", "*") != scope:
                    continue
                out[str(item["key"])] = self._entry(item)
            nxt = (resp.headers.get("X-Next-Page") or "").strip()
            if not nxt.isdigit():
                break
            page = int(nxt)
        return out

    def _entry(self, item: Mapping[str, Any]) -> RemoteEntry:
        version = self._version(item)
        value = item.get("value")
        configured = self._as_configured(item)
        if not configured:
            # attributes differ from the options: no value, so the planner re-sends it
            version = f"stale:{version}"
        return RemoteEntry(
            str(item["key"]),
            SecretValue(value) if isinstance(value, str) and configured else None,
            version=version,
            managed_by=managed_by(item.get("description")),
            meta={
                "hidden": bool(item.get("hidden")),
                "masked": bool(item.get("masked")),
                "environment_scope": item.get("environment_scope", "*"),
            },
        )

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        out = []
        for c in changes:
            assert c.desired is not None
            value = c.desired.value.reveal()
            try:
                version = await self._write(c, value)
                out.append(ItemOutcome(c.key, version=version))
            except ConnectorError as exc:
                out.append(ItemOutcome(c.key, error=_scrub(exc, value)))
        return out

    async def _write(self, c: Change, value: str) -> str:
        scope = {"environment_scope": self.config.environment_scope}
        body = self._body(value, c.sync)
        remote = c.remote
        if c.action is Action.CREATE:
            return await self._create(c.key, body)
        if remote is not None and bool(remote.meta.get("hidden")) != self.config.hidden:
            # hidden is set at creation only: delete, then create with the new setting
            await self._delete_one(c.key)
            return await self._create(c.key, body)

        def update(gl: gitlab.Gitlab) -> dict[str, Any]:
            result = self._manager(gl).update(c.key, body, filter=scope, **_NO_RETRY)
            return cast(dict[str, Any], result)

        try:
            item = await self._call("put", f"update {c.key}", update)
        except NotFound:
            # gone since syncd last listed: create it again
            return await self._create(c.key, body)
        return self._version(item)

    async def _create(self, key: str, body: dict[str, Any]) -> str:
        data = {"key": key, **body, "environment_scope": self.config.environment_scope}
        if self.config.hidden:
            data["masked_and_hidden"] = True

        def create(gl: gitlab.Gitlab) -> dict[str, Any]:
            obj = self._manager(gl).create(data, **_NO_RETRY)
            return cast(dict[str, Any], obj.attributes)

        item = await self._call("create", f"create {key}", create)
        return self._version(item)

    async def _delete_one(self, key: str) -> None:
        scope = {"environment_scope": self.config.environment_scope}

        def delete(gl: gitlab.Gitlab) -> None:
            self._manager(gl).delete(key, filter=scope, **_NO_RETRY)

        with contextlib.suppress(NotFound):  # already gone counts as deleted
            await self._call("delete", f"delete {key}", delete)

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        out = []
        for c in changes:
            try:
                await self._delete_owned(c)
                out.append(ItemOutcome(c.key))
            except ConnectorError as exc:
                out.append(ItemOutcome(c.key, error=exc))
        return out

    async def _delete_owned(self, c: Change) -> None:
        """Delete only a variable whose description still names this sync."""
        if c.remote is not None:
            owner = c.remote.managed_by
        else:
            scope = {"environment_scope": self.config.environment_scope}

            def get(gl: gitlab.Gitlab) -> dict[str, Any]:
                obj = self._manager(gl).get(c.key, filter=scope, **_NO_RETRY)
                return cast(dict[str, Any], obj.attributes)

            try:
                item = await self._call("get", f"read {c.key}", get)
            except NotFound:
                return  # already gone
            owner = managed_by(item.get("description"))
        if owner != c.sync:
            raise ConflictError(
                f"{c.key}: not deleted: its description no longer says {mark(c.sync)!r} "
                "(changed out of band); delete it by hand or restore the mark"
            )
        await self._delete_one(c.key)


def _scrub(exc: ConnectorError, value: str) -> ConnectorError:
    """Belt and braces: an error message never carries the value it was about."""
    if value and value in str(exc):
        retry_after = getattr(exc, "retry_after", None)
        text = str(exc).replace(value, MASK)
        if isinstance(exc, RetryableError):
            return type(exc)(text, retry_after=retry_after)
        return type(exc)(text)
    return exc
