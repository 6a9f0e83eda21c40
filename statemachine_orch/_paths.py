"""
Every path through a workflow, read from its :class:`WorkflowSpec`.

A path starts at the initial step and follows edges until the instance would
end: completed (a final step), failed (a step failed for good, or completed with
no edge it could take) with the compensations that would then run, or cancelled
while it waited. Error routes (``on_error``) and escalations (``timeout=``) are
ordinary edges on the way.
Loops are unrolled: each back edge is taken at most ``max_loops`` times per path.

Whether a path is *reachable* cannot be decided in general (guards are Python).
We answer the part that can be answered from the source: a path is unreachable
when it needs one guard to be both true and false with no step in between that
could change what the guard reads. Everything else counts as reachable.
"""

from __future__ import annotations

import ast
import enum
import gc
import inspect
import textwrap
import types
import typing
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from ._spec import EdgeSpec, StepKind, StepSpec, WorkflowSpec
from ._workflow import spec_of


class Ending(enum.Enum):
    """
    How a :class:`Path` ends.

    .. versionadded:: 0.1.0
    """

    COMPLETED = "completed"
    """A final step completed."""
    FAILED = "failed"
    """The last step failed for good (after its retries) and no ``on_error`` edge took the error."""
    NO_EDGE = "no edge"
    """The last step completed but none of its guards held and it has no default edge."""
    CANCELLED = "cancelled"
    """The instance was cancelled (with compensation) while it waited at the last step."""

    @property
    def failed(self) -> bool:
        """Whether the instance ends ``failed`` (its compensations ran)."""
        return self in (Ending.FAILED, Ending.NO_EDGE)


@attrs.frozen
class GuardOutcome:
    """
    A guard evaluated on the way, and the value the path needs it to have.

    .. versionadded:: 0.1.0
    """

    edge: EdgeSpec
    holds: bool

    def __str__(self) -> str:
        """``guard`` or ``not guard``."""
        name = self.edge.guard_name or "?"
        return name if self.holds else f"not {name}"


@attrs.frozen
class Path:
    """
    One way through a workflow, from the initial step to an end.

    Attributes:
        workflow: The workflow's name.
        steps: The steps entered, in order (a step appears once per visit).
        edges: The edges taken (``len(steps) - 1`` of them).
        guards: Every guard evaluated on the way with the value this path needs,
            in evaluation order (a default edge needs every guard before it false).
        ending: How the path ends.
        undone: The steps whose compensations run at the end, in the order they run.
        compensations: The names of those compensation methods, in the same order.
        reachable: ``False`` only when the path provably cannot happen: it needs a
            guard to be both true and false while no step in between writes anything
            the guard reads. ``True`` means "not contradicted", not "proven possible".
        unreachable_because: Why it cannot happen (``None`` when reachable).

    .. versionadded:: 0.1.0
    """

    workflow: str
    steps: tuple[str, ...]
    edges: tuple[EdgeSpec, ...]
    guards: tuple[GuardOutcome, ...]
    ending: Ending
    undone: tuple[str, ...]
    compensations: tuple[str, ...]
    reachable: bool
    unreachable_because: str | None = None
    _choices: tuple[tuple[GuardOutcome, ...], ...] = attrs.field(default=(), repr=False, eq=False, alias="choices")

    @property
    def last_step(self) -> str:
        """The step where the path ends."""
        return self.steps[-1]

    @property
    def error_routed(self) -> bool:
        """Whether an ``on_error`` edge is on the path."""
        return any(e.is_error for e in self.edges)

    @property
    def loops(self) -> int:
        """How many back edges (``@goto``) the path takes."""
        return sum(1 for e in self.edges if e.back)

    def __str__(self) -> str:
        """One line: ``a -[guard]-> b -> c => completed``."""
        parts = [self.steps[0]]
        for i, edge in enumerate(self.edges):
            parts.append(_arrow(edge, self._choices[i] if i < len(self._choices) else ()))
            parts.append(self.steps[i + 1])
        text = "".join(parts)
        last = self._choices[len(self.edges)] if len(self._choices) > len(self.edges) else ()
        ending = self.ending
        if ending is Ending.COMPLETED:
            text += " => completed"
        else:
            if ending is Ending.NO_EDGE:
                guards = ", ".join(str(g) for g in last)
                text += f" => no edge enabled ({guards})"
            else:
                text += " => fails" if ending is Ending.FAILED else " => cancel"
            if self.compensations:
                text += ", undo " + ", ".join(self.compensations)
            text += " => cancelled" if ending is Ending.CANCELLED else " => failed"
        if not self.reachable:
            text = f"[unreachable: {self.unreachable_because}] " + text
        return text


