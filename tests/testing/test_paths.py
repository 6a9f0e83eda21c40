"""
Issue 4: ``paths(Wf, max_loops=1)`` lists every path from the initial step to an end, from the spec alone.

A path ends completed, failed (a step failed for good, or no edge could be taken)
with the compensations that then run newest first, or cancelled while it waited;
error routes and escalations are edges on the way; each back edge is taken at most
``max_loops`` times. ``reachable`` is False only when the path needs one guard to
be both true and false with no step in between writing what the guard reads.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import attrs
import pytest

from examples.order_process import OrderProcess
from statemachine_orch import Ctx, Retry, Workflow, after, goto, human_task, paths, spec_of, step
from statemachine_orch.testing import Ending, GuardOutcome, Path
from statemachine_orch.testing._generate import generated_workflow


def test_order_example_paths_print_readably() -> None:
    """Issue 4: every path of the order example, as one readable line each, depth first."""
    expected = [
        "validate_order -[wf.validated]-> check_inventory -[needs_approval]-> manual_approval -[wf.approved]-> process_payment -> update_inventory -> send_confirmation => completed",
        "validate_order -[wf.validated]-> check_inventory -[needs_approval]-> manual_approval -[wf.approved]-> process_payment -> update_inventory -> send_confirmation => fails, undo restore_stock, refund_payment => failed",
        "validate_order -[wf.validated]-> check_inventory -[needs_approval]-> manual_approval -[wf.approved]-> process_payment -> update_inventory => fails, undo refund_payment => failed",
        "validate_order -[wf.validated]-> check_inventory -[needs_approval]-> manual_approval -[wf.approved]-> process_payment => fails => failed",
        "validate_order -[wf.validated]-> check_inventory -[needs_approval]-> manual_approval -[not wf.approved]-> reject_order => rejected => failed",
        "validate_order -[wf.validated]-> check_inventory -[needs_approval]-> manual_approval -[not wf.approved]-> reject_order => fails => failed",
        "validate_order -[wf.validated]-> check_inventory -[needs_approval]-> manual_approval => fails => failed",
        "validate_order -[wf.validated]-> check_inventory -[needs_approval]-> manual_approval => cancel => cancelled",
        "validate_order -[wf.validated]-> check_inventory -[not needs_approval]-> process_payment -> update_inventory -> send_confirmation => completed",
        "validate_order -[wf.validated]-> check_inventory -[not needs_approval]-> process_payment -> update_inventory -> send_confirmation => fails, undo restore_stock, refund_payment => failed",
        "validate_order -[wf.validated]-> check_inventory -[not needs_approval]-> process_payment -> update_inventory => fails, undo refund_payment => failed",
        "validate_order -[wf.validated]-> check_inventory -[not needs_approval]-> process_payment => fails => failed",
        "validate_order -[wf.validated]-> check_inventory => fails => failed",
        "validate_order -[not wf.validated]-> reject_order => rejected => failed",
        "validate_order -[not wf.validated]-> reject_order => fails => failed",
        "validate_order => fails => failed",
    ]

    assert expected == [str(p) for p in paths(OrderProcess)]


def test_every_order_path_is_reachable() -> None:
    """Issue 4: the user-facing one-liner of the issue holds for the order example."""
    assert all(p.reachable for p in paths(OrderProcess))


def test_a_path_is_data() -> None:
    """Issue 4: a path carries its steps, edges, guard outcomes, ending and compensations."""
    spec = spec_of(OrderProcess)
    approved = paths(OrderProcess)[0]

    assert ("validate_order", "check_inventory", "manual_approval") == approved.steps[:3]
    assert [
        e
        for e in spec.edges
        if (e.source, e.dest) != ("check_inventory", "process_payment") and e.dest != "reject_order"
    ] == list(approved.edges)
    assert ["wf.validated", "needs_approval", "wf.approved"] == [str(g) for g in approved.guards]
    assert all(g.holds for g in approved.guards)
    assert all(type(g) is GuardOutcome for g in approved.guards)
    assert (Ending.COMPLETED, (), ()) == (approved.ending, approved.undone, approved.compensations)
    assert "send_confirmation" == approved.last_step

    refunded = paths(OrderProcess)[2]
    assert Ending.FAILED == refunded.ending
    assert ("process_payment",) == refunded.undone
    assert ("refund_payment",) == refunded.compensations
    assert Ending.FAILED.failed
    assert not Ending.CANCELLED.failed


def test_default_edge_needs_every_guard_before_it_false() -> None:
    """Issue 4: taking the default edge records each guard tried before it as false."""
    [small, *_] = [p for p in paths(OrderProcess) if "process_payment" in p.steps[2:3]]

    assert ["wf.validated", "not needs_approval"] == [str(g) for g in small.guards]


class DraftReview(Workflow, version="1"):
    """A draft is revised until it is accepted; a rejected draft is routed to an editor on error."""

    accepted: bool = False
    drafts: int = 0

    @step(initial=True)
    def write(self, ctx: Ctx) -> None:
        """Write a draft."""
        self.drafts += 1

    @goto(write, when=lambda wf: not wf.accepted)
    @after(write)
    @step(retry=Retry(attempts=2))
    def check(self, ctx: Ctx) -> None:
        """Check it."""
        self.accepted = self.drafts > 1

    @after(check)
    @step(final=True)
    def publish(self, ctx: Ctx) -> None:
        """Publish it."""

    @after(check, on_error=LookupError)
    @step(final=True)
    def escalate(self, ctx: Ctx) -> None:
        """Give it to an editor."""


def test_loops_are_unrolled_at_most_max_loops_times() -> None:
    """Issue 4: each back edge is taken at most max_loops times on one path."""
    for max_loops in (0, 1, 2):
        found = paths(DraftReview, max_loops=max_loops)
        assert max_loops == max(p.loops for p in found)
        # publish is reached after 0..max_loops rounds of the loop.
        assert max_loops + 1 == sum(1 for p in found if p.ending is Ending.COMPLETED and p.last_step == "publish")


def test_error_routes_are_paths_too() -> None:
    """Issue 4: a failure routed by on_error continues along its edge; the path says so."""
    routed = [p for p in paths(DraftReview, max_loops=0) if p.error_routed]

    assert [
        "write -> check -[on_error LookupError]-> escalate => completed",
        "write -> check -[on_error LookupError]-> escalate => fails => failed",
    ] == [str(p) for p in routed]


def test_negative_max_loops_is_refused() -> None:
    """Issue 4: max_loops counts repetitions; a negative count is a mistake."""
    with pytest.raises(ValueError, match="max_loops=-1"):
        paths(DraftReview, max_loops=-1)


class VipTriage(Workflow, version="1"):
    """Asks the same question twice; only a step that writes the answer can change it."""

    vip: bool
    bonus: int = 0

    @step(initial=True)
    def triage(self, ctx: Ctx) -> None:
        """Look at the customer."""

    @after(triage, when=lambda wf: wf.vip)
    @step
    def greet(self, ctx: Ctx) -> None:
        """A warm welcome."""

    @after(triage)
    @step
    def queue(self, ctx: Ctx) -> None:
        """Wait in line (writes nothing the guard reads)."""
        self.bonus += 1

    @after(queue, when=lambda wf: wf.vip)
    @step(final=True)
    def lounge(self, ctx: Ctx) -> None:
        """Only VIPs: but a non-VIP queued, and nothing made them VIP since."""

    @after(queue)
    @after(greet)
    @step(final=True)
    def serve(self, ctx: Ctx) -> None:
        """Serve."""


def test_a_guard_needed_both_ways_without_a_write_in_between_is_unreachable() -> None:
    """Issue 4: reachable is False only for a provable contradiction, and says why."""
    dead, *below = [p for p in paths(VipTriage) if not p.reachable]

    assert ("triage", "queue", "lounge") == dead.steps
    assert [Ending.FAILED] == [p.ending for p in below]  # lounge fails: contradicted as well
    assert (
        "wf.vip must be true after queue, but it was false after triage and no step since writes what it reads"
        == dead.unreachable_because
    )
    assert str(dead).startswith("[unreachable: wf.vip must be true after queue")
    # Failure and cancellation paths below a contradiction are contradicted too; the rest is reachable.
    assert all(p.reachable for p in paths(VipTriage) if "lounge" not in p.steps)


class VipPromotion(Workflow, version="1"):
    """Same shape as VipTriage, but queueing can make the customer a VIP."""

    vip: bool

    @step(initial=True)
    def triage(self, ctx: Ctx) -> None:
        """Look at the customer."""

    @after(triage, when=lambda wf: wf.vip)
    @step
    def greet(self, ctx: Ctx) -> None:
        """A warm welcome."""

    @after(triage)
    @step
    def queue(self, ctx: Ctx) -> None:
        """Long waits earn status."""
        self.vip = True

    @after(queue, when=lambda wf: wf.vip)
    @step(final=True)
    def lounge(self, ctx: Ctx) -> None:
        """VIPs."""

    @after(queue)
    @after(greet)
    @step(final=True)
    def serve(self, ctx: Ctx) -> None:
        """Serve."""


def test_a_step_that_writes_what_a_guard_reads_keeps_the_path_reachable() -> None:
    """Issue 4: reachable means "not contradicted": a write in between lifts the contradiction."""
    assert all(p.reachable for p in paths(VipPromotion))


@attrs.frozen
class Answer:
    """A yes or no."""

    yes: bool


class ClerkEscalation(Workflow, version="1"):
    """A clerk has a day to answer; then the manager gets the case."""

    answered: bool = False

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None:
        """Take the request in."""

    @receive.compensation
    def send_back(self, ctx: Ctx) -> None:
        """Return it."""

    @after(receive)
    @human_task(assignee="clerk", form=Answer)
    def clerk_answers(self, ctx: Ctx, form: Answer) -> None:
        """The clerk decides."""
        self.answered = form.yes

    @after(clerk_answers, timeout=timedelta(days=1))
    @human_task(assignee="manager", form=Answer, final=True)
    def manager_answers(self, ctx: Ctx, form: Answer) -> None:
        """The manager decides."""
        self.answered = form.yes

    @after(clerk_answers)
    @step(final=True)
    def close(self, ctx: Ctx) -> None:
        """Done."""


def test_waits_can_be_cancelled_and_can_escalate() -> None:
    """Issue 4: cancellation while waiting compensates; a timeout edge escalates."""
    found = {str(p) for p in paths(ClerkEscalation)}

    assert "receive -> clerk_answers => cancel, undo send_back => cancelled" in found
    assert "receive -> clerk_answers -[timeout 86400s]-> manager_answers => completed" in found
    assert (
        "receive -> clerk_answers -[timeout 86400s]-> manager_answers => cancel, undo send_back => cancelled" in found
    )


def test_fifty_steps_with_ten_branches_enumerate_well_under_a_second() -> None:
    """Issue 4: a generated 50-step workflow with 10 branches enumerates in well under a second."""
    big = generated_workflow("Fifty", steps=50, branches=10)
    timings: list[float] = []
    found: list[Path] = []
    for _ in range(3):
        # CPU time of this process: a busy machine slows the clock on the wall, not the work done.
        began = time.process_time()
        found = paths(big)
        timings.append(time.process_time() - began)
    best = min(timings)

    assert best < 1.0
    endings = Counter(p.ending for p in found)
    # 2**10 branch combinations, each through the loop zero times or once.
    assert 2 * 2**10 == endings[Ending.COMPLETED]
    assert all(p.reachable for p in found)
