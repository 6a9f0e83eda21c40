"""
Issue 10, item 4, under the toolkit: WorkflowMachine and paths() know tasks whose people are computed.

A purchase whose approval goes to the requester's manager below 1000 and to the
finance group above (methods of the workflow, called when the task opens):
WorkflowMachine completes each opened task as one it is really for (and checks
that an outsider is refused), and hands tasks over (reassigned by an operator or
delegated by one they are for: the task must then be for the new person, who
completes it), whatever the amount, every edge covered; paths() lists the
approval, the rejection and the failure.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import attrs
from hypothesis import strategies as st

from statemachine_orch import Ctx, Workflow, after, failure_end, human_task, step
from statemachine_orch.testing import Actor, Complete, HandOver, Start, WorkflowMachine, paths

from .helpers import passes


@attrs.frozen
class Verdict:
    """The approver's answer."""

    approved: bool


class Purchase(Workflow):
    """Approved by the requester's manager (small amounts) or by finance (large ones), then ordered or rejected."""

    amount: int
    manager: str
    approved: bool = False

    def approver(self) -> str | None:
        """The requester's manager approves small purchases."""
        return self.manager if self.amount < 1000 else None

    def finance(self) -> list[str]:
        """Finance approves large ones."""
        return ["finance"] if self.amount >= 1000 else []

    @human_task(initial=True, assignee=approver, candidate_groups=finance, form=Verdict)
    def approve(self, ctx: Ctx, form: Verdict) -> None:
        self.approved = form.approved

    @after(approve, when=lambda wf: wf.approved)
    @step(final=True)
    def order(self, ctx: Ctx) -> None: ...

    @after(approve)
    @failure_end(outcome="rejected")
    def reject(self, ctx: Ctx) -> str:
        return f"{self.amount} was not approved"


def test_workflow_machine_completes_computed_tasks_as_the_people_they_are_for() -> None:
    """Issue 10: small and large amounts, manager and finance, approvals, rejections and intruders: every edge."""
    machine = WorkflowMachine(
        Purchase,
        inputs=st.builds(Purchase, amount=st.sampled_from([50, 5000]), manager=st.sampled_from(["ann", "bob"])),
        require_coverage=1.0,
    )

    passes(machine)

    assert 1.0 == machine.coverage.fraction


def test_paths_of_the_purchase() -> None:
    """Issue 10: the computed task is a step like any other on the paths."""
    found = {str(p) for p in paths(Purchase)}

    assert "approve -[wf.approved]-> order => completed" in found
    assert "approve -[not wf.approved]-> reject => rejected => failed" in found
    assert "approve => fails => failed" in found  # the step, or who it is for, could not be computed


def test_a_story_hands_tasks_over_and_the_new_assignee_completes_them() -> None:
    """Issue 10: a delegated manager's task and a reassigned finance task are completed by the stand-in."""
    stand_in = "stand-in"
    machine = WorkflowMachine(Purchase)
    err, _, notes = machine.replay_aimed(
        [
            (Start(Purchase(amount=50, manager="ann"), {}), None),
            (HandOver(step="approve", task=0, to=stand_in, delegate=True), None),
            (Complete(step="approve", task=0, form=Verdict(approved=True), by=Actor("ann")), None),
            (Start(Purchase(amount=5000, manager="ann"), {}), None),
            (HandOver(step="approve", task=0, to=stand_in, delegate=False), None),
            (Complete(step="approve", task=0, form=Verdict(approved=True), by=Actor("eve", ("finance",))), None),
        ]
    )

    assert err is None, err
    told = "\n".join(notes)
    assert "i1: 'ann' delegates the task at approve to 'stand-in'" in told
    assert "i2: the task at approve is reassigned to 'stand-in'" in told
    assert 2 == told.count("'stand-in' completes the task at approve with Verdict(approved=True)")
