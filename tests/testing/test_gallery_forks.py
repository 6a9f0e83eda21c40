"""
Issue 5's gallery for forks: WorkflowMachine runs forked instances and finds their bugs with its defaults.

Stories with forks have several open tasks per instance (``Complete`` picks the
step, so the order tasks of different branches are completed is explored),
timers in branches, faults in branch steps (a failing branch cancels the others,
so which branch fails first matters), and cancellations mid-fork. The built-in
checks hold for them: the saga rule over the global completion order, the
history check (fork, branch and join events follow the spec), stuck detection,
and coverage of fork edges and joins.
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from statemachine_orch import Ctx, InstanceStatus, Workflow, after, human_task, invariant, step, timer
from statemachine_orch.testing import WorkflowMachine

from .helpers import find_bug, passes, story


class LoanDesk(Workflow, version="1"):
    """Identity and credit are checked in parallel; a score from 500 to 599 has nowhere to go."""

    score: int

    @step(initial=True, fork=True)
    def intake(self, ctx: Ctx) -> None:
        """Open the file."""

    @after(intake)
    @step
    def check_identity(self, ctx: Ctx) -> None:
        """Who is it."""

    @after(intake)
    @step
    def score_credit(self, ctx: Ctx) -> None:
        """How good a borrower."""

    @after(score_credit, when=lambda wf: wf.score >= 600)
    @step
    def approve_credit(self, ctx: Ctx) -> None:
        """Good enough."""

    @after(score_credit, when=lambda wf: wf.score < 500)
    @step
    def refer_credit(self, ctx: Ctx) -> None:
        """A human looks at it."""

    @after(check_identity, approve_credit, refer_credit)
    @step(final=True)
    def decide(self, ctx: Ctx) -> None:
        """Both checks are in."""


def test_a_join_that_can_never_fire() -> None:
    """Issue 4/5: a guard gap inside a branch keeps the branch from its join: the join can never fire."""
    err = find_bug(WorkflowMachine(LoanDesk))

    assert ("join-never-fires", "score_credit") == (err.rule, err.step)
    assert "never reaches its join decide: a join that can never fire" in str(err)
    assert "score >= 600: False" in str(err)
    assert "start LoanDesk(score=5" in story(err)


class HotelStay(Workflow, version="1"):
    """The deposit's refund is registered on the room hold, in one branch, while a taxi is booked in another."""

    guest: str
    charged: int = 0
    refunded: int = 0

    @step(initial=True, fork=True)
    def arrange(self, ctx: Ctx) -> None:
        """Two things at once."""

    @after(arrange)
    @step
    def hold_room(self, ctx: Ctx) -> None:
        """Put a room aside."""

    @hold_room.compensation  # BUG: this undoes take_deposit
    def refund_deposit(self, ctx: Ctx) -> None:
        """Give the deposit back."""
        self.refunded += 1

    @after(hold_room)
    @step
    def take_deposit(self, ctx: Ctx) -> None:
        """Charge the deposit."""
        self.charged += 1

    @after(arrange)
    @step
    def book_taxi(self, ctx: Ctx) -> None:
        """A taxi from the airport."""

    @after(take_deposit, book_taxi)
    @step(final=True)
    def confirm(self, ctx: Ctx) -> None:
        """Tell the guest."""

    @invariant
    def never_refund_more_than_charged(self) -> bool:
        """Money only goes back after it came in."""
        return self.refunded <= self.charged


def test_a_compensation_on_the_wrong_step_inside_a_branch() -> None:
    """Issue 5: a failure in either branch runs the wrong undo of the room hold, and the @invariant says so."""
    err = find_bug(WorkflowMachine(HotelStay))

    assert ("invariant", "refund_deposit") == (err.rule, err.step)
    assert "refund_deposit (undoing hold_room)" in str(err)
    assert "never_refund_more_than_charged" in str(err)


@attrs.frozen
class Approval:
    """A yes or no."""

    ok: bool


class OfficeMove(Workflow, version="1"):
    """A correct forked workflow: two people sign off in parallel, a timer waits, an optional branch compensates."""

    movers: bool
    signed: int = 0
    moved: int = 0
    unmoved: int = 0
    cooled: bool = False

    @step(initial=True, fork=True)
    def plan_move(self, ctx: Ctx) -> None:
        """Split the work."""

    @after(plan_move)
    @human_task(assignee="facilities", form=Approval)
    def facilities_sign(self, ctx: Ctx, form: Approval) -> None:
        """Facilities agree."""
        self.signed += 1

    @after(plan_move)
    @human_task(candidate_groups=("finance",), form=Approval)
    def finance_sign(self, ctx: Ctx, form: Approval) -> None:
        """Finance agrees."""
        self.signed += 1

    @after(plan_move)
    @timer(timedelta(hours=4))
    def cool_down(self, ctx: Ctx) -> None:
        """The old office must be empty for four hours."""
        self.cooled = True

    @after(plan_move, when=lambda wf: wf.movers)
    @step
    def hire_movers(self, ctx: Ctx) -> None:
        """Only for big moves."""
        self.moved += 1

    @hire_movers.compensation
    def release_movers(self, ctx: Ctx) -> None:
        """Send them home."""
        self.unmoved += 1

    @after(facilities_sign, finance_sign, cool_down, hire_movers)
    @step(final=True)
    def move_in(self, ctx: Ctx) -> None:
        """Everything is ready."""

    @invariant
    def done_means_signed_and_cooled(self, status: InstanceStatus) -> bool:
        """Completion needs both signatures and the cool-down; movers are released at most once each."""
        complete = status is not InstanceStatus.COMPLETED or (self.signed == 2 and self.cooled)
        return complete and self.unmoved <= self.moved


def test_a_correct_forked_workflow_passes_with_every_fork_edge_and_join_covered() -> None:
    """Issue 5: several open tasks per instance, a timer in a branch, faults and cancellations mid-fork: all hold."""
    machine = WorkflowMachine(OfficeMove, require_coverage=1.0)

    passes(machine)

    assert 1.0 == machine.coverage.fraction
    assert not machine.coverage.missing_outcomes()
