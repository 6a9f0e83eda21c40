"""Helpers of the integration tests: opening engines on a file, and reading histories."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from pathlib import Path

from statemachine_orch import Clock, Ctx, Engine, EventKind, HistoryEvent, SqliteStore, Workflow

Entry = tuple[str, str | None, int, str | None]
"""A history entry without its time: ``(kind, step, attempt, detail)``."""


def entries(history: Sequence[HistoryEvent], instance_id: str = "") -> list[Entry]:
    """Every entry as ``(kind, step, attempt, detail)``, the instance id in details written ``ID``."""

    def detail(text: str | None) -> str | None:
        if text is None or not instance_id:
            return text
        return text.replace(instance_id, "ID")

    return [(e.kind.value, e.step, e.attempt, detail(e.detail)) for e in history]


def of_kind(history: Sequence[HistoryEvent], kind: EventKind) -> list[HistoryEvent]:
    """The entries of one kind, in order."""
    return [e for e in history if e.kind is kind]


def completions(history: Sequence[HistoryEvent]) -> dict[str | None, int]:
    """How often each step completed."""
    return dict(Counter(e.step for e in of_kind(history, EventKind.STEP_COMPLETED)))


@contextlib.asynccontextmanager
async def open_engine(
    path: Path,
    clock: Clock,
    *,
    workflows: Iterable[type[Workflow]],
    fault: Callable[[str], None] | None = None,
    before_attempt: Callable[[Ctx], None] | None = None,
    concurrency: int = 64,
) -> AsyncGenerator[Engine]:
    """
    An engine on a SqliteStore at *path*; on exit the engine stops and the file is closed.

    It does not recover: a test that restarts calls ``engine.recover()`` itself.
    *workflows* pins the test's classes: every class registers itself by name and
    version, so a restarted engine would otherwise load stored instances with
    whichever same-named class another test module defined last.
    """
    store = SqliteStore(path, fault=fault)
    try:
        engine = Engine(store, clock=clock, workflows=workflows, before_attempt=before_attempt, concurrency=concurrency)
        try:
            yield engine
        finally:
            await engine.aclose()
    finally:
        store.close()


async def settle() -> None:
    """Let the engine's workers and timer task run for a while (for "nothing happens" checks)."""
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    for _ in range(20):
        await asyncio.sleep(0)


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the engine run until *condition* holds (the scenario's time limit catches a hang)."""
    # The engine offers no event for "parked on a retry's backoff", so poll, yielding each time.
    while not condition():
        await asyncio.sleep(0.001)


def parked(engine: Engine, instance_id: str) -> Callable[[], bool]:
    """A condition: the instance waits for a timer (a retry's backoff included) and no worker holds it."""
    return lambda: engine.info(instance_id).wake_at is not None and engine.statistics().active == 0
