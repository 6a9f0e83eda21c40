"""Workflows the observability tests run: retries, a saga that fails, a timer, a step that waits for a gate."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from opentelemetry.trace import TracerProvider

from statemachine_orch import Ctx, Retry, Workflow, after, step, timer

user_log = structlog.get_logger("tests.observe.user")

PROVIDER: list[TracerProvider] = []
"""The tracer provider the user's code in ``ObsTraced`` opens its spans with (set by the test)."""


class ObsFlaky(Workflow):
    """A step that fails twice before it succeeds, then a final step."""

    failures: int = 2

    @step(initial=True, retry=Retry(attempts=5, initial=1))
    def fetch(self, ctx: Ctx) -> None:
        if ctx.attempt <= self.failures:
            msg = f"attempt {ctx.attempt} refused"
            raise ConnectionError(msg)

    @after(fetch)
    @step(final=True)
    def store(self, ctx: Ctx) -> None: ...


class ObsTrip(Workflow):
    """Book a flight (compensable), then a hotel that always fails: the flight is cancelled."""

    @step(initial=True)
    def book_flight(self, ctx: Ctx) -> None:
        user_log.info("booking the flight")

    @book_flight.compensation
    def cancel_flight(self, ctx: Ctx) -> None:
        user_log.info("cancelling the flight")

    @after(book_flight)
    @step(final=True)
    def book_hotel(self, ctx: Ctx) -> None:
        msg = "no room"
        raise RuntimeError(msg)


class ObsStuckRefund(Workflow):
    """Charge (compensable, its refund always fails), then a step that fails: the saga's undo fails."""

    @step(initial=True)
    def charge(self, ctx: Ctx) -> None: ...

    @charge.compensation
    def refund(self, ctx: Ctx) -> None:
        msg = "the bank is closed"
        raise RuntimeError(msg)

    @after(charge)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        msg = "no truck"
        raise RuntimeError(msg)


class ObsNap(Workflow):
    """Wait an hour, then wake up."""

    @timer(timedelta(hours=1), initial=True)
    def sleep(self, ctx: Ctx) -> None: ...

    @after(sleep)
    @step(final=True)
    def wake(self, ctx: Ctx) -> None: ...


class ObsGated(Workflow):
    """One step that waits for the ``gate`` service to let it through."""

    @step(initial=True, final=True)
    async def pass_gate(self, ctx: Ctx) -> None:
        await ctx.call("gate", "wait")


class Gate:
    """A service whose ``wait`` returns once opened (never, for a stuck worker)."""

    def __init__(self, *, opened: bool) -> None:
        self.opened = asyncio.Event()
        if opened:
            self.opened.set()
        self.entered = 0

    async def wait(self) -> None:
        self.entered += 1
        await self.opened.wait()


class ObsTraced(Workflow):
    """A sync step and an async step, each opening a span of its own (the user's code)."""

    @step(initial=True)
    def sync_step(self, ctx: Ctx) -> None:
        with PROVIDER[0].get_tracer("user").start_as_current_span("user sync"):
            user_log.info("inside the sync step")

    @after(sync_step)
    @step(final=True)
    async def async_step(self, ctx: Ctx) -> None:
        with PROVIDER[0].get_tracer("user").start_as_current_span("user async"):
            await asyncio.sleep(0)
            user_log.info("inside the async step")


OBSERVED = (ObsFlaky, ObsTrip, ObsStuckRefund, ObsNap, ObsGated, ObsTraced)
