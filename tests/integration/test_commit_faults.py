"""
Issue 3: faults at commit boundaries leave every instance correct.

``SqliteStore(fault=...)`` is called at each commit with ``"before_commit"``
(inside the transaction: raising there makes the commit fail, nothing is written)
and ``"after_commit"`` (the commit happened: raising there loses only its
acknowledgement). Injected at a chosen commit of a run, either fault ends with
the instance completed, each step completed once in the stored history and no
transition applied twice — the history is the same as a run without a fault —
possibly after ``engine.recover()``. A ``complete_task`` whose commit fails raises
StoreError and changes nothing.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    Handle,
    InstanceStatus,
    Retry,
    StoreError,
    TaskAlreadyCompleted,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
    timer,
)
from tests.integration.helpers import Entry, entries, eventually, open_engine

if TYPE_CHECKING:
    from tests.conftest import Runner


class Fulfil(Workflow):
    """Reserve (undoable), charge (its first attempt fails), cool down a minute, ship."""

    label: int = 0

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None: ...

    @reserve.compensation
    def release(self, ctx: Ctx) -> None: ...

    @after(reserve)
    @step(retry=Retry(attempts=3, initial=1))
    def charge(self, ctx: Ctx) -> None:
        if ctx.attempt == 1:
            msg = "gateway timeout"
            raise ConnectionError(msg)

    @after(charge)
    @timer(60)
    def cool(self, ctx: Ctx) -> None: ...

    @after(cool)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


FULFILLED: list[Entry] = [
    ("instance_started", None, 0, "Fulfil version 1"),
    ("step_started", "reserve", 1, None),
    ("step_completed", "reserve", 1, None),
    ("transition", "reserve", 0, "charge"),
    ("step_started", "charge", 1, None),
    ("step_failed", "charge", 1, "ConnectionError: gateway timeout"),
    ("retry_scheduled", "charge", 2, "in 1s"),
    ("step_started", "charge", 2, None),
    ("step_completed", "charge", 2, None),
    ("transition", "charge", 0, "cool"),
    ("status_changed", None, 0, "waiting"),
    ("timer_set", "cool", 0, "in 60s"),
    ("timer_fired", "cool", 0, None),
    ("status_changed", None, 0, "running"),
    ("step_started", "cool", 1, None),
    ("step_completed", "cool", 1, None),
    ("transition", "cool", 0, "ship"),
    ("step_started", "ship", 1, None),
    ("step_completed", "ship", 1, None),
    ("transition", "ship", 0, "@completed"),
    ("status_changed", None, 0, "completed"),
]
"""The history of a Fulfil run without faults."""

COMMITS = 7
"""How many commits a Fulfil run makes: start, reserve, the retry, charge, the timer, cool, ship."""


class CommitFault:
    """Raises a disk I/O error at *point* of the *at*-th commit (counted at "before_commit"), once."""

    def __init__(self, point: str, at: int) -> None:
        self.point = point
        self.at = at
        self.commits = 0
        self.fired = False

    def __call__(self, point: str) -> None:
        if point == "before_commit":
            self.commits += 1
        if point == self.point and self.commits == self.at and not self.fired:
            self.fired = True
            msg = "disk I/O error (injected)"
            raise sqlite3.OperationalError(msg)


def stored_status(engine: Engine, instance_id: str) -> InstanceStatus:
    """The status the store holds: committed, unlike the engine's view of an instance it is running."""
    info = engine.store.info(instance_id)
    assert info is not None
    return info.status


async def finish(engine: Engine, handle: Handle[Fulfil]) -> tuple[InstanceStatus, list[Entry]]:
    """Wait until the store holds the instance as terminal; its status and history then."""
    await eventually(lambda: stored_status(engine, handle.instance_id).is_terminal)
    await engine.wait_idle()
    return stored_status(engine, handle.instance_id), entries(engine.history(handle.instance_id))


