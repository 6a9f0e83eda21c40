"""
Issue 10, item 1: ``examples/order_fulfilment.py``, the parcel fan-out, end to end.

O-1's four parcels ship two at a time and the order keeps their tracking codes in
parcel order; O-2's hazardous parcel fails its shipment, so the shipment on the
road is called back, the delivered one too, then the payment is refunded and the
stock released. The script itself runs on SQLite and returns 0.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from examples.order_fulfilment import Order, Parcel, deliver_all, main, make_engine
from statemachine_orch import EventKind, InstanceStatus

if TYPE_CHECKING:
    from tests.conftest import Runner

K = EventKind
S = InstanceStatus


def test_four_parcels_ship_two_at_a_time_and_keep_parcel_order(run: Runner) -> None:
    async def scenario() -> tuple[S, list[str], int, list[str]]:
        engine, _, _, couriers = make_engine()
        async with engine:
            parcels = [Parcel("BOOK", 0.4), Parcel("LAMP", 2.0), Parcel("DESK", 31.0), Parcel("RUG", 5.5)]
            handle = await engine.start(Order(order_id="O-1", customer="C-7", parcels=parcels), instance_id="O-1")
            await deliver_all(engine, handle.instance_id)
            running = peak = 0
            for e in handle.history():
                running += (e.kind is K.CHILD_STARTED) - (e.kind is K.CHILD_FINISHED)
                peak = max(peak, running)
            tracking: list[str] = engine.workflow("O-1").tracking
            return handle.status, tracking, peak, sorted(couriers.booked.values())

    status, tracking, peak, booked = run(scenario())
    assert S.COMPLETED == status
    assert ["TRK-O-1-BOOK", "TRK-O-1-LAMP", "TRK-O-1-DESK", "TRK-O-1-RUG"] == tracking
    assert 2 == peak, "two on the road at a time"
    assert sorted(tracking) == booked, "one booking per parcel"


def test_a_parcel_no_courier_takes_calls_the_others_back_and_refunds(run: Runner) -> None:
    async def scenario() -> tuple[S, list[S], list[str], list[str], list[str]]:
        engine, inventory, payments, couriers = make_engine()
        async with engine:
            parcels = [Parcel("BOOK", 0.4), Parcel("LAMP", 2.0), Parcel("SOLVENT", 1.0, hazardous=True)]
            handle = await engine.start(Order(order_id="O-2", customer="C-8", parcels=parcels), instance_id="O-2")
            await deliver_all(engine, handle.instance_id)
            children = [engine.info(f"O-2/2/{i}").status for i in range(3)]
            return handle.status, children, couriers.called_back, payments.refunds, inventory.released

    status, children, called_back, refunds, released = run(scenario())
    assert S.FAILED == status
    assert [S.CANCELLED, S.CANCELLED, S.FAILED] == children
    assert ["TRK-O-2-LAMP", "TRK-O-2-BOOK"] == called_back, "the one on the road, then the delivered one"
    assert (["pay-O-2-C-8"], ["O-2"]) == (refunds, released)


def test_the_script_runs_on_sqlite(run: Runner, tmp_path: Path) -> None:
    assert 0 == run(main(str(tmp_path / "fulfilment.db")))
