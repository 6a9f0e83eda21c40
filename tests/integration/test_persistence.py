"""
Issue 3: what an instance holds survives a restart of its engine.

A restart here is what a deployment does: stop the engine, close the store, open
a new ``SqliteStore`` and a new ``Engine`` on the same file, ``recover()``. The
variables (nested attrs classes, lists, dicts, optionals, datetimes, enums,
bytes), a completed task's form that no step has processed yet, the saga of
completed steps, and the retry attempt counter all come back, and the instance
finishes as if nothing had happened. Waiting instances live in the file, not in
the engine's memory.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    EventKind,
    InstanceStatus,
    NonRetryableError,
    Retry,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
    timer,
    wait_for,
)
from tests.integration.helpers import completions, entries, eventually, of_kind, open_engine, parked

if TYPE_CHECKING:
    from tests.conftest import Runner

T0 = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


class Tier(enum.Enum):
    """A customer's tier."""

    BRONZE = "bronze"
    GOLD = "gold"


@attrs.frozen
class Address:
    """A postal address; the flat is optional."""

    street: str
    city: str
    flat: int | None = None


@attrs.frozen
class Customer:
    """Nested attrs classes, a datetime, an enum and a list inside."""

    name: str
    address: Address
    since: datetime
    tier: Tier
    phones: list[str] = attrs.field(factory=list[str])


@attrs.frozen
class Line:
    """One order line."""

    sku: str
    qty: int
    price: float


@attrs.frozen
class Approval:
    """The form of the approval task: nested values of several kinds."""

    approved: bool
    by: str
    at: datetime
    limits: dict[str, float]
    note: str | None = None


class Account(Workflow):
    """Open an account: prepare (changes variables), approval by a manager, then activate."""

    customer: Customer
    lines: list[Line]
    stock: dict[str, int]
    signature: bytes = b""
    coupon: str | None = None
    deadline: datetime | None = None
    scores: dict[str, list[int]] = attrs.field(factory=dict[str, list[int]])
    approval: Approval | None = None
    active: bool = False

    @step(initial=True)
    def prepare(self, ctx: Ctx) -> None:
        self.lines.append(Line("GIFT", 1, 0.0))
        self.stock["GIFT"] = self.stock.get("GIFT", 0) - 1
        self.deadline = self.customer.since + timedelta(days=30)
        self.scores["risk"] = [3, 1, 4]

    @after(prepare)
    @human_task(assignee="manager", form=Approval)
    def approve(self, ctx: Ctx, form: Approval) -> None:
        self.approval = form

    @after(approve)
    @step(final=True)
    def activate(self, ctx: Ctx) -> None:
        self.active = self.approval is not None and self.approval.approved


def new_account() -> Account:
    """An account with every kind of value set."""
    return Account(
        customer=Customer(
            name="Zoë Ørsted",
            address=Address("1 Rue de la Paix", "Paris", flat=None),
            since=T0,
            tier=Tier.GOLD,
            phones=["+33 1 23 45 67 89"],
        ),
        lines=[Line("BOOK", 2, 12.5), Line("PEN", 10, 0.99)],
        stock={"BOOK": 7, "PEN": 0},
        signature=b"\x00\xffsig",
        coupon=None,
    )


def variables(wf: Workflow) -> dict[str, Any]:
    """Every field of a workflow object, nested attrs values kept as objects."""
    # A Workflow is an attrs class at run time; type checkers see it through dataclass_transform.
    return attrs.asdict(cast("attrs.AttrsInstance", wf), recurse=False)


APPROVAL = Approval(approved=True, by="manager", at=T0 + timedelta(hours=2), limits={"daily": 250.0}, note=None)


