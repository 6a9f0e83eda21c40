"""
An order with several parcels, a shipment child workflow per parcel (issue 10: Temporal's order management).

reserve the stock (undo: release it) → charge the customer (undo: refund) → ship:
a ``Shipment`` child per parcel, at most two on the road at once → confirm.

A ``Shipment`` books a courier for its parcel (undo: call the parcel back) and
waits until the courier reports it delivered. The script plays the courier: it
reports each parcel on the road delivered, one at a time.

Run it with ``python examples/order_fulfilment.py`` (on the SQLite file
``fulfilment.db``; ``--memory`` for the in-memory store). Order O-1's four
parcels are delivered, two at a time, and the order completes with their
tracking codes in parcel order. Order O-2 has a parcel no courier takes: the
shipment still on the road is called back, the delivered one too (newest first),
the payment is refunded, the stock released, and the order ends ``failed``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import attrs
import structlog

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceStatus,
    MemoryStore,
    NonRetryableError,
    Retry,
    SqliteStore,
    Store,
    Workflow,
    after,
    fan_out,
    step,
    wait_for,
)


@attrs.frozen
class Parcel:
    """One parcel of an order."""

    sku: str
    weight_kg: float
    hazardous: bool = False


@attrs.frozen
class Delivered:
    """The courier's report: the parcel reached the customer."""

    signed_by: str


class Shipment(Workflow, version="1"):
    """One parcel on its way: book a courier, wait until it is delivered."""

    order_id: str
    parcel: Parcel
    tracking: str = ""
    signed_by: str = ""

    @step(initial=True, retry=Retry(attempts=3, initial=0.01))
    async def book_courier(self, ctx: Ctx) -> None:
        """Book a courier for the parcel; the tracking code comes back."""
        self.tracking = await ctx.call("courier", "book", order_id=self.order_id, parcel=self.parcel)

    @book_courier.compensation
    async def call_back(self, ctx: Ctx) -> None:
        """Call the parcel back (cancel the booking, or return it to the warehouse)."""
        await ctx.call("courier", "call_back", tracking=self.tracking)

    @after(book_courier)
    @wait_for(Delivered)
    def delivered(self, ctx: Ctx, report: Delivered) -> None:
        """The courier delivered it."""
        self.signed_by = report.signed_by
        ctx.log.info("parcel_delivered", tracking=self.tracking, signed_by=report.signed_by)

    @after(delivered)
    @step(final=True)
    def close(self, ctx: Ctx) -> None:
        """Done: the parcel is with the customer."""


class Order(Workflow, version="1"):
    """Reserve, charge, ship every parcel (two at a time), confirm; release and refund on failure."""

    order_id: str
    customer: str
    parcels: list[Parcel] = attrs.field(factory=list[Parcel])
    payment: str = ""
    tracking: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    async def reserve_stock(self, ctx: Ctx) -> None:
        """Hold the parcels' stock."""
        await ctx.call("inventory", "reserve", order_id=self.order_id, skus=[p.sku for p in self.parcels])

    @reserve_stock.compensation
    async def release_stock(self, ctx: Ctx) -> None:
        """Give the stock back."""
        await ctx.call("inventory", "release", order_id=self.order_id)

    @after(reserve_stock)
    @step
    async def charge(self, ctx: Ctx) -> None:
        """Charge the customer."""
        self.payment = await ctx.call("payments", "charge", customer=self.customer, order_id=self.order_id)

    @charge.compensation
    async def refund(self, ctx: Ctx) -> None:
        """Give the money back."""
        await ctx.call("payments", "refund", payment=self.payment)

    @after(charge)
    @fan_out(Shipment, limit=2)
    def ship(self, ctx: Ctx) -> list[Shipment]:
        """A shipment per parcel, in parcel order."""
        ctx.log.info("shipping", parcels=len(self.parcels))
        return [Shipment(order_id=self.order_id, parcel=p) for p in self.parcels]

    @ship.on_result
    def shipped(self, ctx: Ctx, shipments: Sequence[Shipment]) -> None:
        """Keep the tracking codes, in parcel order."""
        self.tracking = [s.tracking for s in shipments]
        ctx.log.info("shipped", tracking=self.tracking)

    @after(ship)
    @step(final=True)
    def confirm(self, ctx: Ctx) -> None:
        """Tell the customer everything arrived."""


@attrs.define
class Inventory:
    """Holds stock per order."""

    held: dict[str, list[str]] = attrs.field(factory=dict[str, list[str]])
    released: list[str] = attrs.field(factory=list[str])

    def reserve(self, order_id: str, skus: list[str]) -> None:
        """Hold the stock of *skus* for the order."""
        self.held[order_id] = skus

    def release(self, order_id: str) -> None:
        """Give the order's stock back."""
        self.held.pop(order_id, None)
        self.released.append(order_id)


