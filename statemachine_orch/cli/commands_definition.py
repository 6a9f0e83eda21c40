"""Commands about workflow definitions: ``check``, ``paths``, ``graph``."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

import typer

from statemachine_orch import paths, spec_of
from statemachine_orch._workflow import collect_definition_errors

from . import output
from .client import client
from .failures import FAILED, UsageProblem, guarded
from .loading import import_module, load_class, workflows_in
from .options import JsonOption, StoreOption

_ERRORS_KEPT = "__orch_definition_errors__"


@guarded
def check(
    module: Annotated[str, typer.Argument(metavar="MODULE", help="A module (or .py file) of workflow classes.")],
    as_json: JsonOption = False,
) -> None:
    """Check every workflow class in a module; exit 1 with each definition error when there are any."""
    # Each invalid class is reported, not only the first: the import goes on past them.
    with collect_definition_errors() as errors:
        imported = import_module(module)
    # A module imported before (in this process) ran its class statements then: its
    # errors are kept on it.
    if errors:
        vars(imported)[_ERRORS_KEPT] = errors
    else:
        errors = vars(imported).get(_ERRORS_KEPT, [])
    classes = workflows_in(imported)
    if errors:
        problems = [
            {"workflow": p.workflow, "step": p.step, "rule": p.rule, "message": p.message}
            for exc in errors
            for p in exc.problems
        ]
        valid = [f"{spec_of(c).name} v{spec_of(c).version}" for c in classes]
        if as_json:
            output.emit_json({"ok": False, "workflows": valid, "problems": problems})
        else:
            for name in valid:
                output.console.print(f"ok  {name}", markup=False)
            for exc in errors:
                output.console.print(f"{module}: {exc.workflow} is invalid", markup=False)
                for p in exc.problems:
                    output.console.print(f"  - {p}", markup=False)
        raise typer.Exit(FAILED)
    names = [f"{spec_of(c).name} v{spec_of(c).version}" for c in classes]
    if as_json:
        output.emit_json({"ok": True, "workflows": names, "problems": []})
        return
    if not classes:
        output.console.print(f"{module}: no workflow classes", markup=False)
        return
    for name in names:
        output.console.print(f"ok  {name}", markup=False)


@guarded
def paths_command(
    workflow_path: Annotated[str, typer.Argument(metavar="MODULE:Class", help="The workflow class.")],
    max_loops: Annotated[int, typer.Option(min=0, help="How often each loop may be taken on a path.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """List every path through a workflow (error, compensation and cancellation paths included)."""
    workflow = load_class(workflow_path)
    found = paths(workflow, max_loops=max_loops)
    if as_json:
        output.emit_json(
            [
                {
                    "steps": list(p.steps),
                    "ending": p.ending.value,
                    "undone": list(p.undone),
                    "reachable": p.reachable,
                    "unreachable_because": p.unreachable_because,
                    "text": str(p),
                }
                for p in found
            ]
        )
        return
    for number, p in enumerate(found, 1):
        mark = "" if p.reachable else f"  (unreachable: {p.unreachable_because})"
        output.console.print(f"{number:>3}. {p}{mark}", markup=False)


class GraphFormat(enum.StrEnum):
    """What ``orch graph`` writes."""

    MERMAID = "mermaid"
    """Mermaid ``stateDiagram-v2`` text."""
    DOT = "dot"
    """Graphviz DOT text."""
    SVG = "svg"
    """An SVG picture (Graphviz)."""
    PNG = "png"
    """A PNG picture (Graphviz)."""


_FORMATS: dict[GraphFormat, Literal["mermaid", "dot", "svg", "png"]] = {
    GraphFormat.MERMAID: "mermaid",
    GraphFormat.DOT: "dot",
    GraphFormat.SVG: "svg",
    GraphFormat.PNG: "png",
}


@guarded
def graph(
    workflow_path: Annotated[str, typer.Argument(metavar="MODULE:Class", help="The workflow class.")],
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f", help="mermaid, dot, svg or png.")] = GraphFormat.MERMAID,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Mark this instance's progress on the diagram.")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Draw a workflow (with --instance, that instance's completed, current, failed and compensated steps)."""
    from statemachine_orch import diagrams  # noqa: PLC0415 - loaded only to draw

    if out is None and fmt is GraphFormat.PNG:
        raise UsageProblem("--format png needs -o FILE (a picture is not written to the terminal)")
    workflow = load_class(workflow_path)
    overlay: diagrams.Overlay | None = None
    if instance is not None:
        with client(store, (), workflows=[workflow]) as engine:
            overlay = diagrams.Overlay.of(engine, instance)
    data = diagrams.render(workflow, _FORMATS[fmt], overlay=overlay)
    if out is None:
        typer.echo(data.decode(), nl=False)
        return
    out.write_bytes(data)
    output.console.print(f"wrote {out} ({len(data)} bytes, {fmt.value})", markup=False)
