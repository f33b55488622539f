"""The ``aws-parameter-store`` destination: one SecureString parameter per key, named
``path + key``, so source folders become hierarchy levels.

Calls, and when they happen:

- drift check / unrecorded keys: ``DescribeParameters`` filtered to the path (50 a page,
  metadata only); ``GetParameters`` (10 names a call, decrypted) only for keys whose
  ``Version`` moved since syncd wrote them or that syncd never recorded;
  ``ListTagsForResource`` only for existing parameters syncd has no record of (to read the
  ownership tag). Between drift checks an unchanged run makes no call at all.
- a new key: one ``PutParameter`` with its tags (``managed-by: syncd``, ``syncd:sync``, the
  user's ``tags``); a changed key: one ``PutParameter`` with ``Overwrite`` (tags cannot go
  with ``Overwrite``: ``AddTagsToResource`` follows only if that put had to re-create a
  parameter deleted out of band).
- deletions: ``ListTagsForResource`` per key (a parameter without the ownership tag is never
  deleted), then ``DeleteParameters`` in batches of 10.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from syncd.connector import BaseDestination, Capabilities, ConnectorContext
from syncd.connectors._aws import (
    TAG_MANAGED_BY,
    TAG_MANAGED_VALUE,
    TAG_SYNC,
    AwsClient,
    AwsConfig,
    aws_credential_key,
    chunks,
    classify,
    error_code,
    gather_limited,
    owner_of,
    tag_list,
    tags_dict,
)
from syncd.errors import ConflictError, ConnectorError
from syncd.model import Action, Change, ItemOutcome, RemoteEntry, SecretValue

MAX_LEVELS = 15
"""Parameter Store allows hierarchies at most fifteen levels deep."""
MAX_NAME_WITH_ARN = 1011
"""The longest name Parameter Store accepts, counting the ARN before it
(``arn:aws:ssm:REGION:ACCOUNT:parameter``)."""
STANDARD_BYTES = 4096
ADVANCED_BYTES = 8192
STANDARD_TPS = 40.0  # Parameter Store's default throughput, per account and region
DESCRIBE_PAGE = 50  # DescribeParameters MaxResults
GET_BATCH = 10  # GetParameters names per call
DELETE_BATCH = 10  # DeleteParameters names per call

_SEGMENT = r"[A-Za-z0-9_.\-]+"
_PATH = re.compile(rf"^/(?:{_SEGMENT}/)*$")
TIERS = {"auto": "Intelligent-Tiering", "standard": "Standard", "advanced": "Advanced"}


class ParameterStoreConfig(AwsConfig):
    type: Literal["aws-parameter-store"] = "aws-parameter-store"
    path: str
    """The folder every key goes under, such as /myapp/prod/ (a trailing / is added)."""
    tier: Literal["auto", "standard", "advanced"] = "auto"
    """auto: Standard up to 4 KB, Advanced above (Parameter Store's Intelligent-Tiering)."""
    writes_per_second: float | None = Field(default=STANDARD_TPS, gt=0)
    """Pace PutParameter to this many a second per account and region (default 40, the
    standard throughput GetParameter/GetParameters/PutParameter share; null: unpaced)."""

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"expected a path starting with '/', such as /myapp/prod/, got {v!r}")
        if not v.endswith("/"):
            v += "/"
        if not _PATH.match(v):
            raise ValueError(
                f"{v!r}: levels are letters, digits, '_', '.' or '-', separated by single '/'"
            )
        first = v.strip("/").split("/")[0].lower()
        if first.startswith(("aws", "ssm")):
            raise ValueError(f"{v!r}: names beginning with 'aws' or 'ssm' are reserved by AWS")
        if v.count("/") - 1 >= MAX_LEVELS:
            raise ValueError(
                f"{v!r} leaves no level for keys (Parameter Store allows {MAX_LEVELS})"
            )
        return v


def _arn_prefix_length(region: str | None) -> int:
    """Characters of ``arn:PARTITION:ssm:REGION:ACCOUNT:parameter`` before a /-name."""
    if region is None:
        region, partition = "xx-xxxxxxxxx-99", "aws-us-gov"  # the longest plausible
    elif region.startswith("cn-"):
        partition = "aws-cn"
    elif region.startswith("us-gov-"):
        partition = "aws-us-gov"
    else:
        partition = "aws"
    return len(f"arn:{partition}:ssm:{region}:123456789012:parameter")


