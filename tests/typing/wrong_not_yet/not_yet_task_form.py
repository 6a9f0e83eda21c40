"""
Not caught yet: completing a task with a form of the wrong type.

``Engine.complete_task(task_id, *, user, groups, form: object)`` cannot know the task's
form type from a ``str`` id, so ``form=Other(...)`` type-checks and is rejected only at
run time (``TaskFormError``). Making tasks generic in their form would catch it:
``Task[F]``, ``Engine.tasks(step: Step[Any, [Ctx, F], Any]) -> list[Task[F]]`` (e.g.
``engine.tasks(step=Order.approve)``) and ``complete_task(task: Task[F], *, user: str,
form: F)``.
"""

from __future__ import annotations

import attrs

from statemachine_orch import Ctx, Engine, Workflow, after, human_task, step


@attrs.frozen
class Approval:
    approved: bool


@attrs.frozen
class Other:
    text: str


class Order(Workflow):
    approved: bool = False

    @step(initial=True)
    def start(self, ctx: Ctx) -> None:
        self.approved = False

    @after(start)
    @human_task(assignee="manager", form=Approval, final=True)
    def approve(self, ctx: Ctx, form: Approval) -> None:
        self.approved = form.approved


async def complete(engine: Engine) -> None:
    [task] = engine.tasks(user="manager")
    await engine.complete_task(task.id, user="manager", form=Other("yes"))  # not caught: wrong form type
