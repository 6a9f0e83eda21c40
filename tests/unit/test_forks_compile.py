"""
Forks and joins at class creation: ``@step(fork=True)`` and ``@after(a, b, ...)``.

The definition rules of forks, each with its exact problem; the computed forks,
branches and nesting of valid definitions (``spec.forks``, ``spec.branch_of``);
the hierarchical machine they compile to; and their Mermaid diagram. Every class
name starts with ``Fk`` (workflow names are global in the registry).
"""

# Classes defined inside pytest.raises exist only to fail their own definition.
# pyright: reportUnusedClass=false

from __future__ import annotations

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    DefinitionProblem,
    Workflow,
    WorkflowDefinitionError,
    WorkflowSpec,
    after,
    goto,
    human_task,
    mermaid,
    spec_of,
    step,
)
from statemachine_orch._machine import ForkMachine

ProblemInfo = pytest.ExceptionInfo[WorkflowDefinitionError]


def problems(err: ProblemInfo) -> list[DefinitionProblem]:
    """The problems an error reports, in order."""
    return list(err.value.problems)


def shape(
    spec: WorkflowSpec,
) -> list[tuple[str, str, tuple[str, str] | None, list[tuple[str, tuple[str, ...], tuple[str, ...]]]]]:
    """Each fork as ``(fork, join, parent, [(branch, steps, ends), ...])``."""
    return [(f.step, f.join, f.parent, [(r.name, r.steps, r.ends) for r in f.regions]) for f in spec.forks]


def branch(spec: WorkflowSpec, name: str) -> tuple[str, str] | None:
    """``(fork, branch)`` of the innermost branch holding step *name*."""
    held = spec.branch_of(name)
    return None if held is None else (held[0].step, held[1].name)


def machine(cls: type[Workflow]) -> ForkMachine:
    m = cls.__orch_machine__
    assert isinstance(m, ForkMachine)
    return m


@attrs.frozen
class FkForm:
    """A human-task form."""

    ok: bool


# --------------------------------------------------------------------------- valid forks


