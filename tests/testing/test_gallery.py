"""
Issue 4's gallery of deliberately buggy workflows: WorkflowMachine finds each with its defaults.

Each test runs the generated machine from scratch (no example database) within the
default hypothesis budget and checks that the shrunk counterexample names the step
at fault. Two entries of the issue's gallery are not here: a join that can never
fire, in ``test_gallery_forks.py`` with the other forked workflows, and the timeout
half of "an invariant broken after a form answer and a timeout", which lives in
``test_gallery_timers.py``.
"""

from __future__ import annotations

import attrs

from statemachine_orch import (
    Ctx,
    InstanceStatus,
    NonRetryableError,
    Retry,
    Workflow,
    after,
    goto,
    human_task,
    invariant,
    step,
)
from statemachine_orch.testing import WorkflowMachine

from .helpers import find_bug, story


class WeighStation(Workflow, version="1"):
    """Letters under 10 kg, freight over 20 kg: the guard gap leaves 10-20 kg with no edge."""

    weight: int

    @step(initial=True)
    def weigh(self, ctx: Ctx) -> None:
        """Weigh the parcel."""

    @after(weigh, when=lambda wf: wf.weight < 10)
    @step(final=True)
    def send_letter(self, ctx: Ctx) -> None:
        """Post it."""

    @after(weigh, when=lambda wf: wf.weight > 20)
    @step(final=True)
    def send_freight(self, ctx: Ctx) -> None:
        """Truck it."""


def test_guard_gap_leaves_some_input_with_no_edge() -> None:
    """Issue 4: a guard gap is a failure even though the engine fails the instance cleanly."""
    err = find_bug(WorkflowMachine(WeighStation))

    assert ("no-edge-enabled", "weigh") == (err.rule, err.step)
    assert "weight < 10: False" in str(err)
    assert "weight > 20: False" in str(err)
    assert "start WeighStation(weight=" in story(err)


class CardCheckout(Workflow, version="1"):
    """The refund is registered as the undo of the stock reservation instead of the charge."""

    order_id: str
    reserved: bool = False
    charged: int = 0
    refunded: int = 0

    @step(initial=True)
    def reserve_stock(self, ctx: Ctx) -> None:
        """Put the goods aside."""
        self.reserved = True

    @reserve_stock.compensation  # BUG: this undoes charge_card
    def refund_card(self, ctx: Ctx) -> None:
        """Give the money back."""
        self.refunded += 1

    @after(reserve_stock)
    @step
    def charge_card(self, ctx: Ctx) -> None:
        """Take the money."""
        self.charged += 1

    @after(charge_card)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        """Send the goods."""

    @invariant
    def never_refund_more_than_charged(self) -> bool:
        """Money only goes back after it came in."""
        return self.refunded <= self.charged


def test_compensation_registered_on_the_wrong_step() -> None:
    """Issue 4: the wrong undo runs when the charge fails, and the workflow's @invariant says so."""
    err = find_bug(WorkflowMachine(CardCheckout))

    assert ("invariant", "refund_card") == (err.rule, err.step)
    assert "refund_card (undoing reserve_stock)" in str(err)
    assert "never_refund_more_than_charged" in str(err)
    assert "charge_card" in story(err)


class ProgressPoller(Workflow, version="1"):
    """Polls until the target is reached: with a step of 0 (or less) it never is."""

    target: int
    increment: int
    polled: int = 0

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None:
        """Reset the counter."""
        self.polled = 0

    @after(begin)
    @step
    def poll(self, ctx: Ctx) -> None:
        """Make progress."""
        self.polled += self.increment

    @goto(poll, when=lambda wf: wf.polled < wf.target)
    @after(poll)
    @step
    def check(self, ctx: Ctx) -> None:
        """Look at the counter."""

    @after(check)
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        """Finished."""


def test_loop_with_no_exit_for_some_inputs() -> None:
    """Issue 4: an instance making more transitions than the bound without a wait is a loop with no exit."""
    err = find_bug(WorkflowMachine(ProgressPoller))

    assert ("runaway-loop", "check") == (err.rule, err.step)
    assert "check -> poll [goto, when wf.polled < wf.target]" in str(err)


@attrs.frozen
class Quote:
    """What sales agreed with the customer."""

    discount: int


class DiscountQuote(Workflow, version="1"):
    """Sales may grant any discount; above 100 percent the price goes negative."""

    customer: str
    price: int = 100

    @step(initial=True)
    def propose(self, ctx: Ctx) -> None:
        """Offer the list price."""

    @after(propose)
    @human_task(assignee="sales", form=Quote)
    def negotiate(self, ctx: Ctx, form: Quote) -> None:
        """Apply the agreed discount."""
        self.price = self.price * (100 - form.discount) // 100

    @after(negotiate)
    @step(final=True)
    def invoice(self, ctx: Ctx) -> None:
        """Bill it."""

    @invariant
    def price_is_not_negative(self) -> bool:
        """We never pay customers to buy."""
        return self.price >= 0


def test_invariant_broken_only_after_a_particular_form_answer() -> None:
    """Issue 4: generated forms reach the answer that breaks the invariant (the timeout half: see test_gallery_timers)."""
    err = find_bug(WorkflowMachine(DiscountQuote))

    assert ("invariant", "negotiate") == (err.rule, err.step)
    assert "price_is_not_negative" in str(err)
    assert "completes the task at negotiate with Quote(discount=" in story(err)


class HoldExpired(NonRetryableError):
    """The airline no longer knows the hold."""


class SeatHold(Workflow, version="1"):
    """Releasing the seat works on the first attempt only: a retry finds the hold gone."""

    passenger: str
    paid: bool = False

    @step(initial=True)
    def hold_seat(self, ctx: Ctx) -> None:
        """Hold a seat."""

    @hold_seat.compensation(retry=Retry(attempts=3, initial=0.5))
    def release_seat(self, ctx: Ctx) -> None:
        """Release it (BUG: the first attempt consumed the hold token even though it failed)."""
        if ctx.attempt == 2:
            msg = "hold token already used"
            raise HoldExpired(msg)

    @after(hold_seat)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None:
        """Take the payment."""
        self.paid = True


def test_compensation_that_fails_only_on_the_second_attempt() -> None:
    """Issue 4: a compensation must absorb the transient faults its retry policy is for."""
    err = find_bug(WorkflowMachine(SeatHold))

    assert ("compensation-failed", "hold_seat") == (err.rule, err.step)
    assert "compensation release_seat of hold_seat failed for good on attempt 2" in str(err)
    assert "'release_seat': ('transient',)" in story(err)
    assert InstanceStatus.COMPENSATION_FAILED.value in str(err)
