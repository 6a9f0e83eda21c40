"""
Issue 3: a database file the store cannot use gives a clear StoreError, and nothing is half-written.

Locked by another engine (in this process or another one), read-only, corrupt
(random bytes, or damaged pages of a real store), an SQLite database of another
application, a store written by a newer version of the library: each refusal is a
:class:`StoreError` whose ``path`` and message name the file, and the file is left
exactly as it was (the bytes of the main database file are compared).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from statemachine_orch import Ctx, SqliteStore, StoreError, VirtualClock, Workflow, after, human_task, step
from statemachine_orch._store_sqlite import SCHEMA_VERSION
from tests.integration.helpers import open_engine

if TYPE_CHECKING:
    from tests.conftest import Runner

ROOT = Path(__file__).resolve().parents[2]

HOLD = """
import sys
from statemachine_orch import SqliteStore
store = SqliteStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
store.close()
"""
"""A process that holds the store open until its stdin closes."""

TRY_OPEN = """
import sys
from statemachine_orch import SqliteStore, StoreError
try:
    SqliteStore(sys.argv[1])
except StoreError as err:
    print(err.path)
    print(err)
    sys.exit(3)
"""
"""A process that tries to open the store and prints the StoreError it gets."""


class Ticket(Workflow):
    """Open a ticket, then wait for support."""

    @step(initial=True)
    def open_ticket(self, ctx: Ctx) -> None: ...

    @after(open_ticket)
    @human_task(candidate_groups=("support",), final=True)
    def handle(self, ctx: Ctx) -> None: ...


def digest(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_store(path: Path, clock: VirtualClock, run: Runner, tickets: int = 3) -> list[str]:
    """A real store with *tickets* instances waiting on their task, closed cleanly (WAL checkpointed)."""

    async def scenario() -> list[str]:
        async with open_engine(path, clock, workflows=PINNED) as engine:
            ids: list[str] = []
            for _ in range(tickets):
                handle = await engine.start(Ticket())
                await handle.wait_idle()
                ids.append(handle.instance_id)
            return ids

    return run(scenario())


def refusal(path: Path, *, check: bool = False) -> StoreError:
    """The StoreError opening *path* gives."""
    with pytest.raises(StoreError) as err:
        SqliteStore(path, check=check)
    return err.value


def python(code: str, *args: str) -> list[str]:
    """The command running *code* with this interpreter, from the repository root."""
    return [sys.executable, "-c", code, *args]


def test_a_file_used_by_another_engine_of_this_process_is_refused(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: a second store on a file in use is refused; the first engine carries on undisturbed."""

    async def scenario() -> tuple[StoreError, int, int]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Ticket())
            await handle.wait_idle()
            err = refusal(db_path)
            [task] = engine.tasks(user="ann", groups=["support"])
            await engine.complete_task(task.id, user="ann", groups=["support"])
            await handle.result()
            return err, len(engine.instances()), len(engine.tasks())

    err, instances, open_tasks = run(scenario())
    assert str(db_path) == err.path
    expected = (
        f"cannot use {db_path}: it is used by another engine process (pid {os.getpid()}); one engine per SQLite file"
    )
    assert expected == str(err)
    assert (1, 0) == (instances, open_tasks)


