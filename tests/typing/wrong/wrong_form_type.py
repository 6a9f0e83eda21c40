"""A human-task method must take exactly the declared form type (and only when a form is declared)."""

from __future__ import annotations

import attrs

from statemachine_orch import Ctx, Workflow, after, human_task, step


@attrs.frozen
class Approval:
    approved: bool


@attrs.frozen
class Other:
    text: str


class OrderProcess(Workflow):
    approved: bool = False

    @step(initial=True)
    def start(self, ctx: Ctx) -> None:
        self.approved = False

    @after(start)
    @human_task(assignee="manager", form=Approval)  # E: Parameter 3: type "Approval" is incompatible with type "Other"  # mypy: Argument 1 has incompatible type "Callable[[OrderProcess, Ctx, Other], None]"; expected "Callable[[OrderProcess, Ctx, Approval], None]"
    def approve(self, ctx: Ctx, form: Other) -> None:
        self.approved = form.text == "yes"

    @after(approve)
    @human_task(assignee="manager", form=Approval)  # E: Function accepts too few positional parameters; expected 3 but received 2  # mypy: expected "Callable[[OrderProcess, Ctx, Approval], None]"
    def approve_without_form(self, ctx: Ctx) -> None:
        self.approved = True

    @after(approve_without_form)
    @human_task(assignee="manager")  # E: Extra parameter "form"  # mypy: Argument 1 has incompatible type "Callable[[OrderProcess, Ctx, Approval], None]"; expected "Callable[[OrderProcess, Ctx], None]"
    def form_not_declared(self, ctx: Ctx, form: Approval) -> None:
        self.approved = form.approved

    @after(form_not_declared)
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        self.approved = True
