"""
WorkflowMachine and paths() with child workflows (``@subflow``).

Children run on the story's engine: their tasks are completed, their steps carry
faults of their own (``ship/pack`` in the parent's plan), and the checks read
them like any instance, plus the rules across a parent and its children. A
correct parent and child pass with every edge covered; a bug in the child and a
parent invariant broken by what the child's form says are found and shrunk; the
cross-instance checks catch an engine that forgets to undo or cancel a child.
"""

from __future__ import annotations

import asyncio

import attrs
import pytest

from statemachine_orch import (
    ChildWorkflowFailed,
    Ctx,
    Engine,
    InstanceStatus,
    Retry,
    Workflow,
    after,
    human_task,
    invariant,
    step,
    subflow,
)
from statemachine_orch.testing import Ending, WorkflowMachine, paths, virtual_engine

from .helpers import find_bug, passes, story


class WmParcel(Workflow, version="1"):
    """The child: pack (undone by unpack), a clerk checks manual parcels, then label."""

    parcel: str
    tracking: str = ""

    @step(initial=True, retry=Retry(attempts=2, initial=1))
    def pack(self, ctx: Ctx) -> None: ...

    @pack.compensation(retry=Retry(attempts=3, initial=1))
    def unpack(self, ctx: Ctx) -> None: ...

    @after(pack, when=lambda wf: wf.parcel == "manual")
    @human_task(assignee="clerk")
    def check(self, ctx: Ctx) -> None: ...

    @after(pack)
    @after(check)
    @step(final=True)
    def label(self, ctx: Ctx) -> None:
        self.tracking = f"T-{self.parcel}"


class WmOrder(Workflow, version="1"):
    """The parent: pick, ship through the child (a failed child is apologised for), bill."""

    parcel: str
    tracking: str = ""

    @step(initial=True)
    def pick(self, ctx: Ctx) -> None: ...

    @pick.compensation
    def unpick(self, ctx: Ctx) -> None: ...

    @after(pick)
    @subflow(WmParcel, retry=Retry(attempts=2, initial=1))
    def ship(self, ctx: Ctx) -> WmParcel:
        return WmParcel(parcel=self.parcel)

    @ship.on_result
    def shipped(self, ctx: Ctx, child: WmParcel) -> None:
        self.tracking = child.tracking

    @after(ship)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None: ...

    @after(ship, on_error=ChildWorkflowFailed)
    @step(final=True)
    def apologise(self, ctx: Ctx) -> None: ...

    @invariant
    def billed_means_tracked(self, status: InstanceStatus) -> bool:
        return status is not InstanceStatus.COMPLETED or self.tracking.startswith("T-") or self.tracking == ""


def test_a_correct_parent_and_child_pass_with_every_edge_covered() -> None:
    machine = WorkflowMachine(WmOrder, require_coverage=1.0)
    passes(machine)
    assert machine.coverage.fraction == 1.0


def test_the_childs_steps_are_actions_and_faults_of_the_story() -> None:
    """A child's task is completed as ``Child.step``; its steps' faults are the parent's plan under ``ship/``."""
    machine = WorkflowMachine(WmOrder)
    # Issue 11: a story draws among the actions that can apply now; here, a child waits at its task.
    actions = repr(machine.menu.for_shape((True, (("WmParcel.check", 1),), (), False, 0, 1)))
    assert "'WmParcel.check'" in actions
    assert "CancelChild" in actions
    assert "'ship/pack'" in actions, "the child's steps may fail, through the parent's fault plan"
    assert "'ship/unpack'" in actions, "and its compensations"


# --------------------------------------------------------------------------- a bug in the child


class WmCrate(Workflow, version="1"):
    """The child reserves a slot, then seals; the release is registered on the wrong step."""

    size: int
    reserved: bool = False

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        self.reserved = True

    @after(reserve)
    @step(final=True)
    def seal(self, ctx: Ctx) -> None: ...

    @seal.compensation  # the bug: it undoes reserve, so it belongs on reserve
    def release(self, ctx: Ctx) -> None:
        self.reserved = False

    @invariant
    def nothing_held_after_an_undo(self, status: InstanceStatus) -> bool:
        return status not in (InstanceStatus.FAILED, InstanceStatus.CANCELLED) or not self.reserved


class WmDispatch(Workflow, version="1"):
    """The parent, correct in itself: it packs a crate through the child."""

    size: int

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None: ...

    @after(plan)
    @subflow(WmCrate)
    def crate(self, ctx: Ctx) -> WmCrate:
        return WmCrate(size=self.size)

    @after(crate)
    @step(final=True)
    def load(self, ctx: Ctx) -> None: ...


def test_a_childs_compensation_on_the_wrong_step_is_found_through_the_parents_story() -> None:
    err = find_bug(WorkflowMachine(WmDispatch))

    assert (err.rule, err.workflow, err.instance) == ("invariant", "WmCrate", "i1/1")
    # Issue 11: blamed on the completed step whose effect nothing undoes, not on the last one that ran.
    assert err.step == "reserve", "reserve has no compensation (the one meant for it sits on seal)"
    assert "child of i1" in str(err)
    assert "'crate/seal'" in story(err), "the fault was injected into the child through the parent's plan"


# --------------------------------------------------------------------------- the child's form breaks the parent


@attrs.frozen
class WmVerdict:
    damage: int


