"""
A trip booked in parallel: flight, hotel and car at once, then payment and confirmation.

plan trip ─┬─ book flight (undo: cancel flight) ─┬─ take payment (undo: refund) → confirm trip
           ├─ book hotel  (undo: cancel hotel)  ─┤
           └─ book car    (undo: cancel car)    ─┘

``plan_trip`` is a fork: its three edges start three branches that run
concurrently, each an async step calling an in-process service (which sleeps to
simulate the partner's latency). ``take_payment`` is the join: it runs once all
three bookings are done.

As in the AWS Step Functions travel saga, a reservation is cancelled when its
booking *failed* too, not only when it completed: a partner reserves as soon as
the request arrives, so a request cut short (or one whose answer was lost) may
still hold a room. Each booking's undo is ``attempted=True`` and cancels by trip
id whatever the partner holds for the trip (nothing, when the request failed
before it reserved).

Run it with ``python examples/trip_booking.py`` (on the SQLite file ``trips.db``,
recreated each run; ``--memory`` for the in-memory store). Three trips go through:

- TRIP-001 to Lisbon: every booking succeeds, the traveller pays, the trip is confirmed.
- TRIP-002 to Reykjavik: the car rental has no car there and fails for good at
  ~60 ms; by then the flight (~20 ms) is booked, the hotel (~300 ms) is still in
  flight. The hotel step is cancelled (it sees ``asyncio.CancelledError``), the
  flight is cancelled by its compensation, and so is the hotel room the
  partner reserved for the request that was cut short; the car rental, which
  reserved nothing, has nothing to cancel. The trip ends ``failed``.
- TRIP-003 to Oslo: all three bookings succeed but the card is declined at
  payment, so the three bookings are undone, newest first, and the trip ends ``failed``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import timedelta
from pathlib import Path

import attrs
import structlog

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceStatus,
    MemoryStore,
    Retry,
    SqliteStore,
    Store,
    Workflow,
    WorkflowFailed,
    after,
    mermaid,
    step,
)


class SoldOutError(Exception):
    """A partner has nothing left at the destination (permanent: not retried)."""


class CardDeclinedError(Exception):
    """The payment provider refused the card (permanent: not retried)."""


BOOKING_RETRY = Retry(attempts=3, initial=0.01, non_retryable=(SoldOutError,))
"""Transient partner errors are retried; a sold-out destination is not."""


class TripBookingSaga(Workflow, version="1"):
    """Book flight, hotel and car in parallel; pay once all three are booked; confirm."""

    trip_id: str
    traveller: str
    destination: str
    nights: int
    card: str
    flight_ref: str | None = None
    hotel_ref: str | None = None
    car_ref: str | None = None
    payment_id: str | None = None
    confirmed: bool = False

    @step(initial=True, fork=True)
    def plan_trip(self, ctx: Ctx) -> None:
        """The fork: its three edges below start three branches at once."""
        ctx.log.info("trip_planned", destination=self.destination, nights=self.nights)

    @after(plan_trip)
    @step(retry=BOOKING_RETRY, timeout=timedelta(seconds=5))
    async def book_flight(self, ctx: Ctx) -> None:
        """Reserve a seat."""
        self.flight_ref = await ctx.call("airline", "book", trip_id=self.trip_id, destination=self.destination)

    @book_flight.compensation(attempted=True)
    async def cancel_flight(self, ctx: Ctx) -> None:
        """Give back the seat held for the trip, if any (also when the booking failed or was cut short)."""
        await ctx.call("airline", "cancel", trip_id=self.trip_id)

    @after(plan_trip)
    @step(retry=BOOKING_RETRY, timeout=timedelta(seconds=5))
    async def book_hotel(self, ctx: Ctx) -> None:
        """Reserve a room for the nights of the trip."""
        try:
            self.hotel_ref = await ctx.call(
                "hotels", "book", trip_id=self.trip_id, destination=self.destination, nights=self.nights
            )
        except asyncio.CancelledError:
            # A sibling branch failed: the engine cancels this step while the request is in flight.
            ctx.log.info("hotel_booking_cancelled", trip_id=self.trip_id)
            raise

    @book_hotel.compensation(attempted=True)
    async def cancel_hotel(self, ctx: Ctx) -> None:
        """Release the room held for the trip, if any (also when the booking failed or was cut short)."""
        await ctx.call("hotels", "cancel", trip_id=self.trip_id)

    @after(plan_trip)
    @step(retry=BOOKING_RETRY, timeout=timedelta(seconds=5))
    async def book_car(self, ctx: Ctx) -> None:
        """Rent a car at the destination."""
        self.car_ref = await ctx.call("car-rental", "book", trip_id=self.trip_id, destination=self.destination)

    @book_car.compensation(attempted=True)
    async def cancel_car(self, ctx: Ctx) -> None:
        """Return the rental held for the trip, if any (also when the booking failed or was cut short)."""
        await ctx.call("car-rental", "cancel", trip_id=self.trip_id)

    @after(book_flight, book_hotel, book_car)
    @step(retry=Retry(attempts=3, initial=0.01, non_retryable=(CardDeclinedError,)))
    async def take_payment(self, ctx: Ctx) -> None:
        """The join: charge the traveller once the three bookings are held."""
        self.payment_id = await ctx.call(
            "payments", "charge", trip_id=self.trip_id, card=self.card, bookings=self.bookings()
        )

    @take_payment.compensation
    async def refund_payment(self, ctx: Ctx) -> None:
        """Give the money back."""
        await ctx.call("payments", "refund", payment_id=self.payment_id)

    @after(take_payment)
    @step(final=True)
    def confirm_trip(self, ctx: Ctx) -> None:
        """Send the itinerary."""
        self.confirmed = True
        ctx.log.info("trip_confirmed", trip_id=self.trip_id, bookings=self.bookings())

    def bookings(self) -> list[str]:
        """The references held so far."""
        return [ref for ref in (self.flight_ref, self.hotel_ref, self.car_ref) if ref is not None]


@attrs.define
class Partner:
    """
    An in-process booking partner (airline, hotel chain, car rental) with a fixed latency.

    A booking reserves as soon as the request arrives and answers after the
    latency: a request cut short by a cancellation (recorded in ``abandoned``)
    still holds its reservation, which only a cancel by trip id releases.
    Bookings are deduplicated by idempotency key, so a re-run of a step (after a
    crash) gets the reservation it already made. ``unavailable`` lists the
    destinations where the partner has nothing to offer: booking there reserves
    nothing and fails for good, after the latency.
    """

    name: str
    prefix: str
    latency: float
    unavailable: set[str] = attrs.field(factory=set[str])
    booked: dict[str, str] = attrs.field(factory=dict[str, str])  # reference -> trip id
    by_key: dict[str, str] = attrs.field(factory=dict[str, str])  # idempotency key -> reference
    cancelled: list[str] = attrs.field(factory=list[str])
    abandoned: list[str] = attrs.field(factory=list[str])

    async def book(self, trip_id: str, destination: str, idempotency_key: str, nights: int = 0) -> str:
        """Reserve at once, answer after the partner's latency; return the reference."""
        reference = self.by_key.get(idempotency_key)
        if reference is None and destination not in self.unavailable:
            reference = f"{self.prefix}-{len(self.by_key) + 1:03d}" + (f"x{nights}" if nights else "")
            self.by_key[idempotency_key] = reference
            self.booked[reference] = trip_id
        try:
            await asyncio.sleep(self.latency)
        except asyncio.CancelledError:
            self.abandoned.append(trip_id)  # the caller stopped listening: the reservation stays
            raise
        if reference is None:
            msg = f"{self.name}: nothing available in {destination}"
            raise SoldOutError(msg)
        return reference

    async def cancel(self, trip_id: str) -> None:
        """Cancel every reservation held for *trip_id*; none held (the booking failed early) is fine."""
        await asyncio.sleep(self.latency / 4)
        for reference in [ref for ref, trip in self.booked.items() if trip == trip_id]:
            self.cancelled.append(reference)
            del self.booked[reference]