def _arrow(edge: EdgeSpec, outcomes: tuple[GuardOutcome, ...]) -> str:
    if edge.is_error:
        return f" -[{edge.label}]-> "
    if edge.is_timeout:
        return f" -[{edge.label}]-> "
    if not outcomes:
        return " -> "
    return " -[" + ", ".join(str(o) for o in outcomes) + "]-> "


def paths(workflow: type[Any] | WorkflowSpec, max_loops: int = 1) -> list[Path]:
    """
    Every path through *workflow*, error, compensation and cancellation paths included.

    Each step can complete (then its edges are followed: the guarded ones in
    declaration order, the default when no guard holds, and a dead end when there
    is none), fail for good (then its ``on_error`` edges are followed, or the
    instance fails and compensates), and a waiting step (a human task) can be
    cancelled. Each back edge is taken at most *max_loops* times on a path.

    Args:
        workflow: A workflow class (or its compiled spec).
        max_loops: How often each ``@goto`` edge may be taken on one path.

    Returns:
        The paths, depth first: at each step, completion before failure.

    Raises:
        ValueError: *max_loops* is negative.
        TypeError: *workflow* is not a concrete workflow class.

    .. versionadded:: 0.1.0
    """
    if max_loops < 0:
        msg = f"paths(max_loops={max_loops}) is invalid: it counts how often a loop may repeat, so >= 0"
        raise ValueError(msg)
    spec = workflow if isinstance(workflow, WorkflowSpec) else spec_of(workflow)
    walker = _Walker(spec, _analysis(spec), max_loops)
    # The walk allocates tens of thousands of small acyclic tuples; the cyclic
    # collector would scan them again and again for nothing (half the time).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return list(walker.walk())
    finally:
        if enabled:
            gc.enable()


# ----------------------------------------------------------------------------- the walk


@attrs.frozen
class _Fact:
    holds: bool
    where: str


_Facts = dict[object, _Fact]


class _Frame:
    """A path prefix that has just entered ``step`` (or, with ``ending``, a finished path)."""

    __slots__ = ("choices", "edges", "ending", "facts", "guards", "loops", "saga", "step", "steps", "why_not")

    def __init__(
        self,
        step: str,
        steps: tuple[str, ...],
        edges: tuple[EdgeSpec, ...],
        guards: tuple[GuardOutcome, ...],
        choices: tuple[tuple[GuardOutcome, ...], ...],
        saga: tuple[str, ...],
        loops: tuple[int, ...],
        facts: _Facts,
        why_not: str | None,
        ending: Ending | None = None,
    ) -> None:
        self.step = step
        self.steps = steps
        self.edges = edges
        self.guards = guards
        self.choices = choices
        self.saga = saga
        self.loops = loops
        self.facts = facts
        self.why_not = why_not
        self.ending = ending

    def end(
        self,
        ending: Ending,
        saga: tuple[str, ...],
        why_not: str | None,
        last: tuple[GuardOutcome, ...] = (),
    ) -> _Frame:
        guards = self.guards + last if last else self.guards
        choices = (*self.choices, last) if last else self.choices
        return _Frame(self.step, self.steps, self.edges, guards, choices, saga, self.loops, self.facts, why_not, ending)


@attrs.frozen
class _Plan:
    guarded: tuple[EdgeSpec, ...]
    default: EdgeSpec | None
    errors: tuple[EdgeSpec, ...]
    timeouts: tuple[EdgeSpec, ...]
    catches_all: bool
    waits: bool
    final: bool
    compensated: bool


