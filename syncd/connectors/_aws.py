"""Shared plumbing for the AWS destinations (Parameter Store, Secrets Manager).

- :class:`AwsConfig`: the options both share (region, endpoint, profile, tags, KMS key).
- :class:`AwsClient`: one boto3 client per destination, built on first use from the standard
  credential chain (environment, profile, SSO, container/instance role; ``AWS_ENDPOINT_URL``
  is honoured by botocore itself). Every call runs in a worker thread and is reported to the
  destination's call counter. botocore's own retries are off: the executor retries.
- :func:`classify`: botocore errors as the core's taxonomy. Messages carry the operation, the
  error code and the HTTP status, never the platform's message text (which may echo request
  fields), except the IAM action an access-denied answer names.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from pydantic import Field, field_validator

from syncd.connector import DestinationConfig
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

# botocore logs whole request parameters (values included) at DEBUG: keep it quieter than that
for _name in ("boto3", "botocore", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)

TAG_MANAGED_BY = "managed-by"
"""The ownership tag every object syncd creates carries, with the value ``syncd``."""
TAG_MANAGED_VALUE = "syncd"
TAG_SYNC = "syncd:sync"
"""The name of the sync that created the object."""
RESERVED_TAGS = frozenset({TAG_MANAGED_BY, TAG_SYNC})

_TAG_KEY = re.compile(r"^[\w .:/=+\-@]{1,128}$")
_TAG_VALUE = re.compile(r"^[\w .:/=+\-@]{0,256}$")

# botocore error codes that mean "slow down"
THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "TooManyUpdates",  # Parameter Store: concurrent updates of one parameter
        "PriorRequestNotComplete",
        "SlowDown",
        "BandwidthLimitExceeded",
    }
)
RETRYABLE_CODES = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "InternalServiceError",
        "InternalServiceErrorException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "IdempotentParameterMismatch",
    }
)
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "AuthFailure",
        "NotAuthorized",
        "UnauthorizedOperation",
        "KMSAccessDeniedException",
    }
)
QUOTA_CODES = frozenset(
    {
        "LimitExceededException",  # Secrets Manager: an account quota, not a throttle
        "ServiceQuotaExceededException",
        "ParameterLimitExceeded",
        "ParameterMaxVersionLimitExceeded",
        "PoliciesLimitExceededException",
    }
)
CONFLICT_CODES = frozenset(
    {
        "ParameterAlreadyExists",
        "ResourceExistsException",
        "HierarchyTypeMismatchException",
        "ConflictException",
    }
)
REJECT_CODES = frozenset(
    {
        "ValidationException",
        "InvalidParameterException",
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "HierarchyLevelLimitExceededException",
        "ParameterPatternMismatchException",
        "UnsupportedParameterType",
        "InvalidAllowedPatternException",
        "MalformedPolicyDocumentException",
        "EncryptionFailure",
    }
)

# what a user should do about some codes, appended to the message
HINTS: dict[str, str] = {
    "ParameterAlreadyExists": "a parameter with this name already exists",
    "ResourceExistsException": "a secret with this name already exists",
    "HierarchyTypeMismatchException": (
        "the existing parameter is not a SecureString and Parameter Store cannot change its type"
    ),
    "ParameterLimitExceeded": "the account's parameter quota for this tier is reached",
    "ParameterMaxVersionLimitExceeded": (
        "the parameter holds 100 versions and the oldest carries a label"
    ),
    "LimitExceededException": "a Secrets Manager account quota is reached",
    "InvalidKeyId": "the KMS key (kms_key_id) cannot be used",
    "KMSInvalidStateException": "the KMS key (kms_key_id) is disabled or pending deletion",
    "DecryptionFailure": "the value cannot be decrypted with its KMS key",
    "EncryptionFailure": "the value cannot be encrypted with the KMS key (kms_key_id)",
    "ExpiredToken": "the AWS credentials have expired",
    "ExpiredTokenException": "the AWS credentials have expired",
    "UnrecognizedClientException": "the AWS access key is not valid",
    "InvalidClientTokenId": "the AWS access key is not valid",
}

_DENIED_ACTION = re.compile(r"perform:?\s+([a-z0-9-]+:[A-Za-z0-9*]+)")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, else ''."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "") or "")
    return ""


def error_says(exc: BaseException, *words: str) -> bool:
    """Whether the platform's error message mentions any of ``words`` (for decisions only:
    the text itself never goes into a syncd message)."""
    if not isinstance(exc, ClientError):
        return False
    text = str(exc.response.get("Error", {}).get("Message", "") or "").lower()
    return any(w in text for w in words)


def denied_action(exc: ClientError, service: str) -> str:
    """The IAM action an access-denied answer names, else ``service:Operation``."""
    text = str(exc.response.get("Error", {}).get("Message", "") or "")
    m = _DENIED_ACTION.search(text)
    if m:
        return m.group(1)
    return f"{service}:{exc.operation_name}"


def classify(exc: BaseException, service: str) -> ConnectorError:
    """A boto3/botocore exception as the core's taxonomy (``service`` is the IAM prefix)."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, ClientError):
        code = error_code(exc) or "UnknownError"
        op = exc.operation_name or "request"
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        where = f"{op}: {code}" + (f" (HTTP {status})" if status else "")
        hint = HINTS.get(code)
        text = f"{where}: {hint}" if hint else where
        if code in THROTTLE_CODES or status == 429:
            return RateLimited(text)
        if code in ("AccessDenied", "AccessDeniedException", "KMSAccessDeniedException"):
            action = denied_action(exc, service)
            return AuthError(
                f"{where}: access denied; the credentials lack the IAM permission {action}"
            )
        if code in AUTH_CODES or status in (401, 403):
            return AuthError(text)
        if code in QUOTA_CODES:
            return QuotaExceeded(text)
        if code in CONFLICT_CODES:
            return ConflictError(text)
        if code in REJECT_CODES:
            return KeyRejected(text)
        if code in RETRYABLE_CODES or status >= 500:
            return RetryableError(text)
        return PermanentError(text)
    if isinstance(exc, NoRegionError):
        return PermanentError(
            "no AWS region: set region in the destination, or AWS_REGION in the environment"
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AuthError(
            f"{type(exc).__name__}: no usable AWS credentials (environment, profile, SSO, "
            "or instance/task role)"
        )
    if isinstance(exc, ParamValidationError):
        # its text may quote request fields: name the failure only
        return KeyRejected("the request was refused by botocore's parameter validation")
    if isinstance(exc, HTTPClientError):
        return RetryableError(f"{type(exc).__name__}: the AWS endpoint did not answer")
    if isinstance(exc, BotoCoreError):
        return PermanentError(type(exc).__name__)
    return PermanentError(type(exc).__name__)


def call_status(exc: BaseException) -> str:
    """The ``status`` label of a failed call in ``syncd_api_calls_total``."""
    err = classify(exc, "aws")
    if isinstance(err, RateLimited):
        return "throttled"
    if isinstance(err, AuthError):
        return "denied"
    return "error"


def tag_list(
    user_tags: Mapping[str, str], sync: str | None, *, owned: bool = True
) -> list[dict[str, str]]:
    """The tags an object syncd creates carries: the user's, then the ownership tags."""
    tags = dict(user_tags)
    if owned:
        tags[TAG_MANAGED_BY] = TAG_MANAGED_VALUE
        if sync:
            tags[TAG_SYNC] = sync
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tags_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t.get("Key", "")): str(t.get("Value", "")) for t in tags or ()}


