"""Diagrams of a workflow, from its spec."""

from __future__ import annotations

from ._spec import StepKind, WorkflowSpec
from ._workflow import Workflow, spec_of


def _label(text: str) -> str:
    return text.replace('"', "'").replace("|", "/")


def mermaid(workflow: type[Workflow] | WorkflowSpec) -> str:
    """
    A Mermaid ``stateDiagram-v2`` of the workflow, to paste into a README.

    Guards label their edges, ``[default]`` marks the default edge of a choice,
    error routes are labelled ``on_error``, and steps with a compensation are noted.

    .. versionadded:: 0.1.0
    """
    spec = workflow if isinstance(workflow, WorkflowSpec) else spec_of(workflow)
    lines = ["stateDiagram-v2", f"    [*] --> {spec.initial}"]
    for s in spec.steps:
        if s.kind is StepKind.HUMAN_TASK:
            who = (
                s.task.assignee if s.task and s.task.assignee else ", ".join(s.task.candidate_groups if s.task else ())
            )
            lines.append(f"    {s.name}: {s.name} (human task: {_label(who)})")
        if s.compensation is not None:
            lines.append(f"    note right of {s.name}: undo: {s.compensation.name}")
    for s in spec.steps:
        out = spec.outgoing(s.name)
        choice = sum(1 for e in out if e.is_completion) > 1
        for e in out:
            label = e.label or ("[default]" if choice else "")
            suffix = f": {_label(label)}" if label else ""
            lines.append(f"    {e.source} --> {e.dest}{suffix}")
        if s.final:
            lines.append(f"    {s.name} --> [*]")
    return "\n".join(lines) + "\n"
