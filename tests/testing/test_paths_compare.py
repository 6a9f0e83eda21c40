"""
Issue 11, kind 3: paths() reads the comparisons in guards, so a dead edge is listed as unreachable and its shadow named.

Guards are tried in declaration order and the first that holds wins: ``> 1_000``
declared before ``> 50_000`` leaves the second edge dead. The class says so
when it is created (``DeadEdgeWarning``), and ``paths()`` marks every path
through the edge unreachable, naming the earlier edge that takes its instances.
Numbers (ints and floats apart), enums, booleans and strings, named constants
(globals, closures, defaults, class attributes), ``and``/``or``/``not``; an
opaque part (a call, two variables compared) never makes an edge dead.
"""

from __future__ import annotations

import enum
import warnings

import pytest

from statemachine_orch import Ctx, DeadEdgeWarning, Workflow, after, step
from statemachine_orch.testing import paths

REVIEW_LIMIT = 1_000


class Tier(enum.Enum):
    """A customer tier."""

    BRONZE = "bronze"
    GOLD = "gold"


def test_an_edge_shadowed_by_an_earlier_one_is_unreachable_and_named() -> None:
    """Issue 11 (3): the class warns when it is created, and paths() names the edge that takes its instances."""
    with pytest.warns(DeadEdgeWarning) as caught:

        class Loan(Workflow, version="1"):
            amount: int

            @step(initial=True)
            def intake(self, ctx: Ctx) -> None: ...

            @after(intake, when=lambda wf: wf.amount > REVIEW_LIMIT)
            @step(final=True)
            def review(self, ctx: Ctx) -> None: ...

            @after(intake, when=lambda wf: wf.amount > 50_000)
            @step(final=True)
            def board(self, ctx: Ctx) -> None: ...

            @after(intake)
            @step(final=True)
            def approve(self, ctx: Ctx) -> None: ...

    [warning] = caught
    assert str(warning.message) == (
        "Loan.intake: the edge intake -> board [when wf.amount > 50000] is never taken: every instance its guard "
        "lets through takes the earlier edge intake -> review [when wf.amount > REVIEW_LIMIT] (the first that holds "
        "wins)"
    )
    assert isinstance(warning.message, DeadEdgeWarning)
    assert ("intake", "board", ["review"]) == (
        warning.message.edge.source,
        warning.message.edge.dest,
        [e.dest for e in warning.message.shadowed_by],
    )
    dead = [p for p in paths(Loan) if not p.reachable]
    assert 2 == len(dead)
    assert all(p.steps == ("intake", "board") for p in dead)
    assert str(dead[0]) == (
        "[unreachable: intake -> board [when wf.amount > 50000] is never taken: every instance its guard lets "
        "through takes the earlier edge intake -> review [when wf.amount > REVIEW_LIMIT]] "
        "intake -[not wf.amount > REVIEW_LIMIT, wf.amount > 50000]-> board => completed"
    )


def _dead_edges(make: object) -> list[str]:
    """The dead edges the class creation by *make* warns about, as ``source -> dest``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeadEdgeWarning)
        assert callable(make)
        make()
    return [
        f"{w.message.edge.source} -> {w.message.edge.dest}" for w in caught if isinstance(w.message, DeadEdgeWarning)
    ]


def test_named_constants_enums_booleans_and_class_attributes_are_read() -> None:
    """Issue 11 (3): a closure's constant, a class attribute, an enum and a boolean all take part."""

    def make() -> None:
        gold = Tier.GOLD

        class Upgrade(Workflow, version="1"):  # pyright: ignore[reportUnusedClass] - created for its warnings
            tier: Tier
            vip: bool
            spent: float
            THRESHOLD = 500.0

            @step(initial=True)
            def check(self, ctx: Ctx) -> None: ...

            @after(check, when=lambda wf: wf.tier is gold or wf.vip)
            @step(final=True)
            def lounge(self, ctx: Ctx) -> None: ...

            @after(check, when=lambda wf: wf.tier == Tier.GOLD and wf.spent > wf.THRESHOLD)
            @step(final=True)
            def upgrade(self, ctx: Ctx) -> None: ...

            @after(check, when=lambda wf: not wf.vip and wf.tier is Tier.BRONZE)
            @step(final=True)
            def economy(self, ctx: Ctx) -> None: ...

            @after(check)
            @step(final=True)
            def nothing(self, ctx: Ctx) -> None: ...

    assert ["check -> upgrade", "check -> nothing"] == _dead_edges(make)


