"""deploy/: the systemd units, the container image, the Kubernetes manifests and the cron
line parse, agree with each other and with what `syncd run` serves, and hold the hardening
they promise. No Docker engine or cluster runs here: the tools that exist
(systemd-analyze, kubectl kustomize, flock) are used, and skipped where absent."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.cli import build_parser
from syncd.config import ServerSection
from tests.test_examples import validate

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
CONTAINER = DEPLOY / "container"
KUBE_TOP = DEPLOY / "kubernetes"
KUBE = KUBE_TOP / "base"
KUBE_PG = KUBE_TOP / "postgres"
CRON = DEPLOY / "cron"

PROBE_PATHS = {"/healthz", "/readyz", "/metrics"}


def served_paths() -> set[str]:
    """The GET paths `syncd run` serves: from its app when this build has it, else the
    contract (CONFIG.md: /healthz, /readyz, /metrics)."""
    try:
        from syncd.server import create_app
    except ImportError:
        return set(PROBE_PATHS)
    app = create_app(None)  # type: ignore[arg-type]
    out = set()
    for route in app.routes:
        path = str(getattr(route, "path", ""))
        if "GET" in (getattr(route, "methods", None) or set()) and "{" not in path:
            out.add(path)
    return out


def listen_of(config_text: str) -> tuple[str, int]:
    server = ServerSection(**(yaml.safe_load(config_text).get("server") or {}))
    host, _, port = server.listen.rpartition(":")
    return host, int(port)


def syncd_args(argv: list[str]) -> Any:
    """Parse a command line with syncd's own parser: a typo fails here, not at 3 am."""
    assert argv and Path(argv[0]).name == "syncd", argv
    return build_parser().parse_args(argv[1:])


# ---------------------------------------------------------------------------- systemd


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}; keys may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]


HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "StateDirectory": "syncd",
    "CapabilityBoundingSet": "",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
}


@pytest.mark.parametrize("name", ["syncd.service", "syncd-once.service"])
def test_units_are_hardened(name: str) -> None:
    service = unit(SYSTEMD / name)["Service"]
    for key, want in HARDENING.items():
        assert one(service, key) == want, key
    filters = values(service, "SystemCallFilter")
    assert "@system-service" in filters
    assert any(f.startswith("~") and "@privileged" in f for f in filters)
    env = dict(v.split("=", 1) for v in values(service, "Environment"))
    assert env["SYNCD_CONFIG"] == "/etc/syncd/syncd.yaml"
    # the state store goes to $STATE_DIRECTORY: no SYNCD_STATE_DIR may override it
    assert "SYNCD_STATE_DIR" not in env


def test_daemon_unit_runs_run_and_restarts_on_failure() -> None:
    u = unit(SYSTEMD / "syncd.service")
    service = u["Service"]
    assert syncd_args(shlex.split(one(service, "ExecStart"))).command == "run"
    assert one(service, "Restart") == "on-failure"
    # a config error (exit 2) is not retried in a loop
    assert "2" in one(service, "RestartPreventExitStatus").split()
    # SIGHUP reloads the config
    assert "-HUP" in one(service, "ExecReload")
    assert one(u["Install"], "WantedBy") == "multi-user.target"


def test_once_unit_and_timer() -> None:
    service = unit(SYSTEMD / "syncd-once.service")["Service"]
    assert one(service, "Type") == "oneshot"
    assert syncd_args(shlex.split(one(service, "ExecStart"))).command == "once"
    timer = unit(SYSTEMD / "syncd-once.timer")
    assert one(timer["Timer"], "Unit") == "syncd-once.service"
    assert one(timer["Timer"], "OnCalendar")
    assert one(timer["Install"], "WantedBy") == "timers.target"


def test_credentials_dropin_matches_the_config() -> None:
    """Every credential the systemd config reads is loaded by the drop-in, and back."""
    dropin = unit(SYSTEMD / "credentials.conf")["Service"]
    loaded = {v.split(":", 1)[0] for v in values(dropin, "LoadCredential")}
    text = (SYSTEMD / "syncd.yaml").read_text()
    read = set(re.findall(r"\$\{CREDENTIALS_DIRECTORY(?::-[^}]*)?\}/([\w.-]+)", text))
    assert read and read == loaded


