"""A loop with ``@goto`` (guarded back edge plus a default way out); both checkers accept it."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, goto, step


class PollUntilReady(Workflow):
    job_id: str
    polls: int = 0
    ready: bool = False
    limit: int = 5

    def should_retry(self) -> bool:
        return not self.ready and self.polls < self.limit

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None:
        self.polls = 0

    @after(submit)
    @goto(submit, when=lambda wf: wf.polls > wf.limit)
    @step
    async def poll(self, ctx: Ctx) -> None:
        self.polls += 1
        self.ready = bool(await ctx.call("jobs", "status", job_id=self.job_id))

    @goto(poll, when=should_retry)
    @after(poll)
    @step
    def inspect(self, ctx: Ctx) -> None:
        ctx.log.info("inspected", polls=self.polls)

    @after(inspect)
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        ctx.log.info("done", job_id=self.job_id)


class LoopOnItself(Workflow, version="1.1"):
    count: int = 0

    @step(initial=True)
    def start(self, ctx: Ctx) -> None:
        self.count = 0

    @after(start)
    @goto(start, when=lambda wf: wf.count < 0)
    @step
    def tick(self, ctx: Ctx) -> None:
        self.count += 1

    @after(tick)
    @step(final=True)
    def stop(self, ctx: Ctx) -> None:
        self.count = -self.count