class _Walker:
    def __init__(self, spec: WorkflowSpec, analysis: _Analysis, max_loops: int) -> None:
        self.spec = spec
        self.analysis = analysis
        self.max_loops = max_loops
        back = [e for e in spec.edges if e.back]
        self.back_index = {id(e): i for i, e in enumerate(back)}
        self.plans = {s.name: self._plan(s) for s in spec.steps}
        self.undo_cache: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}

    def _plan(self, step: StepSpec) -> _Plan:
        out = self.spec.outgoing(step.name)
        errors = tuple(e for e in out if e.is_error)
        timeouts = tuple(e for e in out if e.is_timeout)
        completion = [e for e in out if e.is_completion]
        return _Plan(
            guarded=tuple(e for e in completion if e.guard is not None),
            default=next((e for e in completion if e.guard is None), None),
            errors=errors,
            timeouts=timeouts,
            catches_all=any(issubclass(Exception, t) for e in errors for t in e.on_error),
            waits=step.kind is not StepKind.STEP,
            final=step.final,
            compensated=step.compensation is not None,
        )

    def walk(self) -> Iterator[Path]:
        spec = self.spec
        stack = [_Frame(spec.initial, (spec.initial,), (), (), (), (), (0,) * len(self.back_index), {}, None)]
        pop = stack.pop
        extend = stack.extend
        while stack:
            frame = pop()
            if frame.ending is not None:
                yield self._path(frame, frame.ending)
            else:
                extend(reversed(self._expand(frame)))

    def _path(self, f: _Frame, ending: Ending) -> Path:
        if ending is Ending.COMPLETED:
            undone: tuple[str, ...] = ()
            names: tuple[str, ...] = ()
        else:
            # Saga tuples are shared by every path below the step that made them.
            cached = self.undo_cache.get(id(f.saga))
            if cached is None:
                undone = f.saga[::-1]
                names = tuple([self.analysis.compensation[s] for s in undone])
                self.undo_cache[id(f.saga)] = (f.saga, undone, names)
            else:
                _, undone, names = cached
        return Path(
            self.spec.name,
            f.steps,
            f.edges,
            f.guards,
            ending,
            undone,
            names,
            f.why_not is None,
            f.why_not,
            f.choices,
        )

    def _expand(self, f: _Frame) -> list[_Frame]:
        """What may follow entering *f.step*, in the order paths are listed."""
        plan = self.plans[f.step]
        analysis = self.analysis
        out: list[_Frame] = []
        # The step ran (completely, or partly before failing): forget what it may have changed.
        after = analysis.forget(f.facts, f.step)
        saga = (*f.saga, f.step) if plan.compensated else f.saga
        if plan.final:
            out.append(f.end(Ending.COMPLETED, saga, f.why_not))
        else:
            facts = after
            before: tuple[GuardOutcome, ...] = ()
            why_not = f.why_not
            for edge in plan.guarded:
                outcome = GuardOutcome(edge, holds=True)
                why = why_not or analysis.contradiction(facts, outcome, f.step)
                nxt = self._follow(f, edge, (*before, outcome), saga, analysis.learn(facts, outcome, f.step), why)
                if nxt is not None:
                    out.append(nxt)
                negated = GuardOutcome(edge, holds=False)
                why_not = why_not or analysis.contradiction(facts, negated, f.step)
                facts = analysis.learn(facts, negated, f.step)
                before = (*before, negated)
            if plan.default is not None:
                nxt = self._follow(f, plan.default, before, saga, facts, why_not)
                if nxt is not None:
                    out.append(nxt)
            elif before:
                out.append(f.end(Ending.NO_EDGE, saga, why_not, before))
        for edge in plan.errors:
            nxt = self._follow(f, edge, (), f.saga, after, f.why_not)
            if nxt is not None:
                out.append(nxt)
        if not plan.catches_all:
            out.append(f.end(Ending.FAILED, f.saga, f.why_not))
        if plan.waits:
            for edge in plan.timeouts:
                nxt = self._follow(f, edge, (), f.saga, f.facts, f.why_not)
                if nxt is not None:
                    out.append(nxt)
            out.append(f.end(Ending.CANCELLED, f.saga, f.why_not))
        return out

    def _follow(
        self,
        f: _Frame,
        edge: EdgeSpec,
        outcomes: tuple[GuardOutcome, ...],
        saga: tuple[str, ...],
        facts: _Facts,
        why_not: str | None,
    ) -> _Frame | None:
        loops = f.loops
        if edge.back:
            i = self.back_index[id(edge)]
            if loops[i] >= self.max_loops:
                return None
            loops = (*loops[:i], loops[i] + 1, *loops[i + 1 :])
        return _Frame(
            edge.dest,
            (*f.steps, edge.dest),
            (*f.edges, edge),
            f.guards + outcomes if outcomes else f.guards,
            (*f.choices, outcomes),
            saga,
            loops,
            facts,
            why_not,
        )