@attrs.define
class Payments:
    """Charges and refunds, one charge per idempotency key."""

    charges: dict[str, str] = attrs.field(factory=dict[str, str])
    refunds: list[str] = attrs.field(factory=list[str])

    def charge(self, customer: str, order_id: str, idempotency_key: str) -> str:
        """Charge once per key (a re-run after a crash returns the first charge)."""
        return self.charges.setdefault(idempotency_key, f"pay-{order_id}-{customer}")

    def refund(self, payment: str) -> None:
        """Refund a charge."""
        self.refunds.append(payment)


@attrs.define
class Couriers:
    """Book couriers (none takes hazardous parcels) and call parcels back."""

    booked: dict[str, str] = attrs.field(factory=dict[str, str])
    called_back: list[str] = attrs.field(factory=list[str])

    def book(self, order_id: str, parcel: Parcel, idempotency_key: str) -> str:
        """Book a courier once per key; return the tracking code."""
        if parcel.hazardous:
            msg = f"no courier takes {parcel.sku}: hazardous"
            raise NonRetryableError(msg)
        return self.booked.setdefault(idempotency_key, f"TRK-{order_id}-{parcel.sku}")

    def call_back(self, tracking: str) -> None:
        """Call a parcel back."""
        self.called_back.append(tracking)


def make_engine(store: Store | None = None) -> tuple[Engine, Inventory, Payments, Couriers]:
    """An engine on *store* (default: in memory) with the three services."""
    inventory, payments, couriers = Inventory(), Payments(), Couriers()
    services = {"inventory": inventory, "payments": payments, "courier": couriers}
    engine = Engine(store if store is not None else MemoryStore(), services=services)
    return engine, inventory, payments, couriers


async def deliver_all(engine: Engine, order_id: str) -> None:
    """Play the courier: report each parcel on the road delivered, one at a time, until the order ends."""
    while True:
        await engine.wait_idle()
        if engine.info(order_id).status.is_terminal:
            return
        on_the_road = [c.id for c in engine.children(order_id) if engine.info(c.id).status is InstanceStatus.WAITING]
        for shipment in on_the_road[:1]:
            await engine.signal(shipment, Delivered(signed_by="front desk"))


def print_history(engine: Engine, instance_id: str, title: str) -> None:
    """Print an instance's history, one readable line per entry, and its children."""
    print(f"\n== {title}  [{instance_id}]")
    for event in engine.history(instance_id):
        print(f"  {event.describe()}")
    print(engine.tree(instance_id))


async def main(db: str | None = None) -> int:
    """
    Run the two orders; return a process exit code (0 when both ended as expected).

    Args:
        db: A SQLite file to run on (the embedded default store); ``None`` runs in memory.
    """
    store = SqliteStore(db) if db is not None else None
    engine, inventory, payments, couriers = make_engine(store)
    try:
        async with engine:
            parcels = [Parcel("BOOK", 0.4), Parcel("LAMP", 2.0), Parcel("DESK", 31.0), Parcel("RUG", 5.5)]
            o1 = await engine.start(Order(order_id="O-1", customer="C-7", parcels=parcels), instance_id="O-1")
            await deliver_all(engine, o1.instance_id)
            print_history(engine, o1.instance_id, "O-1: four parcels, two on the road at a time")
            print(f"  tracking: {engine.workflow(o1.instance_id).tracking}")

            risky = [Parcel("BOOK", 0.4), Parcel("LAMP", 2.0), Parcel("SOLVENT", 1.0, hazardous=True)]
            o2 = await engine.start(Order(order_id="O-2", customer="C-8", parcels=risky), instance_id="O-2")
            await deliver_all(engine, o2.instance_id)
            print_history(engine, o2.instance_id, "O-2: no courier takes the solvent")
            print(f"  reason: {engine.info(o2.instance_id).error}")
            print(
                f"  called back: {couriers.called_back}; refunded: {payments.refunds}; released: {inventory.released}"
            )
            statuses = [engine.info(h.instance_id).status for h in (o1, o2)]
    finally:
        if store is not None:
            store.close()
    return 0 if statuses == [InstanceStatus.COMPLETED, InstanceStatus.FAILED] else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", default="fulfilment.db", help="SQLite file to run on (default: %(default)s)")
    parser.add_argument("--memory", action="store_true", help="run on the in-memory store instead")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sys.exit(asyncio.run(main(None if args.memory else args.db)))
