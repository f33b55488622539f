from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import structlog

from syncd.logging import redactor


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever an earlier CLI call configured,
    and with a redactor that knows none of an earlier test's values."""
    yield
    structlog.reset_defaults()
    redactor.clear()


@pytest.fixture(autouse=True)
def _isolated_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test touches the user's real state folder."""
    monkeypatch.setenv("SYNCD_STATE_DIR", str(tmp_path_factory.mktemp("state")))


PG_URL = os.environ.get("SYNCD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _with_db(url: str, dbname: str) -> str:
    """``url`` (a postgresql:// URL) pointing at database ``dbname``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped after it. Without a server the
    test is skipped, except under CI=true, where it fails: CI cannot pass without them."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but PostgreSQL is unreachable at {PG_URL}: {exc}")
        pytest.skip(f"no PostgreSQL reachable at {PG_URL} (set SYNCD_TEST_POSTGRES_URL)")
    name = f"syncd_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(PG_URL, name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
