"""
Issue 5: ``paths()`` through forks: each branch with its own sub-path, then on from the join.

A path through a fork lists every branch the fork starts (inclusive forks: one
path per combination of guard outcomes); the joined paths combine the branches'
sub-paths; a failure or cancellation inside a branch ends the path there, the
other branches cut short, their compensations listed as "maybe".
"""

from __future__ import annotations

import time
from collections import Counter

import attrs
import pytest

from statemachine_orch import Ctx, Workflow, after, human_task, step
from statemachine_orch.testing import Branch, Ending, ForkVisit, Path, TooManyPaths, paths
from statemachine_orch.testing._generate import generated_workflow


@attrs.frozen
class RoomChoice:
    """Which room the guest took."""

    ok: bool


class TripBooking(Workflow, version="1"):
    """A flight (two steps) and, for guests who want one, a hotel room picked by a clerk, in parallel."""

    hotel: bool

    @step(initial=True, fork=True)
    def plan(self, ctx: Ctx) -> None:
        """Split the trip."""

    @after(plan)
    @step
    def book_flight(self, ctx: Ctx) -> None:
        """Book the flight."""

    @book_flight.compensation
    def cancel_flight(self, ctx: Ctx) -> None:
        """Cancel it."""

    @after(book_flight)
    @step
    def pick_seat(self, ctx: Ctx) -> None:
        """Pick a seat."""

    @after(plan, when=lambda wf: wf.hotel)
    @human_task(assignee="clerk", form=RoomChoice)
    def book_room(self, ctx: Ctx, form: RoomChoice) -> None:
        """The clerk books a room."""

    @book_room.compensation
    def cancel_room(self, ctx: Ctx) -> None:
        """Cancel it."""

    @after(pick_seat, book_room)
    @step
    def pay(self, ctx: Ctx) -> None:
        """Pay for everything."""

    @after(pay)
    @step(final=True)
    def confirm(self, ctx: Ctx) -> None:
        """Tell the guest."""


def test_a_fork_prints_its_branches_and_goes_on_after_the_join() -> None:
    """Issue 5: every path through an inclusive fork, branch failures and cancellations included."""
    expected = [
        "plan -> { book_flight -> pick_seat | [wf.hotel] book_room } -> pay -> confirm => completed",
        "plan -> { book_flight -> pick_seat | [wf.hotel] book_room } -> pay -> confirm => fails, undo cancel_room, cancel_flight => failed",
        "plan -> { book_flight -> pick_seat | [wf.hotel] book_room } -> pay => fails, undo cancel_room, cancel_flight => failed",
        "plan -> { book_flight -> pick_seat => fails | [wf.hotel] book_room ... }, undo cancel_flight (maybe cancel_room) => failed",
        "plan -> { book_flight => fails | [wf.hotel] book_room ... }, maybe undo cancel_room => failed",
        "plan -> { book_flight ... | [wf.hotel] book_room => fails }, maybe undo cancel_flight => failed",
        "plan -> { book_flight ... | [wf.hotel] book_room => cancel }, maybe undo cancel_flight => cancelled",
        "plan -> { book_flight -> pick_seat | [not wf.hotel] book_room skipped } -> pay -> confirm => completed",
        "plan -> { book_flight -> pick_seat | [not wf.hotel] book_room skipped } -> pay -> confirm => fails, undo cancel_flight => failed",
        "plan -> { book_flight -> pick_seat | [not wf.hotel] book_room skipped } -> pay => fails, undo cancel_flight => failed",
        "plan -> { book_flight -> pick_seat => fails | [not wf.hotel] book_room skipped }, undo cancel_flight => failed",
        "plan -> { book_flight => fails | [not wf.hotel] book_room skipped } => failed",
        "plan => fails => failed",
    ]

    assert expected == [str(p) for p in paths(TripBooking)]
    assert all(p.reachable for p in paths(TripBooking))


def test_a_path_through_a_fork_is_data() -> None:
    """Issue 5: the fork's branches, their sub-paths, and what surely and maybe is undone."""
    found = paths(TripBooking)
    joined, failed_in_pay, cut = found[0], found[2], found[3]

    [visit] = joined.forks
    assert type(visit) is ForkVisit
    assert ("plan", "pay", True) == (visit.step, visit.join, visit.joined)
    flight, room = visit.branches
    assert type(flight) is Branch
    assert ("book_flight", None, ("book_flight", "pick_seat"), True) == (
        flight.name,
        flight.guard,
        flight.steps,
        flight.arrived,
    )
    assert ("wf.hotel", ("book_room",)) == (str(room.guard), room.steps)
    # One interleaving: the branches one after the other, in declaration order.
    assert ("plan", "book_flight", "pick_seat", "book_room", "pay", "confirm") == joined.steps
    assert ["wf.hotel"] == [str(g) for g in joined.guards]
    assert ("book_room", "book_flight") == failed_in_pay.undone

    [visit] = cut.forks
    flight, room = visit.branches
    assert (Ending.FAILED, False) == (flight.ending, flight.cut)
    assert (True, (), False) == (room.cut, room.steps, room.arrived)
    assert ("book_flight",) == cut.undone
    assert (("book_room",), ("cancel_room",)) == (cut.maybe_undone, cut.maybe_compensations)
    assert not visit.joined


