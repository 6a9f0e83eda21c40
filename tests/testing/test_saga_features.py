"""
Issue 10, items 2 and 3, under the toolkit: WorkflowMachine and paths() know attempted undos, typed errors and failure ends.

A booking whose reservation's undo is ``attempted=True``, whose charge's error is
handed to a handler and whose rejection is a declared failure end: WorkflowMachine
plays stories with injected faults and cancels and finds the saga as the engine
runs it (the attempted undo counted from the reservation's start), every edge
covered.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from hypothesis import strategies as st

from statemachine_orch import Ctx, Retry, Workflow, after, failure_end, human_task, step
from statemachine_orch.testing import Ending, WorkflowMachine, paths

from .helpers import passes


class Refused(Exception):
    """The partner refused the charge."""

    def __init__(self, code: int) -> None:
        super().__init__(f"refused {code}")
        self.code = code


class Reservation(Workflow):
    """Reserve (undone even if it failed), approve, charge (its refusal handed on), or reject."""

    amount: int
    approved: bool = False
    refusal: int = 0

    @step(initial=True, retry=Retry(attempts=2, initial=1))
    def reserve(self, ctx: Ctx) -> None: ...

    @reserve.compensation(attempted=True, retry=Retry(attempts=3, initial=1))
    def release(self, ctx: Ctx) -> None: ...

    @after(reserve)
    @human_task(assignee="boss")
    def approve(self, ctx: Ctx) -> None:
        self.approved = self.amount < 100

    @after(approve, when=lambda wf: wf.approved)
    @step(retry=Retry(attempts=2, initial=1))
    def charge(self, ctx: Ctx) -> None:
        if self.amount == 13:
            raise Refused(self.amount)

    @after(charge, on_error=Refused)
    @step
    def note_refusal(self, ctx: Ctx, error: Refused) -> None:
        assert isinstance(error, Refused)
        self.refusal = error.code

    @after(charge)
    @after(note_refusal)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...

    @after(approve)
    @failure_end(outcome="rejected")
    def reject(self, ctx: Ctx) -> str:
        return f"{self.amount} is too much"


def test_workflow_machine_agrees_with_the_engine_on_attempted_undos_and_failure_ends() -> None:
    """Issue 10: faults in reserve and release, cancels and rejections: the saga checks pass, every edge covered."""
    machine = WorkflowMachine(
        Reservation, inputs=st.builds(Reservation, amount=st.sampled_from([5, 13, 500])), require_coverage=1.0
    )

    passes(machine)

    assert 1.0 == machine.coverage.fraction


def test_paths_of_the_reservation() -> None:
    """Issue 10: a failed reserve is undone on its path; the rejection ends at the failure end."""
    found = {str(p) for p in paths(Reservation)}

    assert "reserve => fails, undo release => failed" in found
    assert "reserve -> approve -[not wf.approved]-> reject => rejected, undo release => failed" in found
    assert any(p.ending is Ending.FAILURE_END for p in paths(Reservation))
