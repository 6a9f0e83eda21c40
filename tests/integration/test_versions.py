"""
Issue 3: versioned workflows in one store.

Version-1 instances parked in the file finish on version 1 after version 2 is
defined and registered; new instances of version 2 record version 2;
``engine.migrate(id, to=OrderV2)`` moves a waiting instance through a declared
``@migration`` (keeping its task when it waits on the same human-task step,
otherwise cancelling it and entering the new step afresh), and refuses with a
``MigrationError`` — changing nothing — when there is no migration, the instance
is busy or terminal, or the migration returns something unusable. An instance
whose stored version has no class in this process is reported by ``recover()``
and listed, not crashed on.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.
# A @migration function takes the old workflow object, not `self`: declared as a
# @staticmethod it satisfies pyright, mypy and ruff (a plain def is flagged by
# pyright's reportGeneralTypeIssues and ruff's N805).

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    MigrationError,
    SqliteStore,
    TaskStatus,
    UnknownWorkflowVersion,
    VirtualClock,
    Workflow,
    WorkflowDefinitionError,
    after,
    human_task,
    migration,
    step,
)
from tests.integration.helpers import entries, eventually, of_kind, open_engine

if TYPE_CHECKING:
    from tests.conftest import Runner

ROOT = Path(__file__).resolve().parents[2]


@attrs.frozen
class Approval:
    """A manager's approval."""

    ok: bool


