"""
Issue 3: durable timers and escalations, on the virtual clock.

A ``@timer`` step's due time is stored with the instance: it fires after a
restart, and timers that fell due while no engine ran fire at once on start-up,
in due order. ``@after(task_step, timeout=timedelta(days=2))`` escalates a wait
that lasts too long: the task is cancelled and the timeout edge taken; completing
the task in time clears the escalation. A two-day wait takes milliseconds with a
``VirtualClock`` that only moves when the test says so (``autojump=False``).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from statemachine_orch import (
    Ctx,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    TaskStatus,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
    timer,
)
from tests.integration.helpers import Entry, entries, of_kind, open_engine, settle

if TYPE_CHECKING:
    from tests.conftest import Runner

HOUR = 3600.0
DAY = 24 * HOUR


class Nap(Workflow):
    """Wait an hour, then wake up."""

    label: str = ""

    @timer(timedelta(hours=1), initial=True)
    def sleep(self, ctx: Ctx) -> None: ...

    @after(sleep)
    @step(final=True)
    def wake(self, ctx: Ctx) -> None: ...


class Doze(Workflow):
    """Wait ten minutes, then wake up."""

    label: str = ""

    @timer(timedelta(minutes=10), initial=True)
    def sleep(self, ctx: Ctx) -> None: ...

    @after(sleep)
    @step(final=True)
    def wake(self, ctx: Ctx) -> None: ...


def test_a_timer_fires_after_a_restart_at_its_due_time(db_path: Path, run: Runner) -> None:
    """Issue 3: a timer set before a restart fires after it, when due, not earlier."""
    clock = VirtualClock(autojump=False)
    start = clock.now()

    async def scenario() -> tuple[InstanceStatus, InstanceStatus, list[tuple[str, float]]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Nap())
            await handle.wait_idle()
        clock.advance(HOUR / 2)
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            await settle()
            half_way = engine.info(handle.instance_id).status
            clock.advance(HOUR / 2)
            status = await engine.wait_instance(handle.instance_id)
            history = engine.history(handle.instance_id)
            timed = [(e.kind.value, e.at - start) for e in history if e.kind.value.startswith("timer_")]
            return half_way, status, timed

    half_way, status, timed = run(scenario())
    assert InstanceStatus.WAITING == half_way
    assert InstanceStatus.COMPLETED == status
    assert [("timer_set", 0.0), ("timer_fired", HOUR)] == timed


def test_timers_that_fell_due_while_no_engine_ran_fire_at_once_in_due_order(db_path: Path, run: Runner) -> None:
    """Issue 3: late timers fire on start-up without waiting, earliest due first."""
    clock = VirtualClock(autojump=False)
    start = clock.now()

    async def scenario() -> tuple[list[str], list[float], list[InstanceStatus]]:
        ids: dict[str, str] = {}
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            # Started in one order, due in another (+60, +15, +70, +22 minutes), none due before the stop.
            for label, cls, started_at in (("A", Nap, 0), ("B", Doze, 5), ("C", Nap, 10), ("D", Doze, 12)):
                clock.jump_to(start + started_at * 60)
                handle = await engine.start(cls(label=label))
                await handle.wait_idle()
                ids[handle.instance_id] = label
        clock.jump_to(start + 2 * HOUR)
        fired: list[tuple[str, HistoryEvent]] = []
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            engine.subscribe(lambda instance_id, event: fired.append((instance_id, event)))
            await engine.recover()
            statuses = [await engine.wait_instance(i) for i in ids]
        timer_fired = [(i, e) for i, e in fired if e.kind is EventKind.TIMER_FIRED]
        return [ids[i] for i, _ in timer_fired], [e.at - start for _, e in timer_fired], statuses

    order, times, statuses = run(scenario())
    assert ["B", "D", "A", "C"] == order
    assert [2 * HOUR] * 4 == times
    assert [InstanceStatus.COMPLETED] * 4 == statuses


@attrs.frozen
class Decision:
    """The manager's decision on an expense."""

    approved: bool


class Expense(Workflow):
    """Submit, a manager decides within two days or the expense escalates to the director, then book."""

    approved: bool = False
    escalated: bool = False

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="manager", form=Decision)
    def decide(self, ctx: Ctx, form: Decision) -> None:
        self.approved = form.approved

    @after(decide, timeout=timedelta(days=2))
    @step
    def escalate(self, ctx: Ctx) -> None:
        self.escalated = True

    @after(decide)
    @after(escalate)
    @step(final=True)
    def book(self, ctx: Ctx) -> None: ...


