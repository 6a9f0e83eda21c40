"""
A fleet worker process: ``python -m tests.crash.fleet_worker BACKEND TARGET LEASE SLOW [CONCURRENCY]``.

BACKEND is ``sqlite`` (TARGET a file path) or ``pg`` (TARGET a connection
string). The worker opens the store, runs an ``Engine`` with that *lease* (and a
short poll) on it, prints ``ready <pid>`` once it has recovered, and runs until
it is killed. It runs ``TaskFlow`` (tests.crash.task_worker) and ``SlowFlow``
below, whose step sleeps *SLOW* seconds in this process: the fleet tests give
the worker they mean to kill or stop a long step, and the survivors a short one.
It also runs the timer workflows ``TimerFlow`` (one timer, the first step) and
``TickFlow`` (a short timer visited one to three times in a loop), and
``BusyFlow`` and ``HogFlow``, whose one step keeps the worker's CPU busy, and
``StuckFlow``, whose first step blocks the worker's loop as a hung worker's
would (for *SLOW* seconds, or until the gate file). CONCURRENCY defaults to 32.

The engine logs with structlog, INFO and above, one line per event, to stdout
(the tests read ``lease_lost`` there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import structlog

from statemachine_orch import Ctx, Engine, SqliteStore, Store, Workflow, after, goto, step, timer
from tests.crash.crash_flow import EFFECTS_ENV
from tests.crash.task_worker import TaskFlow

SLOW_ENV = "ORCH_FLEET_SLOW"
"""How long SlowFlow's step sleeps in this process (seconds)."""

POLL = 0.05


def mark(kind: str, ctx: Ctx) -> None:
    """Append ``<kind> <idempotency key> <attempt> <pid>`` to the effects log (one O_APPEND write)."""
    fd = os.open(os.environ[EFFECTS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {ctx.idempotency_key} {ctx.attempt} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


class SlowFlow(Workflow, name="SlowFlow", version="1"):
    """One step that takes as long as the worker running it is told to, then a final one."""

    n: int

    @step(initial=True)
    async def work(self, ctx: Ctx) -> None:
        """Log its start, wait *SLOW* seconds or until the gate file ``<effects>.gate`` exists, log its end."""
        mark("begin", ctx)
        gate = Path(os.environ[EFFECTS_ENV] + ".gate")
        deadline = time.monotonic() + float(os.environ.get(SLOW_ENV, "0"))
        while time.monotonic() < deadline and not _open(gate):
            await asyncio.sleep(0.02)
        mark("work", ctx)

    @after(work)
    @step(final=True)
    async def finish(self, ctx: Ctx) -> None:
        """The end."""
        mark("finish", ctx)


TIMER_DELAY = 2.0
"""TimerFlow's timer (seconds)."""


class TimerFlow(Workflow, name="TimerFlow", version="1"):
    """A timer first (due TIMER_DELAY after the worker that takes the new instance enters it), then the end."""

    n: int

    @timer(TIMER_DELAY, initial=True)
    async def due(self, ctx: Ctx) -> None:
        """The timer fired: log it (with the pid of the worker that fired it)."""
        mark("fire", ctx)

    @after(due)
    @step(final=True)
    async def done(self, ctx: Ctx) -> None:
        """The end."""
        mark("done", ctx)


TICK = 0.1
"""TickFlow's timer (seconds)."""


def tick_visits(n: int) -> int:
    """How many times TickFlow ``n`` waits on its timer: 1 to 3."""
    return n % 3 + 1


class TickFlow(Workflow, name="TickFlow", version="1"):
    """A step, then a short timer and a count, looped until the timer was visited ``tick_visits(n)`` times."""

    n: int
    ticks: int = 0

    def again(self) -> bool:
        """Whether the timer is visited once more."""
        return self.ticks < tick_visits(self.n)

    @step(initial=True)
    async def begin(self, ctx: Ctx) -> None:
        """The start."""
        mark("begin", ctx)

    @after(begin)
    @timer(TICK)
    async def tick(self, ctx: Ctx) -> None:
        """The timer fired."""
        mark("tick", ctx)

    @goto(tick, when=again)
    @after(tick)
    @step
    def count(self, ctx: Ctx) -> None:
        """Count the visit; back to the timer until there were enough."""
        self.ticks += 1

    @after(count)
    @step(final=True)
    async def end(self, ctx: Ctx) -> None:
        """The end."""
        mark("end", ctx)


BUSY_CPU = 0.03
"""CPU seconds BusyFlow's step burns."""


class BusyFlow(Workflow, name="BusyFlow", version="1"):
    """One step that keeps the worker's CPU (and so its event loop) busy for BUSY_CPU seconds."""

    n: int

    @step(initial=True, final=True)
    def crunch(self, ctx: Ctx) -> None:
        """Burn CPU in Python (no await: the worker's loop does nothing else meanwhile), then log it."""
        end = time.process_time() + BUSY_CPU
        while time.process_time() < end:
            pass
        mark("crunch", ctx)


HOG_CPU = 0.25
"""CPU seconds HogFlow's step burns: sixteen of them in one claim keep a worker's loop busy four CPU seconds."""


class HogFlow(Workflow, name="HogFlow", version="1"):
    """One step that keeps the worker's CPU (and so its event loop) busy for HOG_CPU seconds."""

    n: int

    @step(initial=True, final=True)
    def hog(self, ctx: Ctx) -> None:
        """Log its start, burn CPU in Python (no await), log its end."""
        mark("hog-begin", ctx)
        end = time.process_time() + HOG_CPU
        while time.process_time() < end:
            pass
        mark("hog", ctx)


class StuckFlow(Workflow, name="StuckFlow", version="1"):
    """A step that blocks the worker's event loop (a hung worker) for *SLOW* seconds or until the gate opens."""

    n: int

    @step(initial=True)
    def stuck(self, ctx: Ctx) -> None:
        """Log its start, block the loop (no await: nothing else runs, not even a timer), log its end."""
        mark("begin", ctx)
        gate = Path(os.environ[EFFECTS_ENV] + ".gate")
        deadline = time.monotonic() + float(os.environ.get(SLOW_ENV, "0"))
        while time.monotonic() < deadline and not _open(gate):
            time.sleep(0.02)
        mark("work", ctx)

    @after(stuck)
    @step(final=True)
    async def finish(self, ctx: Ctx) -> None:
        """The end."""
        mark("finish", ctx)


WORKFLOWS: list[type[Workflow]] = [TaskFlow, SlowFlow, TimerFlow, TickFlow, BusyFlow, HogFlow, StuckFlow]
"""What a fleet worker runs (and what the tests' client engines know)."""


def _open(gate: Path) -> bool:
    """Whether the test opened the gate (one cheap stat)."""
    return gate.exists()


def open_store(backend: str, target: str) -> Store:
    """The store the fleet shares."""
    if backend == "sqlite":
        return SqliteStore(target)
    from statemachine_orch._store_postgres import PostgresStore  # psycopg only when asked

    return PostgresStore(target)


async def serve(backend: str, target: str, lease: float, concurrency: int) -> None:
    """Run a worker until killed."""
    store = open_store(backend, target)
    engine = Engine(store, workflows=WORKFLOWS, concurrency=concurrency, lease=lease, poll=POLL)
    await engine.recover()
    print(f"ready {os.getpid()} {engine.owner}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Entry point."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )
    backend, target, lease, slow = sys.argv[1:5]
    concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    os.environ[SLOW_ENV] = slow
    asyncio.run(serve(backend, target, float(lease), concurrency))


if __name__ == "__main__":
    main()
