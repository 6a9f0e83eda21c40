"""Diagrams of a workflow, from its spec: Mermaid here, Graphviz in ``_graphviz.py``."""

from __future__ import annotations

from ._errors import OrchError
from ._overlay import OVERLAY_COLOURS, OVERLAY_STATES, OVERLAY_STRONG, Overlay
from ._spec import StepKind, WorkflowSpec
from ._workflow import Workflow, spec_of


class GraphvizUnavailable(OrchError, ImportError):
    """
    A DOT, SVG or PNG diagram was asked for, and Graphviz is missing.

    Either the ``graphviz`` Python package (the ``diagrams`` extra:
    ``pip install 'statemachine-orch[diagrams]'``) or, for SVG and PNG, Graphviz's
    ``dot`` program (``apt install graphviz``, ``brew install graphviz``...).
    Mermaid needs neither.

    Attributes:
        missing: ``"graphviz"`` (the package) or ``"dot"`` (the program).

    .. versionadded:: 0.1.0
    """

    def __init__(self, missing: str, message: str) -> None:
        super().__init__(message)
        self.missing = missing


class OverlayMismatch(OrchError, ValueError):
    """
    An overlay drawn over a diagram it does not belong to.

    Its instance runs another workflow or version, or it names steps the
    diagram's workflow does not have.

    Attributes:
        workflow: The diagram's workflow, ``Name version V``.
        steps: The overlay's steps the workflow does not have.

    .. versionadded:: 0.1.0
    """

    def __init__(self, workflow: str, steps: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.workflow = workflow
        self.steps = steps


def spec_from(workflow: type[Workflow] | WorkflowSpec) -> WorkflowSpec:
    """The spec of *workflow*, a workflow class or already its spec."""
    return workflow if isinstance(workflow, WorkflowSpec) else spec_of(workflow)


def checked(spec: WorkflowSpec, overlay: Overlay | None) -> Overlay | None:
    """
    *overlay*, once it is known to belong to *spec*'s diagram.

    Raises:
        OverlayMismatch: Its instance runs another workflow or version, or it names unknown steps.
    """
    if overlay is None:
        return None
    who = f"instance {overlay.instance_id}" if overlay.instance_id is not None else "the overlay"
    if (overlay.workflow is not None and overlay.workflow != spec.name) or (
        overlay.version is not None and overlay.version != spec.version
    ):
        msg = (
            f"{who} runs {overlay.workflow} version {overlay.version}, not {spec.label}; "
            "draw it over the diagram of the class it runs"
        )
        raise OverlayMismatch(spec.label, (), msg)
    unknown = tuple(sorted(n for n in overlay.steps() if not spec.has_step(n)))
    if unknown:
        msg = f"{who} names steps {spec.label} does not have: {', '.join(unknown)}"
        raise OverlayMismatch(spec.label, unknown, msg)
    return overlay


def _label(text: str) -> str:
    return text.replace('"', "'").replace("|", "/")


def _unused(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def mermaid(workflow: type[Workflow] | WorkflowSpec, *, overlay: Overlay | None = None) -> str:
    """
    A Mermaid ``stateDiagram-v2`` of the workflow, to paste into a README.

    Guards label their edges, ``[default]`` marks the default edge of a choice,
    error routes are labelled ``on_error``, a reminder's edge to its side step
    ``reminder after|every <s>`` (the wait goes on), and steps with a compensation are noted;
    a failure end's edge to the end is labelled with its outcome.
    A fork step leads to a ``<<fork>>`` pseudo-state (``<step>_fork``) from which
    its branches start, and the branches end at a ``<<join>>`` pseudo-state
    (``<join>_join``) that leads to the join step.

    With an *overlay*, the steps one instance completed, stands at, failed at,
    compensated and failed to compensate are coloured by the classes
    ``completed``, ``current``, ``failed``, ``compensated`` and
    ``compensation_failed`` (``classDef`` and ``class`` statements at the end).

    Raises:
        OverlayMismatch: The overlay belongs to another workflow or version.

    .. versionadded:: 0.1.0
    """
    spec = spec_from(workflow)
    shown = checked(spec, overlay)
    lines = ["stateDiagram-v2", f"    [*] --> {spec.initial}"]
    taken = {s.name for s in spec.steps}
    fork_node = {f.step: _unused(f"{f.step}_fork", taken) for f in spec.forks}
    join_node = {f.join: _unused(f"{f.join}_join", taken) for f in spec.forks}
    # The steps whose edges into a join arrive at its pseudo-state: those of the fork's branches.
    into_join = {(n, f.join) for f in spec.forks for r in f.regions for n in r.steps}
    for s in spec.steps:
        if s.kind is StepKind.HUMAN_TASK:
            who = s.task.who if s.task else ""
            lines.append(f"    {s.name}: {s.name} (human task: {_label(who)})")
        if s.fan is not None and s.child is not None:
            lines.append(f"    {s.name}: {s.name} (fan-out: {s.child.__name__}, {s.fan.label})")
        if s.outcome is not None:
            lines.append(f"    {s.name}: {s.name} (failure end: {_label(s.outcome)})")
        if s.compensation is not None:
            also = " (also if it failed or was cut short)" if s.compensation.attempted else ""
            lines.append(f"    note right of {s.name}: undo: {s.compensation.name}{also}")
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
        if s.outcome is not None:
            lines.append(f"    {s.name} --> [*]: {_label(s.outcome)}")
        elif s.final:
            lines.append(f"    {s.name} --> [*]")
    if shown is not None:
        lines += _mermaid_classes(spec, shown)
    return "\n".join(lines) + "\n"


def _mermaid_classes(spec: WorkflowSpec, overlay: Overlay) -> list[str]:
    members: dict[str, list[str]] = {state: [] for state in OVERLAY_STATES}
    for s in spec.steps:
        state = overlay.state_of(s.name)
        if state is not None:
            members[state].append(s.name)
    lines: list[str] = []
    for state, names in members.items():
        if names:
            fill, border = OVERLAY_COLOURS[state]
            width = "3px" if state in OVERLAY_STRONG else "1px"
            lines.append(f"    classDef {state} fill:{fill},stroke:{border},stroke-width:{width}")
            lines.append(f"    class {','.join(names)} {state}")
    return lines
