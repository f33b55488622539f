"""Logging in to Infisical: the ``auth`` options, and the access token kept for a source.

Every machine-identity method is one ``POST /api/v1/auth/<method>/login`` (no auth
header) that answers ``{accessToken, expiresIn, accessTokenMaxTTL, tokenType}``; what each
sends is built in :mod:`.logins`. :class:`TokenKeeper` holds the token, written once for
every method:

- the token's lifetime comes from its JWT ``exp`` claim, ``expiresIn`` only when the token
  has none (Infisical caps tokens, so ``expiresIn`` can overstate it);
- shortly before it expires (a tenth of its lifetime, at most a minute) it is renewed with
  ``POST /api/v1/auth/token/renew``, which answers a *new* token: syncd switches to it;
- a renewal that is refused, or a renewal past the family's ``accessTokenMaxTTL`` (counted
  from the login), logs in again instead; a token Infisical refuses mid-run is replaced by a
  fresh login, once;
- never a login per request.

``token`` is used as it is: a token-auth access token, or a legacy service token
(``st.<id>.<secret>[.<key>]``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from syncd.config_types import ConfigPath
from syncd.errors import SourceReadError
from syncd.logging import get_logger, redactor

Method = Literal[
    "universal_auth",
    "token",
    "kubernetes",
    "aws_iam",
    "gcp_id_token",
    "gcp_iam",
    "azure",
    "oidc",
    "jwt",
    "ldap",
]

LOGIN_PATHS: dict[str, str] = {
    "universal_auth": "/api/v1/auth/universal-auth/login",
    "kubernetes": "/api/v1/auth/kubernetes-auth/login",
    "aws_iam": "/api/v1/auth/aws-auth/login",
    "gcp_id_token": "/api/v1/auth/gcp-auth/login",
    "gcp_iam": "/api/v1/auth/gcp-auth/login",
    "azure": "/api/v1/auth/azure-auth/login",
    "oidc": "/api/v1/auth/oidc-auth/login",
    "jwt": "/api/v1/auth/jwt-auth/login",
    "ldap": "/api/v1/auth/ldap-auth/login",
}
RENEW_PATH = "/api/v1/auth/token/renew"

SA_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
AWS_METADATA_URL = "http://169.254.169.254"
GCP_METADATA_URL = "http://metadata.google.internal"
AZURE_METADATA_URL = "http://169.254.169.254"
AZURE_RESOURCE = "https://management.azure.com/"

# a token is renewed this long before it expires: a tenth of its lifetime, at most a minute
RENEW_MARGIN_MAX = 60.0
RENEW_MARGIN_SHARE = 0.1

# the options each method takes (beyond ``method``); anything else set is an error
OPTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # method: (required, optional)
    "universal_auth": (frozenset({"client_id", "client_secret"}), frozenset()),
    "token": (frozenset({"token"}), frozenset()),
    "kubernetes": (frozenset({"identity_id"}), frozenset({"service_account_token_file"})),
    "aws_iam": (frozenset({"identity_id"}), frozenset({"region", "aws_metadata_url"})),
    "gcp_id_token": (frozenset({"identity_id"}), frozenset({"gcp_metadata_url"})),
    "gcp_iam": (frozenset({"identity_id", "service_account_key_file"}), frozenset()),
    "azure": (frozenset({"identity_id"}), frozenset({"resource", "azure_metadata_url"})),
    "oidc": (frozenset({"identity_id"}), frozenset({"token", "audience"})),
    "jwt": (frozenset({"identity_id"}), frozenset({"token", "audience"})),
    "ldap": (frozenset({"identity_id", "username", "password"}), frozenset()),
}


class InfisicalAuth(BaseModel):
    """How the source logs in. Each method takes its own options; see
    docs/connectors/infisical.md for the identity to set up in Infisical."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "universal_auth"
    """``universal_auth`` (client id and secret), ``token`` (an access token or a legacy
    service token), or a machine identity: ``kubernetes``, ``aws_iam``, ``gcp_id_token``,
    ``gcp_iam``, ``azure``, ``oidc``, ``jwt``, ``ldap``."""
    client_id: str | None = None
    """universal_auth: the identity's client id."""
    client_secret: SecretStr | None = None
    """universal_auth: the identity's client secret."""
    token: SecretStr | None = None
    """token: the access token. oidc and jwt: the JWT to present (in GitHub Actions it may be
    left out: the job's OIDC token is fetched)."""
    identity_id: str | None = None
    """Every machine-identity method: the identity's id in Infisical."""
    service_account_token_file: ConfigPath | None = None
    """kubernetes: the service-account token, read again at every login (projected tokens
    rotate). Default: /var/run/secrets/kubernetes.io/serviceaccount/token."""
    region: str | None = None
    """aws_iam: the STS region to sign for. Default: AWS_REGION, then the instance
    metadata."""
    aws_metadata_url: str | None = None
    """aws_iam: the instance metadata service (IMDSv2). Default: http://169.254.169.254."""
    gcp_metadata_url: str | None = None
    """gcp_id_token: the metadata server. Default: http://metadata.google.internal."""
    service_account_key_file: ConfigPath | None = None
    """gcp_iam: the service account's JSON key file, which signs the login JWT."""
    resource: str | None = None
    """azure: the resource the managed identity's token is for. Default:
    https://management.azure.com/."""
    azure_metadata_url: str | None = None
    """azure: the instance metadata service. Default: http://169.254.169.254."""
    audience: str | None = None
    """oidc and jwt in GitHub Actions: the audience of the job's OIDC token (the one the
    identity's OIDC auth expects)."""
    username: str | None = None
    """ldap: the LDAP user."""
    password: SecretStr | None = None
    """ldap: the LDAP password."""

    @model_validator(mode="after")
    def _options(self) -> InfisicalAuth:
        required, optional = OPTIONS[self.method]
        given = {
            name
            for name in type(self).model_fields
            if name != "method" and _is_set(getattr(self, name))
        }
        missing = sorted(required - given)
        if missing:
            twins = [f"{n} (or {n}_file)" if n in _SECRETS else n for n in missing]
            raise ValueError(f"method {self.method} needs {' and '.join(twins)}")
        extra = sorted(given - required - optional)
        if extra:
            raise ValueError(
                f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} not an option of "
                f"method {self.method}; remove {'it' if len(extra) == 1 else 'them'} or change "
                "the method"
            )
        return self

    @property
    def is_service_token(self) -> bool:
        return (
            self.method == "token"
            and self.token is not None
            and self.token.get_secret_value().startswith("st.")
        )


