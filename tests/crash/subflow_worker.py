"""
The parent and child workflows and the worker of the subflow crash test: ``python -m tests.crash.subflow_worker DB MODE [N]``.

``ScCrashParcel`` (the child): prepare (undoable; every third parcel's first
attempt fails and is retried after a backoff), a clerk's check for the parcels
``n % 5`` in (1, 4), produce (undoable; fails for good when ``n % 5 == 2``),
then seal. ``ScCrashOrder`` (an even ``n``) and ``ScCrashStrictOrder`` (an odd
``n``), the parents: reserve (undoable), ship the parcel as a child, bill
(fails for good when ``n % 5`` is 3 or 4, after the child completed, so the
child is undone), done. ``ScCrashOrder`` routes a failed child to ``fallback``
(``on_error=ChildWorkflowFailed``) and completes; ``ScCrashStrictOrder`` fails
and releases its reservation. Every step that changes something outside logs its
effect under its idempotency key before the engine commits (see
``crash_flow.effect``).

MODE ``seed`` starts N parents and exits at once. MODE ``work`` recovers the
store, then acts as the clerk: it completes every open check it sees, every few
milliseconds, until every instance (parents and children) is terminal; then it
prints ``ALL DONE`` and exits 0. The test SIGKILLs ``work`` processes at random
moments and starts new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import attrs
import structlog

from statemachine_orch import (
    ChildWorkflowFailed,
    Ctx,
    Engine,
    NonRetryableError,
    Retry,
    SqliteStore,
    TaskError,
    Workflow,
    after,
    human_task,
    step,
    subflow,
)
from tests.crash.crash_flow import effect

CLERK = "sc-clerk"


@attrs.frozen
class ScCheck:
    """The clerk's form: which parcel it is for."""

    n: int


def _pause(n: int, salt: int) -> float:
    """A step's duration, 20-100 ms, different per order and step."""
    return 0.02 + ((n * 7 + salt * 13) % 5) * 0.02


def needs_check(n: int) -> bool:
    """Whether the parcel waits on the clerk."""
    return n % 5 in (1, 4)


def child_fails(n: int) -> bool:
    """Whether the parcel's production fails for good."""
    return n % 5 == 2


def billing_fails(n: int) -> bool:
    """Whether the parent's billing fails for good after its child completed."""
    return n % 5 in (3, 4)


class ScCrashParcel(Workflow, name="ScCrashParcel", version="1"):
    """The child: prepare, maybe a clerk's check, produce, seal."""

    n: int
    checked: int = -1
    code: str = ""

    @step(initial=True, retry=Retry(attempts=3, initial=0.05))
    async def prepare(self, ctx: Ctx) -> None:
        """Prepare; every third parcel's first attempt meets a busy line."""
        await asyncio.sleep(_pause(self.n, 1))
        if self.n % 3 == 0 and ctx.attempt == 1:
            msg = "line busy"
            raise ConnectionError(msg)
        effect("prepare", ctx)

    @prepare.compensation
    async def unprepare(self, ctx: Ctx) -> None:
        """Give the material back."""
        await asyncio.sleep(0.002)
        effect("unprepare", ctx)

    @after(prepare, when=lambda wf: needs_check(wf.n))
    @human_task(assignee=CLERK, form=ScCheck)
    def check(self, ctx: Ctx, form: ScCheck) -> None:
        """Take the clerk's check."""
        self.checked = form.n

    @after(prepare)
    @after(check)
    @step
    async def produce(self, ctx: Ctx) -> None:
        """Produce; fails for good for every fifth parcel (n % 5 == 2)."""
        await asyncio.sleep(_pause(self.n, 2))
        if child_fails(self.n):
            msg = "machine broken"
            raise NonRetryableError(msg)
        effect("produce", ctx)

    @produce.compensation
    async def unproduce(self, ctx: Ctx) -> None:
        """Scrap the product."""
        await asyncio.sleep(0.002)
        effect("unproduce", ctx)

    @after(produce)
    @step(final=True)
    async def seal(self, ctx: Ctx) -> None:
        """Seal it."""
        await asyncio.sleep(_pause(self.n, 3))
        effect("seal", ctx)
        self.code = f"P-{self.n}"


