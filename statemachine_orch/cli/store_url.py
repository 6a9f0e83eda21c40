"""
Store URLs, and opening the store one names.

``sqlite:///orders.db`` (a path relative to the working directory),
``sqlite:////var/lib/orch/orders.db`` (absolute), ``postgresql://user@host/db``
(``postgres://`` too; ``?schema=name`` picks the schema). The default comes from
the environment variable ``ORCH_STORE``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from statemachine_orch import SqliteStore, Store

from .failures import UsageProblem

ENV: Final = "ORCH_STORE"
"""The environment variable holding the default store URL."""

_SQLITE: Final = "sqlite:///"
_POSTGRES: Final = ("postgresql://", "postgres://")


def resolve(url: str | None) -> str:
    """The store URL to use: *url*, else ``$ORCH_STORE``; a usage problem when neither is set."""
    chosen = url or os.environ.get(ENV)
    if not chosen:
        msg = f"no store: give --store URL (sqlite:///orders.db, postgresql://...) or set {ENV}"
        raise UsageProblem(msg)
    return chosen


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (``None`` for another kind)."""
    if not url.startswith(_SQLITE):
        return None
    path = url.removeprefix(_SQLITE)
    if not path:
        msg = f"store URL {url!r} names no file: sqlite:///orders.db (relative) or sqlite:////abs/orders.db"
        raise UsageProblem(msg)
    return Path(path)


def postgres_parts(url: str) -> tuple[str, str] | None:
    """The connection string and schema of a PostgreSQL URL (``None`` for another kind)."""
    if not url.startswith(_POSTGRES):
        return None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "public") or "public"
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def open_store(url: str | None, *, create: bool = False) -> Store:
    """
    Open the store *url* names (default ``$ORCH_STORE``).

    Args:
        url: A store URL, or ``None`` for ``$ORCH_STORE``.
        create: Whether a missing SQLite file may be created (workers and ``run``
            may; a read of a file that is not there is an error, not a new store).

    Raises:
        UsageProblem: No URL, or one of an unknown kind.
        StoreError: The store cannot be opened.
    """
    chosen = resolve(url)
    path = sqlite_path(chosen)
    if path is not None:
        return SqliteStore(path, create=None if create else False)
    pg = postgres_parts(chosen)
    if pg is not None:
        from statemachine_orch import PostgresStore  # noqa: PLC0415 - psycopg is optional: loaded when asked for

        dsn, schema = pg
        return PostgresStore(dsn, schema=schema)
    msg = f"store URL {chosen!r} is neither sqlite:///PATH nor postgresql://..."
    raise UsageProblem(msg)
