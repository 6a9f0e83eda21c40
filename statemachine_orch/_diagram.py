"""Diagrams of a workflow, from its spec."""

from __future__ import annotations

from ._spec import StepKind, WorkflowSpec
from ._workflow import Workflow, spec_of


def _label(text: str) -> str:
    return text.replace('"', "'").replace("|", "/")


def _unused(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def mermaid(workflow: type[Workflow] | WorkflowSpec) -> str:
    """
    A Mermaid ``stateDiagram-v2`` of the workflow, to paste into a README.

    Guards label their edges, ``[default]`` marks the default edge of a choice,
    error routes are labelled ``on_error``, and steps with a compensation are noted.
    A fork step leads to a ``<<fork>>`` pseudo-state (``<step>_fork``) from which
    its branches start, and the branches end at a ``<<join>>`` pseudo-state
    (``<join>_join``) that leads to the join step.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 Forks and joins.
    """
    spec = workflow if isinstance(workflow, WorkflowSpec) else spec_of(workflow)
    lines = ["stateDiagram-v2", f"    [*] --> {spec.initial}"]
    taken = {s.name for s in spec.steps}
    fork_node = {f.step: _unused(f"{f.step}_fork", taken) for f in spec.forks}
    join_node = {f.join: _unused(f"{f.join}_join", taken) for f in spec.forks}
    # The steps whose edges into a join arrive at its pseudo-state: those of the fork's branches.
    into_join = {(n, f.join) for f in spec.forks for r in f.regions for n in r.steps}
    for s in spec.steps:
        if s.kind is StepKind.HUMAN_TASK:
            who = (
                s.task.assignee if s.task and s.task.assignee else ", ".join(s.task.candidate_groups if s.task else ())
            )
            lines.append(f"    {s.name}: {s.name} (human task: {_label(who)})")
        if s.compensation is not None:
            lines.append(f"    note right of {s.name}: undo: {s.compensation.name}")
    for f in spec.forks:
        lines.append(f"    state {fork_node[f.step]} <<fork>>")
        lines.append(f"    state {join_node[f.join]} <<join>>")
    for s in spec.steps:
        if s.name in join_node:
            lines.append(f"    {join_node[s.name]} --> {s.name}")
        out = spec.outgoing(s.name)
        fork = spec.fork(s.name)
        if fork is not None:
            lines.append(f"    {s.name} --> {fork_node[s.name]}")
        choice = fork is None and sum(1 for e in out if e.is_completion) > 1
        for e in out:
            label = e.label or ("[default]" if choice and e.is_completion else "")
            suffix = f": {_label(label)}" if label else ""
            source = fork_node[s.name] if fork is not None and e.is_completion else e.source
            dest = join_node[e.dest] if (e.source, e.dest) in into_join else e.dest
            lines.append(f"    {source} --> {dest}{suffix}")
        if s.final:
            lines.append(f"    {s.name} --> [*]")
    return "\n".join(lines) + "\n"