class ScCrashOrder(Workflow, name="ScCrashOrder", version="1"):
    """Reserve, ship the parcel as a child (a failed child goes to fallback), bill, done."""

    n: int
    code: str = ""

    @step(initial=True)
    async def reserve(self, ctx: Ctx) -> None:
        """Hold the stock."""
        await asyncio.sleep(_pause(self.n, 4))
        effect("reserve", ctx)

    @reserve.compensation
    async def release(self, ctx: Ctx) -> None:
        """Give the stock back."""
        await asyncio.sleep(0.002)
        effect("release", ctx)

    @after(reserve)
    @subflow(ScCrashParcel)
    def ship(self, ctx: Ctx) -> ScCrashParcel:
        """The parcel, as a child."""
        return ScCrashParcel(n=self.n)

    @ship.on_result
    def shipped(self, ctx: Ctx, child: ScCrashParcel) -> None:
        """Copy the parcel's code."""
        self.code = child.code

    @after(ship, on_error=ChildWorkflowFailed)
    @step(final=True)
    async def fallback(self, ctx: Ctx) -> None:
        """Ship by the fallback courier."""
        await asyncio.sleep(0.002)
        effect("fallback", ctx)

    @after(ship)
    @step
    async def bill(self, ctx: Ctx) -> None:
        """Bill; fails for good when ``billing_fails(n)``."""
        await asyncio.sleep(_pause(self.n, 5))
        if billing_fails(self.n):
            msg = "billing is down"
            raise NonRetryableError(msg)
        effect("bill", ctx)

    @after(bill)
    @step(final=True)
    async def done(self, ctx: Ctx) -> None:
        """Close the order."""
        await asyncio.sleep(0.002)
        effect("done", ctx)


class ScCrashStrictOrder(Workflow, name="ScCrashStrictOrder", version="1"):
    """Reserve, ship the parcel as a child (a failed child fails the order), bill, done."""

    n: int
    code: str = ""

    @step(initial=True)
    async def reserve(self, ctx: Ctx) -> None:
        """Hold the stock."""
        await asyncio.sleep(_pause(self.n, 4))
        effect("reserve", ctx)

    @reserve.compensation
    async def release(self, ctx: Ctx) -> None:
        """Give the stock back."""
        await asyncio.sleep(0.002)
        effect("release", ctx)

    @after(reserve)
    @subflow(ScCrashParcel)
    def ship(self, ctx: Ctx) -> ScCrashParcel:
        """The parcel, as a child."""
        return ScCrashParcel(n=self.n)

    @ship.on_result
    def shipped(self, ctx: Ctx, child: ScCrashParcel) -> None:
        """Copy the parcel's code."""
        self.code = child.code

    @after(ship)
    @step
    async def bill(self, ctx: Ctx) -> None:
        """Bill; fails for good when ``billing_fails(n)``."""
        await asyncio.sleep(_pause(self.n, 5))
        if billing_fails(self.n):
            msg = "billing is down"
            raise NonRetryableError(msg)
        effect("bill", ctx)

    @after(bill)
    @step(final=True)
    async def done(self, ctx: Ctx) -> None:
        """Close the order."""
        await asyncio.sleep(0.002)
        effect("done", ctx)


WORKFLOWS: list[type[Workflow]] = [ScCrashParcel, ScCrashOrder, ScCrashStrictOrder]


def new_order(n: int) -> ScCrashOrder | ScCrashStrictOrder:
    """The parent of order *n*: even orders route a failed child, odd ones fail."""
    return ScCrashOrder(n=n) if n % 2 == 0 else ScCrashStrictOrder(n=n)


async def seed(db: str, count: int) -> None:
    """Start *count* orders; stop at once."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=WORKFLOWS)
    for n in range(count):
        await engine.start(new_order(n))
    await engine.aclose()
    store.close()


async def work(db: str) -> None:
    """Recover, then complete every open check as it appears, until every instance is terminal."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=WORKFLOWS, concurrency=32)
    report = await engine.recover()
    print(f"recovered {report.resumed}", flush=True)
    while not all(i.status.is_terminal for i in engine.instances()):
        for task in engine.tasks(user=CLERK):
            wf: ScCrashParcel = engine.workflow(task.instance_id)
            with contextlib.suppress(TaskError):  # its instance was cancelled (and the task with it) meanwhile
                await engine.complete_task(task.id, user=CLERK, form=ScCheck(n=wf.n))
        await asyncio.sleep(0.005)
    await engine.wait_idle()
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
        asyncio.run(work(db))


if __name__ == "__main__":
    main()