class ParameterStoreDestination(BaseDestination):
    kind: ClassVar[str] = "aws-parameter-store"
    Config: ClassVar[type[ParameterStoreConfig]] = ParameterStoreConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        reads_values=True,
        tags_ownership=True,
        max_value_bytes=ADVANCED_BYTES,
        key_pattern=rf"{_SEGMENT}(?:/{_SEGMENT})*",
        key_rule="letters, digits, '_', '.' and '-', with '/' between hierarchy levels",
        batch_size=1,
        delete_batch_size=DELETE_BATCH,
        default_key_template="{path}{key}",
    )
    config: ParameterStoreConfig

    def __init__(self, name: str, config: Any, context: ConnectorContext) -> None:
        super().__init__(name, config, context)
        self.path: str = config.path
        self.aws = AwsClient("ssm", config, self.count, self.read, self.in_thread)
        self._arn_len = _arn_prefix_length(config.region)
        wps = config.writes_per_second
        # limits that depend on this destination's options: an instance attribute the
        # planner and executor read through ``dest.capabilities``
        vars(self)["capabilities"] = replace(
            type(self).capabilities,
            max_value_bytes=STANDARD_BYTES if config.tier == "standard" else ADVANCED_BYTES,
            extra_checks=(self._check_name,),
            writes_per_minute=wps * 60 if wps else None,
        )

    @property
    def credential_key(self) -> str:
        return aws_credential_key("ssm", self.config)

    # ------------------------------------------------------------------ names

    def name_of(self, key: str) -> str:
        return self.path + key

    def _check_name(self, key: str, size: int) -> str | None:
        name = self.name_of(key)
        levels = name.count("/")
        if levels > MAX_LEVELS:
            return f"{name} is {levels} hierarchy levels deep; Parameter Store allows {MAX_LEVELS}"
        if self._arn_len + len(name) > MAX_NAME_WITH_ARN:
            return (
                f"{name} is {len(name)} characters; with its ARN that is over Parameter "
                f"Store's {MAX_NAME_WITH_ARN}-character limit"
            )
        if name.lstrip("/").lower().startswith(("aws", "ssm")):
            return f"{name}: names beginning with 'aws' or 'ssm' are reserved by AWS"
        if size == 0:
            return "Parameter Store cannot hold an empty value"
        return None

    def _path_filter(self) -> list[dict[str, Any]]:
        value = self.path.rstrip("/") or "/"
        return [{"Key": "Path", "Option": "Recursive", "Values": [value]}]

    # ------------------------------------------------------------------ reading

    def classify(self, exc: BaseException) -> ConnectorError:
        return classify(exc, "ssm")

    async def check(self) -> None:
        await self.aws.call(
            "list", "describe_parameters", ParameterFilters=self._path_filter(), MaxResults=1
        )

    async def _describe_all(self) -> dict[str, dict[str, Any]]:
        """Every parameter under the path: key → DescribeParameters metadata."""
        out: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            kw: dict[str, Any] = {
                "ParameterFilters": self._path_filter(),
                "MaxResults": DESCRIBE_PAGE,
            }
            if token:
                kw["NextToken"] = token
            page = await self.aws.read("list", "describe_parameters", **kw)
            for p in page.get("Parameters", []):
                name = str(p.get("Name", ""))
                if name.startswith(self.path) and len(name) > len(self.path):
                    out[name[len(self.path) :]] = p
            token = page.get("NextToken")
            if not token:
                return out

    async def _tags_of(self, name: str) -> dict[str, str]:
        r = await self.aws.call(
            "tags", "list_tags_for_resource", ResourceType="Parameter", ResourceId=name
        )
        return tags_dict(r.get("TagList"))

    async def _read_values(self, keys: list[str]) -> dict[str, tuple[SecretValue, str]]:
        """key → (decrypted value, the version read), for the keys that still exist."""

        async def batch(part: list[str]) -> dict[str, Any]:
            return await self.aws.read(
                "get",
                "get_parameters",
                Names=[self.name_of(k) for k in part],
                WithDecryption=True,
            )

        pages = await gather_limited(
            self.config.concurrency,
            [functools.partial(batch, part) for part in chunks(keys, GET_BATCH)],
        )
        out: dict[str, tuple[SecretValue, str]] = {}
        for page in pages:
            for p in page.get("Parameters", []):
                name = str(p.get("Name", ""))
                if name.startswith(self.path):
                    out[name[len(self.path) :]] = (
                        SecretValue(str(p.get("Value", ""))),
                        str(p.get("Version")),
                    )
        return out

    async def list_current(
        self, keys: Sequence[str] | None = None, known: Mapping[str, str | None] | None = None
    ) -> Mapping[str, RemoteEntry]:
        known = known or {}
        listed = await self._describe_all()
        wanted = set(keys) if keys is not None else set(listed)
        present = [k for k in sorted(wanted) if k in listed]

        # ownership marks matter only where syncd has no record of the key
        unknown = [k for k in present if k not in known]
        owners: dict[str, str | None] = {}
        if unknown:
            tag_maps = await gather_limited(
                self.config.concurrency,
                [
                    functools.partial(self.read, functools.partial(self._tags_of, self.name_of(k)))
                    for k in unknown
                ],
            )
            owners = {k: owner_of(t) for k, t in zip(unknown, tag_maps, strict=True)}

        # values only where the version moved since syncd wrote it, or nothing is recorded
        stale = [
            k for k in present if known.get(k) is None or known[k] != str(listed[k].get("Version"))
        ]
        values = await self._read_values(stale) if stale else {}

        out: dict[str, RemoteEntry] = {}
        for key, p in listed.items():
            meta = {"tier": p.get("Tier"), "type": p.get("Type")}
            if key in stale:
                if key not in values:
                    continue  # deleted between the listing and the read
                value, version = values[key]
                out[key] = RemoteEntry(key, value, version, owners.get(key), meta)
            else:
                out[key] = RemoteEntry(key, None, str(p.get("Version")), owners.get(key), meta)
        return out

    # ------------------------------------------------------------------ writing

    def _put_args(self, change: Change) -> dict[str, Any]:
        assert change.desired is not None
        kw: dict[str, Any] = {
            "Name": self.name_of(change.key),
            "Value": change.desired.value.reveal(),
            "Type": "SecureString",
            "Tier": TIERS[self.config.tier],
        }
        if self.config.kms_key_id:
            kw["KeyId"] = self.config.kms_key_id
        return kw

    def _tags(self, sync: str) -> list[dict[str, str]]:
        return tag_list(self.config.tags, sync)

    async def _put(self, change: Change) -> str:
        name = self.name_of(change.key)
        if change.action is Action.CREATE:
            try:
                r = await self.aws.call(
                    "put",
                    "put_parameter",
                    **self._put_args(change),
                    Overwrite=False,
                    Tags=self._tags(change.sync),
                )
                return str(r["Version"])
            except Exception as exc:
                if error_code(exc) != "ParameterAlreadyExists":
                    raise
                # there already: syncd's own earlier attempt whose answer was lost, or foreign
                tags = await self._tags_of(name)
                if tags.get(TAG_MANAGED_BY) != TAG_MANAGED_VALUE or (
                    tags.get(TAG_SYNC, change.sync) != change.sync
                ):
                    raise ConflictError(
                        f"{name}: a parameter with this name appeared since the listing and "
                        "does not carry this sync's managed-by: syncd tag; left unchanged"
                    ) from None
        r = await self.aws.call("put", "put_parameter", **self._put_args(change), Overwrite=True)
        version = int(r["Version"])
        if version == 1 and change.created:
            # the parameter was gone (deleted out of band) and this put created it again:
            # tags cannot go with Overwrite, so they follow
            await self.aws.call(
                "tag",
                "add_tags_to_resource",
                ResourceType="Parameter",
                ResourceId=name,
                Tags=self._tags(change.sync),
            )
        return str(version)

    async def upsert(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        async def one(change: Change) -> ItemOutcome:
            try:
                return ItemOutcome(change.key, version=await self._put(change))
            except Exception as exc:
                return ItemOutcome(change.key, error=self.classify(exc))

        return list(await asyncio.gather(*(one(c) for c in changes)))

    async def delete(self, changes: Sequence[Change]) -> Sequence[ItemOutcome]:
        outcomes: dict[str, ItemOutcome] = {}
        doomed: list[str] = []
        for change in changes:
            name = self.name_of(change.key)
            try:
                tags = await self._tags_of(name)
            except Exception as exc:
                if error_code(exc) in ("InvalidResourceId", "ParameterNotFound"):
                    outcomes[change.key] = ItemOutcome(change.key)  # already gone
                else:
                    outcomes[change.key] = ItemOutcome(change.key, error=self.classify(exc))
                continue
            if tags.get(TAG_MANAGED_BY) != TAG_MANAGED_VALUE:
                outcomes[change.key] = ItemOutcome(
                    change.key,
                    error=ConflictError(
                        f"{name}: not deleted: it no longer carries the managed-by: syncd tag "
                        "(replaced or re-tagged out of band); tag it again to let syncd delete "
                        "it, or delete it by hand"
                    ),
                )
                continue
            doomed.append(change.key)
        for part in chunks(doomed, DELETE_BATCH):
            try:
                # names that no longer exist come back as InvalidParameters: deleted all the same
                await self.aws.call(
                    "delete", "delete_parameters", Names=[self.name_of(k) for k in part]
                )
            except Exception as exc:
                err = self.classify(exc)
                for key in part:
                    outcomes[key] = ItemOutcome(key, error=err)
                continue
            for key in part:
                outcomes[key] = ItemOutcome(key)
        return [outcomes[c.key] for c in changes]
