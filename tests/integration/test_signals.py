"""
Issue 3: typed signals to ``@wait_for`` steps.

``engine.signal(id, message)`` delivers a message to an instance waiting for its
type. A message sent before the instance reaches the step is kept in the store
(across a restart too) and consumed when the instance gets there, oldest first,
each once. A message no step of the workflow waits for, a finished instance and
an unknown id are each a clear error, and change nothing.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    InstanceFinished,
    InstanceNotFound,
    InstanceStatus,
    SignalTypeError,
    Store,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
    wait_for,
)
from tests.integration.helpers import Entry, entries, of_kind, open_engine, settle

if TYPE_CHECKING:
    from tests.conftest import Runner


@attrs.frozen
class Paid:
    """A payment arrived."""

    amount: int


@attrs.frozen
class PaidWithTip(Paid):
    """A payment with a tip: still a payment."""

    tip: int = 0


@attrs.frozen
class Shipped:
    """The parcel left."""

    carrier: str


@attrs.frozen
class Refund:
    """A message nobody in these workflows waits for."""

    amount: int


class Payment(Workflow):
    """Wait for the payment, then for the shipment."""

    amount: int = 0
    carrier: str = ""

    @wait_for(Paid, initial=True)
    def await_payment(self, ctx: Ctx, msg: Paid) -> None:
        self.amount = msg.amount

    @after(await_payment)
    @wait_for(Shipped, final=True)
    def await_shipment(self, ctx: Ctx, msg: Shipped) -> None:
        self.carrier = msg.carrier


class Instalments(Workflow):
    """A clerk confirms the order, then three instalments are paid, then it ships."""

    payments: list[int] = attrs.field(factory=list[int])

    @step(initial=True)
    def take_order(self, ctx: Ctx) -> None: ...

    @after(take_order)
    @human_task(assignee="clerk")
    def confirm(self, ctx: Ctx) -> None: ...

    @after(confirm)
    @wait_for(Paid)
    def first(self, ctx: Ctx, msg: Paid) -> None:
        self.payments.append(msg.amount)

    @after(first)
    @wait_for(Paid)
    def second(self, ctx: Ctx, msg: Paid) -> None:
        self.payments.append(msg.amount)

    @after(second)
    @wait_for(Paid)
    def third(self, ctx: Ctx, msg: Paid) -> None:
        self.payments.append(msg.amount)

    @after(third)
    @wait_for(Shipped, final=True)
    def ship(self, ctx: Ctx, msg: Shipped) -> None: ...


def test_a_signal_is_delivered_to_the_step_waiting_for_it(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: each message reaches the @wait_for step of its type, which runs with it."""

    async def scenario() -> tuple[str | None, str | None, InstanceStatus, tuple[int, str], list[Entry]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Payment())
            await handle.wait_idle()
            first = handle.step
            await engine.signal(handle.instance_id, Paid(42))
            await engine.wait_instance(handle.instance_id, terminal=False)
            await handle.wait_idle()
            second = handle.step
            await engine.signal(handle.instance_id, Shipped("DHL"))
            wf = await handle.result()
            return first, second, handle.status, (wf.amount, wf.carrier), entries(handle.history())

    first, second, status, values, history = run(scenario())
    assert ("await_payment", "await_shipment") == (first, second)
    assert InstanceStatus.COMPLETED == status
    assert (42, "DHL") == values
    assert [
        ("instance_started", None, 0, "Payment version 1"),
        ("message_awaited", "await_payment", 0, "Paid"),
        ("status_changed", None, 0, "waiting"),
        ("status_changed", None, 0, "running"),
        ("message_received", "await_payment", 0, "Paid"),
        ("step_started", "await_payment", 1, None),
        ("step_completed", "await_payment", 1, None),
        ("transition", "await_payment", 0, "await_shipment"),
        ("message_awaited", "await_shipment", 0, "Shipped"),
        ("status_changed", None, 0, "waiting"),
        ("status_changed", None, 0, "running"),
        ("message_received", "await_shipment", 0, "Shipped"),
        ("step_started", "await_shipment", 1, None),
        ("step_completed", "await_shipment", 1, None),
        ("transition", "await_shipment", 0, "@completed"),
        ("status_changed", None, 0, "completed"),
    ] == history


