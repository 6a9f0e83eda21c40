"""
Fixtures of the integration tests (issue 3): real SQLite files under ``tmp_path``.

``db_path`` is a fresh database path; ``store`` is the store-parity fixture, run
once with a :class:`MemoryStore` and once with a :class:`SqliteStore` on
``db_path``, so one scenario shows that both stores behave the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing

from statemachine_orch import MemoryStore, SqliteStore, Store


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    # The engine logs every failed instance and failed commit; keep them out of the output.
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database file that does not exist yet."""
    return tmp_path / "orch.db"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Store]:
    """Each store kind in turn: a MemoryStore, then a SqliteStore on a fresh file."""
    made: Store = MemoryStore() if request.param == "memory" else SqliteStore(db_path)
    try:
        yield made
    finally:
        made.close()
