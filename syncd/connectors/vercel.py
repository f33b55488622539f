"""The ``vercel`` destination: project environment variables through Vercel's REST API.

One Vercel variable is a key with a value, a type (sensitive, encrypted, plain), the
targets it applies to (production, preview, development, custom environment ids) and, for
preview-only variables, a git branch. A project may hold the same key several times for
targets or branches that do not overlap. This destination owns exactly the entries whose
(key, targets, branch) equal its own configuration:

- entries of the same key for other targets or branches are invisible to it;
- an entry whose targets overlap ours without being equal would make Vercel refuse our
  write (``ENV_CONFLICT``). If the ``comment`` marks it as this sync's through this
  destination (targets changed in the config), it is moved to our targets by id; if not,
  the key fails as a conflict, with no call made, and the other variable keeps every
  target it had. A variable marked as ours for targets that no longer overlap is moved
  the same way, so changing ``targets`` never leaves an orphan behind.

Writes: new and changed values go out through the bulk create endpoint with
``upsert=true`` (one call per batch, answering ``created`` and ``failed`` per entry);
moving a variable to new targets is an edit by id; deletions use the single delete for
one variable and the batch delete endpoint for more.

Values: sensitive variables cannot be read back, so the state store's fingerprints decide;
encrypted and plain ones are read (``decrypt=true``) and compared.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr, field_validator, model_validator

from syncd.connector import (
    AfterChange,
    BaseDestination,
    Capabilities,
    ConnectorContext,
    DestinationConfig,
)
from syncd.connectors._http import (
    BearerClient,
    classify_exception,
    classify_response,
    counted_request,
    json_or_none,
    wall_clock,
)
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

STANDARD_TARGETS = ("production", "preview", "development")
CUSTOM_ENV_PREFIX = "env_"

# Vercel's documented limit is 64 KB of environment variables per deployment, all
# variables combined, so no single variable can be larger either.
MAX_VALUE_BYTES = 64 * 1024
# The batch delete endpoint takes 1 to 1000 ids per call.
MAX_DELETE_IDS = 1000
# Bulk create: entries sent in one call.
CREATE_BATCH = 50
# Vercel's comment field holds at most 500 characters.
MAX_COMMENT = 500

# Names the Vercel function runtimes reserve; Vercel refuses them as variable names.
RESERVED_KEYS = frozenset(
    {
        "AWS_SECRET_KEY",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "NOW_REGION",
        "TZ",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)

MARK = "managed by syncd"
_MARK_RE = re.compile(r"managed by syncd(?: \(sync: ([^,)]*)(?:, destination: ([^)]*))?\))?")
_CONFLICT_CODES = ("ENV_CONFLICT", "ENV_ALREADY_EXISTS")

ValueType = Literal["sensitive", "encrypted", "plain"]


def mark(sync: str, destination: str) -> str:
    """The ownership mark written into the ``comment`` of every variable syncd creates."""
    return f"{MARK} (sync: {sync}, destination: {destination})"[:MAX_COMMENT]


def marked_by(comment: Any) -> tuple[str | None, str | None]:
    """(sync, destination) named by a comment's mark: ``("", None)`` for a bare mark,
    ``(None, None)`` if unmarked."""
    if not isinstance(comment, str):
        return None, None
    m = _MARK_RE.search(comment)
    if m is None:
        return None, None
    return m.group(1) or "", m.group(2)


def _reserved(key: str, size: int) -> str | None:
    if key in RESERVED_KEYS:
        return f"{key} is reserved by Vercel's function runtimes and cannot be set"
    return None


class VercelConfig(DestinationConfig):
    type: Literal["vercel"] = "vercel"
    api_url: str = "https://api.vercel.com"
    """Vercel's REST API base URL."""
    token: SecretStr
    """An access token that can read and write the project's environment variables."""
    team_id: str | None = None
    """The team owning the project (``team_...``); sent as ``teamId`` on every call."""
    project: str
    """The project id (``prj_...``) or name."""
    targets: list[str] = ["production", "preview"]
    """production, preview, development and custom environment ids (``env_...``)."""
    git_branch: str | None = None
    """A branch for a preview-only variable; needs ``targets: [preview]``."""
    value_type: ValueType = "sensitive"
    """sensitive (write-only), encrypted or plain (both readable)."""
    writes_per_minute: float | None = 60.0
    """Write calls per minute through this token (null: unpaced); a 429 answer is waited
    out as Vercel's reset header says in any case."""
    redeploy: bool = False
    """After a run that changed something here (and failed nothing), redeploy the latest
    READY production deployment so it serves the new values (Vercel applies variables to
    new deployments only). Needs production among ``targets``."""

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError(f"expected an http(s) URL such as https://api.vercel.com, got {v!r}")
        return v.rstrip("/")

    @field_validator("team_id")
    @classmethod
    def _team(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("expected the project id or name")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one target")
        for t in v:
            if t not in STANDARD_TARGETS and not (
                t.startswith(CUSTOM_ENV_PREFIX) and len(t) > len(CUSTOM_ENV_PREFIX)
            ):
                raise ValueError(
                    f"unknown target {t!r}: expected production, preview, development "
                    f"or a custom environment id ({CUSTOM_ENV_PREFIX}...)"
                )
        if len(set(v)) != len(v):
            raise ValueError("a target is listed twice")
        return v

    @field_validator("git_branch")
    @classmethod
    def _branch(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("expected a branch name, or leave git_branch out")
        if v is not None and len(v) > 250:
            raise ValueError("Vercel branch names are at most 250 characters")
        return v

    @field_validator("writes_per_minute")
    @classmethod
    def _wpm(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("expected a positive number, or null for no pacing")
        return v

    @model_validator(mode="after")
    def _vercel_rules(self) -> VercelConfig:
        if self.git_branch is not None and self.targets != ["preview"]:
            raise ValueError(
                "git_branch applies to preview-only variables: Vercel requires "
                "targets: [preview] when a git branch is set"
            )
        if self.redeploy and "production" not in self.targets:
            raise ValueError(
                "redeploy: true redeploys the latest READY production deployment, and this "
                "destination does not write production (targets: "
                f"{', '.join(self.targets)}); preview deployments are built per branch by "
                "their next push: drop redeploy, or add production to targets"
            )
        if self.value_type == "sensitive" and "development" in self.targets:
            raise ValueError(
                "sensitive variables cannot target development (Vercel does not allow it): "
                "drop development from targets, or use value_type: encrypted in a second "
                "destination for development"
            )
        return self


@dataclass(frozen=True)
class Scope:
    """Where one Vercel variable applies: standard targets, custom environments, branch."""

    targets: frozenset[str]
    custom: frozenset[str]
    branch: str | None

    @classmethod
    def of_config(cls, cfg: VercelConfig) -> Scope:
        std = frozenset(t for t in cfg.targets if t in STANDARD_TARGETS)
        custom = frozenset(t for t in cfg.targets if t not in STANDARD_TARGETS)
        return cls(std, custom, cfg.git_branch)

    @classmethod
    def of_env(cls, env: Mapping[str, Any]) -> Scope:
        target = env.get("target")
        if isinstance(target, str):
            targets = frozenset({target})
        elif isinstance(target, list):
            targets = frozenset(t for t in target if isinstance(t, str))
        else:
            targets = frozenset()
        custom_raw = env.get("customEnvironmentIds") or []
        custom = frozenset(c for c in custom_raw if isinstance(c, str))
        branch = env.get("gitBranch") or None
        return cls(targets, custom, branch if isinstance(branch, str) else None)

    def overlaps(self, other: Scope) -> bool:
        if self.branch != other.branch:
            return False
        return bool(self.targets & other.targets) or bool(self.custom & other.custom)

    def describe(self) -> str:
        parts = sorted(self.targets) + sorted(self.custom)
        text = "[" + ", ".join(parts) + "]"
        return f"{text} on branch {self.branch}" if self.branch else text


class VercelDestination(BearerClient, BaseDestination):
    kind: ClassVar[str] = "vercel"
    Config: ClassVar[type[VercelConfig]] = VercelConfig
    # the class-level description is that of the default value_type (sensitive); every
    # instance carries its own (readable values for encrypted and plain, its pacing)
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=False,
        tags_ownership=True,
        max_value_bytes=MAX_VALUE_BYTES,
        key_pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        key_rule="letters, digits and underscores, not starting with a digit",
        batch_size=CREATE_BATCH,
        delete_batch_size=MAX_DELETE_IDS,
        writes_per_minute=60.0,
        extra_checks=(_reserved,),
    )
    config: VercelConfig

    def __init__(self, name: str, config: VercelConfig, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        caps = replace(
            type(self).capabilities,
            reads_values=config.value_type != "sensitive",
            writes_per_minute=config.writes_per_minute,
        )
        # an instance attribute shadows the class description for the planner and executor
        setattr(self, "capabilities", caps)  # noqa: B010
        self.scope = Scope.of_config(config)
        self._client: httpx.AsyncClient | None = None
        self._project_path = quote(config.project, safe="")
        # (sync, key) → variables found by a delete's own listing, kept for its retries
        self._located: dict[tuple[str, str], list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ plumbing

    def _params(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        params = dict(extra or {})
        if self.config.team_id:
            params["teamId"] = self.config.team_id
        return params

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """One platform call, counted; transport failures come out classified."""
        return await counted_request(
            self.client,
            self.count,
            "vercel",
            operation,
            method,
            path,
            params=self._params(params),
            json=json,
            quota=self.quota,
        )

    def _failure(self, resp: httpx.Response, what: str) -> ConnectorError:
        return classify_response(
            resp, f"vercel {what} (project {self.config.project})", wall_clock(self.context)
        )

    def classify(self, exc: BaseException) -> ConnectorError:
        return classify_exception(exc, "vercel")

    _json = staticmethod(json_or_none)

    # ------------------------------------------------------------------ after a change

    def after_change_enabled(self) -> bool:
        return bool(self.config.redeploy)

    async def _latest_production(self) -> Mapping[str, Any] | None:
        resp = await self._call(
            "deployments",
            "GET",
            "/v6/deployments",
            params={
                "projectId": self.config.project,
                "target": "production",
                "state": "READY",
                "limit": "1",
            },
        )
        if not resp.is_success:
            raise self._failure(resp, "list deployments")
        data = self._json(resp)
        found = data.get("deployments") if isinstance(data, Mapping) else None
        if not isinstance(found, list):
            raise self._failure(resp, "list deployments: unexpected answer")
        first = found[0] if found else None
        return first if isinstance(first, Mapping) else None

    async def describe_after_change(self) -> str:
        latest = await self._latest_production()
        if latest is None:
            return "redeploy vercel production: no READY production deployment yet, none"
        return f"redeploy vercel production (deployment {latest.get('uid')})"

    async def after_change(self) -> AfterChange:
        """``POST /v13/deployments?forceNew=1`` with the latest READY production
        deployment's id: a new production deployment of the same source, built with the
        variables as they are now."""
        latest = await self._latest_production()
        if latest is None:
            return AfterChange("no READY production deployment to redeploy (none started)")
        resp = await self._call(
            "redeploy",
            "POST",
            "/v13/deployments",
            params={"forceNew": "1"},
            json={
                "name": latest.get("name") or self.config.project,
                "deploymentId": latest.get("uid"),
                "target": "production",
            },
        )
        if not resp.is_success:
            raise self._failure(resp, f"redeploy of {latest.get('uid')}")
        data = self._json(resp)
        new = data if isinstance(data, Mapping) else {}
        url = new.get("url")
        return AfterChange(
            f"redeploy vercel production (of {latest.get('uid')})",
            str(new.get("id") or "") or None,
            f"https://{url}" if isinstance(url, str) and url else None,
        )

    # ------------------------------------------------------------------ reading

    async def check(self) -> None:
        """The token can see the project, and every custom environment id exists."""
        resp = await self._call("check", "GET", f"/v9/projects/{self._project_path}")
        if not resp.is_success:
            raise self._failure(resp, "project lookup")
        if self.scope.custom:
            resp = await self._call(
                "check", "GET", f"/v9/projects/{self._project_path}/custom-environments"
            )
            if not resp.is_success:
                raise self._failure(resp, "custom environments lookup")
            body = self._json(resp)
            envs = body.get("environments", []) if isinstance(body, dict) else []
            have = {e.get("id") for e in envs if isinstance(e, dict)}
            missing = sorted(self.scope.custom - have)
            if missing:
                raise PermanentError(
                    f"vercel: project {self.config.project} has no custom environment "
                    + ", ".join(missing)
                )

    async def _list_envs(self) -> list[dict[str, Any]]:
        """Every variable of the project, all pages (``pagination.next`` → ``until``)."""
        params: dict[str, str] = {}
        if self.config.value_type != "sensitive":
            params["decrypt"] = "true"
        out: list[dict[str, Any]] = []
        seen_cursors: set[str] = set()

        async def page(page_params: dict[str, str]) -> httpx.Response:
            resp = await self._call(
                "list", "GET", f"/v10/projects/{self._project_path}/env", params=page_params
            )
            if not resp.is_success:
                raise self._failure(resp, "list variables")
            return resp

        while True:
            # each page goes through the core: a throttled page is retried alone
            resp = await self.read(functools.partial(page, dict(params)))
            body = self._json(resp)
            if isinstance(body, list):
                envs, nxt = body, None
            elif isinstance(body, dict) and isinstance(body.get("envs"), list):
                envs = body["envs"]
                pagination = body.get("pagination") or {}
                nxt = pagination.get("next") if isinstance(pagination, dict) else None
            elif isinstance(body, dict) and "key" in body:
                envs, nxt = [body], None
            else:
                raise RetryableError("vercel list variables: unexpected answer")
            out.extend(e for e in envs if isinstance(e, dict) and isinstance(e.get("key"), str))
            if nxt is None:
                return out
            cursor = str(nxt)
            if cursor in seen_cursors:
                raise RetryableError("vercel list variables: pagination did not advance")
            seen_cursors.add(cursor)
            params = {**params, "until": cursor}

    @staticmethod
    def _version(env: Mapping[str, Any]) -> str | None:
        updated = env.get("updatedAt") or env.get("createdAt")
        return str(updated) if updated is not None else None

    def _readable(self, env: Mapping[str, Any]) -> bool:
        return env.get("type") in ("encrypted", "plain")

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        known = known or {}
        wanted = set(keys) if keys is not None else None
        by_key: dict[str, list[dict[str, Any]]] = {}
        for env in await self._list_envs():
            by_key.setdefault(env["key"], []).append(env)

        out: dict[str, RemoteEntry] = {}
        to_read: list[tuple[str, dict[str, Any]]] = []
        for key, envs in by_key.items():
            exact = [e for e in envs if Scope.of_env(e) == self.scope]
            if exact:
                env = exact[0]
                entry, needs_read = self._exact_entry(key, env, known, wanted)
                strays = self._strays(entry, env, envs)
                if strays:
                    # copies of ours for targets this destination no longer has (targets
                    # changed while a value changed): never equal, so the planner re-sends
                    # the value and upsert removes the copies
                    entry = replace(
                        entry,
                        value=None,
                        version=f"{entry.version}+strays",
                        meta={**entry.meta, "strays": strays},
                    )
                    needs_read = False
                out[key] = entry
                if needs_read:
                    to_read.append((key, env))
                continue
            related = [
                e
                for e in envs
                if Scope.of_env(e).overlaps(self.scope)
                or marked_by(e.get("comment"))[1] == self.name
            ]
            if related:
                out[key] = self._related_entry(key, related)

        for key, env in to_read:
            value = await self._read_value(env)
            if value is not None:
                out[key] = replace(out[key], value=SecretValue(value))
        return out

    def _exact_entry(
        self,
        key: str,
        env: Mapping[str, Any],
        known: Mapping[str, str | None],
        wanted: set[str] | None,
    ) -> tuple[RemoteEntry, bool]:
        version = self._version(env)
        meta = {
            "id": env.get("id"),
            "mode": "exact",
            "destination": marked_by(env.get("comment"))[1],
            "type": env.get("type"),
            "scope": Scope.of_env(env).describe(),
        }
        managed_by = marked_by(env.get("comment"))[0]
        etype = env.get("type")
        if etype != self.config.value_type:
            # another type than configured: never equal, so the planner re-sends the value
            # (with our type) however the value compares
            v = f"{version}/{etype}"
            return RemoteEntry(key, None, v, managed_by, meta), False
        if not self._readable(env):
            return RemoteEntry(key, None, version, managed_by, meta), False
        raw = env.get("value")
        if (etype == "plain" or env.get("decrypted") is True) and isinstance(raw, str):
            return RemoteEntry(key, SecretValue(raw), version, managed_by, meta), False
        # an encrypted value the listing did not decrypt: read it only where it may matter
        unchanged = version is not None and known.get(key) == version
        needs_read = not unchanged and (wanted is None or key in wanted)
        return RemoteEntry(key, None, version, managed_by, meta), needs_read

    def _strays(
        self, entry: RemoteEntry, env: Mapping[str, Any], envs: Iterable[Mapping[str, Any]]
    ) -> list[str]:
        if not entry.managed_by:
            return []
        return [
            e["id"]
            for e in envs
            if e is not env
            and isinstance(e.get("id"), str)
            and marked_by(e.get("comment")) == (entry.managed_by, self.name)
        ]

    def _related_entry(self, key: str, envs: Sequence[Mapping[str, Any]]) -> RemoteEntry:
        """Variables of this key that are not exactly ours but matter: they overlap our
        scope, or their mark names this destination (our own, for older targets)."""
        entries: list[dict[str, Any]] = []
        for e in envs:
            sync, destination = marked_by(e.get("comment"))
            entries.append(
                {
                    "id": e.get("id"),
                    "managed_by": sync,
                    "destination": destination,
                    "overlaps": Scope.of_env(e).overlaps(self.scope),
                    "scope": Scope.of_env(e).describe(),
                }
            )
        marks = {e["managed_by"] for e in entries}
        managed_by = marks.pop() if len(marks) == 1 else None
        versions = ",".join(sorted(str(self._version(e)) for e in envs))
        # never equal to what this destination wants: value None and a version no write of
        # ours records, so the planner always decides to write, and upsert moves the
        # variable (ours) or reports the conflict (someone else's)
        return RemoteEntry(
            key,
            None,
            f"elsewhere:{versions}",
            managed_by,
            {"mode": "related", "entries": entries},
        )

    def _ours(self, entry: Mapping[str, Any], sync: str) -> bool:
        return entry.get("managed_by") == sync and entry.get("destination") in (self.name, None)

    async def _read_value(self, env: Mapping[str, Any]) -> str | None:
        env_id = env.get("id")
        if not isinstance(env_id, str):
            return None
        resp = await self._call(
            "get", "GET", f"/v1/projects/{self._project_path}/env/{quote(env_id, safe='')}"
        )
        if resp.status_code == 404:
            return None
        if not resp.is_success:
            raise self._failure(resp, f"read {env.get('key')}")
        body = self._json(resp)
        if isinstance(body, dict) and body.get("decrypted") is True:
            value = body.get("value")
            return value if isinstance(value, str) else None
        return None

    # ------------------------------------------------------------------ writing

    def _body(self, change: Change, *, with_mark: bool) -> dict[str, Any]:
        assert change.desired is not None
        body: dict[str, Any] = {
            "key": change.key,
            "value": change.desired.value.reveal(),
            "type": self.config.value_type,
        }
        body.update(self._scope_fields())
        if with_mark:
            body["comment"] = mark(change.sync, self.name)
        return body

    def _scope_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.scope.targets:
            fields["target"] = sorted(self.scope.targets)
        if self.scope.custom:
            fields["customEnvironmentIds"] = sorted(self.scope.custom)
        if self.scope.branch:
            fields["gitBranch"] = self.scope.branch
        return fields

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        outcomes: dict[str, ItemOutcome] = {}
        bulk: list[Change] = []
        moves: list[Change] = []
        for c in changes:
            if c.desired is None:
                outcomes[c.key] = ItemOutcome(c.key, error=PermanentError("nothing to write"))
                continue
            remote = c.remote
            if remote is not None and remote.meta.get("mode") == "related":
                entries = remote.meta["entries"]
                theirs = [e for e in entries if e["overlaps"] and not self._ours(e, c.sync)]
                if theirs:
                    outcomes[c.key] = ItemOutcome(c.key, error=self._overlap_conflict(c, theirs))
                    continue
                if any(self._ours(e, c.sync) for e in entries):
                    moves.append(c)
                    continue
            bulk.append(c)

        for c in moves:
            outcomes[c.key] = await self._move(c)
        if bulk:
            outcomes.update(await self._bulk_upsert(bulk))
        for c in bulk:
            remote = c.remote
            if remote is None or not remote.meta.get("strays"):
                continue
            if outcomes[c.key].error is None and remote.managed_by == c.sync:
                try:
                    for env_id in remote.meta["strays"]:
                        await self._delete_one(env_id, c.key)
                except ConnectorError as exc:
                    outcomes[c.key] = ItemOutcome(c.key, error=exc)
        return [outcomes[c.key] for c in changes]

    def _overlap_conflict(self, c: Change, theirs: Iterable[Mapping[str, Any]]) -> ConflictError:
        scopes = "; ".join(str(e.get("scope")) for e in theirs)
        return ConflictError(
            f"{c.key} already exists at Vercel for {scopes}, overlapping this destination's "
            f"{self.scope.describe()} without being equal; Vercel refuses such a write "
            "(ENV_CONFLICT) and syncd never removes targets from a variable it does not "
            "own: not written (change targets, or remove the other variable)"
        )

    async def _bulk_upsert(self, changes: Sequence[Change]) -> dict[str, ItemOutcome]:
        # adopted variables keep their owner's comment; ours carry the mark
        body = [self._body(c, with_mark=c.created or c.action is Action.CREATE) for c in changes]
        try:
            resp = await self._call(
                "put",
                "POST",
                f"/v10/projects/{self._project_path}/env",
                params={"upsert": "true"},
                json=body,
            )
            if not resp.is_success:
                raise self._failure(resp, "create variables")
        except ConnectorError as exc:
            return {c.key: ItemOutcome(c.key, error=exc) for c in changes}

        answer = self._json(resp)
        created: list[Any] = []
        failed: list[Any] = []
        if isinstance(answer, dict):
            raw_created = answer.get("created")
            if isinstance(raw_created, list):
                created = raw_created
            elif isinstance(raw_created, dict):
                created = [raw_created]
            raw_failed = answer.get("failed")
            failed = raw_failed if isinstance(raw_failed, list) else []
        versions: dict[str, str | None] = {}
        for env in created:
            if isinstance(env, dict) and isinstance(env.get("key"), str):
                versions[env["key"]] = self._version(env)

        errors: dict[str, ConnectorError] = {}
        unkeyed: list[Mapping[str, Any]] = []
        for item in failed:
            err = item.get("error") if isinstance(item, dict) else None
            if not isinstance(err, dict):
                continue
            key = err.get("key") or err.get("envVarKey")
            if isinstance(key, str):
                errors[key] = self._item_error(key, err)
            else:
                unkeyed.append(err)

        out: dict[str, ItemOutcome] = {}
        unanswered = [c for c in changes if c.key not in versions and c.key not in errors]
        if unkeyed and len(unkeyed) == len(unanswered):
            # failed entries without a key: Vercel answers in request order
            for c, err in zip(unanswered, unkeyed, strict=True):
                errors[c.key] = self._item_error(c.key, err)
        for c in changes:
            if c.key in errors:
                out[c.key] = ItemOutcome(c.key, error=errors[c.key])
            elif c.key in versions:
                out[c.key] = ItemOutcome(c.key, version=versions[c.key])
            else:
                # upsert=true makes a re-send harmless
                out[c.key] = ItemOutcome(
                    c.key, error=RetryableError(f"{c.key}: Vercel gave no result for this key")
                )
        return out

    def _item_error(self, key: str, err: Mapping[str, Any]) -> ConnectorError:
        """One ``failed`` entry as the core's taxonomy: from its code, never its message
        (a message may quote the value)."""
        code = str(err.get("code") or "error")
        where = f"{key}: " if key else ""
        exc: ConnectorError
        if code.upper() in _CONFLICT_CODES:
            exc = ConflictError(
                f"{where}Vercel refused the write ({code}): a variable of this key already "
                f"covers part of {self.scope.describe()}; syncd never removes targets from "
                "a variable it does not own"
            )
        elif code.lower() in ("rate_limited", "too_many_requests"):
            exc = RateLimited(f"{where}Vercel throttled the write ({code})")
        elif code.lower() in ("forbidden", "unauthorized", "not_authorized"):
            exc = AuthError(f"{where}Vercel refused the token ({code})")
        else:
            exc = KeyRejected(f"{where}Vercel refused the variable ({code})")
        return exc

    async def _move(self, c: Change) -> ItemOutcome:
        """Our own variable covers other targets than configured: edit it by id to ours
        (extra variables of ours for this key are removed first, else they would
        overlap)."""
        assert c.remote is not None and c.desired is not None
        entries = [
            e
            for e in c.remote.meta["entries"]
            if isinstance(e.get("id"), str) and self._ours(e, c.sync)
        ]
        if not entries:
            return ItemOutcome(c.key, error=PermanentError(f"{c.key}: no variable id to edit"))
        keep, extra = entries[0], entries[1:]
        try:
            for e in extra:
                await self._delete_one(e["id"], c.key)
            body: dict[str, Any] = {
                "value": c.desired.value.reveal(),
                "type": self.config.value_type,
                "target": sorted(self.scope.targets),
                "customEnvironmentIds": sorted(self.scope.custom),
                "comment": mark(c.sync, self.name),
            }
            if self.scope.branch:
                body["gitBranch"] = self.scope.branch
            resp = await self._call(
                "put",
                "PATCH",
                f"/v9/projects/{self._project_path}/env/{quote(keep['id'], safe='')}",
                json=body,
            )
            if not resp.is_success:
                raise self._failure(resp, f"edit {c.key}")
        except ConnectorError as exc:
            return ItemOutcome(c.key, error=exc)
        answer = self._json(resp)
        version = self._version(answer) if isinstance(answer, dict) else None
        return ItemOutcome(c.key, version=version)

    # ------------------------------------------------------------------ deleting

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        outcomes: dict[str, ItemOutcome] = {}
        targets: dict[str, list[dict[str, Any]]] = {}
        unlisted = [c for c in changes if c.remote is None and (c.sync, c.key) not in self._located]
        if unlisted:
            # between drift checks the plan has no ids: one listing finds them, and a retry
            # of this batch (after a throttle) reuses what it found
            try:
                listing: dict[str, list[dict[str, Any]]] = {}
                for env in await self._list_envs():
                    listing.setdefault(env["key"], []).append(env)
            except ConnectorError as exc:
                for c in unlisted:
                    outcomes[c.key] = ItemOutcome(c.key, error=exc)
            else:
                for c in unlisted:
                    self._located[(c.sync, c.key)] = self._entries_in(c.key, listing)
        for c in changes:
            if c.key in outcomes:
                continue
            if c.remote is not None:
                entries = self._entries_of(c.remote)
            else:
                entries = self._located[(c.sync, c.key)]
            if not entries:
                outcomes[c.key] = ItemOutcome(c.key)  # already gone
                continue
            ours = [e for e in entries if self._ours(e, c.sync)]
            if not ours:
                outcomes[c.key] = ItemOutcome(
                    c.key,
                    error=PermanentError(
                        f"{c.key}: not deleted: its Vercel comment no longer marks it "
                        f"'{mark(c.sync, self.name)}', and syncd deletes only what it created"
                    ),
                )
                continue
            targets[c.key] = ours

        ids = [e["id"] for entries in targets.values() for e in entries]
        if ids:
            try:
                if len(ids) == 1:
                    await self._delete_one(ids[0], next(iter(targets)))
                else:
                    for i in range(0, len(ids), MAX_DELETE_IDS):
                        await self._delete_many(ids[i : i + MAX_DELETE_IDS])
            except ConnectorError as exc:
                for key in targets:
                    outcomes[key] = ItemOutcome(key, error=exc)
            else:
                for key in targets:
                    outcomes[key] = ItemOutcome(key)
        for c in changes:
            if not isinstance(outcomes[c.key].error, RetryableError):
                self._located.pop((c.sync, c.key), None)
        return [outcomes[c.key] for c in changes]

    @staticmethod
    def _entries_of(remote: RemoteEntry) -> list[dict[str, Any]]:
        """The variables a listed key stands for, as ``{"id", "managed_by", "destination"}``."""
        meta = remote.meta
        if meta.get("mode") == "related":
            return [dict(e) for e in meta["entries"] if isinstance(e.get("id"), str)]
        if isinstance(meta.get("id"), str):
            return [
                {
                    "id": meta["id"],
                    "managed_by": remote.managed_by,
                    "destination": meta.get("destination"),
                }
            ]
        return []

    def _entries_in(
        self, key: str, listing: Mapping[str, list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """The variables of this key in this destination's scope, overlapping it or marked
        with its name."""
        out = []
        for env in listing.get(key, []):
            sync, destination = marked_by(env.get("comment"))
            scope = Scope.of_env(env)
            related = scope == self.scope or scope.overlaps(self.scope) or destination == self.name
            if related and isinstance(env.get("id"), str):
                out.append({"id": env["id"], "managed_by": sync, "destination": destination})
        return out

    async def _delete_one(self, env_id: str, key: str) -> None:
        resp = await self._call(
            "delete",
            "DELETE",
            f"/v9/projects/{self._project_path}/env/{quote(env_id, safe='')}",
        )
        if resp.status_code == 404:
            return  # gone already (the project itself answered a listing this run)
        if not resp.is_success:
            raise self._failure(resp, f"delete {key}")

    async def _delete_many(self, ids: Sequence[str]) -> None:
        resp = await self._call(
            "delete", "DELETE", f"/v1/projects/{self._project_path}/env", json={"ids": list(ids)}
        )
        if not resp.is_success:
            raise self._failure(resp, f"delete {len(ids)} variables")