_SECRETS = frozenset({"client_secret", "token", "password"})


def _is_set(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, SecretStr):
        return bool(v.get_secret_value())
    return bool(v)


# ---------------------------------------------------------------------------- the token


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (to read ``exp``); empty when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Token:
    value: str
    renew_at: float | None  # monotonic; None: no known expiry
    family_ends: float | None  # monotonic end of accessTokenMaxTTL, from the login


Post = Callable[[str, str, dict[str, Any]], Awaitable[Any]]
"""``post(operation, path, body) -> httpx.Response``: one unauthenticated call."""


class TokenKeeper:
    """The access token of one source: logged in once, renewed before it expires."""

    def __init__(
        self,
        method: str,
        login_body: Callable[[], Awaitable[dict[str, Any]]],
        post: Post,
        failure: Callable[[Any, str], SourceReadError],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        source: str = "",
    ) -> None:
        self.method = method
        self._login_body = login_body
        self._post = post
        self._failure = failure
        self._clock = clock
        self._wall = wall
        self._source = source
        self._token: Token | None = None
        self._lock = asyncio.Lock()
        self.logins = 0
        self.renewals = 0

    async def get(self, *, rejected: str | None = None) -> str:
        """The token to send: the kept one while it is fresh and was not ``rejected``."""
        async with self._lock:
            tok = self._token
            if tok is not None and tok.value != rejected and self._fresh(tok):
                return tok.value
            usable = tok is not None and tok.value != rejected and self._renewable(tok)
            if usable and tok is not None and await self._renew(tok):
                assert self._token is not None
                return self._token.value
            await self._login()
            assert self._token is not None
            return self._token.value

    def _fresh(self, tok: Token) -> bool:
        return tok.renew_at is None or self._clock() < tok.renew_at

    def _renewable(self, tok: Token) -> bool:
        if tok.family_ends is None:
            return True
        # a renewal cannot outlive the max TTL: near it, log in again instead
        return self._clock() + RENEW_MARGIN_MAX < tok.family_ends

    async def _login(self) -> None:
        what = f"{self.method} login to Infisical"
        started = self._clock()
        body = await self._login_body()
        resp = await self._post("login", LOGIN_PATHS[self.method], body)
        if not resp.is_success:
            raise self._failure(resp, what)
        data = _json(resp, what)
        self.logins += 1
        max_ttl: Any = data.get("accessTokenMaxTTL")
        family_ends = started + float(max_ttl) if _positive(max_ttl) else None
        self._token = self._token_of(data, what, started, family_ends)
        get_logger().debug("infisical login", source=self._source, method=self.method)

    async def _renew(self, tok: Token) -> bool:
        started = self._clock()
        resp = await self._post("renew", RENEW_PATH, {"accessToken": tok.value})
        if not resp.is_success:
            get_logger().info(
                "infisical token renewal refused; logging in again",
                source=self._source,
                status=resp.status_code,
            )
            return False
        data = _json(resp, "token renewal")
        self.renewals += 1
        self._token = self._token_of(data, "token renewal", started, tok.family_ends)
        return True

    def _token_of(
        self, data: dict[str, Any], what: str, started: float, family_ends: float | None
    ) -> Token:
        value = data.get("accessToken")
        if not isinstance(value, str) or not value:
            raise SourceReadError(f"{what}: the answer has no accessToken")
        redactor.add([value])
        lifetime: float | None = None
        exp: Any = jwt_claims(value).get("exp")
        if _positive(exp):
            lifetime = float(exp) - self._wall()
        elif _positive(data.get("expiresIn")):
            lifetime = float(data["expiresIn"])
        renew_at = None
        if lifetime is not None:
            margin = min(RENEW_MARGIN_MAX, RENEW_MARGIN_SHARE * max(0.0, lifetime))
            renew_at = started + lifetime - margin
            if family_ends is not None:
                renew_at = min(renew_at, family_ends - margin)
        return Token(value, renew_at, family_ends)


def _positive(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _json(resp: Any, what: str) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        raise SourceReadError(f"{what}: the answer is not JSON") from None
    if not isinstance(data, dict):
        raise SourceReadError(f"{what}: the answer is not an object")
    return data