class Warehouse:
    """The in-process service orders call; it can hold a caller until the test opens the gate."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.waiting = False

    async def check(self) -> None:
        """Return at once, or when the gate opens."""
        if self.gate is not None:
            self.waiting = True
            await self.gate.wait()


class OrderV1(Workflow, name="Order", version="1"):
    """Version 1: receive, a manager approves, ship."""

    amount: int
    trail: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    async def receive(self, ctx: Ctx) -> None:
        await ctx.call("warehouse", "check")
        self.trail.append("receive v1")

    @after(receive)
    @human_task(assignee="manager", form=Approval)
    def approve(self, ctx: Ctx, form: Approval) -> None:
        self.trail.append("approve v1")

    @after(approve)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        self.trail.append("ship v1")


class OrderV2(Workflow, name="Order", version="2"):
    """Version 2: big orders need the director instead of the manager, and orders are packed before shipping."""

    amount: int
    trail: list[str] = attrs.field(factory=list[str])
    migrated: bool = False

    @step(initial=True)
    async def receive(self, ctx: Ctx) -> None:
        await ctx.call("warehouse", "check")
        self.trail.append("receive v2")

    @after(receive, when=lambda wf: wf.amount > 1000)
    @human_task(assignee="director", form=Approval)
    def director_approval(self, ctx: Ctx, form: Approval) -> None:
        self.trail.append("director v2")

    @after(receive)
    @human_task(assignee="manager", form=Approval)
    def approve(self, ctx: Ctx, form: Approval) -> None:
        self.trail.append("approve v2")

    @after(approve)
    @after(director_approval)
    @step
    def pack(self, ctx: Ctx) -> None:
        self.trail.append("pack v2")

    @after(pack)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        self.trail.append("ship v2")

    @migration(OrderV1)
    @staticmethod
    def from_v1(old: OrderV1, step: str) -> tuple[OrderV2, str]:
        new = OrderV2(amount=old.amount, trail=[*old.trail], migrated=True)
        if step == "approve" and old.amount > 1000:
            return new, "director_approval"
        return new, step


class OrderV3(Workflow, name="Order", version="3"):
    """Version 3: declares no migration at all."""

    amount: int

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None: ...

    @after(receive)
    @human_task(assignee="manager", form=Approval, final=True)
    def approve(self, ctx: Ctx, form: Approval) -> None: ...


class OrderV4(Workflow, name="Order", version="4"):
    """Version 4: a migration that returns a step this version does not have, or raises."""

    amount: int

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None: ...

    @after(receive)
    @human_task(assignee="manager", form=Approval, final=True)
    def approve(self, ctx: Ctx, form: Approval) -> None: ...

    @migration(OrderV1)
    @staticmethod
    def from_v1(old: OrderV1, step: str) -> tuple[OrderV4, str]:
        if old.amount < 0:
            msg = "negative amount"
            raise ValueError(msg)
        return OrderV4(amount=old.amount), "vanished_step"


class OrderV5(Workflow, name="Order", version="5"):
    """Version 5: a migration that hands the new version a variable of the wrong type (issue 8)."""

    amount: int

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None: ...

    @after(receive)
    @human_task(assignee="manager", form=Approval, final=True)
    def approve(self, ctx: Ctx, form: Approval) -> None: ...

    @migration(OrderV1)
    @staticmethod
    def from_v1(old: OrderV1, step: str) -> tuple[OrderV5, str]:
        return OrderV5(amount=cast("int", f"{old.amount} EUR")), step


VERSIONS: list[type[Workflow]] = [OrderV1, OrderV2, OrderV3, OrderV4, OrderV5]


async def park_v1(db_path: Path, clock: VirtualClock, *amounts: int) -> list[str]:
    """Start version-1 orders in an engine that knows only version 1; they park on their approval."""
    async with open_engine(db_path, clock, workflows=[OrderV1]) as engine:
        engine.services.register("warehouse", Warehouse())
        ids: list[str] = []
        for amount in amounts:
            handle = await engine.start(OrderV1(amount=amount))
            await handle.wait_idle()
            ids.append(handle.instance_id)
        return ids


def test_version_1_instances_finish_on_version_1_after_version_2_is_registered(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: parked v1 instances keep running v1's steps; new OrderV2 instances record version 2."""

    async def scenario() -> tuple[list[str], list[str], str, list[str], list[str | None]]:
        [old_id] = await park_v1(db_path, clock, 10)
        async with open_engine(db_path, clock, workflows=VERSIONS) as engine:
            engine.services.register("warehouse", Warehouse())
            await engine.recover()
            new = await engine.start(OrderV2(amount=20))
            await new.wait_idle()
            for task in engine.tasks(user="manager"):
                await engine.complete_task(task.id, user="manager", form=Approval(ok=True))
            await engine.wait_instance(old_id)
            new_wf = await new.result()
            old_wf: OrderV1 = engine.workflow(old_id)
            versions = [engine.info(i).version for i in (old_id, new.instance_id)]
            started = [e.detail for e in of_kind(engine.history(new.instance_id), EventKind.INSTANCE_STARTED)]
            return old_wf.trail, new_wf.trail, type(old_wf).__name__, versions, started

    old_trail, new_trail, old_class, versions, started = run(scenario())
    assert ["receive v1", "approve v1", "ship v1"] == old_trail
    assert "OrderV1" == old_class
    assert ["receive v2", "approve v2", "pack v2", "ship v2"] == new_trail
    assert ["1", "2"] == versions
    assert ["Order version 2"] == started


