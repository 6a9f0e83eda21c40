"""
PostgreSQL for the tests (issue 9): a database per test session, a fresh one per test.

``pg_dsn`` (session) connects to the server named by ``ORCH_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), creates a database
``orch_test_<random>`` and drops it at the end (``WITH (FORCE)``: a connection a
failed test left open does not keep it). ``pg_store_dsn`` (per test) is a fresh
database of its own beside it, so no test sees another's rows or notifications.

When the server cannot be reached the tests that use these fixtures are skipped,
saying why; on CI (``CI=true``) they fail instead, so a missing server is never
mistaken for a green run. psycopg is imported only here, inside the fixtures: the
rest of the suite runs without it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The server the tests use unless ``ORCH_TEST_PG`` names another (a database there to connect to first)."""


def server_dsn() -> str:
    """The connection string of the server's maintenance database (``ORCH_TEST_PG``, or the default)."""
    return os.environ.get("ORCH_TEST_PG") or DEFAULT_SERVER


def _unavailable(why: str) -> None:
    msg = f"PostgreSQL is not available for the tests ({why}); set ORCH_TEST_PG to a server's connection string"
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def _admin() -> psycopg.Connection[Any]:
    """An autocommit connection to the server's maintenance database (skips or fails when unreachable)."""
    try:
        import psycopg
    except ImportError as exc:
        _unavailable(f"psycopg is not installed: {exc}")
        raise  # not reached: _unavailable raises
    try:
        return psycopg.connect(server_dsn(), autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        _unavailable(f"cannot connect to {_shown(server_dsn())}: {str(exc).strip()}")
        raise  # not reached


def _shown(dsn: str) -> str:
    """*dsn* without its password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<ORCH_TEST_PG>"
    params.pop("password", None)
    return make_conninfo("", **params)


def database_dsn(name: str) -> str:
    """The server's connection string with the database *name* instead."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(server_dsn(), dbname=name)


def create_database(admin: psycopg.Connection[Any], name: str) -> str:
    """Create the database *name* (a fresh, empty one); return its connection string."""
    from psycopg import sql

    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_dsn(name)


def drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop the database *name*, closing whatever connections a test left open on it."""
    from psycopg import sql

    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A database of this test session's own (``orch_test_<random>``), dropped at the end."""
    admin = _admin()
    name = f"orch_test_{secrets.token_hex(6)}"
    try:
        dsn = create_database(admin, name)
        try:
            yield dsn
        finally:
            drop_database(admin, name)
    finally:
        admin.close()


_made = iter(range(1, 1_000_000))


@pytest.fixture
def pg_store_dsn(pg_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test (``<session database>_<n>``), dropped after it."""
    from psycopg.conninfo import conninfo_to_dict

    admin = _admin()
    name = f"{conninfo_to_dict(pg_dsn)['dbname']}_{next(_made)}"
    try:
        dsn = create_database(admin, name)
        try:
            yield dsn
        finally:
            drop_database(admin, name)
    finally:
        admin.close()
