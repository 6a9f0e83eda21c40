"""Read commands: ``instances``, ``show``, ``history``, ``tree``, ``tasks``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from statemachine_orch import Engine, InstanceStatus, OrchError, UnknownWorkflowVersion
from statemachine_orch._serialize import unstructure

from . import output
from .client import POLL, client
from .failures import UsageProblem, guarded
from .options import JsonOption, ModulesOption, StoreOption


def _status(text: str | None) -> InstanceStatus | None:
    if text is None:
        return None
    try:
        return InstanceStatus(text)
    except ValueError:
        names = ", ".join(s.value for s in InstanceStatus)
        msg = f"--status {text!r}: one of {names}"
        raise UsageProblem(msg) from None


@guarded
def instances(
    store: StoreOption = None,
    status: Annotated[str | None, typer.Option(help="Only instances with this status (running, waiting, ...).")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only instances of this workflow (its name).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    modules: ModulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """List instances, newest first."""
    wanted = _status(status)
    with client(store, modules or ()) as engine:
        found = sorted(engine.instances(wanted, workflow), key=lambda i: (i.created_at, i.id), reverse=True)[:limit]
    if as_json:
        output.emit_json([output.instance_json(i) for i in found])
        return
    output.table("Instances", output.INSTANCE_COLUMNS, output.instance_rows(found))


def _variables(engine: Engine, instance_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The instance's variables as JSON, or why they cannot be shown (its version has no class here...)."""
    try:
        wf = engine.workflow(instance_id)
    except UnknownWorkflowVersion:
        return None, output.version_note(engine.info(instance_id))
    except OrchError as exc:
        return None, str(exc)
    data: dict[str, Any] = unstructure(wf)
    return data, None


def _show_data(engine: Engine, instance_id: str) -> dict[str, Any]:
    info = engine.info(instance_id)
    variables, why = _variables(engine, instance_id)
    return {
        "instance": output.instance_json(info),
        "variables": variables,
        "variables_unavailable": why,
        "tasks": [output.task_json(t) for t in engine.tasks(instance_id=instance_id)],
        "timer": output.when(info.wake_at),
        "children": [output.instance_json(c) for c in engine.children(instance_id)],
    }


@guarded
def show(
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="The instance.")],
    store: StoreOption = None,
    modules: ModulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one instance: status, current steps, variables, open tasks, timer, children."""
    with client(store, modules or ()) as engine:
        data = _show_data(engine, instance_id)
        info = engine.info(instance_id)
    if as_json:
        output.emit_json(data)
        return
    c = output.console
    c.print(f"[bold]{info.id}[/bold]  {info.workflow} v{info.version}  {info.status.value}")
    note = output.version_note(info)
    if note is not None and output.unknown_version(info):
        c.print(note, markup=False)
    rows = [
        ("step", ", ".join(info.steps) or (info.step or "-")),
        ("created", output.short_when(info.created_at) + " UTC"),
        ("parent", info.parent or "-"),
        ("error", info.error or "-"),
        ("timer", (output.short_when(info.wake_at) + " UTC") if info.wake_at is not None else "-"),
    ]
    if info.quarantined:
        rows.append(("quarantined", info.quarantined))
    for key, value in rows:
        c.print(f"  {key:<12}{value}")
    if data["variables"] is not None:
        c.print("  variables")
        for key, value in data["variables"].items():
            c.print(f"    {key} = {value!r}")
    else:
        c.print(f"  variables   ({data['variables_unavailable']})", markup=False)
    for task in data["tasks"]:
        who = task["assignee"] or ", ".join(task["candidate_groups"])
        due = f", due {task['due_at']}" if task["due_at"] else ""
        c.print(f"  open task   {task['id']} at {task['step']} for {who}{due}")
    for child in data["children"]:
        c.print(f"  child       {child['id']} {child['workflow']} {child['status']}")


@guarded
def history(
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="The instance.")],
    store: StoreOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries until the instance ends.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Print an instance's history, oldest first (with --json: one JSON object per line when following)."""
    with client(store) as engine:
        if not follow:
            events = engine.history(instance_id)
            if as_json:
                output.emit_json([output.event_json(e) for e in events])
            else:
                for event in events:
                    output.console.print(output.event_line(event), markup=False)
            return
        _follow(engine, instance_id, as_json=as_json)


def _follow(engine: Engine, instance_id: str, *, as_json: bool) -> None:
    """Print new history entries as they come, until the instance is terminal and every entry is out."""
    shown = 0
    while True:
        # The status first: entries written up to the end are then in the history read after it.
        ended = engine.info(instance_id).status.is_terminal
        events = engine.history(instance_id)
        for event in events[shown:]:
            if as_json:
                output.emit_json_line(output.event_json(event))
            else:
                output.console.print(output.event_line(event), markup=False)
        shown = len(events)
        if ended:
            return
        time.sleep(POLL)


def _tree_json(engine: Engine, instance_id: str) -> dict[str, Any]:
    data = output.instance_json(engine.info(instance_id))
    data["children"] = [_tree_json(engine, c.id) for c in engine.children(instance_id)]
    return data


@guarded
def tree(
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="The instance.")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an instance and its child instances, recursively."""
    with client(store) as engine:
        if as_json:
            output.emit_json(_tree_json(engine, instance_id))
        else:
            output.console.print(engine.tree(instance_id), markup=False)


@guarded
def tasks(
    store: StoreOption = None,
    user: Annotated[str | None, typer.Option(help="Only tasks this user may complete.")] = None,
    group: Annotated[list[str] | None, typer.Option(help="The user's group (repeatable).")] = None,
    instance: Annotated[str | None, typer.Option(help="Only this instance's tasks.")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only tasks past their due time.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List open human tasks."""
    if group and user is None:
        raise UsageProblem("--group needs --user (the groups are that user's)")
    with client(store) as engine:
        found = engine.tasks(user, group or (), instance_id=instance)
        now = engine.clock.now()
    if overdue:
        found = [t for t in found if t.due_at is not None and t.due_at < now]
    if as_json:
        output.emit_json([output.task_json(t) for t in found])
        return
    rows = [
        [
            t.id,
            t.instance_id,
            t.workflow,
            t.step,
            t.assignee or "",
            ", ".join(t.candidate_groups),
            t.form_type.__name__ if t.form_type is not None else "",
            output.short_when(t.due_at) + (" (overdue)" if t.due_at is not None and t.due_at < now else ""),
        ]
        for t in found
    ]
    output.table("Tasks", ("task", "instance", "workflow", "step", "assignee", "groups", "form", "due (UTC)"), rows)
