"""
Fixtures of the alert tests (issue 12): the stores an engine writes and a reader scans.

``stores`` runs a test once per store kind: a :class:`MemoryStore` (the reader
is the engine's own store), a :class:`SqliteStore` on a file in ``tmp_path`` and a
``PostgresStore`` on a fresh database (``pg_store_dsn``, ``tests/pg.py``: skipped
when PostgreSQL is unreachable, failed under ``CI=true``). On the durable kinds
each ``open()`` is a store of its own on the same data, standing for another
process: the command line that scans while workers run. ``durable`` runs it on
those two only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing

from tests.store.conftest import ALL, DURABLE, Stores, opened_stores


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    # The engine logs failed steps and compensations; keep them out of the output.
    with structlog.testing.capture_logs():
        yield


@pytest.fixture(params=ALL)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """Each store kind in turn: memory, SQLite on a file, PostgreSQL on a fresh database."""
    yield from opened_stores(request, tmp_path)


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """The store kinds several processes share: SQLite on a file, PostgreSQL on a fresh database."""
    yield from opened_stores(request, tmp_path)
