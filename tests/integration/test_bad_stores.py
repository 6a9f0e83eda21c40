"""
Issue 3: a database file the store cannot use gives a clear StoreError, and nothing is half-written.

Read-only, corrupt (random bytes, or damaged pages of a real store), an SQLite
database of another application, a store written by a newer version of the
library: each refusal is a :class:`StoreError` whose ``path`` and message name the
file, and the file is left exactly as it was (the bytes of the main database file
are compared).

A file in use is no refusal since issue 9: another store of this process, or
another process, opens it too, and each sees what the other commits.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from statemachine_orch import (
    Ctx,
    InstanceStatus,
    SqliteStore,
    StoreError,
    TaskStatus,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
)
from statemachine_orch._store_sqlite import SCHEMA_VERSION
from tests.integration.helpers import open_engine

if TYPE_CHECKING:
    from tests.conftest import Runner

ROOT = Path(__file__).resolve().parents[2]

PEER = """
import json, sys
from statemachine_orch import SqliteStore
store = SqliteStore(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    verb, _, arg = line.strip().partition(" ")
    if verb == "statuses":
        print(json.dumps({i.id: i.status.value for i in store.infos(None, None)}), flush=True)
    elif verb == "wake":
        print(store.add_command(arg, "wake", {}), flush=True)
    elif verb == "commands":
        print(json.dumps([c.seq for c in store.commands(arg)]), flush=True)
store.close()
"""
"""Another process with the store open until its stdin closes, answering one request a line:
``statuses`` (every instance's status, as JSON), ``wake <id>`` (adds a wake command, prints its
seq), ``commands <id>`` (the seqs of the instance's commands, as JSON)."""


class Peer:
    """A running :data:`PEER` process."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.pid = process.pid

    def ask(self, request: str) -> str:
        """Send one request; its one-line answer."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def statuses(self) -> dict[str, str]:
        """Every instance's status, as the other process reads it."""
        answer: dict[str, str] = json.loads(self.ask("statuses"))
        return answer

    def commands(self, instance_id: str) -> list[int]:
        """The seqs of an instance's commands, as the other process reads them."""
        answer: list[int] = json.loads(self.ask(f"commands {instance_id}"))
        return answer


@contextlib.contextmanager
def peer(path: Path) -> Generator[Peer]:
    """Another process holds a store open on *path* for the block."""
    process = subprocess.Popen(
        python(PEER, str(path)), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert "ready\n" == process.stdout.readline()
        yield Peer(process)
    finally:
        process.communicate("", timeout=60)
    assert 0 == process.returncode


def at_once(code: str, argvs: Sequence[Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
    """
    Run *code* in one process per argv, all released at the same moment; their results, in order.

    Each process prints ``ready`` once started, then waits for a line on its stdin
    before it does the work under test: the line goes to all once all are ready.
    """
    processes = [
        subprocess.Popen(
            python(code, *argv),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert "ready\n" == process.stdout.readline(), process.communicate(timeout=60)
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results: list[subprocess.CompletedProcess[str]] = []
        for process, argv in zip(processes, argvs, strict=True):
            out, err = process.communicate(timeout=90)
            results.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


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


def test_a_second_store_of_this_process_shares_a_file_an_engine_uses(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a second store on a file an engine uses opens, sees each commit of the engine, and disturbs nothing."""

    async def scenario() -> tuple[Sequence[object], Sequence[object], InstanceStatus]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Ticket())
            await handle.wait_idle()
            with SqliteStore(db_path) as second:
                info = second.info(handle.instance_id)
                waiting = [info.status if info else None, [t.step for t in second.open_tasks(None, frozenset(), None)]]
                [task] = engine.tasks(user="ann", groups=["support"])
                await engine.complete_task(task.id, user="ann", groups=["support"])
                status = await engine.wait_instance(handle.instance_id)
                done = second.task(task.id)
                info = second.info(handle.instance_id)
                ended = [info.status if info else None, done.status if done else None]
            return waiting, ended, status

    waiting, ended, status = run(scenario())
    assert [InstanceStatus.WAITING, ["handle"]] == waiting
    assert [InstanceStatus.COMPLETED, TaskStatus.COMPLETED] == ended
    assert InstanceStatus.COMPLETED == status


def test_another_process_shares_a_file_this_process_uses(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 9: another process opens a file this process has open; each sees what the other writes."""
    [ticket] = make_store(db_path, clock, run, tickets=1)
    with SqliteStore(db_path) as store, peer(db_path) as other:
        seen_there = other.statuses()
        theirs = int(other.ask(f"wake {ticket}"))
        seen_here = [c.seq for c in store.commands(ticket)]
        mine = store.add_command(ticket, "wake", {})
        seen_there_after = other.commands(ticket)
    assert {ticket: "waiting"} == seen_there
    assert [theirs] == seen_here
    assert [theirs, mine] == seen_there_after


def test_a_file_another_process_holds_opens_here_and_outlives_it(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a file another process holds open opens here too, and stays usable once that process is gone."""
    tickets = make_store(db_path, clock, run, tickets=2)
    with peer(db_path) as other, SqliteStore(db_path) as store:
        here = sorted(i.id for i in store.infos(None, None))
        seq = int(other.ask(f"wake {tickets[0]}"))
        seen = [c.seq for c in store.commands(tickets[0])]
    assert sorted(tickets) == here
    assert [seq] == seen
    with SqliteStore(db_path) as store:
        assert 2 == len(store.infos(None, None))
        assert [seq] == [c.seq for c in store.commands(tickets[0])]


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
    # The failed open left nothing behind that changes the answer.
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