def test_migrating_a_waiting_instance_to_the_same_human_task_keeps_its_task(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: a v1 order waiting on approve moves to v2's approve with the same open task, then runs v2."""

    async def scenario() -> tuple[
        str, str, str | None, list[str], list[str], list[tuple[str, str | None, int, str | None]]
    ]:
        [order_id] = await park_v1(db_path, clock, 10)
        async with open_engine(db_path, clock, workflows=VERSIONS) as engine:
            engine.services.register("warehouse", Warehouse())
            [before] = engine.tasks(instance_id=order_id)
            info = await engine.migrate(order_id, to=OrderV2)
            [kept] = engine.tasks(instance_id=order_id)
            await engine.complete_task(kept.id, user="manager", form=Approval(ok=True))
            await engine.wait_instance(order_id)
            wf: OrderV2 = engine.workflow(order_id)
            migrated = [
                e for e in entries(engine.history(order_id), order_id) if e[0] in {"migrated", "task_cancelled"}
            ]
            return before.id, kept.id, info.step, [info.version, info.status.value], wf.trail, migrated

    before, kept, at, version_status, trail, migrated = run(scenario())
    assert before == kept
    assert "approve" == at
    assert ["2", "waiting"] == version_status
    assert ["receive v1", "approve v2", "pack v2", "ship v2"] == trail
    assert [("migrated", "approve", 0, "version 1 -> 2")] == migrated


def test_migrating_to_another_step_cancels_the_task_and_enters_the_new_step(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: a big v1 order waiting on the manager moves to v2's director approval: task cancelled, new one opened."""

    async def scenario() -> tuple[
        list[tuple[str, str | None, int, str | None]], list[tuple[str, str | None]], list[str]
    ]:
        [order_id] = await park_v1(db_path, clock, 5000)
        async with open_engine(db_path, clock, workflows=VERSIONS) as engine:
            engine.services.register("warehouse", Warehouse())
            await engine.migrate(order_id, to=OrderV2)
            await engine.wait_instance(order_id, terminal=False)
            tasks = [(t.step, t.assignee) for t in engine.tasks()]
            [new_task] = engine.tasks(user="director")
            await engine.complete_task(new_task.id, user="director", form=Approval(ok=True))
            await engine.wait_instance(order_id)
            wf: OrderV2 = engine.workflow(order_id)
            history = entries(engine.history(order_id), order_id)
            return history[5:11], tasks, wf.trail

    history, tasks, trail = run(scenario())
    assert [
        ("status_changed", None, 0, "waiting"),
        ("task_cancelled", "approve", 0, "ID.1 (migrated)"),
        ("status_changed", None, 0, "running"),
        ("migrated", "director_approval", 0, "version 1 -> 2"),
        ("task_created", "director_approval", 0, history[4][3]),
        ("status_changed", None, 0, "waiting"),
    ] == history
    assert [("director_approval", "director")] == tasks
    assert ["receive v1", "director v2", "pack v2", "ship v2"] == trail


def test_the_task_a_migration_cancels_stays_cancelled_under_its_own_id(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: after the migration, the old task id still names the cancelled approve task, not the new one."""

    async def scenario() -> tuple[bool, tuple[str, TaskStatus] | None]:
        [order_id] = await park_v1(db_path, clock, 5000)
        async with open_engine(db_path, clock, workflows=VERSIONS) as engine:
            engine.services.register("warehouse", Warehouse())
            [old_task] = engine.tasks(instance_id=order_id)
            await engine.migrate(order_id, to=OrderV2)
            await engine.wait_instance(order_id, terminal=False)
            [new_task] = engine.tasks(instance_id=order_id)
            old = engine.store.task(old_task.id)
            return new_task.id != old_task.id, None if old is None else (old.step, old.status)

    assert (True, ("approve", TaskStatus.CANCELLED)) == run(scenario())


def unchanged(engine: Engine, order_id: str) -> tuple[str, str, str | None, int]:
    """What a refused migration must leave as it was: version, status, step, open tasks."""
    info = engine.info(order_id)
    return info.version, info.status.value, info.step, len(engine.tasks(instance_id=order_id))


@pytest.mark.parametrize(
    ("target", "amount", "expected"),
    [
        (OrderV3, 10, "instance ID: OrderV3 declares no @migration from Order version 1"),
        (
            OrderV4,
            10,
            (
                "instance ID: migration from_v1 must return (OrderV4(...), a step of it), got "
                "(OrderV4(amount=10), 'vanished_step')"
            ),
        ),
        (OrderV4, -1, "instance ID: migration from_v1 raised ValueError: negative amount"),
        (
            OrderV5,
            10,
            (
                "instance ID: migration from_v1 returned variables of the wrong type: "
                "Order.amount: expected int but got '10 EUR' (type=str)"
            ),
        ),
    ],
    ids=["no-migration", "bad-return", "migration-raises", "wrong-type"],
)
def test_a_refused_migration_changes_nothing(
    db_path: Path, clock: VirtualClock, run: Runner, target: type[Workflow], amount: int, expected: str
) -> None:
    """Issue 3: no migration, a bad return or a raising migration is a MigrationError; the instance stays on v1."""

    async def scenario() -> tuple[str, tuple[str, str, str | None, int], list[str]]:
        [order_id] = await park_v1(db_path, clock, amount)
        async with open_engine(db_path, clock, workflows=VERSIONS) as engine:
            engine.services.register("warehouse", Warehouse())
            with pytest.raises(MigrationError) as err:
                await engine.migrate(order_id, to=target)
            message = str(err.value).replace(order_id, "ID")
            state = unchanged(engine, order_id)
            [task] = engine.tasks(instance_id=order_id)
            await engine.complete_task(task.id, user="manager", form=Approval(ok=True))
            await engine.wait_instance(order_id)
            wf: OrderV1 = engine.workflow(order_id)
            return message, state, wf.trail

    message, state, trail = run(scenario())
    assert expected == message
    assert ("1", "waiting", "approve", 1) == state
    assert ["receive v1", "approve v1", "ship v1"] == trail


def test_migrating_a_busy_instance_is_refused(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: an instance in the middle of a step cannot be migrated; it carries on on v1."""
    warehouse = Warehouse()

    async def scenario() -> tuple[str, list[str], str]:
        warehouse.gate = asyncio.Event()
        async with open_engine(db_path, clock, workflows=VERSIONS) as engine:
            engine.services.register("warehouse", warehouse)
            handle = await engine.start(OrderV1(amount=10))
            await eventually(lambda: warehouse.waiting)
            with pytest.raises(MigrationError) as err:
                await engine.migrate(handle.instance_id, to=OrderV2)
            warehouse.gate.set()
            await handle.wait_idle()
            wf: OrderV1 = engine.workflow(handle.instance_id)
            return str(err.value).replace(handle.instance_id, "ID"), wf.trail, engine.info(handle.instance_id).version

    message, trail, version = run(scenario())
    assert "instance ID: is running a step now; migrate it while it waits" == message
    assert (["receive v1"], "1") == (trail, version)


def test_migrating_a_terminal_instance_is_refused(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: a completed instance cannot be migrated."""

    async def scenario() -> tuple[str, str]:
        [order_id] = await park_v1(db_path, clock, 10)
        async with open_engine(db_path, clock, workflows=VERSIONS) as engine:
            engine.services.register("warehouse", Warehouse())
            [task] = engine.tasks(instance_id=order_id)
            await engine.complete_task(task.id, user="manager", form=Approval(ok=True))
            await engine.wait_instance(order_id)
            with pytest.raises(MigrationError) as err:
                await engine.migrate(order_id, to=OrderV2)
            return str(err.value).replace(order_id, "ID"), engine.info(order_id).version

    message, version = run(scenario())
    assert "instance ID: is completed: a finished instance is not migrated" == message
    assert "1" == version


def other_deployment(db_path: Path) -> tuple[str, str]:
    """Run a process that defines Order version 9 and leaves a waiting and an in-flight instance in the file."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.other_deployment", str(db_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    waiting, running = out.stdout.split()
    return waiting, running


def test_an_instance_of_an_unknown_version_is_reported_and_listed_not_crashed_on(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: recover() reports the in-flight v9 order as orphaned, instances() lists both v9 orders, v1 runs on."""
    waiting_v9, running_v9 = other_deployment(db_path)

    async def scenario() -> tuple[tuple[int, tuple[str, ...]], dict[str, tuple[str, str]], str, InstanceStatus]:
        async with open_engine(db_path, clock, workflows=[OrderV1, OrderV2]) as engine:
            engine.services.register("warehouse", Warehouse())
            report = await engine.recover()
            listed = {i.id: (i.version, i.status.value) for i in engine.instances(workflow="Order")}
            with pytest.raises(UnknownWorkflowVersion) as err:
                engine.workflow(running_v9)
            # The engine goes on with the versions it knows.
            handle = await engine.start(OrderV1(amount=1))
            await handle.wait_idle()
            [task] = engine.tasks(instance_id=handle.instance_id)
            await engine.complete_task(task.id, user="manager", form=Approval(ok=True))
            status = await engine.wait_instance(handle.instance_id)
            return (report.resumed, report.orphaned), listed, str(err.value), status

    report, listed, error, status = run(scenario())
    assert (0, (running_v9,)) == report
    assert {waiting_v9: ("9", "waiting"), running_v9: ("9", "running")} == listed
    # The registered versions listed depend on which test modules this process imported.
    assert error.startswith(f"instance {running_v9} runs Order version 9, which has no registered class"), error
    assert error.endswith("; import that class or pass it to Engine(workflows=...)"), error
    assert InstanceStatus.COMPLETED == status


def test_completing_the_task_of_an_unknown_version_names_the_missing_version(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: completing a v9 order's task where v9 has no class is an UnknownWorkflowVersion, and changes nothing."""
    waiting_v9, _ = other_deployment(db_path)

    async def scenario() -> tuple[str, str, int]:
        async with open_engine(db_path, clock, workflows=[OrderV1, OrderV2]) as engine:
            await engine.recover()
            [task] = engine.tasks(instance_id=waiting_v9)
            with pytest.raises(UnknownWorkflowVersion) as err:
                await engine.complete_task(task.id, user="manager", form=Approval(ok=True))
            return err.value.version, engine.info(waiting_v9).status.value, len(engine.tasks(instance_id=waiting_v9))

    assert ("9", "waiting", 1) == run(scenario())


def define_first_dispatch() -> type[Workflow]:
    """A workflow class named Dispatch: a clerk packs, then done."""

    class Dispatch(Workflow):
        trail: list[str] = attrs.field(factory=list[str])

        @step(initial=True)
        def begin(self, ctx: Ctx) -> None: ...

        @after(begin)
        @human_task(assignee="clerk")
        def pack(self, ctx: Ctx) -> None:
            self.trail.append("packed by the first Dispatch")

        @after(pack)
        @step(final=True)
        def done(self, ctx: Ctx) -> None: ...

    return Dispatch


def define_second_dispatch() -> type[Workflow]:
    """Another class that happens to be named Dispatch too (same default name=, same version), with other steps."""

    class Dispatch(Workflow):
        trail: list[str] = attrs.field(factory=list[str])

        @step(initial=True)
        def begin(self, ctx: Ctx) -> None: ...

        @after(begin)
        @human_task(assignee="clerk")
        def label(self, ctx: Ctx) -> None:
            self.trail.append("labelled by the second Dispatch")

        @after(label)
        @step(final=True)
        def done(self, ctx: Ctx) -> None: ...

    return Dispatch


def test_a_second_class_with_the_same_name_does_not_capture_stored_instances(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: instances finish on the class they started on; a same-named class elsewhere is refused or ignored."""
    first = define_first_dispatch()

    async def scenario() -> tuple[str, InstanceStatus, list[str]]:
        with SqliteStore(db_path) as store:
            async with Engine(store, clock=clock) as engine:
                handle = await engine.start(first())
                await handle.wait_idle()
        with contextlib.suppress(WorkflowDefinitionError):  # refusing the clash would keep the instance safe too
            define_second_dispatch()
        with SqliteStore(db_path) as store:
            async with Engine(store, clock=clock) as engine:
                reloaded = type(engine.workflow(handle.instance_id)).__qualname__
                [task] = engine.tasks(user="clerk")
                await engine.complete_task(task.id, user="clerk")
                # Bounded: with the wrong class the instance never finishes.
                status = await asyncio.wait_for(engine.wait_instance(handle.instance_id), 2.0)
                return reloaded, status, list(engine.workflow(handle.instance_id).trail)

    reloaded, status, trail = run(scenario())
    assert "define_first_dispatch.<locals>.Dispatch" == reloaded
    assert InstanceStatus.COMPLETED == status
    assert ["packed by the first Dispatch"] == trail
