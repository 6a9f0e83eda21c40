"""
WorkflowSpec → one shared ``transitions`` machine per class.

Instances are never added to the machine (``add_model`` costs ~38 µs and ~10 KB
each, and merges instances that compare equal); events are fired as
``machine.events[name].trigger(instance, instance[, exc])`` and the state lives
in the instance's ``_orch_state`` attribute. Conditions receive the trigger's
arguments, so a guard is called with the workflow instance itself.

Events:
    next                step → step (guards in declaration order, default last),
                        final step → @completed (a failure end has none: it fires ``fail``)
    error               step → handler, when the exception matches on_error
    timeout             waiting step → escalation step, when the wait lasted too long
    fail                step → @compensating
    cancel              step → @cancelling
    abandon             step → @cancelled  (cancel without compensation)
    compensated         @compensating → @failed, @cancelling → @cancelled
    compensation_error  @compensating | @cancelling → @compensation_failed
    retry_compensation  @compensation_failed → @compensating
    undo                @completed → @cancelling  (a child whose parent is compensated)
    retry_undo          @compensation_failed → @cancelling  (that, again)

Classes with forks compile to :class:`ForkMachine` instead (hierarchical, with
per-step event names); see its docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transitions import Machine
from transitions.extensions.nesting import HierarchicalMachine, NestedState

from ._errors import GuardError
from ._instance import leaves
from ._spec import (
    CANCELLED,
    CANCELLING,
    COMPENSATING,
    COMPENSATION_FAILED,
    COMPLETED,
    CREATED,
    FAILED,
    LIFECYCLE_STATES,
    EdgeSpec,
    ForkSpec,
    RegionSpec,
    WorkflowSpec,
)

STATE_ATTRIBUTE = "_orch_state"

# Every workflow machine: no model of its own (instances are passed to each
# trigger), no auto transitions, conditions called with the trigger's arguments.
_SHARED: dict[str, Any] = {
    "model": None,
    "initial": CREATED,
    "auto_transitions": False,
    "send_event": False,
    "model_attribute": STATE_ATTRIBUTE,
}


def build_machine(spec: WorkflowSpec) -> Machine:
    """Compile *spec* into its shared machine (no models): hierarchical when it forks."""
    if spec.has_forks:
        return build_hierarchical(spec)
    steps = [s.name for s in spec.steps]
    transitions: list[dict[str, Any]] = []
    for s in spec.steps:
        out = spec.outgoing(s.name)
        completion = [e for e in out if e.is_completion]
        # Guarded edges first, in declaration order; the default only when none holds.
        ordered = [e for e in completion if not e.is_default] + [e for e in completion if e.is_default]
        transitions.extend(
            {"trigger": "next", "source": s.name, "dest": e.dest, "conditions": [_checked(spec, e)]}
            if e.guard is not None
            else {"trigger": "next", "source": s.name, "dest": e.dest}
            for e in ordered
        )
        if s.final and not s.ends_failed:  # a failure end leaves by `fail`, into the saga
            transitions.append({"trigger": "next", "source": s.name, "dest": COMPLETED})
        transitions.extend(
            {"trigger": "error", "source": s.name, "dest": e.dest, "conditions": [_matches(e.on_error)]}
            for e in out
            if e.is_error
        )
        transitions.extend({"trigger": "timeout", "source": s.name, "dest": e.dest} for e in out if e.is_timeout)
    transitions += _lifecycle(steps)
    return Machine(states=[*LIFECYCLE_STATES, *steps], transitions=transitions, name=spec.name, **_SHARED)


class _State(NestedState):
    # Nested state names are joined with ".": "_" is legal in step names.
    separator = "."


class ForkMachine(HierarchicalMachine):
    """
    The hierarchical machine of a workflow with forks.

    Each fork ``f`` is a parallel state ``f@fork`` with one region per branch,
    ``<first step>@branch``; a region starts at ``@start`` and ends at ``@done``.
    Events carry the step they leave (``next@s``, ``error@s``, ``timeout@s``), so
    an event fires in one region only; ``enter@b`` / ``skip@b`` start or skip
    branch ``b`` (``enter@b``'s condition is the fork edge's guard: inclusive
    forks); ``join@f`` leaves the parallel state for the join, fired by the
    engine once every region is at ``@done``. The model's state is then a list of
    leaf paths, nested lists for nested forks.

    Attributes:
        paths: Each step's full state path (``f@fork.b@branch.step`` in a branch).
        region_paths: Each fork's region paths, in the fork's edge order.
        compounds: Each fork's parallel state path.
    """

    state_cls = _State
    paths: dict[str, str]
    region_paths: dict[str, tuple[str, ...]]
    compounds: dict[str, str]
    sibling_moves: dict[str, tuple[str, str, list[tuple[str, list[Any]]]]]
    fork_entries: dict[str, tuple[str, list[str]]]
    joins: dict[str, tuple[str, str]]
    fast = True
    """Take a fork's own moves straight from the transition table (see :meth:`trigger_event`)."""

    def index_moves(self) -> None:
        """
        Index the events :meth:`trigger_event` applies from the transition table.

        Three shapes, each an event with one source state and transitions
        registered on this machine: a leaf to a sibling leaf (the steps' own
        ``next@``/``error@``/``timeout@``, a branch's ``enter@``/``skip@``; kept
        with their conditions, in order); a leaf into a parallel state with no
        condition (``next@`` of a fork step: every region at its initial state);
        a parallel state to a sibling leaf with no condition (``join@``).
        """
        moves: dict[str, tuple[str, str, list[tuple[str, list[Any]]]]] = {}
        entries: dict[str, tuple[str, list[str]]] = {}
        joins: dict[str, tuple[str, str]] = {}
        for name, event in self.events.items():
            if len(event.transitions) != 1:
                continue
            [(source, transitions)] = event.transitions.items()
            parent = source.rpartition(".")[0]
            dests = [(str(t.dest), list(t.conditions)) for t in transitions]
            if any(d.rpartition(".")[0] != parent for d, _ in dests):
                continue
            src_state = self.get_state(source)
            dest_states = [self.get_state(d) for d, _ in dests]
            if not src_state.states and not any(d.states for d in dest_states):
                moves[name] = (parent, source, dests)
                continue
            if len(dests) != 1 or dests[0][1]:
                continue
            dest, dest_state = dests[0][0], dest_states[0]
            # A parallel state's initial is the list of its regions (typed str in transitions' stubs).
            dest_initial: object = dest_state.initial
            src_initial: object = src_state.initial
            if not src_state.states and isinstance(dest_initial, list):
                regions = [str(r) for r in dest_initial]  # pyright: ignore[reportUnknownVariableType]
                starts = [f"{dest}.{r}.{self.get_state(f'{dest}.{r}').initial}" for r in regions]
                if all(not self.get_state(leaf).states for leaf in starts):
                    entries[name] = (source, starts)
            elif isinstance(src_initial, list) and not dest_state.states:
                joins[name] = (source, dest)
        self.sibling_moves = moves
        self.fork_entries = entries
        self.joins = joins

    def trigger_event(self, model: Any, trigger: str, *args: Any, **kwargs: Any) -> bool:
        """
        Fire *trigger* for *model*.

        ``HierarchicalMachine.trigger_event`` walks the whole state tree of the
        model and rebuilds it for each event: inside a fork of N branches every
        event costs O(N), an instance O(N²). The events of this machine's own
        shapes (see :meth:`index_moves`: a step's moves, entering a fork, its
        join) have no callbacks, so the machine takes them from its own
        transition table: the first transition whose conditions all hold changes
        the state list where the source stands (the same state the full walk
        reaches; ``tests/unit/test_fork_machine.py`` compares the two on random
        event sequences). Every other event, and a model not in the event's
        source state, goes the full way.
        """
        if not self.fast or kwargs:
            return bool(super().trigger_event(model, trigger, *args, **kwargs))
        state: Any = getattr(model, STATE_ATTRIBUTE)
        move = self.sibling_moves.get(trigger)
        if move is not None:
            parent, source, dests = move
            where = _find_leaf(state, source) if parent else None
            if where is not None or state == source:
                for dest, conditions in dests:
                    if all(c.func(*args) == c.target for c in conditions):
                        _put(model, where, dest)
                        return True
                return False
        entry = self.fork_entries.get(trigger)
        if entry is not None:
            source, starts = entry
            where = _find_leaf(state, source)
            if where is not None or state == source:
                _put(model, where, list(starts))
                return True
        join = self.joins.get(trigger)
        if join is not None:
            source, dest = join
            found = _find_compound(state, source + ".")
            if found is not None:
                _put(model, found or None, dest)
                return True
        return bool(super().trigger_event(model, trigger, *args, **kwargs))


