"""
Every path through a workflow, read from its :class:`WorkflowSpec`.

A path starts at the initial step and follows edges until the instance would
end: completed (a final step), failed (a step failed for good, or completed with
no edge it could take, or a ``@failure_end`` completed) with the compensations
that would then run, or cancelled while it waited. Error routes (``on_error``) and escalations (``timeout=``) are
ordinary edges on the way.
Loops are unrolled: each back edge is taken at most ``max_loops`` times per path.

A fork (``@step(fork=True)``) appears on a path as one :class:`ForkVisit`: each
branch it starts with its own sub-path (for an inclusive fork, one path per
combination of guard outcomes), then the path goes on after the join. A failure
or cancellation inside a branch ends the path there; the other branches are cut
short at a point nobody can know, so the compensations of their steps are listed
as *may* run (``maybe_undone``), apart from the certain ones (``undone``).

Whether a path is *reachable* cannot be decided in general (guards are Python).
We answer the part that can be answered from the source: a path is unreachable
when it needs one guard to be both true and false with no step in between that
could change what the guard reads. Everything else counts as reachable.
"""

from __future__ import annotations

import ast
import enum
import gc
import itertools
import types
import typing
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import attrs

from ._conditions import Conditions, conditions_of
from ._conditions import first_param as _first_param
from ._conditions import function_node as _function_node
from ._spec import EdgeSpec, ForkSpec, RegionSpec, StepKind, StepSpec, WorkflowSpec, negated
from ._workflow import default_registry, spec_of


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
    FAILURE_END = "failure end"
    """The last step is a ``@failure_end``: it completed, and the instance fails with its outcome."""

    @property
    def failed(self) -> bool:
        """Whether the instance ends ``failed`` (its compensations ran)."""
        return self in (Ending.FAILED, Ending.NO_EDGE, Ending.FAILURE_END)


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
        return name if self.holds else negated(name)


class TooManyPaths(ValueError):
    """
    :func:`paths` would list more than its ``max_paths``: forks multiply the paths of their branches.

    .. versionadded:: 0.1.0
    """


def _no_labels() -> dict[str, str]:
    return {}


@attrs.frozen
class Branch:
    """
    One branch of a fork, as a path goes through it.

    Attributes:
        name: The branch's first step, which names it.
        guard: The outcome of the guard on the fork's edge into it (``None``: unguarded).
        steps: The steps entered in the branch, in order: empty when it was skipped
            or cut short.
        ending: How the path ended inside this branch (a step failed, no edge, a
            cancellation while it waited here); ``None`` when it did not end here.
        cut: The branch started, but another branch's failure or a cancellation
            stopped it at an unknown point: any of its steps may have completed.
        forks: The forks visited inside the branch.

    .. versionadded:: 0.1.0
    """

    name: str
    guard: GuardOutcome | None
    steps: tuple[str, ...]
    ending: Ending | None = None
    cut: bool = False
    forks: tuple[ForkVisit, ...] = ()
    _trail: tuple[_Token, ...] = attrs.field(default=(), repr=False, eq=False, alias="trail")
    _labels: _Labels = attrs.field(factory=_no_labels, repr=False, eq=False, alias="labels")

    @property
    def started(self) -> bool:
        """Whether the fork started it (an unguarded branch, or its guard held)."""
        return self.guard is None or self.guard.holds

    @property
    def arrived(self) -> bool:
        """Whether it reached the join."""
        return self.started and not self.cut and self.ending is None

    def __str__(self) -> str:
        """``[guard] first -> second``; ``first ...`` when cut short; ``[not guard] first skipped``."""
        head = f"[{self.guard}] " if self.guard is not None else ""
        name = self._labels.get(self.name, self.name)
        if not self.started:
            return f"{head}{name} skipped"
        if self.cut:
            return f"{head}{name} ..."
        return head + _render(self.name, self._trail, self._labels)


@attrs.frozen
class ForkVisit:
    """
    A fork on a path: its branches, each with its own sub-path.

    Attributes:
        step: The fork step.
        join: Its join step.
        branches: One per outgoing edge of the fork, in declaration order.

    .. versionadded:: 0.1.0
    """

    step: str
    join: str
    branches: tuple[Branch, ...]

    @property
    def joined(self) -> bool:
        """Whether every branch started arrived, so the path goes on at the join."""
        return all(b.arrived for b in self.branches if b.started)

    def __str__(self) -> str:
        """``{ a -> b | [guard] c }``."""
        return "{ " + " | ".join(str(b) for b in self.branches) + " }"


