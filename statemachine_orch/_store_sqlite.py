"""
``SqliteStore``: the embedded, durable default store.

One SQLite file in WAL mode. Each ``commit`` is one ``BEGIN IMMEDIATE`` …
``COMMIT`` transaction holding every change of every record passed to it: the
instance row (machine state, status, variables as JSON through cattrs, saga,
counters, timer), its new history rows, its changed tasks, the signals and
commands it consumed, and the commands it sends to other instances. The engine
batches the commits of concurrent instances into one call (group commit), so one
fsync covers many transitions.

Several processes, and several stores in one process, may use one file at once
(``docs/design/leases.md``): a worker drives an instance only while it holds
its lease (``owner``, ``lease_until``), and every commit is fenced (``fence``),
so a worker that lost its lease writes nothing. Writers take turns on SQLite's
one write lock: a writer waits for it (``busy_timeout``, then a few seconds of
retried ``BEGIN IMMEDIATE``) rather than fail. Opening is safe when several
processes open, create or upgrade one file at once: a new store is built beside
the path and hard-linked into place, so nobody ever sees it half made, and an
upgrade runs in one ``BEGIN IMMEDIATE`` transaction that reads the schema
version again.

One host only: WAL mode keeps its index in shared memory (the ``-shm`` file,
mapped by every process using the database), so every process must run on the
machine that holds the file, and a network file system (NFS, SMB, ...) is not
supported. Workers on several hosts need a database server (PostgreSQL).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, Self, TypeVar

from . import _store_rows
from ._errors import (
    InstanceExists,
    LeaseLost,
    OrchError,
    RecordLoadError,
    StoreError,
    TaskAlreadyCompleted,
    TaskClaimed,
    TaskError,
)
from ._history import HistoryEvent
from ._instance import Command, InstanceInfo, InstanceRecord, Signal
from ._registry import WorkflowRegistry, default_registry
from ._serialize import unstructure
from ._status import InstanceStatus
from ._store import LateTask, ScheduleState
from ._store_rows import ROW_COLUMNS as _ROW_COLUMNS
from ._store_rows import dumps as _dumps
from ._store_rows import encodable as _encodable
from ._tasks import Task, TaskClaim, TaskReassignment, TaskStatus

if TYPE_CHECKING:
    from ._spec import WorkflowSpec

SCHEMA_VERSION = 7
APPLICATION_ID = 0x534D4F52  # "SMOR": marks a file as ours

# The schema, as the list of statements that upgrade a file from one version to
# the next; a file at version N runs N+1.. in one transaction when opened.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            workflow TEXT NOT NULL,
            version TEXT NOT NULL,
            state TEXT NOT NULL,
            status TEXT NOT NULL,
            variables TEXT NOT NULL,
            payload TEXT,
            saga TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            comp_attempt INTEGER NOT NULL,
            visit INTEGER NOT NULL,
            task_id TEXT,
            error TEXT,
            cancel TEXT,
            wake_at REAL,
            history_len INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX instances_wake ON instances(wake_at) WHERE wake_at IS NOT NULL",
        "CREATE INDEX instances_status ON instances(status)",
        """CREATE TABLE history (
            instance_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            step TEXT,
            attempt INTEGER NOT NULL,
            detail TEXT,
            PRIMARY KEY (instance_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            instance_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            version TEXT NOT NULL,
            step TEXT NOT NULL,
            assignee TEXT,
            groups TEXT NOT NULL,
            created_at REAL NOT NULL,
            due_at REAL,
            status TEXT NOT NULL,
            completed_by TEXT,
            completed_at REAL,
            form TEXT
        )""",
        "CREATE INDEX tasks_open_assignee ON tasks(assignee) WHERE status = 'open'",
        "CREATE INDEX tasks_instance ON tasks(instance_id)",
        "CREATE TABLE task_groups (grp TEXT NOT NULL, task_id TEXT NOT NULL, PRIMARY KEY (grp, task_id)) WITHOUT ROWID",
        """CREATE TABLE signals (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            instance_id TEXT NOT NULL,
            type TEXT NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX signals_instance ON signals(instance_id, seq)",
    ],
    2: [
        # The first cause of a failure, kept apart from later compensation errors.
        "ALTER TABLE instances ADD COLUMN cause TEXT",
        # The shape of the definition an instance started on (WorkflowSpec.fingerprint).
        "ALTER TABLE instances ADD COLUMN fingerprint TEXT",
        "ALTER TABLE tasks ADD COLUMN fingerprint TEXT",
    ],
    3: [
        # Inside a fork: each branch's current step visit (attempt, visit, task, timer, payload).
        "ALTER TABLE instances ADD COLUMN branches TEXT",
        # The instance whose subflow step started this one.
        "ALTER TABLE instances ADD COLUMN parent TEXT",
        "CREATE INDEX instances_parent ON instances(parent) WHERE parent IS NOT NULL",
    ],
    4: [
        # Leases (docs/design/leases.md): who drives the instance, until when, and
        # the fence every commit of that driver must match.
        "ALTER TABLE instances ADD COLUMN owner TEXT",
        "ALTER TABLE instances ADD COLUMN lease_until REAL",
        "ALTER TABLE instances ADD COLUMN fence INTEGER NOT NULL DEFAULT 0",
        # owners(), expire() and commanded() find an owner's leases; the claimable
        # instances are found through instances_status (in flight), instances_wake
        # (timer due) and commands_instance (commands waiting).
        "CREATE INDEX instances_owner ON instances(owner) WHERE owner IS NOT NULL",
        # Commands: callers write them, an instance's driver applies and deletes them.
        """CREATE TABLE commands (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            instance_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX commands_instance ON commands(instance_id, seq)",
    ],
    5: [
        # Schedules (Engine(schedules=...)): how far each one's due times were dealt with.
        """CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            cursor REAL NOT NULL,
            last_instance TEXT,
            started INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
    ],
    6: [
        # Who claimed an open task (Engine.claim_task): only they may complete it then.
        # Written only with a claim's command, never by a commit of the task's row.
        "ALTER TABLE tasks ADD COLUMN claimed_by TEXT",
        "CREATE INDEX tasks_open_claimed ON tasks(claimed_by) WHERE status = 'open' AND claimed_by IS NOT NULL",
    ],
    7: [
        # Why an instance did not complete, as JSON: its outcome (a failure end's, or
        # failed, cancelled), the step, and the failed step's exception.
        "ALTER TABLE instances ADD COLUMN failure TEXT",
    ],
}