# ----------------------------------------------------------------------------- what reads and writes what

_IMMUTABLE = (int, float, str, bool, bytes, complex, type(None))


class _Analysis:
    """What each guard reads and each step writes, from their source (``None``: unknown, anything)."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.fields = frozenset(f.name for f in spec.fields)
        self.immutable = frozenset(f.name for f in spec.fields if _is_immutable(f.type))
        self.writes: dict[str, frozenset[str] | None] = {}
        self.compensation: dict[str, str] = {}
        for s in spec.steps:
            self.writes[s.name] = _writes(s.fn, self.fields, self.immutable)
            if s.compensation is not None:
                self.compensation[s.name] = s.compensation.name
        self.reads: dict[int, frozenset[str] | None] = {}
        self.keys: dict[int, object] = {}
        for e in spec.edges:
            if e.guard is not None:
                self.reads[id(e)] = _reads(e.guard, e.guard_name, self.fields)
                self.keys[id(e)] = _guard_key(e)
        reads_of_key = {self.keys[i]: r for i, r in self.reads.items()}
        # For each step, the guard facts a run of it may falsify (None: all of them).
        self.kills: dict[str, frozenset[object] | None] = {}
        for step, writes in self.writes.items():
            if writes is None:
                self.kills[step] = None
            else:
                self.kills[step] = frozenset(
                    k for k, r in reads_of_key.items() if writes and (r is None or not r.isdisjoint(writes))
                )

    def forget(self, facts: _Facts, step: str) -> _Facts:
        """*facts* minus those a run of *step* may have changed."""
        if not facts:
            return facts
        kills = self.kills[step]
        if kills is None:
            return {}
        if kills.isdisjoint(facts):
            return facts
        return {k: v for k, v in facts.items() if k not in kills}

    def learn(self, facts: _Facts, outcome: GuardOutcome, where: str) -> _Facts:
        """*facts* plus: the guard of *outcome* has its value, as evaluated after *where*."""
        key = self.keys[id(outcome.edge)]
        known = facts.get(key)
        if known is not None and known.holds == outcome.holds:
            return facts
        new = dict(facts)
        new[key] = _Fact(outcome.holds, where)
        return new

    def contradiction(self, facts: _Facts, outcome: GuardOutcome, where: str) -> str | None:
        known = facts.get(self.keys[id(outcome.edge)])
        if known is None or known.holds == outcome.holds:
            return None
        was = "true" if known.holds else "false"
        now = "true" if outcome.holds else "false"
        return (
            f"{outcome.edge.guard_name} must be {now} after {where}, but it was {was} after "
            f"{known.where} and no step since writes what it reads"
        )


_ANALYSES: weakref.WeakKeyDictionary[WorkflowSpec, _Analysis] = weakref.WeakKeyDictionary()


def _analysis(spec: WorkflowSpec) -> _Analysis:
    found = _ANALYSES.get(spec)
    if found is None:
        found = _ANALYSES[spec] = _Analysis(spec)
    return found


def _guard_key(edge: EdgeSpec) -> object:
    guard: Any = edge.guard
    # Two lambdas with the same text are the same condition, unless they close over
    # (or default to) different values; then only the very same function is.
    if getattr(guard, "__closure__", None) or getattr(guard, "__defaults__", None):
        return guard
    return edge.guard_name or guard


def _is_immutable(tp: object) -> bool:
    if isinstance(tp, type):
        return issubclass(tp, _IMMUTABLE)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return all(_is_immutable(a) for a in typing.get_args(tp))
    return origin is typing.Literal


def _function_node(
    fn: Callable[..., Any], text: str | None
) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | None:
    """The AST of *fn* (a lambda is found by its body's text, as the compiler names guards)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn)).strip()
    except (OSError, TypeError):
        return None
    for candidate in (source, source.lstrip("@"), f"({source})"):
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        name = getattr(fn, "__name__", "")
        if name == "<lambda>":
            lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
            matching = [n for n in lambdas if text is not None and ast.unparse(n.body) == text]
            found = matching or lambdas
            return found[0] if len(found) == 1 else None
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]
        return defs[0] if defs else None
    return None


