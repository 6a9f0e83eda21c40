"""
``SqliteStore``: the embedded, durable default store.

One SQLite file in WAL mode. Each ``commit`` is one ``BEGIN IMMEDIATE`` …
``COMMIT`` transaction holding every change of every record passed to it: the
instance row (machine state, status, variables as JSON through cattrs, saga,
counters, timer), its new history rows, its changed tasks and the signals it
consumed. The engine batches the commits of concurrent instances into one call
(group commit), so one fsync covers many transitions.

One engine process uses a file at a time: on Linux it holds an exclusive
``flock`` on the database file itself, so the lock belongs to the file (its
inode) however it is reached (a symbolic link, a hard link), and the kernel
releases it when the process dies, even by SIGKILL. (Linux keeps ``flock`` locks
apart from the POSIX locks SQLite takes on the same file; BSD and macOS do not,
so there the ``flock`` is on ``<real path>.lock`` beside the file.) A network
file system is not supported: SQLite's WAL mode needs shared memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, Self, TypeVar

from ._errors import OrchError, RecordLoadError, StoreError, UnknownWorkflowVersion
from ._history import EventKind, HistoryEvent
from ._instance import NO_PAYLOAD, Branch, InstanceInfo, InstanceRecord, Signal, active_steps
from ._machine import STATE_ATTRIBUTE
from ._registry import WorkflowRegistry, default_registry
from ._serialize import structure, unstructure
from ._status import InstanceStatus
from ._tasks import Task, TaskStatus

if TYPE_CHECKING:
    from ._spec import WorkflowSpec

SCHEMA_VERSION = 3
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
}

_UPSERT = """
INSERT INTO instances (id, workflow, version, fingerprint, state, status, variables, payload, saga, attempt,
    comp_attempt, visit, task_id, error, cause, cancel, wake_at, history_len, created_at, updated_at, branches,
    parent)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET workflow = excluded.workflow, version = excluded.version,
    fingerprint = excluded.fingerprint,
    state = excluded.state, status = excluded.status, variables = excluded.variables,
    payload = excluded.payload, saga = excluded.saga, attempt = excluded.attempt,
    comp_attempt = excluded.comp_attempt, visit = excluded.visit, task_id = excluded.task_id,
    error = excluded.error, cause = excluded.cause, cancel = excluded.cancel, wake_at = excluded.wake_at,
    history_len = excluded.history_len, updated_at = excluded.updated_at, branches = excluded.branches
"""

_INSERT_HISTORY = "INSERT INTO history (instance_id, seq, at, kind, step, attempt, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"

_dumps = json.JSONEncoder(separators=(",", ":")).encode
"""Compact JSON, with one encoder built once."""

_INFO_COLUMNS = "id, workflow, version, status, state, created_at, error, task_id, wake_at, parent"

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


def _encodable(text: str) -> bool:
    """Whether SQLite can be given *text* (a lone surrogate has no UTF-8 encoding)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(text: str | None) -> str | None:
    """Free text (an error message, a user name) as SQLite can store it: lone surrogates escaped."""
    if text is None or _encodable(text):
        return text
    return text.encode(errors="backslashreplace").decode()


_FLOCK_THE_FILE = sys.platform == "linux"
"""Whether the one-engine flock can be on the database file itself: on BSD and
macOS an exclusive flock would also block this process's own SQLite (its POSIX
locks), so there it is on a lock file beside the file's real path instead, which
a hard link or deleting that lock file gets round."""

_held_guard = threading.Lock()
_held: dict[tuple[int, int], list[int]] = {}
"""The files (device, inode) this process holds a store on, each with descriptors
of that file to close only when the store closes: closing any descriptor of a file
drops every POSIX lock the process has on it, SQLite's included."""


_LOCKS_FIELDS = 6
"""The fields of a /proc/locks line up to the file: number, class, mode, access, pid, device:inode."""


