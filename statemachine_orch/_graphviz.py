"""
DOT, SVG and PNG diagrams of a workflow, drawn by transitions' own ``GraphMachine``.

The diagram is a machine of its own, built from the :class:`WorkflowSpec` for
drawing only (never triggered, no model): its states are the steps, a start and
an end marker, and one node per compensation; a workflow with forks becomes a
``HierarchicalGraphMachine`` whose parallel states hold the branches. The
lifecycle states of the running machine (``@compensating``...) are not in it.
transitions' graphviz engine turns it into a ``graphviz.Digraph``; a legend is
added beside it, and ``dot`` renders SVG and PNG.

Only this module imports ``graphviz``, and only when a diagram is drawn.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from typing import Any

from transitions import State
from transitions.extensions.diagrams import GraphMachine, HierarchicalGraphMachine
from transitions.extensions.nesting import NestedState

from ._diagram import GraphvizUnavailable
from ._overlay import OVERLAY_COLOURS, OVERLAY_STATES, OVERLAY_STRONG, Overlay
from ._spec import EdgeSpec, ForkSpec, RegionSpec, StepKind, StepSpec, WorkflowSpec

START = "@start"
END = "@end"
# Neither "@" nor "." can be in a step name: these never clash with one.
_UNDO = "@undo"


class _LabelledState(State):
    """A state that carries the text its node shows (transitions' markup reads ``label``)."""

    def __init__(self, name: str, *, label: str = "", **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.label = label


class _LabelledNestedState(NestedState):
    """The same, nested; ``.`` separates the levels, as ``_` may be in a step name."""

    separator = "."

    def __init__(self, name: str, *, label: str = "", **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.label = label


_ATTRIBUTES = {"directed": "true", "strict": "false", "rankdir": "LR", "compound": "true", "fontname": "Helvetica"}


class _FlatDiagram(GraphMachine):
    state_cls = _LabelledState
    machine_attributes = _ATTRIBUTES


class _NestedDiagram(HierarchicalGraphMachine):
    state_cls = _LabelledNestedState
    machine_attributes = _ATTRIBUTES


# What marks each kind of node; an overlay's fill is laid over it.
_KIND_STYLE: Mapping[str, Mapping[str, str]] = {
    "step": {"shape": "rectangle", "style": "rounded,filled", "fillcolor": "white", "peripheries": "1"},
    "human_task": {"shape": "rectangle", "style": "filled,bold", "fillcolor": "#e3f2fd", "peripheries": "2"},
    "wait": {"shape": "rectangle", "style": "rounded,filled,dashed", "fillcolor": "white", "peripheries": "1"},
    "failure_end": {
        "shape": "rectangle",
        "style": "rounded,filled",
        "fillcolor": "#ffebee",
        "color": "#c62828",
        "peripheries": "1",
    },
    "compensation": {
        "shape": "note",
        "style": "filled,dashed",
        "fillcolor": "#fff8e1",
        "color": "#8d6e63",
        "fontcolor": "#5d4037",
        "peripheries": "1",
    },
    # A point shows no label: the markers need none.
    "start": {"shape": "point", "style": "filled", "fillcolor": "black", "width": "0.2", "peripheries": "1"},
    "end": {"shape": "point", "style": "filled", "fillcolor": "black", "width": "0.15", "peripheries": "2"},
}

_LEGEND_TEXT = {
    "human_task": "human task",
    "failure_end": "failure end",
    "compensation": "compensation (undo)",
    "completed": "completed",
    "current": "current",
    "failed": "failed",
    "compensated": "compensated",
    "compensation_failed": "compensation failed",
}

_EDGE_STYLE: Mapping[str, Mapping[str, str]] = {
    "undo": {"style": "dashed", "color": "#8d6e63", "fontcolor": "#5d4037", "arrowhead": "empty"},
    "error": {"style": "dashed", "color": "#c62828", "fontcolor": "#c62828"},
    "timeout": {"style": "dotted", "color": "#ef6c00", "fontcolor": "#ef6c00"},
    "reminder": {"style": "dotted", "color": "#1565c0", "fontcolor": "#1565c0", "arrowhead": "vee"},
}


def _overlay_style(state: str) -> dict[str, str]:
    fill, border = OVERLAY_COLOURS[state]
    width = "2.5" if state in OVERLAY_STRONG else "1.5"
    return {"fillcolor": fill, "color": border, "penwidth": width}


def _text(text: str) -> str:
    """*text* for a DOT label: backslashes kept as typed, and never read as an HTML-like label."""
    text = text.replace("\\", "\\\\")
    return text + " " if text.startswith("<") and text.endswith(">") else text


def _lines(*parts: str) -> str:
    # transitions ends every state label with "\l" (left-aligned): the other lines follow suit.
    return "\\l".join(_text(p) for p in parts if p)


def _kind(step: StepSpec) -> str:
    if step.outcome is not None:
        return "failure_end"
    if step.kind is StepKind.HUMAN_TASK:
        return "human_task"
    return "step" if step.kind is StepKind.STEP else "wait"


def _describe(step: StepSpec, spec: WorkflowSpec, joins: set[str]) -> str:
    """The node's text: the step's name, then what kind of step it is."""
    notes: list[str] = []
    if step.kind is StepKind.HUMAN_TASK and step.task is not None:
        who = step.task.who
        notes.append(f"human task: {who}")
    elif step.kind is StepKind.TIMER:
        notes.append(f"timer {step.delay:g}s" if step.delay is not None else "timer")
    elif step.kind is StepKind.WAIT_FOR and step.message is not None:
        notes.append(f"waits for {step.message.__name__}")
    elif step.kind is StepKind.SUBFLOW and step.child is not None:
        notes.append(f"subflow: {step.child.__name__}")
    elif step.fan is not None and step.child is not None:
        notes.append(f"fan-out: {step.child.__name__}, {step.fan.label}")
    if step.outcome is not None:
        notes.append(f"failure end: {step.outcome}")
    if spec.is_side_step(step.name):
        notes.append("side step (a reminder)")
    if spec.fork(step.name) is not None:
        notes.append("fork")
    if step.name in joins:
        notes.append("join")
    return _lines(step.name, *notes)


class _Builder:
    """The states, transitions and styles of one diagram machine."""

    def __init__(self, spec: WorkflowSpec, overlay: Overlay | None) -> None:
        self.spec = spec
        self.overlay = overlay
        self.joins = {f.join for f in spec.forks}
        self.paths: dict[str, str] = {}
        self.region_paths: dict[str, str] = {}
        self.pairs: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
        self.node_styles: dict[str, str] = {}
        self.edge_styles: dict[tuple[str, str], str] = {}
        self.styles: dict[str, dict[str, str]] = {}
        self.legend: set[str] = set()

    # -- states

    def states(self) -> list[Any]:
        """The top level: markers, the steps outside every fork with their undos, then the forks."""
        spec = self.spec
        top = [s for s in spec.steps if spec.branch_of(s.name) is None]
        states: list[Any] = [self.marker(START, "start")]
        states += self.steps(top, "")
        states += [self.compound(f, "") for f in spec.forks if f.parent is None]
        if any(s.final for s in spec.steps):
            states.append(self.marker(END, "end"))
        return states

    def marker(self, name: str, kind: str) -> dict[str, Any]:
        self.node_styles[name] = self.style(kind, None)
        return {"name": name, "label": " "}

    def steps(self, steps: list[StepSpec], prefix: str) -> list[Any]:
        out: list[Any] = []
        for s in steps:
            path = self.paths[s.name] = prefix + s.name
            state = self.overlay.state_of(s.name) if self.overlay is not None else None
            self.node_styles[path] = self.style(_kind(s), state)
            out.append({"name": s.name, "label": _describe(s, self.spec, self.joins)})
            if s.compensation is not None:
                undo = f"{s.name}{_UNDO}"
                # The undo note shows how the undo went: done, or failed.
                undone = state if state in ("compensated", "compensation_failed") else None
                self.node_styles[prefix + undo] = self.style("compensation", undone)
                child = s.child.__name__ if s.child is not None else None
                what = f"{'children' if s.fan is not None else 'child'} {child}" if child else s.compensation.name
                also = "even if it failed or was cut short" if s.compensation.attempted else ""
                out.append({"name": undo, "label": _lines(what, f"undoes {s.name}", also)})
        return out

    def compound(self, fork: ForkSpec, prefix: str) -> dict[str, Any]:
        path = f"{prefix}{fork.step}@fork"
        regions = [self.region(fork, r, f"{path}.") for r in fork.regions]
        label = _lines(f"parallel after {fork.step}, joined by {fork.join}")
        return {"name": f"{fork.step}@fork", "label": label, "parallel": regions}

    def region(self, fork: ForkSpec, region: RegionSpec, prefix: str) -> dict[str, Any]:
        name = f"{region.name}@branch"
        path = self.region_paths[region.name] = prefix + name
        own = [self.spec.step(n) for n in region.steps if self.spec.branch_of(n) == (fork, region)]
        children = self.steps(own, path + ".")
        children += [self.compound(f, path + ".") for f in self.spec.forks if f.parent == (fork.step, region.name)]
        return {"name": name, "label": _lines(f"branch {region.name}"), "children": children, "initial": region.name}

    def style(self, kind: str, state: str | None) -> str:
        """The name of the node style for *kind* drawn in overlay *state*, registered once."""
        name = kind if state is None else f"{kind}+{state}"
        if name not in self.styles:
            attrs = dict(_KIND_STYLE[kind])
            if state is not None:
                attrs.update(_overlay_style(state))
            self.styles[name] = attrs
        if kind in _LEGEND_TEXT:
            self.legend.add(kind)
        if state is not None:
            self.legend.add(state)
        return name

    # -- transitions

    def edges(self) -> list[dict[str, Any]]:
        spec = self.spec
        self.add(START, self.paths[spec.initial], "")
        for s in spec.steps:
            source = self.paths[s.name]
            out = spec.outgoing(s.name)
            fork = spec.fork(s.name)
            completion = [e for e in out if e.is_completion]
            choice = fork is None and len(completion) > 1
            for e in out:
                if e.is_error:
                    self.add(source, self.paths[e.dest], e.label, "error")
                elif e.is_timeout:
                    self.add(source, self.paths[e.dest], e.label, "timeout")
                elif e.is_reminder:
                    # The side step runs beside the wait, which goes on: no transition.
                    self.add(source, self.paths[e.dest], e.label, "reminder")
                elif fork is not None:
                    # A fork's edge starts a branch: it ends at the branch's frame.
                    self.add(source, self.region_paths[e.dest], e.label)
                else:
                    self.add(source, self.paths[e.dest], self.completion_label(e, choice=choice))
            if s.outcome is not None:
                self.add(source, END, s.outcome, "error")  # the instance fails, with this outcome
            elif s.final:
                self.add(source, END, "")
            if s.compensation is not None:
                undo = source.rpartition(".")[0]
                undo = f"{undo}.{s.name}{_UNDO}" if undo else f"{s.name}{_UNDO}"
                self.add(source, undo, "undo", "undo")
        return self.merged()

    @staticmethod
    def completion_label(edge: EdgeSpec, *, choice: bool) -> str:
        if edge.label:
            return edge.label
        return "[default]" if choice else ""

    def add(self, source: str, dest: str, label: str, style: str | None = None) -> None:
        self.pairs.setdefault((source, dest), []).append((label, style))

    def merged(self) -> list[dict[str, Any]]:
        """
        One transition per pair of nodes.

        transitions would join the labels of several edges between two nodes itself,
        empty ones included, and style them as one; an unlabelled completion edge
        beside an escalation to the same step is shown as ``done``.
        """
        out: list[dict[str, Any]] = []
        for (source, dest), found in self.pairs.items():
            labels = [label or ("done" if len(found) > 1 else "") for label, _ in found]
            styles = {style for _, style in found}
            # transitions labels an edge with its trigger unless it has a label: the one trigger is "".
            transition: dict[str, Any] = {"trigger": "", "source": source, "dest": dest}
            text = " | ".join(label for label in labels if label)
            if text:
                transition["label"] = _text(text)
            out.append(transition)
            style = styles.pop() if len(styles) == 1 else None
            if style is not None:
                self.edge_styles[source, dest] = style
        return out


def _graphviz() -> Any:
    try:
        return importlib.import_module("graphviz")
    except ImportError as exc:
        msg = (
            "DOT, SVG and PNG diagrams need the graphviz package: "
            "pip install 'statemachine-orch[diagrams]' (Mermaid needs nothing)"
        )
        raise GraphvizUnavailable("graphviz", msg) from exc


def digraph(spec: WorkflowSpec, overlay: Overlay | None) -> Any:
    """The ``graphviz.Digraph`` of *spec*, with *overlay* drawn over it and a legend."""
    graphviz = _graphviz()
    builder = _Builder(spec, overlay)
    states = builder.states()
    transitions = builder.edges()
    cls = _NestedDiagram if spec.has_forks else _FlatDiagram
    machine: Any = cls(
        model=None,
        states=states,
        transitions=transitions,
        initial=START,
        auto_transitions=False,
        graph_engine="graphviz",
        show_conditions=False,
        title=spec.label,
    )
    styles: dict[str, Any] = copy.deepcopy(cls.style_attributes)
    styles["node"].update(builder.styles)
    styles["edge"].update({k: dict(v) for k, v in _EDGE_STYLE.items()})
    # An instance attribute: the class's dictionaries are shared by every machine.
    machine.style_attributes = styles
    graph: Any = machine.graph_cls(machine)
    for node, style in builder.node_styles.items():
        graph.set_node_style(node, style)
    for (source, dest), style in builder.edge_styles.items():
        graph.custom_styles["edge"][source][dest] = style
    caption = overlay.caption if overlay is not None else ""
    title = f"{spec.label}: {caption}" if caption else spec.label
    drawn: Any = graph.get_graph(title=_text(title))
    _legend(graphviz, drawn, builder)
    return drawn


def _legend(graphviz: Any, drawn: Any, builder: _Builder) -> None:
    entries = [k for k in ("human_task", "failure_end", "compensation", *OVERLAY_STATES) if k in builder.legend]
    if not entries:
        return
    legend: Any = graphviz.Digraph(name="cluster_legend")
    legend.attr(label="legend", style="rounded,dashed", color="grey", fontcolor="grey30")
    for key in entries:
        attrs = dict(_KIND_STYLE[key]) if key in _KIND_STYLE else {**_KIND_STYLE["step"], **_overlay_style(key)}
        legend.node(f"(legend) {key}", label=_LEGEND_TEXT[key], **attrs)
    drawn.subgraph(legend)


def render_graphviz(spec: WorkflowSpec, fmt: str, overlay: Overlay | None) -> bytes:
    """
    *spec* as DOT source, or rendered by ``dot`` as SVG or PNG.

    Raises:
        GraphvizUnavailable: The graphviz package, or (SVG, PNG) the ``dot`` program, is missing.
    """
    drawn = digraph(spec, overlay)
    if fmt == "dot":
        source: str = drawn.source
        return source.encode()
    graphviz = _graphviz()
    try:
        out: bytes = drawn.pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound as exc:
        msg = (
            f"{fmt.upper()} diagrams are drawn by Graphviz's dot program, which is not on the PATH: "
            "install Graphviz (apt install graphviz, brew install graphviz...) or ask for DOT or Mermaid"
        )
        raise GraphvizUnavailable("dot", msg) from exc
    return out