def test_variables_round_trip_through_a_restart(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: the variables of a waiting instance, nested values included, are the same after a restart."""

    async def scenario() -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(new_account())
            await handle.wait_idle()
            before = variables(handle.workflow)
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            after_restart = variables(engine.workflow(handle.instance_id))
            [task] = engine.tasks(user="manager")
            await engine.complete_task(task.id, user="manager", form=APPROVAL)
            final = variables(await engine.handle(handle.instance_id).result())
        return handle.instance_id, before, after_restart, final

    _, before, after_restart, final = run(scenario())
    expected = variables(new_account())
    expected.update(
        lines=[Line("BOOK", 2, 12.5), Line("PEN", 10, 0.99), Line("GIFT", 1, 0.0)],
        stock={"BOOK": 7, "PEN": 0, "GIFT": -1},
        deadline=T0 + timedelta(days=30),
        scores={"risk": [3, 1, 4]},
    )
    assert expected == before
    assert expected == after_restart
    expected.update(approval=APPROVAL, active=True)
    assert expected == final


def test_the_form_of_a_completed_task_not_yet_processed_survives_a_restart(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: a task completed just before the engine stops is processed, with its form, after the restart."""
    disk_full: list[bool] = []

    def fault(point: str) -> None:
        if point == "before_commit" and disk_full:
            raise OSError(28, "No space left on device")

    async def scenario() -> tuple[InstanceStatus, str | None, int, InstanceStatus, Approval | None, list[Any]]:
        async with open_engine(db_path, clock, workflows=PINNED, fault=fault) as engine:
            handle = await engine.start(new_account())
            await handle.wait_idle()
            [task] = engine.tasks(user="manager")
            await engine.complete_task(task.id, user="manager", form=APPROVAL)
            # The completion is written; then the disk fills up and the engine stops
            # before the instance could record anything more (issue 8: the instance's
            # own driver applies the completion and runs on in the same turn).
            disk_full.append(True)
        disk_full.clear()
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            stopped = engine.info(handle.instance_id)
            report = await engine.recover()
            status = await engine.wait_instance(handle.instance_id)
            wf: Account = engine.workflow(handle.instance_id)
            return (
                stopped.status,
                stopped.step,
                report.resumed,
                status,
                wf.approval,
                entries(engine.history(handle.instance_id), handle.instance_id),
            )

    stopped, at_step, resumed, status, approval, history = run(scenario())
    assert (InstanceStatus.RUNNING, "approve", 1) == (stopped, at_step, resumed)
    assert InstanceStatus.COMPLETED == status
    assert APPROVAL == approval
    assert [
        ("instance_started", None, 0, "Account version 1"),
        ("step_started", "prepare", 1, None),
        ("step_completed", "prepare", 1, None),
        ("transition", "prepare", 0, "approve"),
        ("task_created", "approve", 0, "ID.1"),
        ("status_changed", None, 0, "waiting"),
        ("task_completed", "approve", 0, "manager"),
        ("status_changed", None, 0, "running"),
        ("step_started", "approve", 1, None),
        ("step_completed", "approve", 1, None),
        ("transition", "approve", 0, "activate"),
        ("step_started", "activate", 1, None),
        ("step_completed", "activate", 1, None),
        ("transition", "activate", 0, "@completed"),
        ("status_changed", None, 0, "completed"),
    ] == history


class Backoff(Workflow):
    """A call that fails its first attempt and is retried an hour later."""

    succeeded_on: int = 0

    @step(initial=True, retry=Retry(attempts=3, initial=timedelta(hours=1), max_interval=timedelta(hours=1)))
    def call(self, ctx: Ctx) -> None:
        if ctx.attempt == 1:
            msg = "service unavailable"
            raise ConnectionError(msg)
        self.succeeded_on = ctx.attempt

    @after(call)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


def test_the_attempt_counter_survives_a_restart(db_path: Path, run: Runner) -> None:
    """Issue 3: an instance stopped in a retry's backoff runs attempt 2 (not 1 again) after the restart."""
    clock = VirtualClock(autojump=False)

    async def scenario() -> tuple[float | None, int, list[tuple[str, int, float]]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Backoff())
            await eventually(parked(engine, handle.instance_id))
            wake_at = engine.info(handle.instance_id).wake_at
        clock.advance(3600)
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            await engine.wait_instance(handle.instance_id)
            wf: Backoff = engine.workflow(handle.instance_id)
            starts = of_kind(engine.history(handle.instance_id), EventKind.STEP_STARTED)
            return wake_at, wf.succeeded_on, [(str(e.step), e.attempt, e.at - starts[0].at) for e in starts]

    start = clock.now()
    wake_at, succeeded_on, starts = run(scenario())
    assert start + 3600 == wake_at
    assert 2 == succeeded_on
    assert [("call", 1, 0.0), ("call", 2, 3600.0), ("done", 1, 3600.0)] == starts


class Trip(Workflow):
    """Book a flight and a hotel (both undoable), a manager approves, then pay (fails for good when refused)."""

    undone: list[str] = attrs.field(factory=list[str])
    approved: bool = False

    @step(initial=True)
    def book_flight(self, ctx: Ctx) -> None: ...

    @book_flight.compensation
    def cancel_flight(self, ctx: Ctx) -> None:
        self.undone.append("cancel_flight")

    @after(book_flight)
    @step
    def book_hotel(self, ctx: Ctx) -> None: ...

    @book_hotel.compensation
    def cancel_hotel(self, ctx: Ctx) -> None:
        self.undone.append("cancel_hotel")

    @after(book_hotel)
    @human_task(assignee="manager", form=Approval)
    def approve(self, ctx: Ctx, form: Approval) -> None:
        self.approved = form.approved

    @after(approve)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None:
        if not self.approved:
            msg = "trip refused"
            raise NonRetryableError(msg)


def test_the_saga_survives_a_restart(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: steps completed before a restart are undone after it, newest first, once each."""

    async def scenario() -> tuple[InstanceStatus, list[str], list[tuple[str | None, str | None]]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Trip())
            await handle.wait_idle()
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            [task] = engine.tasks(user="manager")
            refused = attrs.evolve(APPROVAL, approved=False)
            await engine.complete_task(task.id, user="manager", form=refused)
            status = await engine.wait_instance(handle.instance_id)
            wf: Trip = engine.workflow(handle.instance_id)
            done = of_kind(engine.history(handle.instance_id), EventKind.COMPENSATION_COMPLETED)
            return status, wf.undone, [(e.step, e.detail) for e in done]

    status, undone, compensated = run(scenario())
    assert InstanceStatus.FAILED == status
    assert ["cancel_hotel", "cancel_flight"] == undone
    assert [("book_hotel", "cancel_hotel"), ("book_flight", "cancel_flight")] == compensated


@attrs.frozen
class Go:
    """The message a parked instance waits for."""

    code: int


class Parked(Workflow):
    """Parks on a human task, a timer or a message, as *park* says."""

    park: str

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin, when=lambda wf: wf.park == "task")
    @human_task(candidate_groups=("ops",), form=None)
    def by_hand(self, ctx: Ctx) -> None: ...

    @after(begin, when=lambda wf: wf.park == "timer")
    @timer(timedelta(days=1))
    def later(self, ctx: Ctx) -> None: ...

    @after(begin)
    @wait_for(Go)
    def on_message(self, ctx: Ctx, msg: Go) -> None: ...

    @after(by_hand)
    @after(later)
    @after(on_message)
    @step(final=True)
    def end(self, ctx: Ctx) -> None: ...


def test_waiting_instances_are_not_kept_in_memory(db_path: Path, run: Runner) -> None:
    """Issue 3: instances parked on a task, a timer or a message live in the file: the engine holds none of them."""
    clock = VirtualClock(autojump=False)

    async def scenario() -> tuple[int, int, dict[InstanceStatus, int], tuple[int, int], tuple[int, int, int]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handles = [await engine.start(Parked(park=p)) for p in ("task", "timer", "message") * 20]
            for h in handles:
                await h.wait_idle()
            live = engine.statistics().live
            open_tasks = len(engine.tasks())
            statuses: dict[InstanceStatus, int] = {}
            for info in engine.instances():
                statuses[info.status] = statuses.get(info.status, 0) + 1
            # One of each finishes; the engine then lets go of them too.
            [first_task, *_] = engine.tasks(user="x", groups=["ops"])
            await engine.complete_task(first_task.id, user="x", groups=["ops"])
            await engine.signal(handles[2].instance_id, Go(1))
            await engine.wait_instance(first_task.instance_id)
            await engine.wait_instance(handles[2].instance_id)
            after_finishing = engine.statistics().live, engine.statistics().active
        # A new engine recovering the file loads none of the 58 that still wait.
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            report = await engine.recover()
            after_restart = report.resumed, engine.statistics().live, len(engine.instances(InstanceStatus.WAITING))
        return live, open_tasks, statuses, after_finishing, after_restart

    live, open_tasks, statuses, after_finishing, after_restart = run(scenario())
    assert 0 == live
    assert 20 == open_tasks
    assert {InstanceStatus.WAITING: 60} == statuses
    assert (0, 0) == after_finishing
    assert (0, 0, 58) == after_restart


@attrs.frozen
class Parcel:
    """One member of a union of attrs classes."""

    weight: float


@attrs.frozen
class Letter:
    """The other member: cattrs tells them apart by their fields."""

    pages: int


class Mixed(Workflow):
    """Union fields whose members JSON tells apart."""

    code: int | str
    flag: bool | int
    item: Parcel | Letter
    items: list[Parcel | Letter]

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @human_task(assignee="clerk", final=True)
    def check(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize(
    "mixed",
    [
        Mixed(code=7, flag=True, item=Parcel(1.5), items=[Letter(3), Parcel(0.25)]),
        Mixed(code="7", flag=1, item=Letter(2), items=[]),
    ],
    ids=["first-members", "second-members"],
)
def test_union_fields_round_trip_member_for_member(
    db_path: Path, clock: VirtualClock, run: Runner, mixed: Mixed
) -> None:
    """Issue 3: a value of a union field comes back as the same member type (7 stays an int, "7" a str)."""
    expected = [(k, v, type(v).__name__) for k, v in variables(mixed).items()]

    async def scenario() -> list[tuple[str, Any, str]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(mixed)
            await handle.wait_idle()
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            return [(k, v, type(v).__name__) for k, v in variables(engine.workflow(handle.instance_id)).items()]

    assert expected == run(scenario())


def test_each_step_of_a_restarted_instance_completes_once(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: restarting an engine twice around a waiting instance records each step once."""

    async def scenario() -> dict[str | None, int]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(new_account())
            await handle.wait_idle()
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            [task] = engine.tasks(user="manager")
            await engine.complete_task(task.id, user="manager", form=APPROVAL)
            await engine.wait_instance(handle.instance_id)
            return completions(engine.history(handle.instance_id))

    assert {"prepare": 1, "approve": 1, "activate": 1} == run(scenario())


PINNED: list[type[Workflow]] = [Account, Backoff, Trip, Parked, Mixed]
"""This module's workflows, pinned in every engine: other test modules define classes of the same names."""
