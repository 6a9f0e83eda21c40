"""
Issue 10, item 8: the messages a step sends go out with its commit, on every store.

A record's ``signals_out`` (what ``ctx.signal`` and ``signal_with_start`` queue)
are kept as signal rows of their targets by the commit that carries the record,
in the order they were sent, next to new instances inserted by the same commit;
a commit that raises keeps none of them.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from statemachine_orch import InstanceExists, Signal
from tests.store.flows import PAID, ContractPay, Paid, drive, load, new_record, noted, parked, snapshot

if TYPE_CHECKING:
    from statemachine_orch import Store
    from statemachine_orch._instance import InstanceRecord
    from statemachine_orch._store_sqlite import FaultPoint
    from tests.conftest import Runner
    from tests.store.conftest import Stores


def _types(signals: list[Signal]) -> list[tuple[str, object]]:
    return [(s.type_name, s.message) for s in signals]


def test_a_commit_keeps_the_messages_its_record_sends_in_order(store: Store, run: Runner) -> None:
    """Issue 10: signals_out become the targets' signals, oldest first, after those kept before; sent once."""
    sender, target, other = parked(store, run, [ContractPay(), ContractPay(), ContractPay()])
    store.add_signal(target, PAID, Paid(cents=1))

    def turn(rec: InstanceRecord) -> None:
        rec.send_signal(target, PAID, Paid(cents=2))
        rec.send_signal(other, PAID, Paid(cents=3))
        rec.send_signal(target, PAID, Paid(cents=4))

    drive(store, sender, turn)
    drive(store, sender, noted("a later turn sends nothing again"))
    assert [(PAID, Paid(cents=1)), (PAID, Paid(cents=2)), (PAID, Paid(cents=4))] == _types(store.signals(target))
    assert [(PAID, Paid(cents=3))] == _types(store.signals(other))
    assert [] == store.signals(sender)
    seqs = [s.seq for s in store.signals(target)]
    assert sorted(seqs) == seqs


def test_a_new_instance_and_its_first_message_are_one_commit(store: Store, run: Runner) -> None:
    """Issue 10: signal-with-start: a new record carrying a message for itself is stored with it."""
    [sender] = parked(store, run, [ContractPay()])
    fence = store.claim(sender, "host:1:aaaa", 1.0, 2.0)
    assert fence is not None
    rec = load(store, sender)
    rec.fence = fence
    started = new_record("started-with-a-message")
    started.send_signal(started.id, PAID, Paid(cents=7))
    store.commit([rec, started])
    assert [(PAID, Paid(cents=7))] == _types(store.signals(started.id))
    assert "ContractPay" == load(store, started.id).spec.name


def test_a_commit_refused_for_a_taken_id_keeps_no_message(store: Store, run: Runner) -> None:
    """Issue 10: InstanceExists for a new record: the step's messages are not kept either."""
    sender, target = parked(store, run, [ContractPay(), ContractPay()])
    fence = store.claim(sender, "host:1:aaaa", 1.0, 2.0)
    assert fence is not None
    rec = load(store, sender)
    rec.fence = fence
    rec.send_signal(target, PAID, Paid(cents=5))
    before = snapshot(store, [sender, target])
    with pytest.raises(InstanceExists):
        store.commit([rec, new_record(target)])
    assert before == snapshot(store, [sender, target])


def test_a_commit_failing_inside_its_transaction_keeps_no_message(durable: Stores, run: Runner) -> None:
    """Issue 10: a fault before COMMIT: neither the sender's change nor its messages are written."""
    armed: list[FaultPoint] = []

    def fault(point: FaultPoint) -> None:
        if point in armed:
            raise OSError(28, "No space left on device")

    store = durable.open(fault=fault)
    sender, target = parked(store, run, [ContractPay(), ContractPay()])
    before = snapshot(store, [sender, target])
    rec = load(store, sender)
    noted("not written")(rec)
    rec.send_signal(target, PAID, Paid(cents=9))
    armed.append("before_commit")
    with pytest.raises(OSError, match="No space left"):
        store.commit([rec])
    assert before == snapshot(store, [sender, target])
    assert before == snapshot(durable.open(), [sender, target])
