"""The ``github`` destination: GitHub Actions secrets of a repository, an environment or an
organization, through PyGithub.

GitHub never returns a secret's value, so the planner decides from the state store's
fingerprints; the listing gives each secret's ``updated_at``, recorded as the version, so an
out-of-band edit or deletion shows up as drift at the next drift check.

Every HTTP call goes through PyGithub's ``Requester`` (auth, GitHub App installation tokens,
GitHub Enterprise Server base URLs, error objects) on the destination's own worker threads
(``in_thread``), one request per call, so that each is counted and translated here.
PyGithub's conveniences are not used for the writes: ``create_secret`` fetches the scope's
public key on every call,
where syncd fetches it once per run and scope. PyGithub's internal retries and request
spacing are switched off: the core's executor owns retries, ``Retry-After`` and pacing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import requests
from github import Auth, Github, GithubException
from nacl.public import PublicKey, SealedBox
from pydantic import SecretStr, field_validator, model_validator

from syncd.connector import (
    BaseDestination,
    Capabilities,
    ConnectorContext,
    DestinationConfig,
    RateLimit,
)
from syncd.connectors._http import report_quota, wall_clock
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

API_VERSION = "2022-11-28"
# "Secrets are limited to 48 KB in size" (48 KiB of the UTF-8 value)
MAX_VALUE_BYTES = 48 * 1024
# at most 100 secrets a repository, 100 an environment, 1,000 an organization
SCOPE_LIMITS = {"repository": 100, "environment": 100, "organization": 1000}
# list endpoints take per_page up to 100
PER_PAGE = 100
MAX_PAGES = 50
# GitHub's secondary limit: no more than 80 content-generating requests a minute (and 500 an
# hour) per user or installation; one write a second stays under it with room for a person
WRITES_PER_MINUTE = 60.0
# GitHub's documented secondary limit: 500 content-creating requests an hour
WRITES_PER_HOUR = 500
# a secondary limit answered without retry-after, with primary quota left: wait at least a minute
SECONDARY_LIMIT_WAIT = 60.0

Scope = Literal["repository", "environment", "organization"]
Visibility = Literal["all", "private", "selected"]


def _q(part: str) -> str:
    """One URL path segment."""
    return urllib.parse.quote(part.strip(), safe="")


def _repo_name(value: str) -> tuple[str, str]:
    owner, sep, name = value.strip().partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ValueError(f"expected OWNER/NAME such as acme/api, got {value!r}")
    return owner, name


class GitHubConfig(DestinationConfig):
    type: Literal["github"] = "github"
    api_url: str = "https://api.github.com"
    """REST API root; GitHub Enterprise Server: ``https://HOST/api/v3``."""
    token: SecretStr | None = None
    """A fine-grained or classic personal access token (or ``token_file``)."""
    app_id: int | None = None
    """GitHub App authentication: the app's id, with ``private_key`` and ``installation_id``."""
    private_key: SecretStr | None = None
    """The GitHub App's PEM private key (or ``private_key_file``)."""
    installation_id: int | None = None
    """The app's installation id on the account that owns the target."""
    scope: Scope = "repository"
    """Where the secrets live: ``repository``, ``environment`` or ``organization``."""
    repository: str | None = None
    """OWNER/NAME, for scope repository and environment."""
    environment: str | None = None
    """The deployment environment's name, for scope environment."""
    organization: str | None = None
    """The organization's login, for scope organization."""
    visibility: Visibility | None = None
    """Organization secrets: which repositories may use them (all, private or selected)."""
    selected_repositories: tuple[str, ...] = ()
    """Organization secrets with ``visibility: selected``: repositories (NAME or ORG/NAME) given
    access when syncd writes a secret. Repositories given access by other means keep it."""
    concurrency: int = 1
    """GitHub asks integrations to make requests serially; raise with care."""
    writes_per_minute: float | None = WRITES_PER_MINUTE
    """Spacing of writes through this credential (null: unpaced, for a GitHub Enterprise
    Server without rate limits). GitHub.com allows 80 content-generating requests a minute."""

    writes_per_hour: int | None = WRITES_PER_HOUR
    """Content-creating requests an hour through this credential: GitHub.com allows 500;
    syncd waits for room before it would pass them (null: no hourly pacing)."""

    @field_validator("writes_per_hour")
    @classmethod
    def _hourly(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("expected a number of writes an hour above 0, or null")
        return v

    @field_validator("writes_per_minute")
    @classmethod
    def _pace(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("expected a number of writes a minute above 0, or null (unpaced)")
        return v

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        parsed = urllib.parse.urlparse(v)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"expected an http(s) URL such as https://api.github.com, got {v!r}")
        if parsed.query or parsed.fragment:
            raise ValueError("the API URL takes no query or fragment")
        return v.rstrip("/")

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str | None) -> str | None:
        if v is not None:
            _repo_name(v)
            return v.strip()
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GitHubConfig:
        app = (self.app_id, self.private_key, self.installation_id)
        if self.token is not None and any(a is not None for a in app):
            raise ValueError("give token, or app_id + private_key + installation_id, not both")
        if self.token is None:
            missing = [
                n
                for n, v in (
                    ("app_id", self.app_id),
                    ("private_key", self.private_key),
                    ("installation_id", self.installation_id),
                )
                if v is None
            ]
            if len(missing) == 3:
                raise ValueError(
                    "credentials are missing: give token (or token_file), or app_id + "
                    "private_key (or private_key_file) + installation_id"
                )
            if missing:
                raise ValueError(f"GitHub App authentication also needs {', '.join(missing)}")
        if self.scope in ("repository", "environment") and not self.repository:
            raise ValueError(f"scope {self.scope} needs repository (OWNER/NAME)")
        if self.scope == "environment" and not self.environment:
            raise ValueError("scope environment needs environment (the environment's name)")
        if self.scope != "environment" and self.environment is not None:
            raise ValueError("environment is only used with scope: environment")
        if self.scope == "organization":
            if not self.organization:
                raise ValueError("scope organization needs organization (the org's login)")
            if self.repository is not None:
                raise ValueError("repository is not used with scope: organization")
            if self.visibility is None:
                raise ValueError(
                    "scope organization needs visibility: all, private or selected "
                    "(which repositories may use the secrets)"
                )
            if self.selected_repositories and self.visibility != "selected":
                raise ValueError("selected_repositories is only used with visibility: selected")
            for name in self.selected_repositories:
                if "/" in name:
                    owner, _ = _repo_name(name)
                    if owner.lower() != self.organization.lower():
                        raise ValueError(
                            f"selected repository {name!r} is not in organization "
                            f"{self.organization!r}"
                        )
                elif not name.strip():
                    raise ValueError("a selected repository name is empty")
        else:
            if self.organization is not None:
                raise ValueError("organization is only used with scope: organization")
            if self.visibility is not None or self.selected_repositories:
                raise ValueError(
                    "visibility and selected_repositories are only used with scope: organization"
                )
        return self