def _holder_pid(st: os.stat_result) -> str:
    """The pid of the process holding the flock on the file *st* describes, from Linux's /proc/locks, or "?"."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:  # noqa: PTH123 - a /proc file
            lines = f.read().splitlines()
    except OSError:
        return "?"
    exact = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    same_inode: set[str] = set()
    for line in lines:
        # "3: FLOCK  ADVISORY  WRITE 7138 fe:00:2147121 0 EOF" (a waiter's line has "->" after the number)
        fields = line.split()
        if len(fields) < _LOCKS_FIELDS or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        pid, file_id = fields[4], fields[5]
        if file_id == exact:
            return pid
        if file_id.rsplit(":", 1)[-1] == str(st.st_ino):
            same_inode.add(pid)
    # Overlay file systems report another device than the one /proc/locks shows.
    return same_inode.pop() if len(same_inode) == 1 else "?"


FaultPoint = Literal["before_commit", "after_commit"]
"""Where ``SqliteStore.fault`` is called: inside the transaction before ``COMMIT``
(raising there makes the commit fail), or after ``COMMIT`` succeeded (raising
there loses the acknowledgement of a commit that happened)."""


class SqliteStore:
    """
    The durable default store: one SQLite file (WAL), one transaction per commit.

    Args:
        path: The database file; created with its schema when missing.
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
        StoreError: The file is used by another engine (reached by any name:
            the lock is on the file itself), read-only, empty (see *create*),
            not a statemachine-orch database, corrupt, or from a newer version.
            A row found damaged when read later is a StoreError too.

    .. versionadded:: 0.1.0
    """

    group_commit = True

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
        self._lock_fds, self._file_id, created = self._lock(create)
        try:
            if created is None and create is not True and os.fstat(self._lock_fds[0]).st_size == 0:
                msg = (
                    "the file is empty (0 bytes), not a store: was it truncated? "
                    "Pass create=True to make a new store in it"
                )
                raise self._fail(msg)
            self._db = self._open(synchronous, check=check)
        except BaseException:
            if created is not None:
                # Leave no empty file behind: the next open would refuse it.
                with contextlib.suppress(OSError):
                    os.unlink(created)  # noqa: PTH108
            self._unlock()
            raise

    # ----------------------------------------------------------------- opening

    def _fail(self, what: str, exc: BaseException | None = None) -> StoreError:
        detail = f": {exc}" if exc is not None else ""
        return StoreError(f"cannot use {self.path}: {what}{detail}", self.path)

    def _busy(self, pid: object) -> StoreError:
        return self._fail(f"it is used by another engine process (pid {pid}); one engine per SQLite file")

    def _lock(self, create: bool | None) -> tuple[list[int], tuple[int, int], str | None]:
        """
        Take the one-engine lock: an exclusive flock on the database file itself (Linux).

        Returns the descriptors to close when the store closes (the database
        file's first), the file's (device, inode) and the path of the file when
        this call created it.
        """
        with _held_guard:
            try:
                st: os.stat_result | None = os.stat(self.path)  # noqa: PTH116
            except FileNotFoundError:
                st = None
            except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
                raise self._fail("its path cannot be followed", exc) from None
            # Never open (and later close) a descriptor of a file this process holds:
            # that close would drop SQLite's POSIX locks on it.
            if st is not None and (st.st_dev, st.st_ino) in _held:
                raise self._busy(os.getpid())
            fd, created = self._open_file(exists=st is not None, create=create)
            st = os.fstat(fd)
            file_id = (st.st_dev, st.st_ino)
            if file_id in _held:  # the path was changed to a held file meanwhile
                _held[file_id].append(fd)
                raise self._busy(os.getpid())
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                raise self._fail("it is not a regular file")
            fds = [fd] if _FLOCK_THE_FILE else [fd, self._lock_file(fd)]
            try:
                fcntl.flock(fds[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_pid(st) if _FLOCK_THE_FILE else os.pread(fds[-1], 32, 0).decode(errors="replace")
                for each in fds:
                    os.close(each)
                raise self._busy(holder.strip() or "?") from None
            if not _FLOCK_THE_FILE:
                os.ftruncate(fds[-1], 0)
                os.pwrite(fds[-1], str(os.getpid()).encode(), 0)
            _held[file_id] = []
            return fds, file_id, created

    def _lock_file(self, fd: int) -> int:
        """Where flock would block SQLite (BSD, macOS): a lock file beside the file's real path."""
        try:
            return os.open(os.path.realpath(self.path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            os.close(fd)
            raise self._fail("cannot create its lock file (is the directory read-only?)", exc) from None

    def _open_file(self, *, exists: bool, create: bool | None) -> tuple[int, str | None]:
        """A read-only descriptor of the database file (for its lock), creating the file if allowed."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO does not hang the open
        if not exists:
            if create is False:
                raise self._fail("the file does not exist (create=False opens an existing store only)")
            target = os.path.realpath(self.path)  # through a dangling symlink: the file it names
            try:
                return os.open(target, flags | os.O_CREAT | os.O_EXCL, 0o644), target
            except FileExistsError:
                pass  # another process made it meanwhile: open it
            except FileNotFoundError as exc:
                raise self._fail("its directory does not exist", exc) from None
            except OSError as exc:
                raise self._fail("cannot create it (is the directory read-only?)", exc) from None
        try:
            return os.open(self.path, flags), None
        except OSError as exc:
            raise self._fail("cannot open it", exc) from None

    def _unlock(self) -> None:
        """Release the one-engine lock: close the locked descriptors and any parked ones."""
        with _held_guard:
            if not self._lock_fds:
                return
            parked = _held.pop(self._file_id, [])
            for fd in (*self._lock_fds, *parked):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._lock_fds = []

    def _open(self, synchronous: str, *, check: bool) -> sqlite3.Connection:
        path = Path(self.path)
        if path.exists() and not os.access(path, os.W_OK):
            raise self._fail("the file is read-only")
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as exc:
            raise self._fail("SQLite cannot open it", exc) from None
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and app_id != APPLICATION_ID:
                raise self._fail("it is an SQLite database of another application (not a statemachine-orch store)")
            if check and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise self._fail("PRAGMA quick_check reports corruption")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            self._migrate(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise self._fail("the file or its directory is read-only", exc) from None
            if "locked" in str(exc) or "busy" in str(exc):
                raise self._fail("the database is locked by another process", exc) from None
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

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
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
        """Close the database, then release the one-engine lock (closing twice does nothing more)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._unlock()

    def __enter__(self) -> Self:
        """Use as a context manager: closes on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the store."""
        self.close()

    # ----------------------------------------------------------------- commit

    def commit(self, records: Sequence[InstanceRecord]) -> None:
        """
        Write every change of *records* in one transaction.

        Raises:
            StoreError: Nothing was written (or, with an injected ``after_commit``
                fault, everything was but the acknowledgement was lost).
        """
        db = self._db
        now = time.time()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                history: list[tuple[object, ...]] = []
                rows = [self._write(db, rec, now, history) for rec in records]
                # One statement per table for the whole batch: with group commit a
                # commit carries hundreds of instances.
                db.executemany(_UPSERT, rows)
                if history:
                    db.executemany(_INSERT_HISTORY, history)
                if self.fault is not None:
                    self.fault("before_commit")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail(f"a commit of {len(records)} instance change(s) failed", exc) from exc
        for rec in records:
            rec.committed()
        if self.fault is not None:
            self.fault("after_commit")

    def _write(
        self, db: sqlite3.Connection, rec: InstanceRecord, now: float, history: list[tuple[object, ...]]
    ) -> tuple[object, ...]:
        """Write *rec*'s rare changes (tasks, signals); return its row and add its history rows."""
        spec = rec.spec
        state = rec.state
        payload = None
        branches = None
        task_id = rec.task_id
        if state.__class__ is not str:
            branches = _dumps(_branch_rows(rec))
            task_id = next((b.task_id for b in rec.branches.values() if b.task_id is not None), None)
            state = _dumps(state)
        elif rec.payload is not NO_PAYLOAD and not (spec.has_step(state) and spec.step(state).child is not None):
            tp = spec.step(state).payload_type if spec.has_step(state) else None
            payload = _dumps({"v": unstructure(rec.payload, tp)})
        if rec.history:
            base = rec.history_len
            rid = rec.id
            history.extend(
                (rid, base + i, e.at, e.kind.value, e.step, e.attempt, _text(e.detail))
                for i, e in enumerate(rec.history, start=1)
            )
        for task in rec.dirty_tasks:
            self._write_task(db, task, spec)
        if rec.consumed_signals:
            db.executemany("DELETE FROM signals WHERE seq = ?", [(s,) for s in rec.consumed_signals])
        if rec.status.is_terminal:
            db.execute("DELETE FROM signals WHERE instance_id = ?", (rec.id,))  # nobody will consume them
        return (
            rec.id,
            spec.name,
            spec.version,
            spec.fingerprint,
            state,
            rec.status.value,
            _dumps(unstructure(rec.wf)),
            payload,
            _dumps(rec.saga) if rec.saga else "[]",
            rec.attempt,
            rec.comp_attempt,
            rec.visit,
            task_id,
            _text(rec.error),
            _text(rec.cause),
            _dumps(rec.cancel) if rec.cancel is not None else None,
            rec.wake_at,
            rec.history_len + len(rec.history),
            rec.created_at,
            now,
            branches,
            rec.parent,
        )

    def _write_task(self, db: sqlite3.Connection, task: Task, spec: WorkflowSpec) -> None:
        form = None
        if task.status is TaskStatus.COMPLETED:
            form = json.dumps({"v": unstructure(task.form, task.form_type)})
        db.execute(
            "INSERT OR REPLACE INTO tasks (id, instance_id, workflow, version, fingerprint, step, assignee, "
            "groups, created_at, due_at, status, completed_by, completed_at, form) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.id,
                task.instance_id,
                spec.name,
                spec.version,
                spec.fingerprint,
                task.step,
                _text(task.assignee),
                json.dumps(task.candidate_groups),
                task.created_at,
                task.due_at,
                task.status.value,
                _text(task.completed_by),
                task.completed_at,
                form,
            ),
        )
        if task.status is TaskStatus.OPEN:
            db.executemany(
                "INSERT OR IGNORE INTO task_groups (grp, task_id) VALUES (?, ?)",
                [(_text(g), task.id) for g in task.candidate_groups],
            )
        else:
            db.execute("DELETE FROM task_groups WHERE task_id = ?", (task.id,))

    # ----------------------------------------------------------------- reading

    def _spec(
        self, instance_id: str, workflow: str, version: str, fingerprint: str | None
    ) -> tuple[type[Any], WorkflowSpec]:
        cls = self._registry.resolve(workflow, version, fingerprint)
        if cls is None:
            changed = self._registry.has(workflow, version)
            known = self._registry.versions(workflow)
            raise UnknownWorkflowVersion(instance_id, workflow, version, known, changed=changed)
        return cls, cls.__orch_spec__

    @_reads
    def load(self, instance_id: str) -> InstanceRecord | None:
        """
        The committed state of an instance.

        Raises:
            UnknownWorkflowVersion: Its version has no registered class.
            RecordLoadError: Its row cannot be read back (a value of the wrong type, damaged JSON).
        """
        if not _encodable(instance_id):
            return None  # such an id cannot have been stored
        row = self._db.execute(
            "SELECT workflow, version, state, status, variables, payload, saga, attempt, comp_attempt, "
            "visit, task_id, error, cause, cancel, wake_at, history_len, created_at, fingerprint, branches, "
            "parent FROM instances WHERE id = ?",
            (instance_id,),
        ).fetchone()
        if row is None:
            return None
        workflow, version, fingerprint = row[0], row[1], row[17]
        cls, spec = self._spec(instance_id, workflow, version, fingerprint)
        try:
            return self._record(instance_id, row, cls, spec)
        except OrchError:
            raise  # typed already (RecordLoadError names the field)
        except Exception as exc:
            # A damaged row: the engine quarantines this instance and goes on with the others.
            detail = f"a stored row is damaged ({type(exc).__name__}: {exc})"
            raise RecordLoadError(f"a stored {spec.name}", "", detail, instance_id=instance_id, path=self.path) from exc

    @staticmethod
    def _record(instance_id: str, row: tuple[Any, ...], cls: Any, spec: WorkflowSpec) -> InstanceRecord:
        """Build the record of one instance's row."""
        (_, _, state, status, variables, payload, saga, attempt, comp_attempt, visit) = row[:10]
        (task_id, error, cause, cancel, wake_at, history_len, created_at, _, branches, parent) = row[10:]
        wf = structure(json.loads(variables), cls)
        in_fork = state.startswith("[")
        setattr(wf, STATE_ATTRIBUTE, json.loads(state) if in_fork else state)
        rec = InstanceRecord(instance_id, wf, spec, cls.__orch_machine__, created_at)
        rec.status = InstanceStatus(status)
        rec.saga = [(s, int(v)) for s, v in json.loads(saga)]
        rec.attempt = attempt
        rec.comp_attempt = comp_attempt
        rec.visit = visit
        rec.task_id = task_id
        rec.error = error
        rec.cause = cause
        rec.cancel = (str(json.loads(cancel)[0]), bool(json.loads(cancel)[1])) if cancel else None
        rec.wake_at = wake_at
        rec.history_len = history_len
        rec.parent = parent
        if in_fork:
            rec.task_id = None
            rec.branches = _branches_of(spec, json.loads(branches or "{}"))
        if payload is not None:
            tp = spec.step(state).payload_type if spec.has_step(state) else None
            rec.payload = structure(json.loads(payload)["v"], tp) if tp is not None else None
        return rec

    @staticmethod
    def _info(row: tuple[Any, ...]) -> InstanceInfo:
        instance_id, workflow, version, status, state, created_at, error, task_id, wake_at, parent = row
        in_fork = state.startswith("[")
        steps = tuple(active_steps(json.loads(state) if in_fork else state))
        return InstanceInfo(
            id=instance_id,
            workflow=workflow,
            version=version,
            status=InstanceStatus(status),
            step=steps[0] if steps else None,
            created_at=created_at,
            error=error,
            open_task=task_id,
            wake_at=wake_at,
            steps=steps,
            in_fork=in_fork,
            parent=parent,
        )

    @_reads
    def info(self, instance_id: str) -> InstanceInfo | None:
        """A snapshot of the committed instance."""
        if not _encodable(instance_id):
            return None
        row = self._db.execute(f"SELECT {_INFO_COLUMNS} FROM instances WHERE id = ?", (instance_id,)).fetchone()
        return self._info(row) if row is not None else None

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
        return [self._info(r) for r in rows]

    @_reads
    def children(self, parent_id: str) -> list[InstanceInfo]:
        """The instance's children, oldest first."""
        if not _encodable(parent_id):
            return []
        rows = self._db.execute(
            f"SELECT {_INFO_COLUMNS} FROM instances WHERE parent = ? ORDER BY created_at", (parent_id,)
        )
        return [self._info(r) for r in rows]

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
        return [HistoryEvent(at, EventKind(kind), step, attempt, detail) for at, kind, step, attempt, detail in rows]

    _TASK_COLUMNS = (
        "id, instance_id, workflow, version, step, assignee, groups, created_at, due_at, status, "
        "completed_by, completed_at, form, fingerprint"
    )

    def _task(self, row: tuple[Any, ...]) -> Task:
        (task_id, instance_id, workflow, version, step, assignee, groups, created_at, due_at) = row[:9]
        (status, completed_by, completed_at, form, fingerprint) = row[9:]
        cls = self._registry.resolve(workflow, version, fingerprint)
        spec = cls.__orch_spec__ if cls is not None else None
        task_spec = spec.step(step).task if spec is not None and spec.has_step(step) else None
        form_type = task_spec.form if task_spec is not None else None
        value: object = None
        if form is not None and form_type is not None:
            value = structure(json.loads(form)["v"], form_type)
        return Task(
            id=task_id,
            instance_id=instance_id,
            workflow=workflow,
            step=step,
            assignee=assignee,
            candidate_groups=tuple(json.loads(groups)),
            form_type=form_type,
            created_at=created_at,
            due_at=due_at,
            status=TaskStatus(status),
            completed_by=completed_by,
            completed_at=completed_at,
            form=value,
        )

    @_reads
    def task(self, task_id: str) -> Task | None:
        """The task with this id, if any."""
        if not _encodable(task_id):
            return None
        row = self._db.execute(f"SELECT {self._TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return self._task(row) if row is not None else None

    @_reads
    def open_tasks(self, user: str | None, groups: frozenset[str], instance_id: str | None) -> list[Task]:
        """Open tasks, filtered through the indexes on assignee and groups."""
        cols = self._TASK_COLUMNS
        if instance_id is not None:
            if not _encodable(instance_id):
                return []
            rows = self._db.execute(
                f"SELECT {cols} FROM tasks WHERE instance_id = ? AND status = 'open'",
                (instance_id,),
            )
            found = [self._task(r) for r in rows]
            return [t for t in found if user is None or t.may_complete(user, groups)]
        if user is None:
            rows = self._db.execute(f"SELECT {cols} FROM tasks WHERE status = 'open' ORDER BY created_at")
            return [self._task(r) for r in rows]
        # A user or group that cannot be encoded matches no task (`assignee = NULL` is never true).
        groups = frozenset(g for g in groups if _encodable(g))
        assignee = user if _encodable(user) else None
        marks = ",".join("?" * len(groups))
        by_group = f" UNION SELECT task_id FROM task_groups WHERE grp IN ({marks})" if groups else ""
        rows = self._db.execute(
            f"SELECT {cols} FROM tasks WHERE id IN (SELECT id FROM tasks WHERE assignee = ? AND status = 'open'"
            f"{by_group}) AND status = 'open' ORDER BY created_at",
            (assignee, *sorted(groups)),
        )
        return [self._task(r) for r in rows]

    # ----------------------------------------------------------------- signals and timers

    def add_signal(self, instance_id: str, type_name: str, message: object) -> int:
        """Durably keep a message (its own transaction)."""
        payload = json.dumps(unstructure(message))
        try:
            cur = self._db.execute(
                "INSERT INTO signals (instance_id, type, payload) VALUES (?, ?, ?)",
                (instance_id, type_name, payload),
            )
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
        types = {
            f"{s.message.__module__}.{s.message.__qualname__}": s.message
            for s in cls.__orch_spec__.steps
            if s.message is not None
        }
        rows = self._db.execute(
            "SELECT seq, type, payload FROM signals WHERE instance_id = ? ORDER BY seq", (instance_id,)
        )
        out: list[Signal] = []
        for seq, type_name, payload in rows:
            tp = types.get(type_name)
            if tp is not None:
                message: object = structure(json.loads(payload), tp)
                out.append(Signal(seq, type_name, message))
        return out

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


def _branch_rows(rec: InstanceRecord) -> dict[str, list[object]]:
    """Each branch of a forked instance as ``[attempt, visit, task, wake_at, waiting, payload]``."""
    spec = rec.spec
    out: dict[str, list[object]] = {}
    for name, b in rec.branches.items():
        payload = None
        # A subflow's finished child is not stored: it is read again from its own row.
        if b.payload is not NO_PAYLOAD and spec.step(name).child is None:
            payload = {"v": unstructure(b.payload, spec.step(name).payload_type)}
        out[name] = [b.attempt, b.visit, b.task_id, b.wake_at, b.waiting, payload]
    return out


def _branches_of(spec: WorkflowSpec, rows: dict[str, list[Any]]) -> dict[str, Branch]:
    out: dict[str, Branch] = {}
    for name, (attempt, visit, task_id, wake_at, waiting, payload) in rows.items():
        b = Branch(int(visit))
        b.attempt = int(attempt)
        b.task_id = task_id
        b.wake_at = wake_at
        b.waiting = bool(waiting)
        if payload is not None:
            tp = spec.step(name).payload_type
            b.payload = structure(payload["v"], tp) if tp is not None else None
        out[name] = b
    return out
