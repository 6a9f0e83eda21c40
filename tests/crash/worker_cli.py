"""The command line and the last turn shared by the crash tests' worker scripts: ``DB seed N`` or ``DB run``."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog

from statemachine_orch import Engine, SqliteStore, Workflow


async def run_to_the_end(db: str, workflows: Sequence[type[Workflow]], **options: Any) -> None:
    """Recover what *db* holds (print ``recovered N``), run until every instance has ended, print ``ALL DONE``."""
    with SqliteStore(db) as store:
        engine = Engine(store, workflows=list(workflows), **options)
        report = await engine.recover()
        print(f"recovered {report.resumed}", flush=True)
        await engine.wait_idle()
        assert all(i.status.is_terminal for i in engine.instances())
        await engine.aclose()
    print("ALL DONE", flush=True)


def worker_main(
    seed: Callable[[str, int], Coroutine[Any, Any, None]], run: Callable[[str], Coroutine[Any, Any, None]]
) -> None:
    """``python -m <worker> DB seed N`` runs *seed*; ``DB <anything else>`` runs *run* (errors logged only)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    db, mode = sys.argv[1], sys.argv[2]
    if mode == "seed":
        asyncio.run(seed(db, int(sys.argv[3])))
    else:
        asyncio.run(run(db))
