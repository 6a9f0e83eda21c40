"""
Issue 8: the SQLite store holds under races, faults and bad input.

Several stores and processes share one database file (issue 9), also when it is
reached by a symbolic link, and several processes may create or open it at once;
a file with a second name (a hard link) is refused, since SQLite names its WAL
after the path and two names would damage it. A file that is
empty, damaged or carries a nonsense schema version is refused with a
:class:`StoreError` naming it, never a raw exception and never silently made a
new, empty store; a damaged row read later is a StoreError too. An id that
cannot be stored (a lone surrogate) reads as "no such instance or task", and
error text that is not valid UTF-8 is stored rather than wedging the instance.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceNotFound,
    InstanceStatus,
    RecordLoadError,
    SqliteStore,
    Store,
    StoreError,
    UnknownWorkflowVersion,
    VirtualClock,
    Workflow,
    WorkflowFailed,
    step,
)
from statemachine_orch._registry import WorkflowRegistry
from statemachine_orch._store_sqlite import SCHEMA_VERSION
from tests.integration.helpers import open_engine
from tests.integration.test_bad_stores import ROOT, Ticket, at_once, digest, make_store, peer, python

if TYPE_CHECKING:
    from tests.conftest import Runner

TRY_OPEN = """
import sys
from statemachine_orch import SqliteStore, StoreError
try:
    SqliteStore(sys.argv[1]).close()
except StoreError as err:
    print(err.path)
    print(err)
    sys.exit(3)
print("OPENED")
"""
"""A process that tries to open the store: prints the StoreError it gets (exit 3), or OPENED."""

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


class Garbled(Workflow):
    """A step failing with a message that is not valid UTF-8 (a lone surrogate)."""

    @step(initial=True, final=True)
    def go(self, ctx: Ctx) -> None:
        msg = "bad \ud800 text"
        raise ValueError(msg)


PINNED: list[type[Workflow]] = [Ticket, Garbled]
"""This module's workflows, pinned in every engine: other test modules define classes of the same names."""


def refusal(path: Path, *, check: bool = False, create: bool | None = None) -> StoreError:
    """The StoreError opening *path* gives."""
    with pytest.raises(StoreError) as err:
        SqliteStore(path, check=check, create=create)
    return err.value


