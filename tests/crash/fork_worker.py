"""
The forked workflow and worker of the fork crash test: ``python -m tests.crash.fork_worker DB MODE [N]``.

``FeCrashFork``: reserve (undoable), then a fork of two branches. One branch
packs (every third order's first attempt fails and is retried after a backoff,
while the other branch runs) and labels (async steps; labelling fails for good
for every fourth order); the other waits on a clerk's task, then records the
verdict.
``ship`` joins them. Every step that changes something outside is undoable and
logs its effect under its idempotency key before the engine commits (see
``crash_flow.effect``).

MODE ``seed`` starts N instances and exits at once (their steps in flight are
cancelled). MODE ``work`` recovers the store, then acts as the clerk: it
completes every open task it sees, every few milliseconds, until every
instance is terminal; then it prints ``ALL DONE`` and exits 0. The test SIGKILLs
``work`` processes at random moments and starts new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import attrs
import structlog

from statemachine_orch import (
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
)
from tests.crash.crash_flow import effect


@attrs.frozen
class Verdict:
    """The clerk's form: which order it is for."""

    n: int


def _pause(n: int, salt: int) -> float:
    """A step's duration, 10-50 ms, different per order and step."""
    return 0.01 + ((n * 7 + salt * 13) % 5) * 0.01


class FeCrashFork(Workflow, name="FeCrashFork", version="1"):
    """Reserve; then pack and label, while a clerk decides and it is recorded; then ship."""

    n: int
    verdict: int = -1

    @step(initial=True)
    async def reserve(self, ctx: Ctx) -> None:
        """Hold the stock."""
        await asyncio.sleep(_pause(self.n, 1))
        effect("reserve", ctx)

    @reserve.compensation
    async def release(self, ctx: Ctx) -> None:
        """Give the stock back."""
        await asyncio.sleep(0.002)
        effect("release", ctx)

    @after(reserve)
    @step(fork=True)
    def split(self, ctx: Ctx) -> None:
        """Start both branches."""

    @after(split)
    @step(retry=Retry(attempts=3, initial=0.02))
    async def pack(self, ctx: Ctx) -> None:
        """Pack; every third order's packer is busy on the first attempt."""
        await asyncio.sleep(_pause(self.n, 2))
        if self.n % 3 == 1 and ctx.attempt == 1:
            msg = "packer busy"
            raise ConnectionError(msg)
        effect("pack", ctx)

    @pack.compensation
    async def unpack(self, ctx: Ctx) -> None:
        """Unpack."""
        await asyncio.sleep(0.002)
        effect("unpack", ctx)

    @after(pack)
    @step
    async def label(self, ctx: Ctx) -> None:
        """Label; every fourth order's address is invalid for good."""
        await asyncio.sleep(_pause(self.n, 3))
        if self.n % 4 == 0:
            msg = "invalid address"
            raise NonRetryableError(msg)
        effect("label", ctx)

    @label.compensation
    async def unlabel(self, ctx: Ctx) -> None:
        """Remove the label."""
        await asyncio.sleep(0.002)
        effect("unlabel", ctx)

    @after(split)
    @human_task(assignee="clerk", form=Verdict)
    def decide(self, ctx: Ctx, form: Verdict) -> None:
        """Take the clerk's verdict."""
        self.verdict = form.n

    @after(decide)
    @step
    async def record(self, ctx: Ctx) -> None:
        """Record the verdict."""
        await asyncio.sleep(_pause(self.n, 4))
        effect("record", ctx)

    @record.compensation
    async def unrecord(self, ctx: Ctx) -> None:
        """Strike the record."""
        await asyncio.sleep(0.002)
        effect("unrecord", ctx)

    @after(label, record)
    @step(final=True)
    async def ship(self, ctx: Ctx) -> None:
        """Ship it."""
        await asyncio.sleep(0.002)
        effect("ship", ctx)


async def seed(db: str, count: int) -> None:
    """Start *count* orders; stop at once."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=[FeCrashFork])
    for n in range(count):
        await engine.start(FeCrashFork(n=n))
    await engine.aclose()
    store.close()


async def work(db: str) -> None:
    """Recover, then complete every open task as it appears, until every order is terminal."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=[FeCrashFork], concurrency=32)
    report = await engine.recover()
    print(f"recovered {report.resumed}", flush=True)
    while not all(i.status.is_terminal for i in engine.instances(workflow=FeCrashFork)):
        for task in engine.tasks(user="clerk"):
            wf: FeCrashFork = engine.workflow(task.instance_id)
            with contextlib.suppress(TaskError):  # its instance failed (and cancelled it) meanwhile
                await engine.complete_task(task.id, user="clerk", form=Verdict(n=wf.n))
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
