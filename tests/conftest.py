"""
Shared fixtures of the test suite.

Tests are plain synchronous functions: a test builds its scenario as a coroutine
and hands it to ``run``, which runs it with ``asyncio.run`` under a time limit (no
pytest-asyncio). Engines come from ``new_engine``: an in-memory store and a
``VirtualClock(autojump=True)``, so a retry's backoff takes no real time while the
clock still records how long it would have waited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

import pytest

from statemachine_orch import Ctx, Engine, MemoryStore, VirtualClock

pytest_plugins = ["tests.pg"]  # PostgreSQL databases for the tests: pg_dsn, pg_store_dsn (issue 9)

T = TypeVar("T")

SCENARIO_TIMEOUT = 20.0
"""Real seconds a scenario may take before it counts as hung (well below pytest-timeout)."""


class Runner(Protocol):
    """Runs one scenario coroutine to its end and returns its result."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


class EngineFactory(Protocol):
    """Makes an in-memory engine on the test's virtual clock."""

    def __call__(
        self,
        *,
        services: Mapping[str, object] | None = None,
        before_attempt: Callable[[Ctx], None] | None = None,
    ) -> Engine: ...


def run_scenario(coro: Coroutine[Any, Any, T], /) -> T:
    """Run *coro* in a fresh event loop; a hang fails fast with TimeoutError."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, SCENARIO_TIMEOUT)

    return asyncio.run(bounded())


@pytest.fixture(scope="session")
def run() -> Runner:
    """``run(coro)``: run a scenario coroutine with ``asyncio.run``."""
    return run_scenario


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock that jumps to the next timer whenever the engine is idle."""
    return VirtualClock(autojump=True)


@pytest.fixture
def new_engine(clock: VirtualClock) -> EngineFactory:
    """``new_engine(services=..., before_attempt=...)``: an in-memory engine on ``clock``."""

    def make(
        *,
        services: Mapping[str, object] | None = None,
        before_attempt: Callable[[Ctx], None] | None = None,
    ) -> Engine:
        return Engine(MemoryStore(), services=services, clock=clock, before_attempt=before_attempt)

    return make
