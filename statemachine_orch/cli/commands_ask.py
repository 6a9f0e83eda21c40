"""Commands that ask without changing anything: ``query`` (an instance's ``@query``) and ``schedules``."""

from __future__ import annotations

import typing
from typing import Annotated, Any

import typer

from statemachine_orch import QueryError, SystemClock, spec_of
from statemachine_orch._schedule import iso_utc
from statemachine_orch._schedules import schedule_info
from statemachine_orch._serialize import unstructure
from statemachine_orch._typed_json import typed

from . import output
from .client import client, opened
from .commands_change import workflow_of
from .convert import input_value
from .failures import Problem, UsageProblem, guarded
from .loading import import_all, schedules_of
from .options import JsonOption, ModulesOption, StoreOption


def _arguments(fn: typing.Callable[..., Any], parameters: tuple[str, ...], texts: list[str], name: str) -> list[object]:
    """The query's positional arguments from the command line's texts, each checked against its annotation."""
    if len(texts) > len(parameters):
        msg = f"query {name} takes {len(parameters)} argument(s) ({', '.join(parameters) or 'none'}), got {len(texts)}"
        raise UsageProblem(msg)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - a name only the type checker sees: pass the values as read
        hints = {}
    out: list[object] = []
    for parameter, text in zip(parameters, texts, strict=False):
        tp = hints.get(parameter)
        value = input_value(text, tp)
        if isinstance(tp, type) or typing.get_origin(tp) is not None:
            value, problem = typed(value, typing.cast("type", tp))
            if problem is not None:
                msg = f"query {name}, argument {parameter}: {problem.detail}"
                raise UsageProblem(msg)
        out.append(value)
    return out


@guarded
def query(
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="The instance.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The @query method's name.")],
    args: Annotated[
        list[str] | None, typer.Argument(metavar="[ARG]...", help="Its arguments: JSON when it parses, else text.")
    ] = None,
    store: StoreOption = None,
    modules: ModulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask an instance a @query of its workflow: the answer from its current variables (nothing changes)."""
    workflow = workflow_of(store, modules, instance_id)
    spec = spec_of(workflow)
    declared = spec.query(name)
    if declared is None:
        known = ", ".join(q.name for q in spec.queries) or "none"
        raise QueryError(instance_id, name, f"{spec.label} declares no @query {name} (its queries: {known})")
    values = _arguments(declared.fn, declared.parameters, args or [], name)
    with client(store) as engine:
        answer = engine.query(instance_id, getattr(workflow, name), *values)
    data = unstructure(answer)
    if as_json:
        output.emit_json({"instance": instance_id, "query": name, "answer": data})
    else:
        output.console.print(output.json_text(data), markup=False)


@guarded
def schedules(
    modules: Annotated[
        list[str] | None,
        typer.Argument(metavar="[MODULE]...", help="Modules declaring orch_schedules (also $ORCH_MODULES)."),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the schedules of MODULE... (their orch_schedules): where each stands in the store, and its next due time."""
    declared = schedules_of(import_all(modules or ()))
    if not declared:
        msg = "no orch_schedules in the modules given (name them, or set $ORCH_MODULES)"
        raise Problem(msg)
    with opened(store) as st:
        now = SystemClock().now()
        found = [schedule_info(s, st.schedule(s.id), now) for s in declared]
    if as_json:
        output.emit_json(
            [
                {
                    "id": s.id,
                    "next_due": iso_utc(s.next_due),
                    "last_due": None if s.last_due is None else iso_utc(s.last_due),
                    "last_instance": s.last_instance,
                    "started": s.started,
                }
                for s in found
            ]
        )
        return
    rows = [
        [
            s.id,
            iso_utc(s.next_due),
            "-" if s.last_due is None else iso_utc(s.last_due),
            s.last_instance or "-",
            str(s.started),
        ]
        for s in found
    ]
    output.table("Schedules", ("id", "next due (UTC)", "last due (UTC)", "last instance", "started"), rows)
