"""Notifications against a local receiver: one notice per transition (failure, recovery),
reminders after ``repeat`` on the injected clock, changes, the signature, Apprise's
``json://`` scheme, a restart that neither repeats nor loses, and an unreachable URL that
never touches the sync."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd import registry
from syncd.cli import main
from syncd.testing import memory
from syncd.testing.memory import platform
from syncd.testing.workbench import Workbench
from syncd.webhooks import verify_generic

SECRET = "notify-signing-secret-4d2e"
VALUES = {"DB_PASSWORD": "db-password-value-81aa", "API_TOKEN": "api-token-value-2c9f"}


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(b) for p, _, b in self.got if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec: Receiver

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            rec.got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec = Receiver(server)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _memory() -> Iterator[None]:
    memory.install()
    platform("notify-p").data.clear()
    platform("notify-p").reject.clear()
    yield
    registry.unregister(registry.DESTINATION_GROUP, "memory")


def bench(root: Path, receiver: Receiver, **entry: Any) -> Workbench:
    wb = Workbench(
        root,
        {"mem": {"type": "memory", "platform": "notify-p"}},
        source=VALUES,
    )
    body = yaml.safe_load(wb.config_file.read_text())
    body["notify"] = [
        {
            "url": f"{receiver.url}/hook",
            "secret": SECRET,
            "on": ["failure", "recovery", "change"],
            **entry,
        },
        {"url": receiver.url.replace("http://", "json://") + "/apprise"},
    ]
    wb.config_file.write_text(yaml.safe_dump(body))
    return wb


async def test_one_notice_per_transition_reminders_and_recovery(
    tmp_path: Path, receiver: Receiver
) -> None:
    wb = bench(tmp_path, receiver, repeat="1h")
    assert (await wb.pair()).result == "ok"
    # the first run: changes, no failure (never run -> ok is not news)
    hook = receiver.bodies("/hook")
    assert [b["event"] for b in hook] == ["change"]
    assert hook[0]["counts"]["created"] == 2 and receiver.bodies("/apprise") == []
    _, headers, raw = receiver.got[0]
    assert verify_generic(SECRET, headers, raw)
    assert headers["x-syncd-event"] == "change"

    # a key starts failing: one failure notice to both entries
    platform("notify-p").reject = {"API_TOKEN"}
    wb.set_source({**VALUES, "API_TOKEN": "api-token-rotated-77"})
    assert (await wb.pair()).result == "failed"
    failures = [b for b in receiver.bodies("/hook") if b["event"] == "failure"]
    assert len(failures) == 1
    notice = failures[0]
    assert (notice["sync"], notice["destination"], notice["state"]) == ("main", "mem", "failing")
    assert notice["error_class"] == "config" and notice["reminder"] is False
    assert notice["failing_keys"][0]["key"] == "API_TOKEN"
    assert "refused" in notice["failing_keys"][0]["reason"]
    (apprise,) = receiver.bodies("/apprise")
    assert "main → mem failing (config)" in apprise["title"]
    assert "API_TOKEN" in apprise["message"]

    # still failing: no repeat within the hour, a reminder after it
    await wb.pair()
    wb.clock.advance(1800)
    await wb.pair()
    assert len([b for b in receiver.bodies("/hook") if b["event"] == "failure"]) == 1
    wb.clock.advance(1900)
    await wb.pair()
    reminders = [b for b in receiver.bodies("/hook") if b["event"] == "failure"]
    assert len(reminders) == 2 and reminders[1]["reminder"] is True
    # the Apprise entry's repeat is the default 24 h: no reminder there yet
    assert len(receiver.bodies("/apprise")) == 1

    # a restart (a new process, the same state store) neither repeats nor forgets
    wb2 = bench(tmp_path, receiver, repeat="1h")
    await wb2.pair()
    assert len([b for b in receiver.bodies("/hook") if b["event"] == "failure"]) == 2

    # fixed: one recovery
    platform("notify-p").reject.clear()
    assert (await wb2.pair()).result == "ok"
    recoveries = [b for b in receiver.bodies("/hook") if b["event"] == "recovery"]
    assert len(recoveries) == 1 and recoveries[0]["state"] == "ok"
    assert [b["title"] for b in receiver.bodies("/apprise")][-1].endswith("recovered")
    await wb2.pair()
    assert len([b for b in receiver.bodies("/hook") if b["event"] == "recovery"]) == 1

    everything = b"".join(raw for _, _, raw in receiver.got).decode()
    for value in [*VALUES.values(), "api-token-rotated-77", SECRET]:
        assert value not in everything


async def test_an_unreachable_receiver_never_touches_the_sync(tmp_path: Path) -> None:
    wb = Workbench(tmp_path, {"mem": {"type": "memory", "platform": "notify-p"}}, source=VALUES)
    body = yaml.safe_load(wb.config_file.read_text())
    body["notify"] = [{"url": "https://127.0.0.1:9/hook", "secret": SECRET, "on": ["change"]}]
    wb.config_file.write_text(yaml.safe_dump(body))
    pair = await wb.pair()
    assert pair.result == "ok" and platform("notify-p").data == VALUES
    # retried on the injected clock (1 s, then 2 s), then given up: counted, logged
    assert wb.clock.sleeps[-2:] == [1.0, 2.0]


def test_notify_test_sends_to_every_entry(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    wb = bench(tmp_path, receiver)
    assert main(["-c", str(wb.config_file), "notify", "test"]) == 0
    out = capsys.readouterr().out
    assert "http: sent" in out and "json: sent" in out
    assert [b["event"] for b in receiver.bodies("/hook")] == ["test"]
    assert receiver.bodies("/apprise")[0]["title"] == "syncd: test notification"
    receiver.status = 500
    assert main(["-c", str(wb.config_file), "notify", "test"]) == 1


def test_validate_online_sends_nothing(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    wb = bench(tmp_path, receiver)
    main(["-c", str(wb.config_file), "validate", "--online"])
    assert receiver.got == []


def test_notify_config_errors_name_the_entry(tmp_path: Path) -> None:
    from syncd.config import load_config
    from syncd.errors import ConfigErrors

    wb = Workbench(tmp_path, {"mem": {"type": "memory", "platform": "notify-p"}}, source=VALUES)
    body = yaml.safe_load(wb.config_file.read_text())
    body["notify"] = [{"url": "slack://a/b/c", "secret": "x"}]
    wb.config_file.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigErrors, match=r"notify\[0\].*secret signs an https:// webhook"):
        load_config(wb.config_file, env={})
