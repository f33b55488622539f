"""The connector conformance suite. Every destination's tests subclass
``DestinationConformance`` and provide a ``harness`` fixture; the suite then checks the
behaviour every user relies on, through the real engine, planner and executor:

- round trip: what the source holds ends up at the destination, exactly;
- idempotence: a second run writes nothing, even when a drift check re-reads;
- one changed key costs one write call;
- ownership: a key syncd did not create is never deleted, and on_conflict is honoured;
- deletion policy: ``delete: managed`` removes what syncd created, ``never`` keeps it;
- a throttling answer is waited out and retried, with nothing lost;
- no value ever reaches a log event or the state store.

A destination with an after-change step (``after_change_enabled``: a redeploy, a build, a
rollout restart; see :class:`syncd.connector.BaseDestination`) is checked by the core's own
tests for when it runs (after a run that wrote and failed nothing, once, debounced, kept
pending until it succeeds); its connector tests check what it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest
from structlog.testing import capture_logs

from syncd.testing.workbench import Workbench

DEST = "dest"

VALUES = {
    "ALPHA_TOKEN": "conformance-alpha-value-7d1f0c2e",
    "BETA_PASSWORD": "conformance-beta-value-91ab44f0",
    "GAMMA_URL": "https://user:conformance-gamma-9c2d@example.test/db",
}


class Harness(Protocol):
    """What a connector's test module provides for the suite.

    ``destination``: the destination's YAML body, pointing at the platform fake.
    ``stored()``: what the fake platform holds in the destination's scope, key → plaintext
    (a write-only platform's fake decrypts or keeps what it received).
    ``put_unmanaged(key, value)``: create a key out of band, as a person would.
    ``throttle(n)``: the next n calls answer with the platform's throttling response.
    """

    destination: Mapping[str, Any]
    env: Mapping[str, str]
    context_extra: Mapping[str, Any]

    def stored(self) -> dict[str, str]: ...

    def put_unmanaged(self, key: str, value: str) -> None: ...

    def throttle(self, calls: int) -> None: ...


class DestinationConformance:
    """Subclass it in a test module and define a ``harness`` fixture."""

    @pytest.fixture
    def harness(self) -> Harness:  # pragma: no cover - overridden
        raise NotImplementedError("define a harness fixture")

    def bench(
        self, harness: Harness, root: Path, *, source: Mapping[str, Any] | None = None, **sync: Any
    ) -> Workbench:
        return Workbench(
            root,
            {DEST: dict(harness.destination)},
            source=dict(VALUES if source is None else source),
            sync=sync or None,
            env=dict(getattr(harness, "env", {}) or {}),
            context_extra=dict(getattr(harness, "context_extra", {}) or {}),
        )

    async def test_round_trip(self, harness: Harness, tmp_path: Path) -> None:
        wb = self.bench(harness, tmp_path)
        pair = await wb.pair()
        assert pair.result == "ok", pair.problems or pair.error
        assert pair.counts.get("created") == len(VALUES)
        assert harness.stored() == VALUES

    async def test_second_run_writes_nothing(self, harness: Harness, tmp_path: Path) -> None:
        wb = self.bench(harness, tmp_path)
        await wb.pair()
        second = await wb.pair()
        assert second.result == "ok"
        assert second.counts.get("writes", 0) == 0
        assert second.counts.get("unchanged") == len(VALUES)
        # a drift check re-reads the destination and still writes nothing
        wb.clock.advance(wb.config().syncs[0].policy.drift_check + 1)
        third = await wb.pair()
        assert third.plan is not None and third.plan.listed
        assert third.counts.get("writes", 0) == 0, third.plan.writes
        assert harness.stored() == VALUES

    async def test_one_changed_key_is_one_write(self, harness: Harness, tmp_path: Path) -> None:
        wb = self.bench(harness, tmp_path)
        await wb.pair()
        changed = dict(VALUES, BETA_PASSWORD="conformance-beta-rotated-5e5e")
        wb.set_source(changed)
        pair = await wb.pair()
        assert pair.counts.get("updated") == 1
        assert pair.counts.get("writes") == 1
        assert harness.stored() == changed

    async def test_delete_managed_removes_only_what_syncd_created(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        harness.put_unmanaged("OUTSIDER_KEY", "conformance-outsider-3b7a")
        wb = self.bench(harness, tmp_path)
        await wb.pair()
        remaining = {k: v for k, v in VALUES.items() if k != "GAMMA_URL"}
        wb.set_source(remaining)
        pair = await wb.pair()
        assert pair.counts.get("deleted") == 1
        assert harness.stored() == {**remaining, "OUTSIDER_KEY": "conformance-outsider-3b7a"}

    async def test_delete_never_keeps_keys(self, harness: Harness, tmp_path: Path) -> None:
        wb = self.bench(harness, tmp_path, delete="never")
        await wb.pair()
        wb.set_source({k: v for k, v in VALUES.items() if k != "GAMMA_URL"})
        pair = await wb.pair()
        assert pair.counts.get("deleted", 0) == 0
        assert harness.stored() == VALUES

    async def test_on_conflict_skip_leaves_foreign_keys(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        harness.put_unmanaged("ALPHA_TOKEN", "conformance-foreign-alpha-0000")
        wb = self.bench(harness, tmp_path, on_conflict="skip")
        pair = await wb.pair()
        assert pair.result == "ok"
        assert pair.counts.get("skipped") == 1
        assert harness.stored()["ALPHA_TOKEN"] == "conformance-foreign-alpha-0000"
        assert harness.stored()["BETA_PASSWORD"] == VALUES["BETA_PASSWORD"]

    async def test_on_conflict_fail_reports_and_leaves_foreign_keys(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        harness.put_unmanaged("ALPHA_TOKEN", "conformance-foreign-alpha-0000")
        wb = self.bench(harness, tmp_path, on_conflict="fail")
        pair = await wb.pair()
        assert pair.result == "failed"
        assert [(k, kind) for k, kind, _ in pair.problems] == [("ALPHA_TOKEN", "conflict")]
        assert harness.stored()["ALPHA_TOKEN"] == "conformance-foreign-alpha-0000"
        assert harness.stored()["BETA_PASSWORD"] == VALUES["BETA_PASSWORD"]

    async def test_on_conflict_overwrite_adopts_but_never_deletes(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        harness.put_unmanaged("ALPHA_TOKEN", "conformance-foreign-alpha-0000")
        wb = self.bench(harness, tmp_path, on_conflict="overwrite")
        pair = await wb.pair()
        assert pair.counts.get("adopted") == 1
        assert harness.stored() == VALUES
        wb.set_source({k: v for k, v in VALUES.items() if k != "ALPHA_TOKEN"})
        after = await wb.pair()
        assert after.counts.get("deleted", 0) == 0
        assert "ALPHA_TOKEN" in harness.stored()

    async def test_throttling_is_retried(self, harness: Harness, tmp_path: Path) -> None:
        wb = self.bench(harness, tmp_path)
        harness.throttle(2)
        pair = await wb.pair()
        assert pair.result == "ok", pair.problems or pair.error
        assert harness.stored() == VALUES
        assert wb.clock.sleeps, "a throttled call must be waited out, not hammered"

    async def test_values_never_in_logs_or_state(self, harness: Harness, tmp_path: Path) -> None:
        source = {**VALUES, "bad key!": "conformance-blocked-value-4242"}
        wb = self.bench(harness, tmp_path, source=source)
        with capture_logs() as logs:
            harness.throttle(1)
            await wb.pair()
            wb.set_source({**source, "ALPHA_TOKEN": "conformance-alpha-rotated-1111"})
            await wb.pair(dry_run=True)
            await wb.pair()
        text = repr(logs)
        state = wb.state_bytes()
        for value in [*source.values(), "conformance-alpha-rotated-1111"]:
            assert value not in text
            assert value.encode() not in state
