"""
Per-item fan-out: ``@fan_out(Child, limit=..., tolerate=...)`` starts a child per item (issue 10, item 1).

The children start at most ``limit`` at a time, ids ``<parent>/<visit>/<index>``,
each once; the handler gets their results in item order. By default the first
failure cancels the running children, never starts the pending ones, undoes the
completed ones newest first and fails the step; ``tolerate=k`` lets up to k fail.
Compensating the step, or cancelling the parent mid-fan-out, undoes the completed
children newest first. The children here wait for a ``Verdict`` message, so each
test decides in which order they end.
"""

# pyright: reportUnusedClass=false

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from statemachine_orch import (
    ChildWorkflowFailed,
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    MigrationError,
    NonRetryableError,
    Retry,
    Workflow,
    WorkflowDefinitionError,
    after,
    fan_out,
    mermaid,
    migration,
    paths,
    spec_of,
    step,
)
from statemachine_orch.diagrams import render
from tests.fanout_legs import LOG, Leg, Verdict, undone

if TYPE_CHECKING:
    from statemachine_orch import HistoryEvent
    from tests.conftest import EngineFactory, Runner

K = EventKind
S = InstanceStatus


class FoTrip(Workflow):
    """The parent: plan (undoable), a leg per item (two at a time), pay."""

    items: list[str] = attrs.field(factory=list[str])
    results: list[str] = attrs.field(factory=list[str])
    fail_payment: bool = False

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None: ...

    @plan.compensation
    def unplan(self, ctx: Ctx) -> None:
        LOG.append("unplan")

    @after(plan)
    @fan_out(Leg, limit=2)
    def legs(self, ctx: Ctx) -> list[Leg]:
        return [Leg(item=i) for i in self.items]

    @legs.on_result
    def booked(self, ctx: Ctx, legs: Sequence[Leg]) -> None:
        self.results = [leg.result for leg in legs]

    @after(legs)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None:
        if self.fail_payment:
            msg = "card declined"
            raise NonRetryableError(msg)


class FoTolerantTrip(Workflow):
    """Legs all at once; one may fail."""

    items: list[str] = attrs.field(factory=list[str])
    results: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None: ...

    @after(plan)
    @fan_out(Leg, tolerate=1)
    def legs(self, ctx: Ctx) -> list[Leg]:
        return [Leg(item=i) for i in self.items]

    @legs.on_result
    def booked(self, ctx: Ctx, legs: Sequence[Leg | ChildWorkflowFailed]) -> None:
        self.results = [leg.result if isinstance(leg, Leg) else f"failed {leg.status.value}" for leg in legs]

    @after(legs)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...


class FoRoutedTrip(Workflow):
    """A failed fan-out is routed to an apology; a retry first starts a new set of legs."""

    items: list[str] = attrs.field(factory=list[str])
    apologised: bool = False

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None: ...

    @after(plan)
    @fan_out(Leg, retry=Retry(attempts=2, initial=1.0))
    def legs(self, ctx: Ctx) -> list[Leg]:
        return [Leg(item=i) for i in self.items]

    @after(legs)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...

    @after(legs, on_error=ChildWorkflowFailed)
    @step(final=True)
    def apologise(self, ctx: Ctx) -> None:
        self.apologised = True


def children_of(engine: Engine, parent: str) -> dict[int, str]:
    """The parent's children by index (the last part of their ids)."""
    return {int(c.id.rpartition("/")[2]): c.id for c in engine.children(parent)}


def waiting(engine: Engine, parent: str) -> list[int]:
    """The indexes of the parent's children waiting for their verdict."""
    return sorted(i for i, c in children_of(engine, parent).items() if engine.info(c).status is S.WAITING)


async def verdict(engine: Engine, parent: str, index: int, *, ok: bool) -> None:
    """Tell child *index* of *parent* its verdict, and let everything settle."""
    await engine.signal(children_of(engine, parent)[index], Verdict(ok))
    await engine.wait_idle()


def of(history: list[HistoryEvent], kind: EventKind) -> list[str]:
    return [str(e.detail) for e in history if e.kind is kind]