@attrs.define
class PaymentService:
    """Charges and refunds, deduplicated by idempotency key."""

    declined_cards: set[str] = attrs.field(factory=set[str])
    charges: dict[str, str] = attrs.field(factory=dict[str, str])  # payment id -> trip id
    by_key: dict[str, str] = attrs.field(factory=dict[str, str])
    refunds: list[str] = attrs.field(factory=list[str])

    async def charge(self, trip_id: str, card: str, bookings: list[str], idempotency_key: str) -> str:
        """Charge once per idempotency key; return the payment id."""
        await asyncio.sleep(0.005)
        if card in self.declined_cards:
            msg = f"card {card} declined for {trip_id} ({len(bookings)} bookings)"
            raise CardDeclinedError(msg)
        if idempotency_key not in self.by_key:
            payment_id = f"PAY-{len(self.by_key) + 1:03d}"
            self.by_key[idempotency_key] = payment_id
            self.charges[payment_id] = trip_id
        return self.by_key[idempotency_key]

    async def refund(self, payment_id: str) -> None:
        """Refund a payment."""
        self.refunds.append(payment_id)
        self.charges.pop(payment_id, None)


@attrs.define
class Services:
    """The four in-process services of the example."""

    airline: Partner
    hotels: Partner
    cars: Partner
    payments: PaymentService

    def registry(self) -> dict[str, object]:
        """The services by the names the workflow calls them."""
        return {"airline": self.airline, "hotels": self.hotels, "car-rental": self.cars, "payments": self.payments}


