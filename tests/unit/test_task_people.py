"""
Issue 10, item 4: who a human task is for, computed from the variables; reassigning and delegating it.

``@human_task(assignee=method, candidate_groups=method)`` computes the people when
the task opens (a computation that raises, returns the wrong type or leaves nobody
fails the instance); ``Engine.reassign_task`` (an operator) and
``Engine.delegate_task`` (one the task is for) give an open task to others, give
back any claim, and say so in the history.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.
# pyright: reportUnusedClass=false

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest
from hypothesis import strategies as st

from statemachine_orch import (
    Ctx,
    EventKind,
    InstanceStatus,
    TaskAlreadyCompleted,
    TaskClaimed,
    TaskNotAuthorized,
    TaskNotFound,
    Workflow,
    WorkflowDefinitionError,
    WorkflowFailed,
    after,
    human_task,
    mermaid,
    step,
)
from statemachine_orch.testing import WorkflowMachine
from tests.testing.helpers import passes

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner

K = EventKind


class Expense(Workflow):
    """Small expenses go to the submitter's manager, large ones to the finance team of the region."""

    amount: int
    manager: str
    region: str = "eu"
    teams: list[str] = attrs.field(factory=list[str])

    def approver(self) -> str | None:
        return self.manager if self.amount < 1000 else None

    def finance(self) -> list[str]:
        return [f"finance-{self.region}", *self.teams] if self.amount >= 1000 else []

    @human_task(initial=True, assignee=approver, candidate_groups=finance)
    def approve(self, ctx: Ctx) -> None: ...

    @after(approve)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...


def test_the_people_are_computed_from_the_variables_when_the_task_opens(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: the small expense is its manager's; the large one the region's finance team's (and its extra team)."""

    async def scenario() -> None:
        async with new_engine() as engine:
            small = await engine.start(Expense(amount=10, manager="ann"))
            large = await engine.start(Expense(amount=5000, manager="ann", region="us", teams=["audit"]))
            await small.wait_idle()
            await large.wait_idle()
            [a] = engine.tasks(instance_id=small.instance_id)
            [b] = engine.tasks(instance_id=large.instance_id)
            assert ("ann", ()) == (a.assignee, a.candidate_groups)
            assert (None, ("finance-us", "audit")) == (b.assignee, b.candidate_groups)
            assert [b] == engine.tasks(user="zoe", groups=["audit"])
            with pytest.raises(TaskNotAuthorized):
                await engine.complete_task(b.id, user="ann")
            await engine.complete_task(b.id, user="zoe", groups=["finance-us"])
            assert InstanceStatus.COMPLETED == await engine.wait_instance(large.instance_id)

    run(scenario())


@pytest.mark.parametrize(
    ("manager", "why"),
    [
        ("", "ValueError: the assignee approver() returned must be a non-empty name"),
        ("ann\nroot", "ValueError: the assignee approver() returned must be a non-empty name"),
        (None, "ValueError: no assignee and no candidate group: nobody could complete it"),
    ],
)
def test_people_that_cannot_be_computed_fail_the_instance(
    run: Runner, new_engine: EngineFactory, manager: str | None, why: str
) -> None:
    """Issue 10: an empty or control-character name, or nobody at all, fails the instance with the reason."""

    class Routed(Workflow):
        manager: str | None

        def approver(self) -> str | None:
            return self.manager

        @human_task(initial=True, final=True, assignee=approver)
        def approve(self, ctx: Ctx) -> None: ...

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Routed(manager=manager))
            with pytest.raises(WorkflowFailed) as err:
                await handle.result()
            assert (err.value.reason or "").startswith(f"approve: who the task is for: {why}")
            assert [] == engine.tasks(instance_id=handle.instance_id)

    run(scenario())