def owner_of(tags: Mapping[str, str]) -> str | None:
    """``managed_by`` as RemoteEntry wants it: the sync's name, "" if marked without a name,
    None if not marked."""
    if tags.get(TAG_MANAGED_BY) != TAG_MANAGED_VALUE:
        return None
    return tags.get(TAG_SYNC, "")


def aws_credential_key(service: str, config: AwsConfig) -> str:
    """AWS quotas are per account and region: destinations reaching one service through the
    same profile, region and endpoint share one pacing budget."""
    region = config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or ""
    return f"aws:{service}:{config.profile or ''}:{region or ''}:{endpoint}"


class AwsConfig(DestinationConfig):
    """Options both AWS destinations share."""

    region: str | None = None
    """AWS region; default: the standard chain (AWS_REGION, AWS_DEFAULT_REGION, profile)."""
    endpoint_url: str | None = None
    """Another endpoint (VPC endpoint, LocalStack, moto); AWS_ENDPOINT_URL is honoured too."""
    profile: str | None = None
    """A named profile from ~/.aws/config (SSO and assume-role profiles included)."""
    kms_key_id: str | None = None
    """KMS key id, ARN or alias; default: the AWS-managed key of the service."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Tags put on every object syncd creates, besides managed-by: syncd and syncd:sync."""
    writes_per_second: float | None = Field(default=None, gt=0)
    """Pace writes to this many a second, shared by every destination on the same account
    and region (default: the service's documented quota; null: unpaced)."""

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 48:
            raise ValueError("at most 48 tags (AWS allows 50; syncd adds 2)")
        for key, value in v.items():
            if key in RESERVED_TAGS:
                raise ValueError(f"tag {key!r} is set by syncd itself")
            if key.lower().startswith("aws:"):
                raise ValueError(f"tag {key!r}: the aws: prefix is reserved by AWS")
            if not _TAG_KEY.match(key):
                raise ValueError(
                    f"tag key {key!r}: 1 to 128 letters, digits, spaces or _ . : / = + - @"
                )
            if not isinstance(value, str) or not _TAG_VALUE.match(value):
                raise ValueError(
                    f"tag {key!r}: the value must be at most 256 letters, digits, spaces "
                    "or _ . : / = + - @"
                )
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"expected an http(s) URL, got {v!r}")
        return v