GOOD_CARD = "4242-4242-4242-4242"
DECLINED_CARD = "4000-0000-0000-0002"


FLIGHT_LATENCY = 0.02
CAR_LATENCY = 0.06
HOTEL_LATENCY = 0.3
"""The flight is booked before the car rental answers, the hotel long after: the order of TRIP-002."""


def make_services() -> Services:
    """The partners and the payment service: no car in Reykjavik, one card declined."""
    return Services(
        airline=Partner("airline", "FL", FLIGHT_LATENCY),
        hotels=Partner("hotels", "HT", HOTEL_LATENCY),
        cars=Partner("car-rental", "CAR", CAR_LATENCY, unavailable={"Reykjavik"}),
        payments=PaymentService(declined_cards={DECLINED_CARD}),
    )


def make_engine(store: Store | None = None) -> tuple[Engine, Services]:
    """An engine on *store* (default: in memory) with the booking partners and payments registered."""
    services = make_services()
    engine = Engine(store if store is not None else MemoryStore(), services=services.registry())
    return engine, services


def trips() -> list[TripBookingSaga]:
    """The three trips of the example, new objects each call (a workflow object can be started once)."""
    return [
        TripBookingSaga(trip_id="TRIP-001", traveller="Ada", destination="Lisbon", nights=3, card=GOOD_CARD),
        TripBookingSaga(trip_id="TRIP-002", traveller="Grace", destination="Reykjavik", nights=2, card=GOOD_CARD),
        TripBookingSaga(trip_id="TRIP-003", traveller="Alan", destination="Oslo", nights=4, card=DECLINED_CARD),
    ]


def print_history(engine: Engine, instance_id: str, title: str) -> None:
    """Print an instance's history, one readable line per entry."""
    history = engine.history(instance_id)
    start = history[0].at
    print(f"\n== {title}  [{instance_id}]")
    for event in history:
        print(f"  +{(event.at - start) * 1000:7.1f} ms  {event.describe()}")


async def main(db: str | None = None) -> int:
    """
    Run the three trips; return a process exit code (0 when all went as expected).

    Args:
        db: A SQLite file to run on, recreated first; ``None`` runs in memory.
    """
    if db is not None:
        for path in (Path(db), Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)
    store = SqliteStore(db) if db is not None else None
    engine, services = make_engine(store)
    try:
        return await _run(engine, services)
    finally:
        if store is not None:
            store.close()


async def _run(engine: Engine, services: Services) -> int:
    async with engine:
        handles = [await engine.start(trip) for trip in trips()]
        titles = (
            "TRIP-001 to Lisbon: three bookings in parallel, paid, confirmed",
            "TRIP-002 to Reykjavik: no car; the hotel request is cut short, the room and the flight undone",
            "TRIP-003 to Oslo: card declined after the join; every booking undone",
        )
        for handle, title in zip(handles, titles, strict=True):
            try:
                trip = await handle.result()
                print_history(engine, handle.instance_id, title)
                print(f"  booked: {', '.join(trip.bookings())}; paid: {trip.payment_id}")
            except WorkflowFailed as failed:
                print_history(engine, handle.instance_id, f"{title} -> {failed.status.value}")
                print(f"  reason: {failed.reason}")

        print("\nDiagram (Mermaid):\n" + mermaid(TripBookingSaga))
        print("This run's instances:")
        for handle in handles:
            info = engine.info(handle.instance_id)
            print(f"  {info.id}  {info.workflow} v{info.version}  {info.status.value}")
        print(
            f"Still booked: flights {sorted(services.airline.booked)}, hotels {sorted(services.hotels.booked)}, "
            f"cars {sorted(services.cars.booked)}"
        )
        print(
            f"Cancelled: flights {services.airline.cancelled}, hotels {services.hotels.cancelled}, "
            f"cars {services.cars.cancelled}; hotel requests abandoned: {services.hotels.abandoned}; "
            f"refunds: {services.payments.refunds}"
        )
    expected = [InstanceStatus.COMPLETED, InstanceStatus.FAILED, InstanceStatus.FAILED]
    return 0 if [engine.handle(h.instance_id).status for h in handles] == expected else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", default="trips.db", help="SQLite file to run on, recreated (default: %(default)s)")
    parser.add_argument("--memory", action="store_true", help="run on the in-memory store instead")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    sys.exit(asyncio.run(main(None if args.memory else args.db)))
