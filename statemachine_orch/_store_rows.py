"""
The rows of the SQL stores: what ``SqliteStore`` and ``PostgresStore`` both write and read, encoded once.

Pure functions, no SQL: a record as its instance row's values, a task as its
row, a fork's branches as JSON, and back: a row as an ``InstanceRecord``,
``InstanceInfo``, ``Task``, ``Command`` or ``Signal``. Each store keeps its own
statements, transactions and error wrapping. Where the databases differ, a
keyword says how: ``nul`` (SQLite stores a NUL character, PostgreSQL's text
cannot), ``branch_pairs`` (``jsonb`` does not keep an object's key order, so
PostgreSQL stores the branches as ``[name, branch]`` pairs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from ._errors import UnknownWorkflowVersion
from ._failure import error_json, rebuild_error
from ._fanout import FanOut
from ._history import EventKind, HistoryEvent
from ._instance import (
    NO_PAYLOAD,
    Branch,
    Command,
    InstanceInfo,
    InstanceRecord,
    Signal,
    Waited,
    active_steps,
    outcome_of,
)
from ._machine import STATE_ATTRIBUTE
from ._serialize import structure, unstructure
from ._status import InstanceStatus
from ._tasks import Task, TaskStatus

if TYPE_CHECKING:
    from ._registry import WorkflowRegistry
    from ._spec import WorkflowSpec

dumps: Callable[[object], str] = json.JSONEncoder(separators=(",", ":")).encode
"""Compact JSON, with one encoder built once."""

ROW_COLUMNS = (
    "workflow",
    "version",
    "fingerprint",
    "state",
    "status",
    "variables",
    "payload",
    "saga",
    "attempt",
    "comp_attempt",
    "visit",
    "task_id",
    "error",
    "cause",
    "cancel",
    "wake_at",
    "history_len",
    "updated_at",
    "branches",
    "failure",
)
"""The columns every commit of an instance writes, in the order ``instance_row`` gives them."""


def encodable(text: str, *, nul: bool = True) -> bool:
    """Whether the database can be given *text*: no lone surrogate (it has no UTF-8 encoding), no NUL unless *nul*."""
    if not nul and "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str | None, *, nul: bool = True) -> str | None:
    """Free text (an error message, a user name) as the database can store it: lone surrogates (and NUL) escaped."""
    if text is None or encodable(text, nul=nul):
        return text
    escaped = text.encode(errors="backslashreplace").decode()
    return escaped if nul else escaped.replace("\x00", "\\x00")


def _float(value: float | None) -> float | None:
    """A time as a float (an int would make psycopg dump its column's array as another type)."""
    return None if value is None else float(value)


# ----------------------------------------------------------------- writing


def instance_row(
    rec: InstanceRecord, now: float, history: list[tuple[object, ...]], *, nul: bool, branch_pairs: bool
) -> dict[str, Any]:
    """*rec*'s row as ``ROW_COLUMNS`` (in that order), by name; its pending history rows go to *history*."""
    return dict(zip(ROW_COLUMNS, instance_values(rec, now, history, nul=nul, branch_pairs=branch_pairs), strict=True))


def instance_values(
    rec: InstanceRecord, now: float, history: list[tuple[object, ...]], *, nul: bool, branch_pairs: bool
) -> tuple[object, ...]:
    """*rec*'s row as ``ROW_COLUMNS``, a tuple in that order; its pending history rows go to *history*."""
    spec = rec.spec
    state = rec.state
    payload = None
    branches = None
    task_id = rec.task_id
    if state.__class__ is not str:
        rows = branch_rows(rec)
        branches = dumps(list(rows.items()) if branch_pairs else rows)
        task_id = next((b.task_id for b in rec.branches.values() if b.task_id is not None), None)
        state = dumps(state)
    elif rec.fan is not None:
        payload = dumps({"fan": rec.fan.to_json()})
    elif rec.payload is not NO_PAYLOAD and not (spec.has_step(state) and spec.step(state).child is not None):
        tp = spec.step(state).payload_type if spec.has_step(state) else None
        payload = dumps({"v": payload_json(rec.payload, tp)})
    elif rec.waited is not None:
        payload = dumps({"waited": rec.waited})
    if rec.history:
        base = rec.history_len
        rid = rec.id
        history.extend(
            (rid, base + i, float(e.at), e.kind.value, e.step, e.attempt, storable(e.detail, nul=nul))
            for i, e in enumerate(rec.history, start=1)
        )
    return (
        spec.name,  # workflow
        spec.version,  # version
        spec.fingerprint,  # fingerprint
        state,  # state
        rec.status.value,  # status
        dumps(unstructure(rec.wf)),  # variables
        payload,  # payload
        dumps(rec.saga) if rec.saga else "[]",  # saga
        rec.attempt,  # attempt
        rec.comp_attempt,  # comp_attempt
        rec.visit,  # visit
        task_id,  # task_id
        storable(rec.error, nul=nul),  # error
        storable(rec.cause, nul=nul),  # cause
        dumps(rec.cancel) if rec.cancel is not None else None,  # cancel
        _float(rec.wake_at),  # wake_at
        rec.history_len + len(rec.history),  # history_len
        now,  # updated_at
        branches,  # branches
        _failure_json(rec.failure),  # failure
    )


def payload_json(value: object, tp: type | None) -> Any:
    """A waiting step's form or message, or an error handler's exception (``_failure.error_json``), as JSON."""
    if isinstance(value, BaseException):
        return error_json(value)
    return unstructure(value, tp)


def payload_value(data: Any, tp: type) -> Any:
    """The payload *data* stores, of type *tp*: an exception is built again as that type or a subclass."""
    if issubclass(tp, BaseException):
        if not isinstance(data, dict):
            msg = f"the stored error for a {tp.__name__} parameter is not a JSON object"
            raise TypeError(msg)
        return rebuild_error(cast("dict[str, Any]", data), tp)
    return structure(data, tp)


def _failure_json(failure: dict[str, Any] | None) -> str | None:
    """An instance's kept failure (outcome, step, exception) as JSON: ASCII, so any database takes it."""
    return dumps(failure) if failure is not None else None


def branch_rows(rec: InstanceRecord) -> dict[str, list[object]]:
    """Each branch of a forked instance as ``[attempt, visit, task, wake_at, waiting, payload]``."""
    spec = rec.spec
    out: dict[str, list[object]] = {}
    for name, b in rec.branches.items():
        payload = None
        # A subflow's finished child is not stored: it is read again from its own row.
        if b.fan is not None:
            payload = {"fan": b.fan.to_json()}
        elif b.payload is not NO_PAYLOAD and spec.step(name).child is None:
            payload = {"v": payload_json(b.payload, spec.step(name).payload_type)}
        elif b.waited is not None:
            payload = {"waited": [b.waited[0], list(b.waited[1])]}
        out[name] = [b.attempt, b.visit, b.task_id, b.wake_at, b.waiting, payload]
    return out


def form_json(task: Task, encode: Callable[[object], str] = dumps) -> str | None:
    """A completed task's form as stored (``{"v": form}``); ``None`` for a task not completed."""
    if task.status is not TaskStatus.COMPLETED:
        return None
    return encode({"v": unstructure(task.form, task.form_type)})


def task_row(
    task: Task, spec: WorkflowSpec, *, nul: bool, encode: Callable[[object], str] = dumps
) -> tuple[object, ...]:
    """
    *task*'s row, as its workflow *spec* names it (*encode*: the JSON of its groups and form).

    The row: id, instance_id, workflow, version, fingerprint, step, assignee,
    groups, created_at, due_at, status, completed_by, completed_at, form.
    """
    return (
        task.id,
        task.instance_id,
        spec.name,
        spec.version,
        spec.fingerprint,
        task.step,
        storable(task.assignee, nul=nul),
        encode(task.candidate_groups),
        float(task.created_at),
        _float(task.due_at),
        task.status.value,
        storable(task.completed_by, nul=nul),
        _float(task.completed_at),
        form_json(task, encode),
    )


def completion(
    task: Task, *, nul: bool, encode: Callable[[object], str] = dumps
) -> tuple[str, str | None, float | None, str | None, str]:
    """A completed task's row change: status, completed_by, completed_at, form, then its id."""
    return (
        task.status.value,
        storable(task.completed_by, nul=nul),
        task.completed_at,
        form_json(task, encode),
        task.id,
    )


# ----------------------------------------------------------------- reading


def workflow_class(
    registry: WorkflowRegistry, instance_id: str, workflow: str, version: str, fingerprint: str | None
) -> tuple[type[Any], WorkflowSpec]:
    """
    The class (and its spec) a row of *instance_id* names.

    Raises:
        UnknownWorkflowVersion: Its version has no registered class.
    """
    cls = registry.resolve(workflow, version, fingerprint)
    if cls is None:
        changed = registry.has(workflow, version)
        known = registry.versions(workflow)
        raise UnknownWorkflowVersion(instance_id, workflow, version, known, changed=changed)
    return cls, cls.__orch_spec__


def record(instance_id: str, row: tuple[Any, ...], cls: Any, spec: WorkflowSpec) -> InstanceRecord:
    """
    Build the record of one instance's row (stored, with its fence).

    The row: workflow, version, state, status, variables, payload, saga, attempt,
    comp_attempt, visit, task_id, error, cause, cancel, wake_at, history_len,
    created_at, fingerprint, branches, parent, fence, failure.
    """
    (_, _, state, status, variables, payload, saga, attempt, comp_attempt, visit) = row[:10]
    (task_id, error, cause, cancel, wake_at, history_len, created_at, _, branches, parent, fence, failure) = row[10:]
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
    rec.failure = _failure_of(failure)
    rec.wake_at = wake_at
    rec.history_len = history_len
    rec.parent = parent
    if in_fork:
        rec.task_id = None
        rec.branches = branches_of(spec, json.loads(branches or "[]"))
    if payload is not None:
        stored = json.loads(payload)
        if "fan" in stored:
            rec.fan = _fan(spec, state, stored["fan"])
        elif "waited" in stored:
            rec.waited = _waited(stored["waited"])
        else:
            tp = spec.step(state).payload_type if spec.has_step(state) else None
            rec.payload = payload_value(stored["v"], tp) if tp is not None else None
    # The row exists (its next commit updates it), at the fence it was last claimed with.
    rec.stored = True
    rec.fence = int(fence)
    return rec


def _failure_of(stored: str | None) -> dict[str, Any] | None:
    """The failure record of a row's ``failure`` column (``None``: none, or not an object)."""
    if stored is None:
        return None
    decoded: object = json.loads(stored)
    return cast("dict[str, Any]", decoded) if isinstance(decoded, dict) else None


def branches_of(spec: WorkflowSpec, stored: object) -> dict[str, Branch]:
    """The branches stored as ``{name: branch}`` (SQLite) or ``[[name, branch], ...]`` (PostgreSQL)."""
    pairs: Any = stored
    if isinstance(stored, dict):
        pairs = cast("dict[str, Any]", stored).items()
    out: dict[str, Branch] = {}
    for name, (attempt, visit, task_id, wake_at, waiting, payload) in pairs:
        b = Branch(int(visit))
        b.attempt = int(attempt)
        b.task_id = task_id
        b.wake_at = wake_at
        b.waiting = bool(waiting)
        if payload is not None and "fan" in payload:
            b.fan = _fan(spec, name, payload["fan"])
        elif payload is not None and "waited" in payload:
            b.waited = _waited(payload["waited"])
        elif payload is not None:
            tp = spec.step(name).payload_type
            b.payload = payload_value(payload["v"], tp) if tp is not None else None
        out[name] = b
    return out


def _waited(stored: Any) -> Waited:
    """A reminded wait as stored: ``[since, [runs of each reminder]]``."""
    since, runs = stored
    return float(since), tuple(int(n) for n in runs)


def _fan(spec: WorkflowSpec, step: str, stored: Any) -> FanOut:
    """The progress of the fan-out step *step* as stored (its children not started yet rebuilt)."""
    child = spec.step(step).child
    if child is None:
        msg = f"the stored children of {step} belong to a fan-out step, which {spec.label} does not have"
        raise TypeError(msg)
    return FanOut.from_json(stored, child)


def info(row: tuple[Any, ...]) -> InstanceInfo:
    """
    The snapshot of a row.

    The row: id, workflow, version, status, state, created_at, error, task_id,
    wake_at, parent, failure.
    """
    instance_id, workflow, version, status, state, created_at, error, task_id, wake_at, parent, failure = row
    in_fork = state.startswith("[")
    steps = tuple(active_steps(json.loads(state) if in_fork else state))
    stat = InstanceStatus(status)
    return InstanceInfo(
        id=instance_id,
        workflow=workflow,
        version=version,
        status=stat,
        step=steps[0] if steps else None,
        created_at=created_at,
        error=error,
        open_task=task_id,
        wake_at=wake_at,
        steps=steps,
        in_fork=in_fork,
        parent=parent,
        outcome=outcome_of(stat, _failure_of(failure)),
    )


def task(row: tuple[Any, ...], registry: WorkflowRegistry) -> Task:
    """
    The task of a row, its form decoded with its workflow's form type.

    The row: id, instance_id, workflow, version, step, assignee, groups, created_at,
    due_at, status, completed_by, completed_at, form, fingerprint, claimed_by.
    """
    (task_id, instance_id, workflow, version, step, assignee, groups, created_at, due_at) = row[:9]
    (status, completed_by, completed_at, form, fingerprint, claimed_by) = row[9:]
    cls = registry.resolve(workflow, version, fingerprint)
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
        claimed_by=claimed_by,
    )


