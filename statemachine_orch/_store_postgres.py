"""
``PostgresStore``: the store that several worker processes share (issue 9).

The same contract as :class:`~statemachine_orch.SqliteStore` (``_store.py``'s
``Store`` protocol and ``docs/design/leases.md``) on a PostgreSQL database, through
psycopg 3 and a ``psycopg_pool.ConnectionPool``. Each ``commit`` is one transaction
holding every change of every record passed to it; an instance row is updated only
while its stored fence is the record's (else :class:`LeaseLost`, nothing written).

Columns mean what they mean in the SQLite store; the JSON values (variables,
payload, saga, cancel, branches, task groups, forms, messages, command bodies) are
``jsonb``, encoded and decoded through ``_serialize`` as there, and times are
``double precision`` seconds since the epoch. Differences a caller can see, all
due to PostgreSQL:

- ``jsonb`` keeps an object's keys in its own order (shortest first), not in the
  order they were written: a ``dict`` variable comes back equal but may iterate
  in another order. (A fork's branches keep their order: they are stored as an
  array of ``[name, branch]`` pairs.)
- ``jsonb`` refuses NaN and infinite floats, and strings holding a NUL character
  or a lone surrogate: a commit of such a variable fails with a ``StoreError``.
  Free text columns (errors, user names, history details) have those characters
  escaped (as ``backslash x00``, ``backslash udc80``) instead.

The schema lives in one PostgreSQL schema (``public`` by default) and is versioned
in its table ``meta``: :func:`upgrade` brings it to :data:`SCHEMA_VERSION` in one
transaction under an advisory lock, so processes that start together do not race.

Command notifications: ``add_command`` and every commit with an outbox send
``NOTIFY orch_commands, '<instance id>'``; :meth:`PostgresStore.listen` hears them
on a connection of its own. The channel is the database's, not the schema's: two
stores in two schemas of one database hear each other's (harmless) notifications.
Task notifications: a trigger (schema 7) makes every transaction that writes a
task row notify ``orch_tasks``; :meth:`PostgresStore.watch_tasks` hears them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Final, LiteralString, ParamSpec, Self, TypeVar

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

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
from ._store_rows import dumps as _dumps
from ._store_sqlite import FaultPoint
from ._tasks import Task, TaskClaim, TaskReassignment, TaskStatus

if TYPE_CHECKING:
    from ._spec import WorkflowSpec

__all__ = ["MIGRATIONS", "NOTIFY_CHANNEL", "SCHEMA_VERSION", "TASKS_CHANNEL", "PostgresStore", "upgrade"]

_log: Any = structlog.get_logger("statemachine_orch.store")

SCHEMA_VERSION: Final = 7
"""The schema version this library writes (table ``meta``, key ``schema_version``)."""

APPLICATION: Final = "statemachine-orch"
"""Table ``meta``'s ``application`` value: marks a schema as ours."""

NOTIFY_CHANNEL: Final = "orch_commands"
"""The channel ``add_command`` and commits with an outbox notify, the payload an instance id."""

TASKS_CHANNEL: Final = "orch_tasks"
"""The channel every transaction that changes a task row notifies (a trigger, schema 7), with an empty payload."""

# The schema, as the list of statements that upgrade it from one version to the
# next; a schema at version N runs N+1.. in one transaction (see upgrade()).
MIGRATIONS: dict[int, list[LiteralString]] = {
    1: [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # seq: the order rows were written in (SQLite's rowid), which breaks ties of
        # equal times; owner, lease_until and fence: the lease (docs/design/leases.md).
        """CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            workflow TEXT NOT NULL,
            version TEXT NOT NULL,
            fingerprint TEXT,
            state TEXT NOT NULL,
            status TEXT NOT NULL,
            variables JSONB NOT NULL,
            payload JSONB,
            saga JSONB NOT NULL,
            attempt BIGINT NOT NULL,
            comp_attempt BIGINT NOT NULL,
            visit BIGINT NOT NULL,
            task_id TEXT,
            error TEXT,
            cause TEXT,
            cancel JSONB,
            wake_at DOUBLE PRECISION,
            history_len BIGINT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            branches JSONB,
            parent TEXT,
            owner TEXT,
            lease_until DOUBLE PRECISION,
            fence BIGINT NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX instances_wake ON instances (wake_at, seq) WHERE wake_at IS NOT NULL",
        "CREATE INDEX instances_status ON instances (status, created_at)",
        "CREATE INDEX instances_parent ON instances (parent) WHERE parent IS NOT NULL",
        # claim_runnable's in-flight instances (their owner died), by lease expiry.
        (
            "CREATE INDEX instances_in_flight ON instances (lease_until) "
            "WHERE status IN ('running', 'compensating') AND wake_at IS NULL"
        ),
        # owners(), expire(owner), commanded(owner).
        "CREATE INDEX instances_owner ON instances (owner) WHERE owner IS NOT NULL",
        """CREATE TABLE history (
            instance_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            step TEXT,
            attempt BIGINT NOT NULL,
            detail TEXT,
            PRIMARY KEY (instance_id, seq)
        )""",
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            instance_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            version TEXT NOT NULL,
            fingerprint TEXT,
            step TEXT NOT NULL,
            assignee TEXT,
            groups JSONB NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            due_at DOUBLE PRECISION,
            status TEXT NOT NULL,
            completed_by TEXT,
            completed_at DOUBLE PRECISION,
            form JSONB
        )""",
        "CREATE INDEX tasks_open_assignee ON tasks (assignee) WHERE status = 'open'",
        "CREATE INDEX tasks_open ON tasks (created_at, seq) WHERE status = 'open'",
        "CREATE INDEX tasks_instance ON tasks (instance_id)",
        # Open tasks by group: the primary key; deleting a task's groups: task_groups_task.
        "CREATE TABLE task_groups (grp TEXT NOT NULL, task_id TEXT NOT NULL, PRIMARY KEY (grp, task_id))",
        "CREATE INDEX task_groups_task ON task_groups (task_id)",
        """CREATE TABLE signals (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            instance_id TEXT NOT NULL,
            type TEXT NOT NULL,
            payload JSONB NOT NULL
        )""",
        "CREATE INDEX signals_instance ON signals (instance_id, seq)",
        """CREATE TABLE commands (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            instance_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            body JSONB NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX commands_instance ON commands (instance_id, seq)",
    ],
    # A commit's fence check that fails the statement (and so its whole implicit
    # transaction) when a worker's lease was taken over: one round trip per commit.
    2: [
        """CREATE FUNCTION orch_lease_lost(ids TEXT) RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = 'OR001', MESSAGE = 'lease lost: ' || ids;
        END
        $$""",
    ],
    # Schedules (Engine(schedules=...)): how far each one's due times were dealt with.
    3: [
        """CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            cursor DOUBLE PRECISION NOT NULL,
            last_instance TEXT,
            started BIGINT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
    ],
    # Who claimed an open task (claim_task): only they may complete it then. Written
    # only with a claim's command, never by a commit of the task's row (_UPSERT_TASKS).
    4: [
        "ALTER TABLE tasks ADD COLUMN claimed_by TEXT",
        "CREATE INDEX tasks_open_claimed ON tasks (claimed_by) WHERE status = 'open' AND claimed_by IS NOT NULL",
    ],
    # Why an instance did not complete, as JSON text (ASCII: outcome, step, exception).
    5: ["ALTER TABLE instances ADD COLUMN failure TEXT"],
    # A page of a user's inbox, oldest first (open_tasks with a limit), read from indexes in
    # that order: by assignee, by claimant, and by group (each group's rows carry their
    # task's created_at and seq), so a page costs its own rows, not all the user's tasks.
    6: [
        "ALTER TABLE task_groups ADD COLUMN created_at DOUBLE PRECISION",
        "ALTER TABLE task_groups ADD COLUMN seq BIGINT",
        "UPDATE task_groups g SET created_at = t.created_at, seq = t.seq FROM tasks t WHERE t.id = g.task_id",
        "CREATE INDEX task_groups_inbox ON task_groups (grp, created_at, seq)",
        "DROP INDEX tasks_open_assignee",
        "CREATE INDEX tasks_open_assignee ON tasks (assignee, created_at, seq) WHERE status = 'open'",
        "DROP INDEX tasks_open_claimed",
        (
            "CREATE INDEX tasks_open_claimed ON tasks (claimed_by, created_at, seq) "
            "WHERE status = 'open' AND claimed_by IS NOT NULL"
        ),
    ],
    # Whoever changes a task row (a commit opening or closing it, a claim, a reassignment,
    # a cancel), in whatever process, notifies orch_tasks in the same transaction: delivered
    # at its commit, once per transaction (equal notifications are folded), so that a
    # reader keeping answers about tasks (orch serve's inbox) knows they may be stale.
    7: [
        """CREATE FUNCTION orch_tasks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('orch_tasks', '');
            RETURN NULL;
        END
        $$""",
        (
            "CREATE TRIGGER tasks_changed AFTER INSERT OR UPDATE OR DELETE ON tasks "
            "FOR EACH ROW EXECUTE FUNCTION orch_tasks_changed()"
        ),
    ],
}

_TABLES: Final = ("meta", "instances", "history", "tasks", "task_groups", "signals", "commands", "schedules")

# ----------------------------------------------------------------- statements

_LIVE: Final = "status NOT IN ('completed', 'failed', 'cancelled', 'compensation_failed')"
"""SQL: the instance is not terminal."""

_ANSWERS: Final = "status NOT IN ('completed', 'failed', 'cancelled')"
"""SQL: the instance can still act on a command: live, or ``compensation_failed`` (a retry of its compensations)."""

