"""Referring to a step that does not exist (or not yet) is an error: steps are names, not strings."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, goto, step


class OrderProcess(Workflow):
    checked: bool = False

    @step(initial=True)
    def check(self, ctx: Ctx) -> None:
        self.checked = True

    @after(chek)  # E: "chek" is not defined  # mypy: Name "chek" is not defined
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        self.checked = False

    @after(check)
    @goto(validate, when=lambda wf: not wf.checked)  # E: "validate" is not defined  # mypy: Name "validate" is not defined
    @step(final=True)
    def finish(self, ctx: Ctx) -> None:
        self.checked = False

    @after(send_confirmation)  # E: "send_confirmation" is not defined  # mypy: Name "send_confirmation" is
    @step
    def before_its_source(self, ctx: Ctx) -> None:
        self.checked = True

    @after(check)
    @step(final=True)
    def send_confirmation(self, ctx: Ctx) -> None:
        self.checked = True
