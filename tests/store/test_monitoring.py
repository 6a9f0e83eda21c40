"""
Issue 12: the monitoring reads of the ``Store`` contract, run on every store.

Alerts and gauges read a store through aggregates and "late things" only:
``instance_counts`` (by workflow and status), ``task_counts`` (open and overdue
tasks by workflow and step), ``quiet`` (instances in some statuses, with no timer,
whose last committed change is old), ``late_timers`` (live instances whose timer
is due) and ``late_tasks`` (open tasks past their due time, with their instance's
timer). Each answer is sorted, so every store gives the same one.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from statemachine_orch import Ctx, Engine, InstanceStatus, VirtualClock, Workflow, after, human_task, step
from statemachine_orch._store import LateTask
from tests.store.flows import NOW, PINNED, ContractEdit, ContractPay, drive, ended, in_flight, noted, timer_at

if TYPE_CHECKING:
    from statemachine_orch import Store
    from tests.conftest import Runner

START = 1_767_225_600.0
"""The virtual clock's start: every history entry the engine writes here is at this time."""
HOUR = 3600.0


class MonitorDesk(Workflow, name="MonitorDesk", version="1"):
    """A review due in an hour, with no escalation."""

    @step(initial=True)
    def take(self, ctx: Ctx) -> None: ...

    @after(take)
    @human_task(assignee="bob", due=timedelta(hours=1))
    def review(self, ctx: Ctx) -> None: ...

    @after(review)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


class MonitorHotline(Workflow, name="MonitorHotline", version="1"):
    """An answer due in an hour, escalated after two."""

    @step(initial=True)
    def ring(self, ctx: Ctx) -> None: ...

    @after(ring)
    @human_task(assignee="bob", due=timedelta(hours=1))
    def answer(self, ctx: Ctx) -> None: ...

    @after(answer)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...

    @after(answer, timeout=timedelta(hours=2))
    @step(final=True)
    def escalate(self, ctx: Ctx) -> None: ...


WORKFLOWS: list[type[Workflow]] = [*PINNED, MonitorDesk, MonitorHotline]


def started(store: Store, run: Runner, workflows: list[Workflow]) -> list[str]:
    """Start each workflow on a virtual clock (no autojump) until it parks; their ids."""

    async def scenario() -> list[str]:
        async with Engine(store, clock=VirtualClock(START, autojump=False), workflows=WORKFLOWS) as engine:
            handles = [await engine.start(wf) for wf in workflows]
            for handle in handles:
                await handle.wait_idle()
            return [h.instance_id for h in handles]

    return run(scenario())


def test_instance_counts_are_by_workflow_and_status_sorted(store: Store, run: Runner) -> None:
    """Issue 12: instance_counts counts every instance once, under its workflow and status."""
    edit1, _, _ = started(store, run, [ContractEdit(), ContractEdit(), ContractPay()])
    drive(store, edit1, ended)
    assert [
        ("ContractEdit", InstanceStatus.COMPLETED, 1),
        ("ContractEdit", InstanceStatus.WAITING, 1),
        ("ContractPay", InstanceStatus.WAITING, 1),
    ] == store.instance_counts()


def test_task_counts_count_open_tasks_and_those_overdue_at_now(store: Store, run: Runner) -> None:
    """Issue 12: task_counts gives open tasks by workflow and step, and how many are past due at the given time."""
    started(store, run, [MonitorDesk(), MonitorDesk(), MonitorHotline(), ContractEdit()])
    assert [
        ("ContractEdit", "review", 1, 0),
        ("MonitorDesk", "review", 2, 0),
        ("MonitorHotline", "answer", 1, 0),
    ] == store.task_counts(START + HOUR - 1)
    assert [
        ("ContractEdit", "review", 1, 0),
        ("MonitorDesk", "review", 2, 2),
        ("MonitorHotline", "answer", 1, 1),
    ] == store.task_counts(START + HOUR)


def test_quiet_finds_instances_in_a_status_with_no_timer_and_no_change_since(store: Store, run: Runner) -> None:
    """Issue 12: quiet lists instances in the statuses asked, without a timer, last changed at or before the time."""
    old, fresh, timed, waiting = started(store, run, [ContractEdit(), ContractEdit(), ContractEdit(), ContractPay()])
    drive(store, old, in_flight)  # no history entry: its last change stays the engine's, at START
    drive(store, fresh, in_flight)
    drive(store, fresh, noted("moved"))  # a history entry at NOW
    drive(store, timed, in_flight)
    drive(store, timed, timer_at(NOW + 60))
    running = frozenset({InstanceStatus.RUNNING, InstanceStatus.COMPENSATING})
    found = store.quiet(running, START)
    assert [(old, InstanceStatus.RUNNING, "review", START)] == [(i.id, i.status, i.step, t) for i, t in found]
    assert [old, fresh] == [i.id for i, _ in store.quiet(running, NOW)], "the oldest change first"
    assert [old, fresh] == [i.id for i, _ in store.quiet(running, None)]
    assert [] == store.quiet(running, START - 1)
    assert [waiting] == [i.id for i, _ in store.quiet(frozenset({InstanceStatus.WAITING}), None)]
    assert [] == store.quiet(frozenset(), None)


def test_late_timers_are_live_instances_with_a_due_timer_earliest_first(store: Store, run: Runner) -> None:
    """Issue 12: late_timers lists live instances whose timer is due by the time given, earliest first."""
    first, second, later, done = started(store, run, [ContractEdit(), ContractPay(), ContractEdit(), ContractPay()])
    drive(store, second, timer_at(NOW - 5))
    drive(store, first, timer_at(NOW - 10))
    drive(store, later, timer_at(NOW + 10))
    drive(store, done, timer_at(NOW - 20))
    drive(store, done, ended)
    assert [(first, NOW - 10), (second, NOW - 5)] == [(i.id, i.wake_at) for i in store.late_timers(NOW)]
    assert [first] == [i.id for i in store.late_timers(NOW, 1)]
    assert [] == store.late_timers(NOW - 11)


def test_late_tasks_are_open_tasks_past_due_with_their_instance_timer(store: Store, run: Runner) -> None:
    """Issue 12: late_tasks gives the open tasks due by the time given, with the version and the instance's timer."""
    desk, hotline, _ = started(store, run, [MonitorDesk(), MonitorHotline(), ContractEdit()])
    desk_task = store.open_tasks(None, frozenset(), desk)[0].id
    hot_task = store.open_tasks(None, frozenset(), hotline)[0].id
    assert [] == store.late_tasks(START + HOUR - 1)
    assert [
        LateTask(desk_task, desk, "MonitorDesk", "1", "review", START + HOUR, None),
        LateTask(hot_task, hotline, "MonitorHotline", "1", "answer", START + HOUR, START + 2 * HOUR),
    ] == sorted(store.late_tasks(START + HOUR), key=lambda t: t.instance_id != desk)
