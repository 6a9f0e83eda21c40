"""Test engines on a virtual clock, and capturing what they record."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Mapping
from typing import NamedTuple

from statemachine_orch._clock import VirtualClock
from statemachine_orch._ctx import Ctx
from statemachine_orch._engine import Engine
from statemachine_orch._history import HistoryEvent
from statemachine_orch._services import ServiceRegistry
from statemachine_orch._store import MemoryStore

from ._coverage import current_registry
from ._recorder import Recorder


def virtual_engine(
    services: ServiceRegistry | Mapping[str, object] | None = None,
    *,
    clock: VirtualClock | None = None,
    before_attempt: Callable[[Ctx], None] | None = None,
    concurrency: int = 64,
    record_coverage: bool = True,
) -> Engine:
    """
    An engine for tests: in-memory store, virtual clock that jumps to the next timer.

    A retry's backoff then takes no real time, while ``engine.clock.now()`` still
    shows how long it would have waited. Create it anywhere; it starts its workers
    in the event loop of its first ``start`` (so use one loop per engine, e.g. one
    ``asyncio.run`` per test).

    Args:
        services: The services steps reach with ``ctx.call``.
        clock: The clock (default: a new ``VirtualClock(autojump=True)``).
        before_attempt: Called before every attempt; raise in it to inject a fault.
        concurrency: How many instances run at once.
        record_coverage: Record which edges and guard outcomes its instances
            exercise, for the pytest plugin's ``--orch-coverage`` report.

    Returns:
        The engine.

    .. versionadded:: 0.1.0
    """
    engine = Engine(
        MemoryStore(),
        services=services,
        clock=clock if clock is not None else VirtualClock(autojump=True),
        concurrency=concurrency,
        before_attempt=before_attempt,
    )
    if record_coverage:
        engine.subscribe(Recorder(engine, lambda spec: (current_registry().of(spec),)))
    return engine


class CapturedEvent(NamedTuple):
    """
    One history entry captured by :func:`capture_history`, with its instance.

    .. versionadded:: 0.1.0
    """

    instance_id: str
    event: HistoryEvent

    def __str__(self) -> str:
        """``instance_id: description`` (without the timestamp)."""
        return f"{self.instance_id}: {self.event.describe()}"


@contextlib.contextmanager
def capture_history(engine: Engine) -> Generator[list[CapturedEvent]]:
    """
    Collect every history entry *engine* records inside the ``with`` block.

    Example::

        with capture_history(engine) as events:
            await engine.start(OrderProcess(...))
            await engine.wait_idle()
        assert [e.event.kind for e in events][0] is EventKind.INSTANCE_STARTED

    Args:
        engine: The engine to listen to.

    Yields:
        The list the entries are appended to, in the order they happen.

    .. versionadded:: 0.1.0
    """
    events: list[CapturedEvent] = []

    def collect(instance_id: str, event: HistoryEvent) -> None:
        events.append(CapturedEvent(instance_id, event))

    unsubscribe = engine.subscribe(collect)
    try:
        yield events
    finally:
        unsubscribe()
