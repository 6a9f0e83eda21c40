"""
Issue 11's visible gallery: for each kind of bug the defaults must find, a buggy workflow and its correct twin.

Each :class:`Kind` builds its two machines with ``WorkflowMachine``'s defaults
(plus the services and inputs the workflow itself needs) and says whether a
run's outcome is the bug found, named as the user needs it. :func:`run` plays
one seeded run as a user's test would (hypothesis' default budget, no example
database) and records what it raised and warned. ``test_gallery_kinds.py``
plays a few seeds of each; ``bench/bench_toolkit.py`` plays 20 and prints the
detection rate and the time per kind.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping

import attrs
from hypothesis import settings

from statemachine_orch import (
    Ctx,
    DeadEdgeWarning,
    InstanceStatus,
    Retry,
    Workflow,
    after,
    goto,
    human_task,
    invariant,
    step,
    wait_for,
)
from statemachine_orch.testing import CoverageWarning, InvariantViolation, WorkflowMachine, WorkflowStateMachine


@attrs.frozen
class Outcome:
    """What one seeded run of a machine raised and warned, and how long it took."""

    error: BaseException | None
    warned: tuple[Warning, ...]
    seconds: float

    @property
    def violation(self) -> InvariantViolation | None:
        """The violation the run reported, if any."""
        return self.error if isinstance(self.error, InvariantViolation) else None

    def coverage_warning(self) -> str | None:
        """The text of the coverage warning the run gave, if any."""
        return next((str(w) for w in self.warned if isinstance(w, CoverageWarning)), None)


def run(machine: type[WorkflowStateMachine], seed: int) -> Outcome:
    """Play *machine*'s test once, seeded, with hypothesis' default budget and no example database."""
    setattr(machine, "_hypothesis_internal_use_seed", seed)  # noqa: B010 - what @seed does; read by run_state_machine_as_test
    case = machine.TestCase
    case.settings = settings(case.settings, database=None)
    began = time.perf_counter()
    error: BaseException | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CoverageWarning)
        try:
            case().runTest()
        except (AssertionError, Exception) as exc:
            error = exc
    warned = tuple(w.message for w in caught if isinstance(w.message, Warning))
    return Outcome(error, warned, time.perf_counter() - began)


@attrs.frozen
class Kind:
    """One kind of bug: its buggy workflow's machine, its correct twin's, and what counts as found."""

    number: int
    title: str
    buggy: Callable[[], type[WorkflowStateMachine]]
    twin: Callable[[], type[WorkflowStateMachine]]
    found: Callable[[Outcome], bool]

    def passed(self, outcome: Outcome) -> bool:
        """Whether a run of the twin passed: no error, no coverage warning."""
        return outcome.error is None and outcome.coverage_warning() is None


# ----------------------------------------------------------------------------- 1: a retried step that is not idempotent


class Ledger:
    """A bank's ledger: a debit is applied once per request id; it answers the account's total debits."""

    def __init__(self) -> None:
        self.debited: dict[str, int] = {}
        self.requests: set[str] = set()

    def debit(self, account: str, amount: int, request_id: str) -> int:
        """Debit *account* unless this request id was seen; the total debited."""
        if request_id not in self.requests:
            self.requests.add(request_id)
            self.debited[account] = self.debited.get(account, 0) + amount
        return self.debited.get(account, 0)


def ledger_services() -> Mapping[str, object]:
    """A fresh bank per story."""
    return {"bank": Ledger()}


class DoubleDebit(Workflow, version="1"):
    """Debits an order's account behind a retry, with a new request id per attempt: a lost reply debits twice."""

    amount: int
    debited: int = 0

    @step(initial=True, retry=Retry(attempts=3, initial=1))
    async def debit(self, ctx: Ctx) -> None:
        """BUG: the request id changes with the attempt, so the bank cannot tell a retry from a new debit."""
        self.debited = await ctx.call(
            "bank",
            "debit",
            account=ctx.instance_id,
            amount=abs(self.amount),
            request_id=f"{ctx.instance_id}-{ctx.attempt}",
        )

    @after(debit)
    @step(final=True)
    def receipt(self, ctx: Ctx) -> None:
        """Send the receipt."""

    @invariant
    def debited_once(self) -> bool:
        """The account is never debited more than the amount."""
        return self.debited <= abs(self.amount)


