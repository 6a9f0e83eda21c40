"""
Issue 4's gallery, the parts that need time and messages: escalation timeouts and signals.

WorkflowMachine's clock does not jump by itself to a waiting instance's timer: the
story decides when time passes (action ``FireTimers``), so a task can be completed
before its escalation or after it. Retry backoffs are still jumped over at once.
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from statemachine_orch import Ctx, InstanceStatus, Workflow, after, human_task, invariant, step, timer, wait_for
from statemachine_orch.testing import WorkflowMachine

from .helpers import find_bug, passes, story


@attrs.frozen
class Decision:
    """A credit decision."""

    approve: bool


class CreditLine(Workflow, version="1"):
    """The analyst approves within the limit; after two days the director decides, and skips the check."""

    amount: int
    limit: int = 1000
    approved: bool = False

    @step(initial=True)
    def apply(self, ctx: Ctx) -> None:
        """Receive the application."""

    @after(apply)
    @human_task(assignee="analyst", form=Decision)
    def analyst_review(self, ctx: Ctx, form: Decision) -> None:
        """The analyst approves only within the limit."""
        self.approved = form.approve and self.amount <= self.limit

    @after(analyst_review, timeout=timedelta(days=2))
    @human_task(assignee="director", form=Decision)
    def director_review(self, ctx: Ctx, form: Decision) -> None:
        """BUG: the escalation path forgets the limit."""
        self.approved = form.approve

    @after(analyst_review)
    @after(director_review)
    @step(final=True)
    def disburse(self, ctx: Ctx) -> None:
        """Pay out (or close the rejected application)."""

    @invariant
    def approved_within_limit(self) -> bool:
        """Nothing above the limit is ever approved."""
        return not self.approved or self.amount <= self.limit


def test_invariant_broken_only_after_a_timeout_and_a_particular_form_answer() -> None:
    """Issue 4: time passes in the story; the director's approval after the escalation breaks the invariant."""
    err = find_bug(WorkflowMachine(CreditLine))

    assert ("invariant", "director_review") == (err.rule, err.step)
    told = story(err)
    assert "clock +172800s" in told
    assert "'director' completes the task at director_review with Decision(approve=True)" in told
    assert told.index("clock +172800s") < told.index("completes the task at director_review")


@attrs.frozen
class Payment:
    """Money received for an invoice."""

    cents: int


class OverpaidInvoice(Workflow, version="1"):
    """Waits for the payment; a payment larger than the invoice is booked as it is."""

    due_cents: int
    paid_cents: int = 0

    @step(initial=True)
    def send(self, ctx: Ctx) -> None:
        """Send the invoice."""

    @after(send)
    @wait_for(Payment)
    def receive(self, ctx: Ctx, message: Payment) -> None:
        """BUG: an overpayment is booked instead of refunded."""
        self.paid_cents += abs(message.cents)

    @after(receive)
    @step(final=True)
    def close(self, ctx: Ctx) -> None:
        """Close the invoice."""

    @invariant
    def never_paid_more_than_due(self) -> bool:
        """Overpayments are refunded, never kept."""
        return self.paid_cents <= max(self.due_cents, 0)


def test_a_signal_that_breaks_an_invariant_is_found() -> None:
    """Issue 4: generated messages are delivered to waiting instances."""
    err = find_bug(WorkflowMachine(OverpaidInvoice))

    assert ("invariant", "receive") == (err.rule, err.step)
    assert "signal Payment(cents=" in story(err)


class DailyReminder(Workflow, version="1"):
    """Waits a day, then a human acknowledges; nothing is wrong with it."""

    note: str
    reminded: bool = False
    acknowledged: bool = False

    @step(initial=True)
    def schedule(self, ctx: Ctx) -> None:
        """Plan the reminder."""

    @after(schedule)
    @timer(timedelta(days=1))
    def remind(self, ctx: Ctx) -> None:
        """Send it."""
        self.reminded = True

    @after(remind)
    @human_task(candidate_groups=("staff",), form=Decision, final=True)
    def acknowledge(self, ctx: Ctx, form: Decision) -> None:
        """Someone on staff confirms."""
        self.acknowledged = True

    @invariant
    def acknowledged_after_reminder(self, status: InstanceStatus) -> bool:
        """No acknowledgement before the reminder; completion means acknowledged."""
        return (self.reminded or not self.acknowledged) and (
            status is not InstanceStatus.COMPLETED or self.acknowledged
        )


def test_timers_and_group_tasks_pass_with_full_coverage() -> None:
    """Issue 4: a correct workflow with a timer step and a candidate-group task passes, every edge taken."""
    machine = WorkflowMachine(DailyReminder, require_coverage=1.0)

    passes(machine)

    assert 1.0 == machine.coverage.fraction
