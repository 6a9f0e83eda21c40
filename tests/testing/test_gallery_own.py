"""
Issue 4: a second, larger gallery of modelling bugs, each found by WorkflowMachine with its defaults.

Guards that raise, return non-bools or are not pure; an ``assert`` failing inside a
step; a step calling a service nobody registered; an error route that completes
the instance without undoing what was done; a compensation that always fails; an
invariant that raises; a rejection answered by no edge. And the other side: a
generated 20-step workflow with branches, a loop, a human task and compensations
passes with every edge covered.
"""

from __future__ import annotations

import itertools

import attrs

from statemachine_orch import Ctx, InstanceStatus, Workflow, after, human_task, invariant, step
from statemachine_orch.testing import WorkflowMachine
from statemachine_orch.testing._generate import generated_workflow

from .helpers import find_bug, passes, story


class BasketAverage(Workflow, version="1"):
    """Routes on the average basket, which does not exist for an empty order."""

    total: int
    count: int

    @step(initial=True)
    def price(self, ctx: Ctx) -> None:
        """Add it up."""

    @after(price, when=lambda wf: wf.total / wf.count > 10)
    @step(final=True)
    def premium(self, ctx: Ctx) -> None:
        """Big baskets."""

    @after(price)
    @step(final=True)
    def standard(self, ctx: Ctx) -> None:
        """The rest."""


def test_a_guard_that_raises() -> None:
    """Issue 4: a guard raising for some input is a modelling bug (here: division by a zero count)."""
    err = find_bug(WorkflowMachine(BasketAverage))

    assert ("guard-error", "price") == (err.rule, err.step)
    assert "ZeroDivisionError" in str(err)
    assert "count=0" in str(err)


class LotCounting(Workflow, version="1"):
    """A guard returning a number: 0 and 1 look like booleans until they are not."""

    items: int

    @step(initial=True)
    def count(self, ctx: Ctx) -> None:
        """Count."""

    @after(count, when=lambda wf: wf.items % 3)  # type: ignore[arg-type,return-value]  # pyright: ignore[reportArgumentType]
    @step(final=True)
    def odd_lot(self, ctx: Ctx) -> None:
        """Not a multiple of three."""

    @after(count)
    @step(final=True)
    def full_lot(self, ctx: Ctx) -> None:
        """A multiple of three."""


def test_a_guard_that_returns_a_non_bool() -> None:
    """Issue 4: the engine refuses a guard's 1 or 2 (GuardError); the story shows the value."""
    err = find_bug(WorkflowMachine(LotCounting))

    assert ("guard-error", "count") == (err.rule, err.step)
    assert "not a bool" in str(err)


_coin = itertools.count()


class CoinFlipRouting(Workflow, version="1"):
    """A guard reading something besides the variables: it answers differently each time."""

    order: str

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None:
        """Receive."""

    @after(receive, when=lambda wf: next(_coin) % 2 == 0)
    @step(final=True)
    def fast_lane(self, ctx: Ctx) -> None:
        """Half of them, at random."""

    @after(receive)
    @step(final=True)
    def slow_lane(self, ctx: Ctx) -> None:
        """The others."""


def test_a_guard_that_is_not_pure() -> None:
    """Issue 4: guards must read variables only; asked again on the same variables, this one changes its mind."""
    err = find_bug(WorkflowMachine(CoinFlipRouting))

    assert ("impure-guard", "receive") == (err.rule, err.step)
    assert "a guard is not pure" in str(err)


class ShelfPicking(Workflow, version="1"):
    """A step asserts what nobody checked before it."""

    quantity: int
    picked: int = 0

    @step(initial=True, final=True)
    def pick(self, ctx: Ctx) -> None:
        """Pick the goods."""
        assert self.quantity > 0, f"cannot pick {self.quantity} items"
        self.picked = self.quantity


def test_an_assert_failing_inside_a_step() -> None:
    """Issue 4 (STYLE rule 30): a failing assert in a step is a failure of the test, not a step error to retry."""
    err = find_bug(WorkflowMachine(ShelfPicking))

    assert ("assertion-failed", "pick") == (err.rule, err.step)
    assert "cannot pick 0 items" in str(err)


class MailNotify(Workflow, version="1"):
    """Calls a mail service that the test never registered."""

    email: str

    @step(initial=True, final=True)
    async def send_mail(self, ctx: Ctx) -> None:
        """Send the confirmation."""
        await ctx.call("mailer", "send", to=self.email)