@attrs.frozen
class _End:
    """A path's ending, where it happened (at the top, or inside a branch)."""

    ending: Ending
    last: tuple[GuardOutcome, ...]
    outcome: str | None = None

    def __str__(self) -> str:
        if self.ending is Ending.COMPLETED:
            return " => completed"
        if self.ending is Ending.NO_EDGE:
            return " => no edge enabled (" + ", ".join(str(g) for g in self.last) + ")"
        if self.ending is Ending.FAILURE_END:
            return f" => {self.outcome}"
        return " => fails" if self.ending is Ending.FAILED else " => cancel"


# A step entered along an edge (the edge is None for a join: every branch's edge leads there).
_Token = tuple[EdgeSpec | None, tuple[GuardOutcome, ...], str] | ForkVisit | _End


_Labels = dict[str, str]
"""How a path prints a step or compensation that is not shown by its name: a subflow step and its undo."""


def _labels_of(spec: WorkflowSpec) -> _Labels:
    """
    ``ship (child: Parcel)`` for each subflow step, ``child Parcel of ship`` for its compensation.

    A fan-out step: ``ship (children: Parcel, 2 at a time)``, undone by ``children Parcel of ship``.
    """
    labels: _Labels = {}
    for s in spec.steps:
        if s.child is not None:
            child = spec_of(s.child).name
            if s.fan is not None:
                labels[s.name] = f"{s.name} (children: {child}, {s.fan.label})"
            else:
                labels[s.name] = f"{s.name} (child: {child})"
            if s.compensation is not None:
                labels[s.compensation.name] = f"{'children' if s.fan is not None else 'child'} {child} of {s.name}"
    return labels


def _render(first: str, trail: tuple[_Token, ...], labels: _Labels) -> str:
    parts = [labels.get(first, first) if labels else first]
    for token in trail:
        if isinstance(token, tuple):
            edge, outcomes, dest = token
            parts.append(" -> " if edge is None else _arrow(edge, outcomes))
            parts.append(labels.get(dest, dest) if labels else dest)
        elif isinstance(token, ForkVisit):
            parts.append(f" -> {token}")
        else:
            parts.append(str(token))
    return "".join(parts).rstrip()


