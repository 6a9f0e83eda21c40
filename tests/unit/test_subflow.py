"""
Child workflows: ``@subflow(Child)`` starts a child instance and waits for it (issue 5).

The parent parks without a worker while the child runs; the child's end resumes
it; the child's result reaches ``@x.on_result``; compensating the parent
compensates the child through the child's own compensations; cancelling the
parent cancels the child; a failed child fails the step with ChildWorkflowFailed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from statemachine_orch import (
    ChildWorkflowFailed,
    Ctx,
    DefinitionProblem,
    Engine,
    EventKind,
    InstanceStatus,
    SqliteStore,
    VirtualClock,
    Workflow,
    WorkflowDefinitionError,
    after,
    human_task,
    step,
    subflow,
)

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner

K = EventKind
UNDONE: list[str] = []


class SfParcel(Workflow):
    """The child: pack (compensable), then label; a human check for 'manual' parcels."""

    parcel: str
    tracking: str = ""

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None: ...

    @pack.compensation
    def unpack(self, ctx: Ctx) -> None:
        UNDONE.append(f"unpack {self.parcel}")

    @after(pack, when=lambda wf: wf.parcel == "manual")
    @human_task(assignee="clerk")
    def check(self, ctx: Ctx) -> None: ...

    @after(pack)
    @after(check)
    @step(final=True)
    def label(self, ctx: Ctx) -> None:
        if self.parcel == "bad":
            msg = "cannot label"
            raise RuntimeError(msg)
        self.tracking = f"T-{self.parcel}"


class SfOrder(Workflow):
    """The parent: pick, ship the parcel through the child, bill."""

    parcel: str
    fail_billing: bool = False
    tracking: str = ""

    @step(initial=True)
    def pick(self, ctx: Ctx) -> None: ...

    @pick.compensation
    def unpick(self, ctx: Ctx) -> None:
        UNDONE.append(f"unpick {self.parcel}")

    @after(pick)
    @subflow(SfParcel)
    def ship(self, ctx: Ctx) -> SfParcel:
        return SfParcel(parcel=self.parcel)

    @ship.on_result
    def shipped(self, ctx: Ctx, child: SfParcel) -> None:
        self.tracking = child.tracking

    @after(ship)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None:
        if self.fail_billing:
            msg = "billing is down"
            raise RuntimeError(msg)


def _no_resume(child: object) -> None:
    """A crash between a child's last commit and resuming its parent."""


def kinds(history: list[object]) -> list[tuple[object, object, object]]:
    return [(e.kind, e.step, e.detail) for e in history]  # type: ignore[attr-defined]


def test_the_parent_waits_for_its_child_and_takes_its_result(run: Runner, new_engine: EngineFactory) -> None:
    async def scenario() -> tuple[
        InstanceStatus, str, list[str], list[tuple[EventKind, str | None, str | None]], str, str
    ]:
        async with new_engine() as engine:
            handle = await engine.start(SfOrder(parcel="p1"))
            order = await handle.result()
            children = engine.children(handle.instance_id)
            history = [(e.kind, e.step, e.detail) for e in handle.history()]
            shown = engine.tree(handle.instance_id)
            return (
                handle.status,
                order.tracking,
                [f"{c.id} {c.status.value}" for c in children],
                history,
                shown,
                handle.instance_id,
            )

    status, tracking, children, history, tree, parent = run(scenario())
    assert status is InstanceStatus.COMPLETED
    assert tracking == "T-p1", "the on_result handler copied the child's variable"
    [child] = children
    assert child.endswith(" completed")
    assert tree == f"{parent} SfOrder completed\n  ship -> {child.split()[0]} SfParcel completed"
    child_id = child.split()[0]
    assert (K.CHILD_STARTED, "ship", child_id) in history
    assert (K.CHILD_FINISHED, "ship", f"{child_id} completed") in history
    started = history.index((K.CHILD_STARTED, "ship", child_id))
    assert history[started + 1] == (K.STATUS_CHANGED, None, "waiting"), "the parent parks while the child runs"


def test_a_parent_waiting_on_a_childs_task_holds_no_worker(run: Runner, clock: VirtualClock) -> None:
    async def scenario() -> tuple[int, InstanceStatus]:
        async with Engine(clock=clock, concurrency=1) as engine:
            handles = [await engine.start(SfOrder(parcel="manual")) for _ in range(3)]
            await engine.wait_idle()
            tasks = engine.tasks(user="clerk")
            for task in tasks:
                await engine.complete_task(task.id, user="clerk")
            for h in handles:
                await h.result()
            return len(tasks), handles[-1].status

    open_tasks, status = run(scenario())
    assert open_tasks == 3, "with one worker, three parents and their children all reached the clerk's task"
    assert status is InstanceStatus.COMPLETED