def history(rows: Iterable[tuple[Any, ...]]) -> list[HistoryEvent]:
    """The events of rows: at, kind, step, attempt, detail."""
    return [HistoryEvent(at, EventKind(kind), step, attempt, detail) for at, kind, step, attempt, detail in rows]


def message_types(spec: WorkflowSpec) -> dict[str, type[Any]]:
    """The message types of a workflow's steps, by the type name a signal row stores."""
    return {f"{s.message.__module__}.{s.message.__qualname__}": s.message for s in spec.steps if s.message is not None}


def signals(rows: Iterable[tuple[Any, ...]], types: dict[str, type[Any]]) -> list[Signal]:
    """The signals of rows (seq, type, payload) whose type is one of *types* (others are left out)."""
    out: list[Signal] = []
    for seq, type_name, payload in rows:
        tp = types.get(type_name)
        if tp is not None:
            message: object = structure(json.loads(payload), tp)
            out.append(Signal(seq, type_name, message))
    return out


def commands(instance_id: str, rows: Iterable[tuple[Any, ...]]) -> list[Command]:
    """The commands of rows: seq, kind, body (a JSON object), created_at."""
    out: list[Command] = []
    for seq, kind, body, created_at in rows:
        decoded: object = json.loads(body)
        if not isinstance(decoded, dict):
            msg = f"the body of command {seq} is not a JSON object"
            raise TypeError(msg)
        out.append(Command(seq, instance_id, kind, cast("dict[str, Any]", decoded), created_at))
    return out
