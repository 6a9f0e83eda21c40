"""
A worker process for the crash tests: ``python -m tests.crash.worker DB MODE [N]``.

MODE ``seed`` starts N CrashFlow instances and exits once they are recorded;
MODE ``run`` recovers whatever the store holds, runs until every instance is
terminal, prints ``ALL DONE`` and exits 0. The crash tests SIGKILL ``run``
workers at random moments and start new ones.
"""

from __future__ import annotations

from statemachine_orch import Engine, SqliteStore
from tests.crash.crash_flow import CrashFlow
from tests.crash.worker_cli import run_to_the_end, worker_main


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
    await run_to_the_end(db, [CrashFlow], concurrency=32)


def main() -> None:
    """Entry point."""
    worker_main(seed, run)


if __name__ == "__main__":
    main()
