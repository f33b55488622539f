from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever an earlier CLI call configured."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _isolated_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test touches the user's real state folder."""
    monkeypatch.setenv("SYNCD_STATE_DIR", str(tmp_path_factory.mktemp("state")))
