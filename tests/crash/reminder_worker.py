"""
A worker for the reminder crash test (issue 10, item 5): ``python -m tests.crash.reminder_worker DB MODE [N]``.

``RemindFlow`` waits on a review nobody completes: ``nudge`` runs every 100 ms and
``copy_lead`` once at 250 ms while the task stays open, until the wait escalates
at 2.5 s. Each side step logs ``<kind> <idempotency key> 1`` to the effects file
before its commit. MODE ``seed`` starts N instances; ``run`` recovers and runs to
the end (``ALL DONE``), as ``tests/crash/worker.py`` does.
"""

from __future__ import annotations

import asyncio

from statemachine_orch import Ctx, Engine, SqliteStore, Workflow, after, human_task, step
from tests.crash.crash_flow import effect
from tests.crash.worker_cli import run_to_the_end, worker_main


class RemindFlow(Workflow, name="RemindFlow", version="1"):
    """A review, nudged while it waits, escalated when it waited too long."""

    n: int

    @human_task(initial=True, assignee="reviewer")
    def review(self, ctx: Ctx) -> None:
        """Nobody completes it in this test."""

    @after(review, reminder=0.1, repeat=True)
    @step
    async def nudge(self, ctx: Ctx) -> None:
        """Remind the reviewer."""
        await asyncio.sleep(0.002)
        effect("nudge", ctx)

    @after(review, reminder=0.25)
    @step
    def copy_lead(self, ctx: Ctx) -> None:
        """Copy the team lead, once."""
        effect("copy", ctx)

    @after(review, timeout=2.5)
    @step(final=True)
    async def escalate(self, ctx: Ctx) -> None:
        """Hand it to the lead."""
        effect("escalate", ctx)

    @after(review)
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        """Reviewed in time."""


async def seed(db: str, count: int) -> None:
    """Record *count* new instances."""
    with SqliteStore(db) as store:
        engine = Engine(store, workflows=[RemindFlow])
        for n in range(count):
            await engine.start(RemindFlow(n=n))
        await engine.aclose()


async def run(db: str) -> None:
    """Recover and run until every instance is terminal."""
    await run_to_the_end(db, [RemindFlow], concurrency=16)


if __name__ == "__main__":
    worker_main(seed, run)