def test_early_signals_are_kept_across_a_restart_and_consumed_oldest_first_once(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: messages sent before the instance reaches its @wait_for steps wait in the file, in order, for it."""

    async def scenario() -> tuple[list[int], list[int], str | None, InstanceStatus, list[int], list[int], int]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Instalments())
            await handle.wait_idle()
            await engine.signal(handle.instance_id, Paid(1))
            await engine.signal(handle.instance_id, Paid(2))
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            kept = [s.message.amount for s in engine.store.signals(handle.instance_id) if isinstance(s.message, Paid)]
            [task] = engine.tasks(user="clerk")
            await engine.complete_task(task.id, user="clerk")
            await engine.wait_instance(handle.instance_id, terminal=False)
            wf: Instalments = engine.workflow(handle.instance_id)
            info = engine.info(handle.instance_id)
            waiting_at, waiting_status, paid_so_far = info.step, info.status, wf.payments
            left = [s.seq for s in engine.store.signals(handle.instance_id)]
            await engine.signal(handle.instance_id, Paid(3))
            await engine.signal(handle.instance_id, Shipped("UPS"))
            await engine.wait_instance(handle.instance_id)
            wf = engine.workflow(handle.instance_id)
            received = len(of_kind(engine.history(handle.instance_id), EventKind.MESSAGE_RECEIVED))
            return kept, paid_so_far, waiting_at, waiting_status, wf.payments, left, received

    kept, paid_so_far, waiting_at, waiting_status, payments, left, received = run(scenario())
    assert [1, 2] == kept
    assert [1, 2] == paid_so_far
    assert ("third", InstanceStatus.WAITING) == (waiting_at, waiting_status)
    assert [] == left
    assert [1, 2, 3] == payments
    assert 4 == received


def test_a_message_no_step_waits_for_is_refused_naming_the_accepted_types(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: SignalTypeError names the instance, the message type and the types its workflow waits for."""

    async def scenario() -> tuple[str, str, str, list[object], str | None]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Payment())
            await handle.wait_idle()
            with pytest.raises(SignalTypeError) as err:
                await engine.signal(handle.instance_id, Refund(5))
            await settle()
            kept = [s.message for s in engine.store.signals(handle.instance_id)]
            return handle.instance_id, err.value.instance_id, str(err.value), kept, handle.step

    instance_id, err_id, message, kept, at = run(scenario())
    assert instance_id == err_id
    assert f"instance {instance_id}: Payment does not wait for Refund (it waits for: Paid, Shipped)" == message
    assert [] == kept
    assert "await_payment" == at


