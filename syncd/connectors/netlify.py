"""The ``netlify`` destination: environment variables through Netlify's REST API.

A Netlify variable belongs to an account (a team's shared variables) or to one site. It
has a key, scopes (builds, functions, runtime, post-processing), an ``is_secret`` flag
and one value per deploy context: ``all``, or values per context (production,
deploy-preview, branch-deploy, dev, and ``branch`` with the branch name as its
``context_parameter``). Netlify keeps one of the two shapes: one value for all contexts,
or values per context.

Ownership. Netlify has no description field, so ownership lives in the state store
only. This destination owns the values in its own contexts (its *slots*) and nothing
else. For a given key:

- a variable that holds none of our slots is, to the planner, not there: syncd adds its
  values next to whatever other contexts hold, and owns what it added;
- a value in one of our slots that syncd did not write is someone else's: the planner
  applies ``on_conflict`` to it;
- a removed key loses only our values (``DELETE .../value/{id}``); the whole variable is
  deleted only when no other context holds a value. Two syncs writing different
  contexts of one site never delete each other's values.

Writes. New variables go out in one ``POST /accounts/{account}/env`` per batch. A variable
that holds values in our contexts only is ours whole: a changed value (or changed scopes
or secret flag) replaces it with one ``PUT /accounts/{account}/env/{key}``, which Netlify
documents as replacing every value of the variable. That is decided on a view of the
variable taken in the same run, never on a recorded one: the drift check's listing, or
else one ``GET`` of the key, since a value someone added to another context after our
last look would be replaced away. Where other contexts hold values, ours are set one
context at a time (``PATCH``), which never touches another context; so is a single
context, where the one ``PATCH`` is the one write. A secret value is never written into a
non-secret variable that other contexts share (it would be readable).

Values. Secret values are write-only: the state store's fingerprints decide, and the
version syncd compares at drift checks is a digest of our values' ids (Netlify gives a
value a new id whenever it is set), the scopes and the secret flag (as the variable has
them and as configured), never a value.
Readable values are compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
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
    RateLimit,
)
from syncd.connectors._http import (
    BearerClient,
    classify_exception,
    classify_response,
    counted_request,
    json_or_none,
    make_client,
    wall_clock,
)
from syncd.errors import AuthError, ConflictError, ConnectorError, PermanentError, RateLimited
from syncd.model import Action, Change, ItemOutcome, RemoteEntry, SecretValue

Context = Literal["all", "production", "deploy-preview", "branch-deploy", "dev", "branch"]
Scope = Literal["builds", "functions", "runtime", "post_processing"]
Slot = tuple[str, str | None]

ALL: Slot = ("all", None)
# scopes as the API spells them (the config takes post_processing, as the CLI does)
API_SCOPE = {"post_processing": "post-processing"}
_FROM_API_SCOPE = {"post-processing": "post_processing", "post_processing": "post_processing"}

# Netlify's read-only variables: reserved by Netlify's build system, they cannot be set.
READ_ONLY_KEYS = frozenset(
    {
        "NETLIFY",
        "BUILD_ID",
        "CONTEXT",
        "REPOSITORY_URL",
        "BRANCH",
        "HEAD",
        "COMMIT_REF",
        "CACHED_COMMIT_REF",
        "PULL_REQUEST",
        "REVIEW_ID",
        "URL",
        "DEPLOY_URL",
        "DEPLOY_PRIME_URL",
        "DEPLOY_ID",
        "SITE_NAME",
        "SITE_ID",
        "NETLIFY_IMAGES_CDN_DOMAIN",
        "INCOMING_HOOK_TITLE",
        "INCOMING_HOOK_URL",
        "INCOMING_HOOK_BODY",
    }
)
# Netlify Functions run on AWS Lambda, which takes at most 4 KB of environment variables
# (names and values together) per function.
FUNCTIONS_ENV_BYTES = 4096
# variables created in one POST
CREATE_BATCH = 10


def _read_only(key: str, size: int) -> str | None:
    if key in READ_ONLY_KEYS:
        return f"{key} is one of Netlify's read-only variables and cannot be set"
    return None


def _functions_limit(key: str, size: int) -> str | None:
    if len(key.encode("utf-8")) + size > FUNCTIONS_ENV_BYTES:
        return (
            f"key and value take {len(key.encode('utf-8')) + size} bytes, over the "
            f"{FUNCTIONS_ENV_BYTES}-byte environment of Netlify Functions (AWS Lambda's "
            "limit); drop functions from scopes to sync it for builds and runtime only"
        )
    return None


class NetlifyConfig(DestinationConfig):
    type: Literal["netlify"] = "netlify"
    api_url: str = "https://api.netlify.com/api/v1"
    """Netlify's REST API base URL."""
    token: SecretStr
    """A personal access token (or OAuth token) of a team member who may edit the
    team's or the site's environment variables."""
    account_id: str
    """The team's account id or slug (``/accounts/{account_id}/env``)."""
    site_id: str | None = None
    """The site's id (API id). Omit it for the team's shared (account-level) variables."""
    contexts: list[Context] = ["production", "deploy-preview", "branch-deploy"]
    """Deploy contexts that get the value: ``all``, or any of production,
    deploy-preview, branch-deploy, dev and branch. The same value goes to each."""
    branch: str | None = None
    """The branch name for the ``branch`` context."""
    scopes: list[Scope] = ["builds", "functions", "runtime"]
    """Where the variable is available: builds, functions, runtime, post_processing
    (granular scopes need a Pro plan or above)."""
    is_secret: bool = True
    """Secret values: write-only at Netlify, for specific non-dev contexts only (not
    ``all``, not ``dev``) and never the post_processing scope, as Netlify requires."""
    redeploy: bool = False
    """After a run that changed something here (and failed nothing), start a build of the
    site (``POST /sites/{site_id}/builds``): Netlify applies variables to new deploys only."""
    build_hook: SecretStr | None = None
    """A build hook URL to call instead (``https://api.netlify.com/build_hooks/...``); it
    starts builds without a token, so it is a credential (``build_hook_file``)."""

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError(
                f"expected an http(s) URL such as https://api.netlify.com/api/v1, got {v!r}"
            )
        return v.rstrip("/")

    @field_validator("account_id")
    @classmethod
    def _account(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("expected the team's account id or slug")
        return v

    @field_validator("site_id", "branch")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("expected a value, or leave the option out")
        return v

    @field_validator("scopes", mode="before")
    @classmethod
    def _scope_spelling(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [_FROM_API_SCOPE.get(s, s) if isinstance(s, str) else s for s in v]
        return v

    @model_validator(mode="after")
    def _netlify_rules(self) -> NetlifyConfig:
        if not self.contexts:
            raise ValueError("contexts: expected at least one deploy context")
        if len(set(self.contexts)) != len(self.contexts):
            raise ValueError("contexts: a context is listed twice")
        if "all" in self.contexts and len(self.contexts) > 1:
            raise ValueError(
                "contexts: all already covers every deploy context; a Netlify variable holds "
                "one value for all contexts or values per context, not both"
            )
        if "branch" in self.contexts and self.branch is None:
            raise ValueError("the branch context needs branch: the name of the branch")
        if self.branch is not None and "branch" not in self.contexts:
            raise ValueError("branch is set but the branch context is not in contexts")
        if (self.redeploy or self.build_hook is not None) and self.site_id is None:
            what = "build_hook" if self.build_hook is not None else "redeploy"
            raise ValueError(
                f"{what}: account-level (shared) variables belong to no site, so there is "
                "no site to build; set site_id, or drop it"
            )
        if self.build_hook is not None and not self.build_hook.get_secret_value().startswith(
            ("https://", "http://")
        ):
            raise ValueError("build_hook: expected the hook's https:// URL")
        if not self.scopes:
            raise ValueError("scopes: expected at least one scope")
        if len(set(self.scopes)) != len(self.scopes):
            raise ValueError("scopes: a scope is listed twice")
        if self.is_secret:
            bad = [c for c in self.contexts if c in ("all", "dev")]
            if bad:
                raise ValueError(
                    f"is_secret: Netlify requires secret values to be set for specific "
                    f"deploy contexts other than dev; contexts has {', '.join(bad)}: list "
                    "production, deploy-preview, branch-deploy or branch instead, or set "
                    "is_secret: false"
                )
            if "post_processing" in self.scopes:
                raise ValueError(
                    "is_secret: Netlify does not allow secret values in the post_processing "
                    "scope; drop it from scopes, or set is_secret: false"
                )
        return self

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple((c, self.branch if c == "branch" else None) for c in self.contexts)

    @property
    def api_scopes(self) -> list[str]:
        return [API_SCOPE.get(s, s) for s in self.scopes]


@dataclass(frozen=True)
class Variable:
    """One Netlify variable as listed: value ids per slot, readable values wrapped."""

    key: str
    scopes: frozenset[str]
    is_secret: bool
    ids: Mapping[Slot, str]
    values: Mapping[Slot, SecretValue]  # readable values only

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Variable:
        ids: dict[Slot, str] = {}
        values: dict[Slot, SecretValue] = {}
        is_secret = bool(data.get("is_secret"))
        for item in data.get("values") or []:
            if not isinstance(item, Mapping):
                continue
            ctx = str(item.get("context") or "")
            param = item.get("context_parameter") or None
            slot: Slot = (ctx, str(param) if param is not None else None)
            ids[slot] = str(item.get("id") or "")
            value = item.get("value")
            # a secret's values are write-only, except the local development context's
            if isinstance(value, str) and (not is_secret or ctx == "dev"):
                values[slot] = SecretValue(value)
        scopes = frozenset(_FROM_API_SCOPE.get(s, s) for s in data.get("scopes") or [])
        return cls(str(data.get("key") or ""), scopes, is_secret, ids, values)


@dataclass(frozen=True)
class _Pending:
    """A key whose variable exists (or may): its values are set, not created."""

    change: Change
    variable: Variable | None
    fresh: bool = False  # the variable comes from this run's listing
    fetch: bool = False  # read it first (a create found it there)


class _Missing(Exception):
    """The variable is gone (404): re-create it."""


class _Exists(Exception):
    """The variable exists already (a create was refused): set its values instead."""


class NetlifyDestination(BearerClient, BaseDestination):
    kind: ClassVar[str] = "netlify"
    Config: ClassVar[type[NetlifyConfig]] = NetlifyConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=False,
        tags_ownership=False,
        key_pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        key_rule="letters, digits and underscores, not starting with a digit",
        batch_size=CREATE_BATCH,
        delete_batch_size=CREATE_BATCH,
        extra_checks=(_read_only, _functions_limit),
        rate_limits=(RateLimit(500, 60.0, "500 requests a minute", writes_only=False),),
    )
    config: NetlifyConfig

    def __init__(self, name: str, config: NetlifyConfig, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        checks = (_read_only, _functions_limit) if "functions" in config.scopes else (_read_only,)
        # an instance attribute shadows the class description for the planner and executor
        self.__dict__["capabilities"] = replace(
            type(self).capabilities, reads_values=not config.is_secret, extra_checks=checks
        )
        self.slots = config.slots
        self._client: httpx.AsyncClient | None = None
        self._hook_client: httpx.AsyncClient | None = None
        self._path = f"/accounts/{quote(config.account_id, safe='')}/env"
        self._where = f"site {config.site_id}" if config.site_id else f"account {config.account_id}"
        # the last listing, by key: tells create from set when the planner's change
        # carries no listing (a key new to this destination that another context holds)
        self._listed: dict[str, Variable] | None = None

    # ------------------------------------------------------------------ plumbing

    @property
    def credential_key(self) -> str:
        """Destinations writing through one token share one concurrency budget."""
        who = hashlib.sha256(self.config.token.get_secret_value().encode()).hexdigest()[:16]
        return f"netlify:{self.config.api_url.lower()}:{who}"

    def _params(self) -> dict[str, str]:
        return {"site_id": self.config.site_id} if self.config.site_id else {}

    def _key_path(self, key: str) -> str:
        return f"{self._path}/{quote(key, safe='')}"

    async def _call(
        self, operation: str, method: str, path: str, *, json: Any = None
    ) -> httpx.Response:
        """One platform call, counted; transport failures come out classified."""
        return await counted_request(
            self.client,
            self.count,
            "netlify",
            operation,
            method,
            path,
            params=self._params(),
            json=json,
            quota=self.quota,
        )

    def _failure(self, resp: httpx.Response, what: str) -> ConnectorError:
        return classify_response(resp, f"netlify {what} ({self._where})", wall_clock(self.context))

    def classify(self, exc: BaseException) -> ConnectorError:
        return classify_exception(exc, "netlify")

    _json = staticmethod(json_or_none)

    # ------------------------------------------------------------------ after a change

    def after_change_enabled(self) -> bool:
        return bool(self.config.redeploy or self.config.build_hook is not None)

    async def describe_after_change(self) -> str:
        if self.config.build_hook is not None:
            return f"build site {self.config.site_id} through its build hook"
        return f"build site {self.config.site_id} (POST /sites/{self.config.site_id}/builds)"

    async def after_change(self) -> AfterChange:
        site = self.config.site_id
        if self.config.build_hook is not None:
            if self._hook_client is None:
                self._hook_client = make_client(
                    self.context, "", headers={"User-Agent": "syncd"}, timeout=self.config.timeout
                )
            resp = await counted_request(
                self._hook_client,
                self.count,
                "netlify",
                "build_hook",
                "POST",
                self.config.build_hook.get_secret_value(),
                json={},
            )
            if not resp.is_success:
                raise classify_response(
                    resp, f"netlify build hook of site {site}", wall_clock(self.context)
                )
            return AfterChange(f"build of site {site} (build hook)")
        resp = await counted_request(
            self.client,
            self.count,
            "netlify",
            "build",
            "POST",
            f"/sites/{quote(site or '', safe='')}/builds",
        )
        if not resp.is_success:
            raise self._failure(resp, "start a build")
        data = self._json(resp)
        build = data if isinstance(data, Mapping) else {}
        deploy = build.get("deploy_id")
        return AfterChange(
            f"build of site {site}",
            str(build.get("id") or "") or None,
            f"https://app.netlify.com/sites/{site}/deploys/{deploy}" if deploy else None,
        )

    async def aclose(self) -> None:
        await super().aclose()
        if self._hook_client is not None:
            await self._hook_client.aclose()
            self._hook_client = None

    # ------------------------------------------------------------------ reading

    async def check(self) -> None:
        """The token can read the account's (or site's) variables."""
        await self._list()

    async def _list(self) -> dict[str, Variable]:
        resp = await self._call("list", "GET", self._path)
        if not resp.is_success:
            raise self._failure(resp, "list environment variables")
        data = self._json(resp)
        if not isinstance(data, list):
            raise self._failure(resp, "list environment variables: unexpected answer")
        out: dict[str, Variable] = {}
        for item in data:
            if isinstance(item, Mapping):
                var = Variable.parse(item)
                if var.key:
                    out[var.key] = var
        return out

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        listed = await self._list()
        self._listed = listed
        out: dict[str, RemoteEntry] = {}
        for key, var in listed.items():
            entry = self._entry(var)
            if entry is not None:
                out[key] = entry
        return out

    def _blocking(self, var: Variable) -> list[Slot]:
        """Slots of the variable that cannot coexist with ours: a value for all
        contexts when we set per-context values, and the reverse."""
        if self.slots == (ALL,):
            return sorted((s for s in var.ids if s != ALL), key=_slot_order)
        return [ALL] if ALL in var.ids else []

    def _shape_ok(self, var: Variable) -> bool:
        # the secret flag cannot be removed at Netlify: a secret variable stays one
        return var.scopes == frozenset(self.config.scopes) and (
            var.is_secret or not self.config.is_secret
        )

    def _ours_only(self, var: Variable) -> bool:
        return set(var.ids) <= set(self.slots)

    def _version(self, var: Variable) -> str:
        parts = [f"{c}:{p or ''}={var.ids[(c, p)]}" for c, p in self.slots if (c, p) in var.ids]
        parts += [f"blocked {c}:{p or ''}" for c, p in self._blocking(var)]
        parts.append("scopes=" + ",".join(sorted(var.scopes)))
        parts.append(f"secret={var.is_secret}")
        # the configuration's shape too: a changed config is re-applied at a drift check
        cfg = self.config
        parts.append(f"want={','.join(sorted(cfg.scopes))};secret={cfg.is_secret}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]

    def _entry(self, var: Variable) -> RemoteEntry | None:
        mine = [s for s in self.slots if s in var.ids]
        blocking = self._blocking(var)
        if not mine and not blocking:
            return None  # none of our contexts is taken: to the planner the key is free
        value: SecretValue | None = None
        readable = [var.values.get(s) for s in self.slots]
        if (
            not blocking
            and self._shape_ok(var)
            and all(v is not None for v in readable)
            and len(set(readable)) == 1
        ):
            value = readable[0]
        return RemoteEntry(var.key, value, self._version(var), None, {"variable": var})

    # ------------------------------------------------------------------ writing

    def _known(self, change: Change) -> tuple[bool, bool, Variable | None]:
        """(known, fresh, variable): what the listing says of the change's key. ``fresh``
        when the planner's change carries this run's listing; the destination's own copy
        of an earlier listing (kept current with its own writes) may be stale."""
        if change.remote is not None and isinstance(change.remote.meta.get("variable"), Variable):
            return True, True, change.remote.meta["variable"]
        if self._listed is not None:
            return True, False, self._listed.get(change.key)
        return False, False, None

    def _remember(self, var: Variable | None, key: str) -> None:
        if self._listed is None:
            return
        if var is None:
            self._listed.pop(key, None)
        else:
            self._listed[key] = var

    def _value_body(self, slot: Slot, value: str) -> dict[str, Any]:
        body: dict[str, Any] = {"context": slot[0], "value": value}
        if slot[1] is not None:
            body["context_parameter"] = slot[1]
        return body

    def _var_body(self, key: str, value: SecretValue) -> dict[str, Any]:
        return {
            "key": key,
            "scopes": self.config.api_scopes,
            "is_secret": self.config.is_secret,
            "values": [self._value_body(s, value.reveal()) for s in self.slots],
        }

    def _answer(self, resp: httpx.Response, key: str) -> str | None:
        """The version of the variable a write answered with; remembered for later."""
        data = self._json(resp)
        if isinstance(data, Mapping) and data.get("key") == key:
            var = Variable.parse(data)
            self._remember(var, key)
            return self._version(var)
        if self._listed is not None:
            self._listed.pop(key, None)  # unknown now: the next write finds out
        return None

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        outcomes: dict[str, ItemOutcome] = {}
        creates: list[Change] = []
        sets: list[_Pending] = []
        for c in changes:
            known, fresh, var = self._known(c)
            if (known and var is None) or (not known and c.action is Action.CREATE):
                creates.append(c)
            else:
                sets.append(_Pending(c, var, fresh=fresh))
        stop: ConnectorError | None = None
        if creates:
            stop = await self._create_batch(creates, outcomes, sets)
        for p in sets:
            if stop is not None:
                outcomes[p.change.key] = ItemOutcome(p.change.key, error=stop)
                continue
            try:
                version = await self._set(p)
                outcomes[p.change.key] = ItemOutcome(p.change.key, version=version)
            except ConnectorError as exc:
                outcomes[p.change.key] = ItemOutcome(p.change.key, error=exc)
                if isinstance(exc, RateLimited | AuthError):
                    stop = exc
        return [outcomes[c.key] for c in changes]

    async def _create_batch(
        self, creates: list[Change], outcomes: dict[str, ItemOutcome], sets: list[_Pending]
    ) -> ConnectorError | None:
        """One POST for the batch; when Netlify refuses it, one POST per key, so one bad
        key fails alone. Keys that exist already join ``sets``. Returns the error that
        stops the batch (throttled, or the token refused)."""
        try:
            versions = await self._create(creates)
        except _Exists:
            versions = None
        except ConnectorError as exc:
            if not isinstance(exc, PermanentError) or len(creates) == 1:
                for c in creates:
                    outcomes[c.key] = ItemOutcome(c.key, error=exc)
                return exc if isinstance(exc, RateLimited | AuthError) else None
            versions = None
        if versions is not None:
            for c in creates:
                outcomes[c.key] = ItemOutcome(c.key, version=versions.get(c.key))
            return None
        for i, c in enumerate(creates):
            try:
                one = await self._create([c])
                outcomes[c.key] = ItemOutcome(c.key, version=one.get(c.key))
            except _Exists:
                sets.append(_Pending(c, None, fetch=True))
            except ConnectorError as exc:
                outcomes[c.key] = ItemOutcome(c.key, error=exc)
                if isinstance(exc, RateLimited | AuthError):
                    for rest in creates[i + 1 :]:
                        outcomes[rest.key] = ItemOutcome(rest.key, error=exc)
                    return exc
        return None

    async def _create(self, changes: Sequence[Change]) -> dict[str, str | None]:
        body = [self._var_body(c.key, _desired(c)) for c in changes]
        resp = await self._call("create", "POST", self._path, json=body)
        if _already_exists(resp):
            raise _Exists()
        if not resp.is_success:
            what = changes[0].key if len(changes) == 1 else f"{len(changes)} variables"
            raise self._failure(resp, f"create {what}")
        versions: dict[str, str | None] = {c.key: None for c in changes}
        data = self._json(resp)
        if isinstance(data, list):
            for item in data:
                if isinstance(item, Mapping) and item.get("key") in versions:
                    var = Variable.parse(item)
                    self._remember(var, var.key)
                    versions[var.key] = self._version(var)
        return versions

    async def _get(self, key: str) -> Variable | None:
        resp = await self._call("get", "GET", self._key_path(key))
        if resp.status_code == 404:
            return None
        if not resp.is_success:
            raise self._failure(resp, f"read {key}")
        data = self._json(resp)
        return Variable.parse(data) if isinstance(data, Mapping) else None

    async def _set(self, p: _Pending) -> str | None:
        """Our values of an existing variable; re-created when it is gone.

        A variable that holds only our values is replaced whole with one ``PUT``; one
        that holds other contexts' values gets our contexts one ``PATCH`` at a time. A
        ``PUT`` is sent only on a view of the variable taken in this run (the planner's
        listing, or one ``GET`` of the key): a value someone else added to another
        context since an earlier look would otherwise be replaced away."""
        c, var = p.change, p.variable
        value = _desired(c)
        fresh = p.fresh
        if p.fetch or (not fresh and self._may_replace(var)):
            var = await self._get(c.key)
            if var is None:
                return (await self._create([c]))[c.key]
            fresh = True
        if var is None:
            # one context and nothing known: its PATCH is the one write; re-create on 404
            try:
                return await self._patch_all(c.key, value, None, self.slots)
            except _Missing:
                return (await self._create([c]))[c.key]
        blocking = self._blocking(var)
        if blocking and self.slots != (ALL,):
            raise ConflictError(
                f"netlify {c.key} holds one value for all deploy contexts; this destination "
                "sets per-context values: remove that value at Netlify (or set contexts: "
                "[all]) and syncd will write it"
            )
        ours_only = self._ours_only(var)
        if self.config.is_secret and not var.is_secret and not ours_only:
            raise ConflictError(
                f"netlify {c.key} is a non-secret variable with values in other deploy "
                "contexts: syncd does not write a secret value where it would be readable "
                "(mark the variable secret at Netlify, or set is_secret: false)"
            )
        # with a view of this run, readable values that already match are not re-sent
        todo = [s for s in self.slots if not (fresh and var.values.get(s) == value)]
        try:
            if fresh and (blocking or (ours_only and (len(todo) > 1 or not self._shape_ok(var)))):
                return await self._replace(c.key, value, var)
            return await self._patch_all(c.key, value, var, todo)
        except _Missing:
            return (await self._create([c]))[c.key]

    def _may_replace(self, var: Variable | None) -> bool:
        """Whether a variable known only from an earlier look (or not at all) may want
        one PUT: then it is read first. With one context and the configured shape, the
        one PATCH is the one write either way; a variable whose other contexts held
        values gets PATCHes, which never touch them."""
        if var is None:
            return len(self.slots) > 1
        if self._blocking(var):
            # per-context values where ours is the one value for all contexts: replaced
            return self.slots == (ALL,)
        if not self._ours_only(var):
            return False
        return len(self.slots) > 1 or not self._shape_ok(var)

    async def _replace(self, key: str, value: SecretValue, var: Variable) -> str | None:
        """One PUT: our values with the configured scopes and secret flag."""
        body = self._var_body(key, value)
        body["is_secret"] = self.config.is_secret or var.is_secret
        resp = await self._call("update", "PUT", self._key_path(key), json=body)
        if resp.status_code == 404:
            raise _Missing()
        if not resp.is_success:
            raise self._failure(resp, f"update {key}")
        return self._answer(resp, key)

    async def _patch_all(
        self, key: str, value: SecretValue, var: Variable | None, slots: Sequence[Slot]
    ) -> str | None:
        """Set the given contexts with the per-context call, which leaves every other
        context alone. Raises _Missing when the variable is gone."""
        version = self._version(var) if var is not None else None
        for slot in slots:
            resp = await self._call(
                "set", "PATCH", self._key_path(key), json=self._value_body(slot, value.reveal())
            )
            if resp.status_code == 404:
                raise _Missing()
            if not resp.is_success:
                raise self._failure(resp, f"set {key} ({_describe(slot)})")
            version = self._answer(resp, key)
        return version

    # ------------------------------------------------------------------ deleting

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        out: list[ItemOutcome] = []
        stop: ConnectorError | None = None
        for c in changes:
            if stop is not None:
                out.append(ItemOutcome(c.key, error=stop))
                continue
            try:
                await self._delete_one(c)
                out.append(ItemOutcome(c.key))
            except ConnectorError as exc:
                out.append(ItemOutcome(c.key, error=exc))
                if isinstance(exc, RateLimited | AuthError):
                    stop = exc
        return out

    async def _delete_one(self, c: Change) -> None:
        var: Variable | None
        if c.remote is not None and isinstance(c.remote.meta.get("variable"), Variable):
            var = c.remote.meta["variable"]
        else:
            var = await self._get(c.key)
        if var is None:
            return  # already gone
        mine = [s for s in self.slots if s in var.ids]
        if not mine:
            return  # nothing of ours left; other contexts' values stay
        if self._ours_only(var):
            resp = await self._call("delete", "DELETE", self._key_path(c.key))
            if not resp.is_success and resp.status_code != 404:
                raise self._failure(resp, f"delete {c.key}")
            self._remember(None, c.key)
            return
        for slot in mine:
            path = f"{self._key_path(c.key)}/value/{quote(var.ids[slot], safe='')}"
            resp = await self._call("delete_value", "DELETE", path)
            if not resp.is_success and resp.status_code != 404:
                raise self._failure(resp, f"delete {c.key} ({_describe(slot)})")
        left = {s: i for s, i in var.ids.items() if s not in mine}
        values = {s: v for s, v in var.values.items() if s not in mine}
        self._remember(replace(var, ids=left, values=values), c.key)


def _already_exists(resp: httpx.Response) -> bool:
    """Netlify refuses a create naming an existing key with ``400 Environment variable KEY
    already exists`` (a 409 is taken the same way)."""
    if resp.status_code == 409:
        return True
    if resp.status_code != 400:
        return False
    data = json_or_none(resp)
    message = data.get("message") if isinstance(data, Mapping) else None
    return isinstance(message, str) and "already exists" in message.lower()


def _desired(c: Change) -> SecretValue:
    if c.desired is None:
        raise ConflictError(f"netlify {c.key}: no value to write")
    return c.desired.value


def _describe(slot: Slot) -> str:
    return f"branch {slot[1]}" if slot[0] == "branch" else f"{slot[0]} context"


def _slot_order(slot: Slot) -> tuple[str, str]:
    return slot[0], slot[1] or ""