def test_compensating_the_parent_compensates_the_child_once(run: Runner, new_engine: EngineFactory) -> None:
    UNDONE.clear()

    async def scenario() -> tuple[InstanceStatus, list[InstanceStatus]]:
        async with new_engine() as engine:
            handle = await engine.start(SfOrder(parcel="p2", fail_billing=True))
            status = await engine.wait_instance(handle.instance_id)
            return status, [c.status for c in engine.children(handle.instance_id)]

    status, children = run(scenario())
    assert status is InstanceStatus.FAILED
    assert children == [InstanceStatus.CANCELLED], "the completed child was undone"
    assert UNDONE == ["unpack p2", "unpick p2"], "the child's compensation first (newest), then the parent's, once each"


def test_a_failed_child_fails_the_step_with_child_workflow_failed(run: Runner, new_engine: EngineFactory) -> None:
    UNDONE.clear()

    async def scenario() -> tuple[str | None, list[InstanceStatus]]:
        async with new_engine() as engine:
            handle = await engine.start(SfOrder(parcel="bad"))
            await engine.wait_instance(handle.instance_id)
            return engine.info(handle.instance_id).error, [c.status for c in engine.children(handle.instance_id)]

    error, children = run(scenario())
    assert error is not None
    assert error.startswith("ship: ChildWorkflowFailed: child ")
    assert error.endswith("ended failed: label: RuntimeError: cannot label")
    assert children == [InstanceStatus.FAILED]
    assert UNDONE == ["unpack bad", "unpick bad"], "the child undid its own pack; the parent its pick"
    assert issubclass(ChildWorkflowFailed, Exception)


def test_cancelling_the_parent_cancels_the_child(run: Runner, new_engine: EngineFactory) -> None:
    UNDONE.clear()

    async def scenario() -> tuple[InstanceStatus, list[InstanceStatus], int]:
        async with new_engine() as engine:
            handle = await engine.start(SfOrder(parcel="manual"))
            await engine.wait_idle()
            status = await engine.cancel(handle.instance_id, reason="customer left")
            await engine.wait_idle()
            children = [c.status for c in engine.children(handle.instance_id)]
            return status, children, len(engine.tasks(user="clerk"))

    status, children, open_tasks = run(scenario())
    assert status is InstanceStatus.CANCELLED
    assert children == [InstanceStatus.CANCELLED]
    assert open_tasks == 0, "the child's task was cancelled with it"
    assert sorted(UNDONE) == ["unpack manual", "unpick manual"]


def test_the_child_survives_a_restart_and_resumes_its_parent(run: Runner, tmp_path: Path) -> None:
    db = tmp_path / "orch.db"

    async def first() -> str:
        with SqliteStore(db) as store:
            async with Engine(store, clock=VirtualClock()) as engine:
                handle = await engine.start(SfOrder(parcel="manual"))
                await engine.wait_idle()
                return handle.instance_id

    async def second(parent: str) -> tuple[InstanceStatus, str]:
        with SqliteStore(db) as store:
            return await finish(store, parent)

    async def finish(store: SqliteStore, parent: str) -> tuple[InstanceStatus, str]:
        async with Engine(store, clock=VirtualClock()) as engine:
            [task] = engine.tasks(user="clerk")
            await engine.complete_task(task.id, user="clerk")
            status = await engine.wait_instance(parent)
            return status, engine.workflow(parent).tracking

    parent = run(first())
    status, tracking = run(second(parent))
    assert (status, tracking) == (InstanceStatus.COMPLETED, "T-manual")