def _first_param(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> str | None:
    args = [*node.args.posonlyargs, *node.args.args]
    return args[0].arg if args else None


def _roots(node: ast.AST, param: str) -> tuple[list[ast.Attribute], int, int]:
    """Attribute nodes ``param.x``; how often *param* appears; how often as such a root."""
    attrs_on_param: list[ast.Attribute] = []
    uses = rooted = 0
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id == param:
            uses += 1
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == param:
            attrs_on_param.append(n)
            rooted += 1
    return attrs_on_param, uses, rooted


def _reads(fn: Callable[..., Any], text: str | None, fields: frozenset[str]) -> frozenset[str] | None:
    node = _function_node(fn, text)
    if node is None:
        return None
    param = _first_param(node)
    if param is None:
        return None
    found, uses, rooted = _roots(node, param)
    if uses != rooted:  # the workflow itself is passed on somewhere: anything may be read
        return None
    names = frozenset(a.attr for a in found)
    if not names <= fields:  # a method or property: it may read anything
        return None
    return names


def _writes(fn: Callable[..., Any], fields: frozenset[str], immutable: frozenset[str]) -> frozenset[str] | None:
    node = _function_node(fn, None)
    if node is None:
        return None
    param = _first_param(node)
    if param is None:
        return frozenset()
    found, uses, rooted = _roots(node, param)
    if uses != rooted:
        return None
    parents: dict[int, ast.AST] = {}
    for parent in ast.walk(node):
        for child in ast.iter_child_nodes(parent):
            parents[id(child)] = parent
    written: set[str] = set()
    for attr in found:
        name = attr.attr
        if name not in fields:
            # self.helper(...) may write anything; a property read does not, but we cannot tell.
            return None
        if _is_written(attr, parents, name in immutable):
            written.add(name)
    return frozenset(written)


def _is_written(attr: ast.Attribute, parents: dict[int, ast.AST], immutable: bool) -> bool:
    """Whether ``self.x`` (*attr*) is assigned, deleted, mutated or handed to a call."""
    node: ast.AST = attr
    while True:
        ctx = getattr(node, "ctx", None)
        if isinstance(ctx, (ast.Store, ast.Del)):
            return True
        parent = parents.get(id(node))
        if parent is None:
            return False
        if isinstance(parent, (ast.Attribute, ast.Subscript)) and parent.value is node:
            # self.x.y / self.x[i]: follow the chain; self.x.m(...) may mutate x.
            grand = parents.get(id(parent))
            if isinstance(parent, ast.Attribute) and isinstance(grand, ast.Call) and grand.func is parent:
                return not immutable
            node = parent
            continue
        if isinstance(parent, ast.Call) and node is not parent.func:
            return not immutable  # handed to a call, which may mutate it
        if isinstance(parent, ast.keyword):
            return not immutable
        return isinstance(parent, (ast.AugAssign, ast.AnnAssign, ast.Assign)) and node in _targets(parent)


def _targets(node: ast.AugAssign | ast.AnnAssign | ast.Assign) -> Sequence[ast.AST]:
    if isinstance(node, ast.Assign):
        return node.targets
    return [node.target]


def guard_constants(spec: WorkflowSpec) -> dict[str, set[object]]:
    """
    For each field, the constants guards compare it with (``wf.weight < 10`` gives ``{"weight": {10}}``).

    Input generation tries the values at and around them: that is where guard gaps hide.
    """
    found: dict[str, set[object]] = {}
    fields = {f.name for f in spec.fields}
    for edge in spec.edges:
        if edge.guard is None:
            continue
        node = _function_node(edge.guard, edge.guard_name)
        param = _first_param(node) if node is not None else None
        if node is None or param is None:
            continue
        for compare in (n for n in ast.walk(node) if isinstance(n, ast.Compare)):
            operands = [compare.left, *compare.comparators]
            names = [
                o.attr
                for o in operands
                if isinstance(o, ast.Attribute) and isinstance(o.value, ast.Name) and o.value.id == param
            ]
            constants = [
                o.value
                for o in operands
                if isinstance(o, ast.Constant)
                and isinstance(o.value, (int, float, str))
                and not isinstance(o.value, bool)
            ]
            for name in names:
                if name in fields:
                    found.setdefault(name, set()).update(constants)
    return found