@attrs.frozen
class Path:
    """
    One way through a workflow, from the initial step to an end.

    Attributes:
        workflow: The workflow's name.
        steps: The steps entered, in order (a step appears once per visit). Through a
            fork, one branch after the other in declaration order (one possible
            interleaving); a branch cut short adds none.
        edges: The edges taken, in the same order (``len(steps) - 1`` of them on a
            path without forks; through a fork, each branch's edge into the join too).
        guards: Every guard evaluated on the way with the value this path needs,
            in evaluation order (a default edge needs every guard before it false;
            a fork evaluates the guards of all its edges).
        ending: How the path ends.
        undone: The steps whose compensations run at the end, in the order they run
            (a step whose compensation is ``attempted=True`` also when it failed).
            Steps of the branches of a fork that joined are listed as if the branches
            had run one after the other in declaration order: in a real run they
            interleave, and compensations run newest first by real completion.
        compensations: The names of those compensation methods, in the same order.
        reachable: ``False`` only when the path provably cannot happen: it needs a
            guard to be both true and false while no step in between writes anything
            the guard reads (a step of a branch running alongside counts as being in
            between). ``True`` means "not contradicted", not "proven possible".
        unreachable_because: Why it cannot happen (``None`` when reachable).
        forks: The forks on the path, in order (nested ones are in their branches).
        maybe_undone: When the path ends inside a branch: the compensable steps of the
            other branches, cut short at an unknown point. Those that completed are
            compensated too, interleaved with ``undone`` by completion time; ``undone``
            itself is what runs when none of them completed.
        maybe_compensations: The names of their compensation methods.
        side_steps: The side steps of the reminders of the waiting steps on the path,
            in order: each may run (once, or repeatedly) while the path waits there,
            and the path goes on as shown.

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
    forks: tuple[ForkVisit, ...] = ()
    maybe_undone: tuple[str, ...] = ()
    maybe_compensations: tuple[str, ...] = ()
    _trail: tuple[_Token, ...] | None = attrs.field(default=None, repr=False, eq=False, alias="trail")
    _labels: _Labels = attrs.field(factory=_no_labels, repr=False, eq=False, alias="labels")
    _declared: str | None = attrs.field(default=None, alias="declared")
    side_steps: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        """
        How the instance ends on this path: ``completed``, ``failed``, ``cancelled``, or a failure end's outcome.

        The same value as ``InstanceInfo.outcome`` once a real instance took the path.
        """
        if self.ending is Ending.FAILURE_END:
            return self._declared or "failed"
        if self.ending is Ending.CANCELLED:
            return "cancelled"
        return "completed" if self.ending is Ending.COMPLETED else "failed"

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
        """One line: ``a -[guard]-> b -> c => completed``; a fork as ``f -> { b1 -> c | [g] b2 } -> join``."""
        if self._trail is not None:
            return self._str_forked(self._trail)
        labels = self._labels
        parts = [labels.get(self.steps[0], self.steps[0])]
        for i, edge in enumerate(self.edges):
            parts.append(_arrow(edge, self._choices[i] if i < len(self._choices) else ()))
            step = self.steps[i + 1]
            parts.append(labels.get(step, step))
        text = "".join(parts)
        last = self._choices[len(self.edges)] if len(self._choices) > len(self.edges) else ()
        ending = self.ending
        if ending is Ending.COMPLETED:
            text += " => completed"
        else:
            if ending is Ending.NO_EDGE:
                guards = ", ".join(str(g) for g in last)
                text += f" => no edge enabled ({guards})"
            elif ending is Ending.FAILURE_END:
                text += f" => {self.outcome}"
            else:
                text += " => fails" if ending is Ending.FAILED else " => cancel"
            if self.compensations:
                text += ", undo " + ", ".join(labels.get(c, c) for c in self.compensations)
            text += " => cancelled" if ending is Ending.CANCELLED else " => failed"
        if not self.reachable:
            text = f"[unreachable: {self.unreachable_because}] " + text
        return text

    def _str_forked(self, trail: tuple[_Token, ...]) -> str:
        labels = self._labels
        text = _render(self.steps[0], trail, labels)
        if self.ending is not Ending.COMPLETED:
            undo: list[str] = []
            if self.compensations:
                undo.append("undo " + ", ".join(labels.get(c, c) for c in self.compensations))
            if self.maybe_compensations:
                maybe = ", ".join(labels.get(c, c) for c in self.maybe_compensations)
                undo.append(f"(maybe {maybe})" if undo else f"maybe undo {maybe}")
            if undo:
                text += ", " + " ".join(undo)
            text += " => cancelled" if self.ending is Ending.CANCELLED else " => failed"
        if not self.reachable:
            text = f"[unreachable: {self.unreachable_because}] " + text
        return text


def _side_steps(spec: WorkflowSpec, steps: tuple[str, ...]) -> tuple[str, ...]:
    """The side steps the reminders of *steps* may run, in order, each once."""
    if not spec.side_steps:
        return ()
    found = [e.dest for s in dict.fromkeys(steps) for e in spec.reminders(s)]
    return tuple(dict.fromkeys(found))


def _arrow(edge: EdgeSpec, outcomes: tuple[GuardOutcome, ...]) -> str:
    if edge.is_error:
        return f" -[{edge.label}]-> "
    if edge.is_timeout:
        return f" -[{edge.label}]-> "
    if not outcomes:
        return " -> "
    return " -[" + ", ".join(str(o) for o in outcomes) + "]-> "


def paths(workflow: type[Any] | WorkflowSpec, max_loops: int = 1, max_paths: int = 100_000) -> list[Path]:
    """
    Every path through *workflow*, error, compensation and cancellation paths included.

    Each step can complete (then its edges are followed: the guarded ones in
    declaration order, the default when no guard holds, and a dead end when there
    is none), fail for good (then its ``on_error`` edges are followed, or the
    instance fails and compensates), and a waiting step (a human task) can be
    cancelled. Each back edge is taken at most *max_loops* times on a path.

    A fork step, once completed, starts its branches: every unguarded edge, and
    each guarded one whose guard holds (each combination of outcomes is its own
    path; none at all is a dead end, "no edge enabled"). Then either every branch
    started arrives at the join — one path for each combination of the branches'
    own sub-paths — and the path goes on from the join, or one branch ends the
    path inside the fork (a step fails, a dead end, a cancellation while it
    waits). The other branches are then cut short at a point the spec cannot
    tell: :attr:`Path.undone` lists the compensations that surely run (of the
    steps before the fork and of the ending branch, newest first), and
    :attr:`Path.maybe_undone` the compensable steps of the cut branches, which are
    compensated too if they had completed.

    Args:
        workflow: A workflow class (or its compiled spec).
        max_loops: How often each ``@goto`` edge may be taken on one path.
        max_paths: Stop with :class:`TooManyPaths` beyond this many paths: a fork's
            branches multiply each other's paths.

    Returns:
        The paths, depth first: at each step, completion before failure; at a fork,
        the joined paths, then those ending in a branch, branch by branch.

    Raises:
        ValueError: *max_loops* is negative, or *max_paths* less than 1.
        TooManyPaths: There are more than *max_paths* paths.
        TypeError: *workflow* is not a concrete workflow class.

    .. versionadded:: 0.1.0
    """
    if max_loops < 0:
        msg = f"paths(max_loops={max_loops}) is invalid: it counts how often a loop may repeat, so >= 0"
        raise ValueError(msg)
    if max_paths < 1:
        msg = f"paths(max_paths={max_paths}) is invalid: it is how many paths may be listed, so >= 1"
        raise ValueError(msg)
    spec = workflow if isinstance(workflow, WorkflowSpec) else spec_of(workflow)
    owner = default_registry.resolve(spec.name, spec.version) if isinstance(workflow, WorkflowSpec) else workflow
    analysis = _analysis(spec, owner)
    walker = _ForkWalker(spec, analysis, max_loops) if spec.forks else _Walker(spec, analysis, max_loops)
    # The walk allocates tens of thousands of small acyclic tuples; the cyclic
    # collector would scan them again and again for nothing (half the time).
    enabled = gc.isenabled()
    gc.disable()
    try:
        found: list[Path] = []
        for path in walker.walk():
            if len(found) == max_paths:
                raise TooManyPaths(_too_many(spec, max_loops, max_paths))
            found.append(path)
        return found
    finally:
        if enabled:
            gc.enable()


def _too_many(spec: WorkflowSpec, max_loops: int, max_paths: int) -> str:
    msg = f"{spec.name} has more than {max_paths} paths (max_loops={max_loops})"
    if spec.forks:
        forks = ", ".join(f"{f.step} ({len(f.regions)} branches)" for f in spec.forks)
        msg += f"; each fork multiplies the paths of its branches: {forks}"
    return msg + "; pass a larger max_paths=, or a smaller max_loops="


# ----------------------------------------------------------------------------- the walk


@attrs.frozen
class _Fact:
    holds: bool
    where: str
    edge: EdgeSpec


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
        *,
        outcome: str | None = None,  # noqa: ARG002 - a failure end's, printed by the fork walker's trail
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
    outcome: str | None
    undo_attempted: bool


class _Walker:
    def __init__(self, spec: WorkflowSpec, analysis: _Analysis, max_loops: int) -> None:
        self.spec = spec
        self.analysis = analysis
        self.max_loops = max_loops
        back = [e for e in spec.edges if e.back]
        self.back_index = {id(e): i for i, e in enumerate(back)}
        self.plans = {s.name: self._plan(s) for s in spec.steps}
        self.undo_cache: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}
        self.labels = _labels_of(spec)

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
            outcome=step.outcome,
            undo_attempted=step.compensation is not None and step.compensation.attempted,
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
            labels=self.labels,
            declared=self.spec.step(f.step).outcome if ending is Ending.FAILURE_END else None,
            side_steps=_side_steps(self.spec, f.steps),
        )

    def _expand(self, f: _Frame, completion: bool = True) -> list[_Frame]:
        """What may follow entering *f.step*, in the order paths are listed (without completing: a fork's)."""
        plan = self.plans[f.step]
        analysis = self.analysis
        out: list[_Frame] = []
        # The step ran (completely, or partly before failing): forget what it may have changed.
        after = analysis.forget(f.facts, f.step)
        saga = (*f.saga, f.step) if plan.compensated else f.saga
        if not completion:
            pass
        elif plan.outcome is not None:
            out.append(f.end(Ending.FAILURE_END, saga, f.why_not, outcome=plan.outcome))
        elif plan.final:
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
        # An attempted compensation also undoes a visit whose last attempt failed.
        failed = (*f.saga, f.step) if plan.undo_attempted else f.saga
        for edge in plan.errors:
            nxt = self._follow(f, edge, (), failed, after, f.why_not)
            if nxt is not None:
                out.append(nxt)
        if not plan.catches_all:
            out.append(f.end(Ending.FAILED, failed, f.why_not))
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


# ----------------------------------------------------------------------------- forks

_Volatile = frozenset[object] | None
"""Guard facts that steps running alongside may falsify at any moment (``None``: every fact)."""

_NOTHING: frozenset[object] = frozenset()


def _strip(facts: _Facts, volatile: _Volatile) -> _Facts:
    if volatile is None:
        return {}
    if not volatile or not facts or volatile.isdisjoint(facts):
        return facts
    return {k: v for k, v in facts.items() if k not in volatile}


def _forks_in(trail: tuple[_Token, ...]) -> tuple[ForkVisit, ...]:
    return tuple(t for t in trail if isinstance(t, ForkVisit))


class _FFrame(_Frame):
    """A frame of a workflow with forks: it also keeps the printed trail and what may be undone."""

    __slots__ = ("maybe", "trail", "volatile")

    def __init__(
        self,
        step: str,
        steps: tuple[str, ...],
        edges: tuple[EdgeSpec, ...],
        guards: tuple[GuardOutcome, ...],
        saga: tuple[str, ...],
        loops: tuple[int, ...],
        facts: _Facts,
        why_not: str | None,
        ending: Ending | None = None,
        *,
        trail: tuple[_Token, ...] = (),
        maybe: tuple[str, ...] = (),
        volatile: _Volatile = _NOTHING,
    ) -> None:
        super().__init__(step, steps, edges, guards, (), saga, loops, facts, why_not, ending)
        self.trail = trail
        self.maybe = maybe
        self.volatile = volatile

    def end(
        self,
        ending: Ending,
        saga: tuple[str, ...],
        why_not: str | None,
        last: tuple[GuardOutcome, ...] = (),
        *,
        outcome: str | None = None,
    ) -> _FFrame:
        guards = self.guards + last if last else self.guards
        return _FFrame(
            self.step,
            self.steps,
            self.edges,
            guards,
            saga,
            self.loops,
            self.facts,
            why_not,
            ending,
            trail=(*self.trail, _End(ending, last, outcome)),
            maybe=self.maybe,
            volatile=self.volatile,
        )


class _ForkWalker(_Walker):
    """
    The walk of a workflow with forks: each branch is walked on its own, then combined.

    The branches of a fork are walked one after the other from the facts known at
    the fork, minus those a step of another branch may falsify (it may run at any
    moment); facts about such guards are never learnt inside the branch. Every
    combination of the branches' arriving sub-paths goes on from the join; every
    sub-path ending inside a branch ends the whole path, the others cut short.
    """

    def __init__(self, spec: WorkflowSpec, analysis: _Analysis, max_loops: int) -> None:
        super().__init__(spec, analysis, max_loops)
        self.forks = {f.step: f for f in spec.forks}
        self.volatile: dict[tuple[str, str], _Volatile] = {}
        self.compensable: dict[tuple[str, str], tuple[str, ...]] = {}
        for fork in spec.forks:
            for r in fork.regions:
                self.compensable[fork.step, r.name] = tuple(n for n in r.steps if n in analysis.compensation)
        for fork in spec.forks:
            self._volatile_of(fork)

    def _volatile_of(self, fork: ForkSpec) -> None:
        if (fork.step, fork.regions[0].name) in self.volatile:
            return
        outer: _Volatile = _NOTHING
        if fork.parent is not None:
            self._volatile_of(self.forks[fork.parent[0]])
            outer = self.volatile[fork.parent]
        for r in fork.regions:
            found: _Volatile = outer
            for other in fork.regions:
                for name in other.steps if other is not r else ():
                    kills = self.analysis.kills[name]
                    found = None if kills is None or found is None else found | kills
            self.volatile[fork.step, r.name] = found

    def walk(self) -> Iterator[Path]:
        spec = self.spec
        start = _FFrame(spec.initial, (spec.initial,), (), (), (), (0,) * len(self.back_index), {}, None)
        for f in self._run(start, None, arrivals=False, endings=True):
            yield self._path(f, f.ending or Ending.COMPLETED)

    def _path(self, f: _Frame, ending: Ending) -> Path:
        ff = cast("_FFrame", f)
        comp = self.analysis.compensation
        undone = () if ending is Ending.COMPLETED else f.saga[::-1]
        maybe = () if ending is Ending.COMPLETED else ff.maybe
        return Path(
            self.spec.name,
            f.steps,
            f.edges,
            f.guards,
            ending,
            undone,
            tuple(comp[s] for s in undone),
            f.why_not is None,
            f.why_not,
            (),
            _forks_in(ff.trail),
            maybe,
            tuple(comp[s] for s in maybe),
            ff.trail,
            labels=self.labels,
            declared=self.spec.step(f.step).outcome if ending is Ending.FAILURE_END else None,
            side_steps=_side_steps(self.spec, f.steps),
        )

    def _follow(
        self,
        f: _Frame,
        edge: EdgeSpec,
        outcomes: tuple[GuardOutcome, ...],
        saga: tuple[str, ...],
        facts: _Facts,
        why_not: str | None,
    ) -> _Frame | None:
        ff = cast("_FFrame", f)
        loops = f.loops
        if edge.back:
            i = self.back_index[id(edge)]
            if loops[i] >= self.max_loops:
                return None
            loops = (*loops[:i], loops[i] + 1, *loops[i + 1 :])
        return _FFrame(
            edge.dest,
            (*f.steps, edge.dest),
            (*f.edges, edge),
            f.guards + outcomes if outcomes else f.guards,
            saga,
            loops,
            _strip(facts, ff.volatile),
            why_not,
            trail=(*ff.trail, (edge, outcomes, edge.dest)),
            volatile=ff.volatile,
        )

    def _run(self, start: _FFrame, join: str | None, *, arrivals: bool, endings: bool) -> Iterator[_FFrame]:
        """Depth first from *start*: the paths that end, and those that arrive at *join* (a branch's walk)."""
        stack = [start]
        forks = self.forks
        while stack:
            f = stack.pop()
            if f.ending is not None:
                if endings:
                    yield f
            elif f.step == join:
                if arrivals:
                    yield f
            elif f.step in forks:
                yield from self._fork(f, forks[f.step], join, arrivals=arrivals, endings=endings)
            else:
                stack.extend(reversed(cast("list[_FFrame]", self._expand(f))))

    def _fork(
        self, f: _FFrame, fork: ForkSpec, join: str | None, *, arrivals: bool, endings: bool
    ) -> Iterator[_FFrame]:
        plan = self.plans[f.step]
        analysis = self.analysis
        after = analysis.forget(f.facts, f.step)
        saga = (*f.saga, f.step) if plan.compensated else f.saga
        guarded = [r for r in fork.regions if r.edge.guard is not None]
        # Every guard holding first, as an exclusive choice lists its guarded edges first.
        for values in itertools.product((True, False), repeat=len(guarded)):
            facts, why = after, f.why_not
            outcomes: list[GuardOutcome] = []
            for r, holds in zip(guarded, values, strict=True):
                outcome = GuardOutcome(r.edge, holds)
                why = why or analysis.contradiction(facts, outcome, f.step)
                facts = analysis.learn(facts, outcome, f.step)
                outcomes.append(outcome)
            facts = _strip(facts, f.volatile)
            by_branch = {o.edge.dest: o for o in outcomes}
            started = [r for r in fork.regions if r.edge.guard is None or by_branch[r.name].holds]
            if not started:
                if endings:
                    yield f.end(Ending.NO_EDGE, saga, why, tuple(outcomes))
                continue
            at_fork = _AtFork(f, fork, tuple(started), tuple(outcomes), by_branch, saga)
            yield from self._joined(at_fork, facts, f.loops, why, (), join, arrivals=arrivals, endings=endings)
            if endings:
                yield from self._cut(at_fork, facts, why)
        # The fork step itself failing (or routed on error).
        for nxt in cast("list[_FFrame]", self._expand(f, completion=False)):
            if nxt.ending is not None:
                if endings:
                    yield nxt
            else:
                yield from self._run(nxt, join, arrivals=arrivals, endings=endings)

    def _enter(self, at: _AtFork, r: RegionSpec, facts: _Facts, loops: tuple[int, ...], why: str | None) -> _FFrame:
        volatile = self.volatile[at.fork.step, r.name]
        return _FFrame(r.name, (r.name,), (r.edge,), (), (), loops, _strip(facts, volatile), why, volatile=volatile)

    def _joined(
        self,
        at: _AtFork,
        facts: _Facts,
        loops: tuple[int, ...],
        why: str | None,
        done: tuple[_FFrame, ...],
        join: str | None,
        *,
        arrivals: bool,
        endings: bool,
    ) -> Iterator[_FFrame]:
        """Every combination of the started branches' arriving sub-paths, each going on from the join."""
        if len(done) == len(at.started):
            yield from self._run(self._join(at, facts, loops, why, done), join, arrivals=arrivals, endings=endings)
            return
        start = self._enter(at, at.started[len(done)], facts, loops, why)
        for b in self._run(start, at.fork.join, arrivals=True, endings=False):
            yield from self._joined(
                at, b.facts, b.loops, b.why_not, (*done, b), join, arrivals=arrivals, endings=endings
            )

    def _join(
        self, at: _AtFork, facts: _Facts, loops: tuple[int, ...], why: str | None, done: tuple[_FFrame, ...]
    ) -> _FFrame:
        f, fork = at.frame, at.fork
        steps, edges, guards, saga = f.steps, f.edges, f.guards + at.outcomes, at.saga
        arrived = {b.steps[0]: b for b in done}
        branches: list[Branch] = []
        for r in fork.regions:
            guard = at.guards.get(r.name)
            b = arrived.get(r.name)
            if b is None:
                branches.append(Branch(r.name, guard, (), labels=self.labels))
                continue
            steps += b.steps[:-1]
            edges += b.edges
            guards += b.guards
            saga += b.saga
            last = b.trail[-1]
            # The step before the join may have evaluated guards to get there: keep them, arrow only.
            into = (last[0], last[1], "") if isinstance(last, tuple) and last[1] else None
            trail = (*b.trail[:-1], into) if into is not None else b.trail[:-1]
            branches.append(
                Branch(r.name, guard, b.steps[:-1], forks=_forks_in(trail), trail=trail, labels=self.labels)
            )
        visit = ForkVisit(fork.step, fork.join, tuple(branches))
        return _FFrame(
            fork.join,
            (*steps, fork.join),
            edges,
            guards,
            saga,
            loops,
            facts,
            why,
            trail=(*f.trail, visit, (None, (), fork.join)),
            volatile=f.volatile,
        )

    def _cut(self, at: _AtFork, facts: _Facts, why: str | None) -> Iterator[_FFrame]:
        """The paths ending inside one branch, the other branches cut short; branch by branch."""
        f, fork = at.frame, at.fork
        for r in at.started:
            others = tuple(n for o in at.started if o is not r for n in self.compensable[fork.step, o.name])
            start = self._enter(at, r, facts, f.loops, why)
            for b in self._run(start, fork.join, arrivals=False, endings=True):
                branches = tuple(
                    Branch(
                        o.name,
                        at.guards.get(o.name),
                        b.steps,
                        b.ending,
                        forks=_forks_in(b.trail),
                        trail=b.trail,
                        labels=self.labels,
                    )
                    if o is r
                    else Branch(o.name, at.guards.get(o.name), (), cut=o in at.started, labels=self.labels)
                    for o in fork.regions
                )
                yield _FFrame(
                    b.step,
                    f.steps + b.steps,
                    f.edges + b.edges,
                    f.guards + at.outcomes + b.guards,
                    at.saga + b.saga,
                    b.loops,
                    b.facts,
                    b.why_not,
                    b.ending,
                    trail=(*f.trail, ForkVisit(fork.step, fork.join, branches)),
                    maybe=others + b.maybe,
                    volatile=f.volatile,
                )


@attrs.frozen
class _AtFork:
    """A fork being taken: the frame at the fork step, the branches started and the guards that decided."""

    frame: _FFrame
    fork: ForkSpec
    started: tuple[RegionSpec, ...]
    outcomes: tuple[GuardOutcome, ...]
    guards: dict[str, GuardOutcome]
    saga: tuple[str, ...]


# ----------------------------------------------------------------------------- what reads and writes what

_IMMUTABLE = (int, float, str, bool, bytes, complex, type(None))


class _Analysis:
    """What each guard reads and each step writes, from their source (``None``: unknown, anything)."""

    def __init__(self, spec: WorkflowSpec, conditions: Conditions) -> None:
        self.conditions = conditions
        self.fields = frozenset(f.name for f in spec.fields)
        self.immutable = frozenset(f.name for f in spec.fields if _is_immutable(f.type))
        self.writes: dict[str, frozenset[str] | None] = {}
        self.compensation: dict[str, str] = {}
        for s in spec.steps:
            writes = _writes(s.fn, self.fields, self.immutable)
            if s.start is not None and writes is not None:
                # A subflow step also runs the method that builds its child.
                start = _writes(s.start, self.fields, self.immutable)
                writes = None if start is None else writes | start
            self.writes[s.name] = writes
            if s.compensation is not None:
                self.compensation[s.name] = s.compensation.name
        self.reads: dict[int, frozenset[str] | None] = {}
        self.keys: dict[int, object] = {}
        for e in spec.edges:
            if e.guard is not None:
                self.reads[id(e)] = fields_read(e.guard, e.guard_name, self.fields)
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
        new[key] = _Fact(outcome.holds, where, outcome.edge)
        return new

    def contradiction(self, facts: _Facts, outcome: GuardOutcome, where: str) -> str | None:
        """Why *outcome* cannot follow the *facts* known after *where* (``None``: it can, as far as we know)."""
        known = facts.get(self.keys[id(outcome.edge)])
        if known is not None:
            if known.holds == outcome.holds:
                return None
            was = "true" if known.holds else "false"
            now = "true" if outcome.holds else "false"
            return (
                f"{outcome.edge.guard_name} must be {now} after {where}, but it was {was} after "
                f"{known.where} and no step since writes what it reads"
            )
        return self._compared(facts, outcome, where) if facts else None

    def _compared(self, facts: _Facts, outcome: GuardOutcome, where: str) -> str | None:
        """Why the comparisons of the guards contradict each other (``wf.x > 1000`` false, ``wf.x > 5000`` true)."""
        reads = self.conditions.reads(outcome.edge)
        if not reads:
            return None
        # The facts tied to the outcome through the variables they compare, directly or through each other.
        related: list[_Fact] = []
        pending = [f for f in facts.values() if self.conditions.reads(f.edge)]
        grew = True
        while grew:
            grew = False
            for f in list(pending):
                if not self.conditions.reads(f.edge).isdisjoint(reads):
                    related.append(f)
                    reads = reads | self.conditions.reads(f.edge)
                    pending.remove(f)
                    grew = True
        wanted = (outcome.edge, outcome.holds)
        if self.conditions.satisfiable([*((f.edge, f.holds) for f in related), wanted]):
            return None
        now = "true" if outcome.holds else "false"
        if self.conditions.satisfiable([wanted]):
            alone = [f for f in related if not self.conditions.satisfiable([(f.edge, f.holds), wanted])]
            blamed = alone[:1] or related
        else:
            blamed = []
        source = outcome.edge.source
        if all(not f.holds and f.where == where == f.edge.source == source for f in blamed):
            # The earlier edges of the same step: guards are tried in order, the first that holds wins.
            if outcome.holds and blamed:
                first = " or ".join(_described(f.edge) for f in blamed)
                return (
                    f"{_described(outcome.edge)} is never taken: every instance its guard lets through "
                    f"takes the earlier edge {first}"
                )
            if not outcome.holds:
                guards = ", ".join(str(e.guard_name) for e in [*(f.edge for f in related), outcome.edge])
                return f"the guards of the edges after {where} ({guards}) cover every value: one is always taken"
        if not blamed:
            return f"{outcome.edge.guard_name} can never be {now}: no values of the variables it compares make it so"
        was = " and ".join(f"{f.edge.guard_name} was {'true' if f.holds else 'false'} after {f.where}" for f in blamed)
        return (
            f"{outcome.edge.guard_name} must be {now} after {where}, but {was} and no step since writes what they "
            "read: no values of the variables they compare allow both"
        )


_ANALYSES: weakref.WeakKeyDictionary[WorkflowSpec, _Analysis] = weakref.WeakKeyDictionary()


def _analysis(spec: WorkflowSpec, owner: type | None = None) -> _Analysis:
    found = _ANALYSES.get(spec)
    if found is None:
        found = _ANALYSES[spec] = _Analysis(spec, conditions_of(spec, owner))
    return found


def _described(edge: EdgeSpec) -> str:
    return f"{edge.source} -> {edge.dest} [when {edge.guard_name}]"


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


def fields_read(fn: Callable[..., Any], text: str | None, fields: frozenset[str]) -> frozenset[str] | None:
    """The variables *fn* (a guard, an invariant) reads, from its source; ``None``: it may read anything."""
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