T = TypeVar("T")

# one boto3 session per (profile, region): a session loads the service models and resolves
# credentials once (refreshing them as they expire); clients made from it are cheap
_SESSIONS: dict[tuple[str | None, str | None], boto3.session.Session] = {}
_SESSIONS_LOCK = threading.Lock()


def make_client(service: str, config: AwsConfig) -> Any:
    """A boto3 client with botocore's retries off and the destination's timeouts."""
    timeout = float(config.timeout)
    with _SESSIONS_LOCK:  # sessions are not safe to share while clients are being made
        key = (config.profile, config.region)
        session = _SESSIONS.get(key)
        if session is None:
            session = boto3.session.Session(profile_name=config.profile, region_name=config.region)
            _SESSIONS[key] = session
        return session.client(
            service,  # type: ignore[call-overload]
            endpoint_url=config.endpoint_url,
            config=BotoConfig(
                # the executor retries, paces and honours its own backoff
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=timeout,
                read_timeout=timeout,
                max_pool_connections=max(10, int(config.concurrency) * 2),
                user_agent_extra="syncd",
            ),
        )


class AwsClient:
    """A boto3 client for one destination, created lazily and shared by its worker threads.

    ``on_call(operation, status)`` is told about every call, failed or not.
    """

    def __init__(
        self,
        service: str,
        config: AwsConfig,
        on_call: Callable[[str, str], None],
        reader: Callable[[Callable[[], Awaitable[dict[str, Any]]]], Awaitable[dict[str, Any]]]
        | None = None,
        in_thread: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None,
    ) -> None:
        self.service = service
        self.in_thread = in_thread or asyncio.to_thread
        self.config = config
        self.on_call = on_call
        self.reader = reader
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_client(self.service, self.config)
            return self._client

    async def read(self, operation: str, method: str, **kwargs: Any) -> dict[str, Any]:
        """A read inside a listing: through the core, which gives it its own concurrency
        slot, timeout and retries (``BaseDestination.read``)."""
        job = functools.partial(self.call, operation, method, **kwargs)
        if self.reader is None:
            return await job()
        return await self.reader(job)

    async def call(self, operation: str, method: str, **kwargs: Any) -> dict[str, Any]:
        """Run ``client.<method>(**kwargs)`` in a thread; count it as ``operation``."""

        def run() -> dict[str, Any]:
            result: dict[str, Any] = getattr(self.client(), method)(**kwargs)
            return result

        try:
            result: dict[str, Any] = await self.in_thread(run)
        except Exception as exc:
            self.on_call(operation, call_status(exc))
            raise
        self.on_call(operation, "ok")
        return result


async def gather_limited(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``jobs`` with at most ``limit`` in flight; results in order."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