def test_a_run_without_faults_makes_the_reference_history(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: the reference run: seven commits, and the history the faulty runs must reproduce."""

    async def scenario() -> tuple[InstanceStatus, list[Entry], int]:
        fault = CommitFault("never", 0)
        async with open_engine(db_path, clock, workflows=PINNED, fault=fault) as engine:
            handle = await engine.start(Fulfil())
            status, history = await finish(engine, handle)
            return status, history, fault.commits

    assert (InstanceStatus.COMPLETED, FULFILLED, COMMITS) == run(scenario())


@pytest.mark.parametrize("at", range(2, COMMITS + 1))
@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_a_fault_at_any_commit_of_a_run_leaves_the_instance_correct(
    db_path: Path, clock: VirtualClock, run: Runner, point: str, at: int
) -> None:
    """Issue 3: a failed commit, or one whose acknowledgement was lost, still ends completed with each step once."""

    async def scenario() -> tuple[bool, InstanceStatus, list[Entry]]:
        fault = CommitFault(point, at)
        async with open_engine(db_path, clock, workflows=PINNED, fault=fault) as engine:
            handle = await engine.start(Fulfil())
            status, history = await finish(engine, handle)
            return fault.fired, status, history

    fired, status, history = run(scenario())
    assert fired
    assert InstanceStatus.COMPLETED == status
    assert FULFILLED == history


def test_a_start_whose_commit_fails_starts_nothing(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: start() raises StoreError when its commit fails, and no instance exists; starting again works."""

    async def scenario() -> tuple[str, int, InstanceStatus, list[Entry]]:
        async with open_engine(db_path, clock, workflows=PINNED, fault=CommitFault("before_commit", 1)) as engine:
            with pytest.raises(StoreError) as err:
                await engine.start(Fulfil())
            listed = len(engine.instances())
            handle = await engine.start(Fulfil())
            status, history = await finish(engine, handle)
            return str(err.value), listed, status, history

    error, listed, status, history = run(scenario())
    assert f"cannot use {db_path}: a commit of 1 instance change(s) failed: disk I/O error (injected)" == error
    assert 0 == listed
    assert (InstanceStatus.COMPLETED, FULFILLED) == (status, history)


def test_a_start_whose_acknowledgement_is_lost_counts_as_started(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: start()'s commit landed but its acknowledgement was lost: it returns a handle, the instance runs once."""

    async def scenario() -> tuple[int, InstanceStatus, list[Entry]]:
        async with open_engine(db_path, clock, workflows=PINNED, fault=CommitFault("after_commit", 1)) as engine:
            handle = await engine.start(Fulfil())
            status, history = await finish(engine, handle)
            return len(engine.instances()), status, history

    assert (1, InstanceStatus.COMPLETED, FULFILLED) == run(scenario())


@pytest.mark.parametrize("at", [2, 3, 5])
@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_a_fault_in_a_group_commit_leaves_every_instance_of_the_batch_correct(
    db_path: Path, clock: VirtualClock, run: Runner, point: str, at: int
) -> None:
    """Issue 3: a fault in a commit carrying several instances' changes leaves each of them correct."""

    async def scenario() -> tuple[bool, list[InstanceStatus], list[bool]]:
        fault = CommitFault(point, at)
        async with open_engine(db_path, clock, workflows=PINNED, fault=fault) as engine:
            handles = await asyncio.gather(*(engine.start(Fulfil(label=n)) for n in range(8)))
            results = [await finish(engine, h) for h in handles]
            return fault.fired, [s for s, _ in results], [h == FULFILLED for _, h in results]

    fired, statuses, same = run(scenario())
    assert fired
    assert [InstanceStatus.COMPLETED] * 8 == statuses
    assert [True] * 8 == same


def test_waiting_for_an_instance_whose_last_commit_failed_reports_the_stored_status(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: wait_instance() returns the status the store holds, not that of a change whose commit failed."""

    async def scenario() -> tuple[InstanceStatus, InstanceStatus]:
        async with open_engine(db_path, clock, workflows=PINNED, fault=CommitFault("before_commit", COMMITS)) as engine:
            handle = await engine.start(Fulfil())
            reported = await engine.wait_instance(handle.instance_id)
            return reported, stored_status(engine, handle.instance_id)

    reported, stored = run(scenario())
    assert stored == reported


class Claim(Workflow):
    """An insurance claim: an adjuster decides, then it is paid."""

    @step(initial=True)
    def file(self, ctx: Ctx) -> None: ...

    @after(file)
    @human_task(assignee="adjuster")
    def assess(self, ctx: Ctx) -> None: ...

    @after(assess)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...


class Switch:
    """A fault that raises at *point* of every commit while it is on."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.on = False

    def __call__(self, point: str) -> None:
        if self.on and point == self.point:
            self.on = False
            msg = "disk I/O error (injected)"
            raise sqlite3.OperationalError(msg)


def test_a_complete_task_whose_driver_commit_fails_is_applied_after_the_backoff(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issues 3 and 9: the completion is a durable command; a failed commit of its move loses nothing.

    complete_task returns once the task row and the command are written; the
    driver's commit of the move fails, the instance is reloaded after its backoff,
    takes the command from the store again and finishes, with the task completed once.
    """

    async def scenario() -> tuple[str, InstanceStatus, dict[str, int], list[str]]:
        fault = Switch("before_commit")
        async with open_engine(db_path, clock, workflows=PINNED, fault=fault) as engine:
            handle = await engine.start(Claim())
            await handle.wait_idle()
            [task] = engine.tasks(user="adjuster")
            fault.on = True
            done = await engine.complete_task(task.id, user="adjuster")
            status = await engine.wait_instance(handle.instance_id)
            history = handle.history()
            counts = {k: sum(1 for e in history if e.kind.value == k) for k in ("task_completed", "step_completed")}
            left = [str(c.seq) for c in engine.store.commands(handle.instance_id)]
            return str(done.completed_by), status, counts, left

    completed_by, status, counts, left = run(scenario())
    assert "adjuster" == completed_by
    assert InstanceStatus.COMPLETED == status
    assert {"task_completed": 1, "step_completed": 3} == counts
    assert [] == left


def test_a_complete_task_whose_acknowledgement_is_lost_counts_as_completed(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: the completion landed though its acknowledgement was lost: complete_task returns, the instance finishes.

    Completing the task again is refused as already completed, and the history
    records the completion and each step once.
    """

    async def scenario() -> tuple[str | None, str, InstanceStatus, dict[str, int]]:
        fault = Switch("after_commit")
        async with open_engine(db_path, clock, workflows=PINNED, fault=fault) as engine:
            handle = await engine.start(Claim())
            await handle.wait_idle()
            [task] = engine.tasks(user="adjuster")
            fault.on = True
            done = await engine.complete_task(task.id, user="adjuster")
            with pytest.raises(TaskAlreadyCompleted) as again:
                await engine.complete_task(task.id, user="adjuster")
            status = await engine.wait_instance(handle.instance_id)
            await eventually(lambda: stored_status(engine, handle.instance_id).is_terminal)
            history = handle.history()
            counts = {k: sum(1 for e in history if e.kind.value == k) for k in ("task_completed", "step_completed")}
            return done.completed_by, str(again.value).replace(task.id, "TASK"), status, counts

    completed_by, again, status, counts = run(scenario())
    assert "adjuster" == completed_by
    assert "task TASK: is already completed by 'adjuster'; a task completes once" == again
    assert InstanceStatus.COMPLETED == status
    assert {"task_completed": 1, "step_completed": 3} == counts


PINNED: list[type[Workflow]] = [Fulfil, Claim]
"""This module's workflows, pinned in every engine: other test modules define classes of the same names."""