# ---------------------------------------------------------------------------- errors


def _message(data: Any) -> str:
    """GitHub's error message: never a request body, which is all syncd ever sends a value in."""
    if isinstance(data, Mapping):
        msg = data.get("message")
        if isinstance(msg, str):
            msg = " ".join(msg.split())
            return msg if len(msg) <= 200 else msg[:197] + "..."
    return ""


def _lower(headers: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


def is_rate_limited(status: int, headers: Mapping[str, str], message: str) -> bool:
    """GitHub answers a primary or secondary rate limit with 403 or 429."""
    if status == 429:
        return True
    if status != 403:
        return False
    return (
        headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in headers
        or "rate limit" in message.lower()
    )


def rate_limit_delay(headers: Mapping[str, str], clock: Callable[[], float] = time.time) -> float:
    """How long GitHub asks to wait on a rate-limit answer: ``retry-after`` if given; else,
    with the primary quota spent (``x-ratelimit-remaining: 0``), until ``x-ratelimit-reset``;
    else (a secondary limit without a header) at least a minute, as GitHub documents."""
    # x-ratelimit-reset is the primary window's: a reason to wait only when that quota is spent
    delay = server_wait(None, headers, clock, throttled=False)
    return delay if delay is not None else SECONDARY_LIMIT_WAIT


def classify_github(
    exc: GithubException, what: str, clock: Callable[[], float] = time.time
) -> ConnectorError:
    """A GitHub error answer as the core's taxonomy, named by ``what`` was being done."""
    status = int(exc.status or 0)
    headers = _lower(exc.headers)
    message = _message(exc.data)
    text = f"{what}: HTTP {status}" + (f" ({message})" if message else "")
    if is_rate_limited(status, headers, message):
        return RateLimited(text, retry_after=rate_limit_delay(headers, clock))
    if status in (401, 403):
        return AuthError(text)
    if status == 404:
        return AuthError(f"{what}: not found, or the credentials cannot see it (HTTP 404)")
    if status == 409:
        return ConflictError(text)
    if status in (400, 422):
        return KeyRejected(text)
    if status in (408, 425) or status >= 500:
        # GitHub sends x-ratelimit-reset on every answer: no reason to wait for it here
        return RetryableError(text, retry_after=server_wait(status, headers, clock))
    return PermanentError(text)


def classify_other(
    exc: BaseException, what: str, clock: Callable[[], float] = time.time
) -> ConnectorError:
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, GithubException):
        return classify_github(exc, what, clock)
    if isinstance(exc, requests.Timeout):
        return RetryableError(f"{what}: timed out")
    if isinstance(exc, requests.RequestException):
        return RetryableError(f"{what}: {type(exc).__name__}")
    return PermanentError(f"{what}: {type(exc).__name__}")


