"""
Issue 9: the ``Store`` contract of ``docs/design/leases.md`` on records, run on every store.

A commit is read back by ``load``, ``info``, ``infos`` and ``history``; a commit
that raises writes nothing; tasks are found by user, group and instance, and
complete once through ``add_command(complete=...)``; signals are kept and
consumed by a commit; timers come back by ``next_wake`` and ``due`` in due order;
``Engine.start`` with one id twice makes one instance.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Engine,
    InstanceStatus,
    Signal,
    StoreError,
    TaskAlreadyCompleted,
    TaskStatus,
    VirtualClock,
)
from statemachine_orch._store_sqlite import FaultPoint
from tests.integration.helpers import entries
from tests.store.flows import (
    NOW,
    PAID,
    PINNED,
    ContractAudit,
    ContractEdit,
    ContractPay,
    Paid,
    Verdict,
    drive,
    load,
    noted,
    parked,
    snapshot,
    timer_at,
    variables,
)

if TYPE_CHECKING:
    from statemachine_orch import Store
    from statemachine_orch._instance import InstanceRecord
    from tests.conftest import Runner
    from tests.store.conftest import Stores


# --------------------------------------------------------------------------- round trip


def test_a_commit_is_read_back_by_load_info_infos_and_history(store: Store, run: Runner) -> None:
    """Issue 9: what the engine and a worker's turn commit comes back from load, info, infos and history."""
    edit, pay = parked(store, run, [ContractEdit(), ContractPay(cents=5)])
    drive(store, pay, noted("looked at"))
    rec = load(store, edit)
    info = store.info(pay)
    waiting = store.infos(InstanceStatus.WAITING, None)
    pays = store.infos(None, "ContractPay")
    assert ("ready", None, InstanceStatus.WAITING, "review") == (
        rec.wf.title,
        rec.wf.verdict,
        rec.status,
        rec.state,
    )
    assert info is not None
    assert (pay, "ContractPay", "1", InstanceStatus.WAITING, "paid", "looked at") == (
        info.id,
        info.workflow,
        info.version,
        info.status,
        info.step,
        info.error,
    )
    assert [edit, pay] == sorted(i.id for i in waiting)
    assert [pay] == [i.id for i in pays]
    assert [
        ("instance_started", None, 0, "ContractPay version 1"),
        ("step_started", "invoice", 1, None),
        ("step_completed", "invoice", 1, None),
        ("transition", "invoice", 0, "paid"),
        ("message_awaited", "paid", 0, "Paid"),
        ("status_changed", None, 0, "waiting"),
        ("status_changed", None, 0, "looked at"),
    ] == entries(store.history(pay))
    assert (None, None, []) == (store.info("nobody"), store.load("nobody"), store.history("nobody"))


def test_a_separate_reader_sees_what_was_committed(durable: Stores, run: Runner) -> None:
    """Issue 9: a second store on the same file or database (another process) reads the same instances."""
    writer = durable.open()
    edit, pay = parked(writer, run, [ContractEdit(), ContractPay(cents=5)])
    drive(writer, pay, noted("looked at"))
    reader = durable.open()
    assert snapshot(writer, [edit, pay]) == snapshot(reader, [edit, pay])
    assert [variables(load(writer, i).wf) for i in (edit, pay)] == [variables(load(reader, i).wf) for i in (edit, pay)]


# --------------------------------------------------------------------------- a commit that raises


def test_a_commit_with_variables_that_cannot_be_encoded_writes_nothing(durable: Stores, run: Runner) -> None:
    """Issue 9: one record of a batch whose variables cannot be stored: the whole batch writes nothing."""
    store = durable.open()
    good, bad = parked(store, run, [ContractPay(), ContractPay()])
    seq = store.add_command(good, "wake", {})
    before = snapshot(store, [good, bad])
    records = [load(store, good), load(store, bad)]
    for rec in records:
        noted("not written")(rec)
    records[0].add_consumed_command(seq)
    records[0].send(bad, "wake", {})
    records[1].wf.cents = object()  # not an int: it cannot be encoded
    with pytest.raises((TypeError, ValueError, StoreError)):
        store.commit(records)
    assert before == snapshot(store, [good, bad])
    assert before == snapshot(durable.open(), [good, bad])


