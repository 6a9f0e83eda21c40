"""
The workflow and worker of the task-completion crash test: ``python -m tests.crash.task_worker DB MODE [N]``.

``TaskFlow``: reserve and charge (both undoable, with effects logged under their
idempotency keys), then a clerk's verdict (a human task whose form names the
order it is for), then ship — or, when the verdict rejects the order, a failure
that undoes charge and reserve.

MODE ``seed`` starts N instances and exits once all wait on their task. MODE
``work [N]`` recovers the store, then acts as the clerk on (the first N of) the
open tasks at once:
orders with ``n % 4 == 0`` are withdrawn (cancelled with compensation), the
others get a verdict (rejected when ``n % 3 == 0``); it waits until nothing runs,
prints ``ALL DONE`` and exits 0. The test SIGKILLs ``work`` processes while they
complete tasks and run compensations, and starts new ones.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import attrs
import structlog

from statemachine_orch import Ctx, Engine, NonRetryableError, SqliteStore, Workflow, after, human_task, step
from tests.crash.crash_flow import effect


@attrs.frozen
class Verdict:
    """The clerk's form: which order it is for, and whether it ships."""

    n: int
    approve: bool


class TaskFlow(Workflow, name="TaskFlow", version="1"):
    """Reserve, charge, a clerk's verdict, ship; a rejection undoes charge and reserve."""

    n: int
    verdict: Verdict | None = None

    @step(initial=True)
    async def reserve(self, ctx: Ctx) -> None:
        """Hold the stock."""
        await asyncio.sleep(0.001)
        effect("reserve", ctx)

    @reserve.compensation
    async def release(self, ctx: Ctx) -> None:
        """Give the stock back."""
        await asyncio.sleep(0.003)
        effect("release", ctx)

    @after(reserve)
    @step
    async def charge(self, ctx: Ctx) -> None:
        """Take the money."""
        await asyncio.sleep(0.001)
        effect("charge", ctx)

    @charge.compensation
    async def refund(self, ctx: Ctx) -> None:
        """Give the money back."""
        await asyncio.sleep(0.003)
        effect("refund", ctx)

    @after(charge)
    @human_task(assignee="clerk", form=Verdict)
    def decide(self, ctx: Ctx, form: Verdict) -> None:
        """Record the verdict."""
        self.verdict = form

    @after(decide)
    @step(final=True)
    async def ship(self, ctx: Ctx) -> None:
        """Ship an approved order; a rejected one fails for good (and is compensated)."""
        if self.verdict is None or not self.verdict.approve:
            msg = "rejected by the clerk"
            raise NonRetryableError(msg)
        await asyncio.sleep(0.001)
        effect("ship", ctx)


async def seed(db: str, count: int) -> None:
    """Start *count* orders and wait until each waits on its task."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=[TaskFlow])
    handles = [await engine.start(TaskFlow(n=n)) for n in range(count)]
    for handle in handles:
        await handle.wait_idle()
    await engine.aclose()
    store.close()


async def work(db: str, batch: int | None) -> None:
    """Recover, then complete or withdraw the first *batch* open tasks at once, and wait until nothing runs."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=[TaskFlow], concurrency=32)
    report = await engine.recover()
    print(f"recovered {report.resumed}", flush=True)

    async def act(task_id: str, instance_id: str) -> None:
        wf: TaskFlow = engine.workflow(instance_id)
        if wf.n % 4 == 0:
            await engine.cancel(instance_id, reason="withdrawn", compensate=True)
        else:
            await engine.complete_task(task_id, user="clerk", form=Verdict(n=wf.n, approve=wf.n % 3 != 0))

    await asyncio.gather(*(act(t.id, t.instance_id) for t in engine.tasks(user="clerk")[:batch]))
    await engine.wait_idle()
    if batch is None:
        assert all(i.status.is_terminal for i in engine.instances())
    await engine.aclose()
    store.close()
    print("ALL DONE", flush=True)


def main() -> None:
    """Entry point."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    db, mode = sys.argv[1], sys.argv[2]
    if mode == "seed":
        asyncio.run(seed(db, int(sys.argv[3])))
    else:
        asyncio.run(work(db, int(sys.argv[3]) if len(sys.argv) > 3 else None))


if __name__ == "__main__":
    main()
