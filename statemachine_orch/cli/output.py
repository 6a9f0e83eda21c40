"""
What commands print: rich tables for people, ``--json`` for scripts.

JSON goes to stdout as one document (times as ISO 8601 UTC text); tables and
messages go to stdout too, errors to stderr (``failures``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from statemachine_orch import HistoryEvent, InstanceInfo, Task, WorkflowRegistry
from statemachine_orch._registry import default_registry
from statemachine_orch._serialize import unstructure

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
"""Where tables and messages go (stdout)."""


def when(at: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC text (``None`` stays ``None``)."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def short_when(at: float | None) -> str:
    """Seconds since the epoch as ``YYYY-MM-DD HH:MM:SS`` UTC (empty for ``None``)."""
    return "" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def json_text(value: object) -> str:
    """*value* as compact JSON on one line (times and the like as their text)."""
    return json.dumps(value, default=str)


def emit_json(value: object) -> None:
    """Print *value* as indented JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def version_note(info: InstanceInfo, registry: WorkflowRegistry = default_registry) -> str | None:
    """
    Why this process cannot run the instance's version, or ``None`` when it can.

    An instance whose workflow has classes here, but none of its version, is an
    unknown version; one whose workflow has no class at all was not imported.
    """
    if registry.has(info.workflow, info.version):
        return None
    known = registry.versions(info.workflow)
    if known:
        return (
            f"unknown version: {info.workflow} version {info.version} has no class here "
            f"(known versions: {', '.join(known)})"
        )
    return f"{info.workflow} is not imported here (give its module with --module)"


def unknown_version(info: InstanceInfo, registry: WorkflowRegistry = default_registry) -> bool:
    """Whether the instance's workflow has classes here, but none of its version."""
    return not registry.has(info.workflow, info.version) and bool(registry.versions(info.workflow))


def instance_json(info: InstanceInfo) -> dict[str, Any]:
    """An instance snapshot as JSON."""
    return {
        "id": info.id,
        "workflow": info.workflow,
        "version": info.version,
        "unknown_version": unknown_version(info),
        "status": info.status.value,
        "step": info.step,
        "steps": list(info.steps),
        "in_fork": info.in_fork,
        "created_at": when(info.created_at),
        "error": info.error,
        "open_task": info.open_task,
        "wake_at": when(info.wake_at),
        "parent": info.parent,
        "quarantined": info.quarantined,
    }


def task_json(task: Task) -> dict[str, Any]:
    """A task as JSON (its form, if completed, as the converter writes it)."""
    return {
        "id": task.id,
        "instance_id": task.instance_id,
        "workflow": task.workflow,
        "step": task.step,
        "assignee": task.assignee,
        "candidate_groups": list(task.candidate_groups),
        "form_type": None if task.form_type is None else task.form_type.__name__,
        "created_at": when(task.created_at),
        "due_at": when(task.due_at),
        "status": task.status.value,
        "completed_by": task.completed_by,
        "completed_at": when(task.completed_at),
        "form": None if task.form is None else unstructure(task.form),
    }


def event_json(event: HistoryEvent) -> dict[str, Any]:
    """A history entry as JSON."""
    return {
        "at": when(event.at),
        "kind": event.kind.value,
        "step": event.step,
        "attempt": event.attempt,
        "detail": event.detail,
    }


def event_line(event: HistoryEvent) -> str:
    """A history entry as one line: UTC time, then what happened."""
    return f"{short_when(event.at)}  {event.describe()}"


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a table (or a line saying it is empty)."""
    made = Table(title=title, title_justify="left", show_lines=False, expand=False)
    for column in columns:
        made.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        made.add_row(*row)
        count += 1
    if count == 0:
        console.print(f"(no {title.lower() if title else 'rows'})")
        return
    console.print(made)


def instance_rows(infos: Iterable[InstanceInfo]) -> list[list[str]]:
    """The instance table's rows: unknown versions and quarantines named in the last column."""
    rows: list[list[str]] = []
    for info in infos:
        note = info.error or ""
        if info.quarantined:
            note = f"quarantined: {info.quarantined}"
        elif unknown_version(info):
            note = f"unknown version {info.version}" + (f"; {note}" if note else "")
        rows.append(
            [
                info.id,
                info.workflow,
                info.version,
                info.status.value,
                ", ".join(info.steps) or (info.step or ""),
                short_when(info.created_at),
                info.open_task or "",
                note,
            ]
        )
    return rows


INSTANCE_COLUMNS = ("id", "workflow", "version", "status", "step", "created (UTC)", "open task", "note")
"""The columns of ``orch instances``."""


def emit_json_line(value: object) -> None:
    """Print *value* as one line of JSON on stdout (a stream of entries)."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()