def test_a_child_that_ended_while_no_engine_ran_resumes_its_parent_on_recovery(run: Runner, tmp_path: Path) -> None:
    db = tmp_path / "orch.db"

    async def first() -> tuple[str, str]:
        with SqliteStore(db) as store:
            async with Engine(store, clock=VirtualClock()) as engine:
                handle = await engine.start(SfOrder(parcel="manual"))
                await engine.wait_idle()
                [child] = engine.children(handle.instance_id)
                return handle.instance_id, child.id

    parent, child = run(first())

    # Finish the child on an engine that "crashes" between the child's last commit
    # and resuming the parent: the parent's row stays parked on the child.
    async def finish_child() -> InstanceStatus | None:
        with SqliteStore(db) as store:
            engine = Engine(store, clock=VirtualClock())
            setattr(engine, "_child_ended", _no_resume)  # noqa: B010 - the fault
            [task] = engine.tasks(user="clerk")
            await engine.complete_task(task.id, user="clerk")
            await engine.wait_instance(child)
            await engine.aclose()
            info = store.info(parent)
            return info.status if info is not None else None

    assert run(finish_child()) is InstanceStatus.WAITING

    async def recover() -> InstanceStatus:
        with SqliteStore(db) as store:
            async with Engine(store, clock=VirtualClock()) as engine:
                return await asyncio.wait_for(engine.wait_instance(parent), 10)

    assert run(recover()) is InstanceStatus.COMPLETED


def test_subflow_of_something_that_is_not_a_workflow_is_a_definition_error() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:

        class SfBadChild(Workflow):  # pyright: ignore[reportUnusedClass]
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @subflow(dict)  # pyright: ignore[reportUnknownArgumentType]
            def b(self, ctx: Ctx) -> dict[str, int]:
                return {}

            @after(b)  # pyright: ignore[reportUnknownArgumentType]
            @step(final=True)
            def c(self, ctx: Ctx) -> None: ...

    message = "@subflow(dict (type)) needs another concrete Workflow class as its child"
    assert [DefinitionProblem("SfBadChild", "b", "subflow-not-a-workflow", message)] == list(err.value.problems)


def test_parents_undo_their_children_without_holding_workers(run: Runner, clock: VirtualClock) -> None:
    """With one worker, failing parents still undo their completed children: a parent parks while its child undoes."""
    UNDONE.clear()

    async def scenario() -> list[InstanceStatus]:
        async with Engine(clock=clock, concurrency=1) as engine:
            handles = [await engine.start(SfOrder(parcel=f"p{i}", fail_billing=True)) for i in range(3)]
            statuses = [await engine.wait_instance(h.instance_id) for h in handles]
            children = [c.status for h in handles for c in engine.children(h.instance_id)]
            return statuses + children

    statuses = run(scenario())
    assert statuses == [InstanceStatus.FAILED] * 3 + [InstanceStatus.CANCELLED] * 3
    assert sorted(UNDONE) == sorted([f"unpack p{i}" for i in range(3)] + [f"unpick p{i}" for i in range(3)])


UNDO_TRIES: list[str] = []


class SfStubbornParcel(Workflow):
    """A child whose undo fails its first three attempts (its own retry policy's all)."""

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None: ...

    @pack.compensation
    def unpack(self, ctx: Ctx) -> None:
        UNDO_TRIES.append(ctx.instance_id)
        if len(UNDO_TRIES) <= 3:
            msg = "warehouse offline"
            raise ConnectionError(msg)

    @after(pack)
    @step(final=True)
    def seal(self, ctx: Ctx) -> None: ...


class SfStubbornOrder(Workflow):
    """A parent that fails after its child completed."""

    @subflow(SfStubbornParcel, initial=True)
    def ship(self, ctx: Ctx) -> SfStubbornParcel:
        return SfStubbornParcel()

    @after(ship)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None:
        msg = "billing is down"
        raise RuntimeError(msg)


def test_a_childs_failed_undo_is_retried_by_the_parents_compensation_policy(
    run: Runner, new_engine: EngineFactory
) -> None:
    UNDO_TRIES.clear()

    async def scenario() -> tuple[InstanceStatus, InstanceStatus, list[tuple[EventKind, str | None, int]]]:
        async with new_engine() as engine:
            handle = await engine.start(SfStubbornOrder())
            status = await engine.wait_instance(handle.instance_id)
            [child] = engine.children(handle.instance_id)
            undo = [
                (e.kind, e.step, e.attempt)
                for e in handle.history()
                if e.kind.value.startswith("compensation") or e.kind is K.RETRY_SCHEDULED
            ]
            return status, child.status, undo

    status, child, undo = run(scenario())
    assert (status, child) == (InstanceStatus.FAILED, InstanceStatus.CANCELLED)
    assert len(UNDO_TRIES) == 4, "the child's three attempts, then one more when the parent retried"
    assert undo == [
        (K.COMPENSATION_STARTED, "ship", 1),
        (K.COMPENSATION_FAILED, "ship", 1),
        (K.RETRY_SCHEDULED, "ship", 2),
        (K.COMPENSATION_STARTED, "ship", 2),
        (K.COMPENSATION_COMPLETED, "ship", 2),
    ]
