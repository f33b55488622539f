"""The ``aws-secrets-manager`` destination: a secret per key named ``prefix + key``
(``mapping: one-to-one``), or one secret, ``name``, holding a JSON object of every key
(``mapping: bundle``).

Calls, and when they happen (one-to-one):

- drift check / unrecorded keys: ``ListSecrets`` filtered by the name prefix (100 a page,
  secrets scheduled for deletion included, tags and the ``AWSCURRENT`` version id come with
  it); ``BatchGetSecretValue`` (20 a call) only where the current version differs from the
  one syncd recorded or nothing is recorded; ``DescribeSecret`` only for a recorded secret
  the listing did not show (``ListSecrets`` is eventually consistent). Between drift checks an
  unchanged run makes no call at all.
- a new key: ``CreateSecret`` with its tags and ``kms_key_id``; a changed one:
  ``PutSecretValue``. Both carry a ``ClientRequestToken`` kept across the executor's retries,
  so a retried write that had landed does not make a second version.
- a secret scheduled for deletion whose key comes back: ``RestoreSecret`` then
  ``PutSecretValue``.
- deletion: ``DeleteSecret`` with ``recovery_window_days`` (0: without recovery), only for a
  secret carrying ``managed-by: syncd``.

Bundle: ``DescribeSecret`` at a drift check, ``GetSecretValue`` where a version moved; a run
that changes keys reads the bundle and writes it once (a run that also deletes keys writes it
once more).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from syncd.connector import BaseDestination, Capabilities, ConnectorContext
from syncd.connectors._aws import (
    TAG_MANAGED_BY,
    TAG_MANAGED_VALUE,
    AwsClient,
    AwsConfig,
    aws_credential_key,
    chunks,
    classify,
    error_code,
    error_says,
    gather_limited,
    owner_of,
    tag_list,
    tags_dict,
)
from syncd.errors import ConflictError, ConnectorError, KeyRejected, RetryableError
from syncd.model import Action, Change, ItemOutcome, RemoteEntry, SecretValue

MAX_VALUE_BYTES = 65536  # SecretString
MAX_NAME = 512
WRITE_TPS = 50.0  # the combined quota of the write APIs, per account and region
LIST_PAGE = 100  # ListSecrets MaxResults
BATCH_GET = 20  # BatchGetSecretValue SecretIdList
NAME_CHARS = r"A-Za-z0-9/_+=.@\-"
_NAME = re.compile(rf"^[{NAME_CHARS}]+$")
DELETED_VERSION = "deleted"
"""RemoteEntry.version of a secret scheduled for deletion: never equal to a recorded one."""
_TOKENS_KEPT = 10_000


class SecretsManagerConfig(AwsConfig):
    type: Literal["aws-secrets-manager"] = "aws-secrets-manager"
    mapping: Literal["one-to-one", "bundle"] = "one-to-one"
    """one-to-one: a secret per key named prefix + key; bundle: one JSON secret, ``name``."""
    prefix: str | None = None
    """one-to-one: the start of every secret name, such as myapp/prod/ (required)."""
    name: str | None = None
    """bundle: the secret's name (required)."""
    recovery_window_days: int = 7
    """Days a deleted secret stays recoverable: 7 to 30, or 0 to delete without recovery."""
    writes_per_second: float | None = Field(default=WRITE_TPS, gt=0)
    """Pace writes to this many a second per account and region (default 50, the combined
    quota of CreateSecret, PutSecretValue, UpdateSecret, TagResource, DeleteSecret...)."""

    @field_validator("prefix", "name")
    @classmethod
    def _chars(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _NAME.match(v):
            raise ValueError(f"{v!r}: secret names use letters, digits and / _ + = . @ -")
        if len(v) > MAX_NAME:
            raise ValueError(f"at most {MAX_NAME} characters")
        return v

    @field_validator("recovery_window_days")
    @classmethod
    def _window(cls, v: int) -> int:
        if v != 0 and not 7 <= v <= 30:
            raise ValueError("expected 7 to 30 days, or 0 to delete without recovery")
        return v

    @model_validator(mode="after")
    def _mapping(self) -> SecretsManagerConfig:
        if self.mapping == "one-to-one":
            if not self.prefix:
                raise ValueError(
                    "prefix is required with mapping: one-to-one (such as myapp/prod/): it "
                    "scopes what syncd lists and may delete"
                )
            if self.name is not None:
                raise ValueError("name is the bundle's name: use it with mapping: bundle")
        else:
            if not self.name:
                raise ValueError("name is required with mapping: bundle")
            if self.prefix is not None:
                raise ValueError("prefix applies to mapping: one-to-one; a bundle has a name")
        return self


def _current_version(secret: Mapping[str, Any]) -> str | None:
    """The AWSCURRENT version id of a ListSecrets or DescribeSecret entry."""
    stages = secret.get("SecretVersionsToStages") or secret.get("VersionIdsToStages") or {}
    for vid, labels in stages.items():
        if "AWSCURRENT" in labels:
            return str(vid)
    return None


def _is_deleted(exc: BaseException) -> bool:
    """Secrets Manager's answer for an operation on a secret scheduled for deletion."""
    return error_code(exc) == "InvalidRequestException" and error_says(exc, "deleted", "deletion")


def _is_gone(exc: BaseException) -> bool:
    return error_code(exc) == "ResourceNotFoundException"


class SecretsManagerDestination(BaseDestination):
    kind: ClassVar[str] = "aws-secrets-manager"
    Config: ClassVar[type[SecretsManagerConfig]] = SecretsManagerConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=True,
        tags_ownership=True,
        max_value_bytes=MAX_VALUE_BYTES,
        key_pattern=rf"[{NAME_CHARS}]+",
        key_rule="letters, digits and / _ + = . @ -",
        max_key_length=MAX_NAME,
        batch_size=1,
        delete_batch_size=1,
        default_key_template="{path}{key}",
    )
    config: SecretsManagerConfig

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        self.aws = AwsClient("secretsmanager", config, self.count, self.read, self.in_thread)
        self.bundle = config.mapping == "bundle"
        self.prefix: str = config.prefix or ""
        self._lock = asyncio.Lock()
        # ClientRequestToken per pending write, kept while the executor retries it
        self._tokens: dict[tuple[str, ...], str] = {}
        wps = config.writes_per_second
        caps = replace(type(self).capabilities, writes_per_minute=wps * 60 if wps else None)
        if self.bundle:
            # any JSON key; every change of a run goes into one write
            caps = replace(
                caps,
                key_pattern=None,
                max_key_length=None,
                batch_size=100_000,
                delete_batch_size=100_000,
            )
        else:
            caps = replace(caps, max_key_length=MAX_NAME - len(self.prefix))
        vars(self)["capabilities"] = caps

    def classify(self, exc: BaseException) -> ConnectorError:
        return classify(exc, "secretsmanager")

    @property
    def credential_key(self) -> str:
        return aws_credential_key("secretsmanager", self.config)

    def name_of(self, key: str) -> str:
        return self.prefix + key

    def _tags(self, sync: str, owned: bool = True) -> list[dict[str, str]]:
        return tag_list(self.config.tags, sync, owned=owned)

    def _description(self, sync: str) -> str:
        return f"Managed by syncd (sync {sync}): edits here are overwritten from the source."

    # ------------------------------------------------------------------ tokens

    def _token(self, ident: tuple[str, ...]) -> str:
        if ident not in self._tokens:
            if len(self._tokens) >= _TOKENS_KEPT:
                self._tokens.pop(next(iter(self._tokens)))
            self._tokens[ident] = str(uuid.uuid4())
        return self._tokens[ident]

    def _settle(self, ident: tuple[str, ...], error: ConnectorError | None) -> None:
        """Drop a token once its write landed or will not be retried."""
        if error is None or not isinstance(error, RetryableError):
            self._tokens.pop(ident, None)

    # ------------------------------------------------------------------ reading

    async def check(self) -> None:
        if self.bundle:
            try:
                await self.aws.call("describe", "describe_secret", SecretId=self.config.name)
            except Exception as exc:
                if not _is_gone(exc):
                    raise
            return
        await self.aws.call(
            "list",
            "list_secrets",
            Filters=[{"Key": "name", "Values": [self.prefix]}],
            MaxResults=1,
        )

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        if self.bundle:
            return await self._list_bundle(keys, known or {})
        return await self._list_secrets(keys, known or {})

    async def _list_all(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            kw: dict[str, Any] = {
                "Filters": [{"Key": "name", "Values": [self.prefix]}],
                "IncludePlannedDeletion": True,
                "MaxResults": LIST_PAGE,
            }
            if token:
                kw["NextToken"] = token
            page = await self.aws.read("list", "list_secrets", **kw)
            for s in page.get("SecretList", []):
                name = str(s.get("Name", ""))
                # the name filter matches a prefix; keep exactly ours
                if name.startswith(self.prefix) and len(name) > len(self.prefix):
                    out[name[len(self.prefix) :]] = s
            token = page.get("NextToken")
            if not token:
                return out

    async def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.aws.call("describe", "describe_secret", SecretId=name)
        except Exception as exc:
            if _is_gone(exc):
                return None
            raise

    async def _read_values(self, keys: list[str]) -> dict[str, tuple[SecretValue | None, str]]:
        """key → (value, version read) for the keys still there; value None where it cannot
        be read (binary, no permission, no decryption): the planner then goes by versions."""

        async def batch(part: list[str]) -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            token: str | None = None
            while True:
                kw: dict[str, Any] = {"SecretIdList": [self.name_of(k) for k in part]}
                if token:
                    kw["NextToken"] = token
                r = await self.aws.read("get", "batch_get_secret_value", **kw)
                got.extend(r.get("SecretValues", []))
                got.extend({"_error": e} for e in r.get("Errors", []))
                token = r.get("NextToken")
                if not token:
                    return got

        pages = await gather_limited(
            self.config.concurrency,
            [functools.partial(batch, part) for part in chunks(keys, BATCH_GET)],
        )
        out: dict[str, tuple[SecretValue | None, str]] = {}
        wanted = {self.name_of(k): k for k in keys}
        for page in pages:
            for item in page:
                if "_error" in item:
                    err = item["_error"]
                    key = wanted.get(str(err.get("SecretId", "")))
                    if key is not None and err.get("ErrorCode") != "ResourceNotFoundException":
                        out[key] = (None, "")
                    continue
                key = wanted.get(str(item.get("Name", "")))
                if key is None:
                    continue
                text = item.get("SecretString")
                value = SecretValue(str(text)) if isinstance(text, str) else None
                out[key] = (value, str(item.get("VersionId", "")))
        return out

    async def _list_secrets(
        self, keys: Sequence[str] | None, known: Mapping[str, str | None]
    ) -> Mapping[str, RemoteEntry]:
        listed = await self._list_all()
        # ListSecrets may lag recent changes: confirm recorded secrets it did not show
        missing = [k for k in sorted(known) if k not in listed]
        if missing:
            found = await gather_limited(
                self.config.concurrency,
                [functools.partial(self._describe, self.name_of(k)) for k in missing],
            )
            for key, desc in zip(missing, found, strict=True):
                if desc is not None:
                    listed[key] = desc

        wanted = set(keys) if keys is not None else set(listed)
        stale = [
            k
            for k in sorted(wanted)
            if k in listed
            and not listed[k].get("DeletedDate")
            and (known.get(k) is None or known[k] != _current_version(listed[k]))
        ]
        values = await self._read_values(stale) if stale else {}

        out: dict[str, RemoteEntry] = {}
        for key, s in listed.items():
            tags = tags_dict(s.get("Tags"))
            deleted = bool(s.get("DeletedDate"))
            meta = {
                "deleted": deleted,
                "managed": tags.get(TAG_MANAGED_BY) == TAG_MANAGED_VALUE,
            }
            owner = owner_of(tags)
            if deleted:
                out[key] = RemoteEntry(key, None, DELETED_VERSION, owner, meta)
            elif key in stale:
                if key not in values:
                    continue  # deleted between the listing and the read
                value, version = values[key]
                version = version or _current_version(s) or ""
                out[key] = RemoteEntry(key, value, version or None, owner, meta)
            else:
                out[key] = RemoteEntry(key, None, _current_version(s), owner, meta)
        return out

    # ------------------------------------------------------------------ one-to-one writes

    async def _put_value(self, name: str, value: str, token: str) -> str:
        r = await self.aws.call(
            "put", "put_secret_value", SecretId=name, SecretString=value, ClientRequestToken=token
        )
        return str(r["VersionId"])

    async def _create(self, change: Change, value: str, token: str, owned: bool) -> str:
        kw: dict[str, Any] = {
            "Name": self.name_of(change.key),
            "SecretString": value,
            "ClientRequestToken": token,
            "Tags": self._tags(change.sync, owned),
        }
        if owned:
            kw["Description"] = self._description(change.sync)
        if self.config.kms_key_id:
            kw["KmsKeyId"] = self.config.kms_key_id
        r = await self.aws.call("create", "create_secret", **kw)
        return str(r["VersionId"])

    async def _restore(self, name: str) -> None:
        await self.aws.call("restore", "restore_secret", SecretId=name)

    async def _write(self, change: Change, token: str) -> str:
        assert change.desired is not None
        name = self.name_of(change.key)
        value = change.desired.value.reveal()
        meta = change.remote.meta if change.remote is not None else {}

        if meta.get("deleted"):
            if not meta.get("managed"):
                raise ConflictError(
                    f"{name}: scheduled for deletion and not created by syncd; not restored"
                )
            await self._restore(name)
            return await self._put_value(name, value, token)

        if change.action is Action.CREATE:
            try:
                return await self._create(change, value, token, owned=True)
            except Exception as exc:
                if error_code(exc) != "ResourceExistsException" and not _is_deleted(exc):
                    raise
                # there already: syncd's own write whose answer was lost (or a listing that
                # lagged), or someone else's secret
                desc = await self._describe(name)
                if desc is None:
                    raise
                tags = tags_dict(desc.get("Tags"))
                if owner_of(tags) != change.sync:
                    raise ConflictError(
                        f"{name}: a secret with this name exists and does not carry this "
                        "sync's managed-by: syncd tag; left unchanged"
                    ) from None
                if desc.get("DeletedDate"):
                    await self._restore(name)
                return await self._put_value(name, value, token)

        try:
            return await self._put_value(name, value, token)
        except Exception as exc:
            if _is_gone(exc):
                # deleted for good since syncd wrote it: create it again
                return await self._create(change, value, token, owned=change.created)
            if _is_deleted(exc):
                # scheduled for deletion out of band while syncd still manages the key
                await self._restore(name)
                return await self._put_value(name, value, token)
            raise

    async def _upsert_one(self, change: Change) -> ItemOutcome:
        assert change.desired is not None
        ident = (change.sync, change.key, change.desired.fingerprint)
        try:
            version = await self._write(change, self._token(ident))
        except Exception as exc:
            err = self.classify(exc)
            self._settle(ident, err)
            return ItemOutcome(change.key, error=err)
        self._settle(ident, None)
        return ItemOutcome(change.key, version=version)

    async def _delete_one(self, change: Change) -> ItemOutcome:
        name = self.name_of(change.key)
        try:
            meta: Mapping[str, Any] | None = None
            if change.remote is not None and "managed" in change.remote.meta:
                meta = change.remote.meta
            else:
                desc = await self._describe(name)
                if desc is None:
                    return ItemOutcome(change.key)  # already gone
                meta = {
                    "deleted": bool(desc.get("DeletedDate")),
                    "managed": tags_dict(desc.get("Tags")).get(TAG_MANAGED_BY) == TAG_MANAGED_VALUE,
                }
            if meta.get("deleted"):
                return ItemOutcome(change.key)  # already scheduled for deletion
            if not meta.get("managed"):
                return ItemOutcome(
                    change.key,
                    error=ConflictError(
                        f"{name}: not deleted: it does not carry the managed-by: syncd tag "
                        "(replaced or re-tagged out of band); tag it again to let syncd delete "
                        "it, or delete it by hand"
                    ),
                )
            window = self.config.recovery_window_days
            how: dict[str, Any] = (
                {"ForceDeleteWithoutRecovery": True}
                if window == 0
                else {"RecoveryWindowInDays": window}
            )
            await self.aws.call("delete", "delete_secret", SecretId=name, **how)
        except Exception as exc:
            if _is_gone(exc) or _is_deleted(exc):
                return ItemOutcome(change.key)
            return ItemOutcome(change.key, error=self.classify(exc))
        return ItemOutcome(change.key)

    # ------------------------------------------------------------------ bundle

    async def _read_bundle(self) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(JSON object, its version, scheduled for deletion); (None, None, False) if absent."""
        name = str(self.config.name)
        try:
            r = await self.aws.call("get", "get_secret_value", SecretId=name)
        except Exception as exc:
            if _is_gone(exc):
                return None, None, False
            if _is_deleted(exc):
                return None, None, True
            raise
        text = r.get("SecretString")
        try:
            data = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise KeyRejected(
                f"{name}: the secret does not hold a JSON object; syncd will not replace it "
                "(choose another name for the bundle)"
            )
        return data, str(r.get("VersionId", "")) or None, False

    @staticmethod
    def _as_text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    async def _list_bundle(
        self, keys: Sequence[str] | None, known: Mapping[str, str | None]
    ) -> Mapping[str, RemoteEntry]:
        desc = await self._describe(str(self.config.name))
        if desc is None or desc.get("DeletedDate"):
            return {}
        version = _current_version(desc)
        wanted = set(keys) if keys is not None else set(known)
        # every recorded key written in the current version, no unknown key asked about:
        # the bundle is as syncd left it
        if (
            version is not None
            and all(k in known for k in wanted)
            and all(v == version for v in known.values())
        ):
            return {k: RemoteEntry(k, None, version) for k in known}
        data, read_version, _ = await self._read_bundle()
        if data is None:
            return {}
        return {
            k: RemoteEntry(k, SecretValue(self._as_text(v)), read_version) for k, v in data.items()
        }

    def _bundle_body(self, data: Mapping[str, Any]) -> str:
        body = json.dumps(data, ensure_ascii=False)
        size = len(body.encode("utf-8"))
        if size > MAX_VALUE_BYTES:
            raise KeyRejected(
                f"{self.config.name}: the bundle would be {size} bytes, over Secrets Manager's "
                f"{MAX_VALUE_BYTES}-byte limit; nothing was written"
            )
        return body

    async def _restore_bundle(self) -> None:
        name = str(self.config.name)
        desc = await self._describe(name)
        if desc is None:
            return
        if tags_dict(desc.get("Tags")).get(TAG_MANAGED_BY) != TAG_MANAGED_VALUE:
            raise ConflictError(f"{name}: scheduled for deletion and not created by syncd")
        await self._restore(name)

    async def _write_bundle(
        self, changes: Sequence[Change], token: str, remove: bool
    ) -> str | None:
        name = str(self.config.name)
        sync = changes[0].sync if changes else ""
        data, version, deleted = await self._read_bundle()
        if deleted:
            if remove:
                return None  # nothing to remove from a bundle on its way out
            await self._restore_bundle()
            data, version, _ = await self._read_bundle()
        if data is None:
            if remove:
                return None
            body = self._bundle_body(
                {c.key: c.desired.value.reveal() for c in changes if c.desired is not None}
            )
            kw: dict[str, Any] = {
                "Name": name,
                "SecretString": body,
                "ClientRequestToken": token,
                "Tags": self._tags(sync),
                "Description": self._description(sync),
            }
            if self.config.kms_key_id:
                kw["KmsKeyId"] = self.config.kms_key_id
            r = await self.aws.call("create", "create_secret", **kw)
            return str(r["VersionId"])
        merged = dict(data)
        for c in changes:
            if remove:
                merged.pop(c.key, None)
            elif c.desired is not None:
                merged[c.key] = c.desired.value.reveal()
        if merged == data:
            return version  # already as wanted: no write
        return await self._put_value(name, self._bundle_body(merged), token)

    async def _bundle_batch(self, changes: Sequence[Change], remove: bool) -> list[ItemOutcome]:
        ident = (
            "delete" if remove else "upsert",
            *sorted(f"{c.key}\0{c.desired.fingerprint if c.desired else ''}" for c in changes),
        )
        async with self._lock:
            try:
                version = await self._write_bundle(changes, self._token(ident), remove)
            except Exception as exc:
                err = self.classify(exc)
                self._settle(ident, err)
                return [ItemOutcome(c.key, error=err) for c in changes]
        self._settle(ident, None)
        return [ItemOutcome(c.key, version=version) for c in changes]

    # ------------------------------------------------------------------ contract

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        if self.bundle:
            return await self._bundle_batch(changes, remove=False)
        return list(await asyncio.gather(*(self._upsert_one(c) for c in changes)))

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        if self.bundle:
            return await self._bundle_batch(changes, remove=True)
        return list(await asyncio.gather(*(self._delete_one(c) for c in changes)))
