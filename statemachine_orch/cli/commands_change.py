"""Commands that change instances: ``complete``, ``signal``, ``cancel``, ``retry``, ``migrate``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from statemachine_orch import Engine, InstanceInfo, InstanceStatus, TaskNotFound, Workflow
from statemachine_orch._registry import default_registry

from . import output
from .client import POLL, client, opened, run_async
from .convert import form_for, message_for, parse_json
from .failures import FAILED, Problem, guarded
from .loading import import_all, import_module, load_class, services_of
from .options import JsonOption, ModulesOption, StoreOption

_ENDED_WELL = (InstanceStatus.COMPLETED, InstanceStatus.CANCELLED)


@guarded
def complete(
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="The task id (see orch tasks).")],
    user: Annotated[str, typer.Option(help="Who completes it (the assignee, or a member of a candidate group).")],
    store: StoreOption = None,
    group: Annotated[list[str] | None, typer.Option(help="The user's group (repeatable).")] = None,
    form_json: Annotated[
        str | None, typer.Option("--form-json", help="The form, as JSON of the task's form type.")
    ] = None,
    modules: ModulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Complete an open human task with a form; the instance then moves on (in its worker)."""
    value = None if form_json is None else parse_json(form_json, "--form-json")
    with client(store, modules or ()) as engine:
        task = engine.store.task(task_id)
        if task is None:
            raise TaskNotFound(task_id, "no such task")
        _known(engine.info(task.instance_id))
        form = form_for(task, value)
        done = run_async(lambda: engine.complete_task(task_id, user=user, groups=group or (), form=form))
    if as_json:
        output.emit_json(output.task_json(done))
    else:
        output.console.print(f"completed task {done.id} ({done.step} of {done.instance_id}) as {user}", markup=False)


def _known(info: InstanceInfo) -> None:
    """Refuse to act on an instance whose workflow version has no class here (naming it)."""
    note = output.version_note(info)
    if note is not None:
        msg = f"instance {info.id}: {note}"
        raise Problem(msg)


def workflow_of(store_url: str | None, modules: list[str] | None, instance_id: str) -> type[Workflow]:
    """The class of the instance's workflow version, after importing *modules* (refused when there is none here)."""
    with client(store_url, modules or ()) as engine:
        info = engine.info(instance_id)
    _known(info)
    cls = default_registry.resolve(info.workflow, info.version)
    assert cls is not None  # noqa: S101 - _known checked it
    return cls


@guarded
def signal(
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="The instance.")],
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="The message type (a @wait_for type's name).")],
    json_text: Annotated[str, typer.Option("--json", help="The message, as JSON of that type.")] = "{}",
    store: StoreOption = None,
    modules: ModulesOption = None,
) -> None:
    """Send a message to an instance (kept until a @wait_for step of its type takes it)."""
    value = parse_json(json_text, "--json")
    workflow = workflow_of(store, modules, instance_id)
    message = message_for(workflow, instance_id, type_name, value)
    with client(store) as engine:
        run_async(lambda: engine.signal(instance_id, message))
    output.console.print(f"sent {type(message).__name__} to {instance_id}", markup=False)


def _ended(instance_id: str, status: InstanceStatus) -> None:
    output.console.print(f"{instance_id} is {status.value}", markup=False)
    if status not in _ENDED_WELL:
        raise typer.Exit(FAILED)


@guarded
def cancel(
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="The instance.")],
    store: StoreOption = None,
    no_compensate: Annotated[
        bool, typer.Option("--no-compensate", help="Do not run the compensations of completed steps.")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
    modules: ModulesOption = None,
) -> None:
    """Cancel an instance and wait until it ends (compensating its completed steps unless told not to)."""
    with client(store, modules or ()) as engine:
        status = run_async(lambda: engine.cancel(instance_id, reason=reason, compensate=not no_compensate))
    _ended(instance_id, status)


@guarded
def retry(
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="A compensation_failed instance.")],
    store: StoreOption = None,
    modules: ModulesOption = None,
    here: Annotated[
        bool,
        typer.Option("--here", help="Run the compensations in this process (with the modules' orch_services)."),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Give up waiting for the end after this many seconds.")
    ] = None,
) -> None:
    """Run again the compensations of a compensation_failed instance, and wait until it ends."""
    loaded = import_all(modules or ())
    with opened(store) as st:
        services = services_of(loaded) if here else None
        engine = Engine(st, concurrency=1 if here else 0, services=services, poll=POLL)
        status = asyncio.run(_retry(engine, instance_id, here=here, timeout=timeout))
    output.console.print(f"{instance_id} is {status.value}", markup=False)
    if status is InstanceStatus.COMPENSATION_FAILED:
        raise typer.Exit(FAILED)


async def _retry(engine: Engine, instance_id: str, *, here: bool, timeout: float | None) -> InstanceStatus:  # noqa: ASYNC109
    if here:
        await engine.recover()
    try:
        # The new end: a client's call waits until a worker took the command, then for the end.
        return await asyncio.wait_for(engine.retry_compensation(instance_id), timeout)
    except TimeoutError:
        msg = (
            f"instance {instance_id}: the compensations did not end within {timeout:g} s "
            "(is a worker running? --here runs them in this process)"
        )
        raise Problem(msg) from None
    finally:
        if here:
            await engine.aclose()


@guarded
def migrate(
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="The instance (waiting, not running a step).")],
    to: Annotated[str, typer.Option("--to", help="The new version's class, MODULE:Class.")],
    store: StoreOption = None,
    modules: ModulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """
    Move an instance to another version of its workflow, through its declared @migration.

    The engine applies a migration in the process that asks for it: this command
    claims the instance (it must be waiting, not running a step in a worker),
    migrates it and hands it back, with the modules' ``orch_services``.
    """
    target = load_class(to)
    loaded = [*import_all(modules or ()), import_module(target.__module__)]
    with opened(store) as st:
        engine = Engine(st, concurrency=1, services=services_of(loaded), workflows=[target], poll=POLL)
        info = asyncio.run(_migrate(engine, instance_id, target))
    if as_json:
        output.emit_json(output.instance_json(info))
    else:
        output.console.print(f"{info.id} is now {info.workflow} version {info.version} ({info.status.value})")


async def _migrate(engine: Engine, instance_id: str, target: type[Workflow]) -> InstanceInfo:
    try:
        return await engine.migrate(instance_id, to=target)
    finally:
        await engine.aclose()
