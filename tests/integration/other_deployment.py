"""
Another deployment's code, run only in a subprocess: ``python -m tests.integration.other_deployment DB``.

It defines ``Order`` version 9, which the test process never defines, starts two
instances on the SQLite file *DB* — one parks on a human task, one is killed in
the middle of its first step — prints their ids and dies without closing
anything, like a process killed with SIGKILL. The test process then opens the
file knowing only versions 1 and 2 (issue 3: such instances are reported, not
crashed on).
"""

from __future__ import annotations

import asyncio
import os
import sys

import attrs

from statemachine_orch import Ctx, Engine, SqliteStore, Workflow, after, human_task, step


@attrs.frozen
class Clearance:
    """A form only version 9 knows."""

    level: int


class OrderV9(Workflow, name="Order", version="9"):
    """Receive (hangs when *stall*), then a manager's clearance."""

    stall: bool = False

    @step(initial=True)
    async def receive(self, ctx: Ctx) -> None:
        if self.stall:
            await asyncio.Event().wait()

    @after(receive)
    @human_task(assignee="manager", form=Clearance, final=True)
    def clear(self, ctx: Ctx, form: Clearance) -> None: ...


async def main(db: str) -> None:
    """Leave one instance waiting and one in flight, then die."""
    engine = Engine(SqliteStore(db))
    waiting = await engine.start(OrderV9())
    await waiting.wait_idle()
    running = await engine.start(OrderV9(stall=True))
    for _ in range(10):
        await asyncio.sleep(0)
    print(waiting.instance_id, running.instance_id, flush=True)
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