ESCALATED: list[Entry] = [
    ("instance_started", None, 0, "Expense version 1"),
    ("step_started", "submit", 1, None),
    ("step_completed", "submit", 1, None),
    ("transition", "submit", 0, "decide"),
    ("task_created", "decide", 0, "ID.1"),
    ("status_changed", None, 0, "waiting"),
    ("task_cancelled", "decide", 0, "ID.1 (escalated)"),
    ("status_changed", None, 0, "running"),
    ("escalated", "decide", 0, "waited 172800s"),
    ("transition", "decide", 0, "escalate"),
    ("step_started", "escalate", 1, None),
    ("step_completed", "escalate", 1, None),
    ("transition", "escalate", 0, "book"),
    ("step_started", "book", 1, None),
    ("step_completed", "book", 1, None),
    ("transition", "book", 0, "@completed"),
    ("status_changed", None, 0, "completed"),
]


def test_a_two_day_escalation_cancels_the_task_and_takes_the_timeout_edge(db_path: Path, run: Runner) -> None:
    """Issue 3: two days (virtual, in milliseconds) after the task opened, it is cancelled and the wait escalates."""
    clock = VirtualClock(autojump=False)
    start = clock.now()

    async def scenario() -> tuple[float | None, InstanceStatus, int, InstanceStatus, list[Entry], TaskStatus | None]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Expense())
            await handle.wait_idle()
            [task] = engine.tasks(user="manager")
            wake_at = engine.info(handle.instance_id).wake_at
            clock.advance(2 * DAY - 0.001)
            await settle()
            almost = engine.info(handle.instance_id).status
            still_open = len(engine.tasks(user="manager"))
            clock.advance(0.001)
            status = await engine.wait_instance(handle.instance_id)
            closed = engine.store.task(task.id)
            history = entries(engine.history(handle.instance_id), handle.instance_id)
            wf: Expense = engine.workflow(handle.instance_id)
            assert (True, False) == (wf.escalated, wf.approved)
            return wake_at, almost, still_open, status, history, None if closed is None else closed.status

    began = time.monotonic()
    wake_at, almost, still_open, status, history, task_status = run(scenario())
    assert time.monotonic() - began < 2.0, "a two-day escalation must not take real time"
    assert start + 2 * DAY == wake_at
    assert (InstanceStatus.WAITING, 1) == (almost, still_open)
    assert InstanceStatus.COMPLETED == status
    assert ESCALATED == history
    assert TaskStatus.CANCELLED == task_status


def test_an_escalation_that_fell_due_while_no_engine_ran_fires_on_restart(db_path: Path, run: Runner) -> None:
    """Issue 3: the escalation timer is durable: three days after the engine stopped, the next one escalates at once."""
    clock = VirtualClock(autojump=False)
    start = clock.now()

    async def scenario() -> tuple[list[Entry], list[float]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Expense())
            await handle.wait_idle()
        clock.advance(3 * DAY)
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            await engine.wait_instance(handle.instance_id)
            history = engine.history(handle.instance_id)
            escalated = [e.at - start for e in of_kind(history, EventKind.ESCALATED)]
            return entries(history, handle.instance_id), escalated

    history, escalated_at = run(scenario())
    assert ESCALATED == history
    assert [3 * DAY] == escalated_at


def test_completing_the_task_in_time_clears_the_escalation(db_path: Path, run: Runner) -> None:
    """Issue 3: a task completed after one day never escalates, however long the clock runs afterwards."""
    clock = VirtualClock(autojump=False)

    async def scenario() -> tuple[InstanceStatus, float | None, float | None, list[str], bool]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Expense())
            await handle.wait_idle()
            [task] = engine.tasks(user="manager")
            clock.advance(DAY)
            await engine.complete_task(task.id, user="manager", form=Decision(approved=True))
            status = await engine.wait_instance(handle.instance_id)
            wake_at = engine.info(handle.instance_id).wake_at
            next_timer = engine.statistics().next_timer_in
            clock.advance(5 * DAY)
            await settle()
            history = engine.history(handle.instance_id)
            steps = [str(e.step) for e in of_kind(history, EventKind.STEP_COMPLETED)]
            wf: Expense = engine.workflow(handle.instance_id)
            return status, wake_at, next_timer, steps, wf.escalated

    status, wake_at, next_timer, steps, escalated = run(scenario())
    assert InstanceStatus.COMPLETED == status
    assert (None, None) == (wake_at, next_timer)
    assert ["submit", "decide", "book"] == steps
    assert escalated is False


PINNED: list[type[Workflow]] = [Nap, Doze, Expense]
"""This module's workflows, pinned in every engine: other test modules define classes of the same names."""
