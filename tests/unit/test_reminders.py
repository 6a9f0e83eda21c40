"""
Issue 10, item 5: reminders that do not interrupt.

``@after(waiting_step, reminder=delay[, repeat=True])`` on a plain ``@step`` makes it
a side step: once the wait has lasted *delay* (and every *delay* again with
``repeat``), it runs while the task stays open or the message is still awaited,
next to an interrupting ``timeout=`` escalation, which still counts from the
wait's start. A failing side step is noted and the wait goes on. The timers are
durable (a restart on SQLite carries on, one reminder for those missed), inside a
fork's branches too; the spec, ``paths()``, the diagrams and WorkflowMachine know them.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.
# pyright: reportUnusedClass=false

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    SqliteStore,
    VirtualClock,
    Workflow,
    WorkflowDefinitionError,
    after,
    fan_out,
    human_task,
    mermaid,
    paths,
    spec_of,
    step,
    subflow,
    wait_for,
)
from statemachine_orch.testing import WorkflowMachine
from tests.testing.helpers import passes

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import EngineFactory, Runner

K = EventKind
HOUR = 3600.0


def hours(history: list[HistoryEvent], kind: EventKind, *, detail: bool = False) -> list[object]:
    """When each entry of *kind* happened, in hours since the instance started (with its detail)."""
    t0 = history[0].at
    return [((e.at - t0) / HOUR, e.detail) if detail else (e.at - t0) / HOUR for e in history if e.kind is kind]


class Expense(Workflow):
    """Ann is reminded every 8 hours, her boss copied once after 20; after 2 days it escalates."""

    reminded: int = 0
    copied: list[str] = attrs.field(factory=list[str])

    @human_task(initial=True, assignee="ann")
    def approve(self, ctx: Ctx) -> None: ...

    @after(approve, reminder=timedelta(hours=8), repeat=True)
    @step
    def remind_ann(self, ctx: Ctx) -> None:
        self.reminded += 1

    @after(approve, reminder=timedelta(hours=20))
    @step
    async def copy_boss(self, ctx: Ctx) -> None:
        self.copied.append(ctx.idempotency_key)

    @after(approve, timeout=timedelta(days=2))
    @step(final=True)
    def escalate(self, ctx: Ctx) -> None: ...

    @after(approve)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


def test_reminders_run_while_the_task_stays_open_then_the_escalation_interrupts(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: every 8 h and once at 20 h, the task still open; at 48 h the escalation, counted from the start."""

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Expense())
            result = await handle.result()
            history = handle.history()
            assert [8.0, 16.0, 20.0, 24.0, 32.0, 40.0] == hours(history, K.REMINDED)
            assert [
                (8.0, "remind_ann (reminder 1)"),
                (16.0, "remind_ann (reminder 2)"),
                (20.0, "copy_boss (reminder 1)"),
            ] == hours(history, K.REMINDED, detail=True)[:3]
            assert [48.0] == hours(history, K.ESCALATED)
            assert (5, [f"{handle.instance_id}:0:remind1.1"]) == (result.reminded, result.copied)
            # The task stayed open through the reminders: cancelled by the escalation only.
            assert [48.0] == hours(history, K.TASK_CANCELLED)
            assert 1 == sum(e.kind is K.STATUS_CHANGED and e.detail == "waiting" for e in history)

    run(scenario())


def test_completing_the_task_stops_the_reminders(run: Runner) -> None:
    """Issue 10: the task completed at 10 h: one reminder ran, none after, no escalation."""

    async def scenario() -> None:
        clock = VirtualClock(autojump=False)
        async with Engine(clock=clock) as engine:
            handle = await engine.start(Expense())
            await handle.wait_idle()
            clock.advance(10 * HOUR)
            await engine.wait_idle()
            [task] = engine.tasks(user="ann")
            await engine.complete_task(task.id, user="ann")
            result = await handle.result()
            assert (1, "done") == (result.reminded, handle.history()[-3].step)
            assert None is engine.info(handle.instance_id).wake_at

    run(scenario())