def test_a_computation_that_raises_or_returns_no_names_fails_the_instance(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: the exception of the computation is the instance's failure, typed; group names must be str."""

    class Broken(Workflow):
        raise_it: bool

        def groups(self) -> list[str]:
            if self.raise_it:
                msg = "directory down"
                raise LookupError(msg)
            return [7]  # type: ignore[list-item] # pyright: ignore[reportReturnType] - the mistake under test

        @human_task(initial=True, final=True, candidate_groups=groups)
        def approve(self, ctx: Ctx) -> None: ...

    async def scenario() -> None:
        async with new_engine() as engine:
            raising = await engine.start(Broken(raise_it=True))
            wrong = await engine.start(Broken(raise_it=False))
            with pytest.raises(WorkflowFailed) as first:
                await raising.result()
            with pytest.raises(WorkflowFailed) as second:
                await wrong.result()
            assert isinstance(first.value.error, LookupError)
            assert "approve: who the task is for: LookupError: directory down" == first.value.reason
            assert isinstance(second.value.error, TypeError)
            assert "groups= must hold group names (str)" in (second.value.reason or "")

    run(scenario())


def test_reassign_gives_the_task_to_others_releases_its_claim_and_says_so(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: an operator reassigns a claimed group task to a person; only they may complete it now."""

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Expense(amount=5000, manager="ann"))
            await handle.wait_idle()
            [task] = engine.tasks(instance_id=handle.instance_id)
            await engine.claim_task(task.id, user="zoe", groups=["finance-eu"])
            moved = await engine.reassign_task(task.id, assignee="cfo", by="ops")
            assert ("cfo", (), None) == (moved.assignee, moved.candidate_groups, moved.claimed_by)
            assert [] == engine.tasks(user="zoe", groups=["finance-eu"])
            with pytest.raises(TaskNotAuthorized):
                await engine.complete_task(task.id, user="zoe", groups=["finance-eu"])
            await engine.complete_task(task.id, user="cfo")
            await handle.result()
            [entry] = [e for e in handle.history() if e.kind is K.TASK_REASSIGNED]
            expected = f"{task.id}: group finance-eu -> cfo by ops (zoe's claim given back)"
            assert ("approve", expected) == (entry.step, entry.detail)

    run(scenario())


def test_delegate_is_for_one_the_task_is_for(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: a stranger may not delegate; the assignee may; a claimed task only by its claimant."""

    async def scenario() -> None:
        async with new_engine() as engine:
            small = await engine.start(Expense(amount=10, manager="ann"))
            large = await engine.start(Expense(amount=5000, manager="ann"))
            await small.wait_idle()
            await large.wait_idle()
            [a] = engine.tasks(instance_id=small.instance_id)
            [b] = engine.tasks(instance_id=large.instance_id)
            with pytest.raises(TaskNotAuthorized) as refused:
                await engine.delegate_task(a.id, user="eve", to="eve")
            assert "may not delegate it; only assignee 'ann' may" in str(refused.value)
            delegated = await engine.delegate_task(a.id, user="ann", to="bob")
            assert "bob" == delegated.assignee
            await engine.claim_task(b.id, user="zoe", groups=["finance-eu"])
            with pytest.raises(TaskClaimed):
                await engine.delegate_task(b.id, user="max", groups=["finance-eu"], to="max")
            handed = await engine.delegate_task(b.id, user="zoe", groups=["finance-eu"], to="max")
            assert ("max", ("finance-eu",), None) == (handed.assignee, handed.candidate_groups, handed.claimed_by)
            await engine.complete_task(a.id, user="bob")
            await engine.complete_task(b.id, user="max")
            await small.result()
            await large.result()
            [entry] = [e.detail for e in small.history() if e.kind is K.TASK_DELEGATED]
            assert f"{a.id}: ann -> bob by ann" == entry

    run(scenario())


def test_reassign_and_delegate_refuse_bad_input_and_closed_tasks(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: unknown or closed tasks, nobody left, names that are not names: typed errors, nothing changed."""

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Expense(amount=10, manager="ann"))
            await handle.wait_idle()
            [task] = engine.tasks(instance_id=handle.instance_id)
            with pytest.raises(TaskNotFound):
                await engine.reassign_task("nope", assignee="bob")
            with pytest.raises(ValueError, match="nobody could complete it"):
                await engine.reassign_task(task.id)
            with pytest.raises(TypeError, match="assignee= must be a name"):
                await engine.reassign_task(task.id, assignee=3)  # type: ignore[arg-type] # pyright: ignore[reportArgumentType]
            with pytest.raises(ValueError, match="to= must be a non-empty name"):
                await engine.delegate_task(task.id, user="ann", to="")
            assert [task] == engine.tasks(instance_id=handle.instance_id)
            await engine.complete_task(task.id, user="ann")
            with pytest.raises(TaskAlreadyCompleted):
                await engine.reassign_task(task.id, assignee="bob")
            with pytest.raises(TaskAlreadyCompleted):
                await engine.delegate_task(task.id, user="ann", to="bob")

    run(scenario())


def test_people_options_are_checked_at_definition() -> None:
    """Issue 10: bad-task-people for a callable taking other than the workflow, or a value of the wrong kind."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Odd(Workflow):
            def two(self, other: int) -> str:
                return str(other)

            @human_task(initial=True, final=True, assignee=two)  # type: ignore[arg-type] # pyright: ignore[reportArgumentType, reportCallIssue]
            def approve(self, ctx: Ctx) -> None: ...

    assert [("approve", "bad-task-people")] == [(p.step, p.rule) for p in err.value.problems]
    assert "@human_task(assignee=two) must accept exactly one argument (the workflow)" in str(err.value)


def test_the_diagram_names_the_computing_methods() -> None:
    """Issue 10: Mermaid shows who the task is for as declared: the methods that compute it."""
    assert "    approve: approve (human task: approver(), finance())\n" in mermaid(Expense)


def test_workflow_machine_completes_tasks_as_the_people_computed() -> None:
    """Issue 10: the toolkit completes a computed task as one it is for, and checks the intruder is refused."""
    inputs = st.builds(Expense, amount=st.sampled_from([10, 5000]), manager=st.just("ann"))
    machine = WorkflowMachine(Expense, inputs=inputs, require_coverage=1.0)

    passes(machine)