class NestedAudit(Workflow, version="1"):
    """A fork inside a branch of another fork; one branch chooses, exclusively, whether to go on."""

    big: bool

    @step(initial=True, fork=True)
    def open_audit(self, ctx: Ctx) -> None:
        """Start."""

    @after(open_audit)
    @step(fork=True)
    def books(self, ctx: Ctx) -> None:
        """Audit the books, in two parts."""

    @books.compensation
    def unbook(self, ctx: Ctx) -> None:
        """Undo."""

    @after(books)
    @step
    def ledger(self, ctx: Ctx) -> None:
        """Part one."""

    @after(books)
    @step
    def receipts(self, ctx: Ctx) -> None:
        """Part two."""

    @receipts.compensation
    def unreceipt(self, ctx: Ctx) -> None:
        """Undo."""

    @after(ledger, receipts)
    @step
    def books_done(self, ctx: Ctx) -> None:
        """Both parts done."""

    @after(open_audit)
    @step
    def stock(self, ctx: Ctx) -> None:
        """Count the stock."""

    @stock.compensation
    def unstock(self, ctx: Ctx) -> None:
        """Undo."""

    @after(stock, when=lambda wf: wf.big)
    @step
    def recount(self, ctx: Ctx) -> None:
        """Big audits count twice."""

    @after(books_done, stock, recount)
    @step(final=True)
    def close_audit(self, ctx: Ctx) -> None:
        """Done."""


def test_nested_forks_and_choices_inside_branches() -> None:
    """Issue 5: a nested fork is a fork inside its branch; a failure in it cuts short every other branch."""
    found = [str(p) for p in paths(NestedAudit)]

    assert [
        "open_audit -> { books -> { ledger | receipts } -> books_done | stock -[wf.big]-> recount } -> close_audit => completed",
        "open_audit -> { books -> { ledger | receipts } -> books_done | stock -[wf.big]-> recount } -> close_audit => fails, undo unstock, unreceipt, unbook => failed",
        "open_audit -> { books -> { ledger | receipts } -> books_done | stock -[not wf.big]-> } -> close_audit => completed",
        "open_audit -> { books -> { ledger | receipts } -> books_done | stock -[not wf.big]-> } -> close_audit => fails, undo unstock, unreceipt, unbook => failed",
        "open_audit -> { books -> { ledger | receipts } -> books_done => fails | stock ... }, undo unreceipt, unbook (maybe unstock) => failed",
        "open_audit -> { books -> { ledger => fails | receipts ... } | stock ... }, undo unbook (maybe unstock, unreceipt) => failed",
        "open_audit -> { books -> { ledger ... | receipts => fails } | stock ... }, undo unbook (maybe unstock) => failed",
        "open_audit -> { books => fails | stock ... }, maybe undo unstock => failed",
        "open_audit -> { books ... | stock -[wf.big]-> recount => fails }, undo unstock (maybe unbook, unreceipt) => failed",
        "open_audit -> { books ... | stock => fails }, maybe undo unbook, unreceipt => failed",
        "open_audit => fails => failed",
    ] == found
    [outer] = paths(NestedAudit)[0].forks
    [inner] = outer.branches[0].forks
    assert ("books", "books_done") == (inner.step, inner.join)


class AllOptional(Workflow, version="1"):
    """An inclusive fork whose every edge is guarded: with no guard holding, nothing can start."""

    a: bool
    b: bool

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None:
        """Split."""

    @after(split, when=lambda wf: wf.a)
    @step
    def left(self, ctx: Ctx) -> None:
        """Left."""

    @after(split, when=lambda wf: wf.b)
    @step
    def right(self, ctx: Ctx) -> None:
        """Right."""

    @after(left, right)
    @step(final=True)
    def merge(self, ctx: Ctx) -> None:
        """Merge."""


