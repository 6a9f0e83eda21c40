"""Issue 10: failure ends, bare and with an outcome, sync and async, return their reason."""

from __future__ import annotations

from statemachine_orch import Ctx, Failure, InstanceInfo, Step, Workflow, WorkflowFailed, after, failure_end, step


class Application(Workflow):
    score: int = 0

    @step(initial=True)
    def assess(self, ctx: Ctx) -> None:
        self.score += 1

    @after(assess, when=lambda wf: wf.score > 10)
    @step(final=True)
    def accept(self, ctx: Ctx) -> None: ...

    @after(assess, when=lambda wf: wf.score < 0)
    @failure_end
    def withdraw(self, ctx: Ctx) -> str:
        return "withdrawn"

    @after(assess)
    @failure_end(outcome="declined")
    async def decline(self, ctx: Ctx) -> str:
        return f"score {self.score}"


def outcome_of(info: InstanceInfo, failure: Failure | None, exc: WorkflowFailed) -> str | None:
    error: BaseException | None = failure.error if failure is not None else exc.error
    return info.outcome if error is None else exc.outcome


ended: Step[Application, [Ctx], str] = Application.withdraw
