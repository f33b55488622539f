"""The redaction processor: a value that reaches a log event by accident is replaced."""

from __future__ import annotations

import io
import json

from syncd.logging import REDACTED, Redactor, configure, get_logger, redactor


def test_redactor_replaces_values_everywhere_in_an_event() -> None:
    r = Redactor()
    r.add(["sup3r-secret-value", "multi\nline-secret-part", "ab"])
    event = {
        "event": "x",
        "error": "failed with sup3r-secret-value inside",
        "nested": {"list": ["line-secret-part", 1]},
        "short": "ab",
    }
    out = r(None, "info", dict(event))
    assert out["error"] == f"failed with {REDACTED} inside"
    assert out["nested"]["list"][0] == REDACTED
    assert out["short"] == "ab"  # values under 4 characters are not searched for


def test_configured_json_logs_never_show_a_known_value() -> None:
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    redactor.add(["leaky-value-0042-abcdef"])
    log = get_logger(sync="s")
    log.error("platform said", error="rejected leaky-value-0042-abcdef")
    try:
        raise ValueError("boom leaky-value-0042-abcdef")
    except ValueError:
        log.exception("crash")
    text = stream.getvalue()
    assert "leaky-value-0042-abcdef" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["error"] == f"rejected {REDACTED}" and lines[0]["sync"] == "s"
    assert "ValueError" in lines[1]["exception"]


def test_the_longest_value_at_a_position_is_replaced_whole() -> None:
    r = Redactor()
    r.add(["token-abcd", "token-abcdefghijklmnopqrstuvwxyz", "abcd-shared-16-prefix-x"])
    r.add(["abcd-shared-16-prefix-xyz", "wxyz"])
    assert r.scrub("a token-abcdefghijklmnopqrstuvwxyz b") == f"a {REDACTED} b"
    assert r.scrub("a token-abcd b") == f"a {REDACTED} b"
    assert r.scrub("x abcd-shared-16-prefix-xyz!") == f"x {REDACTED}!"
    assert r.scrub("x abcd-shared-16-prefix-x!") == f"x {REDACTED}!"
    assert r.scrub("token-abcdwxyz") == REDACTED + REDACTED
    assert r.scrub("nothing here") == "nothing here"


def test_a_value_learned_later_is_redacted_in_a_text_seen_before() -> None:
    r = Redactor()
    r.add(["first-value-0001"])
    text = "key K holds second-value-0002"
    assert r.scrub(text) == text
    r.add(["second-value-0002"])
    assert r.scrub(text) == f"key K holds {REDACTED}"


def test_a_hundred_thousand_known_values_cost_little_per_line() -> None:
    """A daemon with 100 syncs of 1,000 secrets knows 100,000 values; a log line per key must
    not scan all of them (a cycle of 100,000 lines took minutes when it did)."""
    import hashlib
    import time

    r = Redactor()
    values = [f"v1-{hashlib.sha256(str(i).encode()).hexdigest()[:32]}" for i in range(100_000)]
    for start in range(0, len(values), 1000):
        r.add(values[start : start + 1000])
    t0 = time.process_time()
    for i in range(20_000):
        event = {"event": "change", "key": f"SECRET_{i:05d}", "reason": "new key", "sync": "s"}
        assert r(None, "info", event)["key"] == f"SECRET_{i:05d}"
    assert time.process_time() - t0 < 5.0  # about 0.3 s here; the old scan took minutes
    assert r.scrub(f"oops {values[77_777]}.") == f"oops {REDACTED}."