def test_ints_and_floats_differ_and_a_guard_that_never_holds_is_dead() -> None:
    """Issue 11 (3): no int lies strictly between 5 and 6, a float does; ``x > 5 and x < 3`` never holds."""

    def make() -> None:
        class Gaps(Workflow, version="1"):  # pyright: ignore[reportUnusedClass] - created for its warnings
            count: int
            weight: float

            @step(initial=True)
            def measure(self, ctx: Ctx) -> None: ...

            @after(measure, when=lambda wf: wf.count > 5 and wf.count < 6)
            @step(final=True)
            def no_int(self, ctx: Ctx) -> None: ...

            @after(measure, when=lambda wf: wf.weight > 5 and wf.weight < 6)
            @step(final=True)
            def some_float(self, ctx: Ctx) -> None: ...

            @after(measure, when=lambda wf: wf.count > 5 and wf.count < 3)
            @step(final=True)
            def never(self, ctx: Ctx) -> None: ...

            @after(measure)
            @step(final=True)
            def rest(self, ctx: Ctx) -> None: ...

    assert ["measure -> no_int", "measure -> never"] == _dead_edges(make)


def test_what_cannot_be_read_never_makes_an_edge_dead() -> None:
    """Issue 11 (3): a call, or two variables compared (unless in the same words), may be anything: no warning."""

    def make() -> None:
        class Opaque(Workflow, version="1"):  # pyright: ignore[reportUnusedClass] - created for its warnings
            amount: int
            limit: int
            items: list[int]

            @step(initial=True)
            def look(self, ctx: Ctx) -> None: ...

            @after(look, when=lambda wf: wf.amount > wf.limit)
            @step(final=True)
            def over(self, ctx: Ctx) -> None: ...

            @after(look, when=lambda wf: wf.limit < wf.amount or len(wf.items) > 2)
            @step(final=True)
            def unknown(self, ctx: Ctx) -> None: ...

            @after(look, when=lambda wf: sum(wf.items) > 0)
            @step(final=True)
            def positive(self, ctx: Ctx) -> None: ...

            @after(look)
            @step(final=True)
            def rest(self, ctx: Ctx) -> None: ...

    assert [] == _dead_edges(make)


def test_guards_read_again_after_a_step_that_does_not_write_them() -> None:
    """Issue 11 (3): a later guard contradicting an earlier outcome (no write in between) marks the path unreachable."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeadEdgeWarning)

        class Shipping(Workflow, version="1"):
            weight: int
            label: str = ""

            @step(initial=True)
            def weigh(self, ctx: Ctx) -> None: ...

            @after(weigh, when=lambda wf: wf.weight < 10)
            @step
            def small(self, ctx: Ctx) -> None:
                self.label = "small"

            @after(weigh)
            @step
            def large(self, ctx: Ctx) -> None:
                self.label = "large"

            @after(small, when=lambda wf: wf.weight > 20)
            @after(large, when=lambda wf: wf.weight > 20)
            @step(final=True)
            def truck(self, ctx: Ctx) -> None: ...

            @after(small)
            @after(large)
            @step(final=True)
            def van(self, ctx: Ctx) -> None: ...

    unreachable = [str(p) for p in paths(Shipping) if not p.reachable]

    why = (
        "[unreachable: wf.weight > 20 must be true after small, but wf.weight < 10 was true after weigh and no step "
        "since writes what they read: no values of the variables they compare allow both] "
    )
    assert [
        why + "weigh -[wf.weight < 10]-> small -[wf.weight > 20]-> truck => completed",
        why + "weigh -[wf.weight < 10]-> small -[wf.weight > 20]-> truck => fails => failed",
    ] == unreachable
