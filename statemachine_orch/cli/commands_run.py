"""``orch run``: start an instance and follow it to its end or its first wait, with a live display."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from statemachine_orch import Engine, InstanceInfo, InstanceStatus, OrchError, Workflow

from . import output
from .client import POLL, opened
from .convert import workflow_input
from .failures import FAILED, Problem, guarded
from .loading import import_module, load_class, services_of
from .options import JsonOption, StoreOption

_GOOD = (InstanceStatus.COMPLETED, InstanceStatus.WAITING)


@guarded
def run(
    workflow_path: Annotated[str, typer.Argument(metavar="MODULE:Class", help="The workflow class.")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="A field of the input, NAME=VALUE (repeatable).")
    ] = None,
    input_json: Annotated[str | None, typer.Option("--input-json", help="The input, as a JSON object.")] = None,
    store: StoreOption = None,
    instance_id: Annotated[
        str | None, typer.Option("--id", help="The instance id (starting an existing id starts nothing).")
    ] = None,
    here: Annotated[
        bool,
        typer.Option(
            "--here", help="Also run it in this process (a worker with the module's orch_services) until it waits."
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.1, help="Stop following after this many seconds (the instance goes on; exit 1)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start an instance and follow it to its end or its first wait (workers run it: see orch worker)."""
    workflow = load_class(workflow_path)
    wf = workflow_input(workflow, inputs or (), input_json)
    services = services_of([import_module(workflow.__module__)]) if here else None
    with opened(store, create=True) as st:
        engine = Engine(st, concurrency=4 if here else 0, workflows=[workflow], services=services, poll=POLL)
        info = asyncio.run(_start_and_follow(engine, wf, instance_id, live=not as_json, here=here, timeout=timeout))
    if as_json:
        output.emit_json(output.instance_json(info))
    else:
        where = f" at {', '.join(info.steps) or info.step}" if info.steps or info.step else ""
        task = f" (task {info.open_task})" if info.open_task else ""
        error = f": {info.error}" if info.error else ""
        output.console.print(f"{info.id} {info.status.value}{where}{task}{error}", markup=False)
    if info.status not in _GOOD:
        raise typer.Exit(FAILED)


async def _start_and_follow(
    engine: Engine,
    wf: Workflow,
    instance_id: str | None,
    *,
    live: bool,
    here: bool,
    timeout: float | None,  # noqa: ASYNC109 - the command's option, applied to the following only
) -> InstanceInfo:
    if here:
        await engine.recover()
    try:
        handle = await engine.start(wf, instance_id=instance_id)
        waiting = asyncio.ensure_future(engine.wait_instance(handle.instance_id, terminal=False))
        try:
            await asyncio.wait_for(_follow(engine, handle.instance_id, waiting, live=live), timeout)
        except TimeoutError:
            info = engine.info(handle.instance_id)
            msg = (
                f"{info.id} is still {info.status.value} after {timeout:g} s "
                "(is a worker running? orch worker MODULE --store URL, or orch run --here)"
            )
            raise Problem(msg) from None
        finally:
            waiting.cancel()
        return engine.info(handle.instance_id)
    finally:
        if here:
            await engine.aclose()


async def _follow(engine: Engine, instance_id: str, waiting: asyncio.Future[InstanceStatus], *, live: bool) -> None:
    if live:
        await _display(engine, instance_id, waiting)
    await waiting


async def _display(engine: Engine, instance_id: str, waiting: asyncio.Future[InstanceStatus]) -> None:
    """A progress bar of the instance's steps, redrawn until *waiting* is done."""
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[where]}")
    )
    row = bar.add_task(instance_id, total=1.0, where="starting")
    with Live(bar, console=output.console, transient=False, refresh_per_second=10):
        while True:
            try:
                now = engine.progress(instance_id)
                where = f"{now.status.value}" + (f" at {now.step}" if now.step else "")
                bar.update(row, completed=now.fraction, where=where)
            except OrchError as exc:
                bar.update(row, where=str(exc))
            if waiting.done():
                break
            await asyncio.wait({waiting}, timeout=POLL)
    if not output.console.is_terminal:
        output.console.line()  # the last frame ends its line in a log or a pipe