def test_every_combination_of_an_inclusive_fork_and_none_is_a_dead_end() -> None:
    """Issue 5: each non-empty combination of guard outcomes is its own path; none at all is no edge enabled."""
    completed = [str(p) for p in paths(AllOptional) if p.ending is Ending.COMPLETED]

    assert [
        "split -> { [wf.a] left | [wf.b] right } -> merge => completed",
        "split -> { [wf.a] left | [not wf.b] right skipped } -> merge => completed",
        "split -> { [not wf.a] left skipped | [wf.b] right } -> merge => completed",
    ] == completed
    [dead] = [p for p in paths(AllOptional) if p.ending is Ending.NO_EDGE]
    assert "split => no edge enabled (not wf.a, not wf.b) => failed" == str(dead)


class SameQuestion(Workflow, version="1"):
    """A guard read before the fork and again in a branch; nothing in between writes what it reads."""

    vip: bool
    seen: int = 0

    @step(initial=True)
    def greet(self, ctx: Ctx) -> None:
        """Greet."""

    @after(greet, when=lambda wf: wf.vip)
    @step(final=True)
    def lounge(self, ctx: Ctx) -> None:
        """VIPs only."""

    @after(greet)
    @step(fork=True)
    def split(self, ctx: Ctx) -> None:
        """Two things at once."""

    @after(split)
    @step
    def tea(self, ctx: Ctx) -> None:
        """Tea."""
        self.seen += 1

    @after(tea, when=lambda wf: wf.vip)
    @step
    def biscuit(self, ctx: Ctx) -> None:
        """Only for VIPs, who went to the lounge long ago."""

    @after(split)
    @step
    def paper(self, ctx: Ctx) -> None:
        """The paper."""

    @after(tea, biscuit, paper)
    @step(final=True)
    def leave(self, ctx: Ctx) -> None:
        """Bye."""


class Promotion(Workflow, version="1"):
    """Same shape, but the other branch may promote the customer while tea is served."""

    vip: bool

    @step(initial=True)
    def greet(self, ctx: Ctx) -> None:
        """Greet."""

    @after(greet, when=lambda wf: wf.vip)
    @step(final=True)
    def lounge(self, ctx: Ctx) -> None:
        """VIPs only."""

    @after(greet)
    @step(fork=True)
    def split(self, ctx: Ctx) -> None:
        """Two things at once."""

    @after(split)
    @step
    def tea(self, ctx: Ctx) -> None:
        """Tea."""

    @after(tea, when=lambda wf: wf.vip)
    @step
    def biscuit(self, ctx: Ctx) -> None:
        """VIPs."""

    @after(split)
    @step
    def paper(self, ctx: Ctx) -> None:
        """Reading earns status, at any moment while tea is served."""
        self.vip = True

    @after(tea, biscuit, paper)
    @step(final=True)
    def leave(self, ctx: Ctx) -> None:
        """Bye."""


def test_reachable_through_a_fork_counts_the_other_branches_as_in_between() -> None:
    """Issue 5: a contradiction stands across a fork unless a step of another branch writes what the guard reads."""
    dead = [p for p in paths(SameQuestion) if not p.reachable]

    assert dead
    assert all("biscuit" in p.steps for p in dead)
    assert (
        "wf.vip must be true after tea, but it was false after greet and no step since writes what it reads"
        == dead[0].unreachable_because
    )
    assert all(p.reachable for p in paths(Promotion))


def test_too_many_paths_stop_with_a_clear_message() -> None:
    """Issue 5: forks multiply paths; beyond max_paths, paths() stops and says why."""
    big = generated_workflow("ForkSprawl", forked=True, forks=5, width=4)

    with pytest.raises(TooManyPaths, match=r"ForkSprawl has more than 1000 paths .*each fork multiplies") as err:
        paths(big, max_paths=1000)
    assert isinstance(err.value, ValueError)
    assert "f0 (4 branches)" in str(err.value)
    with pytest.raises(ValueError, match="max_paths=0"):
        paths(big, max_paths=0)


def test_several_forks_enumerate_well_under_a_second() -> None:
    """Issue 5: a generated workflow with five forks of four branches (one nested) enumerates in well under 1 s."""
    big = generated_workflow("ForkFive", forked=True, forks=5, width=4)
    timings: list[float] = []
    found: list[Path] = []
    for _ in range(3):
        # CPU time of this process: a busy machine slows the clock on the wall, not the work done.
        began = time.process_time()
        found = paths(big)
        timings.append(time.process_time() - began)

    assert min(timings) < 1.0
    endings = Counter(p.ending for p in found)
    # Each fork: an exclusive choice in one branch times an inclusive branch, four ways to join.
    assert 4**5 == endings[Ending.COMPLETED]
    assert all(p.reachable for p in found)