class OnceDebit(Workflow, version="1"):
    """The twin: the request id is the visit's idempotency key, the same for every attempt."""

    amount: int
    debited: int = 0

    @step(initial=True, retry=Retry(attempts=3, initial=1))
    async def debit(self, ctx: Ctx) -> None:
        """Debit once, whatever the retries."""
        self.debited = await ctx.call(
            "bank", "debit", account=ctx.instance_id, amount=abs(self.amount), request_id=ctx.idempotency_key
        )

    @after(debit)
    @step(final=True)
    def receipt(self, ctx: Ctx) -> None:
        """Send the receipt."""

    @invariant
    def debited_once(self) -> bool:
        """The account is never debited more than the amount."""
        return self.debited <= abs(self.amount)


def _found_double_debit(outcome: Outcome) -> bool:
    v = outcome.violation
    return v is not None and (v.rule, v.step, v.workflow) == ("invariant", "debit", "DoubleDebit")


# ----------------------------------------------------------------------------- 3: a dead edge

REVIEW_LIMIT = 1_000
"""Loans above this need a credit officer."""
BOARD_LIMIT = 50_000
"""Loans above this need the board."""

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeadEdgeWarning)  # the bug of this kind: the class says so when it is created

    class LoanRouting(Workflow, version="1"):
        """The wider guard is declared first: the board never sees a loan."""

        amount: int
        decided_by: str = ""

        @step(initial=True)
        def receive(self, ctx: Ctx) -> None:
            """Receive the application."""

        @after(receive, when=lambda wf: wf.amount > REVIEW_LIMIT)
        @step(final=True)
        def officer(self, ctx: Ctx) -> None:
            """A credit officer decides."""
            self.decided_by = "officer"

        @after(receive, when=lambda wf: wf.amount > BOARD_LIMIT)  # BUG: dead, the officer's edge takes them all
        @step(final=True)
        def board(self, ctx: Ctx) -> None:
            """The board decides."""
            self.decided_by = "board"

        @after(receive)
        @step(final=True)
        def automatic(self, ctx: Ctx) -> None:
            """Small loans are approved at once."""
            self.decided_by = "automatic"


class LoanRoutingFixed(Workflow, version="1"):
    """The twin: the narrower guard first."""

    amount: int
    decided_by: str = ""

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None:
        """Receive the application."""

    @after(receive, when=lambda wf: wf.amount > BOARD_LIMIT)
    @step(final=True)
    def board(self, ctx: Ctx) -> None:
        """The board decides."""
        self.decided_by = "board"

    @after(receive, when=lambda wf: wf.amount > REVIEW_LIMIT)
    @step(final=True)
    def officer(self, ctx: Ctx) -> None:
        """A credit officer decides."""
        self.decided_by = "officer"

    @after(receive)
    @step(final=True)
    def automatic(self, ctx: Ctx) -> None:
        """Small loans are approved at once."""
        self.decided_by = "automatic"


def _found_dead_edge(outcome: Outcome) -> bool:
    text = outcome.coverage_warning()
    return (
        outcome.error is None
        and text is not None
        and "receive -> board [when wf.amount > BOARD_LIMIT]  (dead: its instances take receive -> officer" in text
    )


# ----------------------------------------------------------------------------- 6: a long loop, and an endless one


class Repayment(Workflow, version="1"):
    """Pays a fixed amount a month off a debt that bears interest: when the interest eats the payment, it never ends."""

    debt: int
    monthly: int
    rate_percent: int = 1
    months: int = 0

    @step(initial=True)
    def open_account(self, ctx: Ctx) -> None:
        """Take the debt over."""
        self.debt = abs(self.debt)

    @after(open_account)
    @step
    def pay_month(self, ctx: Ctx) -> None:
        """BUG: nothing checks that the payment covers the interest."""
        self.debt = self.debt + self.debt * self.rate_percent // 100 - self.monthly
        self.months += 1

    @goto(pay_month, when=lambda wf: wf.debt > 0)
    @after(pay_month)
    @step
    def statement(self, ctx: Ctx) -> None:
        """Send the month's statement."""

    @after(statement)
    @step(final=True)
    def settled(self, ctx: Ctx) -> None:
        """Close the account."""


