"""
Edge and guard coverage: which edges of a workflow ran, and which guard outcomes were seen.

A :class:`Coverage` belongs to one workflow spec. ``WorkflowMachine`` keeps one per
generated machine class; the pytest plugin's ``--orch-coverage`` report reads the
process-wide registry that every recorder also feeds.
"""

from __future__ import annotations

from collections.abc import Iterator

from statemachine_orch._spec import EdgeSpec, WorkflowSpec


def describe_edge(edge: EdgeSpec) -> str:
    """``source -> dest`` with what makes it taken: ``[when g]``, ``[on_error E]``, ``[default]``."""
    arrow = f"{edge.source} -> {edge.dest}"
    if edge.is_error or edge.is_timeout:
        what = edge.label
    elif edge.guard is not None:
        what = f"when {edge.guard_name}"
    else:
        what = "default"
    return f"{arrow} [{'goto, ' if edge.back else ''}{what}]"


class CoverageWarning(UserWarning):
    """
    A passing ``WorkflowMachine`` run left edges of the workflow untaken; the message names them.

    ``require_coverage=`` makes it a failure (``CoverageError``) instead; ``exempt=``
    leaves out edges that are unreachable by design.

    .. versionadded:: 0.1.0
    """


class Coverage:
    """
    What ran of one workflow: each edge's count, and each guard's outcomes.

    Attributes:
        spec: The workflow's compiled spec.
        taken: For each edge of ``spec.edges`` (same order), how often it was taken.
        outcomes: For each edge with a guard (by index), the values its guard was seen to have.
        instances: How many instances ran.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_index", "instances", "outcomes", "spec", "taken")

    spec: WorkflowSpec
    taken: list[int]
    outcomes: dict[int, set[bool]]
    instances: int

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec
        self._index = {id(e): i for i, e in enumerate(spec.edges)}
        self.taken = [0] * len(spec.edges)
        self.outcomes = {i: set() for i, e in enumerate(spec.edges) if e.guard is not None}
        self.instances = 0

    def record_edge(self, edge: EdgeSpec) -> None:
        """Count one traversal of *edge*."""
        self.taken[self._index[id(edge)]] += 1

    def record_guard(self, edge: EdgeSpec, holds: bool) -> None:
        """Note that the guard of *edge* was evaluated to *holds*."""
        self.outcomes[self._index[id(edge)]].add(holds)

    def merge(self, other: Coverage) -> None:
        """Add what *other* (of the same workflow) recorded."""
        for i, n in enumerate(other.taken):
            self.taken[i] += n
        for i, seen in other.outcomes.items():
            self.outcomes[i] |= seen
        self.instances += other.instances

    def reset(self) -> None:
        """Forget everything recorded."""
        self.taken = [0] * len(self.taken)
        for seen in self.outcomes.values():
            seen.clear()
        self.instances = 0

    @property
    def fraction(self) -> float:
        """The share of edges taken at least once (1.0 for a workflow without edges)."""
        if not self.taken:
            return 1.0
        return sum(1 for n in self.taken if n) / len(self.taken)

    def unvisited(self) -> list[EdgeSpec]:
        """The edges never taken, in declaration order."""
        return [e for e, n in zip(self.spec.edges, self.taken, strict=True) if not n]

    def missing_outcomes(self) -> list[tuple[EdgeSpec, bool]]:
        """Each (guarded edge, value) never seen: a guard never true, or never false."""
        edges = self.spec.edges
        return [(edges[i], value) for i, seen in self.outcomes.items() for value in (True, False) if value not in seen]

    def lines(self) -> Iterator[str]:
        """The report, one line at a time."""
        visited = sum(1 for n in self.taken if n)
        yield (f"{self.spec.name}: {visited}/{len(self.taken)} edges ({self.fraction:.0%}), {self.instances} instances")
        for edge, n in zip(self.spec.edges, self.taken, strict=True):
            seen = self.outcomes.get(self._index[id(edge)])
            guard = ""
            if seen is not None:
                guard = "  guard: " + "/".join(
                    f"{'true' if v else 'false'}{'' if v in seen else ' never'}" for v in (True, False)
                )
            mark = "   " if n else "!! "
            yield f"  {mark}{describe_edge(edge)}: {n}x{guard}"

    def report(self) -> str:
        """A readable report: one line per edge, unvisited ones marked ``!!``."""
        return "\n".join(self.lines())


class CoverageRegistry:
    """Coverage per workflow (by qualified name), accumulated over many runs."""

    __slots__ = ("by_workflow",)

    def __init__(self) -> None:
        self.by_workflow: dict[str, Coverage] = {}

    def of(self, spec: WorkflowSpec) -> Coverage:
        """The coverage of *spec*'s workflow (created empty the first time)."""
        found = self.by_workflow.get(spec.qualname)
        if found is None or found.spec is not spec:
            fresh = Coverage(spec)
            if found is not None and found.spec.edges == spec.edges:
                fresh.merge(found)
            found = self.by_workflow[spec.qualname] = fresh
        return found

    def report(self) -> str:
        """Every workflow's report, sorted by name."""
        if not self.by_workflow:
            return "no workflow instance ran"
        return "\n".join(self.by_workflow[k].report() for k in sorted(self.by_workflow))


_stack: list[CoverageRegistry] = [CoverageRegistry()]


def current_registry() -> CoverageRegistry:
    """The registry recorders feed now (the pytest plugin pushes one per session)."""
    return _stack[-1]


def push_registry() -> CoverageRegistry:
    """Start feeding a fresh registry (nested pytest sessions each get their own)."""
    fresh = CoverageRegistry()
    _stack.append(fresh)
    return fresh


def pop_registry(registry: CoverageRegistry) -> None:
    """Stop feeding *registry* (pushed by :func:`push_registry`)."""
    if len(_stack) > 1 and _stack[-1] is registry:
        _stack.pop()