# Each commit writes one statement per table whatever the number of records (with
# group commit, hundreds): the rows go as one JSON array of arrays (a parameter
# %(rows)s or %s, dumped by the json module in C: psycopg dumps a Python list as a
# PostgreSQL array element by element, in Python), json_array_elements()ed.

_INSERT_NEW: Final = """
INSERT INTO instances (id, workflow, version, fingerprint, state, status, variables, payload, saga, attempt,
    comp_attempt, visit, task_id, error, cause, cancel, wake_at, history_len, created_at, updated_at, branches,
    parent, owner, lease_until, fence, failure)
SELECT v.id, v.workflow, v.version, v.fingerprint, v.state, v.status, v.variables::jsonb, v.payload::jsonb,
    v.saga::jsonb, v.attempt, v.comp_attempt, v.visit, v.task_id, v.error, v.cause, v.cancel::jsonb, v.wake_at,
    v.history_len, v.created_at, v.updated_at, v.branches::jsonb, v.parent, v.owner, v.lease_until, v.fence,
    v.failure
FROM (SELECT e->>0, e->>1, e->>2, e->>3, e->>4, e->>5, e->>6, e->>7, e->>8, (e->>9)::bigint, (e->>10)::bigint,
        (e->>11)::bigint, e->>12, e->>13, e->>14, e->>15, (e->>16)::float8, (e->>17)::bigint, (e->>18)::float8,
        e->>19, (e->>20)::bigint, e->>21, (e->>22)::float8, e->>23, e->>24, (e->>25)::float8
    FROM json_array_elements(%(rows)s::json) AS e)
    AS v(id, workflow, version, fingerprint, state, status, variables, payload, saga, attempt, comp_attempt, visit,
        task_id, error, cause, cancel, wake_at, history_len, updated_at, branches, fence, failure, created_at, parent,
        owner, lease_until)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
"""New instances' rows, with their leases; an id not returned was taken."""

_INSERT_ONE: Final = """
INSERT INTO instances (id, workflow, version, fingerprint, state, status, variables, payload, saga, attempt,
    comp_attempt, visit, task_id, error, cause, cancel, wake_at, history_len, created_at, updated_at, branches,
    parent, owner, lease_until, fence, failure)
VALUES (%(id)s, %(workflow)s, %(version)s, %(fingerprint)s, %(state)s, %(status)s, %(variables)s::jsonb,
    %(payload)s::jsonb, %(saga)s::jsonb, %(attempt)s, %(comp_attempt)s, %(visit)s, %(task_id)s, %(error)s,
    %(cause)s, %(cancel)s::jsonb, %(wake_at)s::float8, %(history_len)s, %(created_at)s::float8,
    %(updated_at)s::float8, %(branches)s::jsonb, %(parent)s, %(owner)s, %(lease_until)s::float8, %(fence)s::bigint,
    %(failure)s)
RETURNING id
"""
"""One new instance's row; a taken id fails the statement (``instances_pkey``), and its transaction with it."""

_UPDATE: Final = """
UPDATE instances AS t SET workflow = v.workflow, version = v.version, fingerprint = v.fingerprint, state = v.state,
    status = v.status, variables = v.variables::jsonb, payload = v.payload::jsonb, saga = v.saga::jsonb,
    attempt = v.attempt, comp_attempt = v.comp_attempt, visit = v.visit, task_id = v.task_id, error = v.error,
    cause = v.cause, cancel = v.cancel::jsonb, wake_at = v.wake_at, history_len = v.history_len,
    updated_at = v.updated_at, branches = v.branches::jsonb, failure = v.failure
FROM (SELECT e->>0, e->>1, e->>2, e->>3, e->>4, e->>5, e->>6, e->>7, e->>8, (e->>9)::bigint, (e->>10)::bigint,
        (e->>11)::bigint, e->>12, e->>13, e->>14, e->>15, (e->>16)::float8, (e->>17)::bigint, (e->>18)::float8,
        e->>19, (e->>20)::bigint, e->>21
    FROM json_array_elements(%(rows)s::json) AS e)
    AS v(id, workflow, version, fingerprint, state, status, variables, payload, saga, attempt, comp_attempt, visit,
        task_id, error, cause, cancel, wake_at, history_len, updated_at, branches, fence, failure)
WHERE t.id = v.id AND (v.fence = 0 OR t.fence = v.fence)
RETURNING t.id
"""
"""Stored instances' rows, each fenced (a fence of 0: no check); an id not returned lost its lease (or its row)."""

_UPDATE_ONE: Final = """
UPDATE instances SET workflow = %(workflow)s, version = %(version)s, fingerprint = %(fingerprint)s, state = %(state)s,
    status = %(status)s, variables = %(variables)s::jsonb, payload = %(payload)s::jsonb, saga = %(saga)s::jsonb,
    attempt = %(attempt)s, comp_attempt = %(comp_attempt)s, visit = %(visit)s, task_id = %(task_id)s,
    error = %(error)s, cause = %(cause)s, cancel = %(cancel)s::jsonb, wake_at = %(wake_at)s::float8,
    history_len = %(history_len)s, updated_at = %(updated_at)s::float8, branches = %(branches)s::jsonb,
    failure = %(failure)s
WHERE id = %(id)s AND (%(fence)s::bigint = 0 OR fence = %(fence)s::bigint)
RETURNING id
"""
"""One stored instance's row, fenced (a fence of 0: no check); not returned: its lease (or its row) is gone."""

_INSERT_HISTORY: Final = """
INSERT INTO history (instance_id, seq, at, kind, step, attempt, detail)
SELECT e->>0, (e->>1)::bigint, (e->>2)::float8, e->>3, e->>4, (e->>5)::bigint, e->>6
FROM json_array_elements(%(history)s::json) AS e
"""
"""History rows, given as the JSON parameter ``history``."""

_DELETE_ENDED_SIGNALS: Final = """
DELETE FROM signals WHERE instance_id IN (SELECT json_array_elements_text(%(ended)s::json))
"""
"""The messages of instances that ended (the JSON parameter ``ended``): nobody will consume them."""

# The common commit as ONE statement (no pipeline: psycopg's pipeline polls its
# socket until the results come, which costs the worker CPU): the rows' statement as
# CTE ``u``, the history rows and, for instances that ended, the deletion of their
# messages as further CTEs (all run to completion), and a final SELECT that fails
# the statement, and so everything in it, when a fence moved (``orch_lease_lost``).
_ROWS_ONE: Final = f"WITH u AS ({_UPDATE_ONE.strip()})"
_ROWS_MANY: Final = f"WITH u AS ({_UPDATE.strip()})"
_ROWS_NEW: Final = f"WITH u AS ({_INSERT_ONE.strip()})"
_HISTORY_CTE: Final = f",\nh AS ({_INSERT_HISTORY.strip()})"
_ENDED_CTE: Final = f",\nd AS ({_DELETE_ENDED_SIGNALS.strip()})"
_GUARD_ONE: Final = "\nSELECT CASE WHEN EXISTS (SELECT FROM u) THEN 0 ELSE orch_lease_lost(%(id)s) END"
_GUARD_MANY: Final = """
SELECT orch_lease_lost(string_agg(e->>0, ' ')) FROM json_array_elements(%(rows)s::json) AS e
WHERE e->>0 NOT IN (SELECT id FROM u) HAVING count(*) > 0"""
_GUARD_NEW: Final = "\nSELECT count(*) FROM u"

_LEASE_LOST: Final = "OR001"
"""The SQLSTATE ``orch_lease_lost()`` raises."""

_UPDATE_KEYS: Final = (
    *("id", "workflow", "version", "fingerprint", "state", "status", "variables", "payload", "saga", "attempt"),
    *("comp_attempt", "visit", "task_id", "error", "cause", "cancel", "wake_at", "history_len", "updated_at"),
    *("branches", "fence", "failure"),
)
_INSERT_KEYS: Final = (*_UPDATE_KEYS, "created_at", "parent", "owner", "lease_until")

_UPSERT_TASKS: Final = """
INSERT INTO tasks (id, instance_id, workflow, version, fingerprint, step, assignee, groups, created_at, due_at,
    status, completed_by, completed_at, form)
SELECT v.id, v.instance_id, v.workflow, v.version, v.fingerprint, v.step, v.assignee, v.groups::jsonb, v.created_at,
    v.due_at, v.status, v.completed_by, v.completed_at, v.form::jsonb
FROM (SELECT e->>0, e->>1, e->>2, e->>3, e->>4, e->>5, e->>6, e->>7, (e->>8)::float8, (e->>9)::float8, e->>10,
        e->>11, (e->>12)::float8, e->>13
    FROM json_array_elements(%s::json) AS e)
    AS v(id, instance_id, workflow, version, fingerprint, step, assignee, groups, created_at, due_at, status,
        completed_by, completed_at, form)
ON CONFLICT (id) DO UPDATE SET instance_id = excluded.instance_id, workflow = excluded.workflow,
    version = excluded.version, fingerprint = excluded.fingerprint, step = excluded.step,
    assignee = excluded.assignee, groups = excluded.groups, created_at = excluded.created_at,
    due_at = excluded.due_at, status = excluded.status, completed_by = excluded.completed_by,
    completed_at = excluded.completed_at, form = excluded.form
"""

_INSERT_OUTBOX: Final = """
INSERT INTO commands (instance_id, kind, body, created_at)
SELECT v.instance_id, v.kind, v.body::jsonb, v.created_at
FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[]) WITH ORDINALITY
    AS v(instance_id, kind, body, created_at, n)
ORDER BY v.n
"""