# ---------------------------------------------------------------------------- the destination


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    data: Any


def _status(err: ConnectorError) -> str:
    """The ``status`` label of a counted call."""
    return "throttled" if isinstance(err, RateLimited) else "error"


def seal(public_key: PublicKey, value: SecretValue) -> str:
    """The value in a libsodium sealed box for the scope's public key, base64-encoded."""
    box = SealedBox(public_key)
    return base64.b64encode(box.encrypt(value.reveal().encode("utf-8"))).decode("ascii")


class GitHubDestination(BaseDestination):
    kind: ClassVar[str] = "github"
    Config: ClassVar[type[GitHubConfig]] = GitHubConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=False,
        tags_ownership=False,
        max_value_bytes=MAX_VALUE_BYTES,
        # letters, digits, underscores; not a digit first; never the reserved GITHUB_ prefix.
        # Names are case-insensitive and stored upper-case: the core upper-cases keys first.
        key_pattern=r"(?!GITHUB_)[A-Z_][A-Z0-9_]*",
        key_rule=(
            "letters, digits and underscores only, not starting with a digit or with GITHUB_"
        ),
        case_insensitive_keys=True,
        max_keys=SCOPE_LIMITS["repository"],
        writes_per_minute=WRITES_PER_MINUTE,
    )
    config: GitHubConfig

    def __init__(self, name: str, config: GitHubConfig, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        # the per-scope count limit (an organization holds 1,000 secrets, not 100) and the
        # configured pacing
        self.__dict__["capabilities"] = replace(
            type(self).capabilities,
            max_keys=SCOPE_LIMITS[config.scope],
            writes_per_minute=config.writes_per_minute,
            rate_limits=(
                (
                    RateLimit(
                        config.writes_per_hour,
                        3600.0,
                        f"{config.writes_per_hour} content-creating requests an hour",
                    ),
                )
                if config.writes_per_hour
                else ()
            ),
        )
        self._gh: Github | None = None
        self._client_lock = asyncio.Lock()
        self._key_lock = asyncio.Lock()
        self._repo_lock = asyncio.Lock()
        self._public_key: tuple[str, PublicKey] | None = None
        self._selected_ids: list[int] | None = None
        self._base = self._scope_path()

    # ------------------------------------------------------------------ plumbing

    @property
    def credential_key(self) -> str:
        """Destinations writing through one credential share one pacing budget."""
        cfg = self.config
        if cfg.token is not None:
            who = hashlib.sha256(cfg.token.get_secret_value().encode()).hexdigest()[:16]
        else:
            who = f"app-{cfg.app_id}-{cfg.installation_id}"
        return f"github:{cfg.api_url.lower()}:{who}"

    def _scope_path(self) -> str:
        cfg = self.config
        if cfg.scope == "organization":
            assert cfg.organization is not None
            return f"/orgs/{_q(cfg.organization)}/actions/secrets"
        assert cfg.repository is not None
        owner, repo = _repo_name(cfg.repository)
        if cfg.scope == "environment":
            assert cfg.environment is not None
            return f"/repos/{_q(owner)}/{_q(repo)}/environments/{_q(cfg.environment)}/secrets"
        return f"/repos/{_q(owner)}/{_q(repo)}/actions/secrets"

    @property
    def _label(self) -> str:
        cfg = self.config
        if cfg.scope == "organization":
            return f"organization {cfg.organization}"
        if cfg.scope == "environment":
            return f"environment {cfg.environment} of {cfg.repository}"
        return f"repository {cfg.repository}"

    def _make_client(self) -> tuple[Github, Auth.Auth]:
        cfg = self.config
        auth: Auth.Auth
        if cfg.token is not None:
            auth = Auth.Token(cfg.token.get_secret_value().strip())
        else:
            assert cfg.private_key is not None and cfg.app_id is not None
            assert cfg.installation_id is not None
            pem = cfg.private_key.get_secret_value().strip()
            if "\\n" in pem and "\n" not in pem:  # a PEM squeezed into one environment line
                pem = pem.replace("\\n", "\n")
            auth = Auth.AppAuth(cfg.app_id, pem).get_installation_auth(cfg.installation_id)
        gh = Github(
            auth=auth,
            base_url=cfg.api_url,
            timeout=max(1, math.ceil(cfg.timeout)),
            user_agent="syncd",
            per_page=PER_PAGE,
            retry=None,  # the executor retries, honouring retry-after and the reset time
            seconds_between_requests=None,  # the executor paces writes
            seconds_between_writes=None,
            api_version=API_VERSION,
        )
        return gh, gh.requester.auth or auth

    async def _client(self) -> Github:
        async with self._client_lock:
            if self._gh is None:
                gh, auth = self._make_client()
                if self.config.token is None:
                    # the installation token, fetched up front so that the call is counted;
                    # it lasts an hour, longer than a run
                    what = f"GitHub App installation {self.config.installation_id} token"
                    try:
                        await asyncio.to_thread(lambda: auth.token)
                    except Exception as exc:
                        err = classify_other(exc, what, wall_clock(self.context))
                        if not isinstance(exc, GithubException | requests.RequestException):
                            err = AuthError(
                                f"{what}: the private_key could not sign a JWT "
                                f"({type(exc).__name__})"
                            )
                        self.count("token", _status(err))
                        await asyncio.to_thread(gh.close)
                        raise err from None
                    self.count("token")
                self._gh = gh
            return self._gh

    async def _call(
        self,
        operation: str,
        verb: str,
        url: str,
        *,
        what: str,
        parameters: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        accept: Collection[int] = (),
    ) -> _Answer:
        """One HTTP call, counted, with errors translated (and nothing chained to them).
        An error status listed in ``accept`` comes back as an answer instead."""
        gh = await self._client()

        def do() -> tuple[dict[str, Any], Any]:
            return gh.requester.requestJsonAndCheck(verb, url, parameters=parameters, input=body)

        try:
            headers, data = await self.in_thread(do)
        except GithubException as exc:
            status = int(exc.status or 0)
            report_quota(exc.headers or {}, self.quota)
            if status in accept:
                self.count(operation)
                return _Answer(status, _lower(exc.headers), exc.data)
            err = classify_github(exc, what, wall_clock(self.context))
            self.count(operation, _status(err))
            raise err from None
        except Exception as exc:
            err = classify_other(exc, what, wall_clock(self.context))
            self.count(operation, _status(err))
            raise err from None
        self.count(operation)
        report_quota(headers or {}, self.quota)  # the primary quota, before it runs out
        return _Answer(200, _lower(headers), data)

    async def _pages(
        self, operation: str, url: str, item: str, *, what: str, accept: Collection[int] = ()
    ) -> list[Mapping[str, Any]] | None:
        """Every item of a paginated list, 100 a page, following GitHub's ``Link`` header.
        None if the first page answered with a status listed in ``accept``."""
        out: list[Mapping[str, Any]] = []
        total: int | None = None
        for page in range(1, MAX_PAGES + 1):
            answer = await self._call(
                operation,
                "GET",
                url,
                what=what,
                parameters={"per_page": PER_PAGE, "page": page},
                accept=accept if page == 1 else (),
            )
            if answer.status != 200:
                return None
            data = answer.data
            items = data.get(item) if isinstance(data, Mapping) else None
            if not isinstance(data, Mapping) or not isinstance(items, list):
                raise RetryableError(f"{what}: the answer had no {item!r} list")
            out.extend(i for i in items if isinstance(i, Mapping))
            if isinstance(data.get("total_count"), int):
                total = data["total_count"]
            link = answer.headers.get("link", "")
            more = 'rel="next"' in link or (
                not link and len(items) == PER_PAGE and (total is None or len(out) < total)
            )
            if not more or not items:
                break
        else:
            raise PermanentError(f"{what}: the listing did not end after {MAX_PAGES} pages")
        if total is not None and len(out) < total:
            # a short listing would read as deletions: better to list again
            raise RetryableError(f"{what}: got {len(out)} of {total} entries")
        return out

    async def _key(self) -> tuple[str, PublicKey]:
        """The scope's public key: fetched once per run (a destination lives one run)."""
        async with self._key_lock:
            if self._public_key is None:
                answer = await self._call(
                    "public_key",
                    "GET",
                    f"{self._base}/public-key",
                    what=f"public key of {self._label}",
                )
                try:
                    key_id = str(answer.data["key_id"])
                    key = PublicKey(base64.b64decode(answer.data["key"]))
                except Exception as exc:
                    raise PermanentError(
                        f"public key of {self._label}: unexpected answer ({type(exc).__name__})"
                    ) from None
                self._public_key = (key_id, key)
            return self._public_key

    async def _configured_repo_ids(self) -> list[int]:
        """``selected_repositories`` as repository ids, resolved once per run."""
        async with self._repo_lock:
            if self._selected_ids is None:
                org = self.config.organization or ""
                ids: list[int] = []
                for name in self.config.selected_repositories:
                    owner, repo = _repo_name(name) if "/" in name else (org, name.strip())
                    answer = await self._call(
                        "get_repository",
                        "GET",
                        f"/repos/{_q(owner)}/{_q(repo)}",
                        what=f"selected repository {owner}/{repo}",
                        accept=(404,),
                    )
                    repo_id = answer.data.get("id") if isinstance(answer.data, Mapping) else None
                    if answer.status == 404 or not isinstance(repo_id, int):
                        raise PermanentError(
                            f"selected repository {owner}/{repo} not found, or the credentials "
                            "cannot see it"
                        )
                    ids.append(repo_id)
                self._selected_ids = ids
            return list(self._selected_ids)

    async def _current_repo_ids(self, key: str) -> list[int]:
        """The repositories an organization secret is shared with now (kept on update)."""
        repos = await self._pages(
            "list_repositories",
            f"{self._base}/{_q(key)}/repositories",
            "repositories",
            what=f"repositories of organization secret {key}",
            # gone (404), or not shared with selected repositories (409): nothing to keep
            accept=(404, 409),
        )
        return [int(r["id"]) for r in repos or [] if isinstance(r.get("id"), int)]

    async def _selected_repository_ids(self, change: Change) -> list[int]:
        """The configured repositories plus every repository the secret is shared with now:
        an update never takes access away."""
        wanted = await self._configured_repo_ids()
        keep: list[int] = []
        if change.action is not Action.CREATE:
            visibility = change.remote.meta.get("visibility") if change.remote else None
            if visibility in (None, "selected"):
                keep = await self._current_repo_ids(change.key)
        return keep + [i for i in wanted if i not in keep]

    async def _updated_at(self, key: str) -> str | None:
        """The secret's updated_at after a write, recorded so that later edits show as drift."""
        try:
            answer = await self._call(
                "get", "GET", f"{self._base}/{_q(key)}", what=f"secret {key} in {self._label}"
            )
        except ConnectorError:
            return None  # the write landed; the next listing records the version
        value = answer.data.get("updated_at") if isinstance(answer.data, Mapping) else None
        return str(value) if value else None

    # ------------------------------------------------------------------ the contract

    async def check(self) -> None:
        await self._key()
        if self.config.scope == "organization" and self.config.visibility == "selected":
            await self._configured_repo_ids()

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        secrets = await self._pages(
            "list", self._base, "secrets", what=f"list secrets of {self._label}"
        )
        out: dict[str, RemoteEntry] = {}
        for s in secrets or []:
            name = str(s.get("name") or "").upper()
            if not name:
                continue
            updated = s.get("updated_at") or s.get("created_at")
            meta: dict[str, Any] = {}
            if "visibility" in s:
                meta["visibility"] = s["visibility"]
            out[name] = RemoteEntry(name, version=str(updated) if updated else None, meta=meta)
        return out

    async def _put(self, change: Change) -> str | None:
        assert change.desired is not None
        key_id, public_key = await self._key()
        body: dict[str, Any] = {
            "encrypted_value": seal(public_key, change.desired.value),
            "key_id": key_id,
        }
        if self.config.scope == "organization":
            body["visibility"] = self.config.visibility
            if self.config.visibility == "selected":
                body["selected_repository_ids"] = await self._selected_repository_ids(change)
        await self._call(
            "put",
            "PUT",
            f"{self._base}/{_q(change.key)}",
            what=f"write secret {change.key} to {self._label}",
            body=body,
        )
        return await self._updated_at(change.key)

    async def _delete(self, change: Change) -> None:
        # the scope answers (its public key, fetched once per run): a 404 below then means
        # this secret is gone, which counts as deleted, not that the scope went out of sight
        await self._key()
        await self._call(
            "delete",
            "DELETE",
            f"{self._base}/{_q(change.key)}",
            what=f"delete secret {change.key} from {self._label}",
            accept=(404,),
        )

    async def _each(
        self, changes: Sequence[Change], apply: Callable[[Change], Any]
    ) -> list[ItemOutcome]:
        """One call per key; a throttle or an auth failure stops the rest of the batch."""
        out: list[ItemOutcome] = []
        for i, change in enumerate(changes):
            try:
                out.append(ItemOutcome(change.key, version=await apply(change)))
            except ConnectorError as exc:
                out.append(ItemOutcome(change.key, error=exc))
                if isinstance(exc, AuthError | RateLimited):
                    out.extend(ItemOutcome(c.key, error=exc) for c in changes[i + 1 :])
                    break
        return out

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        return await self._each(changes, self._put)

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        return await self._each(changes, self._delete)

    def classify(self, exc: BaseException) -> ConnectorError:
        return classify_other(exc, f"GitHub call for {self._label}", wall_clock(self.context))

    async def aclose(self) -> None:
        if self._gh is not None:
            gh, self._gh = self._gh, None
            await asyncio.to_thread(gh.close)
        self.close_threads()
