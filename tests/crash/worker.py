"""
A worker process for the crash tests: ``python -m tests.crash.worker DB MODE [N]``.

MODE ``seed`` starts N CrashFlow instances and exits once they are recorded;
MODE ``run`` recovers whatever the store holds, runs until every instance is
terminal, prints ``ALL DONE`` and exits 0. The crash tests SIGKILL ``run``
workers at random moments and start new ones.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import structlog

from statemachine_orch import Engine, SqliteStore
from tests.crash.crash_flow import CrashFlow


async def seed(db: str, count: int) -> None:
    """Record *count* new instances (each start commits before it returns)."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=[CrashFlow])
    for n in range(count):
        await engine.start(CrashFlow(n=n))
    await engine.aclose()
    store.close()


async def run(db: str) -> None:
    """Recover and run until nothing is left in flight or waiting."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=[CrashFlow], concurrency=32)
    report = await engine.recover()
    print(f"recovered {report.resumed}", flush=True)
    await engine.wait_idle()
    assert all(i.status.is_terminal for i in engine.instances())
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
        asyncio.run(run(db))


if __name__ == "__main__":
    main()
