"""
A store written by an older schema is upgraded in place when opened (issues 3 and 9).

Schema 1 had no ``cause`` and ``fingerprint`` columns, schema 2 no fork branches
and parents, schema 3 no leases (``owner``, ``lease_until``, ``fence``) and no
``commands`` table. Opening such a file runs the missing migrations in one
transaction, records the new version, and the engine then commits to it as
usual. Several processes opening one old file at once upgrade it once: the
migration reads the version again inside its ``BEGIN IMMEDIATE`` transaction.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from statemachine_orch import Ctx, Engine, InstanceStatus, SqliteStore, Workflow, WorkflowRegistry, step
from statemachine_orch._store_sqlite import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from tests.integration.test_bad_stores import at_once


class Upgraded(Workflow, name="SchemaUpgraded"):
    """One step, to prove commits work on the upgraded file."""

    n: int

    @step(initial=True, final=True)
    def only(self, ctx: Ctx) -> None:
        """Do nothing."""


OPEN_AT_ONCE = """
import sys
from statemachine_orch import SqliteStore, StoreError
print("ready", flush=True)
sys.stdin.readline()
try:
    SqliteStore(sys.argv[1]).close()
except StoreError as err:
    print(err)
    sys.exit(3)
print("OPENED")
"""
"""A process that opens the store once released (a line on its stdin): OPENED, or the StoreError (exit 3)."""


def _write_schema(path: Path, version: int) -> None:
    """A store file as the library wrote it at schema *version* (WAL mode, as it always set)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN")
        for v in range(1, version + 1):
            for statement in MIGRATIONS[v]:
                db.execute(statement)
        db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),))
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("COMMIT")


def _columns(path: Path, table: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _version(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        [(version,)] = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return str(version)


@pytest.mark.parametrize("old", [1, 2, 3])
def test_an_old_schema_file_is_migrated_when_opened(tmp_path: Path, old: int) -> None:
    """Issue 9: opening a schema-1, -2 or -3 file adds every later column and table; the engine runs on it."""
    path = tmp_path / "old.db"
    _write_schema(path, old)
    assert "fence" not in _columns(path, "instances")

    async def scenario() -> InstanceStatus:
        with SqliteStore(path) as store:
            async with Engine(store, workflows=[Upgraded]) as engine:
                handle = await engine.start(Upgraded(n=1))
                await handle.result()
                return handle.status

    assert InstanceStatus.COMPLETED == asyncio.run(scenario())
    assert {"cause", "fingerprint", "branches", "parent", "owner", "lease_until", "fence"} <= _columns(
        path, "instances"
    )
    assert "fingerprint" in _columns(path, "tasks")
    assert {"seq", "instance_id", "kind", "body", "created_at"} == _columns(path, "commands")
    assert str(SCHEMA_VERSION) == _version(path)


def test_a_schema_3_row_comes_through_unleased_and_can_be_claimed(tmp_path: Path) -> None:
    """Issue 9: a row written before leases has no owner and fence 0 after the upgrade; a worker claims and loads it."""
    path = tmp_path / "old.db"
    _write_schema(path, 3)
    spec = Upgraded.__orch_spec__
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT INTO instances (id, workflow, version, fingerprint, state, status, variables, saga, attempt, "
            "comp_attempt, visit, history_len, created_at, updated_at) "
            "VALUES ('old-1', ?, ?, ?, 'only', 'running', ?, '[]', 1, 1, 1, 0, 1.0, 1.0)",
            (spec.name, spec.version, spec.fingerprint, json.dumps({"n": 7})),
        )
    with SqliteStore(path) as store:
        store.attach(WorkflowRegistry([Upgraded]))
        with contextlib.closing(sqlite3.connect(path)) as db:
            lease = db.execute("SELECT owner, lease_until, fence FROM instances").fetchall()
        claimed = store.claim_runnable("w1", 100.0, 130.0, 10, frozenset())
        rec = store.load("old-1")
        assert rec is not None
        loaded = (rec.wf.n, rec.status, rec.fence, rec.stored)
    assert [(None, None, 0)] == lease
    assert [("old-1", 1)] == claimed
    assert (7, InstanceStatus.RUNNING, 1, True) == loaded


def test_processes_upgrading_one_old_file_at_once_upgrade_it_once(tmp_path: Path) -> None:
    """Issue 9: six processes opening one schema-1 file at once all open it; the upgrade ran once, whole."""
    path = tmp_path / "old.db"
    _write_schema(path, 1)
    results = at_once(OPEN_AT_ONCE, [[str(path)]] * 6)
    assert [(0, "OPENED\n")] * 6 == [(r.returncode, r.stdout) for r in results], [r.stderr for r in results]
    assert str(SCHEMA_VERSION) == _version(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        indexes = sorted(
            r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        )
    assert [
        "commands_instance",
        "instances_owner",
        "instances_parent",
        "instances_status",
        "instances_wake",
        "signals_instance",
        "tasks_instance",
        "tasks_open_assignee",
        "tasks_open_claimed",
    ] == indexes
