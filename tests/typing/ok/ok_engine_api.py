"""The engine's API keeps the workflow type: handles and results are typed, no ``reveal_type`` needed."""

from __future__ import annotations

import attrs

from statemachine_orch import (
    Ctx,
    Engine,
    Handle,
    InstanceInfo,
    InstanceStatus,
    MemoryStore,
    Task,
    Workflow,
    WorkflowFailed,
    after,
    human_task,
    step,
)


@attrs.frozen
class Decision:
    accepted: bool


class Signup(Workflow):
    email: str
    age: int
    accepted: bool = False
    welcome_sent: bool = False

    @step(initial=True)
    def register(self, ctx: Ctx) -> None:
        ctx.log.info("registered", email=self.email)

    @after(register, when=lambda wf: wf.age < 18)
    @human_task(candidate_groups=["moderators"], form=Decision)
    def moderate(self, ctx: Ctx, form: Decision) -> None:
        self.accepted = form.accepted

    @after(register)
    @after(moderate)
    @step(final=True)
    async def welcome(self, ctx: Ctx) -> None:
        self.welcome_sent = await ctx.call("mail", "send", to=self.email) is not None


class Mailer:
    def send(self, to: str) -> str:
        return f"sent to {to}"


async def run() -> tuple[str, int, bool]:
    async with Engine(MemoryStore(), services={"mail": Mailer()}) as engine:
        handle: Handle[Signup] = await engine.start(Signup(email="a@example.org", age=30))
        done = await handle.result()
        email: str = done.email
        age: int = (await handle.result()).age

        young = engine.start_nowait(Signup(email="b@example.org", age=15))
        status: InstanceStatus = await young.wait_idle()
        tasks: list[Task] = engine.tasks(groups=["moderators"])
        await engine.complete_task(tasks[0].id, user="mod", groups=["moderators"], form=Decision(accepted=True))
        try:
            accepted: bool = (await young.result()).accepted
        except WorkflowFailed as failed:
            accepted = failed.status is InstanceStatus.FAILED
        live: Signup = young.workflow
        infos: list[InstanceInfo] = engine.instances(status=InstanceStatus.COMPLETED, workflow=Signup)
        step_name: str | None = young.step
        print(status.value, live.email, len(infos), step_name, len(engine.history(young.instance_id)))
        parked = await engine.start(Signup(email="c@example.org", age=12))
        cancelled: InstanceStatus = await engine.cancel(parked.instance_id, reason="test", compensate=False)
        print(cancelled.value)
        return email, age, accepted
