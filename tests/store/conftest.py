"""
Fixtures of the ``Store`` conformance suite (issue 9).

``stores`` runs a test once per store: a :class:`MemoryStore`, a
:class:`SqliteStore` on a real file in ``tmp_path`` and a ``PostgresStore`` on a
fresh database (``pg_store_dsn``, ``tests/pg.py``: skipped when PostgreSQL is
unreachable, failed under ``CI=true``). ``durable`` runs it on the two stores that
several processes share (a second store on the same file or database stands for
another process, or a separate reader). ``store`` is the first store ``stores``
opens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog.testing

from statemachine_orch import MemoryStore, SqliteStore, Store, WorkflowRegistry
from statemachine_orch._store_sqlite import FaultPoint
from tests.store.flows import PINNED

ALL = ["memory", "sqlite", "postgres"]
"""Every store kind."""
DURABLE = ["sqlite", "postgres"]
"""The store kinds several processes may share (``leases = True``)."""

REGISTRY = WorkflowRegistry(PINNED)


class Stores:
    """Opens stores of one kind on one test's data (the same file, the same database); closes them at the end."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind = kind
        self.location = location
        self._opened: list[Store] = []

    def open(self, fault: Callable[[FaultPoint], None] | None = None) -> Store:
        """A store on this test's data: for a MemoryStore, always the one store (it has no fault hook)."""
        made: Store
        if self.kind == "memory":
            if fault is not None:
                msg = "a MemoryStore has no fault hook"
                raise ValueError(msg)
            if self._opened:
                return self._opened[0]
            made = MemoryStore()
        elif self.kind == "sqlite":
            made = SqliteStore(self.location, fault=fault)
        else:
            from statemachine_orch._store_postgres import PostgresStore  # psycopg only when asked for

            made = PostgresStore(self.location, fault=fault)
        made.attach(REGISTRY)
        self._opened.append(made)
        return made

    def close(self) -> None:
        """Close every store opened."""
        for made in reversed(self._opened):
            made.close()


def opened_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """The stores of the kind *request* names, on this test's data (also the alert tests' fixtures)."""
    kind: str = request.param
    location = ""
    if kind == "sqlite":
        location = str(tmp_path / "orch.db")
    elif kind == "postgres":
        location = request.getfixturevalue("pg_store_dsn")
    opened = Stores(kind, location)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    # The engine logs failed commits; keep them out of the output.
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


@pytest.fixture
def store(stores: Stores) -> Store:
    """The first store on this test's data."""
    return stores.open()
