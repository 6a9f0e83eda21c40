"""
Structural rules checked on every compiled spec.

Each rule yields :class:`DefinitionProblem` records naming the step and the rule;
the compiler gathers them with the problems found while resolving references and
raises them together.
"""

from __future__ import annotations

import inspect
import warnings
from collections import Counter
from collections.abc import Iterator

from ._conditions import conditions_of
from ._errors import DefinitionProblem
from ._spec import EdgeSpec, StepKind, WorkflowSpec


class DeadEdgeWarning(UserWarning):
    """
    An edge of a workflow can never be taken: its guard never holds, or only when an earlier edge's does.

    Raised (as a warning) when the class is created. Guards are read from their
    source: comparisons of variables with numbers, strings, enum members and
    booleans, joined by ``and``, ``or`` and ``not``.

    Attributes:
        workflow: The class name.
        edge: The dead edge.
        shadowed_by: The earlier edges that take its instances (empty when its own guard never holds).

    .. versionadded:: 0.1.0
    """

    def __init__(self, message: str, workflow: str, edge: EdgeSpec, shadowed_by: tuple[EdgeSpec, ...]) -> None:
        self.workflow = workflow
        self.edge = edge
        self.shadowed_by = shadowed_by
        super().__init__(message)


def _file_of(owner: type) -> str:
    try:
        return inspect.getsourcefile(owner) or "<unknown>"
    except TypeError:  # a class of no file (built in a REPL)
        return "<unknown>"


def warn_dead_edges(spec: WorkflowSpec, owner: type) -> None:
    """Warn (:class:`DeadEdgeWarning`) about each edge of *spec* that can never be taken, where it is declared."""
    for edge, by in conditions_of(spec, owner).shadowed():
        what = f"{edge.source} -> {edge.dest} [{f'when {edge.guard_name}' if edge.guard is not None else 'default'}]"
        if not by:
            why = "its guard never holds"
        elif edge.guard is None:
            why = "the guards before it cover every value: " + ", ".join(str(b.guard_name) for b in by)
        else:
            earlier = " or ".join(f"{b.source} -> {b.dest} [when {b.guard_name}]" for b in by)
            why = f"every instance its guard lets through takes the earlier edge {earlier} (the first that holds wins)"
        msg = f"{spec.name}.{edge.source}: the edge {what} is never taken: {why}"
        code = getattr(edge.guard, "__code__", None)
        filename = code.co_filename if code is not None else _file_of(owner)
        lineno = code.co_firstlineno if code is not None else 1
        warnings.warn_explicit(DeadEdgeWarning(msg, spec.name, edge, by), DeadEdgeWarning, filename, lineno)


# Names of the base class that a field or step would shadow.
ENGINE_ATTRIBUTES = frozenset(
    {"__orch_spec__", "__orch_machine__", "__orch_abstract__", "__orch_validate__", "_orch_state"}
)


def structural_problems(spec: WorkflowSpec) -> list[DefinitionProblem]:
    """Every structural problem of *spec*, in a stable order."""
    return [DefinitionProblem(spec.name, step, rule, msg) for rule_fn in _RULES for step, rule, msg in rule_fn(spec)]


Found = Iterator[tuple[str | None, str, str]]


def _initial(spec: WorkflowSpec) -> Found:
    initial = [s.name for s in spec.steps if s.initial]
    if not spec.steps:
        yield None, "no-steps", "declares no step; decorate methods with @step"
    elif not initial:
        yield None, "no-initial-step", "has no initial step; mark the first one with @step(initial=True)"
    elif len(initial) > 1:
        names = ", ".join(initial)
        yield (
            None,
            "several-initial-steps",
            f"has {len(initial)} initial steps ({names}); exactly one may be initial",
        )


def _reachable(spec: WorkflowSpec) -> Found:
    if not spec.initial:
        return
    seen = {spec.initial}
    todo = [spec.initial]
    while todo:
        for edge in spec.outgoing(todo.pop()):
            if edge.dest not in seen:
                seen.add(edge.dest)
                todo.append(edge.dest)
    for s in spec.steps:
        if s.name not in seen:
            msg = f"is not reachable from the initial step {spec.initial}; add an @after edge into it"
            yield s.name, "unreachable-step", msg


def _way_out(spec: WorkflowSpec) -> Found:
    for s in spec.steps:
        if spec.is_side_step(s.name):
            continue  # it runs beside a wait, which goes on: it has no way out of its own (_reminders)
        completion = [e for e in spec.outgoing(s.name) if e.is_completion]
        if s.final and completion:
            dests = ", ".join(e.dest for e in completion)
            msg = f"is final=True but has outgoing edges (to {dests}); a final step ends the instance"
            yield s.name, "final-with-edges", msg
        if not s.final and not completion:
            msg = (
                "is not final and has no outgoing edge; add @after(" + s.name + ") to a later step, "
                "@goto(...) on it, or mark it final=True"
            )
            yield s.name, "no-way-out", msg


