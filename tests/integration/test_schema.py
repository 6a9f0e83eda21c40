"""
A store written by an older schema is upgraded in place when opened (issue 3).

Schema 1 had no ``cause`` and ``fingerprint`` columns; opening such a file runs
migration 2 in one transaction, records the new version, and the engine then
commits to it as usual.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from statemachine_orch import Ctx, Engine, InstanceStatus, SqliteStore, Workflow, step
from statemachine_orch._store_sqlite import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION


class Upgraded(Workflow, name="SchemaUpgraded"):
    """One step, to prove commits work on the upgraded file."""

    n: int

    @step(initial=True, final=True)
    def only(self, ctx: Ctx) -> None:
        """Do nothing."""


def _write_schema_1(path: Path) -> None:
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[1]:
        db.execute(statement)
    db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.commit()
    db.close()


def _columns(path: Path, table: str) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    finally:
        db.close()


def test_a_schema_1_file_is_migrated_when_opened(tmp_path: Path) -> None:
    """Opening a schema-1 file adds the new columns, records the version, and the engine runs on it."""
    path = tmp_path / "old.db"
    _write_schema_1(path)
    assert "fingerprint" not in _columns(path, "instances")

    async def scenario() -> InstanceStatus:
        with SqliteStore(path) as store:
            async with Engine(store, workflows=[Upgraded]) as engine:
                handle = await engine.start(Upgraded(n=1))
                await handle.result()
                return handle.status

    assert InstanceStatus.COMPLETED == asyncio.run(scenario())
    assert {"cause", "fingerprint"} <= _columns(path, "instances")
    assert "fingerprint" in _columns(path, "tasks")
    db = sqlite3.connect(path)
    try:
        [(version,)] = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    finally:
        db.close()
    assert str(SCHEMA_VERSION) == version
