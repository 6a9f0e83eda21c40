"""
Parallel branches: the trip-booking example, end to end, on each store.

``examples/trip_booking.py`` books flight, hotel and car in three concurrent
branches of a fork, pays at the join and confirms. TRIP-001 completes with its
three bookings and its payment. TRIP-002's car rental fails for good after the
flight is booked and while the hotel request is in flight: the hotel step is
cancelled (``step_cancelled``), and the three bookings' attempted undos run once
each, newest start first: the car (which reserved nothing), the hotel room the
partner held for the request cut short, the flight; the trip ends ``failed``. TRIP-003's card is declined after the join: all three
bookings are undone, newest start first. The same holds on the MemoryStore and on a
SqliteStore file, whose histories survive the engine; the script runs as a
process and exits 0.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from examples.trip_booking import Services, TripBookingSaga, main, make_engine, make_services, trips
from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    SqliteStore,
    Store,
    WorkflowFailed,
)
from tests.integration.helpers import completions, of_kind

if TYPE_CHECKING:
    from tests.conftest import Runner

ROOT = Path(__file__).resolve().parents[2]
BOOKINGS = ("book_flight", "book_hotel", "book_car")


@attrs.frozen
class Trip:
    """How one trip ended."""

    instance_id: str
    status: InstanceStatus
    workflow: TripBookingSaga
    failure: WorkflowFailed | None
    history: list[HistoryEvent]


@attrs.frozen
class Outcome:
    """The three trips of the example and what the services saw."""

    happy: Trip
    no_car: Trip
    declined: Trip
    services: Services


async def three_trips(store: Store) -> Outcome:
    """Run the example's three trips on *store*, the way its main() does."""
    engine, services = make_engine(store)
    async with engine:
        handles = [await engine.start(trip) for trip in trips()]
        ended: list[Trip] = []
        for handle in handles:
            failure: WorkflowFailed | None = None
            try:
                await handle.result()
            except WorkflowFailed as failed:
                failure = failed
            wf: TripBookingSaga = engine.workflow(handle.instance_id)
            ended.append(Trip(handle.instance_id, handle.status, wf, failure, handle.history()))
    happy, no_car, declined = ended
    return Outcome(happy, no_car, declined, services)


def index(history: list[HistoryEvent], kind: EventKind, step: str) -> int:
    """The position of the first entry of *kind* for *step*."""
    return next(i for i, e in enumerate(history) if e.kind is kind and e.step == step)


def compensated(history: list[HistoryEvent]) -> list[str | None]:
    """The steps whose compensation completed, in order."""
    return [e.step for e in of_kind(history, EventKind.COMPENSATION_COMPLETED)]


def test_happy_trip_books_all_three_in_parallel_then_pays(run: Runner, store: Store) -> None:
    out = run(three_trips(store))
    trip, services = out.happy, out.services
    assert InstanceStatus.COMPLETED == trip.status
    wf = trip.workflow
    assert (True, "PAY-001") == (wf.confirmed, wf.payment_id)
    assert wf.flight_ref is not None
    assert wf.hotel_ref is not None
    assert wf.car_ref is not None
    assert "TRIP-001" == services.airline.booked[wf.flight_ref]
    assert "TRIP-001" == services.hotels.booked[wf.hotel_ref]
    assert "TRIP-001" == services.cars.booked[wf.car_ref]
    assert {"PAY-001": "TRIP-001"} == services.payments.charges
    history = trip.history
    assert dict.fromkeys(("plan_trip", *BOOKINGS, "take_payment", "confirm_trip"), 1) == completions(history)
    # The three bookings run concurrently: all three start before any completes.
    first_done = min(index(history, EventKind.STEP_COMPLETED, s) for s in BOOKINGS)
    assert all(index(history, EventKind.STEP_STARTED, s) < first_done for s in BOOKINGS)
    # The join fires once, after every branch arrived, and payment runs after it.
    [joined] = of_kind(history, EventKind.JOINED)
    assert ("plan_trip", "take_payment") == (joined.step, joined.detail)
    assert set(BOOKINGS) == {e.step for e in of_kind(history, EventKind.BRANCH_DONE)}
    assert max(index(history, EventKind.BRANCH_DONE, s) for s in BOOKINGS) < history.index(joined)
    assert history.index(joined) < index(history, EventKind.STEP_STARTED, "take_payment")
    assert [] == compensated(history)
    assert [] == of_kind(history, EventKind.STEP_CANCELLED)