class WmInspection(Workflow, version="1"):
    """The child: an inspector reports the damage."""

    item: str
    damage: int = 0

    @step(initial=True)
    def unpack(self, ctx: Ctx) -> None: ...

    @after(unpack)
    @human_task(assignee="inspector", form=WmVerdict)
    def inspect(self, ctx: Ctx, form: WmVerdict) -> None:
        self.damage = abs(form.damage)

    @after(inspect)
    @step(final=True)
    def report(self, ctx: Ctx) -> None: ...


class WmClaim(Workflow, version="1"):
    """The parent refunds 10 per point of damage: more than 10 points refund more than the price."""

    item: str
    price: int = 100
    refund: int = 0

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None: ...

    @after(receive)
    @subflow(WmInspection)
    def assess(self, ctx: Ctx) -> WmInspection:
        return WmInspection(item=self.item)

    @assess.on_result
    def assessed(self, ctx: Ctx, child: WmInspection) -> None:
        self.refund = 10 * child.damage

    @after(assess)
    @step(final=True)
    def pay_out(self, ctx: Ctx) -> None: ...

    @invariant
    def never_refund_more_than_the_price(self) -> bool:
        return self.refund <= self.price


def test_a_parent_invariant_broken_only_by_what_the_childs_form_says() -> None:
    err = find_bug(WorkflowMachine(WmClaim))

    assert (err.rule, err.workflow, err.instance, err.step) == ("invariant", "WmClaim", "i1", "assess")
    text = story(err)
    assert "Complete(step='WmInspection.inspect'" in text
    assert "WmVerdict(damage=11)" in text or "WmVerdict(damage=-11)" in text, "shrunk to the first damage too high"


# --------------------------------------------------------------------------- the rules across instances


def test_a_completed_child_left_undone_by_a_failed_parent_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that forgets to undo the child: the parent compensates, the child stays completed."""

    async def no_undo(self: Engine, rec: object, undo: object, attempt: int) -> bool:
        return False

    monkeypatch.setattr(Engine, "_kick_child_undo", no_undo)
    err = find_bug(WorkflowMachine(WmOrder))

    assert (err.rule, err.workflow, err.step) == ("child-saga", "WmOrder", "ship")
    assert "must be undone once and end cancelled; it was undone 0 times and ended completed" in str(err)


def test_a_child_left_running_by_its_cancelled_parent_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that does not cascade a cancellation without compensation: the child waits on, orphaned."""
    cascade = getattr(Engine, "_cancel_child")  # noqa: B009 - the engine made faulty on purpose

    def cancel_child(self: Engine, parent: object, child_id: str, why: str, *, compensate: bool = True) -> None:
        if compensate:
            cascade(self, parent, child_id, why, compensate=compensate)

    monkeypatch.setattr(Engine, "_cancel_child", cancel_child)
    err = find_bug(WorkflowMachine(WmOrder))

    assert (err.rule, err.workflow, err.step) == ("orphan-child", "WmOrder", "ship")
    assert "is still waiting" in str(err)


class WmSlot(Workflow, version="1"):
    """A child holding a slot until a clerk confirms it."""

    owner: str

    @step(initial=True)
    def hold(self, ctx: Ctx) -> None: ...

    @hold.compensation
    def free(self, ctx: Ctx) -> None: ...

    @after(hold)
    @human_task(assignee="clerk")
    def confirm(self, ctx: Ctx) -> None: ...

    @after(confirm)
    @step(final=True)
    def book(self, ctx: Ctx) -> None: ...


class WmVenue(Workflow, version="1"):
    """A parent that books the slot (a child) beside paperwork, in a fork."""

    owner: str

    @step(initial=True, fork=True)
    def start(self, ctx: Ctx) -> None: ...

    @after(start)
    @subflow(WmSlot)
    def slot(self, ctx: Ctx) -> WmSlot:
        return WmSlot(owner=self.owner)

    @after(start)
    @human_task(assignee="clerk")
    def paperwork(self, ctx: Ctx) -> None: ...

    @after(slot, paperwork)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


def test_a_parent_cancelled_without_compensation_in_a_fork_abandons_its_child() -> None:
    engine = virtual_engine(record_coverage=False)

    async def scenario() -> list[str]:
        handle = await engine.start(WmVenue(owner="ann"))
        await engine.wait_idle()
        await engine.cancel(handle.instance_id, compensate=False)
        await engine.wait_idle()
        [child] = engine.children(handle.instance_id)
        kinds = [e.kind.value for e in engine.history(child.id)]
        await engine.aclose()
        return kinds

    assert "compensation_started" not in asyncio.run(scenario())


# --------------------------------------------------------------------------- paths()


def test_paths_show_the_child_and_undo_it() -> None:
    lines = [str(p) for p in paths(WmOrder)]
    assert lines[0] == "pick -> ship (child: WmParcel) -> bill => completed"
    assert "pick -> ship (child: WmParcel) -> bill => fails, undo child WmParcel of ship, unpick => failed" in lines
    assert "pick -> ship (child: WmParcel) -[on_error ChildWorkflowFailed]-> apologise => completed" in lines
    assert "pick -> ship (child: WmParcel) => cancel, undo unpick => cancelled" in lines
    failed = next(p for p in paths(WmOrder) if p.steps == ("pick", "ship", "bill") and p.ending is Ending.FAILED)
    assert (failed.undone, failed.compensations) == (("ship", "pick"), ("ship.child", "unpick")), "data keeps names"


def test_paths_show_a_child_in_a_fork_branch() -> None:
    lines = [str(p) for p in paths(WmVenue)]
    assert lines[0] == "start -> { slot (child: WmSlot) | paperwork } -> done => completed"
    assert "start -> { slot (child: WmSlot) ... | paperwork => fails }, maybe undo child WmSlot of slot => failed" in (
        lines
    )