def _verify(tmp_path: Path, files: list[str], dropins: dict[str, str]) -> None:
    exe = shutil.which("syncd") or sys.executable
    for name in files:
        text = (SYSTEMD / name).read_text().replace("/opt/syncd/bin/syncd", exe)
        (tmp_path / name).write_text(text)
    for unit_name, dropin in dropins.items():
        d = tmp_path / f"{unit_name}.d"
        d.mkdir()
        shutil.copy(SYSTEMD / dropin, d / dropin)
    proc = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in files)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    # unknown or misspelt settings are only warnings: any output is a failure here
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), (
        proc.stdout + proc.stderr
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    _verify(
        tmp_path,
        ["syncd.service", "syncd-once.service", "syncd-once.timer"],
        {"syncd.service": "credentials.conf", "syncd-once.service": "credentials.conf"},
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_catches_a_typo(tmp_path: Path) -> None:
    """The check above would see a misspelt hardening option (systemd ignores it)."""
    text = (SYSTEMD / "syncd.service").read_text().replace("NoNewPrivileges=", "NoNewPrivilege=")
    exe = shutil.which("syncd") or sys.executable
    (tmp_path / "syncd.service").write_text(text.replace("/opt/syncd/bin/syncd", exe))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "syncd.service")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "NoNewPrivilege" in proc.stderr


def test_unit_environment_puts_state_in_state_directory(tmp_path: Path) -> None:
    """Under the units' environment (StateDirectory=, LoadCredential=), `syncd once` keeps
    its state store in $STATE_DIRECTORY and reads *_file tokens from
    $CREDENTIALS_DIRECTORY."""
    state, creds, work = tmp_path / "state", tmp_path / "credentials", tmp_path / "etc"
    for d in (state, creds, work):
        d.mkdir()
    (creds / "webhook-secret").write_text("example-webhook-secret-value\n")
    (work / "secrets.yaml").write_text("API_TOKEN: example-token-123456\n")
    (work / "syncd.yaml").write_text(
        "version: 1\n"
        "sources:\n"
        "  local:\n"
        "    type: file\n"
        "    path: ./secrets.yaml\n"
        "    webhook_secret_file: ${CREDENTIALS_DIRECTORY}/webhook-secret\n"
        "destinations:\n  env: {type: dotenv, path: ./out/.env}\n"
        "syncs:\n  - {name: app, from: local, to: [env]}\n"
    )
    service = unit(SYSTEMD / "syncd-once.service")["Service"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(dict(v.split("=", 1) for v in values(service, "Environment")))
    env.update(
        SYNCD_CONFIG=str(work / "syncd.yaml"),
        STATE_DIRECTORY=str(state),
        CREDENTIALS_DIRECTORY=str(creds),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", "once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (state / "state.db").exists()
    assert (state / "fingerprint.key").stat().st_mode & 0o077 == 0
    assert "API_TOKEN='example-token-123456'" in (work / "out" / ".env").read_text()
    assert "example-webhook-secret-value" not in proc.stdout + proc.stderr


def test_systemd_config_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    text = (SYSTEMD / "syncd.yaml").read_text()
    for name in re.findall(r"\$\{CREDENTIALS_DIRECTORY(?::-[^}]*)?\}/([\w.-]+)", text):
        (creds / name).write_text("example-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    validate(text, SYSTEMD / "syncd.yaml", tmp_path, monkeypatch, capsys)


# ---------------------------------------------------------------------------- container


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def docker_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in stage:
        if ins == "ENV":
            for token in shlex.split(args):
                k, _, v = token.partition("=")
                env[k] = v
    return env


def exec_form(args: str) -> list[str]:
    value = yaml.safe_load(args)  # JSON arrays are YAML
    assert isinstance(value, list), f"use the exec form: {args}"
    return [str(v) for v in value]


COMPILERS = re.compile(
    r"\b(gcc|g\+\+|clang|cc|make|build-essential|python3?-dev|libc6?-dev|"
    r"libffi-dev|libssl-dev|rustc|cargo)\b"
)


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    all_stages = stages(dockerfile(CONTAINER / "Dockerfile"))
    assert len(all_stages) >= 2, "the image is built in stages"
    return all_stages[-1]


def test_dockerfile_is_multi_stage_without_compilers_in_the_final_stage(
    final_stage: list[tuple[str, str]],
) -> None:
    base = final_stage[0][1]
    assert base.split()[0] in ("${PYTHON_IMAGE}", "$PYTHON_IMAGE") or "slim" in base
    arg = next(
        a for i, a in dockerfile(CONTAINER / "Dockerfile") if i == "ARG" and "PYTHON_IMAGE" in a
    )
    assert "slim" in arg, "a slim base image, which ships no compiler"
    for ins, args in final_stage:
        if ins == "RUN":
            assert not COMPILERS.search(args), args
            assert "pip install" not in args, "packages are installed in the build stage"
        if ins in ("COPY", "ADD"):
            # only the built virtualenv comes in: no config, no tokens, no sources
            assert args.startswith("--from="), args


def test_dockerfile_runs_as_non_root_with_state_on_a_volume(
    final_stage: list[tuple[str, str]],
) -> None:
    users = [a for i, a in final_stage if i == "USER"]
    assert users, "a USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot checks it)"
    env = docker_env(final_stage)
    volumes = [v for i, a in final_stage if i == "VOLUME" for v in exec_form(a)]
    assert env["SYNCD_STATE_DIR"] in volumes
    assert env["SYNCD_CONFIG"] == "/etc/syncd/syncd.yaml"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "nothing written beside the code"
    entry = [a for i, a in final_stage if i == "ENTRYPOINT"][-1]
    cmd = [a for i, a in final_stage if i == "CMD"][-1]
    args = syncd_args(exec_form(entry) + exec_form(cmd))
    assert args.command == "run"


def test_dockerfile_healthcheck_and_port_match_the_container_config(
    final_stage: list[tuple[str, str]],
) -> None:
    env = docker_env(final_stage)
    health = [a for i, a in final_stage if i == "HEALTHCHECK"]
    assert len(health) == 1 and "SYNCD_HEALTHCHECK_URL" in health[0]
    url = env["SYNCD_HEALTHCHECK_URL"]
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\S+)", url)
    assert m and m.group(2) == "/healthz" and m.group(2) in served_paths()
    host, port = listen_of((CONTAINER / "syncd.yaml").read_text())
    assert host == "0.0.0.0", "reachable through the port mapping"
    exposed = [a for i, a in final_stage if i == "EXPOSE"]
    assert exposed == [str(port)] and int(m.group(1)) == port


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_command_reports_up_and_down(
    final_stage: list[tuple[str, str]], health_server: int
) -> None:
    """The HEALTHCHECK command itself: exit 0 while /healthz answers, non-zero when not."""
    health = next(a for i, a in final_stage if i == "HEALTHCHECK")
    cmd = exec_form(health.split(" CMD ", 1)[1])
    assert cmd[0] == "python"
    argv = [sys.executable, *cmd[1:]]

    def check(url: str) -> int:
        env = {**os.environ, "SYNCD_HEALTHCHECK_URL": url}
        return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode

    assert check(f"http://127.0.0.1:{health_server}/healthz") == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert check(f"http://127.0.0.1:{closed}/healthz") != 0


def test_build_context_keeps_state_and_tokens_out() -> None:
    ignore = (CONTAINER / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*", "allow-list"
    allowed = {p[1:].rstrip("/") for p in ignore if p.startswith("!")}
    build = stages(dockerfile(CONTAINER / "Dockerfile"))[0]
    for ins, args in build:
        if ins == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            assert set(sources) <= allowed, sources
    for pattern in ("**/*.db", "**/.env", "**/fingerprint.key"):
        assert pattern in ignore


def test_compose_mounts_config_tokens_and_state() -> None:
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    svc = compose["services"]["syncd"]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert syncd_args(["syncd", *svc["command"]]).command == "run"
    final = stages(dockerfile(CONTAINER / "Dockerfile"))[-1]
    env = docker_env(final)
    mounts = {m.split(":")[1]: m for m in svc["volumes"]}
    assert mounts[env["SYNCD_CONFIG"]].endswith(":ro")
    assert env["SYNCD_STATE_DIR"] in mounts
    config_text = (CONTAINER / "syncd.yaml").read_text()
    # every token file the config reads is a compose secret under /run/secrets
    wanted = set(re.findall(r"_file: /run/secrets/([\w.-]+)", config_text))
    assert wanted and wanted == set(svc["secrets"]) == set(compose["secrets"])
    _, port = listen_of(config_text)
    assert any(p.endswith(f":{port}") for p in svc["ports"])
    # the drain (25 s) fits in the stop grace period
    assert int(svc["stop_grace_period"].rstrip("s")) >= 30


def test_container_config_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CONTAINER / "syncd.yaml"
    validate(path.read_text(), path, tmp_path, monkeypatch, capsys)


# ---------------------------------------------------------------------------- kubernetes


def manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(KUBE.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(docs) == 1, path.name
        out[path.name] = docs[0]
    return out


@pytest.fixture(scope="module")
def kube() -> dict[str, dict[str, Any]]:
    return manifests()


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    template: dict[str, Any] = spec["template"]["spec"]
    return template


def container_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def configmap_config(kube: dict[str, dict[str, Any]]) -> str:
    text: str = kube["configmap.yaml"]["data"]["syncd.yaml"]
    return text


def test_manifests_parse_and_kustomization_lists_existing_files(
    kube: dict[str, dict[str, Any]],
) -> None:
    for name, doc in kube.items():
        assert doc.get("apiVersion") and doc.get("kind"), name
    for res in kube["kustomization.yaml"]["resources"]:
        assert (KUBE / res).exists(), res
    # the alternatives are present, to be swapped in
    assert kube["cronjob.yaml"]["kind"] == "CronJob"
    assert kube["servicemonitor.yaml"]["kind"] == "ServiceMonitor"


def test_deployment_is_one_replica_recreated(kube: dict[str, dict[str, Any]]) -> None:
    dep = kube["deployment.yaml"]
    assert dep["kind"] == "Deployment"
    assert dep["spec"]["replicas"] == 1, "one replica until the state store is shared"
    assert dep["spec"]["strategy"]["type"] == "Recreate", "never two writers on SQLite"
    (c,) = pod_spec(dep)["containers"]
    assert syncd_args(["syncd", *c["args"]]).command == "run"
    # the drain (25 s) fits inside the grace period
    assert pod_spec(dep)["terminationGracePeriodSeconds"] >= 30


def test_probes_and_ports_match_what_syncd_run_serves(kube: dict[str, dict[str, Any]]) -> None:
    dep = kube["deployment.yaml"]
    (c,) = pod_spec(dep)["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    host, port = listen_of(configmap_config(kube))
    assert host == "0.0.0.0", "the kubelet probes the pod's IP, not loopback"
    served = served_paths()
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path and path in served
        assert ports.get(get["port"], get["port"]) == port
    get = c["startupProbe"]["httpGet"]
    assert get["path"] in served and ports.get(get["port"], get["port"]) == port

    svc = kube["service.yaml"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (sp,) = svc["spec"]["ports"]
    assert ports.get(sp["targetPort"], sp["targetPort"]) == port

    mon = kube["servicemonitor.yaml"]
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = mon["spec"]["endpoints"]
    assert ep["port"] == sp["name"] and ep["path"] == "/metrics" and "/metrics" in served
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert int(ann["prometheus.io/port"]) == port and ann["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", ["deployment.yaml", "cronjob.yaml"])
def test_pods_are_non_root_read_only_with_limits(
    name: str, kube: dict[str, dict[str, Any]]
) -> None:
    spec = pod_spec(kube[name])
    final = stages(dockerfile(CONTAINER / "Dockerfile"))[-1]
    image_uid = int([a for i, a in final if i == "USER"][-1].split(":")[0])
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == image_uid
    assert psc["fsGroup"] == image_uid, "the state volume is writable by that user"
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    # mounted for the kubernetes destination, which role.yaml limits
    assert spec["automountServiceAccountToken"] is True
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    assert c["image"] == kube["kustomization.yaml"]["images"][0]["name"]


@pytest.mark.parametrize("name", ["deployment.yaml", "cronjob.yaml"])
def test_pods_mount_config_tokens_and_state_where_syncd_looks(
    name: str, kube: dict[str, dict[str, Any]]
) -> None:
    spec = pod_spec(kube[name])
    (c,) = spec["containers"]
    env = container_env(c)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    cfg = Path(env["SYNCD_CONFIG"])
    config_mount = next(m for m in mounts.values() if Path(m["mountPath"]) == cfg.parent)
    assert config_mount["readOnly"] is True
    cm = volumes[config_mount["name"]]["configMap"]["name"]
    assert cm == kube["configmap.yaml"]["metadata"]["name"]
    assert cfg.name in kube["configmap.yaml"]["data"]

    state = next(m for m in mounts.values() if m["mountPath"] == env["SYNCD_STATE_DIR"])
    claim = volumes[state["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == kube["pvc.yaml"]["metadata"]["name"]
    assert any(m["mountPath"] == "/tmp" for m in mounts.values())

    # every *_file in the config is a key of the Secret, under the Secret's mount
    secret = kube["secret.yaml"]
    tokens = next(m for m in mounts.values() if "secret" in volumes[m["name"]])
    assert tokens["readOnly"] is True
    vol = volumes[tokens["name"]]["secret"]
    assert vol["secretName"] == secret["metadata"]["name"]
    assert vol["defaultMode"] & 0o040, "group-readable: files belong to root and the fsGroup"
    assert not vol["defaultMode"] & 0o007
    files = re.findall(r"_file: (\S+)", configmap_config(kube))
    assert files
    for f in files:
        assert Path(f).parent == Path(tokens["mountPath"]), f
        assert Path(f).name in secret["stringData"], f


def test_cronjob_runs_once_never_overlapping(kube: dict[str, dict[str, Any]]) -> None:
    cron = kube["cronjob.yaml"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["spec"]["schedule"].split()) == 5
    spec = pod_spec(cron)
    assert spec["restartPolicy"] == "Never"
    (c,) = spec["containers"]
    assert syncd_args(["syncd", *c["args"]]).command == "once"


def test_secret_template_holds_no_real_value_and_is_not_applied(
    kube: dict[str, dict[str, Any]],
) -> None:
    """`kubectl apply -k` must never overwrite the real tokens with the template's."""
    assert set(kube["secret.yaml"]["stringData"].values()) == {"REPLACE_ME"}
    assert "secret.yaml" not in kube["kustomization.yaml"]["resources"]


def test_configmap_config_validates(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kube: dict[str, dict[str, Any]],
) -> None:
    validate(configmap_config(kube), KUBE / "syncd.yaml", tmp_path, monkeypatch, capsys)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl")
def test_kustomize_builds() -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(KUBE_TOP)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    want = ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"]
    want.append("PersistentVolumeClaim")
    assert kinds == sorted([*want, "Deployment", "Service"])
    assert all(d["metadata"].get("namespace") == "syncd" for d in docs if d["kind"] != "Namespace")


# ---------------------------------------------------------------------------- cron


def cron_line() -> tuple[list[str], str, str, dict[str, str]]:
    """(schedule fields, user, command, environment) of the one job in deploy/cron."""
    env: dict[str, str] = {}
    jobs = []
    for raw in (CRON / "syncd.cron").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Z_]+)=(.*)", line)
        if m:
            env[m.group(1)] = m.group(2).strip('"')
            continue
        jobs.append(line)
    assert len(jobs) == 1, jobs
    fields = jobs[0].split(None, 6)
    return fields[:5], fields[5], fields[6], env


def test_cron_line_is_well_formed() -> None:
    schedule, user, command, env = cron_line()
    for f in schedule:
        assert re.fullmatch(r"[\d*/,-]+", f), f
    assert user == "syncd", "not root"
    argv = shlex.split(command.split(">>")[0])
    assert argv[:2] == ["flock", "-n"], "a pass never overlaps the previous one"
    assert syncd_args(argv[3:]).command == "once"
    assert env["SYNCD_CONFIG"] == "/etc/syncd/syncd.yaml" and env["SYNCD_STATE_DIR"]


@pytest.mark.skipif(shutil.which("flock") is None, reason="no flock")
def test_cron_command_runs_once_and_skips_while_locked(tmp_path: Path) -> None:
    """The job's command, run by sh as cron would (paths moved into tmp): one pass; and
    while the lock is held, a second start does nothing."""
    _, _, command, cron_env = cron_line()
    state, logs, work = tmp_path / "state", tmp_path / "log", tmp_path / "etc"
    for d in (state, logs, work):
        d.mkdir()
    (work / "secrets.yaml").write_text("API_TOKEN: example-token-123456\n")
    (work / "syncd.yaml").write_text(
        "version: 1\nsources:\n  local: {type: file, path: ./secrets.yaml}\n"
        "destinations:\n  env: {type: dotenv, path: ./out/.env}\n"
        "syncs:\n  - {name: app, from: local, to: [env]}\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "syncd").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m syncd "$@"\n')
    (bindir / "syncd").chmod(0o755)
    command = command.replace(cron_env["SYNCD_STATE_DIR"], str(state)).replace(
        "/var/log/syncd", str(logs)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(cron_env)
    env.update(
        SYNCD_CONFIG=str(work / "syncd.yaml"),
        SYNCD_STATE_DIR=str(state),
        PATH=f"{bindir}:{os.environ['PATH']}",
    )
    run = [cron_env.get("SHELL", "/bin/sh"), "-c", command]
    assert subprocess.run(run, env=env, timeout=60).returncode == 0
    assert "API_TOKEN=" in (work / "out" / ".env").read_text()
    log = (logs / "syncd.log").read_text()
    assert "app → env: ok: 1 created" in log

    lock = shlex.split(command)[2]
    (work / "secrets.yaml").write_text("API_TOKEN: example-token-changed\n")
    # a previous pass still running: it holds the lock (and says so once it has it)
    holder = subprocess.Popen(
        ["flock", lock, "sh", "-c", "echo locked; exec sleep 60"], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert subprocess.run(run, env=env, timeout=60).returncode != 0
    finally:
        holder.kill()
        holder.wait()
    assert "example-token-123456" in (work / "out" / ".env").read_text(), "not run"
    assert (logs / "syncd.log").read_text() == log


# ---------------------------------------------------------------------------- kubernetes: postgres


def kustomize(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_postgres_variant_lists_existing_files_and_applies_no_secret() -> None:
    kust = yaml.safe_load((KUBE_PG / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (KUBE_PG / res).exists(), res
    for patch in kust["patches"]:
        assert "path" not in patch or (KUBE_PG / patch["path"]).exists()
    assert "secrets.yaml" not in kust["resources"]
    templates = list(yaml.safe_load_all((KUBE_PG / "secrets.yaml").read_text()))
    assert {v for d in templates for v in d["stringData"].values()} == {"REPLACE_ME"}


def test_postgres_variant_config_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load((KUBE_PG / "configmap-patch.yaml").read_text())
    text = doc["data"]["syncd.yaml"]
    assert "url: ${SYNCD_STATE_URL}" in text
    validate(
        text,
        KUBE / "syncd.yaml",
        tmp_path,
        monkeypatch,
        capsys,
        env={"SYNCD_STATE_URL": "postgresql://syncd@db.example.internal/syncd"},
    )


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl")
def test_postgres_variant_runs_replicas_with_a_rolling_update_and_a_budget() -> None:
    docs = {d["kind"]: d for d in kustomize(KUBE_PG)}
    assert "PersistentVolumeClaim" not in docs  # the state is in PostgreSQL
    dep = docs["Deployment"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pdb = docs["PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        dep["spec"]["template"]["metadata"]["labels"].items()
    )
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["SYNCD_STATE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "syncd-postgres",
        "key": "url",
    }
    key_file = env["SYNCD_FINGERPRINT_KEY_FILE"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "state" not in volumes and "/var/lib/syncd" not in mounts
    mount_dir = str(Path(key_file).parent)
    assert volumes[mounts[mount_dir]]["secret"]["secretName"] == "syncd-fingerprint"
    config = docs["ConfigMap"]["data"]["syncd.yaml"]
    assert "${SYNCD_STATE_URL}" in config
