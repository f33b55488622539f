"""A small stateful fake of GitHub's REST API for Actions secrets, served on 127.0.0.1.

It holds repository, environment and organization secrets, answers the public-key
endpoints with keys of its own and decrypts every value it receives with the matching
private key, so tests assert the plaintext that would reach a workflow. It enforces the
documented rules: secret names, the 48 KB value limit, 100 secrets a repository or
environment and 1,000 an organization, 100 items a page with ``Link`` headers, tokens and
GitHub App installation tokens (the app's JWT is verified), and the content-creation limit
of 80 writes a minute (on an injectable clock). Rate-limit answers are injected on demand:
primary (403, ``x-ratelimit-remaining: 0``, ``x-ratelimit-reset``) and secondary (403 or 429,
``retry-after``).
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

MAX_VALUE_BYTES = 48 * 1024
LIMITS = {"repo": 100, "env": 100, "org": 1000}
CONTENT_LIMIT_PER_MINUTE = 80
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)

# a scope: ("repo", "acme/api"), ("env", "acme/api", "production") or ("org", "acme")
ScopeKey = tuple[str, ...]


def repo_scope(full_name: str) -> ScopeKey:
    return ("repo", full_name.lower())


def env_scope(full_name: str, environment: str) -> ScopeKey:
    return ("env", full_name.lower(), environment)


def org_scope(login: str) -> ScopeKey:
    return ("org", login.lower())


@dataclass
class StoredSecret:
    name: str
    value: str
    created_at: str
    updated_at: str
    visibility: str | None = None
    selected: list[int] = field(default_factory=list)


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]


class FakeGitHub:
    """The server and its state. ``start()`` serves it; ``url`` is the API root to configure."""

    def __init__(
        self,
        *,
        token: str = "ghp_fake_token_for_tests",
        prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
        content_limit_per_minute: int = CONTENT_LIMIT_PER_MINUTE,
    ) -> None:
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.clock = clock
        self.content_limit = content_limit_per_minute
        self._window_start: float | None = None  # the primary quota's hour
        self._window_used = 0
        self.repos: dict[str, dict[str, Any]] = {}
        self.orgs: set[str] = set()
        self.secrets: dict[ScopeKey, dict[str, StoredSecret]] = {}
        self.keys: dict[ScopeKey, tuple[str, PrivateKey]] = {}
        self.requests: list[Request] = []
        self.faults: list[Answer] = []
        self.writes_at: list[float] = []
        self.throttled = 0
        self.app: tuple[int, str, int] | None = None
        self.installation_tokens: set[str] = set()
        self._tick = 0
        self._next_id = 1000
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # answers go out in two writes (head, body): without this, Nagle's algorithm
                # and delayed ACKs hold each keep-alive answer back for tens of milliseconds
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                answer = fake.handle(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
                )
                body = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                for k, v in {**fake._rate_headers(), **answer.headers}.items():
                    self.send_header(k, v)
                if body:
                    self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"

    # ------------------------------------------------------------------ setup and inspection

    def add_repo(self, full_name: str, environments: Iterable[str] = ()) -> int:
        with self._lock:
            self._next_id += 1
            owner = full_name.split("/")[0]
            self.repos[full_name.lower()] = {
                "id": self._next_id,
                "full_name": full_name,
                "owner": owner.lower(),
                "environments": set(environments),
            }
            return self._next_id

    def add_org(self, login: str) -> None:
        self.orgs.add(login.lower())

    def repo_id(self, full_name: str) -> int:
        return int(self.repos[full_name.lower()]["id"])

    def setup_app(self, app_id: int, public_key_pem: str, installation_id: int) -> None:
        self.app = (app_id, public_key_pem, installation_id)

    def plaintext(self, scope: ScopeKey) -> dict[str, str]:
        """What the scope holds, name → the value a workflow would see."""
        with self._lock:
            return {k: s.value for k, s in self.secrets.get(scope, {}).items()}

    def secret(self, scope: ScopeKey, name: str) -> StoredSecret:
        return self.secrets[scope][name.upper()]

    def put_plain(
        self,
        scope: ScopeKey,
        name: str,
        value: str,
        *,
        visibility: str | None = None,
        selected: Iterable[int] = (),
    ) -> None:
        """A secret created or edited out of band, as a person would in the web interface."""
        with self._lock:
            stamp = self._stamp()
            held = self.secrets.setdefault(scope, {})
            old = held.get(name.upper())
            held[name.upper()] = StoredSecret(
                name.upper(),
                value,
                old.created_at if old else stamp,
                stamp,
                visibility
                or (old.visibility if old else ("private" if scope[0] == "org" else None)),
                list(selected) if selected else (old.selected if old else []),
            )

    def remove(self, scope: ScopeKey, name: str) -> None:
        with self._lock:
            self.secrets.get(scope, {}).pop(name.upper(), None)

    def throttle(self, calls: int, kind: str = "secondary", seconds: int = 2) -> None:
        """The next ``calls`` requests answer with a rate limit of this kind."""
        for _ in range(calls):
            self.faults.append(self.rate_limit_answer(kind, seconds))

    def rate_limit_answer(self, kind: str, seconds: int) -> Answer:
        if kind == "primary":
            reset = int(time.time()) + seconds
            return Answer(
                403,
                {"message": "API rate limit exceeded for user ID 1."},
                {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
            )
        if kind == "secondary":
            return Answer(403, {"message": SECONDARY}, {"retry-after": str(seconds)})
        if kind == "secondary-429":
            return Answer(429, {"message": SECONDARY}, {"retry-after": str(seconds)})
        if kind == "secondary-bare":
            return Answer(403, {"message": SECONDARY})
        if kind == "server":
            return Answer(502, {"message": "Server Error"})
        raise ValueError(kind)

    def calls(self, method: str, pattern: str = "") -> int:
        """Requests seen with this method whose path contains ``pattern``."""
        return sum(1 for r in self.requests if r.method == method and pattern in r.path)

    def max_writes_per_minute(self) -> int:
        ts = sorted(self.writes_at)
        best = 0
        j = 0
        for i, t in enumerate(ts):
            while ts[j] <= t - 60.0:
                j += 1
            best = max(best, i - j + 1)
        return best

    # ------------------------------------------------------------------ the API

    def _stamp(self) -> str:
        # every write moves updated_at, one second a write, as a clock that never repeats
        self._tick += 1
        when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self._tick)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")

    def spend_primary(self, calls: int) -> None:
        """As if ``calls`` requests of this hour's window were made elsewhere."""
        self._rate_headers()
        self._window_used += calls - 1

    def _rate_headers(self) -> dict[str, str]:
        """The primary quota as GitHub reports it: 5,000 requests in an hour's window on the
        fake's clock, which refills when the window ends."""
        now = self.clock()
        if self._window_start is None or now >= self._window_start + 3600.0:
            self._window_start, self._window_used = now, 0
        self._window_used += 1
        reset_in = self._window_start + 3600.0 - now
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(max(0, 5000 - self._window_used)),
            "x-ratelimit-used": str(self._window_used),
            "x-ratelimit-reset": str(math.ceil(time.time() + reset_in)),
            "x-ratelimit-resource": "core",
        }

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Answer:
        parsed = urllib.parse.urlsplit(target)
        path = parsed.path
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return Answer(404, {"message": "Not Found"})
            path = path[len(self.prefix) :]
        query = dict(urllib.parse.parse_qsl(parsed.query))
        with self._lock:
            self.requests.append(Request(method, path, query))
            m = re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)
            if m and method == "POST":
                return self._installation_token(int(m.group(1)), headers)
            if not self._authorized(headers):
                return Answer(401, {"message": "Bad credentials"})
            if self.faults:
                self.throttled += 1
                return self.faults.pop(0)
            if method in ("PUT", "DELETE", "POST", "PATCH"):
                now = self.clock()
                recent = [t for t in self.writes_at if t > now - 60.0]
                if len(recent) >= self.content_limit:
                    self.throttled += 1
                    return Answer(403, {"message": SECONDARY}, {"retry-after": "60"})
                self.writes_at.append(now)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return Answer(400, {"message": "Problems parsing JSON"})
            return self._route(method, path, query, body, headers)

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() not in ("token", "bearer"):
            return False
        return value == self.token or value in self.installation_tokens

    def _installation_token(self, installation_id: int, headers: dict[str, str]) -> Answer:
        if self.app is None:
            return Answer(404, {"message": "Not Found"})
        app_id, public_pem, installation = self.app
        scheme, _, token = headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(token, public_pem, algorithms=["RS256"])
        except jwt.PyJWTError:
            return Answer(401, {"message": "A JSON web token could not be decoded"})
        if scheme.lower() != "bearer" or str(claims.get("iss")) != str(app_id):
            return Answer(401, {"message": "Bad credentials"})
        if installation_id != installation:
            return Answer(404, {"message": "Not Found"})
        value = "ghs_" + secrets.token_hex(16)
        self.installation_tokens.add(value)
        expires = datetime.now(UTC) + timedelta(hours=1)
        return Answer(
            201,
            {
                "token": value,
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"secrets": "write", "metadata": "read"},
            },
        )

    def _scope(self, parts: list[str]) -> tuple[ScopeKey | None, list[str]]:
        """The scope a path names, and the rest of the path after ``.../secrets``."""
        if parts[:1] == ["orgs"] and len(parts) >= 4 and parts[2:4] == ["actions", "secrets"]:
            org = parts[1].lower()
            return (org_scope(org) if org in self.orgs else None), parts[4:]
        if parts[:1] == ["repos"] and len(parts) >= 5:
            full = f"{parts[1]}/{parts[2]}".lower()
            repo = self.repos.get(full)
            if parts[3:5] == ["actions", "secrets"]:
                return (repo_scope(full) if repo else None), parts[5:]
            if parts[3] == "environments" and len(parts) >= 6 and parts[5] == "secrets":
                env = parts[4]
                ok = repo is not None and env in repo["environments"]
                return (env_scope(full, env) if ok else None), parts[6:]
        return None, []

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, headers: dict[str, str]
    ) -> Answer:
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if len(parts) == 3 and parts[0] == "repos" and method == "GET":
            repo = self.repos.get(f"{parts[1]}/{parts[2]}".lower())
            if repo is None:
                return Answer(404, {"message": "Not Found"})
            return Answer(200, self._repo_json(repo))
        scope, rest = self._scope(parts)
        if scope is None:
            return Answer(404, {"message": "Not Found"})
        held = self.secrets.setdefault(scope, {})
        if not rest:
            if method != "GET":
                return Answer(404, {"message": "Not Found"})
            items = [self._secret_json(scope, s) for _, s in sorted(held.items())]
            return self._page(path, query, headers, "secrets", items)
        if rest == ["public-key"] and method == "GET":
            key_id, key = self._key(scope)
            return Answer(
                200,
                {"key_id": key_id, "key": base64.b64encode(bytes(key.public_key)).decode()},
            )
        name = rest[0].upper()
        if len(rest) == 1:
            if method == "GET":
                found = held.get(name)
                if found is None:
                    return Answer(404, {"message": "Not Found"})
                return Answer(200, self._secret_json(scope, found))
            if method == "PUT":
                return self._put(scope, rest[0], body)
            if method == "DELETE":
                if held.pop(name, None) is None:
                    return Answer(404, {"message": "Not Found"})
                return Answer(204)
        if len(rest) == 2 and rest[1] == "repositories" and scope[0] == "org":
            found = held.get(name)
            if found is None:
                return Answer(404, {"message": "Not Found"})
            if found.visibility != "selected":
                return Answer(409, {"message": "The secret's visibility is not 'selected'."})
            if method == "GET":
                by_id = {r["id"]: r for r in self.repos.values()}
                items = [self._repo_json(by_id[i]) for i in found.selected if i in by_id]
                return self._page(path, query, headers, "repositories", items)
            if method == "PUT":
                ids = (body or {}).get("selected_repository_ids")
                if not isinstance(ids, list) or not self._org_repos(scope, ids):
                    return Answer(422, {"message": "Invalid selected_repository_ids"})
                found.selected = list(ids)
                return Answer(204)
        return Answer(404, {"message": "Not Found"})

    def _key(self, scope: ScopeKey) -> tuple[str, PrivateKey]:
        if scope not in self.keys:
            self._next_id += 1
            self.keys[scope] = (f"568250167242549{self._next_id}", PrivateKey.generate())
        return self.keys[scope]

    def _org_repos(self, scope: ScopeKey, ids: list[Any]) -> bool:
        owned = {r["id"] for r in self.repos.values() if r["owner"] == scope[1]}
        return all(isinstance(i, int) and i in owned for i in ids)

    def _put(self, scope: ScopeKey, raw_name: str, body: Any) -> Answer:
        if not NAME.fullmatch(raw_name):
            return Answer(
                422,
                {
                    "message": "Secret names can only contain alphanumeric characters "
                    "([a-z], [A-Z], [0-9]) or underscores (_). Spaces are not allowed. "
                    "Must start with a letter ([a-z], [A-Z]) or underscores (_)."
                },
            )
        name = raw_name.upper()
        if name.startswith("GITHUB_"):
            return Answer(422, {"message": "Secret names must not start with GITHUB_."})
        if not isinstance(body, dict):
            return Answer(422, {"message": "Invalid request."})
        for required in ("encrypted_value", "key_id"):
            if not isinstance(body.get(required), str):
                return Answer(
                    422, {"message": f'Invalid request.\n\n"{required}" wasn\'t supplied.'}
                )
        key_id, key = self._key(scope)
        if body["key_id"] != key_id:
            return Answer(422, {"message": "Bad key_id"})
        try:
            value = SealedBox(key).decrypt(base64.b64decode(body["encrypted_value"])).decode()
        except (CryptoError, ValueError):
            return Answer(422, {"message": "Bad encrypted_value"})
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            return Answer(422, {"message": "Secret value is too large. Maximum size is 48 KB."})
        held = self.secrets.setdefault(scope, {})
        old = held.get(name)
        if old is None and len(held) >= LIMITS[scope[0]]:
            return Answer(422, {"message": f"You can store up to {LIMITS[scope[0]]} secrets here."})
        visibility: str | None = None
        selected: list[int] = []
        if scope[0] == "org":
            visibility = body.get("visibility")
            if visibility not in ("all", "private", "selected"):
                return Answer(422, {"message": "Invalid request.\n\nvisibility is required."})
            ids = body.get("selected_repository_ids")
            if ids is not None and visibility != "selected":
                return Answer(
                    422,
                    {
                        "message": "You can only provide a list of repository ids when the "
                        "visibility is set to selected."
                    },
                )
            if ids is not None and (not isinstance(ids, list) or not self._org_repos(scope, ids)):
                return Answer(422, {"message": "Invalid selected_repository_ids"})
            # the reference does not say an omitted list is kept on update: a client must send
            # the list it wants, so the fake drops it
            selected = list(ids or [])
        stamp = self._stamp()
        held[name] = StoredSecret(
            name, value, old.created_at if old else stamp, stamp, visibility, selected
        )
        return Answer(201, {}) if old is None else Answer(204)

    def _secret_json(self, scope: ScopeKey, s: StoredSecret) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": s.name,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
        }
        if scope[0] == "org":
            out["visibility"] = s.visibility
            if s.visibility == "selected":
                out["selected_repositories_url"] = (
                    f"{self.url}/orgs/{scope[1]}/actions/secrets/{s.name}/repositories"
                )
        return out

    def _repo_json(self, repo: dict[str, Any]) -> dict[str, Any]:
        name = repo["full_name"].split("/")[1]
        return {
            "id": repo["id"],
            "name": name,
            "full_name": repo["full_name"],
            "owner": {"login": repo["full_name"].split("/")[0]},
            "private": True,
        }

    def _page(
        self,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        item: str,
        items: list[dict[str, Any]],
    ) -> Answer:
        try:
            per_page = min(100, max(1, int(query.get("per_page", "30"))))
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            return Answer(422, {"message": "Invalid pagination"})
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        base = f"http://{headers.get('host', '127.0.0.1')}{self.prefix}{path}"
        if page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        if page > 1:
            links.append(f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"')
            links.append(f'<{base}?per_page={per_page}&page=1>; rel="first"')
        extra = {"link": ", ".join(links)} if links else {}
        return Answer(200, {"total_count": len(items), item: chunk}, extra)
