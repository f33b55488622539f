"""Fakes of what Infisical's machine-identity logins check, and of the endpoints a login
takes its credential from.

- Identities register on a :class:`~tests.fakes.infisical_api.FakeInfisical` with the check
  Infisical's server makes: a Kubernetes service-account token from a table; an AWS
  ``sts:GetCallerIdentity`` whose SigV4 signature is recomputed with botocore from the test
  credentials (region, host, body and headers checked); RS256 JWTs verified against a test
  key with their issuer and audience (GCP, Azure, OIDC, JWT); LDAP users and passwords.
- :class:`CloudMetadata` answers as AWS IMDSv2, the GCP metadata server, Azure's instance
  metadata and GitHub Actions' OIDC token endpoint do, each requiring its header.
- :func:`router` serves several fakes behind one httpx transport, by host.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt as pyjwt
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.infisical_api import FakeInfisical, _error

STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"


@dataclass
class RsaKey:
    """A test signing key: signs JWTs, verifies them."""

    kid: str = "test-key-1"
    _key: Any = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    @property
    def private_pem(self) -> str:
        pem: bytes = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem.decode()

    def sign(self, claims: Mapping[str, Any], ttl: float = 600.0) -> str:
        now = int(time.time())
        body = {"iat": now, "exp": now + int(ttl), **claims}
        token: str = pyjwt.encode(body, self._key, algorithm="RS256", headers={"kid": self.kid})
        return token

    def verify(
        self, token: str, *, audience: str, issuer: str | None = None, now: float | None = None
    ) -> dict[str, Any]:
        """The claims of a JWT this key signed for ``audience``; expiry checked at ``now``
        (the fake's clock) when given."""
        if pyjwt.get_unverified_header(token).get("kid") != self.kid:
            raise pyjwt.InvalidTokenError("unknown key id")
        claims: dict[str, Any] = pyjwt.decode(
            token,
            self._key.public_key(),
            algorithms=["RS256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "aud"], "verify_exp": now is None, "verify_iat": False},
        )
        if now is not None and float(claims["exp"]) <= now:
            raise pyjwt.ExpiredSignatureError("Signature has expired")
        return claims


def _refuse(status: int, message: str) -> httpx.Response:
    error = {401: "UnauthorizedError", 403: "ForbiddenError"}.get(status, "BadRequest")
    return _error(status, error, message)


def _needs(body: Mapping[str, Any], *names: str) -> httpx.Response | None:
    missing = [n for n in names if not isinstance(body.get(n), str) or not body.get(n)]
    if missing:
        return _error(422, "ValidationFailure", [f"{n}: Required" for n in missing])
    return None


# ---------------------------------------------------------------------------- identities


def kubernetes_identity(fake: FakeInfisical, identity: str, tokens: Iterable[str]) -> None:
    """Service-account tokens the (fake) TokenReview accepts."""
    valid = set(tokens)

    def check(body: dict[str, Any]) -> httpx.Response | None:
        bad = _needs(body, "jwt")
        if bad is not None:
            return bad
        if body["jwt"] not in valid:
            return _refuse(401, "Kubernetes token review failed: token not valid")
        return None

    fake.identities[identity] = ("kubernetes", check)


def aws_identity(
    fake: FakeInfisical, identity: str, *, access_key: str, secret_key: str, region: str
) -> None:
    """Verifies the signed GetCallerIdentity with botocore, as STS would."""

    def check(body: dict[str, Any]) -> httpx.Response | None:
        bad = _needs(body, "iamHttpRequestMethod", "iamRequestBody", "iamRequestHeaders")
        if bad is not None:
            return bad
        if body["iamHttpRequestMethod"] != "POST":
            return _refuse(401, "iamHttpRequestMethod must be POST")
        payload = base64.b64decode(body["iamRequestBody"]).decode()
        headers: dict[str, str] = json.loads(base64.b64decode(body["iamRequestHeaders"]))
        if payload != STS_BODY:
            return _refuse(401, "the request body is not GetCallerIdentity")
        if any(k.lower() == "content-length" for k in headers):
            return _refuse(401, "unexpected Content-Length header")
        if headers.get("Host") != f"sts.{region}.amazonaws.com":
            return _refuse(401, f"signed for host {headers.get('Host')}")
        m = re.match(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
            r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$",
            headers.get("Authorization", ""),
        )
        if m is None:
            return _refuse(401, "no SigV4 Authorization header")
        akid, _, scope_region, service, _, signature = m.groups()
        if akid != access_key or scope_region != region or service != "sts":
            return _refuse(401, "AccessDenied: signature scope")
        request = AWSRequest(
            method="POST",
            url=f"https://{headers['Host']}/",
            data=payload,
            headers={k: v for k, v in headers.items() if k != "Authorization"},
        )
        request.context["timestamp"] = headers["X-Amz-Date"]
        signer = SigV4Auth(Credentials(access_key, secret_key), "sts", region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != signature:
            return _refuse(401, "SignatureDoesNotMatch")
        return None

    fake.identities[identity] = ("aws", check)


def jwt_identity(
    fake: FakeInfisical,
    identity: str,
    method: str,
    key: RsaKey,
    *,
    audience: str,
    issuer: str | None = None,
    subject: str | None = None,
) -> None:
    """``method`` (gcp, azure, oidc, jwt): an RS256 JWT from ``key`` with this audience
    (and issuer, subject)."""

    def check(body: dict[str, Any]) -> httpx.Response | None:
        bad = _needs(body, "jwt")
        if bad is not None:
            return bad
        try:
            claims = key.verify(body["jwt"], audience=audience, issuer=issuer, now=fake.wall())
        except pyjwt.InvalidTokenError as exc:
            return _refuse(401, f"Access denied: {exc}")
        if subject is not None and claims.get("sub") != subject:
            return _refuse(403, "Access denied: subject not allowed")
        return None

    fake.identities[identity] = (method, check)


def ldap_identity(fake: FakeInfisical, identity: str, users: Mapping[str, str]) -> None:
    def check(body: dict[str, Any]) -> httpx.Response | None:
        bad = _needs(body, "username", "password")
        if bad is not None:
            return bad
        if users.get(body["username"]) != body["password"]:
            return _refuse(401, "Invalid credentials")
        return None

    fake.identities[identity] = ("ldap", check)


# ---------------------------------------------------------------------------- metadata


@dataclass
class CloudMetadata:
    """Instance metadata of AWS (IMDSv2), GCP and Azure, and GitHub Actions' OIDC token
    endpoint, on the hosts tests point the options at."""

    aws_region: str = "eu-central-1"
    google: RsaKey | None = None
    azure: RsaKey | None = None
    github: RsaKey | None = None
    github_bearer: str = "actions-request-token-1"
    calls: list[tuple[str, str]] = field(default_factory=list)
    _imds_tokens: set[str] = field(default_factory=set)

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        self.calls.append((request.method, url.path))
        params = dict(url.params)
        if url.path == "/latest/api/token" and request.method == "PUT":
            if "x-aws-ec2-metadata-token-ttl-seconds" not in request.headers:
                return httpx.Response(400)
            token = f"imds-token-{len(self._imds_tokens) + 1}"
            self._imds_tokens.add(token)
            return httpx.Response(200, text=token)
        if url.path == "/latest/meta-data/placement/region":
            if request.headers.get("x-aws-ec2-metadata-token") not in self._imds_tokens:
                return httpx.Response(401)
            return httpx.Response(200, text=self.aws_region)
        if url.path.endswith("/service-accounts/default/identity") and self.google:
            if request.headers.get("metadata-flavor") != "Google":
                return httpx.Response(403, text="Missing Metadata-Flavor:Google header")
            if params.get("format") != "full" or not params.get("audience"):
                return httpx.Response(400, text="non-empty audience parameter required")
            jwt = self.google.sign(
                {"aud": params["audience"], "iss": "https://accounts.google.com", "sub": "1234"}
            )
            return httpx.Response(200, text=jwt)
        if url.path == "/metadata/identity/oauth2/token" and self.azure:
            if request.headers.get("metadata") != "true":
                return httpx.Response(400, json={"error": "invalid_request"})
            if params.get("api-version") != "2018-02-01" or not params.get("resource"):
                return httpx.Response(400, json={"error": "invalid_request"})
            jwt = self.azure.sign({"aud": params["resource"], "iss": "https://sts.windows.net/t/"})
            return httpx.Response(200, json={"access_token": jwt, "token_type": "Bearer"})
        if url.path == "/_apis/token" and self.github:
            if request.headers.get("authorization") != f"Bearer {self.github_bearer}":
                return httpx.Response(401)
            aud = params.get("audience", "https://github.com/acme")
            jwt = self.github.sign(
                {
                    "aud": aud,
                    "iss": "https://token.actions.githubusercontent.com",
                    "sub": "repo:acme/api:ref:refs/heads/main",
                }
            )
            return httpx.Response(200, json={"count": 1, "value": jwt})
        return httpx.Response(404)


def router(routes: Mapping[str, Callable[[httpx.Request], httpx.Response]]) -> httpx.MockTransport:
    """One transport for several fakes: ``{host: handler}``."""

    def handle(request: httpx.Request) -> httpx.Response:
        handler = routes.get(request.url.host)
        if handler is None:
            raise httpx.ConnectError(f"no route to {request.url.host}", request=request)
        return handler(request)

    return httpx.MockTransport(handle)