class FkParallel(Workflow):
    """A parallel fork of three branches, one step each."""

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    def a(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    def b(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    def c(self, ctx: Ctx) -> None: ...

    @after(a, b, c)
    @step(final=True)
    def merge(self, ctx: Ctx) -> None: ...


def test_a_parallel_fork_of_three_branches() -> None:
    spec = spec_of(FkParallel)
    assert [
        ("split", "merge", None, [("a", ("a",), ("a",)), ("b", ("b",), ("b",)), ("c", ("c",), ("c",))]),
    ] == shape(spec)
    [fork] = spec.forks
    assert fork is spec.fork("split")
    assert [("split", "a", None), ("split", "b", None), ("split", "c", None)] == [
        (r.edge.source, r.edge.dest, r.edge.guard) for r in fork.regions
    ]
    assert [None, ("split", "a"), ("split", "b"), ("split", "c"), None] == [branch(spec, s.name) for s in spec.steps]
    assert spec.fork("a") is None
    m = machine(FkParallel)
    assert {
        "split": "split",
        "merge": "merge",
        "a": "split@fork.a@branch.a",
        "b": "split@fork.b@branch.b",
        "c": "split@fork.c@branch.c",
    } == m.paths
    assert {"split": ("split@fork.a@branch", "split@fork.b@branch", "split@fork.c@branch")} == m.region_paths
    assert {"split": "split@fork"} == m.compounds


def test_several_unguarded_edges_out_of_a_fork_are_not_several_defaults() -> None:
    """FkParallel compiled above; the same shape without fork=True is an ambiguous choice."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkNotAFork(Workflow):
            @step(initial=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step(final=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = (
        "has 2 unguarded (default) edges, to a, b; only one edge may be the default: give the others a when= guard"
    )
    assert [DefinitionProblem("FkNotAFork", "split", "several-defaults", message)] == problems(err)


class FkInclusive(Workflow):
    """An inclusive fork: the guarded branches start only when their guard holds."""

    express: bool = False
    gift: bool = False

    def wants_gift(self) -> bool:
        return self.gift

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    def pack(self, ctx: Ctx) -> None: ...

    @after(split, when=lambda wf: wf.express)
    @step
    def book_courier(self, ctx: Ctx) -> None: ...

    @after(split, when=wants_gift)
    @step
    def wrap(self, ctx: Ctx) -> None: ...

    @after(pack, book_courier, wrap)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


def test_an_inclusive_fork() -> None:
    spec = spec_of(FkInclusive)
    assert [
        (
            "split",
            "ship",
            None,
            [
                ("pack", ("pack",), ("pack",)),
                ("book_courier", ("book_courier",), ("book_courier",)),
                ("wrap", ("wrap",), ("wrap",)),
            ],
        ),
    ] == shape(spec)
    [fork] = spec.forks
    assert [None, "wf.express", "wants_gift"] == [r.edge.guard_name for r in fork.regions]
    wf = FkInclusive(express=True)
    assert [True, False] == [r.edge.guard(wf) for r in fork.regions if r.edge.guard is not None]
    m = machine(FkInclusive)
    assert ("split@fork.pack@branch", "split@fork.book_courier@branch", "split@fork.wrap@branch") == m.region_paths[
        "split"
    ]
    # A guarded branch is entered only when its guard holds.
    assert [0, 1, 1] == [
        len(m.events[f"enter@{r.name}"].transitions[f"{p}.@start"][0].conditions)
        for r, p in zip(fork.regions, m.region_paths["split"], strict=True)
    ]


class FkChains(Workflow):
    """Branches of several steps: an exclusive choice in one, a human task in the other."""

    express: bool = False
    approved: bool = False

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None: ...

    @after(receive)
    @step(fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    def reserve(self, ctx: Ctx) -> None: ...

    @after(reserve, when=lambda wf: wf.express)
    @step
    def express_ship(self, ctx: Ctx) -> None: ...

    @after(reserve)
    @step
    def standard_ship(self, ctx: Ctx) -> None: ...

    @after(split)
    @human_task(assignee="manager", form=FkForm)
    def approve(self, ctx: Ctx, form: FkForm) -> None:
        self.approved = form.ok

    @after(approve)
    @step
    def record(self, ctx: Ctx) -> None: ...

    @after(express_ship, standard_ship, record)
    @step
    def merge(self, ctx: Ctx) -> None: ...

    @after(merge)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


def test_a_fork_whose_branches_are_chains_with_a_choice_and_a_human_task() -> None:
    spec = spec_of(FkChains)
    assert [
        (
            "split",
            "merge",
            None,
            [
                ("reserve", ("reserve", "express_ship", "standard_ship"), ("express_ship", "standard_ship")),
                ("approve", ("approve", "record"), ("record",)),
            ],
        ),
    ] == shape(spec)
    assert {
        "receive": None,
        "split": None,
        "reserve": ("split", "reserve"),
        "express_ship": ("split", "reserve"),
        "standard_ship": ("split", "reserve"),
        "approve": ("split", "approve"),
        "record": ("split", "approve"),
        "merge": None,
        "close": None,
    } == {s.name: branch(spec, s.name) for s in spec.steps}
    m = machine(FkChains)
    assert {
        "receive": "receive",
        "split": "split",
        "merge": "merge",
        "close": "close",
        "reserve": "split@fork.reserve@branch.reserve",
        "express_ship": "split@fork.reserve@branch.express_ship",
        "standard_ship": "split@fork.reserve@branch.standard_ship",
        "approve": "split@fork.approve@branch.approve",
        "record": "split@fork.approve@branch.record",
    } == m.paths
    assert {"split": ("split@fork.reserve@branch", "split@fork.approve@branch")} == m.region_paths
    assert {"split": "split@fork"} == m.compounds
    # The choice inside the branch: guarded first, the default last; both end the branch.
    [guarded, default] = m.events["next@reserve"].transitions["split@fork.reserve@branch.reserve"]
    assert ("split@fork.reserve@branch.express_ship", 1) == (guarded.dest, len(guarded.conditions))
    assert ("split@fork.reserve@branch.standard_ship", 0) == (default.dest, len(default.conditions))
    [done] = m.events["next@record"].transitions["split@fork.approve@branch.record"]
    assert "split@fork.approve@branch.@done" == done.dest


class FkNested(Workflow):
    """A branch holding a fork of its own, joined inside the branch."""

    @step(initial=True, fork=True)
    def outer(self, ctx: Ctx) -> None: ...

    @after(outer)
    @step(fork=True)
    def inner(self, ctx: Ctx) -> None: ...

    @after(inner)
    @step
    def x(self, ctx: Ctx) -> None: ...

    @after(inner)
    @step
    def y(self, ctx: Ctx) -> None: ...

    @after(x, y)
    @step
    def inner_join(self, ctx: Ctx) -> None: ...

    @after(inner_join)
    @step
    def z(self, ctx: Ctx) -> None: ...

    @after(outer)
    @step
    def c(self, ctx: Ctx) -> None: ...

    @after(z, c)
    @step(final=True)
    def outer_join(self, ctx: Ctx) -> None: ...


def test_a_nested_fork() -> None:
    spec = spec_of(FkNested)
    assert [
        (
            "outer",
            "outer_join",
            None,
            [("inner", ("inner", "x", "y", "inner_join", "z"), ("z",)), ("c", ("c",), ("c",))],
        ),
        ("inner", "inner_join", ("outer", "inner"), [("x", ("x",), ("x",)), ("y", ("y",), ("y",))]),
    ] == shape(spec)
    assert {
        "outer": None,
        "inner": ("outer", "inner"),
        "x": ("inner", "x"),
        "y": ("inner", "y"),
        "inner_join": ("outer", "inner"),
        "z": ("outer", "inner"),
        "c": ("outer", "c"),
        "outer_join": None,
    } == {s.name: branch(spec, s.name) for s in spec.steps}
    m = machine(FkNested)
    assert {
        "outer": "outer",
        "outer_join": "outer_join",
        "inner": "outer@fork.inner@branch.inner",
        "inner_join": "outer@fork.inner@branch.inner_join",
        "z": "outer@fork.inner@branch.z",
        "c": "outer@fork.c@branch.c",
        "x": "outer@fork.inner@branch.inner@fork.x@branch.x",
        "y": "outer@fork.inner@branch.inner@fork.y@branch.y",
    } == m.paths
    assert {
        "outer": ("outer@fork.inner@branch", "outer@fork.c@branch"),
        "inner": ("outer@fork.inner@branch.inner@fork.x@branch", "outer@fork.inner@branch.inner@fork.y@branch"),
    } == m.region_paths
    assert {"outer": "outer@fork", "inner": "outer@fork.inner@branch.inner@fork"} == m.compounds
    [joined] = m.events["join@inner"].transitions["outer@fork.inner@branch.inner@fork"]
    assert "outer@fork.inner@branch.inner_join" == joined.dest


def test_a_fork_in_a_loop_and_a_loop_in_a_branch() -> None:
    """A back edge around the whole fork, and one inside a branch, are both fine."""

    class FkLoops(Workflow):
        tries: int = 0

        @step(initial=True, fork=True)
        def split(self, ctx: Ctx) -> None: ...

        @after(split)
        @step
        def a(self, ctx: Ctx) -> None: ...

        @goto(a, when=lambda wf: wf.tries < 3)
        @after(a)
        @step
        def a_check(self, ctx: Ctx) -> None: ...

        @after(split)
        @step
        def b(self, ctx: Ctx) -> None: ...

        @goto(split, when=lambda wf: wf.tries < 5)
        @after(a_check, b)
        @step
        def merge(self, ctx: Ctx) -> None: ...

        @after(merge)
        @step(final=True)
        def done(self, ctx: Ctx) -> None: ...

    spec = spec_of(FkLoops)
    assert [("split", "merge", None, [("a", ("a", "a_check"), ("a_check",)), ("b", ("b",), ("b",))])] == shape(spec)


# --------------------------------------------------------------------------- fork-one-edge


def test_fork_with_one_edge() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkOneEdge(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step(final=True)
            def only(self, ctx: Ctx) -> None: ...

    message = (
        "is fork=True but has 1 outgoing edge (to only); a fork starts two or more parallel branches: "
        "add @after(split) to the first step of each branch, or drop fork=True"
    )
    assert [DefinitionProblem("FkOneEdge", "split", "fork-one-edge", message)] == problems(err)


def test_fork_with_no_edge() -> None:
    """An on_error edge is not a branch."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkNoEdge(Workflow):
            @step(initial=True, final=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split, on_error=ValueError)
            @step(final=True)
            def handle(self, ctx: Ctx) -> None: ...

    message = (
        "is fork=True but has no outgoing edge; a fork starts two or more parallel branches: "
        "add @after(split) to the first step of each branch, or drop fork=True"
    )
    assert [DefinitionProblem("FkNoEdge", "split", "fork-one-edge", message)] == problems(err)


# --------------------------------------------------------------------------- fork-without-join


def test_fork_without_join_a_branch_never_reaches_the_join() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkStranded(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(split)
            @step(final=True)
            def c(self, ctx: Ctx) -> None: ...

            @after(a, b)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    message = "the branch starting at c can never reach the join merge; route every branch of the fork to its join"
    assert [DefinitionProblem("FkStranded", "split", "fork-without-join", message)] == problems(err)


def test_fork_without_join_branches_meet_before_the_join() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkMeet(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def c(self, ctx: Ctx) -> None: ...

            @after(a)
            @after(b)
            @step
            def shared(self, ctx: Ctx) -> None: ...

            @after(shared, c)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    message = (
        "its branches starting at a, b meet at shared before the join merge; "
        "each branch must keep to its own steps until the join"
    )
    assert [DefinitionProblem("FkMeet", "split", "fork-without-join", message)] == problems(err)


def test_fork_without_any_join() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkNoJoin(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step(final=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = (
        "is fork=True but no join collects its branches (starting at a, b); end them at one step "
        "with @after(last_of_branch_1, last_of_branch_2, ...)"
    )
    assert [DefinitionProblem("FkNoJoin", "split", "fork-without-join", message)] == problems(err)


def test_fork_without_join_is_not_blamed_on_another_forks_join() -> None:
    """The join of an earlier fork is no candidate for a later fork that has none."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkSecondNoJoin(Workflow):
            @step(initial=True, fork=True)
            def first(self, ctx: Ctx) -> None: ...

            @after(first)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(first)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a, b)
            @step(fork=True)
            def second(self, ctx: Ctx) -> None: ...

            @after(second)
            @step(final=True)
            def c(self, ctx: Ctx) -> None: ...

            @after(second)
            @step(final=True)
            def d(self, ctx: Ctx) -> None: ...

    message = (
        "is fork=True but no join collects its branches (starting at c, d); end them at one step "
        "with @after(last_of_branch_1, last_of_branch_2, ...)"
    )
    assert [DefinitionProblem("FkSecondNoJoin", "second", "fork-without-join", message)] == problems(err)


def test_fork_without_join_a_branch_goes_straight_to_the_join() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkStraight(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(a, split)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    message = (
        "its edge to merge goes straight to the join, a branch without steps; put a step on that branch, "
        "or drop the edge"
    )
    assert [DefinitionProblem("FkStraight", "split", "fork-without-join", message)] == problems(err)


def test_fork_without_join_a_branch_loops_back_to_the_fork() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkLoopOut(Workflow):
            again: bool = False

            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @goto(split, when=lambda wf: wf.again)
            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a, b)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    message = (
        "the branch starting at a leads back to the fork split; a branch may loop within itself, "
        "but leaves only through the join merge"
    )
    assert [DefinitionProblem("FkLoopOut", "split", "fork-without-join", message)] == problems(err)


# --------------------------------------------------------------------------- joins


def test_join_without_fork_after_a_valid_fork() -> None:
    """A join after an exclusive choice has no fork, even with a fork elsewhere in the class."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkLonelyJoin(Workflow):
            big: bool = False

            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a, b)
            @step
            def merge(self, ctx: Ctx) -> None: ...

            @after(merge, when=lambda wf: wf.big)
            @step
            def heavy(self, ctx: Ctx) -> None: ...

            @after(merge)
            @step
            def light(self, ctx: Ctx) -> None: ...

            @after(heavy, light)
            @step(final=True)
            def close(self, ctx: Ctx) -> None: ...

    message = (
        "@after(heavy, light) with several sources is a join, but no step with fork=True splits into branches "
        "that all end there; for 'after any of them', stack one @after per source"
    )
    assert [DefinitionProblem("FkLonelyJoin", "close", "join-without-fork", message)] == problems(err)


def test_join_of_several_forks() -> None:
    """An inner fork's branches may not end at the outer join: each fork has its own join."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkSharedJoin(Workflow):
            @step(initial=True, fork=True)
            def outer(self, ctx: Ctx) -> None: ...

            @after(outer)
            @step(fork=True)
            def inner(self, ctx: Ctx) -> None: ...

            @after(inner)
            @step
            def x(self, ctx: Ctx) -> None: ...

            @after(inner)
            @step
            def y(self, ctx: Ctx) -> None: ...

            @after(outer)
            @step
            def c(self, ctx: Ctx) -> None: ...

            @after(x, y, c)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    message = (
        "@after(x, y, c) joins the branches of several forks (outer, inner); a join closes one fork: "
        "give each fork a join of its own"
    )
    assert [DefinitionProblem("FkSharedJoin", "merge", "join-of-several-forks", message)] == problems(err)


def test_join_sources_not_one_fork() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkForeignSource(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split, on_error=ValueError)
            @step
            def recover(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a, b, recover)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    message = (
        "@after(a, b, recover) joins recover, which is not in a branch of the fork split; "
        "a join's sources are the last steps of the branches of one fork"
    )
    assert [DefinitionProblem("FkForeignSource", "merge", "join-sources-not-one-fork", message)] == problems(err)


JOIN_WITH_CONDITION = (
    "@after(a, b, ...) is a join and takes no when=, on_error= or timeout=; "
    "it fires once every branch started by its fork has arrived"
)


def test_join_with_a_guard() -> None:
    """A join waits for every started branch: it takes no guard."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkJoinWhen(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a, b, when=lambda wf: True)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    assert [DefinitionProblem("FkJoinWhen", "merge", "join-with-condition", JOIN_WITH_CONDITION)] == problems(err)


def test_join_with_on_error() -> None:
    """A join takes no error types (and its sources, left without a completion edge, have no way out)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkJoinOnError(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a, b, on_error=ValueError)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    assert [
        DefinitionProblem("FkJoinOnError", "merge", "join-with-condition", JOIN_WITH_CONDITION),
        DefinitionProblem("FkJoinOnError", "a", "no-way-out", NO_WAY_OUT.format("a")),
        DefinitionProblem("FkJoinOnError", "b", "no-way-out", NO_WAY_OUT.format("b")),
    ] == problems(err)


def test_join_with_timeout() -> None:
    """A join takes no timeout, even when its sources are waiting steps."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkJoinTimeout(Workflow):
            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @human_task(assignee="alice", form=FkForm)
            def a(self, ctx: Ctx, form: FkForm) -> None: ...

            @after(split)
            @human_task(assignee="bob", form=FkForm)
            def b(self, ctx: Ctx, form: FkForm) -> None: ...

            @after(a, b, timeout=60)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    assert [
        DefinitionProblem("FkJoinTimeout", "merge", "join-with-condition", JOIN_WITH_CONDITION),
        DefinitionProblem("FkJoinTimeout", "a", "no-way-out", NO_WAY_OUT.format("a")),
        DefinitionProblem("FkJoinTimeout", "b", "no-way-out", NO_WAY_OUT.format("b")),
    ] == problems(err)


NO_WAY_OUT = (
    "is not final and has no outgoing edge; add @after({}) to a later step, @goto(...) on it, or mark it final=True"
)


# --------------------------------------------------------------------------- inside branches


def test_final_in_branch() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkFinalInBranch(Workflow):
            give_up: bool = False

            @step(initial=True, fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(a, when=lambda wf: wf.give_up)
            @step(final=True)
            def abandon(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a, b)
            @step(final=True)
            def merge(self, ctx: Ctx) -> None: ...

    message = (
        "is final=True inside the branch a of the fork split; a branch cannot end the instance: "
        "it ends at the join merge"
    )
    assert [DefinitionProblem("FkFinalInBranch", "abandon", "final-in-branch", message)] == problems(err)


def test_final_in_a_nested_branch_is_reported_once_for_the_innermost_branch() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkFinalNested(Workflow):
            give_up: bool = False

            @step(initial=True, fork=True)
            def outer(self, ctx: Ctx) -> None: ...

            @after(outer)
            @step(fork=True)
            def inner(self, ctx: Ctx) -> None: ...

            @after(inner)
            @step
            def x(self, ctx: Ctx) -> None: ...

            @after(x, when=lambda wf: wf.give_up)
            @step(final=True)
            def abandon(self, ctx: Ctx) -> None: ...

            @after(inner)
            @step
            def y(self, ctx: Ctx) -> None: ...

            @after(x, y)
            @step
            def inner_join(self, ctx: Ctx) -> None: ...

            @after(outer)
            @step
            def c(self, ctx: Ctx) -> None: ...

            @after(inner_join, c)
            @step(final=True)
            def outer_join(self, ctx: Ctx) -> None: ...

    message = (
        "is final=True inside the branch x of the fork inner; a branch cannot end the instance: "
        "it ends at the join inner_join"
    )
    assert [DefinitionProblem("FkFinalNested", "abandon", "final-in-branch", message)] == problems(err)


def test_edge_into_branch() -> None:
    """From before the fork, and back from after the join."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkSideDoor(Workflow):
            shortcut: bool = False
            again: bool = False

            @step(initial=True)
            def receive(self, ctx: Ctx) -> None: ...

            @after(receive)
            @step(fork=True)
            def split(self, ctx: Ctx) -> None: ...

            @after(split)
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(receive, when=lambda wf: wf.shortcut)
            @after(split)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @goto(a, when=lambda wf: wf.again)
            @after(a, b)
            @step
            def merge(self, ctx: Ctx) -> None: ...

            @after(merge)
            @step(final=True)
            def close(self, ctx: Ctx) -> None: ...

    assert [
        DefinitionProblem(
            "FkSideDoor",
            "b",
            "edge-into-branch",
            "is entered from receive, outside the branch b of the fork split; a branch is entered only through its fork",
        ),
        DefinitionProblem(
            "FkSideDoor",
            "a",
            "edge-into-branch",
            "is entered from merge, outside the branch a of the fork split; a branch is entered only through its fork",
        ),
    ] == problems(err)


def test_edge_into_a_nested_branch_is_reported_once() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class FkNestedSideDoor(Workflow):
            shortcut: bool = False

            @step(initial=True, fork=True)
            def outer(self, ctx: Ctx) -> None: ...

            @after(outer)
            @step(fork=True)
            def inner(self, ctx: Ctx) -> None: ...

            @after(inner)
            @step
            def x(self, ctx: Ctx) -> None: ...

            @after(outer)
            @step
            def c(self, ctx: Ctx) -> None: ...

            @after(c, when=lambda wf: wf.shortcut)
            @after(inner)
            @step
            def y(self, ctx: Ctx) -> None: ...

            @after(x, y)
            @step
            def inner_join(self, ctx: Ctx) -> None: ...

            @after(inner_join, c)
            @step(final=True)
            def outer_join(self, ctx: Ctx) -> None: ...

    found = problems(err)
    assert [("y", "edge-into-branch")] == [(p.step, p.rule) for p in found if p.rule == "edge-into-branch"]


# --------------------------------------------------------------------------- mermaid


def test_mermaid_draws_a_fork_and_its_join_as_pseudo_states() -> None:
    expected = """\
stateDiagram-v2
    [*] --> split
    state split_fork <<fork>>
    state ship_join <<join>>
    split --> split_fork
    split_fork --> pack
    split_fork --> book_courier: wf.express
    split_fork --> wrap: wants_gift
    pack --> ship_join
    book_courier --> ship_join
    wrap --> ship_join
    ship_join --> ship
    ship --> [*]
"""
    assert expected == mermaid(FkInclusive)


def test_mermaid_of_a_nested_fork() -> None:
    expected = """\
stateDiagram-v2
    [*] --> outer
    state outer_fork <<fork>>
    state outer_join_join <<join>>
    state inner_fork <<fork>>
    state inner_join_join <<join>>
    outer --> outer_fork
    outer_fork --> inner
    outer_fork --> c
    inner --> inner_fork
    inner_fork --> x
    inner_fork --> y
    x --> inner_join_join
    y --> inner_join_join
    inner_join_join --> inner_join
    inner_join --> z
    z --> outer_join_join
    c --> outer_join_join
    outer_join_join --> outer_join
    outer_join --> [*]
"""
    assert expected == mermaid(FkNested)


def test_mermaid_pseudo_states_do_not_clash_with_step_names() -> None:
    class FkClash(Workflow):
        @step(initial=True, fork=True)
        def s(self, ctx: Ctx) -> None: ...

        @after(s)
        @step
        def s_fork(self, ctx: Ctx) -> None: ...

        @after(s)
        @step
        def b(self, ctx: Ctx) -> None: ...

        @after(s_fork, b)
        @step(final=True)
        def j(self, ctx: Ctx) -> None: ...

    text = mermaid(FkClash)
    assert "    state s_fork_ <<fork>>\n" in text
    assert "    s --> s_fork_\n    s_fork_ --> s_fork\n    s_fork_ --> b\n" in text
