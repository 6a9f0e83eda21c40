"""Issue 10: reminders beside a wait, once and repeated, next to an escalation."""

from __future__ import annotations

from datetime import timedelta

from statemachine_orch import Ctx, Workflow, after, human_task, step


class Review(Workflow):
    nudges: int = 0

    @human_task(initial=True, assignee="ann")
    def review(self, ctx: Ctx) -> None: ...

    @after(review, reminder=timedelta(hours=8), repeat=True)
    @step
    def nudge(self, ctx: Ctx) -> None:
        self.nudges += 1

    @after(review, reminder=3600.0)
    @step
    async def copy_boss(self, ctx: Ctx) -> None: ...

    @after(review, timeout=timedelta(days=2))
    @step(final=True)
    def escalate(self, ctx: Ctx) -> None: ...

    @after(review)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...
