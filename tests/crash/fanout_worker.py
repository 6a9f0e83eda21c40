"""
The parent and child workflows and the worker of the fan-out crash test: ``python -m tests.crash.fanout_worker DB MODE [N]``.

``FcParcel`` (the child, one per parcel): prepare (undoable; the first attempt of
every third parcel meets a busy line and is retried after a backoff), produce
(undoable; fails for good for the parcels ``fails(n, i)`` says), then seal.
``FcOrder`` (an even ``n``, no failure tolerated) and ``FcLenientOrder`` (an odd
``n``, one tolerated), the parents (one class body, two tolerances): reserve (undoable), ship ``parcels(n)``
parcels as a fan-out of children, two at a time, bill (fails for good when
``billing_fails(n)``, after every child completed, so they are all undone), done.
Every step that changes something outside logs its effect under its idempotency
key before the engine commits (see ``crash_flow.effect``).

MODE ``seed`` starts N parents and exits at once. MODE ``work`` recovers the
store and runs until every instance (parents and children) is terminal; then it
prints ``ALL DONE`` and exits 0. The test SIGKILLs ``work`` processes at random
moments, mid-fan-out most of the time, and starts new ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import attrs

from statemachine_orch import (
    ChildWorkflowFailed,
    Ctx,
    Engine,
    NonRetryableError,
    Retry,
    SqliteStore,
    Workflow,
    after,
    fan_out,
    step,
)
from tests.crash.crash_flow import effect
from tests.crash.worker_cli import worker_main


def _pause(n: int, i: int, salt: int) -> float:
    """A step's duration, 10-50 ms, different per order, parcel and step."""
    return 0.01 + ((n * 7 + i * 5 + salt * 13) % 5) * 0.01


def parcels(n: int) -> int:
    """How many parcels order *n* ships (2 to 4)."""
    return 2 + n % 3


def fails(n: int, i: int) -> bool:
    """Whether parcel *i* of order *n* cannot be produced: one parcel when n % 5 == 2, two when n % 5 == 4."""
    return (n % 5 == 2 and i == 1) or (n % 5 == 4 and i in (0, 1))


def billing_fails(n: int) -> bool:
    """Whether the parent's billing fails for good after its fan-out completed."""
    return n % 5 == 3


class FcParcel(Workflow, name="FcParcel", version="1"):
    """The child: prepare, produce, seal."""

    n: int
    i: int
    code: str = ""

    @step(initial=True, retry=Retry(attempts=3, initial=0.05))
    async def prepare(self, ctx: Ctx) -> None:
        """Prepare; every third parcel's first attempt meets a busy line."""
        await asyncio.sleep(_pause(self.n, self.i, 1))
        if (self.n + self.i) % 3 == 0 and ctx.attempt == 1:
            msg = "line busy"
            raise ConnectionError(msg)
        effect("prepare", ctx)

    @prepare.compensation
    async def unprepare(self, ctx: Ctx) -> None:
        """Give the material back."""
        await asyncio.sleep(0.002)
        effect("unprepare", ctx)

    @after(prepare)
    @step
    async def produce(self, ctx: Ctx) -> None:
        """Produce; fails for good for the parcels ``fails(n, i)`` names."""
        await asyncio.sleep(_pause(self.n, self.i, 2))
        if fails(self.n, self.i):
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
        await asyncio.sleep(_pause(self.n, self.i, 3))
        effect("seal", ctx)
        self.code = f"P-{self.n}-{self.i}"


def _order(name: str, tolerate: int) -> type[Workflow]:
    """A parent: reserve, ship every parcel (two at a time; *tolerate* may fail), bill, done."""

    class Order(Workflow, name=name, version="1"):
        n: int
        codes: list[str] = attrs.field(factory=list[str])

        @step(initial=True)
        async def reserve(self, ctx: Ctx) -> None:
            """Hold the stock."""
            await asyncio.sleep(0.005)
            effect("reserve", ctx)

        @reserve.compensation
        async def release(self, ctx: Ctx) -> None:
            """Give the stock back."""
            await asyncio.sleep(0.002)
            effect("release", ctx)

        @after(reserve)
        @fan_out(FcParcel, limit=2, tolerate=tolerate)
        def ship(self, ctx: Ctx) -> list[FcParcel]:
            """A child per parcel."""
            return [FcParcel(n=self.n, i=i) for i in range(parcels(self.n))]

        @ship.on_result
        def shipped(self, ctx: Ctx, children: Sequence[FcParcel | ChildWorkflowFailed]) -> None:
            """Keep the parcels' codes, in parcel order (``failed`` for a tolerated failure)."""
            self.codes = [c.code if isinstance(c, FcParcel) else "failed" for c in children]

        @after(ship)
        @step
        async def bill(self, ctx: Ctx) -> None:
            """Bill; fails for good when ``billing_fails(n)``."""
            await asyncio.sleep(0.005)
            if billing_fails(self.n):
                msg = "billing is down"
                raise NonRetryableError(msg)
            effect("bill", ctx)

        @after(bill)
        @step(final=True)
        async def done(self, ctx: Ctx) -> None:
            """Close the order."""
            effect("done", ctx)

    return Order


FcOrder = _order("FcOrder", tolerate=0)
"""Even orders: the first failed parcel fails the order."""
FcLenientOrder = _order("FcLenientOrder", tolerate=1)
"""Odd orders: one parcel may fail (its code is then ``failed``)."""


WORKFLOWS: list[type[Workflow]] = [FcParcel, FcOrder, FcLenientOrder]


def new_order(n: int) -> Workflow:
    """The parent of order *n*: even orders tolerate no failure, odd ones one."""
    order: Workflow = (FcOrder if n % 2 == 0 else FcLenientOrder)(n=n)  # type: ignore[call-arg]
    return order


async def seed(db: str, count: int) -> None:
    """Start *count* orders; stop at once."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=WORKFLOWS)
    for n in range(count):
        await engine.start(new_order(n), instance_id=f"order-{n}")
    await engine.aclose()
    store.close()


async def work(db: str) -> None:
    """Recover, then run until every instance is terminal."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=WORKFLOWS, concurrency=32)
    report = await engine.recover()
    print(f"recovered {report.resumed}", flush=True)
    while not all(i.status.is_terminal for i in engine.instances()):
        await engine.wait_idle()
        await asyncio.sleep(0.005)  # idle, and not all ended yet: a child's end is about to resume its parent
    await engine.aclose()
    store.close()
    print("ALL DONE", flush=True)


if __name__ == "__main__":
    worker_main(seed, work)
