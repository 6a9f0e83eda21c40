"""
WorkflowMachine and paths() with fan-outs (``@fan_out``, issue 10 item 1).

The children of a fan-out run in the stories like a subflow's: their tasks are
actions, their steps get the faults the parent's plan gives ``ship/<step>``, and
every check reads them. The rules across a parent and its children hold for a
fan-out's several children: a completed parent's children never undone, a failed
one's completed children undone once each; and the children undone when the
fan-out itself failed (before the step's failure) are expected, not reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest
from hypothesis import strategies as st

from statemachine_orch import ChildWorkflowFailed, Ctx, Retry, Workflow, after, fan_out, human_task, step
from statemachine_orch._fanout import FanOut
from statemachine_orch.testing import WorkflowMachine, paths

from .helpers import find_bug, passes


class WfParcel(Workflow, version="1"):
    """A child: pack (undone by unpack), a clerk checks the heavy parcels, then label."""

    weight: int
    tracking: str = ""

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None: ...

    @pack.compensation(retry=Retry(attempts=3, initial=1))
    def unpack(self, ctx: Ctx) -> None: ...

    @after(pack, when=lambda wf: wf.weight > 10)
    @human_task(assignee="clerk")
    def check(self, ctx: Ctx) -> None: ...

    @after(pack)
    @after(check)
    @step(final=True)
    def label(self, ctx: Ctx) -> None:
        self.tracking = f"T-{self.weight}"


class WfOrder(Workflow, version="1"):
    """The parent: pick, ship a parcel per weight (two at a time), bill; a failed fan-out is apologised for."""

    weights: list[int] = attrs.field(factory=list[int])
    tracking: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def pick(self, ctx: Ctx) -> None: ...

    @pick.compensation
    def unpick(self, ctx: Ctx) -> None: ...

    @after(pick)
    @fan_out(WfParcel, limit=2)
    def ship(self, ctx: Ctx) -> list[WfParcel]:
        return [WfParcel(weight=w) for w in self.weights]

    @ship.on_result
    def shipped(self, ctx: Ctx, parcels: Sequence[WfParcel]) -> None:
        self.tracking = [p.tracking for p in parcels]

    @after(ship)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None: ...

    @after(ship, on_error=ChildWorkflowFailed)
    @step(final=True)
    def apologise(self, ctx: Ctx) -> None: ...


ORDERS = st.builds(WfOrder, weights=st.lists(st.integers(0, 20), max_size=3))


@pytest.mark.slow
def test_a_correct_fan_out_passes_its_stories_with_every_edge_covered() -> None:
    machine = WorkflowMachine(WfOrder, inputs=ORDERS, require_coverage=1.0)
    passes(machine)
    assert machine.coverage.fraction == 1.0


def test_paths_show_the_fan_out_and_its_undo() -> None:
    shown = [str(p) for p in paths(WfOrder)]
    assert "pick -> ship (children: WfParcel, 2 at a time) -> bill => completed" in shown
    assert (
        "pick -> ship (children: WfParcel, 2 at a time) -> bill => fails, undo children WfParcel of ship, unpick => failed"
        in shown
    )


@pytest.mark.slow
def test_a_failed_fan_out_that_leaves_a_completed_child_undone_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that forgets the completed children when a fan-out fails: they stay completed."""

    def forgotten(self: FanOut) -> list[int]:
        return []

    monkeypatch.setattr(FanOut, "completed", forgotten)
    err = find_bug(WorkflowMachine(WfOrder, inputs=ORDERS))

    assert (err.rule, err.workflow, err.step) == ("child-saga", "WfOrder", "ship")
    assert "failed, so its completed child" in str(err)
    assert "must be undone once and end cancelled; it was undone 0 times and ended completed" in str(err)
