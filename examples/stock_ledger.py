"""
A stock ledger per SKU and day, fed by orders and closed by a nightly schedule.

Issue 10's messages, queries and schedules in one place:

- An ``Order`` reserves each of its lines with ``ctx.signal_with_start``: the
  first order of the day for a SKU starts that day's ``StockLedger`` with its
  reservation; later ones are messages to the running ledger. Each happens once,
  with the commit of the order's step, however often the step runs.
- A caller asks a ledger what is left with a query, ``StockLedger.available``.
- At 22:00 UTC the schedule ``close-ledgers`` starts a ``CloseDay`` for that day,
  whose step tells each of the day's ledgers to close (``ctx.signal``).

Run it with ``python examples/stock_ledger.py`` (on the SQLite file
``ledgers.db``, recreated each run; ``--memory`` for the in-memory store). The
engine runs on a ``VirtualClock`` starting on 5 January 2026 at 08:00 UTC: three
orders come in, the ledgers are queried, then the clock is moved to 22:00 and
the schedule closes the day. ``orch worker examples.stock_ledger`` runs the
schedule (``orch_schedules``) on a real clock.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import attrs
import structlog

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceNotFound,
    MemoryStore,
    Schedule,
    SqliteStore,
    Store,
    VirtualClock,
    Workflow,
    after,
    goto,
    query,
    step,
    wait_for,
)

CATALOGUE = {"LAMP": 10, "DESK": 3}
"""What is on hand at the start of each day, by SKU."""


@attrs.frozen
class Line:
    """One line of an order."""

    sku: str
    quantity: int


@attrs.frozen
class LedgerEntry:
    """A message to a ledger: a reservation, or the end of the day (``close``)."""

    order_id: str
    quantity: int
    close: bool = False


class StockLedger(Workflow, name="StockLedger", version="1"):
    """The reservations of one SKU on one day, until the day is closed."""

    sku: str
    day: str
    on_hand: int
    reservations: list[LedgerEntry] = attrs.field(factory=list[LedgerEntry])
    closed: bool = False

    @step(initial=True)
    def open_ledger(self, ctx: Ctx) -> None:
        """The day's first order started the ledger (with its reservation kept for ``record``)."""

    @after(open_ledger)
    @wait_for(LedgerEntry)
    def record(self, ctx: Ctx, entry: LedgerEntry) -> None:
        """Book a reservation, or close the day."""
        if entry.close:
            self.closed = True
        else:
            self.reservations.append(entry)
            ctx.log.info("reserved", sku=self.sku, order_id=entry.order_id, quantity=entry.quantity)

    @goto(record)
    @after(record, when=lambda wf: not wf.closed)
    @step
    def booked(self, ctx: Ctx) -> None:
        """Back to waiting for the next entry."""

    @after(record)
    @step(final=True)
    def close_ledger(self, ctx: Ctx) -> None:
        """The day is closed."""

    @query
    def available(self) -> int:
        """What is left to reserve."""
        return self.on_hand - sum(r.quantity for r in self.reservations)


def ledger_id(sku: str, day: str) -> str:
    """The id of a SKU's ledger for a day: one instance per pair, whoever starts it."""
    return f"ledger-{sku}-{day}"


class Order(Workflow, name="Order", version="1"):
    """An order: its lines are reserved in the day's ledgers."""

    order_id: str
    day: str
    lines: list[Line]

    @step(initial=True, final=True)
    def reserve(self, ctx: Ctx) -> None:
        """Each line: a reservation in its SKU's ledger of the day, started by the first one."""
        for line in self.lines:
            ctx.signal_with_start(
                StockLedger(sku=line.sku, day=self.day, on_hand=CATALOGUE[line.sku]),
                LedgerEntry(self.order_id, line.quantity),
                instance_id=ledger_id(line.sku, self.day),
            )


class CloseDay(Workflow, name="CloseDay", version="1"):
    """Closes the ledgers of one day (started by the schedule ``close-ledgers``)."""

    day: str
    closed: list[str] = attrs.field(factory=list[str])

    @step(initial=True, final=True)
    def close_ledgers(self, ctx: Ctx) -> None:
        """Tell each ledger of the day to close."""
        for sku in CATALOGUE:
            try:
                ctx.signal(ledger_id(sku, self.day), LedgerEntry("", 0, close=True))
            except InstanceNotFound:
                continue  # no order for it that day
            self.closed.append(sku)


CLOSE_LEDGERS = Schedule("close-ledgers", lambda due: CloseDay(day=due.date().isoformat()), cron="0 22 * * *")
"""Every day at 22:00 UTC."""


def orch_schedules() -> list[Schedule[CloseDay]]:
    """What ``orch worker examples.stock_ledger`` runs."""
    return [CLOSE_LEDGERS]


async def main(db: str | None = None) -> int:
    """Three orders, the ledgers' queries, then the day closed by the schedule."""
    morning = datetime(2026, 1, 5, 8, tzinfo=UTC)
    day = morning.date().isoformat()
    clock = VirtualClock(morning.timestamp(), autojump=False)
    store: Store = MemoryStore() if db is None else SqliteStore(db)
    try:
        async with Engine(store, clock=clock, schedules=[CLOSE_LEDGERS]) as engine:
            for order_id, lines in (
                ("O-1", [Line("LAMP", 2)]),
                ("O-2", [Line("LAMP", 3), Line("DESK", 1)]),
                ("O-3", [Line("DESK", 2)]),
            ):
                handle = await engine.start(Order(order_id=order_id, day=day, lines=lines), instance_id=order_id)
                await handle.result()
            await engine.wait_idle()
            for sku in CATALOGUE:
                left = engine.query(ledger_id(sku, day), StockLedger.available)
                print(f"{ledger_id(sku, day)}: {left} left, {engine.info(ledger_id(sku, day)).status.value}")
            clock.advance(14 * 3600)  # 22:00: the schedule's due time
            await engine.wait_idle()
            [closing] = engine.instances(workflow=CloseDay)
            print(f"{closing.id}: closed {', '.join(engine.workflow(closing.id).closed)}")
            for event in engine.history(closing.id):
                print(f"  {event.describe()}")
            for sku in CATALOGUE:
                ledger: StockLedger = await engine.handle(ledger_id(sku, day)).result()
                orders = ", ".join(f"{r.order_id}: {r.quantity}" for r in ledger.reservations)
                print(f"{ledger_id(sku, day)}: completed, {ledger.available()} left ({orders})")
            [info] = engine.schedules()
            print(f"close-ledgers: next due {datetime.fromtimestamp(info.next_due, UTC):%Y-%m-%d %H:%M} UTC")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", action="store_true", help="use the in-memory store instead of ledgers.db")
    args = parser.parse_args()
    path = Path("ledgers.db")
    if not args.memory:
        for leftover in (path, Path("ledgers.db-wal"), Path("ledgers.db-shm")):
            leftover.unlink(missing_ok=True)
    sys.exit(asyncio.run(main(None if args.memory else str(path))))
