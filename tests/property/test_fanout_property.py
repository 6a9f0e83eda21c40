"""
Issue 10, item 1: the guarantees of ``@fan_out``, under any order of children ending, any failures.

Hypothesis draws the number of items (0 to 6), the limit (none, or 1 to 3), how
many failures are tolerated (0 to 2), the order in which the waiting children get
their verdict and which verdicts are refusals, and whether the parent's payment
fails after the fan-out. The parent then runs to its end on a real engine, and the
test checks, from the histories and the children's own logs:

- each child was started exactly once, ids ``<parent>/1/<index>``, in item order,
  never more than ``limit`` running at once, and none after the fan-out failed;
- completed: the results are the children's, in item order, a failed child's
  error in its place;
- failed within the fan-out: the children running then were cancelled, the
  completed ones undone newest first (the reverse of the order the parent saw them
  complete), each once, then the parent's own compensation;
- a completed fan-out whose parent then fails: its children are undone newest
  first, once each, then the parent's older steps.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from statemachine_orch import (
    ChildWorkflowFailed,
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    NonRetryableError,
    VirtualClock,
    Workflow,
    after,
    fan_out,
    step,
)
from tests.fanout_legs import LOG, Leg, Verdict

if TYPE_CHECKING:
    from statemachine_orch import HistoryEvent
    from tests.conftest import Runner

K = EventKind
S = InstanceStatus


def _trip(limit: int | None, tolerate: int) -> type[Workflow]:
    """The parent for one limit and tolerance: plan (undoable), a leg per item, pay (fails on demand)."""

    class Trip(Workflow, name=f"PfTrip-{limit}-{tolerate}"):
        items: int
        fail_payment: bool = False
        results: list[str] = attrs.field(factory=list[str])

        @step(initial=True)
        def plan(self, ctx: Ctx) -> None: ...

        @plan.compensation
        def unplan(self, ctx: Ctx) -> None:
            LOG.append("unplan")

        @after(plan)
        @fan_out(Leg, limit=limit, tolerate=tolerate)
        def legs(self, ctx: Ctx) -> list[Leg]:
            return [Leg(item=str(i)) for i in range(self.items)]

        @legs.on_result
        def booked(self, ctx: Ctx, legs: Sequence[Leg | ChildWorkflowFailed]) -> None:
            self.results = [leg.result if isinstance(leg, Leg) else f"failed {leg.child_id}" for leg in legs]

        @after(legs)
        @step(final=True)
        def pay(self, ctx: Ctx) -> None:
            if self.fail_payment:
                msg = "card declined"
                raise NonRetryableError(msg)

    return Trip


LIMITS = (None, 1, 2, 3)
TRIPS = {(limit, tolerate): _trip(limit, tolerate) for limit in LIMITS for tolerate in range(3)}


@attrs.frozen
class Plan:
    """One drawn story."""

    items: int
    limit: int | None
    tolerate: int
    answers: list[tuple[int, bool]]
    """Each turn: which waiting child answers (an index into those waiting, modulo) and whether it accepts."""
    fail_payment: bool


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    items = draw(st.integers(0, 6))
    answers = draw(
        st.lists(st.tuples(st.integers(0, 5), st.booleans().map(lambda b: b or draw(st.booleans()))), max_size=8)
    )
    return Plan(items, draw(st.sampled_from(LIMITS)), draw(st.integers(0, 2)), answers, draw(st.booleans()))


@attrs.frozen
class Outcome:
    """What a story left: the parent, its history and children, the log."""

    parent: str
    status: S
    results: list[str]
    history: list[HistoryEvent]
    children: dict[str, S]
    log: list[str]


async def _play(plan: Plan) -> Outcome:
    LOG.clear()
    trip = TRIPS[plan.limit, plan.tolerate]
    async with Engine(clock=VirtualClock(autojump=True)) as engine:
        handle = await engine.start(trip(items=plan.items, fail_payment=plan.fail_payment))  # type: ignore[call-arg]
        await engine.wait_idle()
        answers = list(plan.answers)
        while True:
            ready = [c.id for c in engine.children(handle.instance_id) if engine.info(c.id).status is S.WAITING]
            if not ready:
                break
            pick, ok = answers.pop(0) if answers else (0, True)
            await engine.signal(ready[pick % len(ready)], Verdict(ok))
            await engine.wait_idle()
        status = await engine.wait_instance(handle.instance_id)
        children = {c.id: c.status for c in engine.children(handle.instance_id)}
        results: list[str] = engine.workflow(handle.instance_id).results
        return Outcome(handle.instance_id, status, results, handle.history(), children, list(LOG))


def _check(plan: Plan, out: Outcome) -> None:
    prefix = f"{out.parent}/1/"
    started = [str(e.detail) for e in out.history if e.kind is K.CHILD_STARTED]
    assert [f"{prefix}{i}" for i in range(len(started))] == started, "each started once, in item order"
    assert sorted(started) == sorted(out.children), "the children the parent named are all it has"
    books = sorted(e for e in out.log if e.startswith("book "))
    assert [f"book {i}" for i in range(len(started))] == books, "each child booked once"
    running = peak = 0
    for e in out.history:
        running += (e.kind is K.CHILD_STARTED) - (e.kind is K.CHILD_FINISHED)
        peak = max(peak, running)
    assert peak <= (plan.limit or plan.items), f"{peak} children ran at once"
    finished = [str(e.detail).rpartition(" ") for e in out.history if e.kind is K.CHILD_FINISHED]
    completed = [child for child, _, how in finished if how == "completed"]
    failed = [child for child, _, how in finished if how != "completed"]
    undone = [str(e.detail) for e in out.history if e.kind is K.COMPENSATION_STARTED and e.step == "legs"]
    unbooked = [f"{prefix}{e.removeprefix('unbook ')}" for e in out.log if e.startswith("unbook ")]
    if len(failed) > plan.tolerate:
        event("the fan-out failed")
        assert S.FAILED == out.status
        assert completed[::-1] == undone, "the completed children undone newest first"
        at = next(i for i, e in enumerate(out.history) if e.kind is K.STEP_FAILED and e.step == "legs")
        assert not [e for e in out.history[at:] if e.kind is K.CHILD_STARTED], "none started after the failure"
        assert {S.CANCELLED, S.FAILED} >= set(out.children.values()), "every child failed, cancelled or undone"
        assert [c for c in unbooked if c in completed] == undone, "each undone once, in that order"
        assert "unplan" == out.log[-1]
        return
    assert plan.items == len(started), "every item got its child"
    expected = [str(i) if f"{prefix}{i}" in completed else f"failed {prefix}{i}" for i in range(plan.items)]
    if plan.fail_payment:
        event("the parent failed after its fan-out")
        assert S.FAILED == out.status
        assert completed[::-1] == undone, "a completed fan-out's children undone newest first"
        assert [c for c in unbooked if c in completed] == undone
        assert "unplan" == out.log[-1]
    else:
        event("completed")
        assert (S.COMPLETED, expected) == (out.status, out.results), "results in item order"
        assert [] == undone


@settings(max_examples=150, deadline=None)
@given(plan=plans())
def test_fan_out_starts_each_child_once_joins_in_item_order_and_undoes_newest_first(run: Runner, plan: Plan) -> None:
    note(repr(plan))
    out = run(_play(plan))
    note(f"history: {[e.describe() for e in out.history]}")
    _check(plan, out)
