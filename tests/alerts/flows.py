"""
Workflows of the alert tests (issue 12), and the services they call.

Each shape raises one kind of alert when things go wrong: ``AlertHang`` runs a
step that waits on a :class:`Gate` (stuck while it is shut), ``AlertDesk`` opens a
task due in an hour that nothing escalates and ``AlertHotline`` one that is
escalated after two, ``AlertRefund`` fails a step whose compensation calls a
:class:`Bank` that may be down (``compensation_failed``), ``AlertNap`` waits ten
minutes on a timer and ``AlertCrate`` counts, then waits a minute (its stored
variable can be damaged by hand: quarantined).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from statemachine_orch import Ctx, Retry, Workflow, after, human_task, step, timer

START = 1_767_225_600.0
"""Where the tests' virtual clocks start."""
HOUR = 3600.0


class Gate:
    """A service whose ``wait`` returns only once the gate is opened."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def wait(self) -> None:
        """Wait until :meth:`open`."""
        self.entered.set()
        await self.opened.wait()

    def open(self) -> None:
        """Let every waiter through."""
        self.opened.set()


class Bank:
    """A service whose refunds fail while it is down."""

    def __init__(self) -> None:
        self.down = True

    def refund(self) -> None:
        """Refund, or fail while down."""
        if self.down:
            msg = "the bank is down"
            raise ConnectionError(msg)


class AlertHang(Workflow, name="AlertHang", version="1"):
    """Prepare, then wait on the gate."""

    @step(initial=True)
    def prepare(self, ctx: Ctx) -> None: ...

    @after(prepare)
    @step(final=True)
    async def hang(self, ctx: Ctx) -> None:
        await ctx.call("gate", "wait")


class AlertDesk(Workflow, name="AlertDesk", version="1"):
    """A review due in an hour, which nothing escalates."""

    @step(initial=True)
    def take(self, ctx: Ctx) -> None: ...

    @after(take)
    @human_task(assignee="bob", due=timedelta(hours=1))
    def review(self, ctx: Ctx) -> None: ...

    @after(review)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


class AlertHotline(Workflow, name="AlertHotline", version="1"):
    """An answer due in an hour, escalated after two."""

    @step(initial=True)
    def ring(self, ctx: Ctx) -> None: ...

    @after(ring)
    @human_task(assignee="bob", due=timedelta(hours=1))
    def answer(self, ctx: Ctx) -> None: ...

    @after(answer)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...

    @after(answer, timeout=timedelta(hours=2))
    @step(final=True)
    def escalate(self, ctx: Ctx) -> None: ...


class AlertRefund(Workflow, name="AlertRefund", version="1"):
    """Pay, then ship, which always fails: the payment is refunded through the bank."""

    @step(initial=True)
    def pay(self, ctx: Ctx) -> None: ...

    @pay.compensation(retry=Retry(attempts=2, initial=1.0))
    async def refund(self, ctx: Ctx) -> None:
        await ctx.call("bank", "refund")

    @after(pay)
    @step(final=True, retry=Retry(attempts=1))
    def ship(self, ctx: Ctx) -> None:
        msg = "no truck"
        raise RuntimeError(msg)


class AlertNap(Workflow, name="AlertNap", version="1"):
    """Wait ten minutes, then wake up."""

    @timer(timedelta(minutes=10), initial=True)
    def sleep(self, ctx: Ctx) -> None: ...

    @after(sleep)
    @step(final=True)
    def wake(self, ctx: Ctx) -> None: ...


class AlertCrate(Workflow, name="AlertCrate", version="1"):
    """Count, wait a minute, ship."""

    count: int = 0

    @step(initial=True)
    def count_items(self, ctx: Ctx) -> None:
        self.count = 3

    @after(count_items)
    @timer(60)
    def settle(self, ctx: Ctx) -> None: ...

    @after(settle)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


PINNED: list[type[Workflow]] = [AlertHang, AlertDesk, AlertHotline, AlertRefund, AlertNap, AlertCrate]
"""These tests' workflows, pinned in every engine: other modules define classes too."""
