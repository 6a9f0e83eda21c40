"""
Issue 2: the order-process example, end to end, with its own engine and in-process services.

500 completes straight through; 5000 waits on the manager's approval task, which the
manager completes, and then completes; the DESK order's inventory update fails for
good, so the payment is refunded (compensations in reverse order) and it ends failed.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

from examples.order_process import Approval, Item, OrderProcess, main, make_engine
from statemachine_orch import (
    EventKind,
    HistoryEvent,
    InstanceStatus,
    Task,
    WorkflowFailed,
    machine_of,
)

if TYPE_CHECKING:
    from tests.conftest import Runner


@attrs.frozen
class Outcome:
    """What the three orders left behind."""

    small: tuple[InstanceStatus, list[HistoryEvent]]
    large_waiting: InstanceStatus
    manager_tasks: list[Task]
    clerk_tasks: list[Task]
    large: tuple[InstanceStatus, list[HistoryEvent]]
    doomed: WorkflowFailed
    doomed_history: list[HistoryEvent]
    doomed_payment: str | None
    refunds: list[str]
    restored: list[str]
    stock: dict[str, int]
    completed: set[str]
    failed: set[str]
    ids: tuple[str, str, str]


def path(history: list[HistoryEvent]) -> list[tuple[str | None, str | None]]:
    """``(source, destination)`` of every transition."""
    return [(e.step, e.detail) for e in history if e.kind is EventKind.TRANSITION]


async def three_orders() -> Outcome:
    """Run the example's three orders the way its main() does."""
    engine, inventory, payments = make_engine()
    async with engine:
        small = await engine.start(
            OrderProcess(order_id="ORD-001", customer_id="CUST-001", amount=500, items=[Item("BOOK", 2)])
        )
        large = await engine.start(
            OrderProcess(order_id="ORD-002", customer_id="CUST-002", amount=5000, items=[Item("LAMP", 1)])
        )
        doomed = await engine.start(
            OrderProcess(order_id="ORD-003", customer_id="CUST-003", amount=800, items=[Item("DESK", 1)])
        )
        await small.result()
        large_waiting = await large.wait_idle()
        manager_tasks = engine.tasks(user="manager")
        clerk_tasks = engine.tasks(user="clerk", groups=["sales"])
        [task] = manager_tasks
        await engine.complete_task(task.id, user="manager", form=Approval(approved=True, comment="ok"))
        await large.result()
        with pytest.raises(WorkflowFailed) as err:
            await doomed.result()
        return Outcome(
            small=(small.status, small.history()),
            large_waiting=large_waiting,
            manager_tasks=manager_tasks,
            clerk_tasks=clerk_tasks,
            large=(large.status, large.history()),
            doomed=err.value,
            doomed_history=doomed.history(),
            doomed_payment=doomed.workflow.payment_id,
            refunds=list(payments.refunds),
            restored=list(inventory.restored),
            stock=dict(inventory.stock),
            completed={i.id for i in engine.instances(status=InstanceStatus.COMPLETED)},
            failed={i.id for i in engine.instances(status=InstanceStatus.FAILED)},
            ids=(small.instance_id, large.instance_id, doomed.instance_id),
        )


@pytest.fixture(scope="module")
def outcome(run: Runner) -> Outcome:
    """The three orders, run once for this module's tests."""
    return run(three_orders())


STRAIGHT = [
    ("validate_order", "check_inventory"),
    ("check_inventory", "process_payment"),
    ("process_payment", "update_inventory"),
    ("update_inventory", "send_confirmation"),
    ("send_confirmation", "@completed"),
]


def test_the_500_order_completes_straight_through(outcome: Outcome) -> None:
    """Issue 2: an order of 500 needs no approval and completes."""
    status, history = outcome.small
    assert InstanceStatus.COMPLETED == status
    assert STRAIGHT == path(history)


def test_the_5000_order_waits_for_the_manager_then_completes(outcome: Outcome) -> None:
    """Issue 2: an order above 1000 waits on an approval task for the manager; approved, it completes."""
    assert InstanceStatus.WAITING == outcome.large_waiting
    [task] = outcome.manager_tasks
    assert ("manual_approval", "manager", Approval) == (task.step, task.assignee, task.form_type)
    assert [] == outcome.clerk_tasks
    status, history = outcome.large
    assert InstanceStatus.COMPLETED == status
    assert [
        ("validate_order", "check_inventory"),
        ("check_inventory", "manual_approval"),
        ("manual_approval", "process_payment"),
        *STRAIGHT[2:],
    ] == path(history)
    completed_by = [e.detail for e in history if e.kind is EventKind.TASK_COMPLETED]
    assert ["manager"] == completed_by


def test_the_desk_order_is_refunded_and_fails(outcome: Outcome) -> None:
    """Issue 2: the inventory update fails for good (3 attempts); the payment is refunded; it ends failed."""
    failed = outcome.doomed
    assert InstanceStatus.FAILED == failed.status
    assert "update_inventory: WarehouseUnavailableError: the warehouse holding DESK refuses updates" == failed.reason
    history = outcome.doomed_history
    update_attempts = [e.attempt for e in history if e.kind is EventKind.STEP_STARTED and e.step == "update_inventory"]
    assert [1, 2, 3] == update_attempts
    compensations = [(e.step, e.detail) for e in history if e.kind is EventKind.COMPENSATION_COMPLETED]
    assert [("process_payment", "refund_payment")] == compensations
    assert outcome.doomed_payment is not None
    assert [outcome.doomed_payment] == outcome.refunds
    assert [] == outcome.restored, "the stock was never taken, so it is not restored"
    assert 2 == outcome.stock["DESK"]


def test_the_engine_lists_the_orders_by_status(outcome: Outcome) -> None:
    """Issue 2: instances(status=...) shows two completed orders and one failed."""
    small, large, doomed = outcome.ids
    assert ({small, large}, {doomed}) == (outcome.completed, outcome.failed)
    assert {"BOOK": 8, "LAMP": 4, "DESK": 2} == outcome.stock


def test_the_machine_has_no_models_after_the_run(outcome: Outcome) -> None:
    """Issue 2 / DESIGN §2: the three instances ran through the class's shared machine without becoming its models."""
    assert 3 == len(set(outcome.ids))
    no_models: list[object] = []
    assert no_models == machine_of(OrderProcess).models


def test_the_example_script_succeeds(run: Runner, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 2: `python examples/order_process.py` runs the three orders and exits 0, printing the histories."""
    assert 0 == run(main())
    printed = capsys.readouterr().out
    assert "ORD-003: failed" in printed
    assert "compensation_completed process_payment (attempt 1) - refund_payment" in printed
