"""
Issue 4: the order example under WorkflowMachine, with its in-process services.

Run as written, WorkflowMachine reports a modelling gap of the example: a rejected
order (the user service says no, or the manager does not approve) leaves its step
with no edge to take, so the instance fails through NoEdgeEnabled. Declared as
intended with ``allow_no_edge``, the example passes with every edge covered.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import strategies as st

from examples.order_process import InventoryService, Item, OrderProcess, PaymentService, UserService
from statemachine_orch.testing import WorkflowMachine

from .helpers import find_bug, passes, story


def services() -> Mapping[str, object]:
    """Fresh services per story: plenty of stock, one blocked customer, one warehouse offline."""
    return {
        "user-service": UserService(blocked={"CUST-BLOCKED"}),
        "inventory-service": InventoryService(
            stock={"BOOK": 10**6, "LAMP": 10**6, "DESK": 10**6}, offline_skus={"DESK"}
        ),
        "payment-service": PaymentService(),
    }


orders = st.builds(
    OrderProcess,
    order_id=st.sampled_from(["ORD-1", "ORD-2"]),
    customer_id=st.sampled_from(["CUST-1", "CUST-2", "CUST-BLOCKED"]),
    amount=st.sampled_from([500.0, 1000.0, 1000.01, 5000.0]) | st.floats(0, 10_000),
    items=st.lists(
        st.builds(Item, sku=st.sampled_from(["BOOK", "LAMP", "DESK"]), quantity=st.integers(1, 3)), max_size=2
    ),
)


def test_the_order_example_passes_with_every_edge_covered() -> None:
    """Issue 4: a correct workflow passes, and require_coverage=1.0 holds: every edge was taken."""
    machine = WorkflowMachine(
        OrderProcess,
        inputs=orders,
        services=services,
        allow_no_edge=[OrderProcess.validate_order, OrderProcess.manual_approval],
        require_coverage=1.0,
    )

    passes(machine)

    assert 1.0 == machine.coverage.fraction
    assert [] == machine.coverage.missing_outcomes()


def test_as_written_the_order_example_fails_rejected_orders_through_a_guard_gap() -> None:
    """Issue 4: a step after which no edge is enabled is reported even though the engine handles it."""
    err = find_bug(WorkflowMachine(OrderProcess, inputs=orders, services=services))

    assert "no-edge-enabled" == err.rule
    assert err.step in {"validate_order", "manual_approval"}
    assert "and there is no default edge" in str(err)
    assert "start OrderProcess(" in story(err)
