"""
The labels of guards (issue 12, "Fix the labels").

Two lambdas on one step were both ``<lambda>``; a negated ``not wf.ok`` printed
``not not wf.ok``; a negated ``a and b`` printed ``not a and b``, which reads as
``(not a) and b``.
"""

from __future__ import annotations

import pytest

from statemachine_orch import Ctx, Workflow, after, mermaid, spec_of, step
from statemachine_orch._spec import negated
from statemachine_orch.diagrams import render
from statemachine_orch.testing import paths

from .flows import DgNegations, DgShipment


def guard_names(workflow: type[Workflow], dest: str) -> dict[str, str | None]:
    spec = spec_of(workflow)
    return {e.source: e.guard_name for e in spec.edges if e.dest == dest and e.is_completion}


def test_two_lambdas_on_one_step_are_each_named_by_their_source() -> None:
    assert {"reserve": "wf.amount > 1000", "review": "wf.express and (not wf.fragile)"} == guard_names(
        DgShipment, "approve"
    )


def test_the_lambda_labels_reach_every_diagram() -> None:
    text = mermaid(DgShipment)
    assert "reserve --> approve: wf.amount > 1000\n" in text
    assert "review --> approve: wf.express and (not wf.fragile)\n" in text
    assert "<lambda>" not in text
    dot = render(DgShipment, "dot").decode()
    assert 'reserve -> approve [label="wf.amount > 1000"]' in dot
    assert "<lambda>" not in dot


def test_a_lambda_holding_a_lambda_is_named_by_the_outer_one() -> None:
    class DgNested(Workflow, version="1"):
        n: int = 0
        items: tuple[int, ...] = ()

        @step(initial=True)
        def first(self, ctx: Ctx) -> None:
            pass

        @after(first)
        @step
        def second(self, ctx: Ctx) -> None:
            pass

        @after(first, when=lambda wf: wf.n > 1)
        @after(second, when=lambda wf: any(map(lambda i: i > wf.n, wf.items)))  # noqa: C417
        @step(final=True)
        def third(self, ctx: Ctx) -> None:
            pass

    names = guard_names(DgNested, "third")
    assert {"first": "wf.n > 1", "second": "any(map(lambda i: i > wf.n, wf.items))"} == names


def test_a_negated_negation_loses_its_not() -> None:
    listed = [str(p) for p in paths(DgNegations)]
    assert "start -[wf.ok]-> compound -[wf.a and wf.b]-> both => completed" in listed
    assert not [p for p in listed if "not not" in p]


def test_a_negated_compound_guard_is_parenthesised() -> None:
    listed = [str(p) for p in paths(DgNegations)]
    assert "start -[wf.ok]-> compound -[not (wf.a and wf.b)]-> done => completed" in listed
    assert not [p for p in listed if "not wf.a and" in p]


@pytest.mark.parametrize(
    ("guard", "expected"),
    [
        ("not wf.ok", "wf.ok"),
        ("not (wf.a and wf.b)", "wf.a and wf.b"),
        ("wf.a and wf.b", "not (wf.a and wf.b)"),
        ("wf.a or wf.b", "not (wf.a or wf.b)"),
        ("wf.x if wf.y else wf.z", "not (wf.x if wf.y else wf.z)"),
        ("wf.amount > 100", "not wf.amount > 100"),
        ("needs_approval", "not needs_approval"),
        ("wf.items", "not wf.items"),
        ("<lambda>", "not <lambda>"),
    ],
)
def test_negated(guard: str, expected: str) -> None:
    assert expected == negated(guard)
