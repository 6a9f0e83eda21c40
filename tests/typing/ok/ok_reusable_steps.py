"""
Reusable steps (issue 10, item 12): a subclass connects the steps of an abstract base to its own.

Edges from a base's step into the subclass's steps (and loops back into them)
type-check; a guard on such an edge is typed with the class that declared the
step (it reads the base's variables); the subclass's own steps stay typed with
the subclass, so guards on edges out of them read its variables.
"""

from __future__ import annotations

import asyncio

import attrs

from statemachine_orch import Ctx, Engine, MemoryStore, Retry, VirtualClock, Workflow, after, goto, human_task, step


@attrs.frozen
class Review:
    approved: bool
    comment: str = ""


class Reviewed(Workflow, abstract=True):
    """Submit, then a reviewer decides: shared by every reviewed document."""

    author: str
    approved: bool = False
    rounds: int = 0

    def is_approved(self) -> bool:
        return self.approved

    @step(initial=True, retry=Retry(attempts=3, initial=0.01))
    def submit(self, ctx: Ctx) -> None:
        self.rounds += 1

    @after(submit)
    @human_task(assignee="editor", form=Review)
    def review(self, ctx: Ctx, form: Review) -> None:
        self.approved = form.approved

    @review.compensation
    def withdraw_review(self, ctx: Ctx) -> None:
        self.approved = False


class Article(Reviewed, version="2"):
    """An article: published once approved and titled, revised otherwise."""

    title: str = ""
    published: bool = False

    def titled(self) -> bool:
        return self.title != ""

    @after(Reviewed.review, when=lambda wf: wf.approved and wf.author != "")  # the base's variables
    @after(Reviewed.review, when=Reviewed.is_approved)  # a guard method of the base
    @step
    def check_title(self, ctx: Ctx) -> None:
        self.title = self.title or f"An article by {self.author}"

    @after(check_title, when=lambda wf: wf.titled() and not wf.published)  # a step of its own: the subclass's
    @step(final=True)
    def publish(self, ctx: Ctx) -> None:
        self.published = True

    @after(Reviewed.review)  # the default edge out of the base's step
    @goto(Reviewed.submit, when=lambda wf: wf.rounds < 3)  # a loop back into the base's step
    @step
    def revise(self, ctx: Ctx) -> None:
        self.published = False

    @after(check_title)
    @after(revise)
    @step(final=True)
    def shelve(self, ctx: Ctx) -> None:
        self.published = False

    @after(Reviewed.submit, on_error=ConnectionError)  # an error route out of the base's step
    @step(final=True)
    def give_up(self, ctx: Ctx) -> None:
        self.published = False


async def run() -> tuple[bool, str, int]:
    """Approve an article: it is titled and published."""
    async with Engine(MemoryStore(), clock=VirtualClock()) as engine:
        article = await engine.start(Article(author="ann"))
        await article.wait_idle()
        [task] = engine.tasks(user="editor")
        await engine.complete_task(task.id, user="editor", form=Review(approved=True))
        done: Article = await article.result()
        return done.published, done.title, done.rounds


if __name__ == "__main__":
    print(asyncio.run(run()))