def test_a_failing_side_step_is_noted_and_the_wait_goes_on(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: a side step that raises is not retried; its failure is in the history; the task stays open."""

    class Flaky(Workflow):
        @wait_for(int, initial=True)
        def paid(self, ctx: Ctx, amount: int) -> None: ...

        @after(paid, reminder=HOUR)
        @step
        def chase(self, ctx: Ctx) -> None:
            msg = "mail server down"
            raise ConnectionError(msg)

        @after(paid, timeout=3 * HOUR)
        @step(final=True)
        def give_up(self, ctx: Ctx) -> None: ...

        @after(paid)
        @step(final=True)
        def done(self, ctx: Ctx) -> None: ...

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Flaky())
            assert InstanceStatus.COMPLETED == await engine.wait_instance(handle.instance_id)
            history = handle.history()
            assert [(1.0, "ConnectionError: mail server down")] == hours(history, K.STEP_FAILED, detail=True)
            assert [3.0] == hours(history, K.ESCALATED)
            assert "give_up" == history[-3].step

    run(scenario())


def test_reminders_survive_a_restart_and_missed_ones_become_one(run: Runner, tmp_path: Path) -> None:
    """Issue 10: stopped at 9 h and back at 35 h on the same SQLite file: one late reminder, then every 8 h again."""
    db = tmp_path / "orch.db"

    async def first() -> str:
        clock = VirtualClock(autojump=False)
        with SqliteStore(db) as store:
            async with Engine(store, clock=clock) as engine:
                handle = await engine.start(Expense())
                await handle.wait_idle()
                clock.advance(9 * HOUR)
                await engine.wait_idle()
                return handle.instance_id

    async def second(instance_id: str) -> list[HistoryEvent]:
        clock = VirtualClock(start=VirtualClock().now() + 35 * HOUR)
        with SqliteStore(db) as store:
            async with Engine(store, clock=clock) as engine:
                await engine.wait_instance(instance_id)
                return engine.history(instance_id)

    instance_id = run(first())
    history = run(second(instance_id))
    # The clock jumped to 9 h at once: the first reminder ran then, late, as after a stop.
    assert [9.0, 35.0, 35.0, 40.0] == hours(history, K.REMINDED)
    details = [e.detail for e in history if e.kind is K.REMINDED]
    assert [
        "remind_ann (reminder 1)",
        "remind_ann (reminder 4)",
        "copy_boss (reminder 1)",
        "remind_ann (reminder 5)",
    ] == details
    assert [48.0] == hours(history, K.ESCALATED)


def test_a_reminder_in_a_fork_branch(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: a branch's waiting step is reminded while the other branch goes on; its timer is durable."""

    class Forked(Workflow):
        nudged: int = 0

        @step(initial=True, fork=True)
        def split(self, ctx: Ctx) -> None: ...

        @after(split)
        @human_task(assignee="ann")
        def sign(self, ctx: Ctx) -> None: ...

        @after(sign, reminder=HOUR, repeat=True)
        @step
        def nudge(self, ctx: Ctx) -> None:
            self.nudged += 1

        @after(split)
        @step
        def prepare(self, ctx: Ctx) -> None: ...

        @after(sign, prepare)
        @step(final=True)
        def ship(self, ctx: Ctx) -> None: ...

    async def scenario() -> None:
        clock = VirtualClock(autojump=False)
        async with Engine(clock=clock) as engine:
            handle = await engine.start(Forked())
            await handle.wait_idle()
            for _ in range(2):
                clock.advance(HOUR)
                await engine.wait_idle()
            clock.advance(HOUR / 2)
            await engine.wait_idle()
            [task] = engine.tasks(user="ann")
            await engine.complete_task(task.id, user="ann")
            result = await handle.result()
            assert 2 == result.nudged
            assert [1.0, 2.0] == hours(handle.history(), K.REMINDED)

    run(scenario())


def test_reminder_rules_at_definition() -> None:
    """Issue 10: reminder-needs-wait, bad-reminder and side-step name the step and what is wrong."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Wrong(Workflow):
            @step(initial=True)
            def begin(self, ctx: Ctx) -> None: ...

            @after(begin, reminder=HOUR)
            @step
            def from_a_step(self, ctx: Ctx) -> None: ...

            @after(begin)
            @human_task(assignee="ann")
            def approve(self, ctx: Ctx) -> None: ...

            @after(approve, reminder=-1)
            @step
            def negative(self, ctx: Ctx) -> None: ...

            @after(approve, reminder=HOUR)
            @step
            def with_edges(self, ctx: Ctx) -> None: ...

            @after(with_edges)
            @after(approve)
            @step(final=True)
            def end(self, ctx: Ctx) -> None: ...

    found = {(p.step, p.rule) for p in err.value.problems}
    assert {
        ("begin", "reminder-needs-wait"),
        ("approve", "bad-reminder"),
        ("with_edges", "side-step"),
    } <= found
    [side] = [p.message for p in err.value.problems if p.rule == "side-step"]
    assert "is the side step of a reminder, so it must be without edges of its own" == side


class Approval(Workflow):
    """A child that waits for a person: the place where a reminder of a subflow's wait belongs."""

    @human_task(initial=True, final=True, assignee="ann")
    def approve(self, ctx: Ctx) -> None: ...

    @after(approve, reminder=HOUR, repeat=True)
    @step
    def nudge(self, ctx: Ctx) -> None: ...


def test_a_reminder_of_a_subflow_or_fan_out_wait_is_a_definition_error() -> None:
    """Issue 10, item 5: a child wait ends with its children, so its reminder belongs to the child; the error says so."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Waits(Workflow):
            @subflow(Approval, initial=True)
            def one(self, ctx: Ctx) -> Approval:
                return Approval()

            @after(one, reminder=HOUR)
            @step
            def nag_one(self, ctx: Ctx) -> None: ...

            @after(one)
            @fan_out(Approval, final=True)
            def many(self, ctx: Ctx) -> list[Approval]:
                return [Approval(), Approval()]

            @after(many, reminder=HOUR, repeat=True)
            @step
            def nag_many(self, ctx: Ctx) -> None: ...

    found = {(p.step, p.rule): p.message for p in err.value.problems}
    tail = (
        "its wait ends with its children, and only a @human_task or @wait_for can be reminded of; "
        "give the child workflow the reminder (on its own waiting step)"
    )
    assert f"has a reminder edge to nag_one, but it is a @subflow step: {tail}" == found["one", "reminder-needs-wait"]
    assert f"has a reminder edge to nag_many, but it is a @fan_out step: {tail}" == found["many", "reminder-needs-wait"]


def test_the_spec_paths_and_diagram_know_reminders() -> None:
    """Issue 10: reminder edges are no completions; paths list the side steps; Mermaid labels the edges."""
    spec = spec_of(Expense)
    assert ["remind_ann", "copy_boss"] == [e.dest for e in spec.reminders("approve")]
    assert ("reminder every 28800s", "reminder after 72000s") == tuple(e.label for e in spec.reminders("approve"))
    assert spec.is_side_step("remind_ann")
    assert not any(e.is_completion for e in spec.reminders("approve"))
    [completed, *_] = paths(Expense)
    assert ("approve", "done") == completed.steps
    assert ("remind_ann", "copy_boss") == completed.side_steps
    assert "    approve --> remind_ann: reminder every 28800s\n" in mermaid(Expense)


class Nudge(Workflow):
    """A reminder every 8 hours, the escalation at 12: a story reaches both with two timer rounds."""

    nudges: int = 0

    @human_task(initial=True, assignee="ann")
    def approve(self, ctx: Ctx) -> None: ...

    @after(approve, reminder=8 * HOUR, repeat=True)
    @step
    def nudge(self, ctx: Ctx) -> None:
        self.nudges += 1

    @after(approve, timeout=12 * HOUR)
    @step(final=True)
    def escalate(self, ctx: Ctx) -> None: ...

    @after(approve)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


def test_workflow_machine_covers_the_reminders() -> None:
    """Issue 10: the toolkit fires the timers, the side steps run, the saga and history checks pass, every edge."""
    machine = WorkflowMachine(Nudge, require_coverage=1.0)

    passes(machine)

    assert 1.0 == machine.coverage.fraction