_UPDATE = f"UPDATE instances SET {', '.join(f'{c} = ?' for c in _ROW_COLUMNS)} WHERE id = ?"
"""An existing row (its owner, lease and fence untouched)."""

_UPDATE_FENCED = f"{_UPDATE} AND fence = ?"
"""An existing row, only while its fence is the committing worker's."""

_NEW_COLUMNS = (*_ROW_COLUMNS, "id", "created_at", "parent", "owner", "lease_until", "fence")
_INSERT = f"INSERT INTO instances ({', '.join(_NEW_COLUMNS)}) VALUES ({', '.join('?' * len(_NEW_COLUMNS))})"
"""A new row (never an upsert: an id that exists is InstanceExists)."""

_INSERT_HISTORY = "INSERT INTO history (instance_id, seq, at, kind, step, attempt, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"

_INSERT_COMMAND = "INSERT INTO commands (instance_id, kind, body, created_at) VALUES (?, ?, ?, ?)"

_INSERT_SIGNAL = "INSERT INTO signals (instance_id, type, payload) VALUES (?, ?, ?)"

_UPSERT_TASK = """
INSERT INTO tasks (id, instance_id, workflow, version, fingerprint, step, assignee, groups, created_at, due_at,
    status, completed_by, completed_at, form)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET instance_id = excluded.instance_id, workflow = excluded.workflow,
    version = excluded.version, fingerprint = excluded.fingerprint, step = excluded.step,
    assignee = excluded.assignee, groups = excluded.groups, created_at = excluded.created_at,
    due_at = excluded.due_at, status = excluded.status, completed_by = excluded.completed_by,
    completed_at = excluded.completed_at, form = excluded.form
"""
"""A task's row as its instance's commit writes it: everything but its claimant (only a claim's command sets that)."""

_IDS_IN = "id IN (SELECT value FROM json_each(?))"
"""SQL: the id is one of a JSON array of ids (one parameter, however many ids)."""

_LIVE = "status NOT IN ('completed', 'failed', 'cancelled', 'compensation_failed')"
"""SQL: the instance is not terminal."""

_ANSWERS = "status NOT IN ('completed', 'failed', 'cancelled')"
"""SQL: the instance can still act on a command: live, or ``compensation_failed`` (a retry of its compensations)."""

_FREE = "(owner IS NULL OR lease_until IS NULL OR lease_until < :now)"
"""SQL: nobody holds the instance's lease at ``:now`` (free, released or expired)."""

_RUNNABLE = f"""
SELECT id, fence FROM (
    SELECT id, fence, 1 AS first, NULL AS wake FROM instances
        WHERE status IN ('running', 'compensating') AND wake_at IS NULL AND {_FREE}
    UNION ALL
    SELECT id, fence, 1, NULL FROM instances
        WHERE status IN ('running', 'compensating') AND wake_at IS NOT NULL AND state LIKE '[%'
        AND owner IS NOT NULL AND lease_until < :now
    UNION ALL
    SELECT id, fence, 0, wake_at FROM instances WHERE wake_at <= :now AND {_LIVE} AND {_FREE}
    UNION ALL
    SELECT id, fence, 1, NULL FROM instances
        WHERE id IN (SELECT instance_id FROM commands) AND {_ANSWERS} AND {_FREE}
){{exclude}}
GROUP BY id
ORDER BY CASE WHEN max(first) THEN NULL ELSE min(wake) END, id
LIMIT :limit
"""
_RUNNABLE_ALL = _RUNNABLE.format(exclude="")
"""The instances that need a worker and whose lease is free: in flight (its driver
died; inside a fork, a branch may have a timer while another ran: such an instance
is in flight when its lease expired rather than being given back), timer due, or
commands waiting (also for a ``compensation_failed`` instance: a retry of its
compensations); in due order, those with no due time first.
Each branch reaches its rows through an index (status, wake_at, commands)."""

_RUNNABLE_EXCLUDING = _RUNNABLE.format(exclude="\nWHERE id NOT IN (SELECT value FROM json_each(:exclude))")
"""The same, but for the ids in the JSON array ``:exclude`` (one parameter, however many)."""

_BUSY_TIMEOUT = 5.0
"""Seconds SQLite's busy handler lets a statement wait for another connection's lock."""

_BEGIN_RETRY = 5.0
"""Further seconds a ``BEGIN IMMEDIATE`` that still finds the database busy is retried."""

_NOT_OPEN = "is no longer open; a task completes once"

_NOT_OPEN_CLAIM = "is no longer open; only an open task is claimed"

_NOT_OPEN_REASSIGN = "is no longer open; only an open task is reassigned"