def test_a_commit_failing_inside_its_transaction_writes_nothing(durable: Stores, run: Runner) -> None:
    """Issue 9: a fault injected before COMMIT rolls back every record, entry, command and signal of the batch."""
    armed: list[FaultPoint] = []

    def fault(point: FaultPoint) -> None:
        if point in armed:
            raise OSError(28, "No space left on device")

    store = durable.open(fault=fault)
    pay, edit = parked(store, run, [ContractPay(), ContractEdit()])
    seq = store.add_command(pay, "wake", {})
    signal = store.add_signal(pay, PAID, Paid(cents=3))
    [task] = store.open_tasks(None, frozenset(), edit)
    before = snapshot(store, [pay, edit])
    records = [load(store, pay), load(store, edit)]
    for rec in records:
        noted("not written")(rec)
    records[0].add_consumed_command(seq)
    records[0].add_consumed_signal(signal)
    records[0].send(edit, "wake", {})
    records[1].add_task(attrs.evolve(task, status=TaskStatus.CANCELLED, completed_at=NOW))
    armed.append("before_commit")
    with pytest.raises(OSError, match="No space left"):
        store.commit(records)
    assert before == snapshot(store, [pay, edit])
    assert before == snapshot(durable.open(), [pay, edit])


# --------------------------------------------------------------------------- tasks


def test_open_tasks_are_found_by_user_by_group_and_by_instance(store: Store, run: Runner) -> None:
    """Issue 9: the assignee and a candidate group's members find a task; nobody else does; per instance too."""
    edit, audit, pay = parked(store, run, [ContractEdit(), ContractAudit(), ContractPay()])

    def found(user: str | None, groups: frozenset[str], instance_id: str | None = None) -> list[tuple[str, str]]:
        return sorted((t.instance_id, t.step) for t in store.open_tasks(user, groups, instance_id))

    assert [(edit, "review")] == found("alice", frozenset())
    assert [(edit, "review")] == found("bob", frozenset({"editors"}))
    assert [(audit, "check")] == found("carol", frozenset({"legal"}))
    assert sorted([(edit, "review"), (audit, "check")]) == found("dan", frozenset({"ops", "editors"}))
    assert [] == found("eve", frozenset({"sales"}))
    assert sorted([(edit, "review"), (audit, "check")]) == found(None, frozenset())
    assert [(audit, "check")] == found(None, frozenset(), audit)
    assert [] == found(None, frozenset(), pay)


def test_a_task_completes_once_through_add_command(store: Store, run: Runner) -> None:
    """Issue 9: add_command(complete=...) closes the task with its command; a second one raises and writes nothing."""
    [edit] = parked(store, run, [ContractEdit()])
    [task] = store.open_tasks(None, frozenset(), edit)
    done = attrs.evolve(
        task, status=TaskStatus.COMPLETED, completed_by="alice", completed_at=NOW, form=Verdict(approved=True)
    )
    seq = store.add_command(edit, "complete_task", {"task": task.id, "user": "alice"}, complete=done)
    again = attrs.evolve(done, completed_by="bob", form=Verdict(approved=False))
    with pytest.raises(TaskAlreadyCompleted) as err:
        store.add_command(
            edit, "complete_task", {"task": task.id, "user": "bob"}, complete=again, signal=(PAID, Paid(cents=1))
        )
    stored = store.task(task.id)
    assert [(seq, "complete_task", {"task": task.id, "user": "alice"})] == [
        (c.seq, c.kind, c.body) for c in store.commands(edit)
    ]
    assert [] == store.open_tasks("alice", frozenset({"editors"}), None)
    assert task.id == err.value.task_id
    assert [] == store.signals(edit)
    assert stored is not None
    assert (TaskStatus.COMPLETED, "alice", NOW, Verdict(approved=True)) == (
        stored.status,
        stored.completed_by,
        stored.completed_at,
        stored.form,
    )


