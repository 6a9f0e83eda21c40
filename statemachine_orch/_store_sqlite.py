"""
``SqliteStore``: the embedded, durable default store.

One SQLite file in WAL mode. Each ``commit`` is one ``BEGIN IMMEDIATE`` …
``COMMIT`` transaction holding every change of every record passed to it: the
instance row (machine state, status, variables as JSON through cattrs, saga,
counters, timer), its new history rows, its changed tasks and the signals it
consumed. The engine batches the commits of concurrent instances into one call
(group commit), so one fsync covers many transitions.

One engine process uses a file at a time: a lock file next to it (``flock``,
released by the kernel when the process dies, even by SIGKILL) says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, Self, TypeVar

from ._errors import StoreError, UnknownWorkflowVersion
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
    """Turn an SQLite error during a read into a StoreError naming the file."""

    @functools.wraps(method)
    def read(self: SqliteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            msg = f"cannot use {self.path}: reading it failed ({method.__name__}): {exc}"
            raise StoreError(msg, self.path) from exc

    return read


FaultPoint = Literal["before_commit", "after_commit"]
"""Where ``SqliteStore.fault`` is called: inside the transaction before ``COMMIT``
(raising there makes the commit fail), or after ``COMMIT`` succeeded (raising
there loses the acknowledgement of a commit that happened)."""


class SqliteStore:
    """
    The durable default store: one SQLite file (WAL), one transaction per commit.

    Args:
        path: The database file; created with its schema when missing.
        synchronous: SQLite's ``synchronous`` setting: ``"FULL"`` (default: a
            commit survives power loss) or ``"NORMAL"`` (survives a crash of the
            process, faster).
        check: Run ``PRAGMA quick_check`` when opening (slow on big files).
        fault: For tests: called with a :data:`FaultPoint` at each commit; an
            exception it raises is injected there.

    Raises:
        StoreError: The file is used by another engine, read-only, not a
            statemachine-orch database, corrupt, or from a newer version.

    .. versionadded:: 0.1.0
    """

    group_commit = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        check: bool = False,
        fault: Callable[[FaultPoint], None] | None = None,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            msg = f"SqliteStore(synchronous={synchronous!r}): use 'FULL' (survives power loss) or 'NORMAL'"
            raise ValueError(msg)
        self.path: str = str(path)
        self.fault: Callable[[FaultPoint], None] | None = fault
        self._registry = default_registry
        self._lock_fd = self._lock()
        try:
            self._db = self._open(synchronous, check=check)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ----------------------------------------------------------------- opening

    def _fail(self, what: str, exc: BaseException | None = None) -> StoreError:
        detail = f": {exc}" if exc is not None else ""
        return StoreError(f"cannot use {self.path}: {what}{detail}", self.path)

    def _lock(self) -> int:
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError as exc:
            raise self._fail("its directory does not exist", exc) from None
        except OSError as exc:
            raise self._fail("cannot create its lock file (is the directory read-only?)", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            msg = f"it is used by another engine process (pid {holder}); one engine per SQLite file"
            raise self._fail(msg) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

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
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            current = 0
            if has_meta:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                current = int(row[0]) if row else 0
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
        """Close the database and release the lock file."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

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
                (rid, base + i, e.at, e.kind.value, e.step, e.attempt, e.detail)
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
            rec.error,
            rec.cause,
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
                task.assignee,
                json.dumps(task.candidate_groups),
                task.created_at,
                task.due_at,
                task.status.value,
                task.completed_by,
                task.completed_at,
                form,
            ),
        )
        if task.status is TaskStatus.OPEN:
            db.executemany(
                "INSERT OR IGNORE INTO task_groups (grp, task_id) VALUES (?, ?)",
                [(g, task.id) for g in task.candidate_groups],
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
        """
        row = self._db.execute(
            "SELECT workflow, version, state, status, variables, payload, saga, attempt, comp_attempt, "
            "visit, task_id, error, cause, cancel, wake_at, history_len, created_at, fingerprint, branches, "
            "parent FROM instances WHERE id = ?",
            (instance_id,),
        ).fetchone()
        if row is None:
            return None
        (workflow, version, state, status, variables, payload, saga, attempt, comp_attempt, visit) = row[:10]
        (task_id, error, cause, cancel, wake_at, history_len, created_at, fingerprint, branches, parent) = row[10:]
        cls, spec = self._spec(instance_id, workflow, version, fingerprint)
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
            where.append("workflow = ?")
            args.append(workflow)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(f"SELECT {_INFO_COLUMNS} FROM instances{clause} ORDER BY created_at", args)
        return [self._info(r) for r in rows]

    @_reads
    def children(self, parent_id: str) -> list[InstanceInfo]:
        """The instance's children, oldest first."""
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
        row = self._db.execute(f"SELECT {self._TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return self._task(row) if row is not None else None

    @_reads
    def open_tasks(self, user: str | None, groups: frozenset[str], instance_id: str | None) -> list[Task]:
        """Open tasks, filtered through the indexes on assignee and groups."""
        cols = self._TASK_COLUMNS
        if instance_id is not None:
            rows = self._db.execute(
                f"SELECT {cols} FROM tasks WHERE instance_id = ? AND status = 'open'",
                (instance_id,),
            )
            found = [self._task(r) for r in rows]
            return [t for t in found if user is None or t.may_complete(user, groups)]
        if user is None:
            rows = self._db.execute(f"SELECT {cols} FROM tasks WHERE status = 'open' ORDER BY created_at")
            return [self._task(r) for r in rows]
        marks = ",".join("?" * len(groups))
        by_group = f" UNION SELECT task_id FROM task_groups WHERE grp IN ({marks})" if groups else ""
        rows = self._db.execute(
            f"SELECT {cols} FROM tasks WHERE id IN (SELECT id FROM tasks WHERE assignee = ? AND status = 'open'"
            f"{by_group}) AND status = 'open' ORDER BY created_at",
            (user, *sorted(groups)),
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
