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
