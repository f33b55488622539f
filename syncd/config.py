"""The YAML envelope: ``${VAR}`` expansion, ``*_file`` twins, validation with YAML paths."""

from __future__ import annotations

import os
import re
import string
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from syncd import registry
from syncd.config_types import Duration
from syncd.errors import ConfigError, ConfigErrors

_VAR = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TEMPLATE_FIELDS = frozenset({"key", "path", "source", "environment"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StateSection(_Model):
    url: str | None = None
    """``sqlite:///PATH`` (default: ``state.db`` under SYNCD_STATE_DIR) or ``postgresql://…``
    (several ``syncd run`` replicas then share the syncs)."""
    lock_timeout: Duration = 0.0
    """How long ``syncd once`` waits for a (sync, destination) pair another process is
    running before reporting it ``busy`` (exit 1, nothing written). ``--lock-timeout``
    overrides it."""
    lease: Duration = Field(default=30.0, ge=2.0)
    """How long a process's hold on a pair survives without a heartbeat (sent every quarter
    of it). A process paused or cut off from the store longer than this loses its pairs to
    the others, and stops writing before its next write."""


class ServerSection(_Model):
    listen: str = "127.0.0.1:8080"
    """HOST:PORT that ``syncd run`` serves /healthz /readyz /metrics /webhooks on."""
    max_body_bytes: int = 1_048_576
    """Webhook bodies larger than this are refused with 413."""
    status_token: SecretStr | None = None
    """When set, ``/status`` and ``/status.json`` need it: ``Authorization: Bearer <token>``,
    or HTTP Basic with it as the password (a browser prompts). Also ``status_token_file``."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8080, got {v!r}")
        return v


DeletePolicy = Literal["managed", "never"]
ConflictPolicy = Literal["overwrite", "skip", "fail"]


class Defaults(_Model):
    """Inherited by every sync unless the sync sets its own."""

    interval: Duration = 300.0
    """How often ``syncd run`` runs each sync (with jitter); a webhook triggers a run at once."""
    drift_check: Duration = 3600.0
    """How often destinations are listed again to catch out-of-band edits; in between, an
    unchanged source costs no destination call."""
    delete: DeletePolicy = "managed"
    """``managed``: delete a key syncd created once it leaves the source; ``never``: leave it."""
    on_conflict: ConflictPolicy = "overwrite"
    """A key that exists at the destination but was not created by syncd: ``overwrite``
    adopts it (never deleted later), ``skip`` leaves it, ``fail`` reports it and exits 1."""
    max_delete_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    """A run that would delete more than this share of a destination's managed keys applies
    nothing and reports, unless ``syncd once --force``."""
    redeploy_debounce: Duration = 60.0
    """``syncd run``: how long after the last change a destination's redeploy (``redeploy``,
    ``build_hook``, ``restart``) waits, so a burst of changes causes one. ``syncd once``
    redeploys at the end of its pass."""
    retry_budget: Duration = 120.0
    """The most one key (or one source read) waits in backoff within one run: 5xx answers
    (their ``Retry-After`` included), timeouts, network errors. A wait that would pass it
    is not taken: the key fails with the error and says so, and the next run tries again.
    Throttles are not counted: a rate limit is waited out exactly as the platform asks, up
    to 15 minutes a wait and 5 attempts."""


class SyncSection(_Model):
    """One source fanned out to destinations; each (sync, destination) pair runs on its own."""

    name: str
    """Unique; letters, digits, ``.``, ``_``, ``-``. The state store and the platforms'
    ownership marks record it: renaming a sync makes it a different owner."""
    from_: str = Field(alias="from")
    """The name of a source under ``sources``."""
    to: list[str] = Field(min_length=1)
    """Names of destinations under ``destinations``."""
    include: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns over ``path + key`` of source entries (``payments/*``)."""
    exclude: list[str] = Field(default_factory=list)
    """Glob patterns of source entries left out, even when included."""
    key_template: str | None = None
    """The destination key: ``{key}``, ``{path}``, ``{source}``, ``{environment}``; e.g.
    ``APP_{key}``. Default: the destination's (``{path}{key}`` for AWS, else ``{key}``)."""
    interval: Duration | None = None
    """Overrides ``defaults.interval``."""
    drift_check: Duration | None = None
    """Overrides ``defaults.drift_check``."""
    delete: DeletePolicy | None = None
    """Overrides ``defaults.delete``."""
    on_conflict: ConflictPolicy | None = None
    """Overrides ``defaults.on_conflict``."""
    max_delete_fraction: float | None = Field(None, ge=0.0, le=1.0)
    """Overrides ``defaults.max_delete_fraction``."""
    redeploy_debounce: Duration | None = None
    """Overrides ``defaults.redeploy_debounce``."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                "expected letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("key_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        bad = [n for n in names if n not in TEMPLATE_FIELDS]
        if bad:
            raise ValueError(
                f"unknown placeholder {{{bad[0]}}}; expected {{key}}, {{path}}, {{source}} "
                "or {environment}"
            )
        if "key" not in names:
            raise ValueError("the template must contain {key}")
        return v


NotifyEvent = Literal["failure", "recovery", "change"]
DEFAULT_EVENTS: tuple[NotifyEvent, ...] = ("failure", "recovery")


class NotifyEntry(_Model):
    """Someone to tell when a (sync, destination) pair breaks, recovers or changes."""

    url: SecretStr
    """An Apprise URL (``slack://…``, ``msteams://…``, ``mailto://…``, ``discord://…``,
    ``json://…``) or, with ``secret``, an ``https://`` URL that receives a signed JSON body.
    A credential (``url_file``): it is never logged."""
    on: list[NotifyEvent] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    """``failure`` (ok, or never run, to failing), ``recovery`` (failing to ok), ``change``
    (after a run that applied writes; key names and counts only)."""
    repeat: Duration = 86400.0
    """A pair still failing is reminded at most this often."""
    secret: SecretStr | None = None
    """Signs the JSON body: ``X-Syncd-Signature: sha256=<hex HMAC-SHA256>`` (``secret_file``)."""

    @model_validator(mode="after")
    def _url(self) -> NotifyEntry:
        url = self.url.get_secret_value()
        if "://" not in url:
            raise ValueError("url: expected an Apprise URL (slack://…) or an https:// URL")
        if self.secret is not None and not url.startswith(("https://", "http://")):
            raise ValueError("secret signs an https:// webhook; this url is an Apprise URL")
        if not self.on:
            raise ValueError("on: expected at least one of failure, recovery, change")
        return self


class Envelope(_Model):
    version: Literal[1]
    """The config format version."""
    state: StateSection = StateSection()
    """Where syncd remembers what it pushed: fingerprints and versions, never values."""
    server: ServerSection = ServerSection()
    """The HTTP surface of ``syncd run``."""
    notify: list[NotifyEntry] = Field(default_factory=list)
    """Who is told when a (sync, destination) pair starts failing, recovers or changes."""
    defaults: Defaults = Defaults()
    """Policy every sync inherits."""
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Name → a source's options; ``type`` picks the connector (see Sources)."""
    destinations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Name → a destination's options; ``type`` picks the connector (see Destinations)."""
    syncs: list[SyncSection] = Field(default_factory=list)
    """What flows where."""


@dataclass(frozen=True)
class SyncPolicy:
    interval: float
    drift_check: float
    delete: DeletePolicy
    on_conflict: ConflictPolicy
    max_delete_fraction: float
    redeploy_debounce: float = 60.0


@dataclass(frozen=True)
class SyncSpec:
    name: str
    source: str
    destinations: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    key_template: str | None
    policy: SyncPolicy


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    kind: str
    cls: Any
    config: Any


@dataclass
class Config:
    path: Path
    base_dir: Path
    state_url: str | None
    server: ServerSection
    defaults: Defaults
    sources: dict[str, ConnectorSpec]
    destinations: dict[str, ConnectorSpec]
    syncs: list[SyncSpec]
    secrets: set[str] = field(default_factory=set)
    state: StateSection = field(default_factory=StateSection)
    notify: list[NotifyEntry] = field(default_factory=list)

    def sync(self, name: str) -> SyncSpec:
        for s in self.syncs:
            if s.name == name:
                return s
        raise ConfigError("syncs", f"no sync named {name!r} (have: {', '.join(self.sync_names)})")

    @property
    def sync_names(self) -> list[str]:
        return [s.name for s in self.syncs]


# ---------------------------------------------------------------------------- helpers


def yaml_path(parts: typing.Iterable[str | int]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def expand_env(
    node: Any, env: typing.Mapping[str, str], where: list[str | int], errors: list[ConfigError]
) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string; ``$${`` is a literal."""
    if isinstance(node, dict):
        return {k: expand_env(v, env, [*where, str(k)], errors) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, env, [*where, i], errors) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(1):
                return m.group(0)[1:]
            name, default = m.group(2), m.group(3)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append(
                ConfigError(
                    yaml_path(where),
                    f"environment variable {name} is not set and has no default "
                    f"(write ${{{name}:-default}} to give one)",
                )
            )
            return ""

        return _VAR.sub(sub, node)
    return node


def _mentions_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, typing.Annotated):
        return any(_mentions_secret(a) for a in typing.get_args(annotation))
    return False


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for a in typing.get_args(annotation):
            m = _nested_model(a)
            if m is not None:
                return m
    return None


def apply_file_twins(
    data: dict[str, Any],
    model: type[BaseModel],
    where: list[str | int],
    base_dir: Path,
    errors: list[ConfigError],
) -> dict[str, Any]:
    """Replace ``token_file: PATH`` by ``token: <file contents>`` for credential fields."""
    out = dict(data)
    fields = model.model_fields
    for key in list(data):
        value = data[key]
        if isinstance(key, str) and key.endswith("_file") and key not in fields:
            base = key[: -len("_file")]
            info = fields.get(base)
            if info is None or not _mentions_secret(info.annotation):
                continue
            path = [*where, key]
            if base in data:
                errors.append(ConfigError(yaml_path(path), f"give {base} or {key}, not both"))
                del out[key]
                continue
            if not isinstance(value, str):
                errors.append(ConfigError(yaml_path(path), "expected a file path"))
                continue
            file = Path(os.path.expanduser(value))
            if not file.is_absolute():
                file = base_dir / file
            try:
                out[base] = file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                errors.append(ConfigError(yaml_path(path), f"cannot read {file}: {exc.strerror}"))
            del out[key]
        elif isinstance(key, str) and key in fields and isinstance(value, dict):
            nested = _nested_model(fields[key].annotation)
            if nested is not None:
                out[key] = apply_file_twins(value, nested, [*where, key], base_dir, errors)
    return out


def _pydantic_errors(
    exc: ValidationError, prefix: list[str | int], model: type[BaseModel] | None = None
) -> list[ConfigError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = yaml_path([*prefix, *loc])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1]) if model else []
            msg = "unknown key" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(ConfigError(path, msg))
    return out


def _allowed_keys(model: type[BaseModel], loc: list[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if info is None:
            return []
        ann = info.annotation
        if typing.get_origin(ann) is list:
            ann = typing.get_args(ann)[0]
        current = _nested_model(ann)
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return sorted((f.alias or n) for n, f in current.model_fields.items())


def iter_secrets(obj: Any) -> Iterator[str]:
    """Every SecretStr value inside a validated config model."""
    if isinstance(obj, SecretStr):
        yield obj.get_secret_value()
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from iter_secrets(getattr(obj, name))
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from iter_secrets(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from iter_secrets(v)


# ---------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str], env: typing.Mapping[str, str] | None = None
) -> Config:
    """Read, expand and validate a config file. Raises ConfigErrors listing every problem."""
    env = os.environ if env is None else env
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors(
            [ConfigError("", f"cannot read config file {file}: {exc.strerror}")]
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigErrors([ConfigError("", f"{file}: {problem}{where}")]) from None
    if not isinstance(raw, dict):
        raise ConfigErrors([ConfigError("", f"{file}: expected a mapping at the top level")])
    return build_config(raw, file.resolve(), env)


def build_config(raw: dict[str, Any], file: Path, env: typing.Mapping[str, str]) -> Config:
    errors: list[ConfigError] = []
    base_dir = file.parent
    data = expand_env(raw, env, [], errors)
    data = apply_file_twins(data, Envelope, [], base_dir, errors)
    if isinstance(data.get("notify"), list):
        items = []
        for i, item in enumerate(data["notify"]):
            if isinstance(item, dict):
                # YAML 1.1 reads a bare `on:` key as the boolean true
                item = {("on" if k is True else k): v for k, v in item.items()}
                item = apply_file_twins(item, NotifyEntry, ["notify", i], base_dir, errors)
            items.append(item)
        data["notify"] = items
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, [], Envelope))
        raise ConfigErrors(errors) from None

    ctx = {"base_dir": str(base_dir)}
    secrets: set[str] = set()

    def connectors(section: str, group: str) -> dict[str, ConnectorSpec]:
        out: dict[str, ConnectorSpec] = {}
        for name, body in getattr(envelope, section).items():
            where: list[str | int] = [section, name]
            if not _NAME.match(name):
                errors.append(
                    ConfigError(yaml_path(where), "names use letters, digits, '.', '_' or '-'")
                )
            kind = body.get("type") if isinstance(body, dict) else None
            if not isinstance(kind, str):
                errors.append(ConfigError(yaml_path([*where, "type"]), "required key is missing"))
                continue
            try:
                cls = registry.load(group, kind)
            except registry.ConnectorNotFound as exc:
                errors.append(ConfigError(yaml_path([*where, "type"]), str(exc)))
                continue
            body = apply_file_twins(body, cls.Config, where, base_dir, errors)
            try:
                cfg = cls.Config.model_validate(body, context=ctx)
            except ValidationError as exc:
                errors.extend(_pydantic_errors(exc, where, cls.Config))
                continue
            secrets.update(iter_secrets(cfg))
            out[name] = ConnectorSpec(name, kind, cls, cfg)
        return out

    sources = connectors("sources", registry.SOURCE_GROUP)
    destinations = connectors("destinations", registry.DESTINATION_GROUP)

    syncs: list[SyncSpec] = []
    seen: dict[str, int] = {}
    d = envelope.defaults
    for i, s in enumerate(envelope.syncs):
        where: list[str | int] = ["syncs", i]
        if s.name in seen:
            errors.append(
                ConfigError(
                    yaml_path([*where, "name"]),
                    f"duplicate sync name {s.name!r} (also syncs[{seen[s.name]}])",
                )
            )
        seen[s.name] = i
        if s.from_ not in envelope.sources:
            known = ", ".join(sorted(envelope.sources)) or "none defined"
            errors.append(
                ConfigError(
                    yaml_path([*where, "from"]), f"unknown source {s.from_!r} (sources: {known})"
                )
            )
        for j, dest in enumerate(s.to):
            if dest not in envelope.destinations:
                known = ", ".join(sorted(envelope.destinations)) or "none defined"
                errors.append(
                    ConfigError(
                        yaml_path([*where, "to", j]),
                        f"unknown destination {dest!r} (destinations: {known})",
                    )
                )
        if len(set(s.to)) != len(s.to):
            errors.append(ConfigError(yaml_path([*where, "to"]), "a destination is listed twice"))
        policy = SyncPolicy(
            interval=s.interval if s.interval is not None else d.interval,
            drift_check=s.drift_check if s.drift_check is not None else d.drift_check,
            delete=s.delete or d.delete,
            on_conflict=s.on_conflict or d.on_conflict,
            max_delete_fraction=(
                s.max_delete_fraction
                if s.max_delete_fraction is not None
                else d.max_delete_fraction
            ),
            redeploy_debounce=(
                s.redeploy_debounce if s.redeploy_debounce is not None else d.redeploy_debounce
            ),
        )
        if policy.interval <= 0:
            errors.append(ConfigError(yaml_path([*where, "interval"]), "must be more than 0s"))
        syncs.append(
            SyncSpec(
                s.name,
                s.from_,
                tuple(s.to),
                tuple(s.include),
                tuple(s.exclude),
                s.key_template,
                policy,
            )
        )

    # connector-specific cross checks (e.g. a destination that refuses a template)
    for i, spec_ in enumerate(syncs):
        for j, dest in enumerate(spec_.destinations):
            spec = destinations.get(dest)
            validate = getattr(spec.cls, "validate_sync", None) if spec else None
            if spec and validate:
                msg = validate(spec.config, spec_)
                if msg:
                    errors.append(ConfigError(yaml_path(["syncs", i, "to", j]), msg))

    if errors:
        raise ConfigErrors(errors)
    return Config(
        file,
        base_dir,
        envelope.state.url,
        envelope.server,
        envelope.defaults,
        sources,
        destinations,
        syncs,
        {s for s in secrets | set(iter_secrets(envelope)) if s},
        envelope.state,
        list(envelope.notify),
    )
