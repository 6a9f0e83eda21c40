"""
Guards on edges out of a step inherited from an ``abstract=True`` base are typed with the base.

A type checker types ``when=lambda wf: ...`` when it evaluates ``@after(...)``,
before it sees the decorated step: the only class it knows then is the one that
declared the source step. So a misspelt variable of the base is caught, and so is
a variable of the subclass (read it in a guard on an edge out of one of the
subclass's own steps instead, as ``ok/ok_reusable_steps.py`` does).
"""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, goto, step


class Reviewed(Workflow, abstract=True):
    approved: bool = False

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None:
        self.approved = True


class Article(Reviewed):
    title: str = ""

    @after(Reviewed.submit, when=lambda wf: wf.aproved)  # E: Cannot access attribute "aproved" for class "Reviewed"  # mypy: "Reviewed" has no attribute "aproved"
    @after(Reviewed.submit, when=lambda wf: wf.title != "")  # E: Cannot access attribute "title" for class "Reviewed"  # mypy: "Reviewed" has no attribute "title"
    @step(final=True)
    def publish(self, ctx: Ctx) -> None:
        self.title = self.title.strip()

    @after(Reviewed.submit)
    @goto(Reviewed.submit, when=lambda wf: not wf.aproved)  # E: Cannot access attribute "aproved" for class "Reviewed"  # mypy: "Reviewed" has no attribute "aproved"
    @step
    def revise(self, ctx: Ctx) -> None:
        self.title = self.titel  # E: Cannot access attribute "titel"  # mypy: "Article" has no attribute "titel"