_INSERT_SIGNALS: Final = """
INSERT INTO signals (instance_id, type, payload)
SELECT v.instance_id, v.type, v.payload::jsonb
FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS v(instance_id, type, payload, n)
ORDER BY v.n
"""
"""Messages steps sent (``ctx.signal``), in the order they were sent."""

_INSERT_COMMAND: Final = (
    "INSERT INTO commands (instance_id, kind, body, created_at) VALUES (%s, %s, %s::jsonb, %s) RETURNING seq"
)

_INSERT_GROUPS: Final = """
INSERT INTO task_groups (grp, task_id, created_at, seq)
SELECT mine.grp, tasks.id, tasks.created_at, tasks.seq
FROM unnest(%s::text[], %s::text[]) AS mine(grp, task_id) JOIN tasks ON tasks.id = mine.task_id
ON CONFLICT DO NOTHING
"""
"""Open tasks' groups, with the task's order (its row is written first, in the same transaction)."""

_NOT_OPEN: Final = "is no longer open; a task completes once"
_NOT_OPEN_CLAIM: Final = "is no longer open; only an open task is claimed"
_NOT_OPEN_REASSIGN: Final = "is no longer open; only an open task is reassigned"

_NOTIFY: Final = "SELECT pg_notify('orch_commands', %s)"
_NOTIFY_ALL: Final = "SELECT pg_notify('orch_commands', i) FROM unnest(%s::text[]) AS i"

_LOAD: Final = (
    "SELECT workflow, version, state, status, variables, payload, saga, attempt, comp_attempt, visit, task_id, "
    "error, cause, cancel, wake_at, history_len, created_at, fingerprint, branches, parent, fence, failure "
    "FROM instances WHERE id = %s"
)

_INFO_COLUMNS: Final = "id, workflow, version, status, state, created_at, error, task_id, wake_at, parent, failure"

_TASK_COLUMNS: Final = (
    "id, instance_id, workflow, version, step, assignee, groups, created_at, due_at, status, "
    "completed_by, completed_at, form, fingerprint, claimed_by"
)

_MAY: Final = (
    "status = 'open' AND (claimed_by IS NULL OR claimed_by = %(who)s) "
    "AND (%(due)s::float8 IS NULL OR due_at <= %(due)s::float8)"
)

_INBOX: Final = f"""
SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ANY(ARRAY(
    SELECT id FROM (
        (SELECT id, created_at, seq FROM tasks WHERE assignee = %(who)s AND {_MAY}
            ORDER BY created_at, seq LIMIT %(limit)s)
        UNION
        (SELECT id, created_at, seq FROM tasks WHERE claimed_by = %(who)s AND {_MAY}
            ORDER BY created_at, seq LIMIT %(limit)s)
        UNION
        SELECT found.id, found.created_at, found.seq FROM unnest(%(groups)s::text[]) AS mine(grp) CROSS JOIN LATERAL (
            SELECT tasks.id, tasks.created_at, tasks.seq FROM task_groups JOIN tasks ON tasks.id = task_groups.task_id
            WHERE task_groups.grp = mine.grp AND {_MAY}
            ORDER BY task_groups.created_at, task_groups.seq LIMIT %(limit)s
        ) AS found
    ) AS candidates
    ORDER BY created_at, seq LIMIT %(limit)s
))
ORDER BY created_at, seq
"""
"""The open tasks *who* (in *groups*) may complete (a claimed one: only its claimant), oldest first, at most
*limit* (NULL: all), due by *due* (NULL: any). Each way a task is theirs (assignee, claimant, each group)
gives at most *limit* candidates, read from an index in that order; the first *limit* of those are then
fetched by id: a page reads about its own rows (times the user's groups), however many tasks they have."""

_CLAIM: Final = """
UPDATE instances SET owner = %(owner)s, lease_until = %(until)s, fence = fence + 1
WHERE id = %(id)s
    AND (owner IS NULL OR owner = %(owner)s OR lease_until IS NULL OR lease_until < %(now)s)
RETURNING fence
"""
"""SQL: one instance's lease (terminal ones too: a parent undoes its completed child)."""

_FREE: Final = "(owner IS NULL OR lease_until IS NULL OR lease_until < %(now)s)"
"""SQL: nobody holds the instance's lease at ``now`` (free, released or expired)."""

# The instances that need a worker, found without locks, each kind through an
# index of its own: in flight (running or compensating without a timer: its
# owner died) with a lease never taken, released or expired (a lease is taken or
# expired only with its lease_until set), a timer due, or commands waiting. Those
# with no due time first, then by due time: the first `window` of them (a small,
# known number of rows: the planner then reaches them by primary key), locked as
# found, skipping rows another transaction holds, checked again and claimed.
_CLAIM_RUNNABLE: Final = f"""
WITH candidates AS MATERIALIZED (
    SELECT id, CASE WHEN bool_or(due IS NULL) THEN NULL ELSE min(due) END AS due FROM (
        SELECT id, NULL::double precision AS due FROM instances
            WHERE status IN ('running', 'compensating') AND wake_at IS NULL AND lease_until < %(now)s
        UNION ALL SELECT id, NULL FROM instances
            WHERE status IN ('running', 'compensating') AND wake_at IS NULL AND lease_until IS NULL
        UNION ALL SELECT id, NULL FROM instances
            WHERE status IN ('running', 'compensating') AND wake_at IS NOT NULL AND state LIKE '[%%'
            AND owner IS NOT NULL AND lease_until < %(now)s
        UNION ALL SELECT id, wake_at FROM instances WHERE wake_at <= %(now)s AND {_LIVE} AND {_FREE}
        UNION ALL SELECT id, NULL FROM instances
            WHERE id IN (SELECT instance_id FROM commands) AND {_ANSWERS} AND {_FREE}
    ) AS found
    WHERE id <> ALL(%(exclude)s::text[])
    GROUP BY id
    ORDER BY due NULLS FIRST, id
    LIMIT %(window)s
), picked AS (
    SELECT i.id, candidates.due FROM instances i JOIN candidates ON candidates.id = i.id
    WHERE i.{_ANSWERS} AND (i.owner IS NULL OR i.lease_until IS NULL OR i.lease_until < %(now)s)
    ORDER BY candidates.due NULLS FIRST, i.id
    LIMIT %(limit)s
    FOR UPDATE OF i SKIP LOCKED
)
UPDATE instances SET owner = %(owner)s, lease_until = %(until)s, fence = instances.fence + 1
FROM picked WHERE instances.id = picked.id
RETURNING instances.id, instances.fence, picked.due, instances.workflow, instances.version, instances.state,
    instances.status, instances.variables, instances.payload, instances.saga, instances.attempt,
    instances.comp_attempt, instances.visit, instances.task_id, instances.error, instances.cause, instances.cancel,
    instances.wake_at, instances.history_len, instances.created_at, instances.fingerprint, instances.branches,
    instances.parent, instances.fence, instances.failure
"""
"""Claim runnable instances; each comes back with its row as ``_LOAD`` reads it."""

_PREFETCH_FOR: Final = 1.0
"""Seconds a claimed row may be served to ``load`` without reading it again (the worker loads it at once)."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _encodable(text: str) -> bool:
    """Whether PostgreSQL can be given *text*: no NUL character, no lone surrogate."""
    return _store_rows.encodable(text, nul=False)


def _text(text: str | None) -> str | None:
    """Free text (an error message, a user name) as PostgreSQL can store it: NUL and lone surrogates escaped."""
    return _store_rows.storable(text, nul=False)


_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:\\.|[^'\\])*'|\S+)", re.IGNORECASE)
_PASSWORD_URI = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _redact(text: str, password: str | None = None) -> str:
    """*text* (a connection string, an error message) with every password replaced by ``***``."""
    if password:
        text = text.replace(password, "***")
    return _PASSWORD_URI.sub(r"\1***@", _PASSWORD_KV.sub(r"\1***", text))


def _describe(dsn: str, schema: str) -> tuple[str, str | None]:
    """How errors name the database (never with its password), and the password to keep out of messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "a PostgreSQL database (its connection string cannot be parsed)", None
    password = params.get("password")
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port")
    where = f"{host}:{port}" if port else f"{host}"
    who = f"{user}@" if user else ""
    name = f"postgresql://{who}{where}/{params.get('dbname') or ''}"
    if schema != "public":
        name += f" (schema {schema})"
    return _redact(name, str(password) if password else None), str(password) if password else None