def test_children_start_at_most_limit_at_a_time_and_results_come_in_item_order(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Five legs, two at a time, ending out of order: ids <parent>/<visit>/<index>, each started once."""

    async def scenario() -> tuple[str, list[list[int]], FoTrip, list[HistoryEvent]]:
        async with new_engine() as engine:
            handle = await engine.start(FoTrip(items=["a", "b", "c", "d", "e"]))
            await engine.wait_idle()
            seen = [waiting(engine, handle.instance_id)]
            for index in (1, 0, 3, 4, 2):
                await verdict(engine, handle.instance_id, index, ok=True)
                seen.append(waiting(engine, handle.instance_id))
            return handle.instance_id, seen, await handle.result(), handle.history()

    parent, seen, trip, history = run(scenario())
    assert [[0, 1], [0, 2], [2, 3], [2, 4], [2], []] == seen, "never more than two at once, started in item order"
    assert ["A", "B", "C", "D", "E"] == trip.results, "in item order, whatever order they ended in"
    assert [f"{parent}/1/{i}" for i in range(5)] == of(history, K.CHILD_STARTED)
    finished = [f"{parent}/1/{i} completed" for i in (1, 0, 3, 4, 2)]
    assert finished == of(history, K.CHILD_FINISHED)
    running = 0
    for e in history:
        running += (e.kind is K.CHILD_STARTED) - (e.kind is K.CHILD_FINISHED)
        assert running <= 2


def test_an_empty_list_completes_the_step_with_no_children(run: Runner, new_engine: EngineFactory) -> None:
    async def scenario() -> tuple[FoTrip, int]:
        async with new_engine() as engine:
            handle = await engine.start(FoTrip(items=[]))
            return await handle.result(), len(engine.children(handle.instance_id))

    trip, children = run(scenario())
    assert ([], 0) == (trip.results, children)


def test_the_first_failure_cancels_the_running_undoes_the_completed_newest_first_and_starts_no_more(
    run: Runner, new_engine: EngineFactory
) -> None:
    LOG.clear()

    async def scenario() -> tuple[str, dict[str, S], list[HistoryEvent], str | None]:
        async with new_engine() as engine:
            handle = await engine.start(FoTrip(items=["a", "b", "c", "d", "e"]))
            await engine.wait_idle()
            await verdict(engine, handle.instance_id, 1, ok=True)  # b completes first
            await verdict(engine, handle.instance_id, 0, ok=True)  # then a
            await verdict(engine, handle.instance_id, 3, ok=False)  # d fails while c runs; e never starts
            await engine.wait_instance(handle.instance_id)
            statuses = {c.id: c.status for c in engine.children(handle.instance_id)}
            return handle.instance_id, statuses, handle.history(), engine.info(handle.instance_id).error

    parent, statuses, history, error = run(scenario())
    ids = [f"{parent}/1/{i}" for i in range(4)]
    assert dict(zip(ids, [S.CANCELLED, S.CANCELLED, S.CANCELLED, S.FAILED], strict=True)) == statuses
    assert [f"{parent}/1/0", f"{parent}/1/1"] == of(history, K.COMPENSATION_STARTED)[:2], "a, then b: newest first"
    assert ["unbook d", "unbook c", "unbook a", "unbook b", "unplan"] == undone()
    assert f"legs: ChildWorkflowFailed: child {parent}/1/3 ended failed: settle: NonRetryableError: d refused" == error
    step_failed = next(i for i, e in enumerate(history) if e.kind is K.STEP_FAILED)
    assert all(e.kind is not K.CHILD_STARTED for e in history[step_failed:])


def test_up_to_tolerate_children_may_fail(run: Runner, new_engine: EngineFactory) -> None:
    async def scenario(fails: tuple[int, ...]) -> tuple[S, list[str]]:
        async with new_engine() as engine:
            handle = await engine.start(FoTolerantTrip(items=["a", "b", "c"]))
            await engine.wait_idle()
            for index in range(3):
                await verdict(engine, handle.instance_id, index, ok=index not in fails)
            status = await engine.wait_instance(handle.instance_id)
            return status, engine.workflow(handle.instance_id).results

    assert (S.COMPLETED, ["A", "failed failed", "C"]) == run(scenario((1,)))
    assert (S.FAILED, []) == run(scenario((0, 2)))


def test_compensating_a_completed_fan_out_undoes_its_children_newest_first(
    run: Runner, new_engine: EngineFactory
) -> None:
    LOG.clear()

    async def scenario() -> tuple[str, list[HistoryEvent], list[S]]:
        async with new_engine() as engine:
            handle = await engine.start(FoTrip(items=["a", "b", "c"], fail_payment=True))
            await engine.wait_idle()
            for index in (1, 0, 2):
                await verdict(engine, handle.instance_id, index, ok=True)
            await engine.wait_instance(handle.instance_id)
            return handle.instance_id, handle.history(), [c.status for c in engine.children(handle.instance_id)]

    parent, history, children = run(scenario())
    assert ["unbook c", "unbook a", "unbook b", "unplan"] == undone(), "completed b, a, c: undone c, a, b"
    started = of(history, K.COMPENSATION_STARTED)
    assert [f"{parent}/1/2", f"{parent}/1/0", f"{parent}/1/1", "unplan"] == started
    assert ["legs.children", "unplan"] == of(history, K.COMPENSATION_COMPLETED)
    assert [S.CANCELLED] * 3 == children


def test_cancelling_the_parent_mid_fan_out_undoes_the_completed_and_cancels_the_running(
    run: Runner, new_engine: EngineFactory
) -> None:
    LOG.clear()

    async def scenario() -> tuple[S, dict[int, S]]:
        async with new_engine() as engine:
            handle = await engine.start(FoTrip(items=["a", "b", "c", "d"]))
            await engine.wait_idle()
            await verdict(engine, handle.instance_id, 0, ok=True)  # a completes, c starts
            status = await engine.cancel(handle.instance_id, reason="trip called off")
            await engine.wait_idle()
            found = children_of(engine, handle.instance_id)
            return status, {i: engine.info(c).status for i, c in found.items()}

    status, children = run(scenario())
    assert S.CANCELLED == status
    assert {0: S.CANCELLED, 1: S.CANCELLED, 2: S.CANCELLED} == children, "d never started"
    assert ["unbook b", "unbook c", "unbook a", "unplan"] == sorted(undone()[:2]) + undone()[2:]


def test_a_failed_fan_out_is_retried_with_new_children_then_routed(run: Runner, new_engine: EngineFactory) -> None:
    async def scenario() -> tuple[bool, list[str], list[S]]:
        async with new_engine() as engine:
            handle = await engine.start(FoRoutedTrip(items=["a", "b"]))
            await engine.wait_idle()
            await verdict(engine, handle.instance_id, 0, ok=True)
            await verdict(engine, handle.instance_id, 1, ok=False)  # attempt 1 fails: a is undone
            for index in (0, 1):
                await engine.signal(f"{handle.instance_id}/1.2/{index}", Verdict(ok=index == 0))
            await engine.wait_instance(handle.instance_id)
            started = of(handle.history(), K.CHILD_STARTED)
            statuses = [engine.info(c).status for c in started]
            return engine.workflow(handle.instance_id).apologised, started, statuses

    apologised, started, statuses = run(scenario())
    assert apologised
    assert ["1/0", "1/1", "1.2/0", "1.2/1"] == [c.split("/", 1)[1] for c in started]
    assert [S.CANCELLED, S.FAILED, S.CANCELLED, S.FAILED] == statuses


class FoBadBuilders(Workflow):
    """Legs built wrongly, as chosen by ``how``."""

    how: str

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None: ...

    @after(plan)
    @fan_out(Leg)
    def legs(self, ctx: Ctx) -> list[Leg]:
        leg = Leg(item="x")
        built: dict[str, Any] = {
            "a string": "legs",
            "another workflow": [FoTrip()],
            "the same object twice": [leg, leg],
        }
        return built[self.how]  # type: ignore[no-any-return]

    @after(legs)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (
            "a string",
            "legs: TypeError: legs must return a list of new Leg objects to start as its children, got 'legs'",
        ),
        (
            "another workflow",
            "legs: TypeError: legs must return new Leg objects to start as its children; item 0 is FoTrip(",
        ),
        (
            "the same object twice",
            "legs: TypeError: legs returned the same Leg object as items 0 and 1; build one per item",
        ),
    ],
)
def test_what_the_method_builds_is_checked(run: Runner, new_engine: EngineFactory, how: str, message: str) -> None:
    async def scenario() -> str | None:
        async with new_engine() as engine:
            handle = await engine.start(FoBadBuilders(how=how))
            await engine.wait_instance(handle.instance_id)
            return engine.info(handle.instance_id).error

    error = run(scenario())
    assert error is not None
    assert error.startswith(message)


def _problems(build: Any) -> list[tuple[str | None, str, str]]:
    with pytest.raises(WorkflowDefinitionError) as err:
        build()
    return [(p.step, p.rule, p.message) for p in err.value.problems]


def test_bad_limits_and_tolerances_are_definition_errors() -> None:
    def build() -> None:
        class FoBadOptions(Workflow):
            @step(initial=True)
            def plan(self, ctx: Ctx) -> None: ...

            @after(plan)
            @fan_out(Leg, limit=0, tolerate=-1)
            def legs(self, ctx: Ctx) -> list[Leg]:
                return []

            @legs.compensation
            def unlegs(self, ctx: Ctx) -> None: ...

            @after(legs)
            @step(final=True)
            def pay(self, ctx: Ctx) -> None: ...

    assert [
        (
            "legs",
            "subflow-compensation",
            (
                "is a fan-out step with its own compensation; a fan-out is undone by its children's compensations: "
                "drop this one"
            ),
        ),
        (
            "legs",
            "bad-fan-out",
            "@fan_out(limit=0) must be a whole number >= 1 (children at once), or None for all",
        ),
        ("legs", "bad-fan-out", "@fan_out(tolerate=-1) must be a whole number >= 0 (children that may fail)"),
    ] == _problems(build)


def test_the_handler_and_the_child_class_are_checked() -> None:
    def build() -> None:
        class FoBadHandler(Workflow):
            @step(initial=True)
            def plan(self, ctx: Ctx) -> None: ...

            @after(plan)
            @fan_out(str)
            def legs(self, ctx: Ctx) -> list[str]:
                return []

            @legs.on_result  # type: ignore[arg-type]
            def booked(self, ctx: Ctx) -> None: ...  # pyright: ignore[reportArgumentType]

            @after(legs)
            @step(final=True)
            def pay(self, ctx: Ctx) -> None: ...

    assert [
        ("booked", "method-signature", "must have the signature (self, ctx, results), not (self, ctx)"),
        ("legs", "subflow-not-a-workflow", "@fan_out(str (type)) needs another concrete Workflow class as its child"),
    ] == sorted(_problems(build))


def test_spec_paths_and_diagrams_show_the_fan_out() -> None:
    step_spec = spec_of(FoTrip).step("legs")
    assert (Leg, 2, 0) == (
        step_spec.child,
        step_spec.fan and step_spec.fan.limit,
        step_spec.fan and step_spec.fan.tolerate,
    )
    shown = [str(p) for p in paths(FoTrip)]
    assert "plan -> legs (children: FanoutLeg, 2 at a time) -> pay => completed" in shown
    assert any(p.endswith("undo children FanoutLeg of legs, unplan => failed") for p in shown), shown
    assert "    legs: legs (fan-out: Leg, 2 at a time)" in mermaid(FoTrip).splitlines()
    assert "fan-out: Leg, all at once, tolerates 1" in render(FoTolerantTrip, "dot").decode()


class FoTripV2(Workflow, name="FoTrip", version="2"):
    """A version the migration test tries to move a fan-out to."""

    items: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None: ...

    @after(plan)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...

    @migration(FoTrip)
    @staticmethod
    def from_v1(old: FoTrip, step: str) -> tuple[FoTripV2, str]:
        return FoTripV2(items=old.items), "pay"


def test_an_instance_waiting_on_its_fan_out_is_not_migrated(run: Runner, new_engine: EngineFactory) -> None:
    async def scenario() -> str:
        async with new_engine() as engine:
            handle = await engine.start(FoTrip(items=["a"]))
            await engine.wait_idle()
            with pytest.raises(MigrationError) as err:
                await engine.migrate(handle.instance_id, to=FoTripV2)
            return str(err.value)

    assert run(scenario()).endswith(
        "waits at the fan-out step legs for its children; migrate it before the fan-out or after it"
    )
