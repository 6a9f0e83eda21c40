"""
Tasks, instances and history entries as the API's JSON (and the pages' rows).

Times are ISO 8601 strings in UTC; variables and forms are their stored JSON
(the library's converter), so what the API shows is what the store keeps.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from typing import Any

from statemachine_orch._history import HistoryEvent
from statemachine_orch._instance import InstanceInfo
from statemachine_orch._progress import Progress
from statemachine_orch._serialize import unstructure
from statemachine_orch._tasks import Task
from statemachine_orch._workflow import spec_of

KEY_VARIABLES = 4
"""How many of an instance's variables the inbox shows beside a task."""


def iso(at: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC string (``None`` stays ``None``)."""
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def shown_time(at: float | None) -> str:
    """Seconds since the epoch as the pages show them: ``2026-05-04 13:02 UTC``."""
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def task_json(task: Task, now: float) -> dict[str, Any]:
    """A task as the API shows it."""
    return {
        "id": task.id,
        "instance_id": task.instance_id,
        "workflow": task.workflow,
        "step": task.step,
        "status": task.status.value,
        "assignee": task.assignee,
        "candidate_groups": list(task.candidate_groups),
        "claimed_by": task.claimed_by,
        "created_at": iso(task.created_at),
        "due_at": iso(task.due_at),
        "overdue": overdue(task, now),
        "form_type": task.form_type.__name__ if task.form_type is not None else None,
        "completed_by": task.completed_by,
        "completed_at": iso(task.completed_at),
        "form": unstructure(task.form, task.form_type) if task.form is not None else None,
    }


def overdue(task: Task, now: float) -> bool:
    """Whether *task* is open past its due time."""
    return task.due_at is not None and task.due_at <= now and task.status.value == "open"


def instance_json(info: InstanceInfo) -> dict[str, Any]:
    """An instance's snapshot as the API shows it."""
    return {
        "id": info.id,
        "workflow": info.workflow,
        "version": info.version,
        "status": info.status.value,
        "step": info.step,
        "steps": list(info.steps),
        "created_at": iso(info.created_at),
        "error": info.error,
        "open_task": info.open_task,
        "wake_at": iso(info.wake_at),
        "parent": info.parent,
        "quarantined": info.quarantined,
    }


def progress_json(progress: Progress) -> dict[str, Any]:
    """How far an instance is, as the API shows it."""
    return {
        "steps_done": progress.steps_done,
        "steps_left": progress.steps_left,
        "fraction": progress.fraction,
    }


def event_json(event: HistoryEvent) -> dict[str, Any]:
    """A history entry as the API shows it."""
    return {
        "at": iso(event.at),
        "kind": event.kind.value,
        "step": event.step,
        "attempt": event.attempt,
        "detail": event.detail,
    }


def variables_json(wf: object) -> dict[str, Any]:
    """An instance's variables as stored (its fields, by name)."""
    data: Any = unstructure(wf)
    return dict(data)


def key_variables(wf: object, limit: int = KEY_VARIABLES) -> list[tuple[str, str]]:
    """The first *limit* plain variables (text, numbers, flags, choices, dates) of a workflow object, shown."""
    out: list[tuple[str, str]] = []
    for field in spec_of(type(wf)).fields:
        value: object = getattr(wf, field.name, None)
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, (str, int, float, decimal.Decimal, dt.date)) and not isinstance(value, bool):
            out.append((field.name, str(value)))
        if len(out) == limit:
            break
    return out