def test_a_signal_to_a_finished_instance_is_refused(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: InstanceFinished tells that the instance is already terminal, and with which status."""

    async def scenario() -> tuple[str, InstanceFinished]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Payment())
            await handle.wait_idle()
            await engine.signal(handle.instance_id, Paid(1))
            await engine.signal(handle.instance_id, Shipped("DHL"))
            await handle.result()
            with pytest.raises(InstanceFinished) as err:
                await engine.signal(handle.instance_id, Paid(2))
            return handle.instance_id, err.value

    instance_id, err = run(scenario())
    assert (instance_id, InstanceStatus.COMPLETED) == (err.instance_id, err.status)
    assert f"instance {instance_id} is already completed: cannot deliver Paid" == str(err)


def test_a_signal_to_an_unknown_instance_is_refused(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: InstanceNotFound names the id nobody has."""

    async def scenario() -> InstanceNotFound:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            with pytest.raises(InstanceNotFound) as err:
                await engine.signal("no-such-id", Paid(1))
            return err.value

    err = run(scenario())
    assert "no-such-id" == err.instance_id
    assert "no workflow instance with id 'no-such-id'" == str(err)


class Deadline(Workflow):
    """Wait an hour for the payment, else remind the customer."""

    reminded: bool = False

    @step(initial=True)
    def bill(self, ctx: Ctx) -> None: ...

    @after(bill)
    @wait_for(Paid)
    def await_payment(self, ctx: Ctx, msg: Paid) -> None: ...

    @after(await_payment, timeout=timedelta(hours=1))
    @step
    def remind(self, ctx: Ctx) -> None:
        self.reminded = True

    @after(await_payment)
    @after(remind)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize("paid", [True, False])
def test_a_wait_for_a_message_escalates_when_no_message_comes(db_path: Path, run: Runner, paid: bool) -> None:
    """Issue 3: @after(wait_step, timeout=...) escalates a message wait too; a message in time clears it."""
    clock = VirtualClock(autojump=False)

    async def scenario() -> tuple[bool, list[str | None]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Deadline())
            await handle.wait_idle()
            clock.advance(1800)
            if paid:
                await engine.signal(handle.instance_id, Paid(10))
                await engine.wait_instance(handle.instance_id)
            clock.advance(3600)
            await engine.wait_instance(handle.instance_id)
            wf: Deadline = engine.workflow(handle.instance_id)
            return wf.reminded, [e.step for e in of_kind(handle.history(), EventKind.STEP_COMPLETED)]

    reminded, steps = run(scenario())
    assert (not paid) == reminded
    assert (["bill", "await_payment", "close"] if paid else ["bill", "remind", "close"]) == steps


def test_a_message_of_a_subclass_of_the_awaited_type_is_delivered(
    store: Store, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: signal() accepts an instance of a subclass of the awaited type; it is delivered on both stores."""

    async def scenario() -> tuple[str | None, int]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Payment())
            await handle.wait_idle()
            await engine.signal(handle.instance_id, PaidWithTip(7, tip=1))
            await settle()
            wf: Payment = engine.workflow(handle.instance_id)
            return handle.step, wf.amount

    assert ("await_shipment", 7) == run(scenario())


def test_a_message_delivered_just_before_the_engine_stops_is_consumed_after_the_restart(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: signal() returned, the engine stopped before the waiting step ran: the new engine runs it with the message."""

    async def scenario() -> tuple[str | None, int, int, str | None, int]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Payment())
            await handle.wait_idle()
            await engine.signal(handle.instance_id, Paid(99))
            # The engine stops before any worker consumes the message.
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            stopped_at = engine.info(handle.instance_id).step
            kept = len(engine.store.signals(handle.instance_id))
            await engine.recover()
            await engine.wait_instance(handle.instance_id, terminal=False)
            wf: Payment = engine.workflow(handle.instance_id)
            return (
                stopped_at,
                kept,
                wf.amount,
                engine.info(handle.instance_id).step,
                len(engine.store.signals(handle.instance_id)),
            )

    assert ("await_payment", 1, 99, "await_shipment", 0) == run(scenario())


def test_messages_nobody_consumed_are_dropped_when_the_instance_ends(
    store: Store, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: early messages for steps an instance never reached are not kept once it is cancelled, on both stores."""

    async def scenario() -> tuple[int, int]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Instalments())
            await handle.wait_idle()
            await engine.signal(handle.instance_id, Paid(1))
            await engine.signal(handle.instance_id, Shipped("DHL"))
            before = len(engine.store.signals(handle.instance_id))
            await engine.cancel(handle.instance_id, reason="withdrawn")
            return before, len(engine.store.signals(handle.instance_id))

    assert (2, 0) == run(scenario())


PINNED: list[type[Workflow]] = [Payment, Instalments, Deadline]
"""This module's workflows, pinned in every engine: other test modules define classes of the same names."""