def _advisory_key(schema: str) -> int:
    """The advisory lock that serialises upgrades of one schema (a signed 64-bit number)."""
    digest = hashlib.blake2b(f"statemachine-orch schema {schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _search_path(schema: str, *, local: bool = False) -> sql.Composed:
    return sql.SQL("SET LOCAL search_path TO {}" if local else "SET search_path TO {}").format(sql.Identifier(schema))


def upgrade(dsn_or_conn: str | psycopg.Connection[Any], schema: str = "public") -> int:
    """
    Create or upgrade the store's tables in *schema* to :data:`SCHEMA_VERSION`.

    One transaction, under a transaction-scoped advisory lock on the schema's name:
    several processes starting at once upgrade it once, the others wait and then
    find it current. Running it again does nothing. Given a connection, it runs in
    that connection's current transaction (a savepoint, when one is open) and
    leaves it as it found it; given a connection string, it opens and closes a
    connection of its own.

    Args:
        dsn_or_conn: A libpq connection string or URI, or an open psycopg connection.
        schema: The PostgreSQL schema holding the tables (created when missing).

    Returns:
        The schema version found before the upgrade (0: the schema was empty).

    Raises:
        StoreError: The database cannot be reached, the schema holds tables of
            another application, or its schema version is newer than this
            library's (or not a number).

    .. versionadded:: 0.1.0
    """
    if isinstance(dsn_or_conn, str):
        name, password = _describe(dsn_or_conn, schema)
        try:
            conn = psycopg.connect(dsn_or_conn, **_connect_defaults(dsn_or_conn))
        except psycopg.Error as exc:
            msg = f"cannot use {name}: cannot connect: {_redact(str(exc), password)}"
            raise StoreError(msg, name) from None
        with conn:
            return _upgrade(conn, schema, name, password)
    info = dsn_or_conn.info
    name = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
    if schema != "public":
        name += f" (schema {schema})"
    return _upgrade(dsn_or_conn, schema, name, None)


def _upgrade(conn: psycopg.Connection[Any], schema: str, name: str, password: str | None) -> int:
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(schema),))
            if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
                # (Only then: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when it exists.)
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(_search_path(schema, local=True))
            found = {
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename = ANY(%s)",
                    (schema, list(_TABLES)),
                )
            }
            current = _current_version(conn, found, name)
            if current > SCHEMA_VERSION:
                msg = (
                    f"cannot use {name}: its schema version is {current}, newer than this library's "
                    f"{SCHEMA_VERSION}; upgrade statemachine-orch to use it"
                )
                raise StoreError(msg, name)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
            if current < SCHEMA_VERSION:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s), ('application', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION), APPLICATION),
                )
    except psycopg.Error as exc:
        msg = f"cannot use {name}: creating or upgrading its tables failed: {_redact(str(exc), password)}"
        raise StoreError(msg, name) from None
    return current


def _current_version(conn: psycopg.Connection[Any], found: set[str], name: str) -> int:
    """The schema's version (0: none of our tables), refusing another application's tables."""
    if "meta" not in found:
        if found:
            msg = (
                f"cannot use {name}: it holds tables named like the store's ({', '.join(sorted(found))}) "
                "but no table meta: they belong to another application"
            )
            raise StoreError(msg, name)
        return 0
    rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('schema_version', 'application')"))
    if rows.get("application") != APPLICATION:
        msg = f"cannot use {name}: its table meta is not statemachine-orch's (another application's tables)"
        raise StoreError(msg, name)
    try:
        return int(rows.get("schema_version", "0"))
    except ValueError:
        msg = f"cannot use {name}: its schema version {rows.get('schema_version')!r} (table meta) is not a number"
        raise StoreError(msg, name) from None


