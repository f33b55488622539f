"""The executor: crash safety, retries and their delays, failure isolation, no leaks."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syncd.testing import Workbench, memory
from syncd.testing.memory import Crash, platform

VALUES = {f"KEY_{i:02d}": f"value-{i:02d}-0f9c7e1d2b" for i in range(10)}


@pytest.fixture(autouse=True)
def _memory_connector(request: pytest.FixtureRequest) -> Iterator[None]:
    memory.install()
    memory.PLATFORMS.clear()
    yield
    memory.PLATFORMS.clear()


def bench(
    tmp_path: Path,
    source: dict[str, str] | None = None,
    *,
    write_only: bool = False,
    extra: dict[str, dict[str, object]] | None = None,
    **sync: object,
) -> Workbench:
    dests: dict[str, dict[str, object]] = {
        "mem": {"type": "memory", "platform": "p1", "write_only": write_only}
    }
    dests.update(extra or {})
    return Workbench(tmp_path, dests, source=source or VALUES, sync=sync or None)


async def test_crash_midway_then_next_run_writes_only_the_rest(tmp_path: Path) -> None:
    wb = bench(tmp_path)
    p = platform("p1")
    p.crash_after = 4
    with pytest.raises(Crash):
        await wb.once()
    assert p.writes == 4
    assert len(wb.records("mem")) == 4  # every landed write was recorded as it happened
    p.crash_after = None
    pair = await wb.pair()
    assert pair.result == "ok"
    assert p.writes == 10  # 6 more: nothing re-written
    assert pair.counts["created"] == 6
    assert p.data == VALUES


async def test_throttling_waits_what_the_server_asks(tmp_path: Path) -> None:
    wb = bench(tmp_path)
    p = platform("p1")
    p.throttle_next, p.retry_after = 3, 7.5
    pair = await wb.pair()
    assert pair.result == "ok" and p.data == VALUES
    assert wb.clock.sleeps[:3] == [7.5, 7.5, 7.5]
    assert wb.hooks.retries["mem"] == 3


async def test_backoff_grows_without_a_server_delay_and_gives_up(tmp_path: Path) -> None:
    wb = bench(tmp_path, {"ONLY": "only-value-88c1f0"})
    p = platform("p1")
    p.retry_after = None
    # the first listing is throttled too: let it through, then throttle every write
    pair = await wb.pair(dry_run=True)
    assert pair.result == "ok"
    p.throttle_next = 100
    pair = await wb.pair()
    assert pair.result in ("failed", "error")
    sleeps = wb.clock.sleeps
    assert sleeps == sorted(sleeps) and sleeps[-1] > sleeps[0]
    assert max(sleeps) <= wb.retry.max_delay
    assert "ONLY" not in p.data


async def test_server_delay_longer_than_allowed_fails_instead_of_stalling(tmp_path: Path) -> None:
    wb = bench(tmp_path, {"ONLY": "only-value-88c1f0"})
    p = platform("p1")
    p.throttle_next, p.retry_after = 1, 3600.0
    pair = await wb.pair()  # the listing is refused for an hour: the pair fails now
    assert pair.result == "error"
    assert "asked to wait 3600s" in (pair.error or "")
    assert (await wb.pair()).result == "ok"
    # between drift checks a changed value is written without a listing: refuse that write
    wb.set_source({"ONLY": "only-value-rotated-99"})
    p.throttle_next = 1
    pair = await wb.pair()
    assert pair.result == "failed"
    [(key, _, msg)] = pair.problems
    assert key == "ONLY" and "asked to wait 3600s" in msg
    assert wb.clock.sleeps == []
    assert p.data["ONLY"] == "only-value-88c1f0"


async def test_a_rejected_key_fails_alone(tmp_path: Path) -> None:
    wb = bench(tmp_path)
    platform("p1").reject = {"KEY_03"}
    pair = await wb.pair()
    assert pair.result == "failed"
    assert [(k, kind) for k, kind, _ in pair.problems] == [("KEY_03", "failed")]
    assert set(platform("p1").data) == set(VALUES) - {"KEY_03"}


async def test_one_destination_failing_never_holds_up_another(tmp_path: Path) -> None:
    wb = bench(tmp_path, extra={"mem2": {"type": "memory", "platform": "p2"}})
    platform("p1").auth_broken = True
    results = await wb.once()
    pairs = {p.destination: p for p in results[0].pairs}
    assert pairs["mem"].result == "error" and "401" in (pairs["mem"].error or "")
    assert pairs["mem2"].result == "ok" and platform("p2").data == VALUES


async def test_auth_error_on_write_fails_every_key_of_the_pair_once(tmp_path: Path) -> None:
    wb = bench(tmp_path)
    await wb.pair(dry_run=True)  # let the listing through
    wb.set_source({**VALUES, "KEY_00": "changed-value-1"})
    await wb.pair()
    p = platform("p1")
    p.auth_broken = True
    wb.set_source({k: v + "-rotated" for k, v in VALUES.items()})
    calls_before = sum(wb.hooks.calls.values())
    pair = await wb.pair()
    assert pair.result == "failed"
    assert len(pair.problems) == 10 and all("authentication" in m for _, _, m in pair.problems)
    assert sum(wb.hooks.calls.values()) - calls_before <= 2  # not one call per key


async def test_no_value_in_logs_state_or_errors_through_a_failing_run(tmp_path: Path) -> None:
    source = {**VALUES, "bad-name": "blocked-value-5a5a5a5a", "HUGE": "h" * 5000}
    wb = bench(tmp_path, source)
    p = platform("p1")
    p.reject = {"KEY_01"}
    with capture_logs() as logs:
        p.throttle_next = 2
        results = await wb.once()
        wb.set_source({**source, "KEY_02": "rotated-value-c0ffee00"})
        await wb.once(dry_run=True)
        await wb.once()
        p.auth_broken = True
        wb.set_source({**source, "KEY_02": "rotated-again-value-77"})
        failed = await wb.once()
    problems = results[0].pairs[0].problems + failed[0].pairs[0].problems
    assert any("5000 bytes, over the 4096-byte limit" in m for _, _, m in problems)
    text = repr(logs) + repr(problems) + repr(results) + repr(failed)
    state = wb.state_bytes()
    for value in [*source.values(), "rotated-value-c0ffee00", "rotated-again-value-77"]:
        assert value not in text
        assert value.encode() not in state
    events = [e for e in logs if e.get("event") == "change"]
    assert events and all(
        {"sync", "destination", "key", "action", "outcome", "attempt"} <= set(e) for e in events
    )


async def test_write_only_destination_is_written_only_when_the_value_changed(
    tmp_path: Path,
) -> None:
    wb = bench(tmp_path, write_only=True)
    await wb.pair()
    p = platform("p1")
    assert p.writes == 10
    await wb.pair()
    wb.clock.advance(7200)  # a drift check is due: the listing shows no values
    pair = await wb.pair()
    assert pair.plan is not None and pair.plan.listed
    assert p.writes == 10
    # someone edits a secret out of band: its version moves, syncd restores it
    p.put("KEY_05", "edited-by-hand")
    wb.clock.advance(7200)
    pair = await wb.pair()
    assert pair.counts.get("drift") == 1 and p.data["KEY_05"] == VALUES["KEY_05"]
    assert p.writes == 11


async def test_fingerprint_key_file_is_private(tmp_path: Path) -> None:
    wb = bench(tmp_path)
    await wb.pair()
    mode = stat.S_IMODE(os.stat(tmp_path / "fingerprint.key").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state.db").st_mode) == 0o600


async def test_a_throttled_page_is_retried_alone_not_the_whole_listing(tmp_path: Path) -> None:
    wb = Workbench(
        tmp_path,
        {"mem": {"type": "memory", "platform": "p1", "page_size": 3, "concurrency": 1}},
        source=VALUES,
    )
    await wb.pair()  # 10 keys created
    p = platform("p1")
    p.throttle_page, p.retry_after = 2, 4.0
    wb.clock.advance(7200)  # a drift check lists 4 pages
    wb.hooks.calls.clear()
    pair = await wb.pair()
    assert pair.result == "ok" and pair.plan is not None and pair.plan.listed
    assert wb.hooks.calls[("mem", "list", "ok")] == 5  # 4 pages + the one retried page
    assert wb.clock.sleeps[-1] == 4.0
    assert pair.counts.get("writes", 0) == 0