def test_car_failure_cancels_the_hotel_and_undoes_every_attempted_booking(run: Runner, store: Store) -> None:
    out = run(three_trips(store))
    trip, services = out.no_car, out.services
    assert InstanceStatus.FAILED == trip.status
    assert trip.failure is not None
    assert InstanceStatus.FAILED == trip.failure.status
    assert "book_car: SoldOutError: car-rental: nothing available in Reykjavik" == trip.failure.reason
    history = trip.history
    # The order the latencies make: flight booked, then the car fails, then the hotel is cancelled.
    flight_done = index(history, EventKind.STEP_COMPLETED, "book_flight")
    car_failed = index(history, EventKind.STEP_FAILED, "book_car")
    [cancelled] = of_kind(history, EventKind.STEP_CANCELLED)
    assert ("book_hotel", 1) == (cancelled.step, cancelled.attempt)
    assert flight_done < car_failed < history.index(cancelled)
    assert cancelled.detail is not None
    assert cancelled.detail.startswith("a sibling branch failed: book_car")
    # The hotel step saw CancelledError while its request was in flight; the partner had reserved a room.
    assert ["TRIP-002"] == services.hotels.abandoned
    assert {"plan_trip": 1, "book_flight": 1} == completions(history)
    # Every booking that started is undone (attempted=True), once, the newest start first.
    undone = ["book_car", "book_hotel", "book_flight"]
    assert undone == compensated(history)
    assert undone == [e.step for e in of_kind(history, EventKind.COMPENSATION_STARTED)]
    assert history.index(cancelled) < index(history, EventKind.COMPENSATION_STARTED, "book_car")
    wf = trip.workflow
    assert wf.flight_ref is not None
    assert (None, None) == (wf.hotel_ref, wf.car_ref)  # the step never had the hotel's answer
    assert 1 == services.airline.cancelled.count(wf.flight_ref)
    # The room held for the request cut short is released; the car rental held nothing to cancel.
    [no_car_room, declined_room] = services.hotels.cancelled
    assert "x2" == no_car_room[-2:]  # TRIP-002's two nights
    assert [out.declined.workflow.hotel_ref] == [declined_room]
    assert [out.declined.workflow.car_ref] == services.cars.cancelled
    for partner in (services.airline, services.hotels, services.cars):
        assert "TRIP-002" not in partner.booked.values()
    assert "take_payment" not in {e.step for e in history}
    assert InstanceStatus.FAILED.value == history[-1].detail


def test_declined_card_undoes_every_booking_newest_start_first(run: Runner, store: Store) -> None:
    out = run(three_trips(store))
    trip, services = out.declined, out.services
    assert InstanceStatus.FAILED == trip.status
    assert trip.failure is not None
    assert trip.failure.reason is not None
    assert trip.failure.reason.startswith("take_payment: CardDeclinedError")
    history = trip.history
    # An attempted undo takes its place in the saga when its step starts: newest start first.
    newest_first = sorted(BOOKINGS, key=lambda s: -index(history, EventKind.STEP_STARTED, s))
    assert ["book_car", "book_hotel", "book_flight"] == newest_first  # the fork's order
    assert newest_first == compensated(history)
    assert [] == of_kind(history, EventKind.STEP_CANCELLED)
    assert "TRIP-003" not in services.payments.charges.values()
    assert [] == services.payments.refunds
    for partner in (services.airline, services.hotels, services.cars):
        assert "TRIP-003" not in partner.booked.values()


def test_a_failure_after_payment_refunds_it_and_undoes_the_bookings(run: Runner, store: Store) -> None:
    def fail_confirmation(ctx: Ctx) -> None:
        if ctx.step == "confirm_trip" and not ctx.compensating:
            msg = "the mail server is gone"
            raise RuntimeError(msg)

    async def scenario() -> tuple[InstanceStatus, list[HistoryEvent], Services]:
        services = make_services()
        async with Engine(store, services=services.registry(), before_attempt=fail_confirmation) as engine:
            handle = await engine.start(trips()[0])
            with pytest.raises(WorkflowFailed):
                await handle.result()
            return handle.status, handle.history(), services

    status, history, services = run(scenario())
    assert InstanceStatus.FAILED == status
    assert ["take_payment", "book_car", "book_hotel", "book_flight"] == compensated(history)  # by start
    assert ["PAY-001"] == services.payments.refunds
    assert {} == services.payments.charges


def test_sqlite_histories_survive_the_engine(run: Runner, db_path: Path) -> None:
    async def scenario() -> tuple[Outcome, dict[str, list[HistoryEvent]], dict[str, InstanceStatus]]:
        with SqliteStore(db_path) as store:
            out = await three_trips(store)
        with SqliteStore(db_path) as store:
            engine = Engine(store, workflows=[TripBookingSaga])
            ids = [t.instance_id for t in (out.happy, out.no_car, out.declined)]
            return out, {i: engine.history(i) for i in ids}, {i: engine.info(i).status for i in ids}

    out, histories, statuses = run(scenario())
    for trip in (out.happy, out.no_car, out.declined):
        assert trip.history == histories[trip.instance_id]
        assert trip.status == statuses[trip.instance_id]


def test_main_recreates_the_database_file(run: Runner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "trips.db"
    db.write_bytes(b"not a database, left over from something else")
    assert 0 == run(main(str(db)))
    assert 0 == run(main(str(db)))  # a second run starts from an empty file again
    out = capsys.readouterr().out
    assert 2 == out.count("TripBookingSaga v1  completed")


def test_the_script_runs_in_memory() -> None:
    proc = subprocess.run(
        [sys.executable, "examples/trip_booking.py", "--memory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr + proc.stdout
    out = proc.stdout
    assert "TRIP-001 to Lisbon" in out
    assert "status_changed - completed" in out
    assert "step_cancelled book_hotel (attempt 1) - a sibling branch failed: book_car" in out
    assert 2 == out.count("compensation_completed book_flight (attempt 1) - cancel_flight")  # TRIP-002 and -003
    assert "reason: book_car: SoldOutError: car-rental: nothing available in Reykjavik" in out
    assert "hotel requests abandoned: ['TRIP-002']" in out
    assert "compensation_completed book_hotel (attempt 1) - cancel_hotel" in out.split("== TRIP-002")[1]
