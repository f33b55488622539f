from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test touches the user's real state folder."""
    monkeypatch.setenv("SYNCD_STATE_DIR", str(tmp_path_factory.mktemp("state")))