def _connect_defaults(dsn: str) -> dict[str, Any]:
    """Keyword arguments for a connection: a connect timeout unless the connection string sets one."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return {}
    return {} if "connect_timeout" in params else {"connect_timeout": 10}


def _reads(method: Callable[Concatenate[PostgresStore, _P], _T]) -> Callable[Concatenate[PostgresStore, _P], _T]:
    """Turn an error during a read (psycopg's, or a damaged row) into a StoreError naming the database."""

    @functools.wraps(method)
    def read(self: PostgresStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except OrchError:
            raise  # typed already (UnknownWorkflowVersion, RecordLoadError)
        except psycopg.Error as exc:
            msg = f"cannot use {self.database}: reading it failed ({method.__name__}): {_redact(str(exc))}"
            raise StoreError(msg, self.database) from exc
        except Exception as exc:
            # A damaged row: an unknown status or kind, a value of the wrong shape for its type.
            msg = (
                f"cannot use {self.database}: reading it failed ({method.__name__}): "
                f"a stored row is damaged ({type(exc).__name__}: {exc})"
            )
            raise StoreError(msg, self.database) from exc

    return read


def _renew(conn: psycopg.Connection[Any], *, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
    """Inside a transaction: extend *owner*'s leases to *until*; the ids whose owner or fence no longer match."""
    ids = list(fences)
    stored = [i for i in ids if _encodable(i)]  # another id cannot have been stored: lost
    args = {"ids": stored, "fences": [fences[i] for i in stored], "owner": owner, "until": until}
    rows = conn.execute(
        "UPDATE instances SET lease_until = %(until)s "
        "FROM unnest(%(ids)s::text[], %(fences)s::bigint[]) AS f(id, fence) "
        "WHERE instances.id = f.id AND instances.fence = f.fence AND instances.owner = %(owner)s "
        "RETURNING instances.id",
        args,
    ).fetchall()
    kept = {r[0] for r in rows}
    return [i for i in ids if i not in kept]


class PostgresStore:
    """
    The store several worker processes share: one PostgreSQL schema, one transaction per commit.

    Requires the ``postgres`` extra (``pip install statemachine-orch[postgres]``).
    Creating the store creates or upgrades its tables (:func:`upgrade`). Methods
    may be called from several threads: each call takes a connection of the pool.

    Args:
        dsn: A libpq connection string or URI (``postgresql://user@host/db``).
        schema: The PostgreSQL schema holding the tables (created when missing).
        pool_size: The most connections the store keeps open at once
            (:meth:`listen` opens one more of its own).
        timeout: Seconds a call waits for a free connection of the pool.
        fault: For tests: called with a :data:`~statemachine_orch._store_sqlite.FaultPoint`
            at each commit; an exception it raises is injected there.

    Raises:
        StoreError: The database cannot be reached, its schema holds another
            application's tables, or it was written by a newer version. Errors
            name the database (never its password), as does :attr:`database`.

    .. versionadded:: 0.1.0
    """

    group_commit = True
    leases = True

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 4,
        timeout: float = 30.0,
        fault: Callable[[FaultPoint], None] | None = None,
    ) -> None:
        if pool_size < 1:
            msg = f"PostgresStore(pool_size={pool_size!r}): at least 1"
            raise ValueError(msg)
        self.schema: str = schema
        self.database, self._password = _describe(dsn, schema)
        """How errors name the database: ``postgresql://user@host:port/dbname``, never its password."""
        self.fault: Callable[[FaultPoint], None] | None = fault
        self._dsn = dsn
        self._registry = default_registry
        self._listeners: list[_Listener] = []
        self._closed = False
        # Rows that claim_runnable brought back, served once to the load() the claiming
        # worker makes next (no SELECT each). Nobody else writes a row while it is
        # leased; a commit or a claim of it here drops its entry, and it is fresh for
        # _PREFETCH_FOR seconds at most.
        self._prefetched: dict[str, tuple[float, tuple[Any, ...]]] = {}
        upgrade(dsn, schema)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, **_connect_defaults(dsn)},
            configure=self._configure,
            timeout=timeout,
            name=f"orch-{schema}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg.Error as exc:
            self._pool.close()
            raise self._fail("cannot connect", exc) from None

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Set up a new pool connection: the store's schema, and JSON columns read as text (decoded here)."""
        conn.execute(_search_path(self.schema))
        for json_type in ("json", "jsonb"):
            conn.adapters.register_loader(json_type, TextLoader)

    def _fail(self, what: str, exc: BaseException | None = None) -> StoreError:
        detail = f": {_redact(str(exc), self._password)}" if exc is not None else ""
        return StoreError(f"cannot use {self.database}: {what}{detail}", self.database)

    def attach(self, registry: WorkflowRegistry) -> None:
        """Resolve stored workflow versions through *registry*."""
        self._registry = registry

    def close(self) -> None:
        """Stop the listeners and close the pool's connections (closing twice does nothing more)."""
        self._closed = True
        for listener in list(self._listeners):
            listener.stop()
        self._pool.close()

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
            LeaseLost: A stored record's fence is no longer its row's (nothing written).
            InstanceExists: A new record's id is taken (nothing written).
            StoreError: Nothing was written (or, with an injected ``after_commit``
                fault, everything was but the acknowledgement was lost).
        """
        now = time.time()
        batch = _Batch()
        for rec in records:
            batch.add(rec, now)
        if self._prefetched:
            for rec in records:
                self._prefetched.pop(rec.id, None)
        try:
            if (
                len(batch.new) > 1
                or (batch.new and batch.stored)
                or self.fault is not None
                or not all(row["fence"] for row in batch.stored)
            ):
                # Several new rows (which one was taken?), an unleased row (rewritten
                # when gone) or an injected fault: the careful path.
                self._commit_checked(batch)
            else:
                try:
                    self._commit_guarded(batch)
                except psycopg.errors.UniqueViolation as exc:
                    if batch.new and exc.diag.constraint_name == "instances_pkey":
                        raise InstanceExists(batch.new[0]["id"]) from None
                    # A history row of a record whose lease was taken over: the careful
                    # path writes nothing and names it (LeaseLost).
                    self._commit_checked(batch)
                except psycopg.Error as exc:
                    if exc.sqlstate != _LEASE_LOST:
                        raise
                    self._commit_checked(batch)  # names the instances (LeaseLost)
        except psycopg.Error as exc:
            raise self._fail(f"a commit of {len(records)} instance change(s) failed", exc) from exc
        for rec in records:
            rec.committed()
        if self.fault is not None:
            self.fault("after_commit")

    def _commit_checked(self, batch: _Batch) -> None:
        """Check the fences and the new ids first, then write the rest: three round trips."""
        with self._pool.connection() as conn, conn.transaction(), conn.pipeline() as pipeline:
            updated = conn.cursor()
            inserted = conn.cursor()
            if batch.stored:
                updated.execute(_UPDATE, _rows(batch.stored, _UPDATE_KEYS))
            if batch.new:
                inserted.execute(_INSERT_NEW, _rows(batch.new, _INSERT_KEYS))
            pipeline.sync()
            self._check_rows(batch, {r[0] for r in updated.fetchall()} if batch.stored else set(), inserted)
            batch.write_gone(conn.cursor())
            batch.write(conn.cursor())
            pipeline.sync()
            if self.fault is not None:
                self.fault("before_commit")

    def _commit_guarded(self, batch: _Batch) -> None:
        """
        Changes of leased instances only, or one new instance (the common batches): one round trip.

        The rows, their history and the end of ended instances' messages are one
        statement, which checks the fences itself and fails when one moved
        (``orch_lease_lost``, SQLSTATE ``OR001``), as the insert of a new row fails
        on a taken id. Alone (a step's commit, a start), it runs in autocommit as
        its own transaction; with more to write (tasks, messages, commands,
        notifications), it goes first in a pipeline whose sync commits everything
        as one implicit transaction. Either way a failure writes nothing.
        """
        params: dict[str, Any]
        if batch.new:
            query, params, guard = _ROWS_NEW, dict(batch.new[0]), _GUARD_NEW
        elif len(batch.stored) == 1:
            query, params, guard = _ROWS_ONE, dict(batch.stored[0]), _GUARD_ONE
        else:
            query, params, guard = _ROWS_MANY, _rows(batch.stored, _UPDATE_KEYS), _GUARD_MANY
        if batch.history:
            query += _HISTORY_CTE
            params["history"] = _dumps(batch.history)
        if batch.ended:
            query += _ENDED_CTE
            params["ended"] = _dumps(batch.ended)
        with self._pool.connection() as conn:
            if batch.rows_only():
                conn.execute(query + guard, params)
                return
            with conn.pipeline() as pipeline:
                cur = conn.cursor()
                cur.execute(query + guard, params)
                batch.write(cur, rows_statement=True)
                pipeline.sync()

    def _check_rows(self, batch: _Batch, updated: set[str], inserted: psycopg.Cursor[Any]) -> None:
        """Raise LeaseLost for stored rows whose fence moved, InstanceExists for a taken new id."""
        lost = list(dict.fromkeys(row["id"] for row in batch.stored if row["id"] not in updated and row["fence"]))
        if lost:
            raise LeaseLost(lost, self.database)
        # A stored, unleased record whose row is gone is written again (as SQLite's upsert does).
        batch.gone = [row for row in batch.stored if row["id"] not in updated]
        if batch.new:
            made = Counter(r[0] for r in inserted.fetchall())
            for row in batch.new:
                # Not inserted (the id was taken), or inserted by an earlier record of this call.
                if made[row["id"]] == 0:
                    raise InstanceExists(row["id"])
                made[row["id"]] -= 1

    # ----------------------------------------------------------------- reading

    def _spec(
        self, instance_id: str, workflow: str, version: str, fingerprint: str | None
    ) -> tuple[type[Any], WorkflowSpec]:
        return _store_rows.workflow_class(self._registry, instance_id, workflow, version, fingerprint)

    def _fetchone(self, query: LiteralString, args: Sequence[object] | Mapping[str, object]) -> tuple[Any, ...] | None:
        with self._pool.connection() as conn:
            row: tuple[Any, ...] | None = conn.execute(query, args).fetchone()
            return row

    def _fetchall(
        self, query: LiteralString | sql.Composed, args: Sequence[object] | Mapping[str, object] = ()
    ) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            rows: list[tuple[Any, ...]] = conn.execute(query, args).fetchall()
            return rows

    @_reads
    def load(self, instance_id: str) -> InstanceRecord | None:
        """
        The committed state of an instance (its fence included).

        Raises:
            UnknownWorkflowVersion: Its version has no registered class.
            RecordLoadError: Its row cannot be read back (a value of the wrong type, damaged JSON).
        """
        if not _encodable(instance_id):
            return None  # such an id cannot have been stored
        row = self._prefetched_row(instance_id) if self._prefetched else None
        if row is None:
            row = self._fetchone(_LOAD, (instance_id,))
        if row is None:
            return None
        workflow, version, fingerprint = row[0], row[1], row[17]
        cls, spec = self._spec(instance_id, workflow, version, fingerprint)
        try:
            return _store_rows.record(instance_id, row, cls, spec)
        except OrchError:
            raise  # typed already (RecordLoadError names the field)
        except Exception as exc:
            # A damaged row: the engine quarantines this instance and goes on with the others.
            detail = f"a stored row is damaged ({type(exc).__name__}: {exc})"
            raise RecordLoadError(
                f"a stored {spec.name}", "", detail, instance_id=instance_id, path=self.database
            ) from exc

    @_reads
    def info(self, instance_id: str) -> InstanceInfo | None:
        """A snapshot of the committed instance."""
        if not _encodable(instance_id):
            return None
        row = self._fetchone(f"SELECT {_INFO_COLUMNS} FROM instances WHERE id = %s", (instance_id,))
        return _store_rows.info(row) if row is not None else None

    @_reads
    def infos(self, status: InstanceStatus | None, workflow: str | None) -> list[InstanceInfo]:
        """Snapshots of the committed instances, oldest first."""
        if workflow is not None and not _encodable(workflow):
            return []
        # One statement per filter: each reaches its rows through the status index, or reads them all.
        query: LiteralString
        if status is None and workflow is None:
            query = f"SELECT {_INFO_COLUMNS} FROM instances ORDER BY created_at, seq"
        elif workflow is None:
            query = f"SELECT {_INFO_COLUMNS} FROM instances WHERE status = %(status)s ORDER BY created_at, seq"
        elif status is None:
            query = f"SELECT {_INFO_COLUMNS} FROM instances WHERE workflow = %(workflow)s ORDER BY created_at, seq"
        else:
            query = (
                f"SELECT {_INFO_COLUMNS} FROM instances WHERE status = %(status)s AND workflow = %(workflow)s "
                "ORDER BY created_at, seq"
            )
        args = {"status": status.value if status is not None else None, "workflow": workflow}
        return [_store_rows.info(r) for r in self._fetchall(query, args)]

    @_reads
    def children(self, parent_id: str) -> list[InstanceInfo]:
        """The instance's children, oldest first."""
        if not _encodable(parent_id):
            return []
        rows = self._fetchall(
            f"SELECT {_INFO_COLUMNS} FROM instances WHERE parent = %s ORDER BY created_at, seq", (parent_id,)
        )
        return [_store_rows.info(r) for r in rows]

    @_reads
    def waiting_parents(self) -> list[str]:
        """Waiting instances with an ended child."""
        rows = self._fetchall(
            "SELECT DISTINCT p.id FROM instances c JOIN instances p ON p.id = c.parent "
            "WHERE c.parent IS NOT NULL AND c.status IN ('completed', 'failed', 'cancelled', 'compensation_failed') "
            "AND p.status = 'waiting' ORDER BY p.id"
        )
        return [r[0] for r in rows]

    @_reads
    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The committed history, oldest first."""
        if not _encodable(instance_id):
            return []
        rows = self._fetchall(
            "SELECT at, kind, step, attempt, detail FROM history WHERE instance_id = %s ORDER BY seq", (instance_id,)
        )
        return _store_rows.history(rows)

    def _task(self, row: tuple[Any, ...]) -> Task:
        return _store_rows.task(row, self._registry)

    @_reads
    def task(self, task_id: str) -> Task | None:
        """The task with this id, if any."""
        if not _encodable(task_id):
            return None
        row = self._fetchone(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = %s", (task_id,))
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
        cols = _TASK_COLUMNS
        if instance_id is not None:
            if not _encodable(instance_id):
                return []
            rows = self._fetchall(
                f"SELECT {cols} FROM tasks WHERE instance_id = %s AND status = 'open' "
                "AND (%s::float8 IS NULL OR due_at <= %s::float8) ORDER BY seq",
                (instance_id, due_before, due_before),
            )
            found = [self._task(r) for r in rows]
            return [t for t in found if user is None or t.may_complete(user, groups)][:limit]
        if user is None:
            rows = self._fetchall(
                f"SELECT {cols} FROM tasks WHERE status = 'open' AND (%s::float8 IS NULL OR due_at <= %s::float8) "
                "ORDER BY created_at, seq LIMIT %s",
                (due_before, due_before, limit),
            )
            return [self._task(r) for r in rows]
        # A user or group that cannot be stored matches no task (`assignee = NULL` is never true).
        who = user if _encodable(user) else None
        args = {"who": who, "groups": sorted(g for g in groups if _encodable(g)), "due": due_before, "limit": limit}
        return [self._task(r) for r in self._fetchall(_INBOX, args)]

    # ----------------------------------------------------------------- signals and timers

    def add_signal(self, instance_id: str, type_name: str, message: object) -> int:
        """Durably keep a message (its own transaction)."""
        try:
            with self._pool.connection() as conn:
                row = conn.execute(
                    "INSERT INTO signals (instance_id, type, payload) VALUES (%s, %s, %s::jsonb) RETURNING seq",
                    (instance_id, type_name, _dumps(unstructure(message))),
                ).fetchone()
        except psycopg.Error as exc:
            raise self._fail("a signal could not be stored", exc) from exc
        assert row is not None  # noqa: S101 - an INSERT ... RETURNING returns its row
        seq: int = row[0]
        return seq

    @_reads
    def signals(self, instance_id: str) -> list[Signal]:
        """The instance's unconsumed messages, decoded with its workflow's message types."""
        if not _encodable(instance_id):
            return []
        row = self._fetchone("SELECT workflow, version, fingerprint FROM instances WHERE id = %s", (instance_id,))
        if row is None:
            return []
        cls = self._registry.resolve(row[0], row[1], row[2])
        if cls is None:
            return []
        types = _store_rows.message_types(cls.__orch_spec__)
        rows = self._fetchall(
            "SELECT seq, type, payload FROM signals WHERE instance_id = %s ORDER BY seq", (instance_id,)
        )
        return _store_rows.signals(rows, types)

    @_reads
    def signalled(self) -> list[str]:
        """Waiting instances with unconsumed messages, the oldest message first."""
        rows = self._fetchall(
            "SELECT i.id FROM signals s JOIN instances i ON i.id = s.instance_id WHERE i.status = 'waiting' "
            "GROUP BY i.id ORDER BY min(s.seq)"
        )
        return [r[0] for r in rows]

    @_reads
    def next_wake(self, exclude: frozenset[str] = frozenset()) -> float | None:
        """The earliest timer due time of an instance not in *exclude*."""
        if not exclude:
            row = self._fetchone("SELECT min(wake_at) FROM instances WHERE wake_at IS NOT NULL", ())
        else:
            row = self._fetchone(
                "SELECT min(wake_at) FROM instances WHERE wake_at IS NOT NULL AND id <> ALL(%s::text[])",
                (sorted(i for i in exclude if _encodable(i)),),
            )
        assert row is not None  # noqa: S101 - an aggregate returns one row
        value: float | None = row[0]
        return value

    @_reads
    def due(self, now: float, limit: int) -> list[str]:
        """Instances whose timer is due, earliest first."""
        rows = self._fetchall(
            "SELECT id FROM instances WHERE wake_at IS NOT NULL AND wake_at <= %s ORDER BY wake_at, seq LIMIT %s",
            (now, limit),
        )
        return [r[0] for r in rows]

    @_reads
    def in_flight(self) -> list[str]:
        """Instances that were running or compensating, not parked on a timer."""
        rows = self._fetchall(
            "SELECT id FROM instances WHERE status IN ('running', 'compensating') AND wake_at IS NULL "
            "ORDER BY updated_at, seq"
        )
        return [r[0] for r in rows]

    # ----------------------------------------------------------------- monitoring reads

    @_reads
    def instance_counts(self) -> list[tuple[str, InstanceStatus, int]]:
        """How many instances each workflow has in each status, sorted."""
        rows = self._fetchall(
            "SELECT workflow, status, count(*) FROM instances GROUP BY workflow, status ORDER BY workflow, status"
        )
        return [(r[0], InstanceStatus(r[1]), int(r[2])) for r in rows]

    @_reads
    def task_counts(self, now: float) -> list[tuple[str, str, int, int]]:
        """Open tasks (and how many are overdue at *now*) by workflow and step, sorted."""
        rows = self._fetchall(
            "SELECT workflow, step, count(*), count(*) FILTER (WHERE due_at <= %s) "
            "FROM tasks WHERE status = 'open' GROUP BY workflow, step ORDER BY workflow, step",
            (float(now),),
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    @_reads
    def quiet(self, statuses: frozenset[InstanceStatus], before: float | None) -> list[tuple[InstanceInfo, float]]:
        """Instances in *statuses* with no timer, last changed at or before *before*, the oldest change first."""
        if not statuses:
            return []
        # The last history row of each instance is one step down its primary key (instance_id, seq).
        query: LiteralString = (
            f"SELECT * FROM (SELECT {_INFO_COLUMNS}, coalesce("
            "(SELECT h.at FROM history h WHERE h.instance_id = i.id ORDER BY h.seq DESC LIMIT 1), created_at"
            ") AS last FROM instances i WHERE status = ANY(%(statuses)s::text[]) AND wake_at IS NULL) q "
            "WHERE %(before)s::float8 IS NULL OR last <= %(before)s::float8 ORDER BY last, id"
        )
        args = {
            "statuses": sorted(s.value for s in statuses),
            "before": None if before is None else float(before),
        }
        return [(_store_rows.info(r[:-1]), float(r[-1])) for r in self._fetchall(query, args)]

    @_reads
    def late_timers(self, before: float, limit: int | None = None) -> list[InstanceInfo]:
        """Live instances whose timer was due at or before *before*, earliest first."""
        rows = self._fetchall(
            f"SELECT {_INFO_COLUMNS} FROM instances WHERE wake_at IS NOT NULL AND wake_at <= %s AND {_LIVE} "
            "ORDER BY wake_at, id LIMIT %s",
            (float(before), limit),
        )
        return [_store_rows.info(r) for r in rows]

    @_reads
    def late_tasks(self, before: float) -> list[LateTask]:
        """Open tasks due at or before *before*, earliest first, with their instance's timer."""
        rows = self._fetchall(
            "SELECT t.id, t.instance_id, t.workflow, t.version, t.step, t.due_at, i.wake_at "
            "FROM tasks t LEFT JOIN instances i ON i.id = t.instance_id "
            "WHERE t.status = 'open' AND t.due_at IS NOT NULL AND t.due_at <= %s ORDER BY t.due_at, t.id",
            (float(before),),
        )
        return [LateTask(*r) for r in rows]

    # ----------------------------------------------------------------- leases and commands

    def _write(self, what: str, run: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run *run* in one transaction; a psycopg error is a StoreError (nothing written)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                return run(conn)
        except psycopg.Error as exc:
            raise self._fail(f"{what} failed", exc) from exc

    def claim(self, instance_id: str, owner: str, now: float, until: float) -> int | None:
        """
        Take the lease of an instance (terminal ones too) that is free, expired or *owner*'s: the new fence.

        ``None`` if there is no such instance, or another live owner holds it.
        """
        if not _encodable(instance_id):
            return None
        args = {"id": instance_id, "owner": owner, "now": now, "until": until}
        self._prefetched.pop(instance_id, None)

        def run(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute(_CLAIM, args).fetchone()
            return int(row[0]) if row is not None else None

        return self._write("claiming an instance", run)

    def claim_runnable(
        self, owner: str, now: float, until: float, limit: int, exclude: frozenset[str]
    ) -> list[tuple[str, int]]:
        """
        Claim up to *limit* instances that need a worker, each with its new fence.

        Those not in *exclude*, live, whose lease is free or expired, and that are
        in flight (running or compensating without a timer), have a timer due or
        have commands waiting; in flight and commanded first, then by due time.
        Rows another transaction holds locked are skipped (``SKIP LOCKED``), so
        workers claiming at once never wait for each other nor claim one twice.
        """
        if limit <= 0:
            return []
        args = {
            "owner": owner,
            "now": now,
            "until": until,
            "limit": limit,
            # Room for candidates other workers lock meanwhile (skipped, not waited for).
            "window": limit * 2 + 8,
            "exclude": sorted(i for i in exclude if _encodable(i)),
        }

        def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(_CLAIM_RUNNABLE, args).fetchall()

        rows = self._write("claiming runnable instances", run)
        rows.sort(key=lambda r: (r[2] is not None, r[2] or 0.0, r[0]))
        fetched = time.monotonic()
        self._prefetched = {i: p for i, p in self._prefetched.items() if fetched - p[0] < _PREFETCH_FOR}
        for r in rows:
            self._prefetched[r[0]] = (fetched, tuple(r[3:]))
        return [(r[0], int(r[1])) for r in rows]

    def _prefetched_row(self, instance_id: str) -> tuple[Any, ...] | None:
        """The row a claim just brought back for *instance_id*, if still fresh (then not again)."""
        hit = self._prefetched.pop(instance_id, None)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < _PREFETCH_FOR else None

    @_reads
    def commanded(self, owner: str) -> list[str]:
        """Ids of instances *owner* holds that have commands waiting, the oldest command first."""
        rows = self._fetchall(
            "SELECT c.instance_id FROM commands c JOIN instances i ON i.id = c.instance_id WHERE i.owner = %s "
            "GROUP BY c.instance_id ORDER BY min(c.seq)",
            (owner,),
        )
        return [r[0] for r in rows]

    def renew(self, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
        """Extend *owner*'s leases (id -> fence) to *until*; return the ids whose owner or fence no longer match."""
        if not fences:
            return []
        return self._write("renewing leases", functools.partial(_renew, owner=owner, fences=fences, until=until))

    def lease_renewer(self) -> PostgresRenewer:
        """
        A renewer of leases on a connection of its own (not the pool's), for the engine's heartbeat thread.

        The heartbeat then never waits for a pool connection the event loop's thread holds.
        """
        return PostgresRenewer(self._connect_more, self._fail)

    def _connect_more(self) -> psycopg.Connection[Any]:
        """A connection outside the pool, set up as the pool's are."""
        conn = psycopg.connect(self._dsn, autocommit=True, **_connect_defaults(self._dsn))
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def release(self, owner: str, fences: Mapping[str, int]) -> None:
        """Give back *owner*'s leases whose fence still matches (owner and lease_until := NULL)."""
        ids = [i for i in fences if _encodable(i)]
        if not ids:
            return
        args = {"ids": ids, "fences": [fences[i] for i in ids], "owner": owner}

        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "UPDATE instances SET owner = NULL, lease_until = NULL "
                "FROM unnest(%(ids)s::text[], %(fences)s::bigint[]) AS f(id, fence) "
                "WHERE instances.id = f.id AND instances.fence = f.fence AND instances.owner = %(owner)s",
                args,
            )

        self._write("releasing leases", run)

    def expire(self, owner: str) -> int:
        """Mark every lease of *owner* (a worker found dead) expired (lease_until := 0); return how many."""

        def run(conn: psycopg.Connection[Any]) -> int:
            return conn.execute("UPDATE instances SET lease_until = 0 WHERE owner = %s", (owner,)).rowcount

        return self._write("expiring leases", run)

    @_reads
    def owners(self) -> list[str]:
        """The distinct owners holding leases, sorted."""
        rows = self._fetchall("SELECT DISTINCT owner FROM instances WHERE owner IS NOT NULL ORDER BY owner")
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
        Keep a command for an instance, in one transaction with a task's completion, a claim or a signal; its seq.

        With *complete* (a completed :class:`Task`), its row goes from open to
        completed (who, when, the form), unless another user claimed it; with
        *claim*, the open row's claimant goes from ``claim.before`` to
        ``claim.after``; with *reassign*, the open row (still claimed by
        ``reassign.claimant``) gets its new assignee and groups, and no claimant; with
        *signal* (``(type name, message)``), a signal row is kept; then the command
        row, and ``NOTIFY orch_commands``.

        Raises:
            TaskAlreadyCompleted: The task row of *complete*, *claim* or *reassign* is no longer open (nothing written).
            TaskClaimed: Another user holds the task's claim (nothing written).
            StoreError: Nothing was written.
        """
        task_args: tuple[object, ...] | None = None
        if complete is not None:
            if not _encodable(complete.id):
                raise TaskAlreadyCompleted(complete.id, _NOT_OPEN)  # such an id cannot have been stored
            task_args = _store_rows.completion(complete, nul=False)
        if claim is not None and not (_encodable(claim.task_id) and _encodable(claim.user)):
            raise TaskAlreadyCompleted(claim.task_id, _NOT_OPEN_CLAIM)  # such an id (or claimant) cannot be stored
        if reassign is not None and not _encodable(reassign.task_id):
            raise TaskAlreadyCompleted(reassign.task_id, _NOT_OPEN_REASSIGN)  # such an id cannot be stored
        signal_args = None
        if signal is not None:
            signal_args = (instance_id, signal[0], _dumps(unstructure(signal[1])))
        command_args = (instance_id, kind, _dumps(dict(body)), time.time())

        def run(conn: psycopg.Connection[Any]) -> int:
            if task_args is not None:
                closed = conn.execute(
                    "UPDATE tasks SET status = %s, completed_by = %s, completed_at = %s, form = %s::jsonb "
                    "WHERE id = %s AND status = 'open' AND (claimed_by IS NULL OR claimed_by = %s)",
                    (*task_args, task_args[1]),
                ).rowcount
                if not closed:
                    raise _Refused(_task_refusal(conn, str(task_args[-1]), str(task_args[1] or ""), _NOT_OPEN))
                conn.execute("DELETE FROM task_groups WHERE task_id = %s", (task_args[-1],))
            if claim is not None:
                changed = conn.execute(
                    "UPDATE tasks SET claimed_by = %s WHERE id = %s AND status = 'open' "
                    "AND claimed_by IS NOT DISTINCT FROM %s",
                    (claim.after, claim.task_id, claim.before),
                ).rowcount
                if not changed:
                    raise _Refused(_task_refusal(conn, claim.task_id, claim.user, _NOT_OPEN_CLAIM))
            if reassign is not None:
                _reassign(conn, reassign)
            if signal_args is not None:
                conn.execute("INSERT INTO signals (instance_id, type, payload) VALUES (%s, %s, %s::jsonb)", signal_args)
            row = conn.execute(_INSERT_COMMAND, command_args).fetchone()
            conn.execute(_NOTIFY, (instance_id,))
            assert row is not None  # noqa: S101 - an INSERT ... RETURNING returns its row
            seq: int = row[0]
            return seq

        try:
            return self._write("keeping a command", run)
        except _Refused as refused:
            raise refused.error from None  # completed, cancelled or claimed meanwhile

    @_reads
    def commands(self, instance_id: str) -> list[Command]:
        """The instance's unapplied commands, oldest first."""
        if not _encodable(instance_id):
            return []
        rows = self._fetchall(
            "SELECT seq, kind, body, created_at FROM commands WHERE instance_id = %s ORDER BY seq",
            (instance_id,),
        )
        return _store_rows.commands(instance_id, rows)

    # ----------------------------------------------------------------- notifications

    # ----------------------------------------------------------------- schedules

    @_reads
    def schedule(self, schedule_id: str) -> ScheduleState | None:
        """The schedule's stored state, if it has one."""
        if not _encodable(schedule_id):
            return None
        row = self._fetchone("SELECT id, cursor, last_instance, started FROM schedules WHERE id = %s", (schedule_id,))
        return ScheduleState(row[0], row[1], row[2], int(row[3])) if row is not None else None

    def save_schedule(self, state: ScheduleState, expected: float | None) -> bool:
        """
        Write the schedule's state if its stored cursor is still *expected* (``None``: if it has none).

        Raises:
            StoreError: It could not be written.
        """
        values = (float(state.cursor), state.last_instance, state.started, time.time(), state.id)

        def run(conn: psycopg.Connection[Any]) -> bool:
            if expected is None:
                cur = conn.execute(
                    "INSERT INTO schedules (cursor, last_instance, started, updated_at, id) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    values,
                )
            else:
                cur = conn.execute(
                    "UPDATE schedules SET cursor = %s, last_instance = %s, started = %s, updated_at = %s "
                    "WHERE id = %s AND cursor = %s",
                    (*values, float(expected)),
                )
            return cur.rowcount == 1

        return self._write("saving a schedule", run)

    def listen(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """
        Call *callback* with the instance id of every ``orch_commands`` notification.

        A daemon thread with a connection of its own listens; *callback* runs
        in that thread (an asyncio caller hands the id over with
        ``loop.call_soon_threadsafe``); an exception it raises is logged and the
        thread listens on. When the connection is lost the thread reconnects,
        logging ``listener_lost``: notifications sent meanwhile are not heard (a
        caller still polls ``claim_runnable`` for them). This method returns once
        the thread listens, so a notification sent after it returns is heard.

        Returns:
            A function that stops the thread (and waits for it); calling it again
            does nothing. :meth:`close` stops every listener.

        Raises:
            StoreError: The listening connection could not be opened.
        """
        return self._start_listener(_Listener(self._listen_connection, self._wake, self.database, callback))

    def watch_tasks(self, changed: Callable[[bool], None]) -> Callable[[], None]:
        """
        Call *changed* whenever task rows may have changed, as :meth:`listen` calls back for commands.

        A trigger (schema 7) notifies ``orch_tasks`` in every transaction that
        writes a task row, from any process; a thread of this one listens on a
        connection of its own and calls ``changed(True)`` once such a transaction
        committed. When that connection is lost it calls ``changed(False)`` (what
        the caller keeps about tasks can no longer be known to be current), and
        ``changed(True)`` once it listens again: notifications sent meanwhile are
        not heard. This method returns once the thread listens.

        Returns:
            A function that stops the thread; :meth:`close` stops it too.

        Raises:
            StoreError: The listening connection could not be opened.
        """
        connect = functools.partial(self._listen_connection, channel=TASKS_CHANNEL)
        listener = _Listener(connect, self._wake, self.database, lambda _: changed(True), TASKS_CHANNEL, changed)  # noqa: FBT003
        return self._start_listener(listener)

    def _start_listener(self, listener: _Listener) -> Callable[[], None]:
        if self._closed:
            raise self._fail("the store is closed")
        error = listener.start()
        if error is not None:
            raise self._fail("cannot listen for notifications", error)
        self._listeners.append(listener)
        return listener.stop

    def _listen_connection(self, wakeup: str, channel: str = NOTIFY_CHANNEL) -> psycopg.Connection[Any]:
        """A connection of its own, listening on *channel* and on a listener's *wakeup* channel."""
        conn = psycopg.connect(self._dsn, autocommit=True, **_connect_defaults(self._dsn))
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(wakeup)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _wake(self, listener: _Listener) -> None:
        """End *listener*'s wait at once (a notification on its own channel), and forget it."""
        with contextlib.suppress(Exception), self._pool.connection(timeout=1.0) as conn:
            conn.execute("SELECT pg_notify(%s, '')", (listener.wakeup,))
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)


class _Refused(Exception):
    """add_command: the task row was not open, or claimed by another (rolls the transaction back)."""

    def __init__(self, error: TaskError) -> None:
        super().__init__(str(error))
        self.error = error


def _reassign(conn: psycopg.Connection[Any], change: TaskReassignment) -> None:
    """Give the open task (still claimed as the caller saw it) its new people and no claimant, groups included."""
    changed = conn.execute(
        "UPDATE tasks SET assignee = %s, groups = %s::jsonb, claimed_by = NULL "
        "WHERE id = %s AND status = 'open' AND claimed_by IS NOT DISTINCT FROM %s",
        (
            _store_rows.storable(change.assignee, nul=False),
            _dumps(list(change.candidate_groups)),
            change.task_id,
            change.claimant,
        ),
    ).rowcount
    if not changed:
        raise _Refused(_task_refusal(conn, change.task_id, change.by, _NOT_OPEN_REASSIGN))
    conn.execute("DELETE FROM task_groups WHERE task_id = %s", (change.task_id,))
    groups = [_store_rows.storable(g, nul=False) or "" for g in change.candidate_groups]
    conn.execute(_INSERT_GROUPS, (groups, [change.task_id] * len(groups)))


def _task_refusal(conn: psycopg.Connection[Any], task_id: str, user: str, not_open: str) -> TaskError:
    """Why a task row's change found no row to change (asked inside its transaction): closed, or claimed."""
    row = conn.execute("SELECT status, claimed_by FROM tasks WHERE id = %s", (task_id,)).fetchone()
    if row is not None and row[0] == TaskStatus.OPEN.value:
        return TaskClaimed(task_id, user, row[1])
    return TaskAlreadyCompleted(task_id, not_open)


class _Batch:
    """The rows one commit writes, gathered from its records, statement by statement."""

    __slots__ = (
        "commands_gone",
        "ended",
        "gone",
        "history",
        "new",
        "outbox",
        "signals_gone",
        "signals_out",
        "stored",
        "tasks",
        "tasks_spec",
        "unowned",
    )

    def __init__(self) -> None:
        self.stored: list[dict[str, Any]] = []
        self.new: list[dict[str, Any]] = []
        self.gone: list[dict[str, Any]] = []
        self.history: list[tuple[object, ...]] = []
        self.tasks: dict[str, Task] = {}  # the last version of each changed task
        self.tasks_spec: dict[str, WorkflowSpec] = {}
        self.signals_gone: list[int] = []
        self.ended: list[str] = []
        self.commands_gone: list[tuple[int, str]] = []  # (seq, the instance's id)
        self.outbox: list[tuple[str, str, str, float]] = []
        self.signals_out: list[tuple[str, str, str]] = []  # (instance id, type name, message as JSON)
        # New instances nobody holds (a client started them): announced like commands,
        # so that a listening worker claims them at once, not at its next poll.
        self.unowned: list[str] = []

    def rows_only(self) -> bool:
        """Whether the batch writes no more than instance rows, history and the end of instances' messages."""
        return not (
            self.tasks
            or self.signals_gone
            or self.commands_gone
            or self.outbox
            or self.signals_out
            or self.unowned
            or self.gone
        )

    def add(self, rec: InstanceRecord, now: float) -> None:
        """Gather *rec*'s row and its other changes."""
        spec = rec.spec
        # The branches as [name, branch] pairs: jsonb would not keep an object's key order.
        values = _store_rows.instance_row(rec, now, self.history, nul=False, branch_pairs=True)
        for task in rec.dirty_tasks:
            self.tasks.pop(task.id, None)  # re-inserted: the order of the last writes
            self.tasks[task.id] = task
            self.tasks_spec[task.id] = spec
        if rec.consumed_signals:
            self.signals_gone.extend(rec.consumed_signals)
        if rec.status.is_terminal:
            self.ended.append(rec.id)  # nobody will consume its signals
        if rec.consumed_commands:
            self.commands_gone.extend((seq, rec.id) for seq in rec.consumed_commands)
        for target, kind, body in rec.outbox:
            self.outbox.append((target, kind, _dumps(body), now))
        for target, type_name, message in rec.signals_out:
            self.signals_out.append((target, type_name, _dumps(unstructure(message))))
        if not rec.stored and rec.lease is None:
            self.unowned.append(rec.id)
        row: dict[str, Any] = {
            "id": rec.id,
            **values,
            "created_at": float(rec.created_at),
            "parent": rec.parent,
            "fence": rec.fence,
        }
        if rec.stored:
            self.stored.append(row)
        else:
            owner, until = rec.lease if rec.lease is not None else (None, None)
            row["owner"] = owner
            row["lease_until"] = _float(until)
            self.new.append(row)

    def write_gone(self, cur: psycopg.Cursor[Any]) -> None:
        """Insert again the stored, unleased records whose rows are gone (as SQLite's upsert does)."""
        if self.gone:
            gone = [{**row, "owner": None, "lease_until": None, "fence": 0} for row in self.gone]
            cur.execute(_INSERT_NEW, _rows(gone, _INSERT_KEYS))

    def write(self, cur: psycopg.Cursor[Any], *, rows_statement: bool = False) -> None:
        """
        Queue every statement but the instance rows' (a pipeline sends them together).

        With *rows_statement*, the history and the ended instances' messages are
        left out: the rows' statement of ``_commit_guarded`` carries them.
        """
        if self.history and not rows_statement:
            cur.execute(_INSERT_HISTORY, {"history": _dumps(self.history)})
        if self.tasks:
            rows = [_store_rows.task_row(t, self.tasks_spec[t.id], nul=False) for t in self.tasks.values()]
            cur.execute(_UPSERT_TASKS, (_dumps(rows),))
            open_groups = [
                (_text(g), t.id) for t in self.tasks.values() if t.status is TaskStatus.OPEN for g in t.candidate_groups
            ]
            if open_groups:
                cur.execute(_INSERT_GROUPS, ([g for g, _ in open_groups], [t for _, t in open_groups]))
            closed = [t.id for t in self.tasks.values() if t.status is not TaskStatus.OPEN]
            if closed:
                cur.execute("DELETE FROM task_groups WHERE task_id = ANY(%s::text[])", (closed,))
        if self.signals_gone:
            cur.execute("DELETE FROM signals WHERE seq = ANY(%s::bigint[])", (self.signals_gone,))
        if self.ended and not rows_statement:
            cur.execute(_DELETE_ENDED_SIGNALS, {"ended": _dumps(self.ended)})
        if self.commands_gone:
            cur.execute(
                "DELETE FROM commands c USING unnest(%s::bigint[], %s::text[]) AS g(seq, instance_id) "
                "WHERE c.seq = g.seq AND c.instance_id = g.instance_id",
                ([seq for seq, _ in self.commands_gone], [i for _, i in self.commands_gone]),
            )
        if self.outbox:
            cur.execute(_INSERT_OUTBOX, list(map(list, zip(*self.outbox, strict=True))))
        if self.signals_out:
            cur.execute(_INSERT_SIGNALS, list(map(list, zip(*self.signals_out, strict=True))))
        if self.outbox or self.unowned:
            targets = [*(t for t, _, _, _ in self.outbox), *self.unowned]
            cur.execute(_NOTIFY_ALL, (list(dict.fromkeys(targets)),))


def _float(value: float | None) -> float | None:
    """A time as a float (an int would make psycopg dump its column's array as another type)."""
    return None if value is None else float(value)


def _rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, str]:
    """Rows as the parameter ``rows``: one JSON array of arrays, the values in the order of *keys*."""
    return {"rows": _dumps([[row[key] for key in keys] for row in rows])}


class _Listener:
    """A daemon thread listening on one channel (``orch_commands``, ``orch_tasks``) with a connection of its own."""

    _RECONNECT_MAX = 5.0
    _POLL = 1.0  # seconds between looks at the stop flag, should the wake-up notification be lost

    def __init__(
        self,
        connect: Callable[[str], psycopg.Connection[Any]],
        wake: Callable[[_Listener], None],
        database: str,
        callback: Callable[[str], None],
        channel: str = NOTIFY_CHANNEL,
        connected: Callable[[bool], None] | None = None,
    ) -> None:
        self.connect = connect
        self.wake = wake
        self.database = database
        self.callback = callback
        self.channel = channel
        # Told True when the thread listens (again), False when its connection is lost.
        self.connected = connected
        # A channel of this listener's own: stop() notifies it to end the wait at once.
        self.wakeup = f"orch_stop_{secrets.token_hex(8)}"
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="orch-listener", daemon=True)

    def start(self) -> Exception | None:
        """Start the thread; return once it listens, or with the error that kept it from connecting."""
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            self.thread.join()
        return self.error

    def stop(self) -> None:
        """Stop the thread and wait for it (but from inside the callback); again: nothing."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.wake(self)
        if threading.current_thread() is not self.thread:
            self.thread.join()

    def _run(self) -> None:
        delay = 0.05
        while not self.stopping.is_set():
            try:
                conn = self.connect(self.wakeup)
            except Exception as exc:  # noqa: BLE001 - whatever it is, listen() must hear of it, not hang
                if not self.ready.is_set():
                    self.error = exc
                    self.ready.set()
                    return
                _log.warning("listener_lost", database=self.database, error=_redact(str(exc)))
                self.stopping.wait(delay)
                delay = min(delay * 2, self._RECONNECT_MAX)
                continue
            self._tell(connected=True)
            self.ready.set()
            delay = 0.05
            try:
                self._hear(conn)
            except psycopg.Error as exc:
                if not self.stopping.is_set():
                    _log.warning("listener_lost", database=self.database, error=_redact(str(exc)))
            finally:
                conn.close()
                self._tell(connected=False)

    def _tell(self, *, connected: bool) -> None:
        if self.connected is None:
            return
        try:
            self.connected(connected)
        except Exception as exc:  # noqa: BLE001 - the caller's code must not end the listener
            _log.exception("listener_callback_failed", error=str(exc))

    def _hear(self, conn: psycopg.Connection[Any]) -> None:
        while not self.stopping.is_set():
            # Closed on leaving: a suspended notifies() generator holds the connection's lock.
            with contextlib.closing(conn.notifies(timeout=self._POLL)) as notes:
                for note in notes:
                    if note.channel != self.channel or self.stopping.is_set():
                        return
                    try:
                        self.callback(note.payload)
                    except Exception as exc:  # noqa: BLE001 - the caller's code must not end the listener
                        _log.exception("listener_callback_failed", instance_id=note.payload, error=str(exc))


class PostgresRenewer:
    """
    Renews a store's leases on a connection of its own, from one other thread; reconnects after a failure.

    ``PostgresStore.lease_renewer`` makes it; the engine's heartbeat thread uses it.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        fail: Callable[[str, BaseException], StoreError],
    ) -> None:
        self._connect = connect
        self._fail = fail
        self._conn: psycopg.Connection[Any] | None = None

    def renew(self, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
        """As ``PostgresStore.renew``, on this renewer's connection."""
        if not fences:
            return []
        try:
            if self._conn is None:
                self._conn = self._connect()
            with self._conn.transaction():
                return _renew(self._conn, owner=owner, fences=fences, until=until)
        except psycopg.Error as exc:
            self.close()  # the next renewal connects again
            raise self._fail("renewing leases failed", exc) from exc

    def close(self) -> None:
        """Close the connection (closing twice does nothing more)."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
