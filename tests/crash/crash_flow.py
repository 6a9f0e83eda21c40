"""
The workflow the crash tests kill: every kind of durable moment in one flow.

reserve (retried, compensable) → cool_down (@timer) → charge (retried; fails for
good when n % 5 == 0) → ship (final). Each step body appends an effect line
``<kind> <idempotency key>`` to the effects log *before* the engine commits, so a
SIGKILL between the effect and the commit shows up as a repeated key: allowed
(bodies are at-least-once), while the store's history must still show each step
completed once.
"""

from __future__ import annotations

import asyncio
import os

from statemachine_orch import Ctx, NonRetryableError, Retry, Workflow, after, step, timer

EFFECTS_ENV = "ORCH_CRASH_EFFECTS"


def effect(kind: str, ctx: Ctx) -> None:
    """Append one effect line atomically (O_APPEND, one write)."""
    path = os.environ[EFFECTS_ENV]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {ctx.idempotency_key} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)


class CrashFlow(Workflow, name="CrashFlow", version="1"):
    """A reservation that is paid for and shipped, or released when payment fails."""

    n: int
    reserved: bool = False
    charged: bool = False

    @step(initial=True, retry=Retry(attempts=4, initial=0.01, backoff=2.0))
    async def reserve(self, ctx: Ctx) -> None:
        """Fail the first attempt of every third instance, then succeed."""
        await asyncio.sleep(0.002)
        if self.n % 3 == 0 and ctx.attempt == 1:
            msg = "inventory busy"
            raise RuntimeError(msg)
        effect("reserve", ctx)
        self.reserved = True

    @reserve.compensation(retry=Retry(attempts=3, initial=0.01))
    async def release(self, ctx: Ctx) -> None:
        """Give the reservation back."""
        await asyncio.sleep(0.002)
        effect("release", ctx)
        self.reserved = False

    @after(reserve)
    @timer(0.03)
    def cool_down(self, ctx: Ctx) -> None:
        """A durable pause."""

    @after(cool_down)
    @step(retry=Retry(attempts=3, initial=0.01))
    async def charge(self, ctx: Ctx) -> None:
        """Charge; every fifth instance's card is declined for good."""
        await asyncio.sleep(0.002)
        if self.n % 5 == 0:
            msg = "card declined"
            raise NonRetryableError(msg)
        effect("charge", ctx)
        self.charged = True

    @after(charge)
    @step(final=True)
    async def ship(self, ctx: Ctx) -> None:
        """Ship it."""
        await asyncio.sleep(0.001)
        effect("ship", ctx)