def open_elsewhere(path: Path) -> list[str]:
    """Another process's attempt to open *path*: its exit code, then what it printed."""
    other = subprocess.run(
        python(TRY_OPEN, str(path)), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert other.returncode in (0, 3), other.stderr
    return [str(other.returncode), *other.stdout.splitlines()]


def alias(kind: str, path: Path) -> Path:
    """A second name for the file *path*: a symbolic link or a hard link beside it."""
    other = path.with_name("current.db")
    if kind == "symlink":
        other.symlink_to(path)
    else:
        other.hardlink_to(path)
    return other


# --------------------------------------------------------------------------- one file, many users


def test_another_process_opens_a_file_in_use_by_a_symbolic_link(db_path: Path) -> None:
    """Issue 9: a store in use opens in another process that reaches it by a symbolic link."""
    SqliteStore(db_path).close()
    other_name = alias("symlink", db_path)
    with SqliteStore(db_path):
        attempt = open_elsewhere(other_name)
    assert ["0", "OPENED"] == attempt


def test_a_file_another_process_holds_by_a_symbolic_link_is_shared_here(db_path: Path) -> None:
    """Issue 9: a file another process holds through a symlink opens here by its path; each sees the other's writes."""
    SqliteStore(db_path).close()
    other_name = alias("symlink", db_path)
    with peer(other_name) as other, SqliteStore(db_path) as store:
        theirs = int(other.ask("wake some-instance"))
        mine = store.add_command("some-instance", "wake", {})
        seen_here = [c.seq for c in store.commands("some-instance")]
        seen_there = other.commands("some-instance")
    assert [theirs, mine] == seen_here == seen_there


def test_a_store_with_a_second_name_is_refused(db_path: Path) -> None:
    """Issue 9: a store file with a hard link is refused by either name: SQLite would keep two WALs for it."""
    SqliteStore(db_path).close()
    other_name = alias("hardlink", db_path)
    before = digest(db_path)
    errors = [refusal(db_path), refusal(other_name)]
    detail = (
        "it has 2 names (hard links): SQLite keeps a database's WAL beside the name it is opened by, so "
        "processes using two names would damage it; remove the other links (a symbolic link is fine)"
    )
    assert [(str(p), f"cannot use {p}: {detail}") for p in (db_path, other_name)] == [(e.path, str(e)) for e in errors]
    assert before == digest(db_path)
    other_name.unlink()
    with SqliteStore(db_path) as store:
        assert [] == store.infos(None, None)


def test_a_store_in_use_has_no_lock_file_beside_it(db_path: Path) -> None:
    """Issue 9: nothing but SQLite's own files lies beside a store in use, and another process opens it."""
    SqliteStore(db_path).close()
    with SqliteStore(db_path):
        beside = sorted(p.name for p in db_path.parent.iterdir())
        attempt = open_elsewhere(db_path)
    assert ["orch.db", "orch.db-shm", "orch.db-wal"] == beside
    assert ["0", "OPENED"] == attempt


def sqlite_locks_of_this_process(path: Path) -> list[str]:
    """The POSIX (SQLite's) locks this process holds on *path*, as /proc/locks lists them."""
    st = path.stat()
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    locks: list[str] = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "POSIX" and fields[4] == str(os.getpid()) and fields[5] == file_id:
            locks.append(" ".join(fields[1:]))
    return sorted(locks)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_a_second_store_in_this_process_by_a_symbolic_link_opens_and_closing_it_harms_nothing(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: this process's second store on a file an engine uses, by a symlink, works; closing it keeps the locks."""
    [ticket] = make_store(db_path, clock, run, tickets=1)
    other_name = alias("symlink", db_path)

    async def scenario() -> tuple[InstanceStatus | None, list[str], list[str], InstanceStatus]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            engine.history(ticket)  # a read: SQLite now holds its locks on the file
            before = sqlite_locks_of_this_process(db_path)
            with SqliteStore(other_name) as second:
                info = second.info(ticket)
            after_close = sqlite_locks_of_this_process(db_path)
            [task] = engine.tasks(user="ann", groups=["support"])
            await engine.complete_task(task.id, user="ann", groups=["support"])
            await engine.wait_instance(ticket)
            return info.status if info else None, before, after_close, engine.info(ticket).status

    seen, before, after_close, status = run(scenario())
    assert InstanceStatus.WAITING == seen
    assert before, "SQLite holds no lock on an open WAL database: this test shows nothing"
    # Closing a descriptor of the file would have dropped them: POSIX locks belong to the process.
    assert before == after_close
    assert InstanceStatus.COMPLETED == status


def test_processes_creating_one_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Issue 9: six processes creating one missing store at once all open it; none sees it empty or half made."""
    path = tmp_path / "new.db"
    results = at_once(OPEN_AT_ONCE, [[str(path)]] * 6)
    assert [(0, "OPENED\n")] * 6 == [(r.returncode, r.stdout) for r in results], [r.stderr for r in results]
    # The files the losers built beside it are gone (SQLite's -wal and -shm may stay: they are its own).
    assert ["new.db"] == sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db" or ".db.new-" in p.name)
    with contextlib.closing(sqlite3.connect(path)) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert str(SCHEMA_VERSION) == version


def test_a_failed_creation_leaves_no_file_behind(tmp_path: Path) -> None:
    """Issue 8: a store that cannot be created (read-only directory) leaves neither an empty file nor a half-made one."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("the directory is writable despite mode 0o555 (running as root)")
        err = refusal(folder / "orch.db")
        left = sorted(p.name for p in folder.iterdir())
    finally:
        folder.chmod(0o755)
    assert str(err).startswith(f"cannot use {folder / 'orch.db'}: cannot create it (is the directory read-only?)")
    assert [] == left


# --------------------------------------------------------------------------- empty, missing, nonsense


def test_a_store_truncated_to_nothing_is_refused_not_made_new(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 8: a store file truncated to 0 bytes is refused (its instances are gone), unless create=True."""
    make_store(db_path, clock, run, tickets=3)
    with db_path.open("r+b") as f:
        f.truncate(0)
    err = refusal(db_path, check=True)
    expected = (
        f"cannot use {db_path}: the file is empty (0 bytes), not a store: was it truncated? "
        "Pass create=True to make a new store in it"
    )
    assert (str(db_path), expected) == (err.path, str(err))
    assert (0, ["orch.db"]) == (db_path.stat().st_size, sorted(p.name for p in db_path.parent.iterdir()))
    assert expected == str(refusal(db_path, create=False))
    with SqliteStore(db_path, create=True) as store:
        assert [] == store.infos(None, None)
    with SqliteStore(db_path) as store:  # a store now, no longer empty
        assert [] == store.infos(None, None)


def test_an_empty_file_becomes_a_store_only_when_asked(tmp_path: Path) -> None:
    """Issue 8: an existing empty file is not taken for a new store by default; create=True makes one."""
    path = tmp_path / "empty.db"
    path.touch()
    err = refusal(path)
    assert str(err).startswith(f"cannot use {path}: the file is empty (0 bytes)"), str(err)
    with SqliteStore(path, create=True) as store:
        assert [] == store.infos(None, None)


def test_create_false_opens_only_an_existing_store(tmp_path: Path) -> None:
    """Issue 8: SqliteStore(path, create=False) refuses a missing file and creates nothing; by default one is made."""
    path = tmp_path / "typo.db"
    err = refusal(path, create=False)
    expected = f"cannot use {path}: the file does not exist (create=False opens an existing store only)"
    assert (str(path), expected) == (err.path, str(err))
    assert [] == list(tmp_path.iterdir())
    SqliteStore(path).close()
    with SqliteStore(path, create=False) as store:
        assert [] == store.infos(None, None)


def test_a_path_with_a_nul_byte_is_refused(tmp_path: Path) -> None:
    """Issue 8: a path SQLite and the OS cannot take is a StoreError naming it, not a raw ValueError."""
    path = tmp_path / "a\0b.db"
    err = refusal(path)
    assert (str(path), f"cannot use {path}: its path cannot be followed: embedded null byte") == (err.path, str(err))


def test_a_schema_version_that_is_not_a_number_is_refused(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 8: schema_version 'abc' in the meta table is a StoreError naming it, and the file is left as it was."""
    make_store(db_path, clock, run)
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'")
    before = digest(db_path)
    err = refusal(db_path)
    expected = f"cannot use {db_path}: its schema version 'abc' (table meta) is not a number: it is corrupt"
    assert (str(db_path), expected) == (err.path, str(err))
    assert before == digest(db_path)


# --------------------------------------------------------------------------- damaged contents


def every_read(store: SqliteStore) -> None:
    """Read everything the engine can ask of *store*, instance by instance and task by task."""
    infos = store.infos(None, None)
    store.infos(InstanceStatus.WAITING, "Ticket")
    store.open_tasks(None, frozenset(), None)
    store.open_tasks("ann", frozenset({"support"}), None)
    store.signalled()
    store.waiting_parents()
    store.in_flight()
    store.due(1e12, 100)
    store.next_wake(frozenset())
    for info in infos:
        store.info(info.id)
        store.children(info.id)
        store.history(info.id)
        store.signals(info.id)
        store.open_tasks(None, frozenset(), info.id)
        if info.open_task is not None:
            store.task(info.open_task)
        with contextlib.suppress(UnknownWorkflowVersion):  # a damaged name: a typed error of its own
            store.load(info.id)


def flip_bytes(path: Path, rng: random.Random, flips: int) -> None:
    """Invert *flips* random bytes of the file."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        for _ in range(flips):
            at = rng.randrange(size)
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ 0xFF]))


def test_random_byte_flips_give_a_store_error_or_a_usable_store(
    tmp_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 8: over 200 randomly damaged files, opening (check=True or not) and every read give a StoreError or work."""
    base = tmp_path / "base.db"
    make_store(base, clock, run, tickets=30)
    registry = WorkflowRegistry(PINNED)
    outcomes: dict[str, int] = {"refused": 0, "read with errors": 0, "read": 0}
    raw: dict[int, str] = {}
    for seed in range(200):
        rng = random.Random(seed)
        path = tmp_path / "flipped.db"
        shutil.copyfile(base, path)
        flip_bytes(path, rng, rng.choice((1, 4, 20, 200)))
        try:
            store = SqliteStore(path, check=seed % 4 != 0)
        except StoreError:
            outcomes["refused"] += 1
        except Exception as exc:
            raw[seed] = f"open: {type(exc).__name__}: {exc}"
        else:
            store.attach(registry)
            try:
                every_read(store)
                outcomes["read"] += 1
            except StoreError:
                outcomes["read with errors"] += 1
            except Exception as exc:
                raw[seed] = f"read: {type(exc).__name__}: {exc}"
            finally:
                store.close()
        for leftover in tmp_path.glob("flipped.db*"):
            leftover.unlink()
    assert {} == raw
    assert all(outcomes.values()), outcomes


DAMAGES: list[tuple[str, str, Callable[[SqliteStore, str], object]]] = [
    ("UPDATE instances SET variables = '{'", "load", lambda store, i: store.load(i)),
    ("UPDATE instances SET saga = '[1]'", "load", lambda store, i: store.load(i)),
    ("UPDATE instances SET status = 'bogus'", "info", lambda store, i: store.info(i)),
    ("UPDATE instances SET state = CAST(x'ff' AS TEXT)", "infos", lambda store, i: store.infos(None, None)),
    ("UPDATE history SET kind = 'bogus'", "history", lambda store, i: store.history(i)),
    ("UPDATE tasks SET groups = '['", "open_tasks", lambda store, i: store.open_tasks(None, frozenset(), i)),
]


@pytest.mark.parametrize(("damage", "method", "read"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_row_is_a_store_error_when_read(
    db_path: Path,
    clock: VirtualClock,
    run: Runner,
    damage: str,
    method: str,
    read: Callable[[SqliteStore, str], object],
) -> None:
    """Issue 8: a row whose contents cannot be decoded is a StoreError naming the file and the read, not a raw error."""
    [ticket] = make_store(db_path, clock, run, tickets=1)
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute(damage)
    with SqliteStore(db_path) as store:
        store.attach(WorkflowRegistry(PINNED))
        with pytest.raises(StoreError) as err:
            read(store, ticket)
    assert str(db_path) == err.value.path
    if method == "load":
        # An instance's own record: typed so that the engine quarantines just that instance.
        assert isinstance(err.value, RecordLoadError)
        prefix = f"instance {ticket}: cannot load a stored Ticket: a stored row is damaged ("
    else:
        prefix = f"cannot use {db_path}: reading it failed ({method}): "
    assert str(err.value).startswith(prefix), str(err.value)


def test_a_damaged_variables_row_names_what_is_wrong(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 8: a damaged row's StoreError says that the row is damaged and how."""
    [ticket] = make_store(db_path, clock, run, tickets=1)
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute("UPDATE instances SET variables = '{'")
    with SqliteStore(db_path) as store:
        store.attach(WorkflowRegistry(PINNED))
        with pytest.raises(StoreError) as err:
            store.load(ticket)
    expected = (
        f"instance {ticket}: cannot load a stored Ticket: a stored row is damaged (JSONDecodeError: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    )
    assert expected == str(err.value)


# --------------------------------------------------------------------------- text that is not UTF-8


BAD_ID = "\ud800"
"""A lone surrogate: a Python str that has no UTF-8 encoding."""


def test_an_id_that_cannot_be_stored_reads_as_missing(store: Store, clock: VirtualClock, run: Runner) -> None:
    """Issue 8: on both stores, ids, users and groups that are not valid UTF-8 match nothing; no raw error."""

    async def scenario() -> None:
        engine = Engine(store, clock=clock, workflows=PINNED)
        try:
            handle = await engine.start(Ticket())
            await handle.wait_idle()
            assert (None, None, None) == (store.info(BAD_ID), store.load(BAD_ID), store.task(BAD_ID))
            assert ([], [], []) == (store.history(BAD_ID), store.children(BAD_ID), store.signals(BAD_ID))
            assert [] == store.infos(None, BAD_ID)
            assert [] == store.open_tasks(None, frozenset(), BAD_ID)
            support = store.open_tasks("ann", frozenset({"support"}), None)
            assert 1 == len(support)
            assert support == store.open_tasks(BAD_ID, frozenset({BAD_ID, "support"}), None)
            assert [] == store.open_tasks(BAD_ID, frozenset({BAD_ID}), None)
            with pytest.raises(InstanceNotFound):
                engine.info(BAD_ID)
            with pytest.raises(InstanceNotFound):
                engine.history(BAD_ID)
            assert support == engine.tasks(user=BAD_ID, groups=[BAD_ID, "support"])
        finally:
            await engine.aclose()

    run(scenario())


def test_an_error_message_that_is_not_utf8_is_stored(store: Store, clock: VirtualClock, run: Runner) -> None:
    """Issue 8: a step failing with a message holding a lone surrogate fails the instance on both stores."""

    async def scenario() -> InstanceStatus:
        engine = Engine(store, clock=clock, workflows=PINNED)
        try:
            handle = await engine.start(Garbled())
            with pytest.raises(WorkflowFailed):
                await handle.result()
            info = store.info(handle.instance_id)
            assert info is not None
            return info.status
        finally:
            await engine.aclose()

    assert InstanceStatus.FAILED == run(scenario())


def test_an_error_message_that_is_not_utf8_is_kept_readable(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 8: SQLite keeps such a message with the surrogate written as an escape; it reads back after a restart."""

    async def scenario() -> str:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Garbled())
            with pytest.raises(WorkflowFailed):
                await handle.result()
            return handle.instance_id

    instance_id = run(scenario())
    with SqliteStore(db_path) as reopened:
        info = reopened.info(instance_id)
    assert info is not None
    assert "go: ValueError: bad \\ud800 text" == info.error