def _put(model: Any, where: tuple[list[Any], int] | None, value: object) -> None:
    """Set the state (*where* is None) or the item of the state list at *where*."""
    if where is None:
        setattr(model, STATE_ATTRIBUTE, value)
    else:
        where[0][where[1]] = value


def _find_compound(state: Any, prefix: str) -> tuple[list[Any], int] | tuple[()] | None:
    """
    Where the leaves of the parallel state *prefix* stand.

    ``()`` for the whole state, else the list holding their sublist and its
    index; None when the parallel state is not active.
    """

    def inside(item: Any) -> bool:
        return all(leaf.startswith(prefix) for leaf in leaves(item))

    if not isinstance(state, list):
        return None
    if inside(state):
        return ()
    stack: list[list[Any]] = [state]  # pyright: ignore[reportUnknownArgumentType]
    while stack:
        items = stack.pop()
        for i, item in enumerate(items):
            if isinstance(item, list):
                if inside(item):
                    return items, i
                stack.append(item)  # pyright: ignore[reportUnknownArgumentType]
    return None


START = "@start"
DONE = "@done"


def build_hierarchical(spec: WorkflowSpec) -> ForkMachine:
    """Compile a spec with forks into its shared hierarchical machine (no models)."""
    top = [s.name for s in spec.steps if spec.branch_of(s.name) is None]
    paths: dict[str, str] = {n: n for n in top}
    compounds: dict[str, str] = {}
    region_paths: dict[str, tuple[str, ...]] = {}

    def compound(fork: ForkSpec, prefix: str) -> dict[str, Any]:
        path = f"{prefix}{fork.step}@fork"
        compounds[fork.step] = path
        region_paths[fork.step] = tuple(f"{path}.{r.name}@branch" for r in fork.regions)
        return {"name": f"{fork.step}@fork", "parallel": [region(fork, r, f"{path}.") for r in fork.regions]}

    def region(fork: ForkSpec, r: RegionSpec, prefix: str) -> dict[str, Any]:
        path = f"{prefix}{r.name}@branch"
        own = [n for n in r.steps if spec.branch_of(n) == (fork, r)]
        for n in own:
            paths[n] = f"{path}.{n}"
        nested = [compound(f, f"{path}.") for f in spec.forks if f.parent == (fork.step, r.name)]
        return {"name": f"{r.name}@branch", "children": [START, *own, *nested, DONE], "initial": START}

    tops = [compound(f, "") for f in spec.forks if f.parent is None]
    transitions: list[dict[str, Any]] = []
    for s in spec.steps:
        source = paths[s.name]
        held = spec.branch_of(s.name)

        def dest(name: str, held: tuple[ForkSpec, RegionSpec] | None = held) -> str:
            if held is not None and name == held[0].join:
                return f"{paths[held[1].name].rsplit('.', 1)[0]}.{DONE}"
            return paths[name]

        out = spec.outgoing(s.name)
        fork = spec.fork(s.name)
        if fork is not None:
            transitions.append({"trigger": f"next@{s.name}", "source": source, "dest": compounds[s.name]})
            for r, rpath in zip(fork.regions, region_paths[s.name], strict=True):
                enter: dict[str, Any] = {
                    "trigger": f"enter@{r.name}",
                    "source": f"{rpath}.{START}",
                    "dest": paths[r.name],
                }
                if r.edge.guard is not None:
                    enter["conditions"] = [_checked(spec, r.edge)]
                transitions.append(enter)
                transitions.append(
                    {"trigger": f"skip@{r.name}", "source": f"{rpath}.{START}", "dest": f"{rpath}.{DONE}"}
                )
            transitions.append({"trigger": f"join@{s.name}", "source": compounds[s.name], "dest": paths[fork.join]})
        else:
            completion = [e for e in out if e.is_completion]
            ordered = [e for e in completion if not e.is_default] + [e for e in completion if e.is_default]
            for e in ordered:
                t: dict[str, Any] = {"trigger": f"next@{s.name}", "source": source, "dest": dest(e.dest)}
                if e.guard is not None:
                    t["conditions"] = [_checked(spec, e)]
                transitions.append(t)
        if s.final and not s.ends_failed:
            transitions.append({"trigger": f"next@{s.name}", "source": source, "dest": COMPLETED})
        transitions.extend(
            {"trigger": f"error@{s.name}", "source": source, "dest": dest(e.dest), "conditions": [_matches(e.on_error)]}
            for e in out
            if e.is_error
        )
        transitions.extend(
            {"trigger": f"timeout@{s.name}", "source": source, "dest": dest(e.dest)} for e in out if e.is_timeout
        )
    running = [*top, *(compounds[f.step] for f in spec.forks if f.parent is None)]
    transitions += _lifecycle(running)
    machine = ForkMachine(states=[*LIFECYCLE_STATES, *top, *tops], transitions=transitions, name=spec.name, **_SHARED)
    machine.paths = paths
    machine.region_paths = region_paths
    machine.compounds = compounds
    machine.index_moves()
    return machine


