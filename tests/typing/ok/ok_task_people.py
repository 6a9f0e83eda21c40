"""Issue 10: a human task's assignee and candidate groups computed by typed methods; reassign and delegate."""

from __future__ import annotations

import attrs

from statemachine_orch import Ctx, Engine, Task, Workflow, after, human_task, step


@attrs.frozen
class Answer:
    ok: bool


class Claim(Workflow):
    amount: int
    owner: str
    region: str = "eu"

    def approver(self) -> str | None:
        return self.owner if self.amount < 100 else None

    def regional(self) -> list[str]:
        return [f"approvers-{self.region}"]

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(form=Answer, assignee=approver, candidate_groups=regional)
    def review(self, ctx: Ctx, form: Answer) -> None: ...

    @after(review)
    @human_task(assignee=approver, candidate_groups=("auditors",))
    def confirm(self, ctx: Ctx) -> None: ...

    @after(confirm)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


async def hand_on(engine: Engine, task: Task) -> Task:
    moved = await engine.delegate_task(task.id, user="ann", groups=["approvers-eu"], to="bob")
    return await engine.reassign_task(moved.id, assignee=None, candidate_groups=["auditors"], by="ops")