def test_a_file_used_by_this_process_is_refused_to_another_process(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: another process opening a file this engine uses gets a StoreError naming the file and this pid."""
    [ticket] = make_store(db_path, clock, run, tickets=1)
    with SqliteStore(db_path) as store:
        before = store.info(ticket)
        other = subprocess.run(
            python(TRY_OPEN, str(db_path)), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        after_refusal = store.info(ticket)
    assert 3 == other.returncode, other.stderr
    expected = (
        f"cannot use {db_path}: it is used by another engine process (pid {os.getpid()}); one engine per SQLite file"
    )
    assert [str(db_path), expected] == other.stdout.splitlines()
    assert before == after_refusal


def test_a_file_used_by_another_process_is_refused_until_it_lets_go(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: a file another process holds is refused naming that process; once it exits the file opens."""
    make_store(db_path, clock, run, tickets=2)
    holder = subprocess.Popen(
        python(HOLD, str(db_path)), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert "ready\n" == holder.stdout.readline()
        err = refusal(db_path)
    finally:
        holder.communicate("", timeout=60)
    assert str(db_path) == err.path
    expected = (
        f"cannot use {db_path}: it is used by another engine process (pid {holder.pid}); one engine per SQLite file"
    )
    assert expected == str(err)
    with SqliteStore(db_path) as store:
        assert 2 == len(store.infos(None, None))


def test_a_read_only_file_is_refused(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: a database file without write permission is a StoreError saying so, and stays untouched."""
    make_store(db_path, clock, run)
    db_path.chmod(0o444)
    if os.access(db_path, os.W_OK):
        # Root bypasses permission bits: for this process the file is not read-only at all.
        pytest.skip("the file is writable despite mode 0o444 (running as root); run as a normal user to cover this")
    before = digest(db_path)
    err = refusal(db_path)
    assert (str(db_path), f"cannot use {db_path}: the file is read-only") == (err.path, str(err))
    assert before == digest(db_path)


def test_a_file_of_random_bytes_is_refused(db_path: Path) -> None:
    """Issue 3: random bytes are not a store: StoreError naming the file; the file is untouched, the lock released."""
    db_path.write_bytes(random.Random(3).randbytes(8192))
    before = digest(db_path)
    err = refusal(db_path)
    expected = f"cannot use {db_path}: it is not a statemachine-orch database or it is corrupt: file is not a database"
    assert (str(db_path), expected) == (err.path, str(err))
    assert before == digest(db_path)
    # The failed open released its lock: trying again gives the same answer, not "used by another engine".
    assert expected == str(refusal(db_path))


def damage_history_table(path: Path) -> None:
    """Overwrite the root page of the store's history table with random bytes."""
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'history'").fetchone()[0]
    db.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(random.Random(4).randbytes(page_size))


def test_a_store_with_damaged_pages_is_refused_when_checked(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: SqliteStore(check=True) finds a damaged page at once: StoreError naming the file."""
    make_store(db_path, clock, run, tickets=20)
    damage_history_table(db_path)
    before = digest(db_path)
    err = refusal(db_path, check=True)
    assert str(db_path) == err.path
    assert str(err).startswith(f"cannot use {db_path}: "), str(err)
    assert "corrupt" in str(err)
    assert before == digest(db_path)


def test_reading_a_damaged_page_is_a_store_error(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: without check=, reading a damaged page later is still a clear StoreError naming the file."""
    [ticket, *_] = make_store(db_path, clock, run, tickets=20)
    damage_history_table(db_path)

    async def scenario() -> StoreError:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            with pytest.raises(StoreError) as err:
                engine.history(ticket)
            return err.value

    err = run(scenario())
    assert str(db_path) == err.path
    assert f"cannot use {db_path}: reading it failed (history): database disk image is malformed" == str(err)


def test_an_sqlite_database_of_another_application_is_refused(db_path: Path) -> None:
    """Issue 3: an SQLite file with someone else's tables is not taken over: StoreError, and no table is added."""
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO customers (name) VALUES ('Ada')")
    db.close()
    before = digest(db_path)
    err = refusal(db_path)
    expected = f"cannot use {db_path}: it is an SQLite database of another application (not a statemachine-orch store)"
    assert (str(db_path), expected) == (err.path, str(err))
    assert before == digest(db_path)
    with sqlite3.connect(db_path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master ORDER BY name")]
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    assert (["customers"], "delete") == (tables, journal)


def test_a_store_from_a_newer_schema_is_refused(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: a store whose schema_version is newer than the library's asks for an upgrade and is not touched."""
    make_store(db_path, clock, run)
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    before = digest(db_path)
    err = refusal(db_path)
    expected = (
        f"cannot use {db_path}: its schema version is 99, newer than this library's {SCHEMA_VERSION}; "
        "upgrade statemachine-orch to use it"
    )
    assert (str(db_path), expected) == (err.path, str(err))
    assert before == digest(db_path)
    with sqlite3.connect(db_path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        instances = db.execute("SELECT count(*) FROM instances").fetchone()[0]
    db.close()
    assert ("99", 3) == (version, instances)


def test_a_store_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    """Issue 3: a path whose directory does not exist is a StoreError naming it, not a raw OSError."""
    path = tmp_path / "no-such-dir" / "orch.db"
    err = refusal(path)
    assert str(path) == err.path
    assert str(err).startswith(f"cannot use {path}: its directory does not exist"), str(err)
    assert not path.parent.exists()


PINNED: list[type[Workflow]] = [Ticket]
"""This module's workflows, pinned in every engine: other test modules define classes of the same names."""