def _find_leaf(state: Any, leaf: str) -> tuple[list[Any], int] | None:
    """Where *leaf* stands in a (nested) state list: the list holding it and its index."""
    if not isinstance(state, list):
        return None
    stack: list[list[Any]] = [state]  # pyright: ignore[reportUnknownArgumentType]
    while stack:
        items = stack.pop()
        for i, item in enumerate(items):
            if item == leaf:
                return items, i
            if isinstance(item, list):
                stack.append(item)  # pyright: ignore[reportUnknownArgumentType]
    return None


def _lifecycle(running: list[str]) -> list[dict[str, Any]]:
    return [
        {"trigger": "fail", "source": running, "dest": COMPENSATING},
        {"trigger": "cancel", "source": running, "dest": CANCELLING},
        {"trigger": "abandon", "source": running, "dest": CANCELLED},
        {"trigger": "compensated", "source": COMPENSATING, "dest": FAILED},
        {"trigger": "compensated", "source": CANCELLING, "dest": CANCELLED},
        {"trigger": "compensation_error", "source": [COMPENSATING, CANCELLING], "dest": COMPENSATION_FAILED},
        {"trigger": "retry_compensation", "source": COMPENSATION_FAILED, "dest": COMPENSATING},
        # A completed child whose parent is compensated: undo its own completed steps
        # (again, after that failed, when the parent's compensation retries).
        {"trigger": "undo", "source": COMPLETED, "dest": CANCELLING},
        {"trigger": "retry_undo", "source": COMPENSATION_FAILED, "dest": CANCELLING},
    ]


def _checked(spec: WorkflowSpec, edge: EdgeSpec) -> Callable[..., bool]:
    guard: Callable[[object], object] | None = edge.guard
    assert guard is not None  # noqa: S101 - only called for guarded edges

    # transitions compares a condition's result with `== True`, so a guard returning
    # 1 or a non-empty list would silently pass; insist on a real bool instead.
    def condition(wf: object, *_: object) -> bool:
        result: object = guard(wf)
        if result is True or result is False:
            return result
        msg = (
            f"{spec.name}: guard {edge.guard_name} of the edge {edge.source} -> {edge.dest} "
            f"returned {result!r} ({type(result).__name__}), not a bool"
        )
        raise GuardError(msg)

    return condition


def _matches(types: tuple[type[BaseException], ...]) -> Callable[..., bool]:
    def condition(_wf: object, exc: BaseException) -> bool:
        return isinstance(exc, types)

    return condition