class Mortgage(Workflow, version="1"):
    """The twin: 360 monthly instalments, each a share of what is left, so it ends after 360 rounds."""

    principal: int
    term: int = 360
    paid: int = 0
    balance: int = 0

    @step(initial=True)
    def open_loan(self, ctx: Ctx) -> None:
        """Lend the principal."""
        self.balance = abs(self.principal)

    @after(open_loan)
    @step
    def pay_instalment(self, ctx: Ctx) -> None:
        """Pay this month's share of the balance."""
        self.balance -= -(-self.balance // (self.term - self.paid))
        self.paid += 1

    @after(pay_instalment)
    @step
    def book(self, ctx: Ctx) -> None:
        """Book it."""

    @goto(pay_instalment, when=lambda wf: wf.paid < wf.term)
    @after(book)
    @step
    def next_month(self, ctx: Ctx) -> None:
        """Wait for the next month's due date (in the books only)."""

    @after(next_month)
    @step(final=True)
    def close(self, ctx: Ctx) -> None:
        """Release the lien."""

    @invariant
    def never_overpaid(self) -> bool:
        """The balance never goes below zero."""
        return self.balance >= 0


def _found_endless_loop(outcome: Outcome) -> bool:
    v = outcome.violation
    return (
        v is not None
        and (v.rule, v.step, v.workflow) == ("runaway-loop", "statement", "Repayment")
        and "did not end within 2000 transitions" in str(v)
        and "max_transitions=" in str(v)
    )


# ----------------------------------------------------------------------------- 2: a guard gap at a named constant

AUTO_APPROVAL_LIMIT = 2_500
"""Expenses below this, with their receipts, are approved without a manager."""


@attrs.frozen
class Review:
    """A manager's decision."""

    approve: bool


class ExpenseClaim(Workflow, version="1"):
    """BUG: below the limit is automatic, above it the manager's; exactly at the limit, nobody's."""

    amount: int
    receipts: bool
    approved: bool = False

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None:
        """File the claim."""

    @after(submit, when=lambda wf: wf.amount < AUTO_APPROVAL_LIMIT and wf.receipts)
    @step(final=True)
    def auto_approve(self, ctx: Ctx) -> None:
        """Approve at once."""
        self.approved = True

    @after(submit, when=lambda wf: wf.amount > AUTO_APPROVAL_LIMIT or not wf.receipts)
    @human_task(assignee="manager", form=Review, final=True)
    def manager_review(self, ctx: Ctx, form: Review) -> None:
        """The manager decides."""
        self.approved = form.approve


class ExpenseClaimFixed(Workflow, version="1"):
    """The twin: the manager takes everything the automatic approval does not."""

    amount: int
    receipts: bool
    approved: bool = False

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None:
        """File the claim."""

    @after(submit, when=lambda wf: wf.amount < AUTO_APPROVAL_LIMIT and wf.receipts)
    @step(final=True)
    def auto_approve(self, ctx: Ctx) -> None:
        """Approve at once."""
        self.approved = True

    @after(submit, when=lambda wf: wf.amount >= AUTO_APPROVAL_LIMIT or not wf.receipts)
    @human_task(assignee="manager", form=Review, final=True)
    def manager_review(self, ctx: Ctx, form: Review) -> None:
        """The manager decides."""
        self.approved = form.approve


def _found_gap(outcome: Outcome) -> bool:
    v = outcome.violation
    return (
        v is not None
        and (v.rule, v.step, v.workflow) == ("no-edge-enabled", "submit", "ExpenseClaim")
        and "ExpenseClaim(amount=2500, receipts=True" in str(v)
    )


# ----------------------------------------------------------------------------- 4: a leak, blamed on the step that left it


@attrs.frozen
class Confirmation:
    """The organiser's go."""

    go: bool


class EventBooking(Workflow, version="1"):
    """BUG: holding the seats has no compensation, so a failed or cancelled booking keeps them."""

    event: str
    seats_held: int = 0
    venue_booked: bool = False

    @step(initial=True)
    def hold_seats(self, ctx: Ctx) -> None:
        """Hold two seats."""
        self.seats_held = 2

    @after(hold_seats)
    @step(retry=Retry(attempts=2, initial=1))
    def book_venue(self, ctx: Ctx) -> None:
        """Book the venue."""
        self.venue_booked = True

    @book_venue.compensation
    def cancel_venue(self, ctx: Ctx) -> None:
        """Cancel the venue."""
        self.venue_booked = False

    @after(book_venue)
    @human_task(assignee="organiser", form=Confirmation)
    def confirm(self, ctx: Ctx, form: Confirmation) -> None:
        """The organiser confirms."""

    @after(confirm)
    @step(final=True)
    def send_tickets(self, ctx: Ctx) -> None:
        """Send the tickets."""

    @invariant
    def nothing_held_once_undone(self, status: InstanceStatus, compensated: bool) -> bool:
        """After a failure or a cancellation that compensated, nothing is held (an abandon keeps what it had)."""
        undone = compensated and status in (InstanceStatus.FAILED, InstanceStatus.CANCELLED)
        return not undone or (self.seats_held == 0 and not self.venue_booked)


class EventBookingFixed(Workflow, version="1"):
    """The twin: the seats are released when the booking is undone."""

    event: str
    seats_held: int = 0
    venue_booked: bool = False

    @step(initial=True)
    def hold_seats(self, ctx: Ctx) -> None:
        """Hold two seats."""
        self.seats_held = 2

    @hold_seats.compensation
    def release_seats(self, ctx: Ctx) -> None:
        """Release them."""
        self.seats_held = 0

    @after(hold_seats)
    @step(retry=Retry(attempts=2, initial=1))
    def book_venue(self, ctx: Ctx) -> None:
        """Book the venue."""
        self.venue_booked = True

    @book_venue.compensation
    def cancel_venue(self, ctx: Ctx) -> None:
        """Cancel the venue."""
        self.venue_booked = False

    @after(book_venue)
    @human_task(assignee="organiser", form=Confirmation)
    def confirm(self, ctx: Ctx, form: Confirmation) -> None:
        """The organiser confirms."""

    @after(confirm)
    @step(final=True)
    def send_tickets(self, ctx: Ctx) -> None:
        """Send the tickets."""

    @invariant
    def nothing_held_once_undone(self, status: InstanceStatus, compensated: bool) -> bool:
        """After a failure or a cancellation that compensated, nothing is held (an abandon keeps what it had)."""
        undone = compensated and status in (InstanceStatus.FAILED, InstanceStatus.CANCELLED)
        return not undone or (self.seats_held == 0 and not self.venue_booked)


def _found_leak(outcome: Outcome) -> bool:
    v = outcome.violation
    return (
        v is not None
        and (v.rule, v.step, v.workflow) == ("invariant", "hold_seats", "EventBooking")
        and "completed steps without a compensation, and what each changed: hold_seats (seats_held)" in str(v)
    )


# ----------------------------------------------------------------------------- 5: a short story


@attrs.frozen
class Triage:
    """The dispatcher's rating."""

    severity: int


@attrs.frozen
class Repair:
    """The engineer's report."""

    hours: int


BILL_CAP = 5_000
"""No ticket is ever billed more than this."""


class Ticket(Workflow, version="1"):
    """BUG: the bill multiplies the hours by the severity with no cap; it takes a triage and a repair to see it."""

    title: str
    severity: int = 0
    hours: int = 0
    billed: int = 0

    @step(initial=True)
    def open_ticket(self, ctx: Ctx) -> None:
        """Open it."""

    @after(open_ticket)
    @human_task(assignee="dispatcher", form=Triage)
    def triage(self, ctx: Ctx, form: Triage) -> None:
        """Rate it."""
        self.severity = min(max(form.severity, 1), 5)

    @after(triage)
    @human_task(candidate_groups=("engineers",), form=Repair)
    def repair(self, ctx: Ctx, form: Repair) -> None:
        """Fix it."""
        self.hours = max(form.hours, 0)

    @after(repair)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None:
        """Bill it."""
        self.billed = self.hours * 10 * self.severity

    @invariant
    def within_cap(self) -> bool:
        """Never billed above the cap."""
        return self.billed <= BILL_CAP


class TicketFixed(Workflow, version="1"):
    """The twin: the bill is capped."""

    title: str
    severity: int = 0
    hours: int = 0
    billed: int = 0

    @step(initial=True)
    def open_ticket(self, ctx: Ctx) -> None:
        """Open it."""

    @after(open_ticket)
    @human_task(assignee="dispatcher", form=Triage)
    def triage(self, ctx: Ctx, form: Triage) -> None:
        """Rate it."""
        self.severity = min(max(form.severity, 1), 5)

    @after(triage)
    @human_task(candidate_groups=("engineers",), form=Repair)
    def repair(self, ctx: Ctx, form: Repair) -> None:
        """Fix it."""
        self.hours = max(form.hours, 0)

    @after(repair)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None:
        """Bill it, up to the cap."""
        self.billed = min(self.hours * 10 * self.severity, BILL_CAP)

    @invariant
    def within_cap(self) -> bool:
        """Never billed above the cap."""
        return self.billed <= BILL_CAP


def _found_short_story(outcome: Outcome) -> bool:
    v = outcome.violation
    if v is None or (v.rule, v.step, v.workflow) != ("invariant", "bill", "Ticket"):
        return False
    # Exactly the three actions the bug needs, and the printed test replays it.
    if len(v.replay) != 3:
        return False
    try:
        WorkflowMachine(Ticket).replay(*v.replay)
    except InvariantViolation as again:
        return (again.rule, again.step) == (v.rule, v.step)
    return False


# ----------------------------------------------------------------------------- 7: a message before the wait


@attrs.frozen
class Accepted:
    """The customer accepts a quote, by its number."""

    quote_no: int


class QuoteAcceptance(Workflow, version="1"):
    """BUG: books whatever acceptance comes first, even one that arrived early, for another quote."""

    customer: str
    quote_no: int = 0
    accepted_quote: int = 0
    booked: bool = False

    @step(initial=True)
    def send_quote(self, ctx: Ctx) -> None:
        """Send quote number 1."""
        self.quote_no += 1

    @after(send_quote)
    @wait_for(Accepted)
    def await_acceptance(self, ctx: Ctx, message: Accepted) -> None:
        """Take the acceptance."""
        self.accepted_quote = message.quote_no

    @after(await_acceptance)
    @step(final=True)
    def book(self, ctx: Ctx) -> None:
        """Book the order."""
        self.booked = True

    @invariant
    def booked_what_was_quoted(self) -> bool:
        """An order is booked on the acceptance of the quote sent."""
        return not self.booked or self.accepted_quote == self.quote_no


class QuoteAcceptanceFixed(Workflow, version="1"):
    """The twin: an acceptance of another quote is set aside, and the wait goes on."""

    customer: str
    quote_no: int = 0
    accepted_quote: int = 0
    booked: bool = False

    @step(initial=True)
    def send_quote(self, ctx: Ctx) -> None:
        """Send quote number 1."""
        self.quote_no += 1

    @after(send_quote)
    @wait_for(Accepted)
    def await_acceptance(self, ctx: Ctx, message: Accepted) -> None:
        """Take the acceptance."""
        self.accepted_quote = message.quote_no

    @goto(await_acceptance, when=lambda wf: wf.accepted_quote != wf.quote_no)
    @after(await_acceptance)
    @step
    def check(self, ctx: Ctx) -> None:
        """Is it for the quote sent?"""

    @after(check)
    @step(final=True)
    def book(self, ctx: Ctx) -> None:
        """Book the order."""
        self.booked = True

    @invariant
    def booked_what_was_quoted(self) -> bool:
        """An order is booked on the acceptance of the quote sent."""
        return not self.booked or self.accepted_quote == self.quote_no


def _found_early_message(outcome: Outcome) -> bool:
    v = outcome.violation
    return (
        v is not None
        and (v.rule, v.workflow) == ("invariant", "QuoteAcceptance")
        and v.step
        in {
            "await_acceptance",
            "book",
        }
    )


KINDS: list[Kind] = [
    Kind(
        1,
        "a retry on a step that is not idempotent",
        lambda: WorkflowMachine(DoubleDebit, services=ledger_services),
        lambda: WorkflowMachine(OnceDebit, services=ledger_services),
        _found_double_debit,
    ),
    Kind(
        3,
        "a dead edge",
        lambda: WorkflowMachine(LoanRouting),
        lambda: WorkflowMachine(LoanRoutingFixed),
        _found_dead_edge,
    ),
    Kind(
        2,
        "a guard gap at a named constant",
        lambda: WorkflowMachine(ExpenseClaim),
        lambda: WorkflowMachine(ExpenseClaimFixed),
        _found_gap,
    ),
    Kind(
        4,
        "a leak blamed on the step that left it",
        lambda: WorkflowMachine(EventBooking),
        lambda: WorkflowMachine(EventBookingFixed),
        _found_leak,
    ),
    Kind(
        5,
        "a short story, as a test",
        lambda: WorkflowMachine(Ticket),
        lambda: WorkflowMachine(TicketFixed),
        _found_short_story,
    ),
    Kind(
        7,
        "a message before the wait",
        lambda: WorkflowMachine(QuoteAcceptance),
        lambda: WorkflowMachine(QuoteAcceptanceFixed),
        _found_early_message,
    ),
    Kind(
        6,
        "a correct long loop called endless",
        lambda: WorkflowMachine(Repayment),
        lambda: WorkflowMachine(Mortgage),
        _found_endless_loop,
    ),
]
"""The kinds, in the order of issue 11."""
