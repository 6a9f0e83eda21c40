"""Messages, queries and schedules keep their types: a query's answer, a schedule's workflow, a signal-with-start's handle."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from statemachine_orch import (
    CatchUp,
    Ctx,
    Engine,
    Handle,
    MemoryStore,
    Overlap,
    Schedule,
    ScheduleInfo,
    Workflow,
    after,
    query,
    step,
    wait_for,
)


@attrs.frozen
class Restock:
    quantity: int


class Shelf(Workflow):
    sku: str
    count: int = 0

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None:
        ctx.start(Shelf(sku=self.sku + "-spare"), instance_id=f"{self.sku}-spare")

    @after(begin)
    @wait_for(Restock)
    def restock(self, ctx: Ctx, msg: Restock) -> None:
        self.count += msg.quantity
        ctx.signal(f"{self.sku}-spare", Restock(msg.quantity))
        ctx.signal_with_start(Shelf(sku="other"), Restock(1), instance_id="other")

    @after(restock)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...

    @query
    def stocked(self) -> int:
        return self.count

    @query
    def has_at_least(self, n: int, *, strict: bool = False) -> bool:
        return self.count > n if strict else self.count >= n


def shelf_for(due: datetime) -> Shelf:
    return Shelf(sku=due.strftime("%Y%m%d"))


NIGHTLY: Schedule[Shelf] = Schedule("nightly", shelf_for, cron="0 2 * * *")
HOURLY = Schedule(
    "hourly",
    lambda due: Shelf(sku=str(due.hour)),
    every=timedelta(hours=1),
    catch_up=CatchUp.ALL,
    overlap=Overlap.ALLOW,
)


async def run() -> tuple[int, bool, bool, list[ScheduleInfo]]:
    async with Engine(MemoryStore(), schedules=[NIGHTLY, HOURLY]) as engine:
        handle: Handle[Shelf] = await engine.signal_with_start(Shelf(sku="A"), Restock(2), instance_id="A")
        stocked: int = engine.query("A", Shelf.stocked)
        enough: bool = handle.query(Shelf.has_at_least, 1)
        strict: bool = handle.query(Shelf.has_at_least, 1, strict=True)
        direct: int = Shelf(sku="B").stocked()
        return stocked + direct, enough, strict, engine.schedules()