def _task_refusal(db: sqlite3.Connection, task_id: str, user: str, not_open: str) -> TaskError:
    """Why a task row's change found no row to change (asked inside its transaction): closed, or claimed."""
    row = db.execute("SELECT status, claimed_by FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is not None and row[0] == TaskStatus.OPEN.value:
        return TaskClaimed(task_id, user, row[1])
    return TaskAlreadyCompleted(task_id, not_open)


_INFO_COLUMNS = "id, workflow, version, status, state, created_at, error, task_id, wake_at, parent, failure"

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _reads(method: Callable[Concatenate[SqliteStore, _P], _T]) -> Callable[Concatenate[SqliteStore, _P], _T]:
    """Turn an error during a read (SQLite's, or a row that cannot be decoded) into a StoreError naming the file."""

    @functools.wraps(method)
    def read(self: SqliteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except OrchError:
            raise  # typed already (UnknownWorkflowVersion)
        except sqlite3.Error as exc:
            msg = f"cannot use {self.path}: reading it failed ({method.__name__}): {exc}"
            raise StoreError(msg, self.path) from exc
        except Exception as exc:
            # A damaged row: JSON that does not parse, an unknown status or kind, a
            # value of the wrong shape for its type.
            msg = (
                f"cannot use {self.path}: reading it failed ({method.__name__}): "
                f"a stored row is damaged ({type(exc).__name__}: {exc})"
            )
            raise StoreError(msg, self.path) from exc

    return read


def _publish(building: str, target: str) -> None:
    """Put the finished store *building* at *target* unless a file is there already (then leave that one)."""
    try:
        os.link(building, target)
    except FileExistsError:
        return  # another process made it first: everyone uses that one
    except OSError:
        # A file system without hard links: copy it in, still never over an existing file.
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return
        try:
            data = Path(building).read_bytes()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target)  # noqa: PTH108
            raise
        finally:
            os.close(fd)


FaultPoint = Literal["before_commit", "after_commit"]
"""Where ``SqliteStore.fault`` is called: inside the transaction before ``COMMIT``
(raising there makes the commit fail), or after ``COMMIT`` succeeded (raising
there loses the acknowledgement of a commit that happened)."""


class _Taken(Exception):
    """A new row's id exists already (raised inside the commit, answered by InstanceExists after the rollback)."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__()
        self.ids = ids


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another connection's lock."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _renew(db: sqlite3.Connection, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
    """Inside a write transaction: extend *owner*'s leases to *until*; the ids whose owner or fence no longer match."""
    items = list(fences.items())
    cur = db.executemany(
        "UPDATE instances SET lease_until = ? WHERE id = ? AND owner = ? AND fence = ?",
        [(until, i, owner, fence) for i, fence in items],
    )
    if cur.rowcount == len(items):
        return []
    held = dict(
        db.execute(
            f"SELECT id, fence FROM instances WHERE owner = ? AND {_IDS_IN}",
            (owner, _dumps([i for i, _ in items])),
        ).fetchall()
    )
    return [i for i, fence in items if held.get(i) != fence]


class SqliteStore:
    """
    The durable default store: one SQLite file (WAL), one transaction per commit.

    Several processes of one host, and several stores in one process, may share
    the file: workers lease the instances they drive and every commit is fenced
    (``docs/design/leases.md``). A writer waits for SQLite's one write lock
    rather than fail (up to about ten seconds). One host only: WAL mode needs
    memory shared by every process using the file, so the file must not be on a
    network file system (NFS, SMB, ...).

    Args:
        path: The database file; created with its schema when missing (atomically:
            processes creating it at once all get the one store).
        create: Whether a new, empty store may be made. ``None`` (the default):
            a missing file is created, but an existing empty (0-byte) file is
            refused, since it is more likely a store that was truncated than a
            new one. ``True``: also make a new store in an existing empty file.
            ``False``: open an existing store only; a missing file is refused.
        synchronous: SQLite's ``synchronous`` setting: ``"FULL"`` (default: a
            commit survives power loss) or ``"NORMAL"`` (survives a crash of the
            process, faster).
        check: Run ``PRAGMA quick_check`` when opening (slow on big files).
        fault: For tests: called with a :data:`FaultPoint` at each commit; an
            exception it raises is injected there.

    Raises:
        StoreError: The file is read-only, not a regular file, has several
            names (hard links: SQLite's WAL is named after the path; a symbolic
            link is fine), empty (see *create*), not a statemachine-orch
            database, corrupt, or from a newer version, or stayed locked by
            other processes too long. A row found damaged when read later is a
            StoreError too.

    .. versionadded:: 0.1.0
    """

    group_commit = True
    leases = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        check: bool = False,
        create: bool | None = None,
        fault: Callable[[FaultPoint], None] | None = None,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            msg = f"SqliteStore(synchronous={synchronous!r}): use 'FULL' (survives power loss) or 'NORMAL'"
            raise ValueError(msg)
        self.path: str = str(path)
        self.fault: Callable[[FaultPoint], None] | None = fault
        self._registry = default_registry
        self._synchronous = synchronous
        self._db = self._connect(synchronous, check=check, create=create)

    # ----------------------------------------------------------------- opening

    def _fail(self, what: str, exc: BaseException | None = None) -> StoreError:
        detail = f": {exc}" if exc is not None else ""
        return StoreError(f"cannot use {self.path}: {what}{detail}", self.path)

    def _connect(self, synchronous: str, *, check: bool, create: bool | None) -> sqlite3.Connection:
        """Check the file, make it if it is missing (and allowed), and open it."""
        try:
            st: os.stat_result | None = os.stat(self.path)  # noqa: PTH116
        except FileNotFoundError:
            st = None
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise self._fail("its path cannot be followed", exc) from None
        if st is None:
            if create is False:
                raise self._fail("the file does not exist (create=False opens an existing store only)")
            self._create(synchronous)
        elif not stat.S_ISREG(st.st_mode):  # a directory, a FIFO (never opened: it would hang), a device
            raise self._fail("it is not a regular file")
        elif st.st_nlink > 1 and not self._being_made(st):
            msg = (
                f"it has {st.st_nlink} names (hard links): SQLite keeps a database's WAL beside the name it is "
                "opened by, so processes using two names would damage it; remove the other links "
                "(a symbolic link is fine)"
            )
            raise self._fail(msg)
        elif st.st_size == 0 and create is not True:
            msg = (
                "the file is empty (0 bytes), not a store: was it truncated? Pass create=True to make a new store in it"
            )
            raise self._fail(msg)
        return self._open(synchronous, check=check)

    def _being_made(self, st: os.stat_result) -> bool:
        """Whether the file's second name is the one ``_create`` built it under (and is about to remove)."""
        folder, name = os.path.split(os.path.realpath(self.path))
        with contextlib.suppress(OSError), os.scandir(folder or ".") as entries:
            for entry in entries:
                if entry.name.startswith(f"{name}.new-"):
                    other = entry.stat(follow_symlinks=False)
                    if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                        return True
        return False

    def _create(self, synchronous: str) -> None:
        """
        Make a new store at the path: built complete in a file beside it, then hard-linked into place.

        Nobody ever sees the store half made (an empty file would be refused as
        truncated); of several processes creating it at once, one links its
        file and the others use that one. A failed creation leaves nothing behind.
        """
        target = os.path.realpath(self.path)  # through a dangling symlink: the file it names
        building = f"{target}.new-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.close(os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        except FileNotFoundError as exc:
            raise self._fail("its directory does not exist", exc) from None
        except OSError as exc:
            raise self._fail("cannot create it (is the directory read-only?)", exc) from None
        try:
            db = sqlite3.connect(building, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
                db.execute(f"PRAGMA synchronous={synchronous}")
                self._migrate(db)
            finally:
                db.close()  # checkpoints the WAL into the file and removes it
            _publish(building, target)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail("cannot create it", exc) from None
        finally:
            for leftover in (building, f"{building}-wal", f"{building}-shm", f"{building}-journal"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)  # noqa: PTH108

    def _open(self, synchronous: str, *, check: bool) -> sqlite3.Connection:
        path = Path(self.path)
        if path.exists() and not os.access(path, os.W_OK):
            raise self._fail("the file is read-only")
        db = self._sqlite_connect()
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and app_id != APPLICATION_ID:
                raise self._fail("it is an SQLite database of another application (not a statemachine-orch store)")
            if check and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise self._fail("PRAGMA quick_check reports corruption")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self._fail(f"SQLite cannot use WAL mode on it (journal mode {mode!r}): a network file system?")
            db.execute(f"PRAGMA synchronous={synchronous}")
            self._migrate(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise self._fail("the file or its directory is read-only", exc) from None
            if "locked" in str(exc) or "busy" in str(exc):
                raise self._fail("the database stayed locked by other processes too long", exc) from None
            raise self._fail("it is not a statemachine-orch database or it is corrupt", exc) from None
        except StoreError:
            db.close()
            raise
        except Exception as exc:
            # e.g. SQLite's message about a damaged schema quotes bytes that are not UTF-8
            db.close()
            what = f"it is not a statemachine-orch database or it is corrupt: {type(exc).__name__}: {exc}"
            raise self._fail(what) from exc
        return db

    @staticmethod
    def _begin(db: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``: take the write lock, retrying for a few seconds while other writers hold it."""
        deadline = 0.0
        pause = 0.001
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                now = time.monotonic()
                if not deadline:
                    deadline = now + _BEGIN_RETRY
                elif now >= deadline:
                    raise
                time.sleep(pause)  # SQLite's busy handler gave up early: back off, then try again
                pause = min(pause * 2, 0.05)
            else:
                return

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring the schema to this library's version; the version is read inside the write transaction."""
        self._begin(db)  # another process may be upgrading the file right now: this waits for it
        try:
            has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            current = 0
            if has_meta:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                try:
                    current = int(row[0]) if row else 0
                except (TypeError, ValueError):
                    msg = f"its schema version {row[0]!r} (table meta) is not a number: it is corrupt"
                    raise self._fail(msg) from None
            if current > SCHEMA_VERSION:
                msg = (
                    f"its schema version is {current}, newer than this library's {SCHEMA_VERSION}; "
                    "upgrade statemachine-orch to use it"
                )
                raise self._fail(msg)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
            if current < SCHEMA_VERSION:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def attach(self, registry: WorkflowRegistry) -> None:
        """Resolve stored workflow versions through *registry*."""
        self._registry = registry

    def close(self) -> None:
        """Close the database (closing twice does nothing more)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> Self:
        """Use as a context manager: closes on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the store."""
        self.close()

    @contextlib.contextmanager
    def _writing(self, what: str, db: sqlite3.Connection | None = None) -> Generator[sqlite3.Connection]:
        """
        One write transaction (``BEGIN IMMEDIATE``) on *db*, the store's connection unless given.

        SQLite's errors become a StoreError naming the file.
        """
        if db is None:
            db = self._db
        try:
            self._begin(db)
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail(f"{what} failed", exc) from exc

    # ----------------------------------------------------------------- commit

    def commit(self, records: Sequence[InstanceRecord]) -> None:
        """
        Write every change of *records* in one transaction.

        Raises:
            LeaseLost: A record's fence is not its row's: another worker claimed
                the instance (nothing was written).
            InstanceExists: A new record's id is taken (nothing was written).
            StoreError: Nothing was written (or, with an injected ``after_commit``
                fault, everything was but the acknowledgement was lost).
        """
        db = self._db
        now = time.time()
        try:
            self._begin(db)
            try:
                self._write_all(db, records, now)
                if self.fault is not None:
                    self.fault("before_commit")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except _Taken as taken:
            raise InstanceExists(self._taken(taken.ids)) from None
        except sqlite3.Error as exc:
            raise self._fail(f"a commit of {len(records)} instance change(s) failed", exc) from exc
        for rec in records:
            rec.committed()
        if self.fault is not None:
            self.fault("after_commit")

    def _write_all(self, db: sqlite3.Connection, records: Sequence[InstanceRecord], now: float) -> None:
        """Write the records' rows, fenced, then everything else they carry; raise before COMMIT if they may not."""
        new: list[tuple[object, ...]] = []
        fenced: list[tuple[object, ...]] = []
        unfenced: list[tuple[object, ...]] = []
        history: list[tuple[object, ...]] = []
        for rec in records:
            values = self._values(rec, now, history)
            if not rec.stored:
                owner, until = rec.lease if rec.lease is not None else (None, None)
                new.append((*values, rec.id, rec.created_at, rec.parent, owner, until, rec.fence))
            elif rec.fence:
                fenced.append((*values, rec.id, rec.fence))
            else:
                unfenced.append((*values, rec.id))
        # One statement per table for the whole batch: with group commit a commit
        # carries hundreds of instances. A stale fence matches no row, so the
        # fencing costs nothing unless the count of rows written comes out short.
        if fenced and db.executemany(_UPDATE_FENCED, fenced).rowcount != len(fenced):
            lost = self._lost(db, records)
            if lost:
                raise LeaseLost(lost, self.path)
        if unfenced and db.executemany(_UPDATE, unfenced).rowcount != len(unfenced):
            self._write_again(db, records, now)
        if new:
            try:
                db.executemany(_INSERT, new)
            except sqlite3.IntegrityError as exc:
                if "instances.id" not in str(exc):
                    raise
                raise _Taken([rec.id for rec in records if not rec.stored]) from exc
        signals_gone: list[tuple[int]] = []
        commands_gone: list[tuple[int, str]] = []
        outbox: list[tuple[str, str, str, float]] = []
        signals_out: list[tuple[str, str, str]] = []
        for rec in records:
            if rec.dirty_tasks:
                for task in rec.dirty_tasks:
                    self._write_task(db, task, rec.spec)
            if rec.consumed_signals:
                signals_gone.extend((s,) for s in rec.consumed_signals)
            if rec.status.is_terminal:
                db.execute("DELETE FROM signals WHERE instance_id = ?", (rec.id,))  # nobody will consume them
            if rec.consumed_commands:
                commands_gone.extend((seq, rec.id) for seq in rec.consumed_commands)
            if rec.outbox:
                outbox.extend((target, kind, _dumps(body), now) for target, kind, body in rec.outbox)
            if rec.signals_out:
                signals_out.extend((t, kind, json.dumps(unstructure(m))) for t, kind, m in rec.signals_out)
        if signals_gone:
            db.executemany("DELETE FROM signals WHERE seq = ?", signals_gone)
        if commands_gone:
            db.executemany("DELETE FROM commands WHERE seq = ? AND instance_id = ?", commands_gone)
        if outbox:
            db.executemany(_INSERT_COMMAND, outbox)
        if signals_out:
            db.executemany(_INSERT_SIGNAL, signals_out)
        if history:
            db.executemany(_INSERT_HISTORY, history)

    def _lost(self, db: sqlite3.Connection, records: Sequence[InstanceRecord]) -> list[str]:
        """The fenced records whose row's fence is not theirs (or whose row is gone), each once."""
        ids = [rec.id for rec in records if rec.stored and rec.fence]
        fences = dict(db.execute(f"SELECT id, fence FROM instances WHERE {_IDS_IN}", (_dumps(ids),)))
        lost = {rec.id: None for rec in records if rec.stored and rec.fence and fences.get(rec.id) != rec.fence}
        return list(lost)

    def _write_again(self, db: sqlite3.Connection, records: Sequence[InstanceRecord], now: float) -> None:
        """Insert the rows of unleased stored records that are missing (deleted under them), as an upsert did."""
        ids = [rec.id for rec in records if rec.stored and not rec.fence]
        found = {r[0] for r in db.execute(f"SELECT id FROM instances WHERE {_IDS_IN}", (_dumps(ids),))}
        history: list[tuple[object, ...]] = []  # written by the caller already
        rows = [
            (*self._values(rec, now, history), rec.id, rec.created_at, rec.parent, None, None, 0)
            for rec in records
            if rec.stored and not rec.fence and rec.id not in found
        ]
        db.executemany(_INSERT, rows)

    def _taken(self, ids: list[str]) -> str:
        """Which of the new ids made the INSERT fail (asked after the rollback): one stored, or one given twice."""
        with contextlib.suppress(sqlite3.Error):
            row = self._db.execute(f"SELECT id FROM instances WHERE {_IDS_IN} LIMIT 1", (_dumps(ids),)).fetchone()
            if row is not None:
                return str(row[0])
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                return i
            seen.add(i)
        return ids[0]

    @staticmethod
    def _values(rec: InstanceRecord, now: float, history: list[tuple[object, ...]]) -> tuple[object, ...]:
        """*rec*'s row as ``_ROW_COLUMNS``; its pending history rows go to *history*."""
        return _store_rows.instance_values(rec, now, history, nul=True, branch_pairs=False)

    def _write_task(self, db: sqlite3.Connection, task: Task, spec: WorkflowSpec) -> None:
        db.execute(_UPSERT_TASK, _store_rows.task_row(task, spec, nul=True, encode=json.dumps))
        if task.status is TaskStatus.OPEN:
            db.executemany(
                "INSERT OR IGNORE INTO task_groups (grp, task_id) VALUES (?, ?)",
                [(_store_rows.storable(g), task.id) for g in task.candidate_groups],
            )
        else:
            db.execute("DELETE FROM task_groups WHERE task_id = ?", (task.id,))

    # ----------------------------------------------------------------- reading

    def _spec(
        self, instance_id: str, workflow: str, version: str, fingerprint: str | None
    ) -> tuple[type[Any], WorkflowSpec]:
        return _store_rows.workflow_class(self._registry, instance_id, workflow, version, fingerprint)

    @_reads
    def load(self, instance_id: str) -> InstanceRecord | None:
        """
        The committed state of an instance.

        The record is ``stored`` and carries the row's fence (a leasing engine
        sets the fence it claimed the instance with).

        Raises:
            UnknownWorkflowVersion: Its version has no registered class.
            RecordLoadError: Its row cannot be read back (a value of the wrong type, damaged JSON).
        """
        if not _encodable(instance_id):
            return None  # such an id cannot have been stored
        row = self._db.execute(
            "SELECT workflow, version, state, status, variables, payload, saga, attempt, comp_attempt, "
            "visit, task_id, error, cause, cancel, wake_at, history_len, created_at, fingerprint, branches, "
            "parent, fence, failure FROM instances WHERE id = ?",
            (instance_id,),
        ).fetchone()
        if row is None:
            return None
        workflow, version, fingerprint = row[0], row[1], row[17]
        cls, spec = self._spec(instance_id, workflow, version, fingerprint)
        try:
            rec = _store_rows.record(instance_id, row, cls, spec)
        except OrchError:
            raise  # typed already (RecordLoadError names the field)
        except Exception as exc:
            # A damaged row: the engine quarantines this instance and goes on with the others.
            detail = f"a stored row is damaged ({type(exc).__name__}: {exc})"
            raise RecordLoadError(f"a stored {spec.name}", "", detail, instance_id=instance_id, path=self.path) from exc
        return rec

    @_reads
    def info(self, instance_id: str) -> InstanceInfo | None:
        """A snapshot of the committed instance."""
        if not _encodable(instance_id):
            return None
        row = self._db.execute(f"SELECT {_INFO_COLUMNS} FROM instances WHERE id = ?", (instance_id,)).fetchone()
        return _store_rows.info(row) if row is not None else None

    @_reads
    def infos(self, status: InstanceStatus | None, workflow: str | None) -> list[InstanceInfo]:
        """Snapshots of the committed instances, oldest first."""
        where: list[str] = []
        args: list[str] = []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if workflow is not None:
            if not _encodable(workflow):
                return []
            where.append("workflow = ?")
            args.append(workflow)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(f"SELECT {_INFO_COLUMNS} FROM instances{clause} ORDER BY created_at", args)
        return [_store_rows.info(r) for r in rows]

    @_reads
    def children(self, parent_id: str) -> list[InstanceInfo]:
        """The instance's children, oldest first."""
        if not _encodable(parent_id):
            return []
        rows = self._db.execute(
            f"SELECT {_INFO_COLUMNS} FROM instances WHERE parent = ? ORDER BY created_at", (parent_id,)
        )
        return [_store_rows.info(r) for r in rows]

    @_reads
    def waiting_parents(self) -> list[str]:
        """Waiting instances with an ended child."""
        rows = self._db.execute(
            "SELECT DISTINCT p.id FROM instances c JOIN instances p ON p.id = c.parent "
            "WHERE c.parent IS NOT NULL AND c.status IN ('completed', 'failed', 'cancelled', 'compensation_failed') "
            "AND p.status = 'waiting'"
        )
        return [r[0] for r in rows]

    @_reads
    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The committed history, oldest first."""
        if not _encodable(instance_id):
            return []
        rows = self._db.execute(
            "SELECT at, kind, step, attempt, detail FROM history WHERE instance_id = ? ORDER BY seq",
            (instance_id,),
        )
        return _store_rows.history(rows)

    _TASK_COLUMNS = (
        "id, instance_id, workflow, version, step, assignee, groups, created_at, due_at, status, "
        "completed_by, completed_at, form, fingerprint, claimed_by"
    )

    def _task(self, row: tuple[Any, ...]) -> Task:
        return _store_rows.task(row, self._registry)

    @_reads
    def task(self, task_id: str) -> Task | None:
        """The task with this id, if any."""
        if not _encodable(task_id):
            return None
        row = self._db.execute(f"SELECT {self._TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return self._task(row) if row is not None else None

    @_reads
    def open_tasks(
        self,
        user: str | None,
        groups: frozenset[str],
        instance_id: str | None,
        *,
        due_before: float | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Open tasks, oldest first, filtered through the indexes on assignee, claimant and groups."""
        cols = self._TASK_COLUMNS
        due = "" if due_before is None else " AND due_at <= ?"
        due_args: tuple[float, ...] = () if due_before is None else (due_before,)
        if instance_id is not None:
            if not _encodable(instance_id):
                return []
            rows = self._db.execute(
                f"SELECT {cols} FROM tasks WHERE instance_id = ? AND status = 'open'{due} ORDER BY created_at, rowid",
                (instance_id, *due_args),
            )
            found = [self._task(r) for r in rows]
            return [t for t in found if user is None or t.may_complete(user, groups)][:limit]
        page = "" if limit is None else f" LIMIT {int(limit)}"
        if user is None:
            rows = self._db.execute(
                f"SELECT {cols} FROM tasks WHERE status = 'open'{due} ORDER BY created_at, rowid{page}", due_args
            )
            return [self._task(r) for r in rows]
        # A user or group that cannot be encoded matches no task (`assignee = NULL` is never true).
        groups = frozenset(g for g in groups if _encodable(g))
        who = user if _encodable(user) else None
        marks = ",".join("?" * len(groups))
        by_group = f" UNION SELECT task_id FROM task_groups WHERE grp IN ({marks})" if groups else ""
        # Those it is for, then (a claimed task) only its claimant.
        rows = self._db.execute(
            f"SELECT {cols} FROM tasks WHERE id IN (SELECT id FROM tasks WHERE assignee = ? AND status = 'open'"
            f" UNION SELECT id FROM tasks WHERE claimed_by = ? AND status = 'open'{by_group})"
            f" AND status = 'open' AND (claimed_by IS NULL OR claimed_by = ?){due} ORDER BY created_at, rowid{page}",
            (who, who, *sorted(groups), who, *due_args),
        )
        return [self._task(r) for r in rows]

    # ----------------------------------------------------------------- signals and timers

    def add_signal(self, instance_id: str, type_name: str, message: object) -> int:
        """Durably keep a message (its own transaction)."""
        payload = json.dumps(unstructure(message))
        try:
            cur = self._db.execute(_INSERT_SIGNAL, (instance_id, type_name, payload))
        except sqlite3.Error as exc:
            raise self._fail("a signal could not be stored", exc) from exc
        seq = cur.lastrowid
        assert seq is not None  # noqa: S101 - an INSERT always has one
        return seq

    @_reads
    def signals(self, instance_id: str) -> list[Signal]:
        """The instance's unconsumed messages, decoded with its workflow's message types."""
        if not _encodable(instance_id):
            return []
        row = self._db.execute(
            "SELECT workflow, version, fingerprint FROM instances WHERE id = ?", (instance_id,)
        ).fetchone()
        if row is None:
            return []
        cls = self._registry.resolve(row[0], row[1], row[2])
        if cls is None:
            return []
        types = _store_rows.message_types(cls.__orch_spec__)
        rows = self._db.execute(
            "SELECT seq, type, payload FROM signals WHERE instance_id = ? ORDER BY seq", (instance_id,)
        )
        return _store_rows.signals(rows, types)

    @_reads
    def signalled(self) -> list[str]:
        """Waiting instances with unconsumed messages."""
        rows = self._db.execute(
            "SELECT DISTINCT i.id FROM signals s JOIN instances i ON i.id = s.instance_id WHERE i.status = 'waiting'"
        )
        return [r[0] for r in rows]

    @_reads
    def next_wake(self, exclude: frozenset[str] = frozenset()) -> float | None:
        """The earliest timer due time of an instance not in *exclude*."""
        if not exclude:
            row = self._db.execute("SELECT min(wake_at) FROM instances WHERE wake_at IS NOT NULL").fetchone()
        else:
            marks = ",".join("?" * len(exclude))
            row = self._db.execute(
                f"SELECT min(wake_at) FROM instances WHERE wake_at IS NOT NULL AND id NOT IN ({marks})",
                tuple(exclude),
            ).fetchone()
        value: float | None = row[0]
        return value

    @_reads
    def due(self, now: float, limit: int) -> list[str]:
        """Instances whose timer is due, earliest first."""
        rows = self._db.execute(
            "SELECT id FROM instances WHERE wake_at IS NOT NULL AND wake_at <= ? ORDER BY wake_at LIMIT ?",
            (now, limit),
        )
        return [r[0] for r in rows]

    @_reads
    def in_flight(self) -> list[str]:
        """Instances that were running or compensating, not parked on a timer."""
        rows = self._db.execute(
            "SELECT id FROM instances WHERE status IN ('running', 'compensating') AND wake_at IS NULL "
            "ORDER BY updated_at"
        )
        return [r[0] for r in rows]

    # ----------------------------------------------------------------- monitoring reads

    @_reads
    def instance_counts(self) -> list[tuple[str, InstanceStatus, int]]:
        """How many instances each workflow has in each status, sorted (one pass over the status index)."""
        rows = self._db.execute(
            "SELECT workflow, status, count(*) FROM instances GROUP BY workflow, status ORDER BY workflow, status"
        )
        return [(r[0], InstanceStatus(r[1]), r[2]) for r in rows]

    @_reads
    def task_counts(self, now: float) -> list[tuple[str, str, int, int]]:
        """Open tasks (and how many are overdue at *now*) by workflow and step, sorted."""
        rows = self._db.execute(
            "SELECT workflow, step, count(*), coalesce(sum(due_at IS NOT NULL AND due_at <= ?), 0) "
            "FROM tasks WHERE status = 'open' GROUP BY workflow, step ORDER BY workflow, step",
            (now,),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    @_reads
    def quiet(self, statuses: frozenset[InstanceStatus], before: float | None) -> list[tuple[InstanceInfo, float]]:
        """Instances in *statuses* with no timer, last changed at or before *before*, the oldest change first."""
        if not statuses:
            return []
        marks = ",".join("?" * len(statuses))
        # The last history row of each instance is one step down its primary key (instance_id, seq).
        last = "(SELECT h.at FROM history h WHERE h.instance_id = i.id ORDER BY h.seq DESC LIMIT 1)"
        cut = "" if before is None else " WHERE last <= ?"
        rows = self._db.execute(
            f"SELECT * FROM (SELECT {_INFO_COLUMNS}, coalesce({last}, created_at) AS last FROM instances i "
            f"WHERE status IN ({marks}) AND wake_at IS NULL){cut} ORDER BY last, id",
            (*sorted(s.value for s in statuses), *(() if before is None else (before,))),
        )
        return [(_store_rows.info(r[:-1]), r[-1]) for r in rows]

    @_reads
    def late_timers(self, before: float, limit: int | None = None) -> list[InstanceInfo]:
        """Live instances whose timer was due at or before *before*, earliest first."""
        rows = self._db.execute(
            f"SELECT {_INFO_COLUMNS} FROM instances WHERE wake_at IS NOT NULL AND wake_at <= ? AND {_LIVE} "
            "ORDER BY wake_at, id LIMIT ?",
            (before, -1 if limit is None else limit),
        )
        return [_store_rows.info(r) for r in rows]

    @_reads
    def late_tasks(self, before: float) -> list[LateTask]:
        """Open tasks due at or before *before*, earliest first, with their instance's timer."""
        rows = self._db.execute(
            "SELECT t.id, t.instance_id, t.workflow, t.version, t.step, t.due_at, i.wake_at "
            "FROM tasks t LEFT JOIN instances i ON i.id = t.instance_id "
            "WHERE t.status = 'open' AND t.due_at IS NOT NULL AND t.due_at <= ? ORDER BY t.due_at, t.id",
            (before,),
        )
        return [LateTask(*r) for r in rows]

    # ----------------------------------------------------------------- leases and commands

    def claim(self, instance_id: str, owner: str, now: float, until: float) -> int | None:
        """
        Take the lease of an instance that is free, expired or *owner*'s; return the new fence.

        ``None``: there is no such instance, or another owner's lease on it is live. A
        terminal instance may be claimed (a parent undoes its completed child).
        """
        if not _encodable(instance_id):
            return None  # such an id cannot have been stored
        with self._writing("claiming a lease") as db:
            row = db.execute("SELECT status, owner, lease_until, fence FROM instances WHERE id = ?", (instance_id,))
            found = row.fetchone()
            if found is None:
                return None
            _, holder, lease_until, fence = found
            # A terminal instance may be claimed too: a parent undoes its completed child.
            if not (holder is None or holder == owner or lease_until is None or lease_until < now):
                return None
            fence += 1
            db.execute(
                "UPDATE instances SET owner = ?, lease_until = ?, fence = ? WHERE id = ?",
                (owner, until, fence, instance_id),
            )
        new_fence: int = fence
        return new_fence

    def claim_runnable(
        self, owner: str, now: float, until: float, limit: int, exclude: frozenset[str]
    ) -> list[tuple[str, int]]:
        """
        Claim up to *limit* instances not in *exclude* that need a worker and whose lease is free or expired.

        They are in flight (status running or compensating, no timer: their driver
        died), their timer is due, or they have commands waiting; those with no due
        time first, then in due order. One ``BEGIN IMMEDIATE`` transaction finds and
        claims them, so two processes never get one instance.
        """
        if limit <= 0:
            return []
        query = _RUNNABLE_EXCLUDING if exclude else _RUNNABLE_ALL
        args: dict[str, object] = {"now": now, "limit": limit}
        if exclude:
            args["exclude"] = _dumps(sorted(exclude))
        try:
            # A plain read first: most polls find nothing, and then take no write lock.
            if self._db.execute(query, args).fetchone() is None:
                return []
        except sqlite3.Error as exc:
            raise self._fail("reading it failed (claim_runnable)", exc) from exc
        with self._writing("claiming runnable instances") as db:
            found: list[tuple[str, int]] = [(i, fence + 1) for i, fence in db.execute(query, args)]
            db.executemany(
                "UPDATE instances SET owner = ?, lease_until = ?, fence = ? WHERE id = ?",
                [(owner, until, fence, i) for i, fence in found],
            )
        return found

    @_reads
    def commanded(self, owner: str) -> list[str]:
        """Ids of the instances *owner* holds that have commands waiting, oldest command first."""
        rows = self._db.execute(
            "SELECT c.instance_id FROM commands c JOIN instances i ON i.id = c.instance_id WHERE i.owner = ? "
            "GROUP BY c.instance_id ORDER BY min(c.seq)",
            (owner,),
        )
        return [r[0] for r in rows]

    def renew(self, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
        """Extend *owner*'s leases (id -> fence) to *until*; return the ids it no longer holds (taken over)."""
        if not fences:
            return []
        with self._writing("renewing leases") as db:
            return _renew(db, owner, fences, until)

    def lease_renewer(self) -> SqliteRenewer:
        """
        A renewer of leases on a connection of its own, for the engine's heartbeat thread.

        The store's connection serves the event loop's thread; the heartbeat writes
        beside it, so that a loop busy with CPU-bound steps does not lose its leases.
        """
        return SqliteRenewer(self._connect_more, self._writing)

    def _connect_more(self) -> sqlite3.Connection:
        """Another connection to the store's file (already checked and migrated), set up as the first."""
        return self._sqlite_connect(f"PRAGMA synchronous={self._synchronous}")

    def _sqlite_connect(self, *pragmas: str) -> sqlite3.Connection:
        """A connection to the file, usable from any one thread at a time, waiting for others' locks; then *pragmas*."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise self._fail("SQLite cannot open it", exc) from None
        try:
            for pragma in (f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT * 1000)}", *pragmas):
                db.execute(pragma)
        except sqlite3.Error as exc:
            db.close()
            raise self._fail("SQLite cannot open it", exc) from None
        return db

    def release(self, owner: str, fences: Mapping[str, int]) -> None:
        """Give back *owner*'s leases (id -> fence) whose fence still matches."""
        if not fences:
            return
        with self._writing("releasing leases") as db:
            db.executemany(
                "UPDATE instances SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ? AND fence = ?",
                [(i, owner, fence) for i, fence in fences.items()],
            )

    def expire(self, owner: str) -> int:
        """Mark every lease of *owner* (a worker found dead) expired; return how many."""
        with self._writing("expiring leases") as db:
            count: int = db.execute("UPDATE instances SET lease_until = 0 WHERE owner = ?", (owner,)).rowcount
        return count

    @_reads
    def owners(self) -> list[str]:
        """The owners holding leases (live or expired, not released)."""
        rows = self._db.execute("SELECT DISTINCT owner FROM instances WHERE owner IS NOT NULL ORDER BY owner")
        return [r[0] for r in rows]

    def add_command(
        self,
        instance_id: str,
        kind: str,
        body: Mapping[str, object],
        *,
        complete: Task | None = None,
        signal: tuple[str, object] | None = None,
        claim: TaskClaim | None = None,
        reassign: TaskReassignment | None = None,
    ) -> int:
        """
        Keep a command for an instance, with a task's completion, a claim, a reassignment or a signal; its seq.

        Raises:
            TaskAlreadyCompleted: The task row of *complete*, *claim* or *reassign* is no longer open (nothing written).
            TaskClaimed: Another user holds the task's claim (nothing written).
            StoreError: It could not be written (nothing written).
        """
        text = _dumps(dict(body))
        if reassign is not None and not _encodable(reassign.task_id):
            raise TaskAlreadyCompleted(reassign.task_id, _NOT_OPEN)  # such an id cannot have been stored
        message = json.dumps(unstructure(signal[1])) if signal is not None else None
        done: tuple[str, str | None, float | None, str | None, str] | None = None
        if complete is not None:
            if not _encodable(complete.id):
                raise TaskAlreadyCompleted(complete.id, _NOT_OPEN)  # such an id cannot have been stored
            done = _store_rows.completion(complete, nul=True, encode=json.dumps)
        if claim is not None and not (_encodable(claim.task_id) and _encodable(claim.user)):
            raise TaskAlreadyCompleted(claim.task_id, _NOT_OPEN)  # such an id (or claimant) cannot have been stored
        with self._writing("storing a command") as db:
            if done is not None:
                cur = db.execute(
                    "UPDATE tasks SET status = ?, completed_by = ?, completed_at = ?, form = ? "
                    "WHERE id = ? AND status = 'open' AND (claimed_by IS NULL OR claimed_by = ?)",
                    (*done, done[1]),
                )
                if cur.rowcount != 1:
                    raise _task_refusal(db, done[-1], done[1] or "", _NOT_OPEN)  # closed or claimed meanwhile
                db.execute("DELETE FROM task_groups WHERE task_id = ?", (done[-1],))
            if claim is not None:
                cur = db.execute(
                    "UPDATE tasks SET claimed_by = ? WHERE id = ? AND status = 'open' AND claimed_by IS ?",
                    (claim.after, claim.task_id, claim.before),
                )
                if cur.rowcount != 1:
                    raise _task_refusal(db, claim.task_id, claim.user, _NOT_OPEN_CLAIM)
            if reassign is not None:
                self._reassign(db, reassign)
            if signal is not None:
                db.execute(_INSERT_SIGNAL, (instance_id, signal[0], message))
            seq = db.execute(_INSERT_COMMAND, (instance_id, kind, text, time.time())).lastrowid
        assert seq is not None  # noqa: S101 - an INSERT always has one
        return seq

    @staticmethod
    def _reassign(db: sqlite3.Connection, change: TaskReassignment) -> None:
        """Give the open task (still claimed as the caller saw it) its new people and no claimant, groups included."""
        cur = db.execute(
            "UPDATE tasks SET assignee = ?, groups = ?, claimed_by = NULL "
            "WHERE id = ? AND status = 'open' AND claimed_by IS ?",
            (
                _store_rows.storable(change.assignee),
                json.dumps(change.candidate_groups),
                change.task_id,
                change.claimant,
            ),
        )
        if cur.rowcount != 1:
            raise _task_refusal(db, change.task_id, change.by, _NOT_OPEN_REASSIGN)
        db.execute("DELETE FROM task_groups WHERE task_id = ?", (change.task_id,))
        db.executemany(
            "INSERT OR IGNORE INTO task_groups (grp, task_id) VALUES (?, ?)",
            [(_store_rows.storable(g), change.task_id) for g in change.candidate_groups],
        )

    @_reads
    def commands(self, instance_id: str) -> list[Command]:
        """The instance's unapplied commands, oldest first."""
        if not _encodable(instance_id):
            return []
        rows = self._db.execute(
            "SELECT seq, kind, body, created_at FROM commands WHERE instance_id = ? ORDER BY seq", (instance_id,)
        )
        return _store_rows.commands(instance_id, rows)

    # ----------------------------------------------------------------- schedules

    @_reads
    def schedule(self, schedule_id: str) -> ScheduleState | None:
        """The schedule's stored state, if it has one."""
        if not _encodable(schedule_id):
            return None
        row = self._db.execute(
            "SELECT id, cursor, last_instance, started FROM schedules WHERE id = ?", (schedule_id,)
        ).fetchone()
        return ScheduleState(*row) if row is not None else None

    def save_schedule(self, state: ScheduleState, expected: float | None) -> bool:
        """
        Write the schedule's state if its stored cursor is still *expected* (``None``: if it has none).

        Raises:
            StoreError: It could not be written.
        """
        values = (state.cursor, state.last_instance, state.started, time.time(), state.id)
        with self._writing("saving a schedule") as db:
            if expected is None:
                cur = db.execute(
                    "INSERT OR IGNORE INTO schedules (cursor, last_instance, started, updated_at, id) "
                    "VALUES (?, ?, ?, ?, ?)",
                    values,
                )
            else:
                cur = db.execute(
                    "UPDATE schedules SET cursor = ?, last_instance = ?, started = ?, updated_at = ? "
                    "WHERE id = ? AND cursor = ?",
                    (*values, expected),
                )
            written: bool = cur.rowcount == 1
        return written


class SqliteRenewer:
    """
    Renews a store's leases on a connection of its own (opened at the first renewal), from one other thread.

    ``SqliteStore.lease_renewer`` makes it; the engine's heartbeat thread uses it.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        writing: Callable[[str, sqlite3.Connection], contextlib.AbstractContextManager[sqlite3.Connection]],
    ) -> None:
        self._connect = connect
        self._writing = writing
        self._db: sqlite3.Connection | None = None

    def renew(self, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
        """As ``SqliteStore.renew``, on this renewer's connection."""
        if not fences:
            return []
        if self._db is None:
            self._db = self._connect()
        with self._writing("renewing leases", self._db) as db:
            return _renew(db, owner, fences, until)

    def close(self) -> None:
        """Close the connection (closing twice does nothing more)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
