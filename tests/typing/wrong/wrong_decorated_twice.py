"""A step is not a function: decorating it again with ``@step`` or ``@human_task`` is an error."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, human_task, step


class OrderProcess(Workflow):
    amount: float = 0

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None:
        self.amount = 0

    @step  # E: "Step[Self@OrderProcess, (Ctx), None]" is not assignable to type "(W@step, Ctx) -> R2@step"  # mypy: No overload variant of "step" matches argument type "Step[OrderProcess, [Ctx], None]"
    @step
    def twice(self, ctx: Ctx) -> None:
        self.amount = 1

    @human_task(assignee="manager")  # E: is not assignable to type "(W@human_task, Ctx) -> R2@human_task"  # mypy: Argument 1 has incompatible type "Step[
    @after(begin)
    @step
    def task_over_step(self, ctx: Ctx) -> None:
        self.amount = 2

    @step(final=True)  # E: is not assignable to type "(W@__call__, Ctx) -> R2@__call__"  # mypy: matches argument type "Step[
    @after(begin)
    @human_task(assignee="manager")
    def step_over_task(self, ctx: Ctx) -> None:
        self.amount = 3
