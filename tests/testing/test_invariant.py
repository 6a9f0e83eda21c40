"""
Issue 4: ``@invariant`` marks a workflow method that must hold after every transition.

The decorator only marks; the compiler collects the marks into
``WorkflowSpec.invariants`` (consumers never re-read the class body), and
``WorkflowMachine`` checks them after every transition, status change, task and
compensation. An invariant may take the instance's status as a second argument.
"""

# pyright: reportUnusedClass=false
# Classes defined inside pytest.raises exist only to be rejected.

from __future__ import annotations

from typing import Any

import pytest

from statemachine_orch import (
    Ctx,
    InstanceStatus,
    Workflow,
    WorkflowDefinitionError,
    after,
    invariant,
    spec_of,
    step,
)
from statemachine_orch._invariant import InvariantSpec
from statemachine_orch.testing import WorkflowMachine

from .helpers import find_bug, passes


class BalancedLedger(Workflow, version="1"):
    """Two invariants, one of them reading the status."""

    debit: int = 0
    credit: int = 0

    @step(initial=True, final=True)
    def post(self, ctx: Ctx) -> None:
        """Post both sides."""
        self.debit += 1
        self.credit += 1

    @invariant
    def balanced(self) -> bool:
        """Both sides agree."""
        return self.debit == self.credit

    @invariant
    def posted_when_done(self, status: InstanceStatus) -> bool:
        """A completed ledger has entries."""
        return status is not InstanceStatus.COMPLETED or self.debit > 0

    def helper(self) -> bool:
        """Not an invariant."""
        return True


def test_invariants_are_compiled_into_the_spec_in_declaration_order() -> None:
    """Issue 4: the marks are collected once, with whether each takes the status."""
    assert [("balanced", False), ("posted_when_done", True)] == [
        (i.name, i.takes_status) for i in spec_of(BalancedLedger).invariants
    ]


def test_the_decorator_returns_the_method_unchanged() -> None:
    """Issue 4: an invariant stays a plain method that code may call."""
    assert BalancedLedger().balanced() is True


def test_only_true_counts_as_holding() -> None:
    """Issue 4: like guards, invariants must return a real bool; 1 does not hold."""

    def one(_wf: object) -> Any:
        return 1

    def yes(_wf: object, _status: InstanceStatus) -> bool:
        return True

    assert InvariantSpec("one", one, takes_status=False).holds(object(), InstanceStatus.RUNNING) is False
    assert InvariantSpec("yes", yes, takes_status=True).holds(object(), InstanceStatus.RUNNING) is True


class AuditedLedger(BalancedLedger, version="1"):
    """Inherits both invariants and overrides one without the mark."""

    def balanced(self) -> bool:
        """No longer an invariant here."""
        return True


def test_subclasses_inherit_invariants_and_may_drop_one_by_overriding() -> None:
    """Issue 4: invariants follow attribute lookup: an unmarked override hides the base's."""
    assert ["posted_when_done"] == [i.name for i in spec_of(AuditedLedger).invariants]


def test_an_invariant_on_a_step_is_refused_at_decoration_time() -> None:
    """Issue 4: an impossible combination fails where it is written, naming the rule."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Wrong(Workflow, version="1"):
            @invariant  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]
            @step(initial=True, final=True)
            def only(self, ctx: Ctx) -> None: ...

    [problem] = err.value.problems
    assert "bad-invariant" == problem.rule
    assert "applied to a step or compensation" in problem.message


def test_an_invariant_with_the_wrong_signature_is_refused() -> None:
    """Issue 4 (and 11: the third form): an invariant takes (self), (self, status) or (self, status, compensated)."""
    with pytest.raises(
        WorkflowDefinitionError,
        match=r"\(self\), \(self, status\) or \(self, status, compensated\), not \(self, a, b, c\)",
    ):

        class Wrong(Workflow, version="1"):
            @invariant  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
            def four(self, a: int, b: int, c: int) -> bool:
                return True


class AccountTransfer(Workflow, version="1"):
    """Money leaves one account before it reaches the other: in between, the books do not balance."""

    amount: int
    source: int = 100
    target: int = 0

    @step(initial=True)
    def withdraw(self, ctx: Ctx) -> None:
        """Take it out."""
        self.source -= abs(self.amount)

    @after(withdraw)
    @step(final=True)
    def deposit(self, ctx: Ctx) -> None:
        """Put it in."""
        self.target += abs(self.amount)

    @invariant
    def money_is_conserved(self) -> bool:
        """The total never changes (BUG: not true between the two steps)."""
        return self.source + self.target == 100


def test_invariants_are_checked_after_every_transition_not_only_at_rest() -> None:
    """Issue 4: the books balance at the end, but not after the first step; the story names it."""
    err = find_bug(WorkflowMachine(AccountTransfer))

    assert ("invariant", "withdraw") == (err.rule, err.step)
    assert "transition    withdraw -> deposit" in str(err)
    assert "AccountTransfer(amount=1, source=99, target=0)" in str(err)


class HeavyShipment(Workflow, version="1"):
    """A completed shipment was shipped; a failed one may not have been."""

    heavy: bool
    shipped: bool = False

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None:
        """Pack."""

    @after(pack, when=lambda wf: not wf.heavy)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        """Ship."""
        self.shipped = True

    @after(pack)
    @step(final=True)
    def store(self, ctx: Ctx) -> None:
        """Heavy goods wait in the warehouse (BUG: the instance still completes)."""

    @invariant
    def completed_means_shipped(self, status: InstanceStatus) -> bool:
        """What completes was shipped."""
        return status is not InstanceStatus.COMPLETED or self.shipped


def test_an_invariant_sees_the_status() -> None:
    """Issue 4: an invariant may depend on whether the instance is running, waiting or ended."""
    err = find_bug(WorkflowMachine(HeavyShipment))

    assert ("invariant", "store") == (err.rule, err.step)
    assert "status completed" in str(err)
    assert "HeavyShipment(heavy=True" in str(err)


def test_a_workflow_whose_invariants_hold_passes() -> None:
    """Issue 4: no false alarm on the ledger, faults and all."""
    passes(WorkflowMachine(BalancedLedger, require_coverage=1.0))