def test_a_step_calling_a_service_nobody_registered() -> None:
    """Issue 4: a missing service would fail every instance the same way; it is a setup error, said plainly."""
    err = find_bug(WorkflowMachine(MailNotify))

    assert ("missing-service", "send_mail") == (err.rule, err.step)
    assert "no service 'mailer' is registered" in str(err)


class CaughtDispatch(Workflow, version="1"):
    """A failed shipment is caught and the instance completes: the charge is never refunded."""

    order: str
    charged: bool = False
    shipped: bool = False

    @step(initial=True)
    def charge(self, ctx: Ctx) -> None:
        """Take the money."""
        self.charged = True

    @charge.compensation
    def refund(self, ctx: Ctx) -> None:
        """Give it back."""
        self.charged = False

    @after(charge)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        """Send the parcel."""
        self.shipped = True

    @after(ship, on_error=Exception)
    @step(final=True)
    def apologise(self, ctx: Ctx) -> None:
        """BUG: catches the failure, so the saga never runs."""

    @invariant
    def paid_for_what_was_shipped(self, status: InstanceStatus) -> bool:
        """At the end, a charge stands only for a shipped parcel."""
        return not status.is_terminal or self.shipped or not self.charged


def test_an_error_route_that_skips_the_saga() -> None:
    """Issue 4: on_error turns a failure into a completion; what was done stays done."""
    err = find_bug(WorkflowMachine(CaughtDispatch))

    assert ("invariant", "apologise") == (err.rule, err.step)
    assert "faults={'ship': ('transient',)}" in story(err)  # ship has no retry: one fault fails it


class DocumentArchive(Workflow, version="1"):
    """The undo deletes a file that the step never wrote."""

    name: str

    @step(initial=True)
    def store(self, ctx: Ctx) -> None:
        """Store the document."""

    @store.compensation
    def delete(self, ctx: Ctx) -> None:
        """BUG: the path is built from a field that does not exist."""
        getattr(self, "path")  # noqa: B009 - the bug: AttributeError on every attempt

    @after(store)
    @step(final=True)
    def index(self, ctx: Ctx) -> None:
        """Index it."""


def test_a_compensation_that_always_fails() -> None:
    """Issue 4: a compensation that fails whatever its retries is found as soon as a later step fails."""
    err = find_bug(WorkflowMachine(DocumentArchive))

    assert ("compensation-failed", "store") == (err.rule, err.step)
    assert "AttributeError" in str(err)


class EmptySurvey(Workflow, version="1"):
    """An invariant that assumes an answer exists."""

    respondent: str
    answers: list[int] = attrs.field(factory=list[int])

    @step(initial=True, final=True)
    def ask(self, ctx: Ctx) -> None:
        """Ask."""

    @invariant
    def first_answer_is_valid(self) -> bool:
        """BUG: indexes an empty list."""
        return self.answers[0] >= 0


def test_an_invariant_that_raises() -> None:
    """Issue 4: an invariant that raises is broken, and the story says what it raised."""
    err = find_bug(WorkflowMachine(EmptySurvey))

    assert "invariant" == err.rule
    assert "raised IndexError" in str(err)


@attrs.frozen
class Verdict:
    """Accept or not."""

    accept: bool


class InsuranceClaim(Workflow, version="1"):
    """Only the accepted branch is modelled: a rejection finds no edge."""

    claimant: str
    accepted: bool = False

    @step(initial=True)
    def file(self, ctx: Ctx) -> None:
        """File the claim."""

    @after(file)
    @human_task(candidate_groups=("adjusters",), form=Verdict)
    def assess(self, ctx: Ctx, form: Verdict) -> None:
        """An adjuster decides."""
        self.accepted = form.accept

    @after(assess, when=lambda wf: wf.accepted)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None:
        """Pay the claim."""


def test_a_form_answer_with_no_edge() -> None:
    """Issue 4: the generated form's other answer reaches the gap; a member of the group gives it."""
    err = find_bug(WorkflowMachine(InsuranceClaim))

    assert ("no-edge-enabled", "assess") == (err.rule, err.step)
    assert "'member-of-adjusters' in ('adjusters',) completes the task at assess with Verdict(accept=False)" in story(
        err
    )


def test_a_larger_correct_workflow_passes_with_every_edge_covered() -> None:
    """Issue 4: 20 generated steps, 4 branches, a loop, a group task and compensations: no false alarm, full coverage."""
    machine = WorkflowMachine(generated_workflow("Twenty", steps=20, branches=4), require_coverage=1.0)

    passes(machine)

    assert 1.0 == machine.coverage.fraction