# --------------------------------------------------------------------------- signals


def test_signals_are_kept_oldest_first_and_consumed_by_a_commit(store: Store, run: Runner) -> None:
    """Issue 9: add_signal and add_command(signal=...) keep messages; the commit that consumes one deletes it."""
    pay, other = parked(store, run, [ContractPay(), ContractPay()])
    first = store.add_signal(pay, PAID, Paid(cents=1))
    command = store.add_command(pay, "wake", {}, signal=(PAID, Paid(cents=2)))
    kept = store.signals(pay)
    second = kept[1].seq

    def consume(rec: InstanceRecord) -> None:
        rec.add_consumed_signal(first)

    drive(store, pay, consume)
    assert [Signal(first, PAID, Paid(cents=1)), Signal(second, PAID, Paid(cents=2))] == kept
    assert first < second
    assert [Signal(second, PAID, Paid(cents=2))] == store.signals(pay)
    assert [] == store.signals(other)
    assert [(command, "wake", {})] == [(c.seq, c.kind, c.body) for c in store.commands(pay)]


# --------------------------------------------------------------------------- timers


def test_timers_come_back_by_next_wake_and_due_in_due_order(store: Store, run: Runner) -> None:
    """Issue 9: next_wake is the earliest timer (but those excluded); due lists the due ones earliest first."""
    late, early, middle, idle = parked(store, run, [ContractPay() for _ in range(4)])
    for instance_id, at in ((late, NOW + 300), (early, NOW + 100), (middle, NOW + 200)):
        drive(store, instance_id, timer_at(at))
    assert NOW + 100 == store.next_wake()
    assert NOW + 200 == store.next_wake(frozenset({early}))
    assert store.next_wake(frozenset({early, middle, late})) is None
    assert [] == store.due(NOW + 99, 10)
    assert [early, middle] == store.due(NOW + 250, 10)
    assert [early, middle] == store.due(NOW + 1000, 2)
    assert [early, middle, late] == store.due(NOW + 1000, 10)
    drive(store, early, timer_at(NOW + 400))  # moved: only its new due time counts
    assert [middle, late, early] == store.due(NOW + 1000, 10)
    assert idle not in store.due(NOW + 1000, 10)


# --------------------------------------------------------------------------- starting with one id


def test_starting_twice_with_one_id_makes_one_instance(store: Store, run: Runner) -> None:
    """Issue 9: Engine.start(..., instance_id="x") twice returns the same instance; the store holds one."""

    async def scenario() -> tuple[str, str]:
        async with Engine(store, clock=VirtualClock(), workflows=PINNED) as engine:
            first = await engine.start(ContractPay(cents=1), instance_id="x")
            await first.wait_idle()
            second = await engine.start(ContractPay(cents=2), instance_id="x")
            return first.instance_id, second.instance_id

    assert ("x", "x") == run(scenario())
    assert ["x"] == [i.id for i in store.infos(None, None)]
    assert 1 == load(store, "x").wf.cents
    assert 1 == [e.kind.value for e in store.history("x")].count("instance_started")


def test_two_processes_starting_one_id_make_one_instance(durable: Stores, run: Runner) -> None:
    """Issue 9: two engines on two stores of one file or database start "x": one row, the first one's."""
    one, two = durable.open(), durable.open()

    async def scenario() -> tuple[str, str]:
        async with (
            Engine(one, clock=VirtualClock(), workflows=PINNED) as first,
            Engine(two, clock=VirtualClock(), workflows=PINNED) as second,
        ):
            a = await first.start(ContractPay(cents=1), instance_id="x")
            await a.wait_idle()
            b = await second.start(ContractPay(cents=2), instance_id="x")
            return a.instance_id, b.instance_id

    assert ("x", "x") == run(scenario())
    assert ["x"] == [i.id for i in durable.open().infos(None, None)]
    assert 1 == load(durable.open(), "x").wf.cents