def _can_end(spec: WorkflowSpec) -> Found:
    if not spec.initial:
        return
    incoming: dict[str, list[str]] = {s.name: [] for s in spec.steps}
    for e in spec.edges:
        if not e.is_reminder:  # a side step ends nothing: the wait it runs beside goes on
            incoming.setdefault(e.dest, []).append(e.source)
    # Steps without any way out are reported by _way_out; count them as ends here
    # so that their predecessors are not blamed a second time.
    ends = {
        s.name
        for s in spec.steps
        if s.final or (not spec.is_side_step(s.name) and not any(e.is_completion for e in spec.outgoing(s.name)))
    }
    todo = list(ends)
    while todo:
        for src in incoming.get(todo.pop(), ()):
            if src not in ends:
                ends.add(src)
                todo.append(src)
    for s in spec.steps:
        if s.name not in ends and spec.outgoing(s.name):
            msg = "cannot reach any final step: every path from it loops forever; add an exit edge to a final step"
            yield s.name, "no-end-reachable", msg


def _defaults(spec: WorkflowSpec) -> Found:
    for s in spec.steps:
        defaults = [e.dest for e in spec.outgoing(s.name) if e.is_default]
        if len(defaults) > 1 and not s.fork:
            dests = ", ".join(defaults)
            msg = (
                f"has {len(defaults)} unguarded (default) edges, to {dests}; "
                "only one edge may be the default: give the others a when= guard"
            )
            yield s.name, "several-defaults", msg


def _timeouts(spec: WorkflowSpec) -> Found:
    for s in spec.steps:
        timeouts = [e for e in spec.outgoing(s.name) if e.is_timeout]
        if timeouts and s.kind not in (StepKind.HUMAN_TASK, StepKind.WAIT_FOR):
            msg = (
                f"has a timeout edge to {timeouts[0].dest}, but only a waiting step "
                "(@human_task or @wait_for) can time out"
            )
            yield s.name, "timeout-needs-wait", msg
        if len(timeouts) > 1:
            dests = ", ".join(e.dest for e in timeouts)
            yield (
                s.name,
                "several-timeouts",
                f"has {len(timeouts)} timeout edges (to {dests}); a wait escalates one way",
            )
        for e in timeouts:
            if e.guard is not None or e.on_error:
                msg = f"the timeout edge to {e.dest} also has when= or on_error=; a timeout edge takes neither"
                yield s.name, "timeout-with-condition", msg
            if e.timeout is not None and e.timeout <= 0:
                yield (
                    s.name,
                    "bad-timeout",
                    f"the timeout edge to {e.dest} has timeout={e.timeout:g}s; it must be > 0",
                )


def _reminders(spec: WorkflowSpec) -> Found:
    for s in spec.steps:
        for e in spec.outgoing(s.name):
            if not e.is_reminder:
                continue
            if s.kind in (StepKind.SUBFLOW, StepKind.FAN_OUT):
                msg = (
                    f"has a reminder edge to {e.dest}, but it is a @{s.kind.value} step: its wait ends with "
                    "its children, and only a @human_task or @wait_for can be reminded of; "
                    "give the child workflow the reminder (on its own waiting step)"
                )
                yield s.name, "reminder-needs-wait", msg
            elif s.kind not in (StepKind.HUMAN_TASK, StepKind.WAIT_FOR):
                msg = (
                    f"has a reminder edge to {e.dest}, but only a waiting step (@human_task or @wait_for) "
                    "can be reminded of"
                )
                yield s.name, "reminder-needs-wait", msg
            if e.reminder is not None and e.reminder <= 0:
                yield (
                    s.name,
                    "bad-reminder",
                    f"the reminder edge to {e.dest} has reminder={e.reminder:g}s; it must be > 0",
                )
    for s in spec.steps:
        if not spec.is_side_step(s.name):
            continue
        into = [e for e in spec.edges if e.dest == s.name]
        wrong: list[str] = []
        if s.kind is not StepKind.STEP or s.fork or s.final or s.initial or s.outcome is not None:
            wrong.append("a plain @step (not a waiting step, a fork, a final or an initial step)")
        if len(into) > 1:
            wrong.append(f"entered by one reminder edge only (it has {len(into)} edges into it)")
        if spec.outgoing(s.name):
            wrong.append("without edges of its own")
        if s.compensation is not None:
            wrong.append("without a compensation (a reminder is not undone)")
        if s.error is not None:
            wrong.append("without an error parameter")
        if wrong:
            msg = "is the side step of a reminder, so it must be " + "; ".join(wrong)
            yield s.name, "side-step", msg


def _duplicates(spec: WorkflowSpec) -> Found:
    counts = Counter((e.source, e.dest, e.guard_name, e.on_error, e.timeout) for e in spec.edges)
    for (src, dest, *_), n in counts.items():
        if n > 1:
            yield src, "duplicate-edge", f"has the same edge to {dest} declared {n} times"


def _names(spec: WorkflowSpec) -> Found:
    names = [f.name for f in spec.fields] + [s.name for s in spec.steps]
    for name in names:
        if name in ENGINE_ATTRIBUTES:
            yield name, "reserved-name", f"{name!r} is an attribute of the engine; rename it"


_RULES = (_initial, _reachable, _way_out, _can_end, _defaults, _timeouts, _reminders, _duplicates, _names)
