"""
A worker for the undo crash test (issue 10, item 2): ``python -m tests.crash.undo_worker DB MODE [N]``.

``UndoFlow`` holds a seat with a partner that may time out after taking effect,
so its undo is ``attempted=True``: when the hold fails for good (n % 4 == 0) the
error is routed to ``apologise``, which takes it typed (its ``code`` is the
instance's n) and leads to the failure end ``give_up``; when the payment fails
for good (n % 4 == 1) the instance fails at ``pay``; the others ship. Each body
logs ``<kind> <idempotency key> <detail>`` to the effects file before its commit.
MODE ``seed`` starts N instances; ``run`` recovers and runs to the end (``ALL
DONE``), as ``tests/crash/worker.py`` does.
"""

from __future__ import annotations

import asyncio

from statemachine_orch import (
    Ctx,
    Engine,
    NonRetryableError,
    Retry,
    SqliteStore,
    Workflow,
    after,
    failure_end,
    step,
)
from tests.crash.crash_flow import effect
from tests.crash.worker_cli import run_to_the_end, worker_main


class HoldTimedOut(NonRetryableError):
    """The partner did not confirm the hold in time (it may still have taken it)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"hold {code} timed out")
        self.code = code


def _log(kind: str, ctx: Ctx, detail: str) -> None:
    effect(f"{kind}:{detail}", ctx)


class UndoFlow(Workflow, name="UndoFlow", version="1"):
    """Hold a seat, pay, ship; undo the hold even when it failed."""

    n: int

    @step(initial=True, retry=Retry(attempts=2, initial=0.01))
    async def hold(self, ctx: Ctx) -> None:
        """The hold takes effect, then its confirmation may time out."""
        effect("hold", ctx)
        await asyncio.sleep(0.003)
        if self.n % 4 == 0:
            raise HoldTimedOut(self.n)

    @hold.compensation(attempted=True, retry=Retry(attempts=3, initial=0.01))
    async def release(self, ctx: Ctx) -> None:
        """Release the hold, whether it was confirmed or not."""
        await asyncio.sleep(0.002)
        effect("release", ctx)

    @after(hold, on_error=HoldTimedOut)
    @step(retry=Retry(attempts=3, initial=0.01))
    async def apologise(self, ctx: Ctx, error: HoldTimedOut) -> None:
        """Tell the customer, with the code the failed hold raised."""
        await asyncio.sleep(0.002)
        _log("apologise", ctx, f"{type(error).__name__}={error.code}")

    @after(apologise)
    @failure_end(outcome="unavailable")
    def give_up(self, ctx: Ctx) -> str:
        """The seat could not be held."""
        return f"no seat for order {self.n}"

    @after(hold)
    @step(retry=Retry(attempts=2, initial=0.01))
    async def pay(self, ctx: Ctx) -> None:
        """Every fourth order (n % 4 == 1) is declined for good."""
        await asyncio.sleep(0.002)
        if self.n % 4 == 1:
            msg = "card declined"
            raise NonRetryableError(msg)
        effect("pay", ctx)

    @after(pay)
    @step(final=True)
    async def ship(self, ctx: Ctx) -> None:
        """Ship it."""
        await asyncio.sleep(0.001)
        effect("ship", ctx)


async def seed(db: str, count: int) -> None:
    """Record *count* new instances."""
    with SqliteStore(db) as store:
        engine = Engine(store, workflows=[UndoFlow])
        for n in range(count):
            await engine.start(UndoFlow(n=n))
        await engine.aclose()


async def run(db: str) -> None:
    """Recover and run until every instance is terminal."""
    await run_to_the_end(db, [UndoFlow], concurrency=16)


if __name__ == "__main__":
    worker_main(seed, run)
