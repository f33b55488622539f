"""What each Infisical login method sends, one function each behind one shape:
``await body(auth, env) -> dict`` for ``POST /api/v1/auth/<method>/login``.

Credentials are fetched at every login, never kept: a Kubernetes service-account token
is read from its file again (projected tokens rotate), a cloud metadata token is asked for
again. Metadata calls time out after 2 s; their failures name the method and the endpoint,
never a token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from syncd.connectors.sources.infisical.auth import (
    AWS_METADATA_URL,
    AZURE_METADATA_URL,
    AZURE_RESOURCE,
    GCP_METADATA_URL,
    SA_TOKEN_FILE,
    InfisicalAuth,
)
from syncd.errors import SourceReadError
from syncd.logging import redactor

METADATA_TIMEOUT = 2.0
STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
STS_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
GCP_IAM_JWT_TTL = 900


@dataclass
class LoginEnv:
    """What a login may use besides its options: the process environment, an HTTP client
    for metadata endpoints (its transport is injected in tests), the wall clock."""

    http: httpx.AsyncClient
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    wall: Callable[[], float] = time.time


Body = Callable[[InfisicalAuth, LoginEnv], Awaitable[dict[str, Any]]]


def _secret(value: Any) -> str:
    raw: str = value.get_secret_value()
    return raw


async def _metadata(
    env: LoginEnv,
    method: str,
    request: httpx.Request,
) -> httpx.Response:
    """One metadata call, failing fast and naming only the endpoint."""
    where = f"{request.method} {request.url.copy_with(query=None)}"
    try:
        resp = await env.http.send(request)
    except httpx.TimeoutException:
        raise SourceReadError(
            f"{method} login: the metadata endpoint {where} did not answer within "
            f"{METADATA_TIMEOUT:g}s (is syncd running where this identity lives?)"
        ) from None
    except httpx.TransportError as exc:
        raise SourceReadError(
            f"{method} login: cannot reach the metadata endpoint {where} ({type(exc).__name__})"
        ) from None
    if not resp.is_success:
        raise SourceReadError(
            f"{method} login: the metadata endpoint {where} answered HTTP {resp.status_code}"
        )
    return resp


# ---------------------------------------------------------------------------- methods


async def universal_auth(auth: InfisicalAuth, env: LoginEnv) -> dict[str, Any]:
    return {"clientId": auth.client_id, "clientSecret": _secret(auth.client_secret)}


async def kubernetes(auth: InfisicalAuth, env: LoginEnv) -> dict[str, Any]:
    path = Path(auth.service_account_token_file or SA_TOKEN_FILE)
    try:
        jwt = (await asyncio.to_thread(path.read_text)).strip()
    except OSError as exc:
        raise SourceReadError(
            f"kubernetes login: cannot read the service-account token {path} "
            f"({exc.strerror or type(exc).__name__}); is syncd running in a pod with a "
            "mounted service account?"
        ) from None
    if not jwt:
        raise SourceReadError(f"kubernetes login: the service-account token file {path} is empty")
    redactor.add([jwt])
    return {"identityId": auth.identity_id, "jwt": jwt}


async def _aws_region(auth: InfisicalAuth, env: LoginEnv) -> str:
    if auth.region:
        return auth.region
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.environ.get(name):
            return env.environ[name]
    base = (auth.aws_metadata_url or AWS_METADATA_URL).rstrip("/")
    token = await _metadata(
        env,
        "aws_iam",
        env.http.build_request(
            "PUT",
            f"{base}/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        ),
    )
    redactor.add([token.text])
    region = await _metadata(
        env,
        "aws_iam",
        env.http.build_request(
            "GET",
            f"{base}/latest/meta-data/placement/region",
            headers={"X-aws-ec2-metadata-token": token.text},
        ),
    )
    return region.text.strip()


def sign_get_caller_identity(region: str) -> dict[str, str]:
    """The signed headers of ``sts:GetCallerIdentity`` for ``region``, with credentials
    from the standard AWS chain (environment, profile, SSO, container or instance role)."""
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.session import get_session
    except ImportError:
        raise SourceReadError(
            "aws_iam login needs botocore: pip install 'syncd[infisical]'"
        ) from None
    credentials = get_session().get_credentials()
    if credentials is None:
        raise SourceReadError(
            "aws_iam login: no AWS credentials found in the standard chain (environment, "
            "profile, container or instance role)"
        )
    host = f"sts.{region}.amazonaws.com"
    request = AWSRequest(
        method="POST",
        url=f"https://{host}/",
        data=STS_BODY,
        headers={"Content-Type": STS_CONTENT_TYPE, "Host": host},
    )
    SigV4Auth(credentials, "sts", region).add_auth(request)
    headers = {k: str(v) for k, v in request.headers.items() if k.lower() != "content-length"}
    redactor.add([headers.get("Authorization", ""), headers.get("X-Amz-Security-Token", "")])
    return headers


async def aws_iam(auth: InfisicalAuth, env: LoginEnv) -> dict[str, Any]:
    region = await _aws_region(auth, env)
    headers = await asyncio.to_thread(sign_get_caller_identity, region)
    encoded = base64.b64encode(json.dumps(headers).encode()).decode()
    redactor.add([encoded])
    return {
        "identityId": auth.identity_id,
        "iamHttpRequestMethod": "POST",
        "iamRequestBody": base64.b64encode(STS_BODY.encode()).decode(),
        "iamRequestHeaders": encoded,
    }


async def gcp_id_token(auth: InfisicalAuth, env: LoginEnv) -> dict[str, Any]:
    base = (auth.gcp_metadata_url or GCP_METADATA_URL).rstrip("/")
    audience = quote(auth.identity_id or "", safe="")
    resp = await _metadata(
        env,
        "gcp_id_token",
        env.http.build_request(
            "GET",
            f"{base}/computeMetadata/v1/instance/service-accounts/default/identity"
            f"?audience={audience}&format=full",
            headers={"Metadata-Flavor": "Google"},
        ),
    )
    jwt = resp.text.strip()
    redactor.add([jwt])
    return {"identityId": auth.identity_id, "jwt": jwt}


def sign_gcp_iam_jwt(key_file: Path, audience: str, now: float) -> str:
    try:
        import jwt as pyjwt
    except ImportError:
        raise SourceReadError(
            "gcp_iam login needs PyJWT with cryptography: pip install 'syncd[infisical]'"
        ) from None
    try:
        key = json.loads(key_file.read_text())
        email, private_key, key_id = key["client_email"], key["private_key"], key["private_key_id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SourceReadError(
            f"gcp_iam login: {key_file} is not a readable service-account key file "
            "(JSON with client_email, private_key and private_key_id)"
        ) from None
    redactor.add([private_key])
    claims = {"sub": email, "aud": audience, "iat": int(now), "exp": int(now) + GCP_IAM_JWT_TTL}
    token: str = pyjwt.encode(claims, private_key, algorithm="RS256", headers={"kid": key_id})
    redactor.add([token])
    return token


async def gcp_iam(auth: InfisicalAuth, env: LoginEnv) -> dict[str, Any]:
    assert auth.service_account_key_file is not None
    jwt = await asyncio.to_thread(
        sign_gcp_iam_jwt, Path(auth.service_account_key_file), auth.identity_id or "", env.wall()
    )
    return {"identityId": auth.identity_id, "jwt": jwt}


async def azure(auth: InfisicalAuth, env: LoginEnv) -> dict[str, Any]:
    base = (auth.azure_metadata_url or AZURE_METADATA_URL).rstrip("/")
    resource = quote(auth.resource or AZURE_RESOURCE, safe="")
    resp = await _metadata(
        env,
        "azure",
        env.http.build_request(
            "GET",
            f"{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}",
            headers={"Metadata": "true"},
        ),
    )
    try:
        jwt = resp.json()["access_token"]
    except (ValueError, KeyError, TypeError):
        raise SourceReadError("azure login: the metadata answer has no access_token") from None
    if not isinstance(jwt, str) or not jwt:
        raise SourceReadError("azure login: the metadata answer has no access_token")
    redactor.add([jwt])
    return {"identityId": auth.identity_id, "jwt": jwt}


async def _github_actions_token(auth: InfisicalAuth, env: LoginEnv, method: str) -> str:
    url = env.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    bearer = env.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not bearer:
        raise SourceReadError(
            f"{method} login: no token given, and this is not a GitHub Actions job with "
            "`permissions: id-token: write` (ACTIONS_ID_TOKEN_REQUEST_URL is not set)"
        )
    redactor.add([bearer])
    if auth.audience:
        url += ("&" if "?" in url else "?") + f"audience={quote(auth.audience, safe='')}"
    resp = await _metadata(
        env,
        method,
        env.http.build_request("GET", url, headers={"Authorization": f"Bearer {bearer}"}),
    )
    try:
        jwt = resp.json()["value"]
    except (ValueError, KeyError, TypeError):
        raise SourceReadError(f"{method} login: the GitHub OIDC answer has no value") from None
    if not isinstance(jwt, str) or not jwt:
        raise SourceReadError(f"{method} login: the GitHub OIDC answer has no value")
    redactor.add([jwt])
    return jwt


def _oidc(method: str) -> Body:
    async def body(auth: InfisicalAuth, env: LoginEnv) -> dict[str, Any]:
        if auth.token is not None:
            jwt = _secret(auth.token)
        else:
            jwt = await _github_actions_token(auth, env, method)
        return {"identityId": auth.identity_id, "jwt": jwt}

    return body


async def ldap(auth: InfisicalAuth, env: LoginEnv) -> dict[str, Any]:
    return {
        "identityId": auth.identity_id,
        "username": auth.username,
        "password": _secret(auth.password),
    }


BODIES: dict[str, Body] = {
    "universal_auth": universal_auth,
    "kubernetes": kubernetes,
    "aws_iam": aws_iam,
    "gcp_id_token": gcp_id_token,
    "gcp_iam": gcp_iam,
    "azure": azure,
    "oidc": _oidc("oidc"),
    "jwt": _oidc("jwt"),
    "ldap": ldap,
}
