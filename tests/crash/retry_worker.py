"""
A worker for the unlimited-retries crash test: ``python -m tests.crash.retry_worker DB MODE [N]``.

MODE ``seed`` starts N ``Outage`` instances; MODE ``run`` recovers what the store
holds, prints ``recovered ...``, and runs until every instance has ended
(``ALL DONE``). The test SIGKILLs ``run`` workers while the instances wait out
their retries' backoff.
"""

from __future__ import annotations

import attrs

from statemachine_orch import Ctx, Engine, Retry, SqliteStore, Workflow, after, step
from tests.crash.crash_flow import effect
from tests.crash.worker_cli import run_to_the_end, worker_main

BACKOFF = Retry(attempts=None, initial=0.02, backoff=2.0, max_interval=0.1)
"""Unlimited retries, at most 0.1 s apart: most of a worker's life is spent in backoff."""


def succeeds_on(n: int) -> int:
    """The attempt at which instance *n*'s partner is back."""
    return 20 + n % 3


class Outage(Workflow, name="RetryCrashFlow", version="1"):
    """A call retried without limit until its partner is back; each attempt notes itself in a variable."""

    n: int
    notes: list[str] = attrs.field(factory=list[str])

    @step(initial=True, retry=BACKOFF)
    def call(self, ctx: Ctx) -> None:
        """Fail until attempt ``succeeds_on(n)``; an attempt that finds an earlier one's note says so."""
        effect("dirty" if self.notes else "call", ctx)
        self.notes.append(f"attempt {ctx.attempt}")
        if ctx.attempt < succeeds_on(self.n):
            msg = f"partner down (attempt {ctx.attempt})"
            raise ConnectionError(msg)

    @after(call)
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        """The partner answered."""


async def seed(db: str, count: int) -> None:
    """Record *count* new instances."""
    with SqliteStore(db) as store:
        async with Engine(store, workflows=[Outage]) as engine:
            for n in range(count):
                await engine.start(Outage(n=n), instance_id=f"O-{n}")


async def run(db: str) -> None:
    """Recover, then run until every instance has ended."""
    await run_to_the_end(db, [Outage])


if __name__ == "__main__":
    worker_main(seed, run)
