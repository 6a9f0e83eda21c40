"""
A worker with a schedule, for the kill tests: ``python -m tests.crash.schedule_worker DB MODE``.

Every worker declares the schedule ``tick``: every ``EVERY`` seconds it starts a
``SkTick`` (one step), catching up on every due time missed (``CatchUp.ALL``),
runs overlapping. MODE ``run`` prints ``recovered`` once its engine runs and
works until it is killed; MODE ``finish`` also waits until the schedule has
caught up with the time the worker started (every due time up to then is
started), then stops cleanly and prints ``ALL DONE``. Workers run two at a time
on one SQLite file and are SIGKILLed at random moments.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import datetime

import structlog

from statemachine_orch import CatchUp, Ctx, Engine, Overlap, Schedule, SqliteStore, Workflow, step

EVERY = 0.1
"""The schedule's interval (seconds)."""


class SkTick(Workflow, name="SkTick", version="1"):
    """What the schedule starts: its due time, one step."""

    due: str

    @step(initial=True, final=True)
    async def tick(self, ctx: Ctx) -> None:
        await asyncio.sleep(0.01)


TICK = Schedule(
    "tick",
    lambda due: SkTick(due=due.isoformat()),
    every=EVERY,
    catch_up=CatchUp.ALL,
    overlap=Overlap.ALLOW,
    grace=EVERY,
)


def due_of(instance_id: str) -> datetime:
    """The due time an instance id of ``tick`` names."""
    return datetime.fromisoformat(instance_id.removeprefix("tick@"))


async def work(db: str, *, finish: bool) -> None:
    """Run a worker with the schedule; with *finish*, until the schedule caught up with now, then stop."""
    began = time.time()
    store = SqliteStore(db)
    engine = Engine(store, workflows=[SkTick], schedules=[TICK], lease=2.0, poll=0.02)
    await engine.recover()
    print("recovered", flush=True)
    if not finish:
        await asyncio.Event().wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        [info] = engine.schedules()
        if info.last_due is not None and info.last_due >= began:
            break
        await asyncio.sleep(0.05)
    await engine.aclose()
    store.close()
    print("ALL DONE", flush=True)


def main() -> None:
    """Entry point."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    db, mode = sys.argv[1], sys.argv[2]
    asyncio.run(work(db, finish=mode == "finish"))


if __name__ == "__main__":
    main()
